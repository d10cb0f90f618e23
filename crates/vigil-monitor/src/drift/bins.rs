//! Bins fixed by the reference, so that the windows of every replica count on
//! the same bins and merge by adding.
//!
//! The rule: the edges are the reference's percentiles 0, 1, …, 100 (numpy's
//! default linear interpolation), with repeats dropped. A value lands in
//! - bin 0 if it is below the reference minimum (overflow below);
//! - bin `i` (1 ≤ i < n) if `edges[i-1] <= x < edges[i]`, the last of these
//!   closed on the right so that the maximum falls inside;
//! - bin `n` if it is above the reference maximum (overflow above),
//!
//! for `n` edges. A constant reference gets a second edge just above its value,
//! so that it still has one bin of its own. The coarse bins that PSI, the
//! Jensen–Shannon distance and chi-square use are the same rule on the deciles
//! (0, 10, …, 100), which are among the percentiles, so each fine bin lies in
//! exactly one coarse bin.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bins {
    pub edges: Vec<f64>,
}

impl Bins {
    /// Edges at `percentiles` (0..=100) of `sorted` (ascending, no NaN, not empty).
    pub fn at_percentiles(sorted: &[f64], percentiles: impl Iterator<Item = f64>) -> Bins {
        let mut edges: Vec<f64> = percentiles.map(|p| quantile(sorted, p / 100.0)).collect();
        edges.dedup();
        if edges.len() == 1 {
            edges.push(edges[0].next_up());
        }
        Bins { edges }
    }

    /// Bins including the two overflow bins.
    pub fn len(&self) -> usize {
        self.edges.len() + 1
    }

    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    /// The bin of `x` (not NaN).
    pub fn index(&self, x: f64) -> usize {
        let n = self.edges.len();
        match (self.edges.first(), self.edges.last()) {
            (Some(&lo), _) if x < lo => 0,
            (_, Some(&hi)) if x > hi => n,
            (_, Some(&hi)) if x == hi => n - 1,
            _ => self.edges.partition_point(|&e| e <= x),
        }
    }

    /// For each bin of `self`, the bin of `coarse` it lies in (`coarse`'s
    /// edges must be among `self`'s).
    pub fn coarsen_map(&self, coarse: &Bins) -> Vec<usize> {
        let n = self.edges.len();
        (0..=n)
            .map(|i| match i {
                0 => 0,
                i if i == n => coarse.edges.len(),
                i => coarse.index(self.edges[i - 1]),
            })
            .collect()
    }
}

/// numpy's default quantile (linear interpolation between closest ranks).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else { return f64::NAN };
    #[allow(clippy::cast_precision_loss)]
    let position = q * last as f64;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let below = (position.floor() as usize).min(last);
    let above = (below + 1).min(last);
    let fraction = position - position.floor();
    sorted[below] + (sorted[above] - sorted[below]) * fraction
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_by_the_documented_rule() {
        let b = Bins { edges: vec![0.0, 1.0, 2.0] };
        let at = |x| b.index(x);
        assert_eq!([at(-0.5), at(0.0), at(0.5), at(1.0), at(1.5), at(2.0), at(2.5)], [0, 1, 1, 2, 2, 2, 3]);
        let constant = Bins::at_percentiles(&[3.0; 5], [0.0, 50.0, 100.0].into_iter());
        assert_eq!(constant.len(), 3);
        assert_eq!([constant.index(2.0), constant.index(3.0), constant.index(4.0)], [0, 1, 2]);
    }

    #[test]
    fn fine_bins_map_into_coarse_ones() {
        let sorted: Vec<f64> = (0..1000).map(f64::from).collect();
        let fine = Bins::at_percentiles(&sorted, (0..=100).map(f64::from));
        let coarse = Bins::at_percentiles(&sorted, (0..=10).map(|d| f64::from(d) * 10.0));
        let map = fine.coarsen_map(&coarse);
        assert_eq!(map.len(), fine.len());
        for x in [-1.0, 0.0, 5.5, 99.9, 100.0, 512.0, 998.9, 999.0, 1e9] {
            assert_eq!(map[fine.index(x)], coarse.index(x), "{x}");
        }
    }
}
