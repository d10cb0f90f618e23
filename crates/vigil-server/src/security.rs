//! The server's security state: the key ring (every key in memory, so that a
//! request never waits on the store to authenticate), the secrets vault, the
//! rate limiters and the audit trail. The HTTP side is in [`crate::guard`];
//! the mechanisms are in `vigil-security`.

use crate::ServerError;
use crate::config::SecurityConfig;
use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use vigil_core::Error;
use vigil_core::security::{Grant, KeyRecord, NewAuditEvent, Role, Scope};
use vigil_security::{AuthFailure, KeyRing, MasterKey, OidcVerifier, Principal, Vault, keys};
use vigil_store::MetadataStore;

/// Audit events waiting to be written when the request path cannot wait
/// (failed authentications on the data plane); beyond this they are dropped
/// and counted.
const AUDIT_QUEUE: usize = 4096;

pub struct Security {
    pub store: Arc<dyn MetadataStore>,
    ring: ArcSwap<KeyRing>,
    ring_generation: AtomicU64,
    pub vault: Arc<Vault>,
    /// `None`: no per-principal limit.
    per_principal: Option<DefaultKeyedRateLimiter<String>>,
    failures: DefaultKeyedRateLimiter<IpAddr>,
    trusted_proxies: Vec<IpNet>,
    audit_stdout: bool,
    /// Grants of client certificates, by common name.
    certificates: HashMap<String, Vec<Grant>>,
    oidc: Option<Arc<OidcVerifier>>,
    audit_queue: tokio::sync::mpsc::Sender<NewAuditEvent>,
    pub audit_dropped: AtomicU64,
    /// Events the store refused (an outage), oldest first: written again
    /// before any new event, and retried every few seconds.
    unwritten: std::sync::Mutex<std::collections::VecDeque<NewAuditEvent>>,
}

/// Events kept while the store is down; beyond this they are dropped (counted).
const UNWRITTEN_MAX: usize = 10_000;

/// How often events kept during an outage are tried again.
const AUDIT_RETRY: Duration = Duration::from_secs(2);

/// Why a request was stopped before its handler.
pub enum Refusal {
    Unauthenticated(AuthFailure),
    /// Too many requests; retry after this long.
    RateLimited(Duration),
}

impl Security {
    /// Loads the key ring and the vault, and on an empty store creates the
    /// first Owner key. Spawns the audit writer.
    pub async fn open(
        config: &SecurityConfig,
        store: Arc<dyn MetadataStore>,
        data_dir: &Path,
    ) -> Result<Arc<Security>, ServerError> {
        let vault = open_vault(config, data_dir)?;
        let per_principal = NonZeroU32::new(config.requests_per_second).map(|rate| {
            let burst = NonZeroU32::new(config.burst.max(config.requests_per_second)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        let failures = NonZeroU32::new(config.auth_failures_per_minute)
            .ok_or_else(|| ServerError::Config("security.auth_failures_per_minute must be at least 1".into()))?;
        let trusted_proxies = config
            .trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<IpNet>().or_else(|_| p.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
                    ServerError::Config(format!("security.trusted_proxies: '{p}' is not an IP address or CIDR"))
                })
            })
            .collect::<Result<_, _>>()?;
        let oidc = match &config.oidc {
            Some(c) => {
                let verifier = Arc::new(OidcVerifier::new(c.clone()).map_err(ServerError::Config)?);
                // An issuer that is down must not keep the server (and its API keys) down:
                // the keys are fetched again periodically and on an unknown key id.
                match verifier.refresh().await {
                    Ok(n) => tracing::info!(issuer = verifier.issuer(), keys = n, "OIDC signing keys loaded"),
                    Err(e) => {
                        tracing::warn!(issuer = verifier.issuer(), error = %e, "could not fetch the OIDC signing keys yet")
                    }
                }
                Arc::clone(&verifier).watch();
                Some(verifier)
            }
            None => None,
        };
        let (audit_queue, mut pending) = tokio::sync::mpsc::channel(AUDIT_QUEUE);
        let security = Arc::new(Security {
            store,
            ring: ArcSwap::from_pointee(KeyRing::default()),
            ring_generation: AtomicU64::new(0),
            vault: Arc::new(vault),
            per_principal,
            failures: RateLimiter::keyed(Quota::per_minute(failures)),
            trusted_proxies,
            audit_stdout: config.audit_stdout,
            certificates: certificate_grants(config),
            oidc,
            audit_queue,
            audit_dropped: AtomicU64::new(0),
            unwritten: std::sync::Mutex::new(std::collections::VecDeque::new()),
        });
        security.bootstrap(config.bootstrap_key_file.as_deref()).await?;
        security.reload_keys().await.map_err(|e| ServerError::Config(e.to_string()))?;
        let writer = Arc::clone(&security);
        tokio::spawn(async move {
            let mut retry = tokio::time::interval(AUDIT_RETRY);
            loop {
                tokio::select! {
                    event = pending.recv() => match event {
                        Some(event) => writer.audit(event).await,
                        None => return,
                    },
                    _ = retry.tick() => writer.write_unwritten().await,
                }
            }
        });
        Ok(security)
    }

