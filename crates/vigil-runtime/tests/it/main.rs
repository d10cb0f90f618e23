//! Backend conformance: one suite, run unchanged against every backend
//! (tract always; ONNX Runtime when `ORT_DYLIB_PATH` is set, as `.ci/run` does).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use serde::de::DeserializeSeed;
use serde_json::Value;
use std::path::{Path, PathBuf};
use vigil_core::elements::ElementsSeed;
use vigil_core::{Backend, DataType, ErrorCode, LoadOptions, LoadedModel, Signature, Tensor, TensorData};
use vigil_runtime::onnx;
use vigil_runtime::ort_backend::OrtBackend;
use vigil_runtime::tract_backend::TractBackend;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

/// Expected cases (from onnxruntime in Python) for models in the given folders.
fn cases(repositories: &[&str]) -> Vec<Value> {
    let all: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(models_dir().join("expected.json")).unwrap()).unwrap();
    all.into_iter().filter(|c| repositories.iter().any(|r| c["repository"] == *r)).collect()
}

fn tensor(name: &str, t: &Value) -> Tensor {
    let datatype: DataType = t["datatype"].as_str().unwrap().parse().unwrap();
    let shape: Vec<usize> = t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let data = ElementsSeed { datatype, max_len: usize::MAX }.deserialize(&t["data"]).unwrap();
    Tensor::new(name, shape, data).unwrap()
}

fn load(backend: &dyn Backend, case: &Value, options: &LoadOptions) -> (Signature, Box<dyn LoadedModel>) {
    let model = case["model"].as_str().unwrap();
    let path = models_dir().join(case["repository"].as_str().unwrap()).join(model).join("1/model.onnx");
    let bytes = std::fs::read(path).unwrap();
    let signature = onnx::read_signature(&bytes).unwrap();
    let loaded = backend.load(&bytes, &signature, options).unwrap_or_else(|e| panic!("{model}: {e}"));
    (signature, loaded)
}

fn inputs(signature: &Signature, case: &Value) -> Vec<Tensor> {
    let given = case["inputs"].as_object().unwrap().iter().map(|(n, t)| tensor(n, t)).collect();
    signature.arrange_inputs(given).unwrap()
}

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    match (&got.data, &want.data) {
        (TensorData::Fp32(g), TensorData::Fp32(w)) => {
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                assert!((g - w).abs() <= 1e-5 || g == w, "{what}[{i}]: {g} vs {w}");
            }
        }
        (g, w) => assert_eq!(g, w, "{what}"),
    }
}

fn check_case(backend: &dyn Backend, case: &Value, options: &LoadOptions) {
    let model = case["model"].as_str().unwrap();
    let (signature, loaded) = load(backend, case, options);
    let outputs = loaded.infer(inputs(&signature, case)).unwrap();
    assert_eq!(outputs.len(), signature.outputs.len());
    for (out, spec) in outputs.iter().zip(&signature.outputs) {
        assert_eq!(out.name, spec.name);
        assert_eq!(out.datatype(), spec.datatype, "{model}.{}", spec.name);
        assert_close(out, &tensor(&spec.name, &case["outputs"][&spec.name]), &format!("{model}.{}", spec.name));
    }
}

