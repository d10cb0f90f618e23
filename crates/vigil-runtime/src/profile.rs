//! `vigil models profile`: where a model's time goes, operator by operator,
//! measured by the backend it would be served with, with the options its
//! config gives (threads, optimisation level, providers).

use crate::model_config::ModelConfig;
use crate::models::{LoadSettings, sample_inputs};
use crate::onnx;
use vigil_core::{OperatorTime, Profile};

/// What to profile and how long.
#[derive(Debug, Clone, Copy)]
pub struct ProfileRuns {
    /// The first axis of inputs that have a dynamic one (1 when `None`).
    pub batch: Option<usize>,
    /// Runs before measuring (lazy initialisation, caches).
    pub warmup: usize,
    /// Runs measured.
    pub runs: usize,
}

/// Profiles `model` as `config` would serve it. Returns the backend's name
/// and the profile, its operators slowest first.
pub fn profile(
    model: &[u8],
    config: &ModelConfig,
    settings: &LoadSettings,
    runs: ProfileRuns,
) -> Result<(&'static str, Profile), String> {
    if runs.runs == 0 {
        return Err("--runs: profile at least one run".into());
    }
    let signature = config.apply_overrides(onnx::read_signature(model)?)?;
    let backend = settings.pick(config.backend)?;
    let inputs = sample_inputs(&signature, config, settings.max_tensor_elements, runs.batch)?;
    let mut profile = backend.profile(model, &signature, &config.onnxruntime, &inputs, runs.warmup, runs.runs)?;
    sort_slowest_first(&mut profile.operators);
    Ok((backend.name(), profile))
}

fn sort_slowest_first(operators: &mut [OperatorTime]) {
    operators.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.node.cmp(&b.node)));
}

/// The operators' time summed by operator type, slowest first: `(op, nodes, calls, time)`.
pub fn by_op(operators: &[OperatorTime]) -> Vec<(String, usize, usize, std::time::Duration)> {
    let mut totals: std::collections::BTreeMap<&str, (usize, usize, std::time::Duration)> = Default::default();
    for o in operators {
        let t = totals.entry(&o.op).or_default();
        t.0 += 1;
        t.1 += o.calls;
        t.2 += o.time;
    }
    let mut rows: Vec<_> = totals.into_iter().map(|(op, (n, c, t))| (op.to_owned(), n, c, t)).collect();
    rows.sort_by(|a, b| b.3.cmp(&a.3).then_with(|| a.0.cmp(&b.0)));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_config::BackendChoice;

    const DEMO: &[u8] = include_bytes!("../../../models/demo/breast_cancer/1/model.onnx");
    const CNN: &[u8] = include_bytes!("../../../models/demo/digits_cnn/1/model.onnx");

    fn settings() -> LoadSettings {
        LoadSettings {
            default_backend: BackendChoice::Tract,
            onnxruntime_library: None,
            max_tensor_elements: 1 << 24,
            ..LoadSettings::default()
        }
    }

    /// Every node of tract's plan is timed once per run; the wall time covers them.
    #[test]
    fn tract_times_each_node_of_the_plan() {
        let runs = ProfileRuns { batch: Some(4), warmup: 2, runs: 5 };
        let (backend, p) = profile(CNN, &ModelConfig::default(), &settings(), runs).expect("profiles");
        assert_eq!((backend, p.runs), ("tract", 5));
        assert!(p.operators.len() >= 3, "{:?}", p.operators);
        assert!(p.operators.iter().all(|o| o.calls == 5), "each node once a run: {:?}", p.operators);
        let summed: std::time::Duration = p.operators.iter().map(|o| o.time).sum();
        assert!(summed <= p.wall, "{summed:?} of operators within {:?} of runs", p.wall);
        assert!(p.operators.windows(2).all(|w| w[0].time >= w[1].time), "slowest first");
        let ops = by_op(&p.operators);
        assert_eq!(ops.iter().map(|o| o.1).sum::<usize>(), p.operators.len());
        // tract lowers the convolution to im2col and a matrix product.
        assert!(ops.iter().any(|o| o.0 == "Im2col") && ops.iter().any(|o| o.0 == "OptMatMul"), "{ops:?}");
    }

    /// ONNX Runtime's profiler: its kernels, with the warm-up left out.
    #[test]
    fn onnxruntime_reads_its_own_profiler() {
        if crate::ort_backend::OrtBackend::get(None).is_err() {
            assert!(std::env::var_os("VIGIL_TEST_REQUIRE_ALL").is_none(), "ONNX Runtime is required");
            eprintln!("skipped: ONNX Runtime not available");
            return;
        }
        let config = ModelConfig { backend: BackendChoice::Onnxruntime, ..ModelConfig::default() };
        let runs = ProfileRuns { batch: None, warmup: 3, runs: 7 };
        let (backend, p) = profile(CNN, &config, &settings(), runs).expect("profiles");
        assert_eq!((backend, p.runs), ("onnxruntime", 7));
        assert!(p.operators.iter().all(|o| o.calls == 7), "warm-up left out: {:?}", p.operators);
        assert!(p.operators.iter().any(|o| o.op == "Conv"), "{:?}", p.operators);
        let summed: std::time::Duration = p.operators.iter().map(|o| o.time).sum();
        assert!(summed <= p.wall, "{summed:?} of kernels within {:?} of runs", p.wall);
        // A scikit-learn model: its ai.onnx.ml operator is named as such.
        let (_, p) = profile(DEMO, &config, &settings(), runs).expect("profiles");
        assert_eq!(p.operators.iter().map(|o| o.op.as_str()).collect::<Vec<_>>(), ["LinearClassifier"]);
    }

    #[test]
    fn refuses_zero_runs_and_bad_models() {
        let none = ProfileRuns { batch: None, warmup: 0, runs: 0 };
        assert!(profile(DEMO, &ModelConfig::default(), &settings(), none).unwrap_err().contains("--runs"));
        let one = ProfileRuns { runs: 1, ..none };
        assert!(profile(b"not onnx", &ModelConfig::default(), &settings(), one).is_err());
    }
}
