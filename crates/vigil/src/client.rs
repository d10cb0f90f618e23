//! Client commands: `vigil models …` and `vigil endpoints …` call a running
//! server's `/api/v1`, print tables for people and JSON (`--json`) for scripts.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ClientArgs {
    /// The server's REST address.
    #[arg(long, env = "VIGIL_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    pub server: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// The API key (or OIDC token) to send.
    #[arg(long, env = "VIGIL_API_KEY", hide_env_values = true, global = true, value_name = "KEY")]
    pub api_key: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Register a version from a directory (model.onnx, optional vigil.toml) or a tar/tar.gz package.
    Push {
        path: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// List models.
    List,
    /// Show a model's versions and aliases, or one version (by number or alias).
    Show { name: String, version: Option<String> },
    /// Delete a version (refused while it takes traffic or an alias points at it).
    Delete { name: String, version: u64 },
    /// Point an alias (production, staging, …) at a version.
    Alias { name: String, alias: String, version: String },
    /// Delete an alias.
    Unalias { name: String, alias: String },
    /// Every move of an alias.
    AliasHistory { name: String, alias: String },
    /// Time each operator of a model on this machine, with the profiler of
    /// the backend it would be served with (runs here; needs no server).
    Profile(Box<crate::profile_cmd::ProfileArgs>),
}

#[derive(Subcommand, Debug)]
pub enum EndpointsCommand {
    /// List endpoints.
    List,
    /// Show an endpoint: its revision, status and shadow comparisons.
    Show { name: String },
    /// Set an endpoint's traffic: `--traffic 1=90,2=10` (versions or aliases =
    /// percent; weight 0 keeps a version warm for blue-green), `--shadow 3=10`.
    Set {
        name: String,
        #[arg(long)]
        model: String,
        #[arg(long, value_delimiter = ',', required = true)]
        traffic: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        shadow: Vec<String>,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List an endpoint's revisions.
    History { name: String },
    /// Restore a revision (default: the previous one) as a new revision.
    Rollback {
        name: String,
        #[arg(long)]
        to: Option<u64>,
    },
    /// Print everything needed to recreate the endpoint (TOML).
    Export { name: String },
    /// Make this server's endpoint match an exported file (idempotent).
    Apply { file: PathBuf },
    /// Delete an endpoint and its history.
    Delete { name: String },
}

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    json: bool,
    key: Option<String>,
}

impl Client {
    pub(crate) fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        Ok(Client {
            http: reqwest::Client::builder().build()?,
            base: args.server.trim_end_matches('/').to_owned(),
            json: args.json,
            key: args.api_key.clone(),
        })
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => r.bearer_auth(key),
            None => r,
        }
    }

    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request.send().await.with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        let body: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if !status.is_success() {
            let message = body["error"].as_str().map_or_else(|| body.to_string(), str::to_owned);
            if status == reqwest::StatusCode::UNAUTHORIZED && self.key.is_none() {
                bail!("{status}: {message} (set VIGIL_API_KEY or pass --api-key)");
            }
            bail!("{status}: {message}");
        }
        Ok(body)
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub(crate) async fn send_json(&self, method: reqwest::Method, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.request(method, path).json(body)).await
    }

    /// Prints `value` as JSON, or as people read it.
    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    pub(crate) fn print(&self, value: &Value, human: impl FnOnce(&Value) -> String) -> anyhow::Result<()> {
        let text = if self.json { serde_json::to_string_pretty(value)? } else { human(value) };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", text.trim_end())?;
        Ok(())
    }
}

/// Left-aligned columns.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut text = line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        text.push('\n');
        text.push_str(&line(row));
    }
    text
}

pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn traffic_text(spec: &Value) -> String {
    let mut parts: Vec<String> = spec["traffic"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| format!("v{}={}%", s(&r["version"]), s(&r["weight"])))
        .collect();
    parts.extend(
        spec["shadows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| format!("shadow v{}={}%", s(&r["version"]), s(&r["percent"]))),
    );
    parts.join(" ")
}

/// `1=90` or `production=10` as a route.
fn route(text: &str, field: &str) -> anyhow::Result<(Value, Value)> {
    let (version, share) = text.split_once('=').with_context(|| format!("{text:?}: write VERSION=PERCENT"))?;
    let version = version.parse::<u64>().map_or_else(|_| json!(version), |n| json!(n));
    let share: f64 = share.parse().with_context(|| format!("{text:?}: {share:?} is not a number"))?;
    let share = if field == "weight" {
        if share.fract() != 0.0 || share < 0.0 {
            bail!("{text:?}: weights are whole percentages");
        }
        json!(share as u32)
    } else {
        json!(share)
    };
    Ok((version, share))
}

fn version_rows(versions: &Value) -> Vec<Vec<String>> {
    versions
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            vec![
                s(&v["version"]),
                s(&v["digest"]).chars().take(19).collect(),
                s(&v["size_bytes"]),
                s(&v["created_at"]),
                s(&v["created_by"]),
            ]
        })
        .collect()
}

