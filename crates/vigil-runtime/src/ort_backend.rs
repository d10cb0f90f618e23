//! The ONNX Runtime backend, loaded at run time (`ort` with `load-dynamic`): the
//! library comes from configuration, `ORT_DYLIB_PATH`, or a pip-installed
//! `onnxruntime` wheel (which ships `onnxruntime/capi/libonnxruntime.so.*`).

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{Tensor as OrtTensor, TensorElementType, ValueType};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use vigil_core::backend::{ExecutionProvider, OptimizationLevel};
use vigil_core::{
    Backend, Error, ErrorCode, LoadOptions, LoadedModel, OperatorTime, Profile, Signature, Tensor, TensorData,
};

pub struct OrtBackend {
    environment: Environment,
    pub library: PathBuf,
}

/// ONNX Runtime can be loaded once per process: every caller gets the first outcome.
static BACKEND: OnceLock<Result<OrtBackend, String>> = OnceLock::new();

impl OrtBackend {
    /// Finds and loads the library (once per process). `configured` wins over
    /// `ORT_DYLIB_PATH`, which wins over a pip-installed `onnxruntime`.
    pub fn get(configured: Option<&Path>) -> Result<&'static OrtBackend, String> {
        BACKEND
            .get_or_init(|| {
                Self::init(configured).inspect_err(|e| tracing::info!(reason = %e, "ONNX Runtime is not available"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn init(configured: Option<&Path>) -> Result<OrtBackend, String> {
        let library = find_library(configured)?;
        let environment = ort::init_from(&library)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", library.display()))?
            .with_name("vigil")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", library.display()))?;
        tracing::info!(library = %library.display(), "ONNX Runtime loaded");
        Ok(OrtBackend { environment, library })
    }
}

/// Where the library is: `configured`, else `ORT_DYLIB_PATH`, else pip's wheel.
pub fn find_library(configured: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = configured {
        return existing(path.to_owned(), "onnxruntime.library");
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return existing(PathBuf::from(path), "ORT_DYLIB_PATH");
    }
    pip_library().ok_or_else(|| {
        "ONNX Runtime not found: set ORT_DYLIB_PATH or [onnxruntime] library, or `pip install onnxruntime`".to_owned()
    })
}

fn existing(path: PathBuf, source: &str) -> Result<PathBuf, String> {
    if path.is_file() { Ok(path) } else { Err(format!("{source} points to {}, which is not a file", path.display())) }
}

/// The library inside the `onnxruntime` package of the `python3` on PATH (a venv's, if active).
fn pip_library() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let capi = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim()).join("capi");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&capi)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so")))
        .collect();
    // The versioned file (libonnxruntime.so.1.x.y) is the real library.
    candidates.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    candidates.into_iter().next()
}

impl Backend for OrtBackend {
    fn name(&self) -> &'static str {
        "onnxruntime"
    }

