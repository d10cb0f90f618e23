//! Data drift, served: every request to a version that has a feature spec and
//! a reference profile is counted into this replica's current window (on the
//! request path: a lock and O(rows × features) additions, no allocation). A timer
//! closes the window every `window_seconds` and stores it; reading merges the
//! stored windows of every replica and compares them with the reference.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vigil_core::features::{FeaturePipeline, FeatureValue, RecordError};
use vigil_core::{Error, Tensor};
use vigil_monitor::drift::{
    Counter, DriftReport, FeatureHistogram, Observed, PREDICTION_PREFIX, ReferenceProfile, WindowSketch, compare,
    histograms,
};
use vigil_runtime::InferenceService;
use vigil_runtime::models::ModelVersion;
use vigil_store::{MetadataStore, StoredWindow};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitoringConfig {
    /// Length of a window: what is lost at most on a restart, and the
    /// resolution of drift over time.
    pub window_seconds: u64,
    /// Ground truth is joined with predictions logged at most this long ago.
    pub feedback_horizon_hours: u64,
    /// Stored windows and ground truth older than this are deleted (hourly).
    pub retention_days: u64,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig { window_seconds: 60, feedback_horizon_hours: 7 * 24, retention_days: 30 }
    }
}

pub struct Monitoring {
    store: Arc<dyn MetadataStore>,
    /// Tells this replica's windows from the others'.
    replica: String,
    window: Duration,
    /// How old a logged prediction ground truth may still join.
    pub feedback_horizon: Duration,
    retention: Duration,
    /// By endpoint, then version: what is being counted now.
    active: RwLock<HashMap<String, HashMap<String, Arc<Active>>>>,
    /// Parsed profiles by (model, version), with the JSON they came from.
    profiles: Mutex<HashMap<VersionKey, (String, Arc<Counter>)>>,
    /// One reload at a time (the timer's and an API call's), so that an older
    /// set of profiles never replaces a newer one.
    reloading: tokio::sync::Mutex<()>,
    /// This replica's latest closed window of each endpoint version, compared
    /// with its reference: for `/metrics` and the `drift_score` alert signal.
    latest: Mutex<HashMap<(String, String), Latest>>,
}

/// The verdicts of a closed window.
pub struct Latest {
    pub start_s: i64,
    pub report: DriftReport,
}

/// A version as the runtime names it: (model, version).
type VersionKey = (String, String);

struct Active {
    counter: Arc<Counter>,
    /// The pipeline counted for (a new load of the version brings a new one).
    pipeline: Arc<FeaturePipeline>,
    /// For each of the pipeline's features, its index in the profile.
    map: Vec<Option<usize>>,
    /// For each prediction field (`label`, each label's probability, or the
    /// regression names), the index of `prediction.<field>` in the profile.
    outputs: Vec<Option<usize>>,
    window: Mutex<WindowSketch>,
}