    /// The first start: an empty store gets an Owner key, shown once.
    async fn bootstrap(&self, key_file: Option<&Path>) -> Result<(), ServerError> {
        let key = keys::generate().map_err(|e| ServerError::Config(format!("random generator: {e}")))?;
        let record = KeyRecord {
            id: key.id.clone(),
            name: "first Owner key, made at the first start".into(),
            role: Role::Owner,
            scope: Scope::Global,
            hash: key.hash.clone(),
            created_by: "vigil".into(),
            created_at: vigil_security::format_time(SystemTime::now()),
            expires_at: None,
            revoked_at: None,
            rotated_from: None,
        };
        if !self.store.create_first_key(&record).await.map_err(|e| ServerError::Config(e.to_string()))? {
            return Ok(());
        }
        match key_file {
            Some(path) => {
                // A file left from an earlier store is replaced (not reused:
                // it could have looser permissions).
                let _ = std::fs::remove_file(path);
                write_private(path, &format!("{}\n", key.token))?;
                tracing::warn!(key_id = %key.id, file = %path.display(), "created the first Owner API key");
            }
            None => {
                use std::io::Write;
                let mut err = std::io::stderr().lock();
                let _ = writeln!(
                    err,
                    "\nCreated the first Owner API key. It is shown only this once and stored only as a hash:\n\n    {}\n\nSend it as 'Authorization: Bearer <key>', or export VIGIL_API_KEY=<key> for the vigil CLI.\n",
                    key.token
                );
            }
        }
        self.audit(NewAuditEvent {
            principal: "vigil".into(),
            action: "bootstrap".into(),
            target: format!("key:{}", key.id),
            outcome: "ok".into(),
            ..NewAuditEvent::default()
        })
        .await;
        Ok(())
    }

    /// Rebuilds the key ring if the store changed since the last time.
    pub async fn refresh(&self) -> Result<(), Error> {
        let generation = self.store.generation().await?;
        if generation != self.ring_generation.load(Ordering::Relaxed) {
            self.reload_keys().await?;
        }
        Ok(())
    }

    /// Rebuilds the key ring now (after a change made here, so that a revoked
    /// key stops working on this replica at once).
    pub async fn reload_keys(&self) -> Result<(), Error> {
        let generation = self.store.generation().await?;
        let keys = self.store.list_keys().await?;
        self.ring.store(Arc::new(KeyRing::new(keys)));
        self.ring_generation.store(generation, Ordering::Relaxed);
        Ok(())
    }

    /// The principal a bearer credential proves, else the one a verified
    /// client certificate's common name is bound to, or why neither.
    pub fn authenticate(&self, credential: Option<&str>, certificate: Option<&str>) -> Result<Principal, AuthFailure> {
        match (credential, certificate) {
            (Some(token), _) if token.starts_with(keys::PREFIX) => {
                self.ring.load().authenticate(token, SystemTime::now())
            }
            (Some(token), _) => match &self.oidc {
                Some(verifier) if token.contains('.') => verifier.verify(token),
                _ => Err(AuthFailure::Malformed),
            },
            (None, Some(cn)) => self
                .certificates
                .get(cn)
                .map(|grants| Principal { id: format!("cert:CN={cn}"), grants: grants.clone() })
                .ok_or_else(|| AuthFailure::UnboundCertificate(cn.to_owned())),
            (None, None) => Err(AuthFailure::Missing),
        }
    }

    /// Counts a request against the principal's rate.
    pub fn admit(&self, principal: &Principal) -> Result<(), Refusal> {
        let Some(limiter) = &self.per_principal else { return Ok(()) };
        limiter
            .check_key(&principal.id)
            .map_err(|not_until| Refusal::RateLimited(not_until.wait_time_from(DefaultClock::default().now())))
    }

    /// Counts a failed authentication from `client`: past the limit, further
    /// attempts are refused outright (key guessing gets nowhere).
    pub fn failed(&self, client: IpAddr) -> Result<(), Refusal> {
        self.failures
            .check_key(&client)
            .map_err(|not_until| Refusal::RateLimited(not_until.wait_time_from(DefaultClock::default().now())))
    }

