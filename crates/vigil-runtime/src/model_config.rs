//! A model version's configuration: `config.toml` beside a repository model's
//! versions, or `vigil.toml` in a pushed package (the same keys): backend
//! choice, scheduling, signature overrides, the warm-up sample, and the
//! registry's labels, metrics and lineage.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use vigil_core::features::{Feature, FeatureSpec, PredictionSpec, RecordsPolicy};
use vigil_core::{DataType, LoadOptions, Signature, TensorSpec};

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `auto` (the server's default backend), `onnxruntime` or `tract`.
    #[serde(default)]
    pub backend: BackendChoice,
    /// How ONNX Runtime prepares the model (threads, optimisation, providers).
    #[serde(default)]
    pub onnxruntime: LoadOptions,
    /// Concurrency and the admission queue.
    #[serde(default)]
    pub scheduling: Scheduling,
    /// Dynamic batching: joins requests along the first (batch) axis.
    #[serde(default)]
    pub batching: Option<BatchingConfig>,
    /// Overrides for inputs read from the ONNX graph, by input name.
    #[serde(default)]
    pub inputs: BTreeMap<String, SpecOverride>,
    /// Overrides for outputs read from the ONNX graph, by output name.
    #[serde(default)]
    pub outputs: BTreeMap<String, SpecOverride>,
    /// A sample to warm up with instead of zeros.
    #[serde(default)]
    pub warmup: Option<Warmup>,
    /// What the version is, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// Free-form labels (`team = "risk"`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Evaluation metrics from training (`auc = 0.97`).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Where the version came from.
    #[serde(default)]
    pub lineage: LineageConfig,
    /// The named features the records API takes, in column order, and how
    /// each becomes model input columns (docs/features.md).
    #[serde(default)]
    pub features: Vec<Feature>,
    /// What the records API answers for each record.
    #[serde(default)]
    pub prediction: Option<PredictionSpec>,
    /// How the records API treats unknown fields and invalid records.
    #[serde(default)]
    pub records: RecordsPolicy,
}

/// `[lineage]`: like the registry's lineage, with parameters of any TOML type.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LineageConfig {
    pub git_commit: Option<String>,
    pub training_data_digest: Option<String>,
    pub params: BTreeMap<String, toml::Value>,
}

impl LineageConfig {
    /// Parameters as text: `C = 1.0` becomes `"1.0"`, strings stay as they are.
    pub fn to_lineage(&self) -> vigil_core::registry::Lineage {
        vigil_core::registry::Lineage {
            git_commit: self.git_commit.clone(),
            training_data_digest: self.training_data_digest.clone(),
            params: self
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                .collect(),
        }
    }
}

/// Which backend runs a model. `auto` means ONNX Runtime when it can be loaded, else tract.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    #[default]
    Auto,
    Onnxruntime,
    Tract,
}

/// Upper bounds on a manifest's numbers, checked when a version is registered
/// (400, naming the key) and again when it loads (docs/model-repository.md
/// lists them). Generous for real models; each keeps one version's worst case
/// within memory and threads a server can spare.
pub struct Limits {
    /// `scheduling.instances`: worker threads or ONNX Runtime sessions.
    pub instances: usize,
    /// `scheduling.max_queue_size`: the queue's slots are allocated up front.
    pub max_queue_size: usize,
    /// `onnxruntime.intra_op_threads` and `inter_op_threads`.
    pub threads: usize,
    pub max_batch_size: usize,
    pub max_queue_delay_us: u64,
    /// Entries in `batching.preferred_batch_sizes`.
    pub preferred_sizes: usize,
    /// Entries in `[inputs]` and in `[outputs]`.
    pub tensors: usize,
    /// Dimensions of a shape (`inputs.*.shape`, `warmup.inputs.*.shape`).
    pub rank: usize,
    /// One dimension of a shape.
    pub dim: u32,
    /// `[[features]]` entries.
    pub features: usize,
    /// A feature's `max_length`, in bytes.
    pub max_length: usize,
    /// Categories in one feature's `vocabulary`.
    pub vocabulary: usize,
    /// Entries in `[labels]`, `[metrics]` and `[lineage.params]`, each.
    pub entries: usize,
}

