//! Anomaly detectors: fixed-memory summaries of a signal's recent history,
//! fed one sample per evaluation, that say whether a new sample departs from
//! that history by more than a z-score threshold.
//!
//! Two choices shape every detector here:
//!
//! - **Spread floor.** A z-score divides by the spread of the baseline. A
//!   flat baseline (a queue depth that is always 0, a latency that barely
//!   moves) has a spread near zero, and any tiny wobble would score in the
//!   thousands. So the spread used is `max(spread, 1e-9 + 1% of |centre|)`:
//!   on a flat baseline a change must exceed roughly `threshold` percent of
//!   the usual level to count. A baseline that is exactly zero keeps only
//!   the `1e-9` floor, so any non-zero value departs from it; for signals
//!   that sit at zero (error ratio) a threshold rule is the better tool.
//! - **Anomalies stay out of the baseline.** A sample that fires is not
//!   added, so a sustained spike keeps firing instead of quietly becoming the
//!   new normal. The price: a lasting change of level keeps the alert firing
//!   until someone looks, which is what an alert is for; replacing the rule
//!   starts a fresh baseline. Samples that depart in the direction the rule
//!   ignores (a drop for `direction = "up"`) are normal for this rule and are
//!   added, so the baseline follows them.
//!
//! Until `min_samples` samples are in the baseline the detector never fires
//! (and adds every sample): a z-score of a handful of points means nothing.

use std::collections::VecDeque;
use std::time::Duration;

use crate::alerts::rule::{AnomalyCondition, AnomalyMethod, Direction, MAX_BASELINE_SAMPLES};

/// Scales a median absolute deviation to a standard deviation's units for
/// normally distributed data (Iglewicz and Hoaglin's modified z-score).
const MAD_SCALE: f64 = 0.6745;

/// A detector for one alert instance (one rule, one endpoint).
#[derive(Debug, Clone)]
pub struct Detector {
    baseline: Baseline,
    threshold: f64,
    direction: Direction,
    min_samples: usize,
    /// Samples added to the baseline so far (saturating).
    seen: usize,
}

#[derive(Debug, Clone)]
enum Baseline {
    Ewma(Ewma),
    RobustZ(Window),
}

impl Detector {
    /// A detector for `condition`, fed once per `interval` (the engine's
    /// evaluation interval), which turns `baseline_seconds` into a number of
    /// samples.
    pub fn new(condition: &AnomalyCondition, interval: Duration) -> Detector {
        let interval = interval.as_secs_f64().max(1e-3);
        let window = (condition.baseline_seconds as f64 / interval).max(1.0);
        let baseline = match condition.method {
            AnomalyMethod::Ewma => Baseline::Ewma(Ewma::new(2.0 / (window + 1.0))),
            AnomalyMethod::RobustZ => {
                // Never smaller than min_samples, or the detector could never warm up.
                let capacity = (window as usize).max(condition.min_samples).min(MAX_BASELINE_SAMPLES);
                Baseline::RobustZ(Window::new(capacity))
            }
        };
        Detector {
            baseline,
            threshold: condition.threshold,
            direction: condition.direction,
            min_samples: condition.min_samples,
            seen: 0,
        }
    }

    /// Takes one sample; returns whether it is anomalous. Non-finite samples
    /// are ignored (not anomalous, not added).
    pub fn observe(&mut self, x: f64) -> bool {
        if !x.is_finite() {
            return false;
        }
        if self.seen >= self.min_samples {
            let z = self.baseline.z_score(x);
            if self.departs(z) {
                return true;
            }
        }
        self.baseline.add(x);
        self.seen = self.seen.saturating_add(1);
        false
    }

    /// Samples added to the baseline so far.
    pub fn samples(&self) -> usize {
        self.seen
    }

    fn departs(&self, z: f64) -> bool {
        match self.direction {
            Direction::Up => z > self.threshold,
            Direction::Down => z < -self.threshold,
            Direction::Both => z.abs() > self.threshold,
        }
    }
}

impl Baseline {
    fn add(&mut self, x: f64) {
        match self {
            Baseline::Ewma(ewma) => ewma.add(x),
            Baseline::RobustZ(window) => window.add(x),
        }
    }

