//! TLS with rustls (aws-lc-rs): the certificate and key are read from PEM
//! files and read again when the files change, so a renewed certificate is
//! served without a restart; optional client certificates (mTLS) verified
//! against a CA, whose common name the guard maps to a principal.

use crate::ServerError;
use crate::config::TlsConfig;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The server's TLS: an acceptor whose certificate follows its files.
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    certificate: Arc<Reloading>,
}

/// The certificate and key in use, and when their files last changed.
struct Reloading {
    current: ArcSwap<CertifiedKey>,
    cert_file: PathBuf,
    key_file: PathBuf,
    seen: std::sync::Mutex<(Option<SystemTime>, Option<SystemTime>)>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading").field("cert_file", &self.cert_file).finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(cert_file: &Path, key_file: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let signing = provider.key_provider.load_private_key(key).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| format!("{} and {}: {e}", cert_file.display(), key_file.display()))?;
    Ok(certified)
}

impl Tls {
    /// `None` without a certificate; an error for half a configuration or bad files.
    pub fn open(config: &TlsConfig) -> Result<Option<Arc<Tls>>, ServerError> {
        let (cert_file, key_file) = match (&config.cert_file, &config.key_file) {
            (None, None) => {
                if config.client_ca_file.is_some() {
                    return Err(ServerError::Config("tls.client_ca_file needs tls.cert_file and tls.key_file".into()));
                }
                return Ok(None);
            }
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ => return Err(ServerError::Config("tls: give both cert_file and key_file".into())),
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let first = load(&cert_file, &key_file, &provider).map_err(ServerError::Config)?;
        let certificate = Arc::new(Reloading {
            current: ArcSwap::from_pointee(first),
            seen: std::sync::Mutex::new((modified(&cert_file), modified(&key_file))),
            cert_file,
            key_file,
            provider: Arc::clone(&provider),
        });
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| ServerError::Config(format!("tls: {e}")))?;
        let builder = match &config.client_ca_file {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(ca)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| ServerError::Config(format!("tls.client_ca_file {}: {e}", ca.display())))?;
                for cert in certs {
                    roots.add(cert).map_err(|e| ServerError::Config(format!("tls.client_ca_file: {e}")))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
                // Without `require_client_cert`, callers may use a bearer token instead.
                let verifier = if config.require_client_cert { verifier } else { verifier.allow_unauthenticated() };
                let verifier = verifier.build().map_err(|e| ServerError::Config(format!("tls.client_ca_file: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut server = builder.with_cert_resolver(Arc::clone(&certificate) as Arc<dyn ResolvesServerCert>);
        // gRPC needs HTTP/2 (and says so through ALPN); REST speaks HTTP/1.1.
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        Ok(Some(Arc::new(Tls { acceptor, certificate })))
    }

    /// The same configuration for a listener that speaks one protocol only.
    pub fn with_alpn(&self, protocol: &[u8]) -> tokio_rustls::TlsAcceptor {
        let mut config = (*self.acceptor.config().clone()).clone();
        config.alpn_protocols = vec![protocol.to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// Reads the files again if they changed; a bad new pair is logged and the
    /// old one stays in use.
    pub fn reload_if_changed(&self) {
        let c = &self.certificate;
        let now = (modified(&c.cert_file), modified(&c.key_file));
        let Ok(mut seen) = c.seen.lock() else { return };
        if *seen == now {
            return;
        }
        match load(&c.cert_file, &c.key_file, &c.provider) {
            Ok(new) => {
                c.current.store(Arc::new(new));
                *seen = now;
                tracing::info!(cert_file = %c.cert_file.display(), "reloaded the TLS certificate");
            }
            // Files written one after the other can be caught half way: try
            // again next time, keep serving the old pair meanwhile.
            Err(e) => tracing::warn!(error = %e, "the TLS files changed but do not load; keeping the old certificate"),
        }
    }

    /// Checks the files every `every`, for as long as the server runs.
    pub fn watch(self: Arc<Self>, every: Duration) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                self.reload_if_changed();
            }
        });
    }
}

/// The common name of a verified client certificate, the first in the chain.
pub fn client_common_name(certs: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let der = certs?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(cn)
}