pub async fn models(args: &ClientArgs, command: ModelsCommand) -> anyhow::Result<()> {
    let c = Client::new(args)?;
    match command {
        ModelsCommand::Push { path, name } => {
            let bytes = if path.is_dir() {
                vigil_store::package::pack_dir(&path).map_err(|e| anyhow::anyhow!("{e}"))?
            } else {
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?
            };
            let body = upload_with_progress(bytes, c.json);
            let request = c
                .request(reqwest::Method::POST, &format!("/api/v1/models/{name}/versions"))
                .header("content-type", "application/gzip")
                .body(body);
            let v = c.send(request).await?;
            c.print(&v, |v| {
                let what = if v["created"] == true { "registered" } else { "already registered as" };
                format!(
                    "{what} {} version {} ({})",
                    s(&v["version"]["model"]),
                    s(&v["version"]["version"]),
                    s(&v["version"]["digest"])
                )
            })
        }
        ModelsCommand::List => {
            let v = c.get("/api/v1/models").await?;
            c.print(&v, |v| {
                let rows = v["models"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| vec![s(&m["name"]), s(&m["versions"]), s(&m["latest_version"]), s(&m["created_at"])])
                    .collect();
                table(&["name", "versions", "latest", "created"], rows)
            })
        }
        ModelsCommand::Show { name, version: Some(version) } => {
            let v = c.get(&format!("/api/v1/models/{name}/versions/{version}")).await?;
            c.print(&v, |v| serde_json::to_string_pretty(v).unwrap_or_default())
        }
        ModelsCommand::Show { name, version: None } => {
            let v = c.get(&format!("/api/v1/models/{name}")).await?;
            c.print(&v, |v| {
                let mut text = table(&["version", "digest", "bytes", "created", "by"], version_rows(&v["versions"]));
                let aliases: Vec<Vec<String>> = v["aliases"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| vec![s(&a["alias"]), s(&a["version"]), s(&a["updated_at"])])
                    .collect();
                if !aliases.is_empty() {
                    text.push_str("\n\n");
                    text.push_str(&table(&["alias", "version", "updated"], aliases));
                }
                text
            })
        }
        ModelsCommand::Delete { name, version } => {
            c.send(c.request(reqwest::Method::DELETE, &format!("/api/v1/models/{name}/versions/{version}"))).await?;
            c.print(&json!({"deleted": version}), |_| format!("deleted {name} version {version}"))
        }
        ModelsCommand::Alias { name, alias, version } => {
            let version = version.parse::<u64>().map_or_else(|_| json!(version), |n| json!(n));
            let v = c
                .send_json(
                    reqwest::Method::PUT,
                    &format!("/api/v1/models/{name}/aliases/{alias}"),
                    &json!({"version": version}),
                )
                .await?;
            c.print(&v, |v| format!("{name}/{} -> version {}", s(&v["alias"]), s(&v["version"])))
        }
        ModelsCommand::Unalias { name, alias } => {
            c.send(c.request(reqwest::Method::DELETE, &format!("/api/v1/models/{name}/aliases/{alias}"))).await?;
            c.print(&json!({"deleted": alias}), |_| format!("deleted alias {name}/{alias}"))
        }
        ModelsCommand::AliasHistory { name, alias } => {
            let v = c.get(&format!("/api/v1/models/{name}/aliases/{alias}/history")).await?;
            c.print(&v, |v| {
                let rows = v["history"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| vec![s(&e["changed_at"]), s(&e["version"]), s(&e["changed_by"])])
                    .collect();
                table(&["changed", "version", "by"], rows)
            })
        }
        ModelsCommand::Profile(profile) => crate::profile_cmd::run(&profile, c.json),
    }
}

