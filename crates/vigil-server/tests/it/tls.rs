//! TLS end to end: HTTPS and gRPC over TLS, client certificates mapped to
//! principals (mTLS), certificates reloaded from their files without a
//! restart, and the limits on request heads (slow and oversized).

use crate::common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_server::ServerConfig;

/// A test CA and certificates it signs, as PEM.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "vigil test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        Pki { ca_pem: ca.pem(), issuer: Issuer::new(params, key) }
    }

    /// (certificate PEM, key PEM) for a name.
    fn issue(&self, common_name: &str, server: bool) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        if server {
            params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn tls_config(pki: &Pki, dir: &Path) -> ServerConfig {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = pki.issue("vigil-server", true);
    let mut c = config(None, vigil_server::Limits::default());
    c.tls.cert_file = Some(write(dir, "server.pem", &cert));
    c.tls.key_file = Some(write(dir, "server.key", &key));
    c.tls.client_ca_file = Some(write(dir, "ca.pem", &pki.ca_pem));
    c.tls.reload_interval_ms = 100;
    c.security.client_certificates = vec![vigil_server::CertificateBinding {
        common_name: "billing".into(),
        role: vigil_core::security::Role::Predictor,
        scope: "endpoint:breast_cancer".parse().unwrap(),
    }];
    c
}

#[tokio::test]
async fn https_and_client_certificates() {
    let pki = Pki::new();
    let dir = temp_data_dir().with_extension("tls");
    let s = TestServer::start_with_ca(tls_config(&pki, &dir), Some(&pki.ca_pem)).await;
    assert!(s.base.starts_with("https://"));
    let body = request_for(&case("breast_cancer"));
    let r = s.client.post(s.url("/v2/models/breast_cancer/infer")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200, "a bearer key over HTTPS");
    assert!(reqwest::get(s.base.replace("https", "http") + "/v2/health/live").await.is_err(), "no plain HTTP");

    // mTLS: the certificate is the credential, bound to one endpoint.
    let (cert, key) = pki.issue("billing", false);
    let billing = https_client(&pki.ca_pem, Some(&format!("{cert}{key}")), None);
    let r = billing.post(s.url("/v2/models/breast_cancer/infer")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = billing.get(s.url("/v2/models/digits_cnn/ready")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("cert:CN=billing"));
    let (cert, key) = pki.issue("stranger", false);
    let stranger = https_client(&pki.ca_pem, Some(&format!("{cert}{key}")), None);
    let r = stranger.get(s.url("/v2/models/breast_cancer/ready")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("not bound to a role"));
    // A certificate from another CA does not get through the handshake.
    let other = Pki::new();
    let (cert, key) = other.issue("billing", false);
    let forged = https_client(&pki.ca_pem, Some(&format!("{cert}{key}")), None);
    assert!(forged.get(s.url("/v2/models/breast_cancer/ready")).send().await.is_err());

    // gRPC over TLS, with the bearer key.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&pki.ca_pem))
        .domain_name("127.0.0.1");
    let channel = tonic::transport::Endpoint::from_shared(s.grpc.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer = Bearer(Some(format!("Bearer {}", s.key).parse().unwrap()));
    let mut grpc = vigil_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient::with_interceptor(
        channel, bearer,
    );
    let ready = vigil_proto::inference::ModelReadyRequest { name: "breast_cancer".into(), version: String::new() };
    assert!(grpc.model_ready(ready).await.unwrap().into_inner().ready);
    s.stop().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The certificate presented in a handshake, as DER.
async fn presented_certificate(addr: &str, ca: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].as_ref().to_vec()
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let pki = Pki::new();
    let dir = temp_data_dir().with_extension("tls-reload");
    let config = tls_config(&pki, &dir);
    let (cert_file, key_file) = (config.tls.cert_file.clone().unwrap(), config.tls.key_file.clone().unwrap());
    let s = TestServer::start_with_ca(config, Some(&pki.ca_pem)).await;
    let addr = s.base.trim_start_matches("https://").to_owned();
    let before = presented_certificate(&addr, &pki.ca_pem).await;

    // A half-written pair (a new certificate, the old key) is not taken up.
    let (cert, key) = pki.issue("vigil-server-renewed", true);
    write(&dir, "server.pem", &cert);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(presented_certificate(&addr, &pki.ca_pem).await, before, "a mismatched pair keeps the old one");
    write(&dir, "server.key", &key);
    let mut after = before.clone();
    for _ in 0..50 {
        after = presented_certificate(&addr, &pki.ca_pem).await;
        if after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, parsed) = x509_parser::parse_x509_certificate(&after).unwrap();
    assert_eq!(parsed.subject().iter_common_name().next().unwrap().as_str().unwrap(), "vigil-server-renewed");
    assert_eq!(s.client.get(s.url("/v2/health/ready")).send().await.unwrap().status(), 200, "still serving");
    let _ = (cert_file, key_file);
    s.stop().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn slow_and_oversized_request_heads_are_cut_off() {
    let mut c = config(None, vigil_server::Limits::default());
    c.limits.header_timeout_ms = 300;
    c.limits.max_header_bytes = 16 * 1024;
    let s = TestServer::start(c).await;
    let addr = s.base.trim_start_matches("http://").to_owned();

    // A client that trickles its head is disconnected at the deadline.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let text = String::from_utf8_lossy(&buf);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");

    // A huge head gets 431 (or the connection closed), never a 200.
    let mut big = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!("GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let _ = big.write_all(head.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), big.read_to_end(&mut buf)).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 431"), "{text}");

    // Normal requests are untouched.
    let r =
        s.client.post(s.url("/v2/models/breast_cancer/infer")).json(&request_for(&case("breast_cancer"))).send().await;
    assert_eq!(r.unwrap().status(), 200);
    let _ = json!(null);
    s.stop().await.unwrap();
}