pub const LIMITS: Limits = Limits {
    instances: 64,
    max_queue_size: 65_536,
    threads: 256,
    max_batch_size: 4096,
    max_queue_delay_us: 1_000_000,
    preferred_sizes: 64,
    tensors: 1024,
    rank: 32,
    dim: i32::MAX as u32,
    features: 100_000,
    max_length: 16 << 20,
    vocabulary: 1_000_000,
    entries: 1024,
};

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Scheduling {
    /// Runs of the model at the same time (worker threads; ONNX Runtime
    /// sessions). 0: one per core on tract, 1 on ONNX Runtime (which already
    /// uses every core inside one run).
    pub instances: usize,
    /// Requests that may wait for a worker; beyond this they get 503.
    pub max_queue_size: usize,
}

impl Default for Scheduling {
    fn default() -> Self {
        Scheduling { instances: 0, max_queue_size: 1024 }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// Most rows in one run.
    pub max_batch_size: usize,
    /// How long a request may wait for others to join its batch, in microseconds.
    #[serde(default = "default_queue_delay_us")]
    pub max_queue_delay_us: u64,
    /// Sizes worth running at once without waiting out the delay.
    #[serde(default)]
    pub preferred_batch_sizes: Vec<usize>,
}

fn default_queue_delay_us() -> u64 {
    500
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SpecOverride {
    pub datatype: Option<DataType>,
    pub shape: Option<Vec<i64>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Warmup {
    /// Warm-up tensors by input name; inputs left out get zeros.
    pub inputs: BTreeMap<String, WarmupTensor>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WarmupTensor {
    pub shape: Vec<usize>,
    /// Flat or nested elements, as in a V2 JSON request.
    pub data: serde_json::Value,
}

impl ModelConfig {
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_file(text, "config.toml")
    }

    /// Parses `text`, naming `file` in errors. Every number is checked against
    /// its bound ([`LIMITS`]): a manifest must not be able to make the server
    /// allocate or spawn without limit when the version loads.
    pub fn parse_file(text: &str, file: &str) -> Result<Self, String> {
        let config: ModelConfig = toml::from_str(text).map_err(|e| format!("{file}: {e}"))?;
        config.check_bounds().map_err(|e| format!("{file}: {e}"))?;
        Ok(config)
    }

    /// The first key whose value is past its documented bound, named.
    fn check_bounds(&self) -> Result<(), String> {
        let over = |key: &str, value: u128, max: u128| {
            if value > max { Err(format!("{key} = {value} is over its limit of {max}")) } else { Ok(()) }
        };
        let l = &LIMITS;
        let n = |v: usize| v as u128;
        over("scheduling.instances", n(self.scheduling.instances), n(l.instances))?;
        over("scheduling.max_queue_size", n(self.scheduling.max_queue_size), n(l.max_queue_size))?;
        over("onnxruntime.intra_op_threads", n(self.onnxruntime.intra_op_threads), n(l.threads))?;
        over("onnxruntime.inter_op_threads", n(self.onnxruntime.inter_op_threads), n(l.threads))?;
        over("onnxruntime.execution_providers (count)", n(self.onnxruntime.execution_providers.len()), n(8))?;
        if let Some(b) = &self.batching {
            if b.max_batch_size == 0 {
                return Err("batching.max_batch_size must be at least 1".into());
            }
            over("batching.max_batch_size", n(b.max_batch_size), n(l.max_batch_size))?;
            over("batching.max_queue_delay_us", u128::from(b.max_queue_delay_us), u128::from(l.max_queue_delay_us))?;
            over("batching.preferred_batch_sizes (count)", n(b.preferred_batch_sizes.len()), n(l.preferred_sizes))?;
            for &size in &b.preferred_batch_sizes {
                over("batching.preferred_batch_sizes", n(size), n(b.max_batch_size))?;
            }
        }
        for (what, specs) in [("inputs", &self.inputs), ("outputs", &self.outputs)] {
            over(&format!("{what} (count)"), n(specs.len()), n(l.tensors))?;
            for (name, o) in specs {
                let key = format!("{what}.{name}.shape");
                if let Some(shape) = &o.shape {
                    over(&format!("{key} (rank)"), n(shape.len()), n(l.rank))?;
                    for &d in shape {
                        over(&key, u128::try_from(d).unwrap_or(0), u128::from(l.dim))?;
                    }
                }
            }
        }
        for (name, sample) in self.warmup.iter().flat_map(|w| &w.inputs) {
            let key = format!("warmup.inputs.{name}.shape");
            over(&format!("{key} (rank)"), n(sample.shape.len()), n(l.rank))?;
            for &d in &sample.shape {
                over(&key, n(d), u128::from(l.dim))?;
            }
        }
        over("features (count)", n(self.features.len()), n(l.features))?;
        for f in &self.features {
            let key = format!("features.{}", f.name);
            over(&format!("{key}.max_length"), n(f.max_length.unwrap_or(0)), n(l.max_length))?;
            over(&format!("{key}.vocabulary (count)"), n(f.vocabulary.as_ref().map_or(0, Vec::len)), n(l.vocabulary))?;
        }
        over("labels (count)", n(self.labels.len()), n(l.entries))?;
        over("metrics (count)", n(self.metrics.len()), n(l.entries))?;
        over("lineage.params (count)", n(self.lineage.params.len()), n(l.entries))?;
        Ok(())
    }

    /// The feature spec, if the config declares features.
    pub fn feature_spec(&self) -> Option<FeatureSpec> {
        if self.features.is_empty() {
            return None;
        }
        Some(FeatureSpec {
            features: self.features.clone(),
            prediction: self.prediction.clone(),
            records: self.records,
        })
    }

    /// Applies the overrides to the signature read from the model. An override
    /// naming a tensor the model does not have is an error, not a silent no-op.
    pub fn apply_overrides(&self, mut signature: Signature) -> Result<Signature, String> {
        apply(&mut signature.inputs, &self.inputs, "input")?;
        apply(&mut signature.outputs, &self.outputs, "output")?;
        Ok(signature)
    }
}

fn apply(specs: &mut [TensorSpec], overrides: &BTreeMap<String, SpecOverride>, what: &str) -> Result<(), String> {
    for (name, o) in overrides {
        let spec = specs
            .iter_mut()
            .find(|s| &s.name == name)
            .ok_or_else(|| format!("config.toml overrides {what} '{name}', which the model does not have"))?;
        if let Some(d) = o.datatype {
            spec.datatype = d;
        }
        if let Some(shape) = &o.shape {
            if shape.iter().any(|&d| d < -1) {
                return Err(format!("config.toml: {what} '{name}' has shape {shape:?}; dims are >= 0 or -1"));
            }
            spec.shape.clone_from(shape);
            // The model's dimension names no longer line up with the new shape.
            spec.dim_names.clear();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig() -> Signature {
        Signature {
            inputs: vec![TensorSpec::new("x", DataType::Fp32, vec![-1, 30])],
            outputs: vec![TensorSpec::new("y", DataType::Int64, vec![-1])],
        }
    }

    #[test]
    fn parses_a_full_config() {
        let c = ModelConfig::parse(
            r#"
            backend = "onnxruntime"
            [onnxruntime]
            intra_op_threads = 2
            optimization_level = "basic"
            execution_providers = ["cuda", "cpu"]
            [scheduling]
            instances = 3
            [batching]
            max_batch_size = 16
            [inputs.x]
            shape = [4, 30]
            [outputs.y]
            datatype = "INT32"
            [warmup.inputs.x]
            shape = [1, 2]
            data = [[1.0, 2.0]]
            "#,
        )
        .unwrap();
        assert_eq!(c.backend, BackendChoice::Onnxruntime);
        assert_eq!(c.onnxruntime.intra_op_threads, 2);
        assert_eq!(c.scheduling.instances, 3);
        assert_eq!(c.scheduling.max_queue_size, 1024);
        assert_eq!(c.batching.as_ref().unwrap().max_queue_delay_us, 500);
        assert_eq!(c.onnxruntime.optimization_level, vigil_core::backend::OptimizationLevel::Basic);
        let s = c.apply_overrides(sig()).unwrap();
        assert_eq!(s.inputs[0].shape, vec![4, 30]);
        assert_eq!(s.outputs[0].datatype, DataType::Int32);
        assert_eq!(c.warmup.unwrap().inputs["x"].shape, vec![1, 2]);
    }

    #[test]
    fn refuses_typos_and_unknown_tensors() {
        assert!(ModelConfig::parse("backnd = 'tract'").unwrap_err().contains("backnd"));
        assert!(ModelConfig::parse("backend = 'tensorflow'").is_err());
        assert!(ModelConfig::parse("[onnxruntime]\nintra_op_thread = 2").unwrap_err().contains("intra_op_thread"));
        assert!(ModelConfig::parse("[onnxruntime]\nexecution_providers = ['tpu']").is_err());
        assert!(ModelConfig::parse("[onnxruntime]\ninstances = 2").is_err(), "instances live under [scheduling]");
        assert!(ModelConfig::parse("[batching]\nmax_queue_delay_us = 5").is_err(), "max_batch_size is required");
        assert!(ModelConfig::parse("[inputs.x]\ndatatype = 'FP8'").unwrap_err().contains("FP8"));
        let c = ModelConfig::parse("[inputs.z]\nshape = [1]").unwrap();
        assert!(c.apply_overrides(sig()).unwrap_err().contains("input 'z'"));
        let c = ModelConfig::parse("[inputs.x]\nshape = [-2]").unwrap();
        assert!(c.apply_overrides(sig()).is_err());
    }

    #[test]
    fn numbers_past_their_bounds_are_refused_naming_the_key() {
        for (text, key) in [
            ("[scheduling]\nmax_queue_size = 4000000000", "scheduling.max_queue_size"),
            ("[scheduling]\ninstances = 100000", "scheduling.instances"),
            ("[onnxruntime]\nintra_op_threads = 100000", "onnxruntime.intra_op_threads"),
            ("[batching]\nmax_batch_size = 10000000", "batching.max_batch_size"),
            ("[batching]\nmax_batch_size = 0", "batching.max_batch_size"),
            ("[batching]\nmax_batch_size = 8\nmax_queue_delay_us = 99999999999", "batching.max_queue_delay_us"),
            ("[batching]\nmax_batch_size = 8\npreferred_batch_sizes = [4, 16]", "batching.preferred_batch_sizes"),
            ("[inputs.x]\nshape = [1, 99999999999]", "inputs.x.shape"),
            ("[warmup.inputs.x]\nshape = [4294967296]\ndata = []", "warmup.inputs.x.shape"),
            ("[[features]]\nname = 't'\ntype = 'text'\nmax_length = 999999999999", "features.t.max_length"),
        ] {
            let e = ModelConfig::parse_file(text, "vigil.toml").unwrap_err();
            assert!(e.starts_with("vigil.toml: ") && e.contains(key), "{text}: {e}");
        }
        let at_the_bound =
            format!("[scheduling]\ninstances = {}\nmax_queue_size = {}", LIMITS.instances, LIMITS.max_queue_size);
        assert!(ModelConfig::parse(&at_the_bound).is_ok());
    }

    #[test]
    fn hostile_toml_is_an_error() {
        for text in ["[[[", "a = ", "\u{0}", &"[".repeat(10_000), "inputs = 3"] {
            assert!(ModelConfig::parse(text).is_err(), "{text:?}");
        }
    }
}