/// The body of an upload, reported on a progress bar (on a terminal, not with `--json`).
fn upload_with_progress(bytes: Vec<u8>, quiet: bool) -> reqwest::Body {
    let total = bytes.len() as u64;
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
    bar.set_style(
        ProgressStyle::with_template("uploading {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Slices of one buffer: no copy of the package.
    let whole = bytes::Bytes::from(bytes);
    let chunks: Vec<bytes::Bytes> =
        (0..whole.len()).step_by(256 * 1024).map(|at| whole.slice(at..whole.len().min(at + 256 * 1024))).collect();
    let stream = futures::stream::iter(chunks.into_iter().map(move |chunk| {
        bar.inc(chunk.len() as u64);
        if bar.position() >= total {
            bar.finish_and_clear();
        }
        Ok::<_, std::io::Error>(chunk)
    }));
    reqwest::Body::wrap_stream(stream)
}

fn endpoint_row(e: &Value) -> Vec<String> {
    let r = &e["revision"];
    vec![
        s(&e["name"]),
        s(&r["spec"]["model"]),
        s(&r["revision"]),
        s(&e["status"]["serving_revision"]),
        traffic_text(&r["spec"]),
        s(&e["status"]["error"]),
    ]
}

const ENDPOINT_HEADERS: [&str; 6] = ["name", "model", "revision", "serving", "traffic", "error"];

pub async fn endpoints(args: &ClientArgs, command: EndpointsCommand) -> anyhow::Result<()> {
    let c = Client::new(args)?;
    match command {
        EndpointsCommand::List => {
            let v = c.get("/api/v1/endpoints").await?;
            c.print(&v, |v| {
                table(&ENDPOINT_HEADERS, v["endpoints"].as_array().into_iter().flatten().map(endpoint_row).collect())
            })
        }
        EndpointsCommand::Show { name } => {
            let v = c.get(&format!("/api/v1/endpoints/{name}")).await?;
            c.print(&v, |v| {
                let mut text = table(&ENDPOINT_HEADERS, vec![endpoint_row(v)]);
                for shadow in v["shadow_results"].as_array().into_iter().flatten() {
                    let st = &shadow["stats"];
                    text.push_str(&format!(
                        "\nshadow v{}: {} mirrored, {} agreed, {} disagreed, {} failed, {} dropped",
                        s(&shadow["version"]),
                        s(&st["mirrored"]),
                        s(&st["agreed"]),
                        s(&st["disagreed"]),
                        s(&st["failed"]),
                        s(&st["dropped"])
                    ));
                }
                text
            })
        }
        EndpointsCommand::Set { name, model, traffic, shadow, comment } => {
            let traffic = traffic
                .iter()
                .map(|t| route(t, "weight").map(|(version, weight)| json!({"version": version, "weight": weight})))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let shadows = shadow
                .iter()
                .map(|t| route(t, "percent").map(|(version, percent)| json!({"version": version, "percent": percent})))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let body = json!({"model": model, "traffic": traffic, "shadows": shadows, "comment": comment});
            let v = c.send_json(reqwest::Method::PUT, &format!("/api/v1/endpoints/{name}"), &body).await?;
            print_applied(&c, &v)
        }
        EndpointsCommand::History { name } => {
            let v = c.get(&format!("/api/v1/endpoints/{name}/revisions")).await?;
            c.print(&v, |v| {
                let rows = v["revisions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        vec![
                            s(&r["revision"]),
                            s(&r["created_at"]),
                            s(&r["created_by"]),
                            traffic_text(&r["spec"]),
                            s(&r["comment"]),
                        ]
                    })
                    .collect();
                table(&["revision", "created", "by", "traffic", "comment"], rows)
            })
        }
        EndpointsCommand::Rollback { name, to } => {
            let body = match to {
                Some(to) => json!({"to": to}),
                None => json!({}),
            };
            let v = c.send_json(reqwest::Method::POST, &format!("/api/v1/endpoints/{name}/rollback"), &body).await?;
            print_applied(&c, &v)
        }
        EndpointsCommand::Export { name } => {
            let v = c.get(&format!("/api/v1/endpoints/{name}/export")).await?;
            if c.json {
                return c.print(&v, |_| String::new());
            }
            let text = toml::to_string(&v).context("writing TOML")?;
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(())
        }
        EndpointsCommand::Apply { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let doc: Value = toml::from_str(&text).with_context(|| format!("{} is not valid TOML", file.display()))?;
            let v = c.send_json(reqwest::Method::POST, "/api/v1/apply", &doc).await?;
            print_applied(&c, &v)
        }
        EndpointsCommand::Delete { name } => {
            c.send(c.request(reqwest::Method::DELETE, &format!("/api/v1/endpoints/{name}"))).await?;
            c.print(&json!({"deleted": name}), |_| format!("deleted endpoint {name}"))
        }
    }
}

fn print_applied(c: &Client, v: &Value) -> anyhow::Result<()> {
    c.print(v, |v| {
        let r = &v["revision"];
        let mut text = format!("{} revision {}: {}", s(&v["name"]), s(&r["revision"]), traffic_text(&r["spec"]));
        match v["status"]["error"].as_str() {
            Some(error) => text.push_str(&format!("\nnot serving: {error}")),
            None => text.push_str("\nserving"),
        }
        text
    })?;
    if v["status"]["error"].is_string() {
        bail!("the change is recorded but this server does not serve it");
    }
    Ok(())
}
