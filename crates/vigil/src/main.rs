//! `vigil`: the command line. `vigil serve` runs the server; `vigil models` and
//! `vigil endpoints` call a running one.
#![forbid(unsafe_code)]

mod cli;
mod client;
mod client_monitor;
mod client_predictions;
mod client_security;
mod monitor_report;
mod profile_cmd;

use anyhow::Context;
use clap::Parser;
use std::io::IsTerminal;
use tokio::net::TcpListener;

/// mimalloc instead of glibc's malloc: a request allocates and frees dozens of
/// small buffers, on whichever thread runs it (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Serve(args) => {
            let config = args.resolve().context("reading the configuration")?;
            // Flushes the log lines still queued when `serve` returns.
            let _log_writer = init_logging(args.log_format)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async {
                let http =
                    TcpListener::bind(config.addr).await.with_context(|| format!("listening on {}", config.addr))?;
                let grpc = TcpListener::bind(config.grpc_addr)
                    .await
                    .with_context(|| format!("listening on {}", config.grpc_addr))?;
                let metrics = match config.metrics_addr {
                    Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?),
                    None => None,
                };
                let listeners = vigil_server::Listeners { http, grpc: Some(grpc), metrics };
                vigil_server::run(config, listeners, shutdown_signal()).await?;
                anyhow::Ok(())
            })
        }
        cli::Command::Models { client, command } => client_runtime()?.block_on(client::models(&client, command)),
        cli::Command::Endpoints { client, command } => client_runtime()?.block_on(client::endpoints(&client, command)),
        cli::Command::Keys { client, command } => client_runtime()?.block_on(client_security::keys(&client, command)),
        cli::Command::Secrets { client, command } => {
            client_runtime()?.block_on(client_security::secrets(&client, command))
        }
        cli::Command::Audit { client, command } => client_runtime()?.block_on(client_security::audit(&client, command)),
        cli::Command::Predictions { client, command } => {
            client_runtime()?.block_on(client_predictions::predictions(&client, command))
        }
        cli::Command::Monitor { client, command } => {
            client_runtime()?.block_on(client_monitor::monitor(&client, command))
        }
    }
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// Log lines are formatted on the thread that logs and written to stderr a
/// few milliseconds later by a thread of their own, many at a time
/// (`vigil_server::log_writer`: a `write` per request line cost a fifth of the
/// server's throughput, a writer thread woken per line ~12 µs of CPU a request).
fn init_logging(format: cli::LogFormat) -> anyhow::Result<vigil_server::log_writer::WriterGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = vigil_server::log_writer::spawn(std::io::stderr()).context("starting the log writer")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        cli::LogFormat::Json => builder.event_format(vigil_server::json_log::JsonLines).init(),
        cli::LogFormat::Text => builder.init(),
    }
    Ok(guard)
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: no new connections, finishing requests in flight");
}