macro_rules! conformance {
    ($name:ident, $backend:expr, $repositories:expr) => {
        mod $name {
            use super::*;

            fn backend() -> Option<&'static dyn Backend> {
                $backend
            }

            #[test]
            fn outputs_match_onnxruntime_in_python() {
                let Some(b) = backend() else { return };
                for case in cases($repositories) {
                    check_case(b, &case, &LoadOptions::default());
                }
            }

            #[test]
            fn any_batch_size_gives_the_same_rows() {
                let Some(b) = backend() else { return };
                let case = &cases(&["demo"])[0];
                let (signature, model) = load(b, case, &LoadOptions::default());
                let rows = inputs(&signature, case).remove(0);
                let TensorData::Fp32(data) = &rows.data else { panic!() };
                let first = model
                    .infer(vec![Tensor::new("features", vec![1, 30], TensorData::Fp32(data[..30].to_vec())).unwrap()])
                    .unwrap();
                let many: Vec<f32> = data[..30].iter().copied().cycle().take(30 * 64).collect();
                let batch =
                    model.infer(vec![Tensor::new("features", vec![64, 30], TensorData::Fp32(many)).unwrap()]).unwrap();
                assert_eq!(batch[1].shape, vec![64, 2]);
                let TensorData::Fp32(p1) = &first[1].data else { panic!() };
                let TensorData::Fp32(p64) = &batch[1].data else { panic!() };
                for row in p64.chunks(2) {
                    assert!((row[0] - p1[0]).abs() < 1e-6 && (row[1] - p1[1]).abs() < 1e-6);
                }
            }

            #[test]
            fn many_threads_share_one_model() {
                let Some(b) = backend() else { return };
                let case = &cases(&["demo"])[1];
                let options = LoadOptions { instances: 2, ..LoadOptions::default() };
                let (signature, model) = load(b, case, &options);
                let want = model.infer(inputs(&signature, case)).unwrap();
                std::thread::scope(|s| {
                    for _ in 0..4 {
                        s.spawn(|| {
                            for _ in 0..25 {
                                assert_eq!(model.infer(inputs(&signature, case)).unwrap(), want);
                            }
                        });
                    }
                });
            }

            #[test]
            fn strings_that_are_not_utf8_are_invalid_input() {
                let Some(b) = backend() else { return };
                let case = &cases(&["test"])[0];
                let (signature, model) = load(b, case, &LoadOptions::default());
                let mut given = inputs(&signature, case);
                let strings = given.iter_mut().find(|t| t.datatype() == DataType::Bytes).unwrap();
                strings.data = TensorData::Bytes(vec![vec![0xff, 0xfe]; 6]);
                let err = model.infer(given).unwrap_err();
                assert_eq!(err.code(), ErrorCode::InvalidInput, "{err}");
                assert!(err.message().contains("in_bytes"), "{err}");
            }

            #[test]
            fn optimisation_level_does_not_change_results() {
                let Some(b) = backend() else { return };
                let options = LoadOptions {
                    optimization_level: vigil_core::backend::OptimizationLevel::Disable,
                    intra_op_threads: 1,
                    ..LoadOptions::default()
                };
                for case in cases(&["demo"]) {
                    check_case(b, &case, &options);
                }
            }
        }
    };
}

conformance!(tract, Some(&TractBackend), &["demo", "test"]);
conformance!(onnxruntime, onnxruntime(), &["demo", "test", "onnxruntime"]);

fn onnxruntime() -> Option<&'static dyn Backend> {
    if std::env::var_os("ORT_DYLIB_PATH").is_none_or(|p| p.is_empty()) {
        eprintln!("skipped: ONNX Runtime conformance needs ORT_DYLIB_PATH (.ci/run sets it)");
        return None;
    }
    Some(OrtBackend::get(None).unwrap())
}

#[test]
fn tract_refuses_what_it_cannot_run_with_a_reason() {
    let case = &cases(&["onnxruntime"])[0];
    let path = models_dir().join("onnxruntime/iris_boosting/1/model.onnx");
    let bytes = std::fs::read(path).unwrap();
    let signature = onnx::read_signature(&bytes).unwrap();
    assert_eq!(signature.inputs[0].name, case["inputs"].as_object().unwrap().keys().next().unwrap().as_str());
    let err = TractBackend.load(&bytes, &signature, &LoadOptions::default()).err().unwrap();
    assert!(err.contains("tract"), "{err}");
}

#[test]
fn a_configured_library_that_is_missing_is_a_clear_error() {
    // `find_library`, not `OrtBackend::get`: the latter loads once per process.
    let err = vigil_runtime::ort_backend::find_library(Some(Path::new("/no/such/libonnxruntime.so"))).unwrap_err();
    assert!(err.contains("/no/such/libonnxruntime.so") && err.contains("not a file"), "{err}");
}

