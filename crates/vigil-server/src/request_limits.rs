//! Limits on what one request may make the server hold, enforced around every
//! guarded handler (the head's size is `serve.rs`'s): the time a client may take to
//! send its body (a client sending a byte a second must not hold a connection
//! and its memory forever); and a memory budget shared by every body being read
//! at once (and by package unpacking, which takes from the same budget), so
//! that many large requests together get 503 instead of exhausting memory.

use crate::vigil_error;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use vigil_core::ErrorCode;
use vigil_core::budget::{MemoryBudget, Reservation};

/// The limits, shared by every connection, REST and gRPC.
pub struct RequestLimits {
    pub body_timeout: Duration,
    pub budget: Arc<MemoryBudget>,
}

impl RequestLimits {
    /// From the configuration, with the budget package unpacking shares.
    pub fn new(limits: &crate::Limits, budget: Arc<MemoryBudget>) -> Arc<Self> {
        Arc::new(RequestLimits { body_timeout: Duration::from_millis(limits.body_timeout_ms.max(1)), budget })
    }
}

const READING: u8 = 0;
const TIMED_OUT: u8 = 1;
const OVER_BUDGET: u8 = 2;

/// Why a body stopped being read (its state, for the gRPC status, and words).
#[derive(Debug, thiserror::Error)]
#[error("the request body was not read: {1}")]
struct Refused(u8, &'static str);

/// Reserves a declared body's size before the handler runs (503 when the
/// budget is spent), and watches the body as the handler reads it: a body
/// sent without a length takes from the budget as it arrives, and every body
/// must arrive within the timeout (408, connection closed).
///
/// Called by the guard around the handler (`run`) once the caller is known
/// (`None`: no limits, the in-process benchmark router). Not a layer of its
/// own: one more layer on every request cost about 2 µs of CPU per request.
pub async fn watched<F, Fut>(limits: Option<&RequestLimits>, request: Request, run: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let (parts, body) = request.into_parts();
    let Some(limits) = limits.filter(|_| !body.is_end_stream()) else {
        return run(Request::from_parts(parts, body)).await;
    };
    // A length the body is known to have (Content-Length); none when it is
    // chunked or decompressed on the way (gzip requests are counted decompressed).
    let declared = body.size_hint().exact();
    // Declared: reserved whole, up front. Streamed: reserved as it arrives.
    let Some(reservation) = limits.budget.try_reserve(declared.unwrap_or(0)) else { return busy(&limits.budget) };
    let shared = Arc::new(Shared { state: AtomicU8::new(READING), reservation: Mutex::new(reservation) });
    let body = Body::new(Watched {
        inner: body,
        deadline: tokio::time::Instant::now() + limits.body_timeout,
        timer: None,
        grows: declared.is_none(),
        shared: Arc::clone(&shared),
        error: |state, why| axum::Error::new(Refused(state, why)),
    });
    let response = run(Request::from_parts(parts, body)).await;
    // The handler held the body's bytes until now; the reservation goes with `shared`.
    match shared.state.load(Ordering::Acquire) {
        TIMED_OUT => {
            let mut response = vigil_error(
                ErrorCode::RequestTimeout,
                format!(
                    "the request body did not arrive within limits.body_timeout_ms ({} ms)",
                    limits.body_timeout.as_millis()
                ),
            )
            .into_response();
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
        OVER_BUDGET => busy(&limits.budget),
        _ => response,
    }
}

fn busy(budget: &MemoryBudget) -> Response {
    let mut response = vigil_error(
        ErrorCode::Overloaded,
        format!(
            "the server is holding {} bytes of other requests (limits.max_inflight_bytes is {}); retry shortly",
            budget.in_use(),
            budget.max()
        ),
    )
    .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// What the middleware and the body it watches share: how reading ended, and
/// the bytes reserved for the body.
struct Shared {
    state: AtomicU8,
    reservation: Mutex<Reservation>,
}

/// A request body with a deadline and, when it came without a length, a
/// reservation that grows with each frame. The timer is made only when the
/// body is not all there yet: a small body that came with its head costs none.
struct Watched<B, E> {
    inner: B,
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    grows: bool,
    shared: Arc<Shared>,
    /// The protocol's error for a refusal (REST: an axum error; gRPC: a status).
    error: fn(u8, &'static str) -> E,
}

impl<B, E> Watched<B, E> {
    fn refuse(&self, state: u8, why: &'static str) -> Poll<Option<Result<Frame<Bytes>, E>>> {
        self.shared.state.store(state, Ordering::Release);
        Poll::Ready(Some(Err((self.error)(state, why))))
    }
}

impl<B, E> http_body::Body for Watched<B, E>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    E: From<B::Error>,
{
    type Data = Bytes;
    type Error = E;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, E>>> {
        let this = self.get_mut();
        let polled = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(E::from(e)))),
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) if this.grows => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                if !this.shared.reservation.lock().unwrap_or_else(|p| p.into_inner()).try_grow(n) {
                    return this.refuse(OVER_BUDGET, "the server's memory budget for bodies is spent");
                }
            }
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    return this.refuse(TIMED_OUT, "it did not arrive in time");
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The same deadline and memory budget for gRPC messages, as a layer of
/// tonic's server: a message's bytes are reserved as its frames arrive
/// (HTTP/2 carries no length to reserve up front) and held until the call
/// answers; past the budget the call fails with UNAVAILABLE, past the deadline
/// with DEADLINE_EXCEEDED.
#[derive(Clone)]
pub struct GrpcLimits(pub Arc<RequestLimits>);

impl<S> tower_layer::Layer<S> for GrpcLimits {
    type Service = GrpcLimited<S>;

    fn layer(&self, inner: S) -> GrpcLimited<S> {
        GrpcLimited { inner, limits: Arc::clone(&self.0) }
    }
}

#[derive(Clone)]
pub struct GrpcLimited<S> {
    inner: S,
    limits: Arc<RequestLimits>,
}

type GrpcRequest = axum::http::Request<tonic::body::Body>;

impl<S> tower_service::Service<GrpcRequest> for GrpcLimited<S>
where
    S: tower_service::Service<GrpcRequest>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: GrpcRequest) -> Self::Future {
        let (parts, body) = request.into_parts();
        let reservation = self.limits.budget.try_reserve(0);
        let Some(reservation) = reservation.filter(|_| !body.is_end_stream()) else {
            return Box::pin(self.inner.call(GrpcRequest::from_parts(parts, body)));
        };
        let shared = Arc::new(Shared { state: AtomicU8::new(READING), reservation: Mutex::new(reservation) });
        let body = tonic::body::Body::new(Watched {
            inner: body,
            deadline: tokio::time::Instant::now() + self.limits.body_timeout,
            timer: None,
            grows: true,
            shared: Arc::clone(&shared),
            error: |state, why| match state {
                TIMED_OUT => tonic::Status::deadline_exceeded(format!("the request message was not read: {why}")),
                _ => tonic::Status::unavailable(format!(
                    "the request message was not read: {why} (limits.max_inflight_bytes); retry shortly"
                )),
            },
        });
        let answer = self.inner.call(GrpcRequest::from_parts(parts, body));
        Box::pin(async move {
            let answered = answer.await;
            // The message's bytes were held until the call answered.
            drop(shared);
            answered
        })
    }
}