impl Monitoring {
    pub fn new(store: Arc<dyn MetadataStore>, config: &MonitoringConfig) -> Arc<Monitoring> {
        Arc::new(Monitoring {
            store,
            replica: format!("{:016x}", fastrand::u64(..)),
            window: Duration::from_secs(config.window_seconds.max(1)),
            feedback_horizon: Duration::from_secs(config.feedback_horizon_hours.saturating_mul(3600)),
            retention: Duration::from_secs(config.retention_days.saturating_mul(86_400)),
            active: RwLock::default(),
            profiles: Mutex::default(),
            latest: Mutex::default(),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// Loads the stored profiles and starts or stops counting for each served
    /// version accordingly.
    pub async fn reload(&self, service: &InferenceService) -> Result<(), Error> {
        let _one = self.reloading.lock().await;
        let stored = self.store.profiles().await?;
        let counters: HashMap<VersionKey, Arc<Counter>> = {
            let mut cache = self.profiles.lock().unwrap_or_else(|p| p.into_inner());
            let mut fresh = HashMap::with_capacity(stored.len());
            for p in stored {
                let key = (p.model, p.version);
                let counter = match cache.remove(&key) {
                    Some((json, counter)) if json == p.profile => counter,
                    _ => match serde_json::from_str::<ReferenceProfile>(&p.profile) {
                        Ok(profile) => Arc::new(Counter::new(profile)),
                        Err(e) => {
                            tracing::warn!(model = %key.0, version = %key.1, error = %e, "unreadable reference profile");
                            continue;
                        }
                    },
                };
                fresh.insert(key.clone(), (p.profile, Arc::clone(&counter)));
            }
            let counters = fresh.iter().map(|(k, (_, c))| (k.clone(), Arc::clone(c))).collect();
            *cache = fresh;
            counters
        };
        let models = service.models();
        let mut active = self.active.write().unwrap_or_else(|p| p.into_inner());
        let mut next: HashMap<String, HashMap<String, Arc<Active>>> = HashMap::new();
        for endpoint in models.endpoints() {
            for v in &endpoint.versions {
                let state = v.state();
                let Some(pipeline) = state.features() else { continue };
                let Some(counter) = counters.get(&(v.model.clone(), v.version.clone())) else { continue };
                let current = active.get(&endpoint.name).and_then(|m| m.get(&v.version));
                let keep = current.filter(|a| Arc::ptr_eq(&a.counter, counter) && Arc::ptr_eq(&a.pipeline, pipeline));
                let entry = match keep {
                    Some(a) => Arc::clone(a),
                    None => Arc::new(Active {
                        map: pipeline
                            .spec()
                            .features
                            .iter()
                            .map(|f| counter.profile().features.iter().position(|p| p.name == f.name))
                            .collect(),
                        outputs: pipeline
                            .prediction_fields()
                            .iter()
                            .map(|field| {
                                let name = format!("{PREDICTION_PREFIX}{field}");
                                counter.profile().features.iter().position(|p| p.name == name)
                            })
                            .collect(),
                        window: Mutex::new(counter.window()),
                        counter: Arc::clone(counter),
                        pipeline: Arc::clone(pipeline),
                    }),
                };
                next.entry(endpoint.name.clone()).or_default().insert(v.version.clone(), entry);
            }
        }
        *active = next;
        Ok(())
    }

    /// Closes the current windows (they started at `start_s`) and stores the
    /// ones that saw anything.
    pub async fn close_windows(&self, start_s: i64) {
        let closed: Vec<(String, String, WindowSketch)> = {
            let active = self.active.read().unwrap_or_else(|p| p.into_inner());
            let mut closed = Vec::new();
            let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
            latest.retain(|(e, v), _| active.get(e).is_some_and(|m| m.contains_key(v)));
            for (endpoint, versions) in active.iter() {
                for (version, a) in versions {
                    let fresh = a.counter.window();
                    let window = std::mem::replace(&mut *a.window.lock().unwrap_or_else(|p| p.into_inner()), fresh);
                    if !window.is_empty() {
                        let report = compare(a.counter.profile(), &window);
                        latest.insert((endpoint.clone(), version.clone()), Latest { start_s, report });
                        closed.push((endpoint.clone(), version.clone(), window));
                    }
                }
            }
            closed
        };
        for (endpoint, version, window) in closed {
            let Ok(sketch) = serde_json::to_string(&window) else { continue };
            let stored = StoredWindow { endpoint, version, start_s, replica: self.replica.clone(), sketch };
            if let Err(e) = self.store.put_window(&stored).await {
                tracing::warn!(endpoint = %stored.endpoint, error = %e, "could not store a monitoring window");
            }
        }
    }

    /// Reloads the profiles every few seconds (so that a new profile is
    /// counted against soon), and closes and stores the windows at each
    /// window boundary.
    pub async fn run(self: Arc<Self>, service: InferenceService) {
        let length = i64::try_from(self.window.as_secs()).unwrap_or(60).max(1);
        let mut open = now_s() / length * length;
        let mut pruned: Option<std::time::Instant> = None;
        loop {
            if pruned.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
                pruned = Some(std::time::Instant::now());
                let before = now_s().saturating_sub(i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX));
                match self.store.prune_monitoring(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "monitoring windows and ground truth past retention deleted"),
                    Err(e) => tracing::warn!(error = %e, "could not apply monitoring retention"),
                }
            }
            if let Err(e) = self.reload(&service).await {
                tracing::warn!(error = %e, "could not reload the reference profiles");
            }
            tokio::time::sleep(self.window.min(Duration::from_secs(5))).await;
            let current = now_s() / length * length;
            if current != open {
                self.close_windows(open).await;
                open = current;
            }
        }
    }

    /// The window length in seconds.
    pub fn window_s(&self) -> i64 {
        i64::try_from(self.window.as_secs()).unwrap_or(60)
    }

    /// Each endpoint version's latest closed window with its verdicts, if it
    /// closed in the last two windows (older ones say nothing about now).
    pub fn latest(&self, mut each: impl FnMut(&str, &str, &DriftReport)) {
        let length = i64::try_from(self.window.as_secs()).unwrap_or(60);
        let recent = now_s() - 3 * length;
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        for ((endpoint, version), l) in latest.iter().filter(|(_, l)| l.start_s >= recent) {
            each(endpoint, version, &l.report);
        }
    }