    fn load(&self, model: &[u8], signature: &Signature, options: &LoadOptions) -> Result<Box<dyn LoadedModel>, String> {
        let instances = options.instances.max(1);
        let sessions = (0..instances)
            .map(|_| self.session(model, options, None).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let output_names = signature.outputs.iter().map(|o| o.name.clone()).collect();
        Ok(Box::new(OrtModel { sessions, next: AtomicUsize::new(0), output_names }))
    }

    /// ONNX Runtime's own profiler: a session started with profiling on
    /// writes a trace (Chrome trace-event JSON) whose `Node` events are each
    /// kernel's run; the warm-up's are left out by time.
    fn profile(
        &self,
        model: &[u8],
        signature: &Signature,
        options: &LoadOptions,
        inputs: &[Tensor],
        warmup: usize,
        runs: usize,
    ) -> Result<Profile, String> {
        let dir = TraceDir::new()?;
        let session = self.session(model, options, Some(&dir.0.join("ort")))?;
        let output_names = signature.outputs.iter().map(|o| o.name.clone()).collect();
        let loaded = OrtModel { sessions: vec![Mutex::new(session)], next: AtomicUsize::new(0), output_names };
        let mut wall = std::time::Duration::ZERO;
        for run in 0..warmup.saturating_add(runs) {
            let started = std::time::Instant::now();
            loaded.infer(inputs.to_vec()).map_err(|e| format!("the model failed while profiled: {e}"))?;
            if run >= warmup {
                wall += started.elapsed();
            }
        }
        let mut sessions = loaded.sessions;
        let mut session = sessions.pop().ok_or("no session")?.into_inner().unwrap_or_else(|p| p.into_inner());
        let trace = session.end_profiling().map_err(|e| format!("ONNX Runtime's profiler: {e}"))?;
        let text = std::fs::read(&trace).map_err(|e| format!("{trace}: {e}"))?;
        Ok(Profile { runs, wall, operators: kernel_times(&text, warmup)? })
    }
}

/// A temporary directory for a profiler's trace, removed with it.
struct TraceDir(PathBuf);

impl TraceDir {
    fn new() -> Result<TraceDir, String> {
        let dir = std::env::temp_dir().join(format!("vigil-profile-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(TraceDir(dir))
    }
}

impl Drop for TraceDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Each node's kernel time from an ONNX Runtime profile, after the first
/// `warmup` runs (`model_run` events).
fn kernel_times(trace: &[u8], warmup: usize) -> Result<Vec<OperatorTime>, String> {
    #[derive(serde::Deserialize)]
    struct Event {
        #[serde(default)]
        cat: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        ts: u64,
        #[serde(default)]
        dur: u64,
        #[serde(default)]
        args: serde_json::Map<String, serde_json::Value>,
    }
    let events: Vec<Event> =
        serde_json::from_slice(trace).map_err(|e| format!("cannot read ONNX Runtime's profile: {e}"))?;
    let mut runs: Vec<(u64, u64)> =
        events.iter().filter(|e| e.cat == "Session" && e.name == "model_run").map(|e| (e.ts, e.ts + e.dur)).collect();
    runs.sort_unstable();
    let after = match warmup.checked_sub(1) {
        Some(last) => runs.get(last).map_or(u64::MAX, |r| r.1),
        None => 0,
    };
    let mut by_node: std::collections::HashMap<String, OperatorTime> = std::collections::HashMap::new();
    for e in events.iter().filter(|e| e.cat == "Node" && e.ts >= after) {
        let Some(node) = e.name.strip_suffix("_kernel_time") else { continue };
        let op = e.args.get("op_name").and_then(|v| v.as_str()).unwrap_or("?");
        let entry = by_node.entry(node.to_owned()).or_insert_with(|| OperatorTime {
            node: node.to_owned(),
            op: op.to_owned(),
            calls: 0,
            time: std::time::Duration::ZERO,
        });
        entry.calls += 1;
        entry.time += std::time::Duration::from_micros(e.dur);
    }
    Ok(by_node.into_values().collect())
}

impl OrtBackend {
    /// A session for `model`; with `profile`, ONNX Runtime's profiler writes
    /// its trace to a file named from that prefix.
    fn session(&self, model: &[u8], options: &LoadOptions, profile: Option<&Path>) -> Result<Session, String> {
        let fail = |e: ort::Error<_>| format!("ONNX Runtime could not prepare the model: {e}");
        let level = match options.optimization_level {
            OptimizationLevel::Disable => GraphOptimizationLevel::Disable,
            OptimizationLevel::Basic => GraphOptimizationLevel::Level1,
            OptimizationLevel::Extended => GraphOptimizationLevel::Level2,
            OptimizationLevel::All => GraphOptimizationLevel::All,
        };
        let mut builder = Session::builder(&self.environment)
            .map_err(|e| format!("ONNX Runtime: {e}"))?
            .with_optimization_level(level)
            .map_err(fail)?;
        if options.intra_op_threads > 0 {
            builder = builder.with_intra_threads(options.intra_op_threads).map_err(fail)?;
        }
        if options.inter_op_threads > 0 {
            builder = builder.with_inter_threads(options.inter_op_threads).map_err(fail)?;
        }
        let providers: Vec<_> = options
            .execution_providers
            .iter()
            .map(|p| match p {
                ExecutionProvider::Cuda => ort::ep::CUDA::default().build(),
                ExecutionProvider::Cpu => ort::ep::CPU::default().build(),
            })
            .collect();
        if !providers.is_empty() {
            builder = builder.with_execution_providers(providers).map_err(fail)?;
        }
        if let Some(prefix) = profile {
            builder = builder.with_profiling(prefix).map_err(fail)?;
        }
        builder.commit_from_memory(model).map_err(|e| format!("ONNX Runtime could not load the model: {e}"))
    }
}

struct OrtModel {
    /// `Session::run` needs `&mut`: one session per instance, each behind a lock.
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
    output_names: Vec<String>,
}

impl OrtModel {
    /// A free session if there is one, else the next in turn.
    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.sessions.len();
        for i in 0..n {
            if let Ok(guard) = self.sessions[(start + i) % n].try_lock() {
                return guard;
            }
        }
        self.sessions[start % n].lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl LoadedModel for OrtModel {
    fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, Error> {
        let failed = |e: String| Error::new(ErrorCode::InferenceFailed, e);
        let mut values = Vec::with_capacity(inputs.len());
        for t in inputs {
            let name = Cow::<str>::Owned(t.name.clone());
            values.push((name, to_ort(t).map_err(Error::invalid_input)?));
        }
        let mut session = self.session();
        let outputs = session.run(values).map_err(|e| failed(e.to_string()))?;
        self.output_names
            .iter()
            .map(|name| {
                let value =
                    outputs.get(name).ok_or_else(|| failed(format!("ONNX Runtime returned no output '{name}'")))?;
                from_ort(name, value).map_err(failed)
            })
            .collect()
    }
}

fn to_ort(t: Tensor) -> Result<ort::session::SessionInputValue<'static>, String> {
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    fn make<T: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static>(
        shape: Vec<i64>,
        v: Vec<T>,
    ) -> Result<ort::session::SessionInputValue<'static>, String> {
        OrtTensor::from_array((shape, v)).map(Into::into).map_err(|e| e.to_string())
    }
    match t.data {
        TensorData::Bool(v) => make(shape, v),
        TensorData::Uint8(v) => make(shape, v),
        TensorData::Uint16(v) => make(shape, v),
        TensorData::Uint32(v) => make(shape, v),
        TensorData::Uint64(v) => make(shape, v),
        TensorData::Int8(v) => make(shape, v),
        TensorData::Int16(v) => make(shape, v),
        TensorData::Int32(v) => make(shape, v),
        TensorData::Int64(v) => make(shape, v),
        TensorData::Fp16(v) => make(shape, v),
        TensorData::Fp32(v) => make(shape, v),
        TensorData::Fp64(v) => make(shape, v),
        TensorData::Bytes(v) => {
            // ONNX Runtime keeps strings as UTF-8 (C strings: no NUL bytes either).
            let strings = v
                .into_iter()
                .enumerate()
                .map(|(i, b)| match String::from_utf8(b) {
                    Ok(s) if !s.contains('\0') => Ok(s),
                    _ => Err(format!("input '{}' element {i} is not valid UTF-8 without NUL bytes", t.name)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            OrtTensor::from_string_array((shape, &*strings)).map(Into::into).map_err(|e| e.to_string())
        }
    }
}

fn from_ort(name: &str, value: &ort::value::DynValue) -> Result<Tensor, String> {
    fn plain<T: ort::value::PrimitiveTensorElementType + Clone>(
        value: &ort::value::DynValue,
    ) -> Result<(Vec<usize>, Vec<T>), String> {
        let (shape, data) = value.try_extract_tensor::<T>().map_err(|e| e.to_string())?;
        Ok((shape.iter().map(|&d| d as usize).collect(), data.to_vec()))
    }
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(format!("output '{name}' is not a tensor (export without ZipMap, e.g. skl2onnx zipmap=False)"));
    };
    macro_rules! out {
        ($variant:ident) => {{
            let (shape, v) = plain(value)?;
            (shape, TensorData::$variant(v))
        }};
    }
    let (shape, data) = match ty {
        TensorElementType::Bool => out!(Bool),
        TensorElementType::Uint8 => out!(Uint8),
        TensorElementType::Uint16 => out!(Uint16),
        TensorElementType::Uint32 => out!(Uint32),
        TensorElementType::Uint64 => out!(Uint64),
        TensorElementType::Int8 => out!(Int8),
        TensorElementType::Int16 => out!(Int16),
        TensorElementType::Int32 => out!(Int32),
        TensorElementType::Int64 => out!(Int64),
        TensorElementType::Float16 => out!(Fp16),
        TensorElementType::Float32 => out!(Fp32),
        TensorElementType::Float64 => out!(Fp64),
        TensorElementType::String => {
            let (shape, v) = value.try_extract_strings().map_err(|e| e.to_string())?;
            (
                shape.iter().map(|&d| d as usize).collect(),
                TensorData::Bytes(v.into_iter().map(String::into_bytes).collect()),
            )
        }
        other => return Err(format!("output '{name}' has ONNX Runtime type {other:?}, which Vigil cannot serve")),
    };
    Tensor::new(name, shape, data)
}
