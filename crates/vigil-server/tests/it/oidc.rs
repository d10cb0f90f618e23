//! OIDC bearer tokens against a JWKS served on loopback, with keys and tokens
//! made here: roles from claims, and every token attack refused (401) and
//! audited.

use crate::common::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PublicKeyData};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vigil_core::security::Role;
use vigil_security::{OidcConfig, RoleMapping};
use x509_parser::prelude::FromDer;

/// A signing key: its JWK and how to sign with it.
struct SigningKey {
    kid: String,
    alg: Algorithm,
    pair: KeyPair,
}

impl SigningKey {
    fn rsa(kid: &str) -> SigningKey {
        let pair = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
        SigningKey { kid: kid.into(), alg: Algorithm::RS256, pair }
    }

    fn ec(kid: &str) -> SigningKey {
        SigningKey { kid: kid.into(), alg: Algorithm::ES256, pair: KeyPair::generate().unwrap() }
    }

    fn jwk(&self) -> Value {
        let spki = self.pair.subject_public_key_info();
        let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki).unwrap();
        match info.parsed().unwrap() {
            x509_parser::public_key::PublicKey::RSA(rsa) => {
                let n = rsa.modulus.iter().skip_while(|b| **b == 0).copied().collect::<Vec<_>>();
                json!({"kty": "RSA", "kid": self.kid, "use": "sig", "n": B64.encode(n), "e": B64.encode(rsa.exponent)})
            }
            x509_parser::public_key::PublicKey::EC(point) => {
                let xy = &point.data()[1..];
                json!({"kty": "EC", "kid": self.kid, "crv": "P-256", "x": B64.encode(&xy[..32]), "y": B64.encode(&xy[32..])})
            }
            other => panic!("{other:?}"),
        }
    }

    fn encoding_key(&self) -> EncodingKey {
        let pkcs8 = self.pair.serialize_der();
        match self.alg {
            Algorithm::RS256 => EncodingKey::from_rsa_der(&pkcs1(&pkcs8)),
            _ => EncodingKey::from_ec_der(&pkcs8),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let key = self.encoding_key();
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (its third field).
fn pkcs1(pkcs8: &[u8]) -> Vec<u8> {
    let (_, info) = x509_parser::der_parser::parse_der(pkcs8).unwrap();
    info.as_sequence().unwrap()[2].as_slice().unwrap().to_vec()
}

/// An issuer on loopback: discovery and a JWKS that the test can change.
struct Issuer {
    url: String,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

async fn issuer(keys: &[&SigningKey]) -> Issuer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let jwks = Arc::new(Mutex::new(json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (j, f, u) = (Arc::clone(&jwks), Arc::clone(&fetches), url.clone());
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let u = u.clone();
                async move { axum::Json(json!({"issuer": u, "jwks_uri": format!("{u}/jwks")})) }
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || {
                f.fetch_add(1, Ordering::SeqCst);
                let doc = j.lock().unwrap().clone();
                async move { axum::Json(doc) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Issuer { url, jwks, fetches }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims(iss: &str, roles: &[&str]) -> Value {
    json!({"iss": iss, "aud": "api://vigil", "sub": "user-1", "exp": now() + 600, "nbf": now() - 10, "roles": roles})
}

fn oidc_config(iss: &str) -> OidcConfig {
    OidcConfig {
        issuer: iss.into(),
        audiences: vec!["api://vigil".into()],
        jwks_url: None,
        algorithms: vec!["RS256".into(), "ES256".into()],
        clock_skew_seconds: 60,
        roles_claim: "roles".into(),
        role_mappings: vec![
            RoleMapping { value: "Vigil.Reader".into(), role: Role::Reader, scope: "*".parse().unwrap() },
            RoleMapping { value: "Vigil.Owner".into(), role: Role::Owner, scope: "*".parse().unwrap() },
        ],
    }
}

async fn status(s: &TestServer, token: &str) -> (u16, String) {
    let r = reqwest::Client::new().get(s.url("/api/v1/models")).bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn oidc_tokens_grant_mapped_roles_and_attacks_are_refused() {
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::ec("ec-1");
    let idp = issuer(&[&rsa, &ec]).await;
    let mut c = config(None, vigil_server::Limits::default());
    c.security.oidc = Some(oidc_config(&idp.url));
    c.security.auth_failures_per_minute = 10_000;
    let s = TestServer::start(c).await;

    let reader = rsa.sign(&claims(&idp.url, &["Vigil.Reader"]));
    assert_eq!(status(&s, &reader).await.0, 200, "an RS256 token with a mapped role");
    let r = reqwest::Client::new().delete(s.url("/api/v1/endpoints/x")).bearer_auth(&reader).send().await.unwrap();
    assert_eq!(r.status(), 403, "a Reader changes nothing");
    assert_eq!(status(&s, &ec.sign(&claims(&idp.url, &["Vigil.Owner"]))).await.0, 200, "ES256");
    let (code, text) = status(&s, &rsa.sign(&claims(&idp.url, &["Unmapped"]))).await;
    assert_eq!(code, 403, "authenticated, but no role: {text}");

    let mut attacks: Vec<(&str, String)> = Vec::new();
    let mut expired = claims(&idp.url, &["Vigil.Owner"]);
    expired["exp"] = json!(now() - 120);
    attacks.push(("expired", rsa.sign(&expired)));
    let mut early = claims(&idp.url, &["Vigil.Owner"]);
    early["nbf"] = json!(now() + 300);
    attacks.push(("not yet valid", rsa.sign(&early)));
    attacks.push(("wrong issuer", rsa.sign(&claims("https://evil.example", &["Vigil.Owner"]))));
    let mut audience = claims(&idp.url, &["Vigil.Owner"]);
    audience["aud"] = json!("api://other");
    attacks.push(("wrong audience", rsa.sign(&audience)));
    let body = B64.encode(claims(&idp.url, &["Vigil.Owner"]).to_string());
    let none_header = B64.encode(json!({"alg": "none", "kid": "rsa-1", "typ": "JWT"}).to_string());
    attacks.push(("alg none", format!("{none_header}.{body}.")));
    // HS256 keyed with the RSA public key (the classic confusion attack).
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("rsa-1".into());
    let public_pem = rsa.pair.public_key_pem();
    let confused = jsonwebtoken::encode(
        &hs,
        &claims(&idp.url, &["Vigil.Owner"]),
        &EncodingKey::from_secret(public_pem.as_bytes()),
    );
    attacks.push(("HS256 with the public key", confused.unwrap()));
    // An RS256 header on the EC key's id: the key decides the algorithm.
    let mut swapped = Header::new(Algorithm::RS256);
    swapped.kid = Some("ec-1".into());
    let swapped = jsonwebtoken::encode(&swapped, &claims(&idp.url, &["Vigil.Owner"]), &rsa.encoding_key());
    attacks.push(("algorithm of another key", swapped.unwrap()));
    let good = rsa.sign(&claims(&idp.url, &["Vigil.Owner"]));
    let (head, rest) = good.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let mut forged_claims = claims(&idp.url, &["Vigil.Owner"]);
    forged_claims["sub"] = json!("admin");
    attacks.push(("tampered payload", format!("{head}.{}.{signature}", B64.encode(forged_claims.to_string()))));
    let mut sig = B64.decode(signature).unwrap();
    sig[10] ^= 1;
    attacks.push(("tampered signature", format!("{head}.{payload}.{}", B64.encode(sig))));
    attacks.push(("unknown key id", SigningKey::rsa("rsa-unknown").sign(&claims(&idp.url, &["Vigil.Owner"]))));
    attacks.push(("garbage", "a.b.c".into()));
    for (what, token) in &attacks {
        let (code, text) = status(&s, token).await;
        assert_eq!(code, 401, "{what}: {text}");
        assert!(!text.contains("Vigil.Owner"), "{what}: the answer does not echo the token: {text}");
    }
    // Refusals on the request path are audited without waiting: give the writer a moment.
    let mut refused = 0;
    for _ in 0..50 {
        let audit: Value = s.client.get(s.url("/api/v1/audit?limit=1000")).send().await.unwrap().json().await.unwrap();
        refused = audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["outcome"].as_str().unwrap().starts_with("unauthenticated: token refused"))
            .count();
        if refused >= attacks.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refused, attacks.len(), "every refusal is audited");

    // A flood of tokens naming unknown key ids fetches the JWKS at most once
    // per bound (the unknown-kid attack above may have used it already).
    let before = idp.fetches.load(Ordering::SeqCst);
    let flood = SigningKey::rsa("rsa-flood");
    for _ in 0..20 {
        assert_eq!(status(&s, &flood.sign(&claims(&idp.url, &["Vigil.Owner"]))).await.0, 401);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = idp.fetches.load(Ordering::SeqCst);
    assert!(after <= before + 1, "{before} -> {after} fetches");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_new_signing_key_is_fetched_on_first_sight() {
    let rsa = SigningKey::rsa("k1");
    let idp = issuer(&[&rsa]).await;
    let mut c = config(None, vigil_server::Limits::default());
    c.security.oidc = Some(oidc_config(&idp.url));
    let s = TestServer::start(c).await;
    assert_eq!(status(&s, &rsa.sign(&claims(&idp.url, &["Vigil.Reader"]))).await.0, 200);
    let before = idp.fetches.load(Ordering::SeqCst);
    let rotated = SigningKey::ec("k2");
    idp.jwks.lock().unwrap()["keys"].as_array_mut().unwrap().push(rotated.jwk());
    let token = rotated.sign(&claims(&idp.url, &["Vigil.Reader"]));
    let (first, _) = status(&s, &token).await;
    assert_eq!(first, 401, "not fetched yet: refused, and a fetch starts");
    let mut code = first;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        code = status(&s, &token).await.0;
        if code == 200 {
            break;
        }
    }
    assert_eq!(code, 200, "the refetch brought the new key");
    assert_eq!(idp.fetches.load(Ordering::SeqCst), before + 1);
    s.stop().await.unwrap();
}

/// A JWKS over the size limit is not taken (the server still starts: API keys
/// keep working), so tokens signed with its keys are refused.
#[tokio::test]
async fn an_oversized_jwks_is_refused() {
    let rsa = SigningKey::rsa("k1");
    let idp = issuer(&[&rsa]).await;
    idp.jwks.lock().unwrap()["padding"] = json!("x".repeat(2 << 20));
    let mut c = config(None, vigil_server::Limits::default());
    c.security.oidc = Some(oidc_config(&idp.url));
    let s = TestServer::start(c).await;
    let (code, text) = status(&s, &rsa.sign(&claims(&idp.url, &["Vigil.Reader"]))).await;
    assert_eq!(code, 401, "{text}");
    assert_eq!(s.client.get(s.url("/api/v1/models")).send().await.unwrap().status(), 200, "keys still work");
    s.stop().await.unwrap();
}
