//! Shadow traffic: copies of requests run on other versions after the caller
//! has its answer; the shadow's answers are compared with the primary's and
//! counted, never returned. At most [`ShadowRecorder::MAX_IN_FLIGHT`] copies run
//! at once; beyond that they are dropped and counted, so shadows never pile up
//! behind a slow version or slow the versions that answer.

use crate::models::{ModelVersion, VersionState};
use crate::scheduler::Inline;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Semaphore;
use vigil_core::features::Records;
use vigil_core::{Tensor, TensorData};

/// What one shadow version did with the requests copied to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ShadowStats {
    /// Copies that ran.
    pub mirrored: u64,
    /// Answers equal to the primary's (floats within 1e-4, relative and absolute).
    pub agreed: u64,
    pub disagreed: u64,
    /// Copies the shadow failed to answer (not ready, refused the input, errored).
    pub failed: u64,
    /// Copies not run because too many were already in flight.
    pub dropped: u64,
}

type Key = (String, String);

/// What a shadow copy runs: the primary's input tensors, or the request's
/// records, which each shadow version encodes with its own feature pipeline
/// (its spec may differ from the primary's), each input tensor bounded to the
/// given number of elements.
pub enum ShadowInput {
    Tensors(Vec<Tensor>),
    Records(Arc<Records>, usize),
}

/// A request's place in a trace (W3C ids): its trace, and the span that
/// stands for the request, under which its shadow copies' spans go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// Told about each shadow copy of a traced request once it has run.
pub trait ShadowObserver: Send + Sync {
    fn shadow_ran(&self, run: &ShadowRun<'_>);
}

/// One shadow copy that ran: where, when, and how its answer compared.
pub struct ShadowRun<'a> {
    pub trace: TraceIds,
    pub endpoint: &'a str,
    pub version: &'a str,
    pub started: SystemTime,
    pub took: Duration,
    /// `agreed`, `disagreed` or `failed`.
    pub outcome: &'static str,
}

pub struct ShadowRecorder {
    in_flight: Arc<Semaphore>,
    stats: Arc<Mutex<BTreeMap<Key, ShadowStats>>>,
    observer: OnceLock<Arc<dyn ShadowObserver>>,
}

impl Default for ShadowRecorder {
    fn default() -> Self {
        ShadowRecorder {
            in_flight: Arc::new(Semaphore::new(Self::MAX_IN_FLIGHT)),
            stats: Arc::new(Mutex::new(BTreeMap::new())),
            observer: OnceLock::new(),
        }
    }
}

impl ShadowRecorder {
    pub const MAX_IN_FLIGHT: usize = 64;
    /// A shadow copy is not queued behind more than this many requests: a
    /// version that shadows here may answer for real elsewhere, and copies must
    /// never crowd out its callers.
    pub const MAX_QUEUED: usize = 4;

    /// The drawn shadows that will get a copy: those with room (in flight and
    /// in their queue). The others are counted as dropped.
    pub fn admit(&self, endpoint: &str, drawn: Vec<Arc<ModelVersion>>) -> Vec<Arc<ModelVersion>> {
        if drawn.is_empty() {
            return drawn;
        }
        let room = |v: &ModelVersion| match &*v.state() {
            VersionState::Ready { scheduler, .. } => scheduler.queued() < Self::MAX_QUEUED,
            _ => true,
        };
        let (admitted, dropped): (Vec<_>, Vec<_>) =
            drawn.into_iter().partition(|v| self.in_flight.available_permits() > 0 && room(v));
        for v in dropped {
            record(&self.stats, (endpoint.to_owned(), v.version.clone()), |s| s.dropped += 1);
        }
        admitted
    }