    fn z_score(&mut self, x: f64) -> f64 {
        match self {
            Baseline::Ewma(ewma) => (x - ewma.mean) / floored(ewma.variance.sqrt(), ewma.mean),
            Baseline::RobustZ(window) => {
                let (median, mad) = window.median_and_mad();
                MAD_SCALE * (x - median) / floored(mad, median)
            }
        }
    }
}

/// The spread floor described in the module documentation.
fn floored(spread: f64, centre: f64) -> f64 {
    spread.max(1e-9 + 0.01 * centre.abs())
}

/// Exponentially weighted mean and variance (Finch, "Incremental calculation
/// of weighted mean and variance", 2009). While fewer than `1/alpha` samples
/// have been seen, the weight is `1/n` instead, which makes the first
/// estimates the plain mean and variance: starting from the first sample with
/// a small alpha would underestimate the variance for hundreds of samples and
/// fire on ordinary noise.
#[derive(Debug, Clone)]
struct Ewma {
    alpha: f64,
    count: u64,
    mean: f64,
    variance: f64,
}

impl Ewma {
    fn new(alpha: f64) -> Ewma {
        Ewma { alpha: alpha.clamp(f64::MIN_POSITIVE, 1.0), count: 0, mean: 0.0, variance: 0.0 }
    }

    fn add(&mut self, x: f64) {
        self.count = self.count.saturating_add(1);
        let weight = self.alpha.max(1.0 / self.count as f64);
        let diff = x - self.mean;
        let increment = weight * diff;
        self.mean += increment;
        self.variance = (1.0 - weight) * (self.variance + diff * increment);
    }
}

/// The last `capacity` samples, for a median and a median absolute deviation.
#[derive(Debug, Clone)]
struct Window {
    samples: VecDeque<f64>,
    capacity: usize,
    /// Reused for the selections, so evaluation does not allocate.
    scratch: Vec<f64>,
}

impl Window {
    fn new(capacity: usize) -> Window {
        let capacity = capacity.max(1);
        Window { samples: VecDeque::with_capacity(capacity), capacity, scratch: Vec::with_capacity(capacity) }
    }

    fn add(&mut self, x: f64) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(x);
    }

    fn median_and_mad(&mut self) -> (f64, f64) {
        self.scratch.clear();
        self.scratch.extend(self.samples.iter().copied());
        let centre = median(&mut self.scratch);
        for value in &mut self.scratch {
            *value = (*value - centre).abs();
        }
        let mad = median(&mut self.scratch);
        (centre, mad)
    }
}

