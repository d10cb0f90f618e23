//! Serving HTTP/1.1 connections, in the clear or over TLS, with limits on
//! what a client may do before it has sent a whole request head: a deadline
//! for the head (slow clients cannot hold connections open for free), its
//! size (counted exactly as sent: hyper's own bound is its read buffer, which
//! lets larger heads through) and its header count. Each connection runs in its own task (a slow
//! TLS handshake delays nobody else), carries the peer's address (and a client
//! certificate's name) to the handlers, and is drained on shutdown.

use crate::tls::{Tls, client_common_name};
use axum::Router;
use axum::extract::ConnectInfo;
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_service::Service;

/// The common name of the client's verified certificate (mTLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate(pub String);

/// Limits on a connection before its request head is in.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stopping` turns true, then stops
/// accepting and waits for the connections' requests in flight.
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<Tls>>,
    limits: ConnectionLimits,
    mut stopping: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let acceptor = tls.map(|t| t.with_alpn(b"http/1.1"));
    while let Some((tcp, peer)) = accept(&listener, &mut stopping).await {
        let (app, acceptor, watcher) = (app.clone(), acceptor.clone(), graceful.watcher());
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .max_headers(limits.max_headers);
            let max_head_bytes = limits.max_header_bytes;
            match acceptor {
                None => {
                    let service = Connection { app, peer, cert: None, max_head_bytes };
                    let _ = watcher.watch(builder.serve_connection(TokioIo::new(tcp), service)).await;
                }
                Some(acceptor) => {
                    let Some((stream, cert)) = handshake(&acceptor, tcp).await else { return };
                    let service = Connection { app, peer, cert, max_head_bytes };
                    let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await;
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A TLS handshake within [`HANDSHAKE_TIMEOUT`], with the client
/// certificate's name (mTLS); `None` when it fails or takes too long.
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
) -> Option<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, Option<ClientCertificate>)> {
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await.ok()?.ok()?;
    let cert = client_common_name(stream.get_ref().1.peer_certificates()).map(ClientCertificate);
    Some((stream, cert))
}

/// The next connection, or `None` once `stopping` turns true.
async fn accept(
    listener: &TcpListener,
    stopping: &mut watch::Receiver<bool>,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    return Some((tcp, peer));
                }
                // Out of file descriptors and the like: do not spin.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = until_stopped(stopping) => return None,
        }
    }
}

/// Completes when `stopping` turns true (or its sender is gone). The guard
/// `wait_for` returns is not `Send`: it must not live across an await.
async fn until_stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// The app, with the connection's facts on every request.
#[derive(Clone)]
struct Connection {
    app: Router,
    peer: SocketAddr,
    cert: Option<ClientCertificate>,
    max_head_bytes: usize,
}

type Answer = Either<
    std::future::Ready<Result<axum::response::Response, std::convert::Infallible>>,
    <Router as Service<hyper::Request<Incoming>>>::Future,
>;

impl hyper::service::Service<hyper::Request<Incoming>> for Connection {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Answer;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        let size = head_bytes(&request);
        if size > self.max_head_bytes {
            return Either::Left(std::future::ready(Ok(head_too_large(size, self.max_head_bytes))));
        }
        request.extensions_mut().insert(ConnectInfo(self.peer));
        if let Some(cert) = &self.cert {
            request.extensions_mut().insert(cert.clone());
        }
        Either::Right(self.app.clone().call(request))
    }
}

/// The request head's size as sent: request line, headers, the blank line.
fn head_bytes<B>(request: &hyper::Request<B>) -> usize {
    let line = request.method().as_str().len()
        + request.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n".len()
        + 1;
    let headers: usize = request.headers().iter().map(|(name, value)| name.as_str().len() + 2 + value.len() + 2).sum();
    line + headers + 2
}

/// 431, and the connection closed.
fn head_too_large(size: usize, max: usize) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    let mut response = crate::ApiError::no_route(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        format!("the request head is {size} bytes, over limits.max_header_bytes ({max})"),
    )
    .into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A gRPC connection over TLS, with what the handlers need to know of it.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    peer: GrpcPeer,
}

/// The peer of a gRPC call over TLS (tonic puts it in the request's extensions).
#[derive(Debug, Clone)]
pub struct GrpcPeer {
    pub addr: SocketAddr,
    pub cert: Option<ClientCertificate>,
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = GrpcPeer;

    fn connect_info(&self) -> GrpcPeer {
        self.peer.clone()
    }
}

impl tokio::io::AsyncRead for TlsConnection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// TLS connections for tonic: accepted and handshaken here (each handshake in
/// its own task), handed over as they complete, until `stopping`.
pub fn tls_incoming(
    listener: TcpListener,
    tls: &Tls,
    mut stopping: watch::Receiver<bool>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConnection>> {
    let acceptor = tls.with_alpn(b"h2");
    let (ready, incoming) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some((tcp, addr)) = accept(&listener, &mut stopping).await {
            let (acceptor, ready) = (acceptor.clone(), ready.clone());
            tokio::spawn(async move {
                if let Some((stream, cert)) = handshake(&acceptor, tcp).await {
                    let _ = ready.send(Ok(TlsConnection { stream, peer: GrpcPeer { addr, cert } })).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(incoming)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_size_counts_what_was_sent() {
        let request = hyper::Request::builder()
            .method("POST")
            .uri("/v2/models/m/infer?x=1")
            .header("host", "a")
            .header("x-long", "y".repeat(100))
            .body(())
            .unwrap();
        let sent = "POST /v2/models/m/infer?x=1 HTTP/1.1\r\nhost: a\r\nx-long: ".len() + 100 + "\r\n\r\n".len();
        assert_eq!(head_bytes(&request), sent);
    }
}
