//! `vigil keys …`, `vigil secrets …` and `vigil audit …`: the Owner's
//! commands, calling a running server.

use crate::client::{Client, ClientArgs, s, table};
use anyhow::{Context, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use std::io::{Read, Write};

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; it is printed once and never again.
    Create {
        /// predictor, reader, contributor or owner.
        #[arg(long)]
        role: String,
        /// `endpoint:NAME` or `model:NAME`; default everything.
        #[arg(long)]
        scope: Option<String>,
        /// What the key is for.
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime, e.g. 90d, 12h [default: no expiry].
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// List keys (ids, roles, scopes, expiry; never the keys).
    List,
    /// Revoke a key at once.
    Revoke { id: String },
    /// Replace a key with a new one of the same role and scope; the old one
    /// keeps working for the overlap.
    Rotate {
        id: String,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
        overlap: std::time::Duration,
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretsCommand {
    /// Store a new version of a secret. The value comes from stdin (never a
    /// flag: flags end up in shell history and process lists).
    Set { name: String },
    /// Print a secret's value (the latest, or --version N). Audited.
    Get {
        name: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// List secrets: names and versions, never values.
    List,
    /// Delete every version of a secret.
    Delete { name: String },
    /// After rotating the master key: re-seal every secret under the new one.
    Rewrap,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// List audit events.
    List {
        #[arg(long)]
        principal: Option<String>,
        /// An action (`PUT /api/v1/endpoints/{endpoint}`) or a method (`PUT`).
        #[arg(long)]
        action: Option<String>,
        /// RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Oldest first (chain order) instead of newest first.
        #[arg(long)]
        oldest_first: bool,
    },
    /// Check the hash chain; exits non-zero and names the first broken link.
    Verify,
}

fn key_rows(keys: &Value) -> Vec<Vec<String>> {
    keys.as_array()
        .into_iter()
        .flatten()
        .map(|k| {
            let expired = k["expires_at"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .is_some_and(|t| t <= std::time::SystemTime::now());
            let state = match () {
                _ if !k["revoked_at"].is_null() => "revoked",
                _ if expired => "expired",
                _ => "active",
            };
            vec![s(&k["id"]), s(&k["role"]), s(&k["scope"]), state.into(), s(&k["expires_at"]), s(&k["name"])]
        })
        .collect()
}

const KEY_HEADERS: [&str; 6] = ["id", "role", "scope", "state", "expires", "name"];

fn print_new_key(c: &Client, v: &Value) -> anyhow::Result<()> {
    c.print(v, |v| {
        format!(
            "{}\n\nThe key (shown only now; it is stored only as a hash):\n{}",
            table(&KEY_HEADERS, key_rows(&json!([v["record"]]))),
            s(&v["key"])
        )
    })
}

pub async fn keys(args: &ClientArgs, command: KeysCommand) -> anyhow::Result<()> {
    let c = Client::new(args)?;
    match command {
        KeysCommand::Create { role, scope, name, expires_in } => {
            let body = json!({"role": role, "scope": scope, "name": name,
                              "expires_in_seconds": expires_in.map(|d| d.as_secs())});
            let v = c.send_json(Method::POST, "/api/v1/keys", &body).await?;
            print_new_key(&c, &v)
        }
        KeysCommand::List => {
            let v = c.get("/api/v1/keys").await?;
            c.print(&v, |v| table(&KEY_HEADERS, key_rows(&v["keys"])))
        }
        KeysCommand::Revoke { id } => {
            let v = c.send(c.request(Method::DELETE, &format!("/api/v1/keys/{id}"))).await?;
            c.print(&v, |v| format!("revoked key {} at {}", s(&v["id"]), s(&v["revoked_at"])))
        }
        KeysCommand::Rotate { id, overlap, expires_in } => {
            let body =
                json!({"overlap_seconds": overlap.as_secs(), "expires_in_seconds": expires_in.map(|d| d.as_secs())});
            let v = c.send_json(Method::POST, &format!("/api/v1/keys/{id}/rotate"), &body).await?;
            print_new_key(&c, &v)?;
            if !c.is_json() {
                let mut err = std::io::stderr().lock();
                writeln!(err, "key {id} keeps working until {}", s(&v["old_key_expires_at"]))?;
            }
            Ok(())
        }
    }
}

pub async fn secrets(args: &ClientArgs, command: SecretsCommand) -> anyhow::Result<()> {
    let c = Client::new(args)?;
    match command {
        SecretsCommand::Set { name } => {
            let mut value = String::new();
            std::io::stdin().read_to_string(&mut value).context("reading the value from stdin")?;
            // One trailing newline is what `echo` and editors add, not part of the value.
            let value = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value);
            if value.is_empty() {
                bail!("no value on stdin: e.g. `printf %s \"$VALUE\" | vigil secrets set {name}`");
            }
            let v = c.send_json(Method::PUT, &format!("/api/v1/secrets/{name}"), &json!({"value": value})).await?;
            c.print(&v, |v| format!("stored secret {} version {}", s(&v["name"]), s(&v["version"])))
        }
        SecretsCommand::Get { name, version } => {
            let path = match version {
                Some(n) => format!("/api/v1/secrets/{name}/versions/{n}"),
                None => format!("/api/v1/secrets/{name}"),
            };
            let v = c.get(&path).await?;
            c.print(&v, |v| s(&v["value"]))
        }
        SecretsCommand::List => {
            let v = c.get("/api/v1/secrets").await?;
            c.print(&v, |v| {
                let rows = v["secrets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| vec![s(&x["name"]), s(&x["version"]), s(&x["created_at"]), s(&x["created_by"])])
                    .collect();
                table(&["name", "version", "created", "by"], rows)
            })
        }
        SecretsCommand::Delete { name } => {
            c.send(c.request(Method::DELETE, &format!("/api/v1/secrets/{name}"))).await?;
            c.print(&json!({"deleted": name}), |_| format!("deleted secret {name}"))
        }
        SecretsCommand::Rewrap => {
            let v = c.send(c.request(Method::POST, "/api/v1/vault/rewrap")).await?;
            c.print(&v, |v| {
                format!("rewrapped {} secret versions under master key {}", s(&v["rewrapped"]), s(&v["master_key_id"]))
            })
        }
    }
}

pub async fn audit(args: &ClientArgs, command: AuditCommand) -> anyhow::Result<()> {
    let c = Client::new(args)?;
    match command {
        AuditCommand::List { principal, action, since, until, limit, oldest_first } => {
            let order = if oldest_first { "oldest" } else { "newest" };
            let mut query = vec![("limit", limit.to_string()), ("order", order.to_owned())];
            for (k, v) in [("principal", principal), ("action", action), ("since", since), ("until", until)] {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            let v = c.send(c.request(Method::GET, "/api/v1/audit").query(&query)).await?;
            c.print(&v, |v| {
                let rows = v["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        vec![
                            s(&e["seq"]),
                            s(&e["time"]),
                            s(&e["principal"]),
                            s(&e["action"]),
                            s(&e["target"]),
                            s(&e["outcome"]),
                            s(&e["source"]),
                        ]
                    })
                    .collect();
                table(&["seq", "time", "principal", "action", "target", "outcome", "source"], rows)
            })
        }
        AuditCommand::Verify => {
            let v = c.get("/api/v1/audit/verify").await?;
            c.print(&v, |v| {
                if v["intact"] == true {
                    format!("the audit chain is intact: {} events", s(&v["events"]))
                } else {
                    format!(
                        "the audit chain is BROKEN at event {}: {}",
                        s(&v["broken"]["seq"]),
                        s(&v["broken"]["reason"])
                    )
                }
            })?;
            if v["intact"] != true {
                bail!("audit chain broken");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_show_as_active_expired_or_revoked() {
        let keys = serde_json::json!([
            {"id": "a", "role": "owner", "scope": "*", "name": "n", "revoked_at": null, "expires_at": null},
            {"id": "b", "role": "reader", "scope": "*", "name": "n", "revoked_at": null, "expires_at": "2020-01-01T00:00:00.000Z"},
            {"id": "c", "role": "reader", "scope": "*", "name": "n", "revoked_at": null, "expires_at": "2999-01-01T00:00:00.000Z"},
            {"id": "d", "role": "reader", "scope": "*", "name": "n", "revoked_at": "2020-01-01T00:00:00.000Z", "expires_at": "2020-01-01T00:00:00.000Z"},
        ]);
        let states: Vec<String> = key_rows(&keys).into_iter().map(|row| row[3].clone()).collect();
        assert_eq!(states, ["active", "expired", "active", "revoked"]);
    }
}