/// The median of `values` (reordered in place); 0 when empty.
fn median(values: &mut [f64]) -> f64 {
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    let (lower, upper_middle, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper_middle = *upper_middle;
    if n % 2 == 1 {
        return upper_middle;
    }
    let lower_middle = lower.iter().copied().max_by(f64::total_cmp).unwrap_or(upper_middle);
    (lower_middle + upper_middle) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(15);

    fn condition(method: AnomalyMethod, direction: Direction) -> AnomalyCondition {
        AnomalyCondition { method, baseline_seconds: 3600, threshold: 4.0, direction, min_samples: 30 }
    }

    fn both_methods(direction: Direction) -> [Detector; 2] {
        [
            Detector::new(&condition(AnomalyMethod::Ewma, direction), INTERVAL),
            Detector::new(&condition(AnomalyMethod::RobustZ, direction), INTERVAL),
        ]
    }

    /// Around 100 with uniform noise of ±10 (sd ≈ 5.8, MAD = 5).
    fn noisy(rng: &mut fastrand::Rng) -> f64 {
        100.0 + (rng.f64() - 0.5) * 20.0
    }

    #[test]
    fn steady_noisy_series_never_fires() {
        for mut detector in both_methods(Direction::Both) {
            let mut rng = fastrand::Rng::with_seed(7);
            for i in 0..10_000 {
                let x = noisy(&mut rng);
                assert!(!detector.observe(x), "{detector:?} fired at sample {i} on {x}");
            }
        }
    }

    #[test]
    fn ten_times_spike_fires_and_keeps_firing() {
        for mut detector in both_methods(Direction::Up) {
            let mut rng = fastrand::Rng::with_seed(11);
            for _ in 0..100 {
                assert!(!detector.observe(noisy(&mut rng)));
            }
            // Spikes are not added to the baseline, so a sustained one keeps firing.
            for _ in 0..50 {
                assert!(detector.observe(1000.0), "{detector:?}");
            }
            assert_eq!(detector.samples(), 100);
            assert!(!detector.observe(noisy(&mut rng)), "back to normal");
        }
    }

    #[test]
    fn level_shift_down_does_not_fire_upwards_but_does_downwards() {
        for mut detector in both_methods(Direction::Up) {
            let mut rng = fastrand::Rng::with_seed(3);
            for _ in 0..100 {
                detector.observe(noisy(&mut rng));
            }
            for _ in 0..500 {
                assert!(!detector.observe(noisy(&mut rng) / 10.0), "{detector:?}");
            }
        }
        for mut detector in both_methods(Direction::Down) {
            let mut rng = fastrand::Rng::with_seed(3);
            for _ in 0..100 {
                detector.observe(noisy(&mut rng));
            }
            assert!(detector.observe(10.0), "{detector:?}");
        }
    }

    #[test]
    fn constant_series_uses_the_one_percent_floor() {
        // EWMA: sd 0 is floored to ~1.0 (1% of 100): 100.5 scores 0.5, 105 scores 5.
        let mut ewma = Detector::new(&condition(AnomalyMethod::Ewma, Direction::Up), INTERVAL);
        // Robust: MAD 0 is floored to ~1.0: 105 scores 3.4, 110 scores 6.7.
        let mut robust = Detector::new(&condition(AnomalyMethod::RobustZ, Direction::Up), INTERVAL);
        for _ in 0..50 {
            assert!(!ewma.observe(100.0));
            assert!(!robust.observe(100.0));
        }
        assert!(!ewma.observe(100.5));
        assert!(ewma.observe(105.0));
        assert!(!robust.observe(105.0));
        assert!(robust.observe(110.0));
    }

    #[test]
    fn zero_baseline_keeps_only_the_tiny_floor() {
        for mut detector in both_methods(Direction::Up) {
            for _ in 0..50 {
                assert!(!detector.observe(0.0));
            }
            assert!(detector.observe(1e-6), "{detector:?}");
        }
    }

    #[test]
    fn never_fires_before_min_samples() {
        for mut detector in both_methods(Direction::Up) {
            for _ in 0..29 {
                assert!(!detector.observe(1.0));
            }
            // The 30th sample is still warm-up: taken into the baseline, not judged.
            assert!(!detector.observe(1000.0));
            assert_eq!(detector.samples(), 30);
            assert!(detector.observe(1e6));
        }
    }

    #[test]
    fn non_finite_samples_are_ignored() {
        for mut detector in both_methods(Direction::Both) {
            for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                assert!(!detector.observe(x));
            }
            assert_eq!(detector.samples(), 0);
        }
    }

    #[test]
    fn ewma_weight_comes_from_the_baseline_window() {
        let detector = Detector::new(&condition(AnomalyMethod::Ewma, Direction::Up), INTERVAL);
        let Baseline::Ewma(ewma) = &detector.baseline else { panic!("not EWMA") };
        assert!((ewma.alpha - 2.0 / 241.0).abs() < 1e-12, "3600 s / 15 s = 240 samples");
    }

    #[test]
    fn ewma_starts_as_plain_mean_and_variance() {
        let mut ewma = Ewma::new(0.01);
        for x in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            ewma.add(x);
        }
        assert!((ewma.mean - 5.0).abs() < 1e-12);
        assert!((ewma.variance - 4.0).abs() < 1e-12);
    }

    #[test]
    fn robust_window_is_capped() {
        // min_samples at the cap: no median is computed while filling (fast in debug builds).
        let long = AnomalyCondition {
            baseline_seconds: 30 * 24 * 3600,
            min_samples: MAX_BASELINE_SAMPLES,
            ..condition(AnomalyMethod::RobustZ, Direction::Up)
        };
        let mut detector = Detector::new(&long, Duration::from_secs(1));
        let Baseline::RobustZ(window) = &detector.baseline else { panic!("not robust") };
        assert_eq!(window.capacity, MAX_BASELINE_SAMPLES);
        for i in 0..MAX_BASELINE_SAMPLES + 100 {
            detector.observe((i % 7) as f64);
        }
        let Baseline::RobustZ(window) = &detector.baseline else { panic!("not robust") };
        assert_eq!(window.samples.len(), MAX_BASELINE_SAMPLES);
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