#[test]
fn signatures_come_from_the_graph() {
    let bytes = std::fs::read(models_dir().join("demo/digits_cnn/1/model.onnx")).unwrap();
    let s = onnx::read_signature(&bytes).unwrap();
    assert_eq!(s.inputs[0].shape, vec![-1, 1, 8, 8]);
    assert_eq!(s.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["probabilities", "label"]);
    for bad in [&b""[..], b"garbage", &bytes[..bytes.len() / 3]] {
        assert!(onnx::read_signature(bad).is_err());
    }
}

mod scheduling {
    //! The admission queue and the batcher, around the real tract model; the
    //! wrapper below only counts runs and can hold the worker, to make the
    //! concurrency observable.
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    use vigil_runtime::scheduler::Inline;
    use vigil_runtime::scheduler::{Batching, Scheduler, SchedulerConfig};

    struct Observed {
        inner: Box<dyn LoadedModel>,
        entered: AtomicUsize,
        runs: AtomicUsize,
        rows_per_run: Mutex<Vec<usize>>,
        gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    }

    impl LoadedModel for Observed {
        fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, vigil_core::Error> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            let gate = self.gate.lock().unwrap().take();
            if let Some(gate) = gate {
                let _ = gate.recv();
            }
            self.runs.fetch_add(1, Ordering::SeqCst);
            self.rows_per_run.lock().unwrap().push(inputs[0].shape[0]);
            self.inner.infer(inputs)
        }
    }

    fn observed(gate: Option<std::sync::mpsc::Receiver<()>>) -> (Signature, Arc<Observed>) {
        let case = &cases(&["demo"])[0];
        let (signature, inner) = load(&TractBackend, case, &LoadOptions::default());
        (
            signature,
            Arc::new(Observed {
                inner,
                entered: AtomicUsize::new(0),
                runs: AtomicUsize::new(0),
                rows_per_run: Mutex::new(vec![]),
                gate: Mutex::new(gate),
            }),
        )
    }

    /// Row `i` of the test data, nudged so that every caller's answer differs.
    fn row(i: usize) -> Tensor {
        let case = &cases(&["demo"])[0];
        let all = tensor("features", &case["inputs"]["features"]);
        let TensorData::Fp32(data) = all.data else { panic!() };
        let start = (i % 5) * 30;
        let mut r = data[start..start + 30].to_vec();
        r[0] *= 1.0 + i as f32 / 100.0;
        Tensor::new("features", vec![1, 30], TensorData::Fp32(r)).unwrap()
    }

    fn config(instances: usize, max_queue_size: usize, batching: Option<Batching>) -> SchedulerConfig {
        SchedulerConfig { instances, max_queue_size, batching }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn batched_callers_each_get_their_own_rows() {
        let (signature, model) = observed(None);
        let batching =
            Batching { max_batch_size: 16, max_queue_delay: Duration::from_millis(20), preferred_batch_sizes: vec![] };
        let scheduler =
            Arc::new(Scheduler::start(model.clone(), &signature, &config(1, 128, Some(batching)), "t").unwrap());
        let want: Vec<Vec<Tensor>> = (0..40).map(|i| model.inner.infer(vec![row(i)]).unwrap()).collect();
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let s = Arc::clone(&scheduler);
                tokio::spawn(async move { (i, s.infer(vec![row(i)], None, Inline::WhenAlone).await.unwrap().outputs) })
            })
            .collect();
        for t in tasks {
            let (i, got) = t.await.unwrap();
            assert_eq!(got, want[i], "caller {i} got someone else's rows");
        }
        let rows = model.rows_per_run.lock().unwrap().clone();
        assert!(rows.iter().all(|&r| r <= 16), "{rows:?}");
        assert!(rows.len() < 40, "requests were batched: {rows:?}");
        assert_eq!(rows.iter().sum::<usize>(), 40);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_full_queue_refuses_instead_of_waiting() {
        let (release, gate) = std::sync::mpsc::channel();
        let (signature, model) = observed(Some(gate));
        let scheduler = Arc::new(Scheduler::start(model.clone(), &signature, &config(1, 2, None), "t").unwrap());
        let spawn = |i: usize| {
            let s = Arc::clone(&scheduler);
            tokio::spawn(async move { s.infer(vec![row(i)], None, Inline::WhenAlone).await })
        };
        let until = |what: &'static str, done: &dyn Fn() -> bool| {
            let started = Instant::now();
            while !done() {
                assert!(started.elapsed() < Duration::from_secs(10), "{what}");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        // The first request holds the only worker; two more fill the queue.
        let mut held = vec![spawn(0)];
        until("the worker never took the first request", &|| model.entered.load(Ordering::SeqCst) == 1);
        held.extend([spawn(1), spawn(2)]);
        until("the queue never filled", &|| scheduler.queued() == 2);
        let refused =
            tokio::time::timeout(Duration::from_secs(5), scheduler.infer(vec![row(9)], None, Inline::WhenAlone)).await;
        release.send(()).unwrap();
        let refused = refused.expect("a full queue answers at once").unwrap_err();
        assert_eq!(refused.code(), ErrorCode::Overloaded, "{refused}");
        for t in held {
            assert!(t.await.unwrap().is_ok());
        }
        assert!(scheduler.infer(vec![row(9)], None, Inline::WhenAlone).await.is_ok(), "accepted again once drained");
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_is_not_run() {
        let (signature, model) = observed(None);
        let scheduler = Scheduler::start(model.clone(), &signature, &config(1, 8, None), "t").unwrap();
        let err = scheduler.infer(vec![row(0)], Some(Instant::now()), Inline::WhenAlone).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::DeadlineExceeded);
        assert_eq!(model.runs.load(Ordering::SeqCst), 0);
        let far = Instant::now() + Duration::from_secs(60);
        assert!(scheduler.infer(vec![row(0)], Some(far), Inline::WhenAlone).await.is_ok());
    }

    /// One caller's bad data (strings that are not UTF-8) fails only that caller,
    /// not the others that were batched with it; rows that disagree or exceed the
    /// batch size are refused up front.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_bad_request_in_a_batch_fails_alone() {
        let case = &cases(&["test"])[0];
        let (signature, model) = load(&TractBackend, case, &LoadOptions::default());
        let batching =
            Batching { max_batch_size: 64, max_queue_delay: Duration::from_millis(30), preferred_batch_sizes: vec![] };
        let scheduler =
            Arc::new(Scheduler::start(Arc::from(model), &signature, &config(1, 64, Some(batching)), "t").unwrap());
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let s = Arc::clone(&scheduler);
                let mut given = inputs(&signature, case);
                if i == 3 {
                    let strings = given.iter_mut().find(|t| t.datatype() == DataType::Bytes).unwrap();
                    strings.data = TensorData::Bytes(vec![vec![0xff]; 6]);
                }
                tokio::spawn(async move { (i, s.infer(given, None, Inline::WhenAlone).await) })
            })
            .collect();
        for t in tasks {
            let (i, result) = t.await.unwrap();
            match i {
                3 => assert_eq!(result.unwrap_err().code(), ErrorCode::InvalidInput),
                _ => assert!(result.is_ok(), "caller {i}: {result:?}"),
            }
        }
        let mut mismatched = inputs(&signature, case);
        mismatched[0] = Tensor::new(&mismatched[0].name, vec![1, 3], TensorData::Bool(vec![true; 3])).unwrap();
        let err = scheduler.infer(mismatched, None, Inline::WhenAlone).await.unwrap_err();
        assert!(err.message().contains("same number in every input"), "{err}");
        let (signature, model) = observed(None);
        let small =
            Batching { max_batch_size: 2, max_queue_delay: Duration::from_millis(1), preferred_batch_sizes: vec![] };
        let scheduler = Scheduler::start(model, &signature, &config(1, 8, Some(small)), "t").unwrap();
        let three = Tensor::new("features", vec![3, 30], TensorData::Fp32(vec![0.0; 90])).unwrap();
        let err = scheduler.infer(vec![three], None, Inline::WhenAlone).await.unwrap_err();
        assert!(err.message().contains("over the model's max_batch_size (2)"), "{err}");
    }

    /// Counts runs at once and where they ran, around the real (quick) tract
    /// model, optionally sleeping first to make it slow.
    struct Placed {
        inner: Box<dyn LoadedModel>,
        sleep: Duration,
        running: AtomicUsize,
        most_at_once: AtomicUsize,
        on_workers: AtomicUsize,
        elsewhere: AtomicUsize,
    }

    impl LoadedModel for Placed {
        fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, vigil_core::Error> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_at_once.fetch_max(now, Ordering::SeqCst);
            let worker = std::thread::current().name().is_some_and(|n| n.starts_with("vigil-t-"));
            if worker { &self.on_workers } else { &self.elsewhere }.fetch_add(1, Ordering::SeqCst);
            if !self.sleep.is_zero() {
                std::thread::sleep(self.sleep);
            }
            let out = self.inner.infer(inputs);
            self.running.fetch_sub(1, Ordering::SeqCst);
            out
        }
    }

    /// The quick model with one instance, its answers for rows 0 to 19, and
    /// one request run: the first, of unknown cost, always queues.
    async fn quick_model_after_its_first_run(inline: Inline) -> (Arc<Placed>, Arc<Scheduler>, Vec<Vec<Tensor>>) {
        let (signature, model) = placed(Duration::ZERO);
        let scheduler = Arc::new(Scheduler::start(model.clone(), &signature, &config(1, 1024, None), "t").unwrap());
        let want: Vec<Vec<Tensor>> = (0..20).map(|i| model.inner.infer(vec![row(i)]).unwrap()).collect();
        scheduler.infer(vec![row(0)], None, inline).await.unwrap();
        assert_eq!(model.on_workers.load(Ordering::SeqCst), 1, "the first run, of unknown cost, is queued");
        (model, scheduler, want)
    }

    /// 16 callers at once, 200 requests each, each checking that it got its own answer.
    async fn sixteen_callers(scheduler: &Arc<Scheduler>, want: &[Vec<Tensor>], inline: Inline) {
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let (s, want) = (Arc::clone(scheduler), want.to_vec());
                tokio::spawn(async move {
                    for i in 0..200 {
                        let got = s.infer(vec![row((t + i) % 20)], None, inline).await.unwrap().outputs;
                        assert_eq!(got, want[(t + i) % 20], "caller {t} got someone else's answer");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }

    fn placed(sleep: Duration) -> (Signature, Arc<Placed>) {
        let case = &cases(&["demo"])[0];
        let (signature, inner) = load(&TractBackend, case, &LoadOptions::default());
        let zero = || AtomicUsize::new(0);
        let model =
            Placed { inner, sleep, running: zero(), most_at_once: zero(), on_workers: zero(), elsewhere: zero() };
        (signature, Arc::new(model))
    }

    /// A quick model's requests run on the caller's thread once its first
    /// run (on a worker) has shown it is quick and requests have come one at
    /// a time for `SOLO_HOLD`; under load from many callers they queue, never
    /// more than `instances` run at once, and every caller gets its own
    /// answer; once the load is gone they run on the callers' threads again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_quick_model_runs_on_the_callers_thread_while_requests_come_one_at_a_time() {
        use vigil_runtime::scheduler::SOLO_HOLD;
        let (model, scheduler, want) = quick_model_after_its_first_run(Inline::WhenAlone).await;
        let one_at_a_time = |n: usize| {
            let s = Arc::clone(&scheduler);
            let want = want.clone();
            async move {
                tokio::time::sleep(SOLO_HOLD + Duration::from_millis(20)).await;
                for i in 0..n {
                    assert_eq!(
                        s.infer(vec![row(i % 20)], None, Inline::WhenAlone).await.unwrap().outputs,
                        want[i % 20]
                    );
                }
            }
        };
        // A busy test machine may slow some runs past INLINE_MAX: allow for it.
        one_at_a_time(200).await;
        assert!(model.elsewhere.load(Ordering::SeqCst) > 100, "a quick model runs here");
        let queued_before = model.on_workers.load(Ordering::SeqCst);
        sixteen_callers(&scheduler, &want, Inline::WhenAlone).await;
        assert_eq!(model.most_at_once.load(Ordering::SeqCst), 1, "one instance: one run at a time");
        let queued = model.on_workers.load(Ordering::SeqCst) - queued_before;
        assert!(queued > 1600, "overlapping requests queue: {queued} of 3200 did");
        let here_before = model.elsewhere.load(Ordering::SeqCst);
        one_at_a_time(200).await;
        assert!(model.elsewhere.load(Ordering::SeqCst) - here_before > 100, "one at a time again: run here");
    }

    /// With `Inline::WhenFree` a quick model's requests run on the caller's
    /// thread once its first run (on a worker) has shown it is quick, under
    /// load too whenever the instance is free; never more than `instances`
    /// run at once, wherever they run, and every caller gets its own answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn when_free_a_quick_model_runs_on_the_callers_thread_under_load_too() {
        let (model, scheduler, want) = quick_model_after_its_first_run(Inline::WhenFree).await;
        for i in 0..200 {
            let got = scheduler.infer(vec![row(i % 20)], None, Inline::WhenFree).await.unwrap().outputs;
            assert_eq!(got, want[i % 20]);
        }
        // A busy test machine may slow some runs past INLINE_MAX: allow for it.
        assert!(model.elsewhere.load(Ordering::SeqCst) > 100, "a quick model runs here");
        let here_before = model.elsewhere.load(Ordering::SeqCst);
        sixteen_callers(&scheduler, &want, Inline::WhenFree).await;
        assert_eq!(model.most_at_once.load(Ordering::SeqCst), 1, "one instance: one run at a time");
        let runs = model.on_workers.load(Ordering::SeqCst) + model.elsewhere.load(Ordering::SeqCst);
        assert_eq!(runs, 1 + 200 + 3200, "every request ran once");
        assert!(model.elsewhere.load(Ordering::SeqCst) > here_before, "overlapping requests ran here too");
    }

    /// A model whose runs take longer than `INLINE_MAX` never runs on the
    /// caller's (async runtime's) thread, even one request at a time and
    /// whatever the caller allows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_model_always_runs_on_a_worker() {
        use vigil_runtime::scheduler::{INLINE_MAX, SOLO_HOLD};
        let (signature, model) = placed(INLINE_MAX * 3);
        let scheduler = Arc::new(Scheduler::start(model.clone(), &signature, &config(2, 64, None), "t").unwrap());
        tokio::time::sleep(SOLO_HOLD).await;
        for i in 0..20 {
            scheduler.infer(vec![row(i)], None, Inline::WhenFree).await.unwrap();
        }
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let s = Arc::clone(&scheduler);
                tokio::spawn(async move { s.infer(vec![row(i)], None, Inline::WhenFree).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(model.elsewhere.load(Ordering::SeqCst), 0);
        assert_eq!(model.on_workers.load(Ordering::SeqCst), 24);
        assert!(model.most_at_once.load(Ordering::SeqCst) <= 2);
    }

    #[test]
    fn batching_needs_a_dynamic_batch_dimension() {
        let (mut signature, model) = observed(None);
        signature.inputs[0].shape = vec![1, 30];
        let batching =
            Batching { max_batch_size: 8, max_queue_delay: Duration::from_millis(1), preferred_batch_sizes: vec![] };
        let err = Scheduler::start(model, &signature, &config(1, 8, Some(batching)), "t").err().unwrap();
        assert!(err.contains("dynamic first dimension"), "{err}");
    }
}

mod features {
    //! The demo's feature specs against what scikit-learn made of the same
    //! records (`models/features_expected.json`, written by the script that
    //! fitted the preprocessing and trained the models).
    use super::*;
    use vigil_core::features::{FeaturePipeline, Records};
    use vigil_runtime::model_config::ModelConfig;

    fn expected(model: &str) -> Value {
        let all: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(models_dir().join("features_expected.json")).unwrap())
                .unwrap();
        all.into_iter().find(|c| c["model"] == model).unwrap()
    }

    /// The model, its compiled pipeline and the expected case.
    fn demo(model: &str) -> (Box<dyn LoadedModel>, FeaturePipeline, Value) {
        let dir = models_dir().join("demo").join(model);
        let config = ModelConfig::parse(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
        let bytes = std::fs::read(dir.join("1/model.onnx")).unwrap();
        let signature = onnx::read_signature(&bytes).unwrap();
        let pipeline = FeaturePipeline::compile(config.feature_spec().unwrap(), &signature).unwrap();
        let loaded = TractBackend.load(&bytes, &signature, &LoadOptions::default()).unwrap();
        (loaded, pipeline, expected(model))
    }

    fn records(case: &Value) -> Records {
        Records::from_json(json!({ "instances": case["records"] }).to_string().as_bytes()).unwrap()
    }

    use serde_json::json;

    #[test]
    fn transforms_match_scikit_learn() {
        let (_, pipeline, case) = demo("credit");
        let encoded = pipeline.encode(&records(&case), 1 << 20).unwrap();
        assert_eq!(encoded.rows.len(), case["records"].as_array().unwrap().len());
        for t in &encoded.tensors {
            let want: Vec<f64> = case["tensors"][&t.name]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().clone())
                .map(|v| v.as_f64().unwrap())
                .collect();
            let TensorData::Fp32(got) = &t.data else { panic!("{}: FP32", t.name) };
            assert_eq!(got.len(), want.len(), "{}", t.name);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let g = f64::from(*g);
                assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{}[{i}]: {g} vs scikit-learn's {w}", t.name);
            }
        }
    }

    #[test]
    fn predictions_match_onnxruntime_in_python() {
        for model in ["credit", "breast_cancer"] {
            let (loaded, pipeline, case) = demo(model);
            let encoded = pipeline.encode(&records(&case), 1 << 20).unwrap();
            let outputs = loaded.infer(encoded.tensors).unwrap();
            let got = pipeline.predictions(&outputs, encoded.rows.len()).unwrap();
            let want = case["predictions"].as_array().unwrap();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                assert_eq!(g["label"], w["label"], "{model}: {g} vs {w}");
                for (label, p) in w["probabilities"].as_object().unwrap() {
                    let q = g["probabilities"][label].as_f64().unwrap();
                    assert!((q - p.as_f64().unwrap()).abs() < 1e-5, "{model} {label}: {q} vs {p}");
                }
            }
        }
    }

    #[test]
    fn tensors_decode_back_to_the_records() {
        let (_, pipeline, case) = demo("credit");
        let encoded = pipeline.encode(&records(&case), 1 << 20).unwrap();
        let back = pipeline.decode(&encoded.tensors).unwrap();
        for (got, sent) in back.iter().zip(case["records"].as_array().unwrap()) {
            assert_eq!(got["age"].as_f64(), sent["age"].as_f64());
            assert!((got["income"].as_f64().unwrap() - sent["income"].as_f64().unwrap()).abs() < 1e-3);
            assert_eq!(got["has_mortgage"], sent["has_mortgage"]);
            for category in ["employment", "region"] {
                let known = ["salaried", "self_employed", "unemployed", "retired", "north", "south", "east", "west"];
                let want = if known.contains(&sent[category].as_str().unwrap()) {
                    sent[category].clone()
                } else {
                    Value::Null
                };
                assert_eq!(got[category], want, "{category}");
            }
        }
    }
}