    /// Tells `observer` about every shadow copy of a traced request (once; later calls are ignored).
    pub fn set_observer(&self, observer: Arc<dyn ShadowObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Runs `input` on each of `versions` in the background and records how
    /// their answers compare with `primary` (and, for a traced request, tells
    /// the observer). Returns at once.
    pub fn mirror(
        &self,
        endpoint: &str,
        versions: Vec<Arc<ModelVersion>>,
        input: ShadowInput,
        primary: &[Tensor],
        trace: Option<TraceIds>,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (inputs, primary) = (Arc::new(input), Arc::new(primary.to_vec()));
        for version in versions {
            let key = (endpoint.to_owned(), version.version.clone());
            let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
                record(&self.stats, key, |s| s.dropped += 1);
                continue;
            };
            let (stats, inputs, primary) = (Arc::clone(&self.stats), Arc::clone(&inputs), Arc::clone(&primary));
            let observer = trace.and_then(|t| Some((t, Arc::clone(self.observer.get()?))));
            runtime.spawn(async move {
                let _permit = permit;
                let (started, clock) = (SystemTime::now(), Instant::now());
                let outcome = match run(&version, &inputs).await {
                    Some(outputs) if same_answers(&primary, &outputs) => "agreed",
                    Some(_) => "disagreed",
                    None => "failed",
                };
                let (endpoint, version) = key.clone();
                record(&stats, key, |s| {
                    s.mirrored += u64::from(outcome != "failed");
                    match outcome {
                        "agreed" => s.agreed += 1,
                        "disagreed" => s.disagreed += 1,
                        _ => s.failed += 1,
                    }
                });
                if let Some((trace, observer)) = observer {
                    let took = clock.elapsed();
                    observer.shadow_ran(&ShadowRun {
                        trace,
                        endpoint: &endpoint,
                        version: &version,
                        started,
                        took,
                        outcome,
                    });
                }
            });
        }
    }

    /// Forgets the counts of endpoints not in `keep` (deleted or renamed).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).retain(|(e, _), _| keep(e));
    }

    /// Every shadow version of `endpoint` with its counts.
    pub fn stats(&self, endpoint: &str) -> Vec<(String, ShadowStats)> {
        let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.iter().filter(|((e, _), _)| e == endpoint).map(|((_, v), s)| (v.clone(), *s)).collect()
    }
}

fn record(stats: &Mutex<BTreeMap<Key, ShadowStats>>, key: Key, change: impl FnOnce(&mut ShadowStats)) {
    change(stats.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default());
}

async fn run(version: &ModelVersion, input: &ShadowInput) -> Option<Vec<Tensor>> {
    let state = version.state();
    let VersionState::Ready { signature, scheduler, features, .. } = &*state else { return None };
    let inputs = match input {
        ShadowInput::Tensors(tensors) => signature.arrange_inputs(tensors.clone()).ok()?,
        ShadowInput::Records(records, max_elements) => features.as_ref()?.encode(records, *max_elements).ok()?.tensors,
    };
    scheduler.infer(inputs, None, Inline::WhenAlone).await.ok().map(|t| t.outputs)
}

/// Outputs with the same name agree; outputs only one side has are ignored.
fn same_answers(primary: &[Tensor], shadow: &[Tensor]) -> bool {
    primary.iter().all(|p| shadow.iter().find(|s| s.name == p.name).is_none_or(|s| agree(p, s)))
}

fn agree(a: &Tensor, b: &Tensor) -> bool {
    fn close(x: impl Iterator<Item = f64>, mut y: impl Iterator<Item = f64>) -> bool {
        x.into_iter().all(|a| {
            y.next().is_some_and(|b| (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-4 * (1.0 + a.abs().max(b.abs())))
        })
    }
    a.shape == b.shape
        && match (&a.data, &b.data) {
            (TensorData::Fp32(x), TensorData::Fp32(y)) => {
                close(x.iter().map(|&v| f64::from(v)), y.iter().map(|&v| f64::from(v)))
            }
            (TensorData::Fp64(x), TensorData::Fp64(y)) => close(x.iter().copied(), y.iter().copied()),
            (TensorData::Fp16(x), TensorData::Fp16(y)) => {
                close(x.iter().map(|v| v.to_f64()), y.iter().map(|v| v.to_f64()))
            }
            (x, y) => x == y,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, data: TensorData) -> Tensor {
        let n = data.len();
        Tensor::new(name, vec![n], data).unwrap()
    }

    #[test]
    fn answers_agree_within_tolerance_and_by_name() {
        let p = [t("label", TensorData::Int64(vec![1, 0])), t("p", TensorData::Fp32(vec![0.25, 0.75]))];
        let close = [t("p", TensorData::Fp32(vec![0.250_001, 0.75])), t("label", TensorData::Int64(vec![1, 0]))];
        assert!(same_answers(&p, &close));
        let other_label = [t("label", TensorData::Int64(vec![1, 1]))];
        assert!(!same_answers(&p, &other_label));
        let far = [t("p", TensorData::Fp32(vec![0.3, 0.7]))];
        assert!(!same_answers(&p, &far));
        let other_shape = [Tensor::new("p", vec![1, 2], TensorData::Fp32(vec![0.25, 0.75])).unwrap()];
        assert!(!same_answers(&p, &other_shape));
        let nan = [t("x", TensorData::Fp64(vec![f64::NAN]))];
        assert!(same_answers(&nan, &nan));
    }
}
