//! The raw backend's throughput on one model, in process: the limit that
//! serving the model can approach on this machine. `bench/cnn.sh` runs it
//! beside Vigil serving the same model with dynamic batching.
//!
//!     cargo run --release -p vigil-runtime --example raw_throughput -- \
//!         REPO/MODEL --batch 8 --seconds 20
//!
//! `REPO/MODEL` is a model repository directory (`config.toml`,
//! `1/model.onnx`). The model is loaded as the server loads it: the backend,
//! threads and instances its config gives (instances 0: one per core on
//! tract, one on ONNX Runtime), each instance running batches of `--batch`
//! back to back on a thread of its own. Prints items/s and the median ms per
//! run, tab-separated.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a bench tool: a panic is the report

use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_core::backend::LoadOptions;
use vigil_runtime::model_config::{BackendChoice, ModelConfig};
use vigil_runtime::models::{LoadSettings, sample_inputs};

fn main() {
    let mut dir = None;
    let (mut batch, mut seconds) = (1usize, 10u64);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--batch" => batch = it.next().unwrap().parse().unwrap(),
            "--seconds" => seconds = it.next().unwrap().parse().unwrap(),
            _ => dir = Some(std::path::PathBuf::from(a)),
        }
    }
    let dir = dir.expect("usage: raw_throughput REPO/MODEL [--batch N] [--seconds S]");
    let config = ModelConfig::parse(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join("1/model.onnx")).unwrap();
    let settings = LoadSettings {
        default_backend: BackendChoice::Auto,
        onnxruntime_library: None,
        max_tensor_elements: 1 << 28,
        ..LoadSettings::default()
    };
    let backend = settings.pick(config.backend).unwrap();
    let signature = config.apply_overrides(vigil_runtime::onnx::read_signature(&bytes).unwrap()).unwrap();
    let instances = vigil_runtime::models::instances(config.scheduling.instances, backend);
    let options = LoadOptions { instances, ..config.onnxruntime.clone() };
    let model: Arc<dyn vigil_core::backend::LoadedModel> =
        Arc::from(backend.load(&bytes, &signature, &options).unwrap());
    let inputs = sample_inputs(&signature, &config, settings.max_tensor_elements, Some(batch)).unwrap();
    model.infer(inputs.clone()).unwrap();
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..instances)
        .map(|_| {
            let (model, inputs) = (Arc::clone(&model), inputs.clone());
            std::thread::spawn(move || {
                let mut runs = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    model.infer(inputs.clone()).unwrap();
                    runs.push(t.elapsed());
                }
                runs
            })
        })
        .collect();
    let mut runs: Vec<Duration> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let elapsed = started.elapsed().as_secs_f64();
    runs.sort_unstable();
    let median = runs.get(runs.len() / 2).copied().unwrap_or_default();
    let items = (runs.len() * batch) as f64 / elapsed;
    println!("{}\t{instances}\t{items:.1}\t{:.1}", backend.name(), median.as_secs_f64() * 1e3);
}