    /// Forgets rate-limit state for principals and clients not seen lately,
    /// so that the limiters stay small.
    pub fn upkeep(&self) {
        if let Some(limiter) = &self.per_principal {
            limiter.retain_recent();
        }
        self.failures.retain_recent();
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy,
    /// the last address in `X-Forwarded-For` that is not one.
    pub fn client_address(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.trusted(peer) {
            return peer;
        }
        let Some(chain) = forwarded_for else { return peer };
        let mut client = peer;
        for hop in chain.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !self.trusted(ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// Appends an event to the audit chain (and stdout when configured). When
    /// the store refuses it (an outage), the event is printed to the log at
    /// once and kept, in order, to be written when the store is back.
    pub async fn audit(&self, mut event: NewAuditEvent) {
        if event.time.is_empty() {
            event.time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        }
        self.write_unwritten().await;
        if !self.lock_unwritten().is_empty() {
            self.keep_unwritten(event, "the audit log is still unavailable");
            return;
        }
        match self.store.append_audit(event.clone()).await {
            Ok(chained) => self.to_stdout(&chained),
            Err(e) => self.keep_unwritten(event, &e.to_string()),
        }
    }

    fn lock_unwritten(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<NewAuditEvent>> {
        self.unwritten.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keep_unwritten(&self, event: NewAuditEvent, why: &str) {
        tracing::error!(
            error = why,
            principal = %event.principal,
            action = %event.action,
            target = %event.target,
            outcome = %event.outcome,
            request_id = %event.request_id,
            "could not append to the audit log; the event is kept and written when the store is back"
        );
        let mut unwritten = self.lock_unwritten();
        if unwritten.len() >= UNWRITTEN_MAX {
            self.audit_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        unwritten.push_back(event);
    }

    /// Writes the events kept during an outage, oldest first, until one fails.
    pub async fn write_unwritten(&self) {
        loop {
            let Some(event) = self.lock_unwritten().front().cloned() else { return };
            match self.store.append_audit(event).await {
                Ok(chained) => {
                    self.lock_unwritten().pop_front();
                    self.to_stdout(&chained);
                }
                Err(_) => return,
            }
        }
    }

    /// Events waiting for the store to come back.
    pub fn unwritten_events(&self) -> usize {
        self.lock_unwritten().len()
    }

    /// One JSON line per event on stdout, when configured (for a SIEM).
    pub fn to_stdout(&self, chained: &vigil_core::security::AuditEvent) {
        if self.audit_stdout {
            use std::io::Write;
            let line = serde_json::to_string(chained).unwrap_or_default();
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        }
    }

    /// Queues an event without waiting; a full queue drops it (counted).
    pub fn audit_later(&self, event: NewAuditEvent) {
        if self.audit_queue.try_send(event).is_err() {
            self.audit_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn certificate_grants(config: &SecurityConfig) -> HashMap<String, Vec<Grant>> {
    let mut grants: HashMap<String, Vec<Grant>> = HashMap::new();
    for b in &config.client_certificates {
        grants.entry(b.common_name.clone()).or_default().push(Grant { role: b.role, scope: b.scope.clone() });
    }
    grants
}

/// Configuration read before the vault opens (or printed in logs): it cannot
/// hold secret references.
const READ_BEFORE_THE_VAULT: [&str; 11] = [
    "/addr",
    "/grpc_addr",
    "/model_repository",
    "/data_dir",
    "/database_url",
    "/artifact_store",
    "/tls",
    "/insecure_no_tls",
    "/security/bootstrap_key_file",
    "/security/master_key_file",
    "/security/previous_master_key_files",
];

const REFERENCE: &str = "${secret:";

/// Every string in a JSON tree, with its JSON pointer.
fn strings_mut<'a>(value: &'a mut serde_json::Value, path: String, out: &mut Vec<(String, &'a mut String)>) {
    match value {
        serde_json::Value::String(s) => out.push((path, s)),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                strings_mut(item, format!("{path}/{i}"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                strings_mut(v, format!("{path}/{k}"), out);
            }
        }
        _ => {}
    }
}

/// Refuses `${secret:NAME}` in values read before the vault opens. Checked
/// first thing, before anything is opened or created.
pub fn refuse_early_references(config: &crate::ServerConfig) -> Result<(), ServerError> {
    let mut tree = serde_json::to_value(config).map_err(|e| ServerError::Config(e.to_string()))?;
    let mut strings = Vec::new();
    strings_mut(&mut tree, String::new(), &mut strings);
    for (path, text) in strings {
        let early = READ_BEFORE_THE_VAULT.iter().any(|e| path == *e || path.starts_with(&format!("{e}/")));
        if early && text.contains(REFERENCE) {
            let key = path.trim_start_matches('/').replace('/', ".");
            return Err(ServerError::Config(format!(
                "{key}: cannot reference a secret (it is read before the vault opens)"
            )));
        }
    }
    Ok(())
}

impl Security {
    /// The configuration with every `${secret:NAME}` replaced by the latest
    /// version of that secret (each read audited as made by `vigil`). A
    /// reference to a missing secret stops the start with an error naming the
    /// key (never the value); see [`refuse_early_references`] for the rest.
    pub async fn resolve_references(&self, config: &crate::ServerConfig) -> Result<crate::ServerConfig, ServerError> {
        let mut tree = serde_json::to_value(config).map_err(|e| ServerError::Config(e.to_string()))?;
        let mut strings = Vec::new();
        strings_mut(&mut tree, String::new(), &mut strings);
        let mut any = false;
        for (path, text) in strings {
            if !text.contains(REFERENCE) {
                continue;
            }
            any = true;
            let key = path.trim_start_matches('/').replace('/', ".");
            if READ_BEFORE_THE_VAULT.iter().any(|early| path == *early || path.starts_with(&format!("{early}/"))) {
                return Err(ServerError::Config(format!(
                    "{key}: cannot reference a secret (it is read before the vault opens)"
                )));
            }
            let mut resolved = String::new();
            let mut rest = text.as_str();
            while let Some(start) = rest.find(REFERENCE) {
                resolved.push_str(&rest[..start]);
                let after = &rest[start + REFERENCE.len()..];
                let end = after
                    .find('}')
                    .ok_or_else(|| ServerError::Config(format!("{key}: '${{secret:' without a closing '}}'")))?;
                let name = &after[..end];
                let sealed =
                    self.store.get_secret(name, None).await.map_err(|e| ServerError::Config(format!("{key}: {e}")))?;
                let value = self
                    .vault
                    .open(&sealed)
                    .map_err(|e| ServerError::Config(format!("{key}: secret '{name}': {e}")))?;
                resolved.push_str(&String::from_utf8_lossy(&value));
                self.audit(NewAuditEvent {
                    principal: "vigil".into(),
                    action: "resolve configuration".into(),
                    target: format!("secret:{name}"),
                    outcome: format!("ok: {key}"),
                    ..NewAuditEvent::default()
                })
                .await;
                rest = &after[end + 1..];
            }
            resolved.push_str(rest);
            *text = resolved;
        }
        if !any {
            return Ok(config.clone());
        }
        // serde's message would quote the offending value: a secret. Say less.
        serde_json::from_value(tree)
            .map_err(|_| ServerError::Config("a secret referenced in the configuration does not fit its key".into()))
    }
}

/// The vault's master key: from the configured file, else `VIGIL_MASTER_KEY`,
/// else `DATA_DIR/master.key` (created with a new key on the first start).
fn open_vault(config: &SecurityConfig, data_dir: &Path) -> Result<Vault, ServerError> {
    let read = |path: &Path| -> Result<MasterKey, ServerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::Config(format!("cannot read the master key file {}: {e}", path.display())))?;
        MasterKey::parse(&text).map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))
    };
    let current = match (&config.master_key_file, std::env::var("VIGIL_MASTER_KEY")) {
        (Some(path), _) => read(path)?,
        (None, Ok(text)) => {
            MasterKey::parse(&text).map_err(|e| ServerError::Config(format!("VIGIL_MASTER_KEY: {e}")))?
        }
        (None, Err(_)) => {
            let path = data_dir.join("master.key");
            if path.exists() {
                read(&path)?
            } else {
                let key = MasterKey::generate().map_err(|e| ServerError::Config(e.to_string()))?;
                std::fs::create_dir_all(data_dir)?;
                write_private(&path, &format!("{}\n", key.to_hex()))?;
                tracing::warn!(file = %path.display(), key_id = key.id(), "created the secrets master key: back it up, secrets cannot be read without it");
                key
            }
        }
    };
    let previous = config.previous_master_key_files.iter().map(|p| read(p)).collect::<Result<_, _>>()?;
    Ok(Vault::new(current, previous))
}

/// Writes a file only its owner can read, refusing to replace one.
fn write_private(path: &Path, contents: &str) -> Result<(), ServerError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file =
        options.open(path).map_err(|e| ServerError::Config(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}