    /// The drift of each of `endpoint`'s versions over the windows starting in
    /// `since_s..until_s`, every replica's merged.
    pub async fn report(&self, endpoint: &str, since_s: i64, until_s: i64) -> Result<Vec<VersionDrift>, Error> {
        let windows = self.store.windows(endpoint, since_s, until_s).await?;
        let counters: HashMap<String, Arc<Counter>> = {
            let active = self.active.read().unwrap_or_else(|p| p.into_inner());
            active
                .get(endpoint)
                .map_or_else(HashMap::new, |m| m.iter().map(|(v, a)| (v.clone(), Arc::clone(&a.counter))).collect())
        };
        // By version, then by window start: every replica's window of a start merged.
        let mut by_version: BTreeMap<String, (usize, BTreeMap<i64, WindowSketch>)> = BTreeMap::new();
        for w in windows {
            let Some(counter) = counters.get(&w.version) else { continue };
            let Ok(sketch) = serde_json::from_str::<WindowSketch>(&w.sketch) else { continue };
            if sketch.profile != counter.fingerprint() {
                continue; // counted on another profile of this version: other bins
            }
            let (count, starts) = by_version.entry(w.version).or_default();
            *count += 1;
            match starts.get_mut(&w.start_s) {
                Some(merged) => merged.merge(&sketch),
                None => drop(starts.insert(w.start_s, sketch)),
            }
        }
        let mut versions = Vec::with_capacity(by_version.len());
        for (version, (windows, starts)) in by_version {
            let Some(counter) = counters.get(&version) else { continue };
            let profile = counter.profile();
            let mut sum = counter.window();
            let mut series = Vec::with_capacity(starts.len());
            for (start_s, window) in &starts {
                sum.merge(window);
                let r = compare(profile, window);
                series.push(WindowScores {
                    start_s: *start_s,
                    drift_share: r.drift_share,
                    features: r.features.into_iter().map(|f| (f.feature, f.score, f.drifted)).collect(),
                });
            }
            versions.push(VersionDrift {
                version,
                windows,
                drift: Some(compare(profile, &sum)),
                histograms: histograms(profile, &sum),
                series,
            });
        }
        Ok(versions)
    }
}

/// One version's drift over a time range.
#[derive(Debug, Clone, Serialize)]
pub struct VersionDrift {
    pub version: String,
    /// Windows merged (from every replica).
    pub windows: usize,
    pub drift: Option<DriftReport>,
    /// Reference and served distributions of each feature over the range.
    pub histograms: Vec<FeatureHistogram>,
    /// Each window start's verdicts, oldest first.
    pub series: Vec<WindowScores>,
}

/// One window's verdicts (every replica's window of that start merged).
#[derive(Debug, Clone, Serialize)]
pub struct WindowScores {
    pub start_s: i64,
    pub drift_share: f64,
    /// (feature, score, drifted).
    pub features: Vec<(String, Option<f64>, bool)>,
}

impl Monitoring {
    /// The counting state of `endpoint` `version`, if it is counted for `features`.
    fn counting<'a>(
        active: &'a HashMap<String, HashMap<String, Arc<Active>>>,
        endpoint: &str,
        version: &ModelVersion,
        features: &FeaturePipeline,
    ) -> Option<&'a Arc<Active>> {
        let a = active.get(endpoint)?.get(&version.version)?;
        std::ptr::eq(Arc::as_ptr(&a.pipeline), features).then_some(a)
    }
}

/// A served value as the window counts it (text is not profiled).
fn observed(value: FeatureValue<'_>) -> Option<Observed<'_>> {
    Some(match value {
        FeatureValue::Number(x) => Observed::Number(x),
        // Integer-coded categories count by their text, as profiles keep them.
        #[allow(clippy::cast_precision_loss)]
        FeatureValue::Integer(i) => Observed::Number(i as f64),
        FeatureValue::Bool(b) => Observed::Category(if b { "true" } else { "false" }),
        FeatureValue::Category(c) => Observed::Category(c),
        FeatureValue::Unknown => Observed::Unseen,
        FeatureValue::Text(_) => return None,
    })
}

impl vigil_runtime::RequestObserver for Monitoring {
    fn inputs(&self, endpoint: &str, version: &ModelVersion, inputs: &[Tensor], features: Option<&FeaturePipeline>) {
        let Some(features) = features else { return };
        let active = self.active.read().unwrap_or_else(|p| p.into_inner());
        let Some(a) = Self::counting(&active, endpoint, version, features) else { return };
        let mut window = a.window.lock().unwrap_or_else(|p| p.into_inner());
        features.visit(inputs, |i, value| {
            if let (Some(Some(p)), Some(value)) = (a.map.get(i), observed(value)) {
                a.counter.observe(&mut window, *p, value);
            }
        });
    }

    fn rejected(&self, endpoint: &str, version: &ModelVersion, problems: &[RecordError]) {
        let active = self.active.read().unwrap_or_else(|p| p.into_inner());
        let Some(a) = active.get(endpoint).and_then(|m| m.get(&version.version)) else { return };
        let mut window = a.window.lock().unwrap_or_else(|p| p.into_inner());
        for p in problems {
            let rule =
                serde_json::to_value(p.rule).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            *window.rejected.entry(rule).or_default() += 1;
        }
    }

    fn outputs(&self, endpoint: &str, version: &ModelVersion, outputs: &[Tensor], features: Option<&FeaturePipeline>) {
        let Some(features) = features else { return };
        let active = self.active.read().unwrap_or_else(|p| p.into_inner());
        let Some(a) = Self::counting(&active, endpoint, version, features) else { return };
        if a.outputs.iter().all(Option::is_none) {
            return;
        }
        let mut window = a.window.lock().unwrap_or_else(|p| p.into_inner());
        features.visit_predictions(outputs, |i, value| {
            if let (Some(Some(p)), Some(value)) = (a.outputs.get(i), observed(value)) {
                a.counter.observe(&mut window, *p, value);
            }
        });
    }
}

fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
