//! `vigil models profile MODEL`: runs a model here, without a server, and
//! prints where its time goes operator by operator, from the profiler of the
//! backend it would be served with.

use crate::client::table;
use anyhow::Context;
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigil_runtime::model_config::{BackendChoice, ModelConfig};
use vigil_runtime::models::LoadSettings;
use vigil_runtime::profile::{ProfileRuns, by_op, profile};

#[derive(Args, Debug)]
pub struct ProfileArgs {
    /// A model.onnx, a version or package directory (model.onnx with an
    /// optional vigil.toml), or a model repository's model directory
    /// (config.toml and numbered versions: the highest is profiled).
    pub model: PathBuf,
    /// Runs measured.
    #[arg(long, default_value_t = 100)]
    pub runs: usize,
    /// Runs before measuring.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Size of the first axis of inputs that have a dynamic one [default: 1].
    #[arg(long)]
    pub batch: Option<usize>,
    /// The backend [default: the model's config, else auto: ONNX Runtime when it loads, else tract].
    #[arg(long, value_enum)]
    pub backend: Option<crate::cli::Backend>,
    /// ONNX Runtime library (libonnxruntime.so.*) [default: ORT_DYLIB_PATH, else pip's onnxruntime].
    #[arg(long = "onnxruntime-library", value_name = "FILE")]
    pub onnxruntime_library: Option<PathBuf>,
    /// Operators listed (the slowest).
    #[arg(long, default_value_t = 20)]
    pub top: usize,
}

pub fn run(args: &ProfileArgs, as_json: bool) -> anyhow::Result<()> {
    let (model_file, config_file) = locate(&args.model)?;
    let model = std::fs::read(&model_file).with_context(|| format!("reading {}", model_file.display()))?;
    let mut config = match &config_file {
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("config.toml");
            ModelConfig::parse_file(&text, name).map_err(anyhow::Error::msg)?
        }
        None => ModelConfig::default(),
    };
    if let Some(backend) = args.backend {
        config.backend = match backend {
            crate::cli::Backend::Auto => BackendChoice::Auto,
            crate::cli::Backend::Onnxruntime => BackendChoice::Onnxruntime,
            crate::cli::Backend::Tract => BackendChoice::Tract,
        };
    }
    let settings = LoadSettings {
        default_backend: BackendChoice::Auto,
        onnxruntime_library: args.onnxruntime_library.clone(),
        max_tensor_elements: 1 << 28,
        ..LoadSettings::default()
    };
    let runs = ProfileRuns { batch: args.batch, warmup: args.warmup, runs: args.runs };
    let (backend, p) = profile(&model, &config, &settings, runs).map_err(anyhow::Error::msg)?;
    let per_run = |d: Duration| d.as_secs_f64() * 1e6 / p.runs as f64;
    let operators_time: Duration = p.operators.iter().map(|o| o.time).sum();
    let share = |d: Duration| {
        if operators_time.is_zero() { 0.0 } else { 100.0 * d.as_secs_f64() / operators_time.as_secs_f64() }
    };
    if as_json {
        let value = json!({
            "model": model_file.display().to_string(),
            "backend": backend,
            "runs": p.runs,
            "warmup": args.warmup,
            "wall_us_per_run": per_run(p.wall),
            "operators_us_per_run": per_run(operators_time),
            "operators": p.operators.iter().map(|o| json!({
                "node": o.node, "op": o.op, "calls": o.calls,
                "us_per_run": per_run(o.time), "share": share(o.time) / 100.0,
            })).collect::<Vec<_>>(),
            "by_op": by_op(&p.operators).into_iter().map(|(op, nodes, calls, time)| json!({
                "op": op, "nodes": nodes, "calls": calls, "us_per_run": per_run(time), "share": share(time) / 100.0,
            })).collect::<Vec<_>>(),
        });
        return say(&serde_json::to_string_pretty(&value)?);
    }
    let mut text = format!(
        "{} on {backend}: {} runs after {} warm-up, {:.1} µs a run ({:.1} µs in operators, {} nodes)\n\n",
        model_file.display(),
        p.runs,
        args.warmup,
        per_run(p.wall),
        per_run(operators_time),
        p.operators.len()
    );
    let rows = p
        .operators
        .iter()
        .take(args.top)
        .enumerate()
        .map(|(i, o)| {
            vec![
                (i + 1).to_string(),
                o.node.clone(),
                o.op.clone(),
                format!("{:.1} µs", per_run(o.time)),
                format!("{:.1} %", share(o.time)),
            ]
        })
        .collect();
    text.push_str(&table(&["#", "node", "op", "per run", "share"], rows));
    if p.operators.len() > args.top {
        text.push_str(&format!("\n… {} more (--top)", p.operators.len() - args.top));
    }
    let rows = by_op(&p.operators)
        .into_iter()
        .map(|(op, nodes, _, time)| {
            vec![op, nodes.to_string(), format!("{:.1} µs", per_run(time)), format!("{:.1} %", share(time))]
        })
        .collect();
    text.push_str("\n\n");
    text.push_str(&table(&["op", "nodes", "per run", "share"], rows));
    say(&text)
}

fn say(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

/// The model file and its config file, if any, for what the user named.
fn locate(path: &Path) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let existing = |p: PathBuf| p.is_file().then_some(p);
    if path.is_file() {
        let dir = path.parent().unwrap_or(Path::new("."));
        let config =
            existing(dir.join("vigil.toml")).or_else(|| dir.parent().and_then(|m| existing(m.join("config.toml"))));
        return Ok((path.to_owned(), config));
    }
    if !path.is_dir() {
        anyhow::bail!("{} is neither a model file nor a directory", path.display());
    }
    if let Some(model) = existing(path.join("model.onnx")) {
        let config =
            existing(path.join("vigil.toml")).or_else(|| path.parent().and_then(|m| existing(m.join("config.toml"))));
        return Ok((model, config));
    }
    // A repository's model directory: its highest numbered version.
    let highest = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()).map(|n| (n, e.path())))
        .filter(|(_, dir)| dir.join("model.onnx").is_file())
        .max_by_key(|(n, _)| *n);
    match highest {
        Some((_, version)) => Ok((version.join("model.onnx"), existing(path.join("config.toml")))),
        None => anyhow::bail!("{} has no model.onnx, and no numbered version directory with one", path.display()),
    }
}
