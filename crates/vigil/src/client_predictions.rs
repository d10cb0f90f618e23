//! `vigil predictions`: read an endpoint's prediction log from a running server.

use crate::client::{Client, ClientArgs};
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum PredictionsCommand {
    /// Print the newest records as JSON lines; with --follow, keep printing new ones.
    Tail {
        endpoint: String,
        /// How many of the newest records to start with.
        #[arg(long, short = 'n', default_value_t = 10)]
        lines: u32,
        #[arg(long, short = 'f')]
        follow: bool,
        /// With --follow, how often to ask for new records, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Write every record in a time range as JSON lines (to --out, else standard output).
    Export {
        endpoint: String,
        /// RFC 3339, inclusive.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339, exclusive.
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        version: Option<String>,
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
}

/// One page of records after `after`, and the cursor of its last one.
async fn page(c: &Client, endpoint: &str, query: &[(&str, String)]) -> anyhow::Result<(Vec<Value>, Option<String>)> {
    let path = format!("/api/v1/endpoints/{endpoint}/predictions");
    let v = c.send(c.request(Method::GET, &path).query(query)).await?;
    let records = v["predictions"].as_array().cloned().unwrap_or_default();
    Ok((records, v["next"].as_str().map(str::to_owned)))
}

fn write_lines(out: &mut dyn Write, records: &[Value]) -> anyhow::Result<()> {
    for r in records {
        serde_json::to_writer(&mut *out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

pub async fn predictions(args: &ClientArgs, command: PredictionsCommand) -> anyhow::Result<()> {
    let c = Client::new(args)?;
    match command {
        PredictionsCommand::Tail { endpoint, lines, follow, interval_ms } => {
            // Walk to the end, keeping the last `lines` records.
            let mut last: Vec<Value> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut query = vec![("limit", "1000".to_owned())];
                query.extend(cursor.clone().map(|c| ("after", c)));
                let (records, next) = page(&c, &endpoint, &query).await?;
                let done = records.len() < 1000;
                last.extend(records);
                let keep = last.len().saturating_sub(lines as usize);
                last.drain(..keep);
                cursor = next.or(cursor);
                if done {
                    break;
                }
            }
            let stdout = std::io::stdout();
            write_lines(&mut stdout.lock(), &last)?;
            if !follow {
                return Ok(());
            }
            loop {
                tokio::time::sleep(Duration::from_millis(interval_ms.max(50))).await;
                let mut query = vec![("limit", "1000".to_owned())];
                query.extend(cursor.clone().map(|c| ("after", c)));
                let (records, next) = page(&c, &endpoint, &query).await?;
                write_lines(&mut stdout.lock(), &records)?;
                cursor = next.or(cursor);
            }
        }
        PredictionsCommand::Export { endpoint, since, until, version, out } => {
            let mut sink: Box<dyn Write> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut cursor: Option<String> = None;
            let mut total = 0usize;
            loop {
                let mut query = vec![("limit", "1000".to_owned())];
                for (k, v) in [("since", &since), ("until", &until), ("version", &version), ("after", &cursor)] {
                    if let Some(v) = v {
                        query.push((k, v.clone()));
                    }
                }
                let (records, next) = page(&c, &endpoint, &query).await?;
                write_lines(&mut sink, &records)?;
                total += records.len();
                if records.len() < 1000 {
                    break;
                }
                cursor = next;
            }
            if let Some(path) = out {
                eprintln!("wrote {total} records to {}", path.display());
            }
            Ok(())
        }
    }
}
