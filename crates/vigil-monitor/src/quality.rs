//! Model quality from ground truth: predictions joined with the labels or
//! values that arrived later, scored as scikit-learn scores them.

use serde::Serialize;

/// One classified row: the true label, and the predicted label and
/// probabilities (by the spec's label order).
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    pub truth: usize,
    pub predicted: usize,
    pub probabilities: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationQuality {
    pub count: usize,
    pub accuracy: f64,
    /// Binary: of the second label (the positive class). More labels: the
    /// unweighted mean over labels (scikit-learn's `average="macro"`).
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Binary: of the second label's probability. More labels: one-vs-rest,
    /// macro-averaged. None when only one class is present.
    pub roc_auc: Option<f64>,
    /// Mean negative log of the true label's probability, clipped to
    /// [ε, 1 − ε] (ε = the float64 machine epsilon) and rows normalised, as
    /// scikit-learn computes it.
    pub log_loss: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegressionQuality {
    pub count: usize,
    pub mae: f64,
    pub rmse: f64,
    /// None when the true values are all equal (scikit-learn answers 0 or
    /// NaN there; neither is a score).
    pub r2: Option<f64>,
}

/// Scores `rows` over `classes` labels; `None` without rows.
pub fn classification(rows: &[Classified], classes: usize) -> Option<ClassificationQuality> {
    if rows.is_empty() || classes < 2 {
        return None;
    }
    #[allow(clippy::cast_precision_loss)]
    let n = rows.len() as f64;
    let correct = rows.iter().filter(|r| r.truth == r.predicted).count();
    let per_class = |c: usize| {
        let tp = rows.iter().filter(|r| r.predicted == c && r.truth == c).count() as f64;
        let predicted = rows.iter().filter(|r| r.predicted == c).count() as f64;
        let actual = rows.iter().filter(|r| r.truth == c).count() as f64;
        // scikit-learn's zero_division default: 0 where the denominator is 0.
        let precision = if predicted == 0.0 { 0.0 } else { tp / predicted };
        let recall = if actual == 0.0 { 0.0 } else { tp / actual };
        let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
        (precision, recall, f1)
    };
    let (precision, recall, f1) = if classes == 2 {
        per_class(1)
    } else {
        // Over the labels present in the truth or the predictions, as
        // scikit-learn averages when it is not given the label list.
        let present: Vec<usize> =
            (0..classes).filter(|&c| rows.iter().any(|r| r.truth == c || r.predicted == c)).collect();
        let all: Vec<(f64, f64, f64)> = present.iter().map(|&c| per_class(c)).collect();
        #[allow(clippy::cast_precision_loss)]
        let k = all.len().max(1) as f64;
        (
            all.iter().map(|c| c.0).sum::<f64>() / k,
            all.iter().map(|c| c.1).sum::<f64>() / k,
            all.iter().map(|c| c.2).sum::<f64>() / k,
        )
    };
    let roc_auc = if classes == 2 {
        auc(rows.iter().map(|r| (r.probabilities.get(1).copied().unwrap_or(0.0), r.truth == 1)))
    } else {
        // One-vs-rest over the classes with both sides present in the truth.
        let each: Vec<f64> = (0..classes)
            .filter_map(|c| auc(rows.iter().map(|r| (r.probabilities.get(c).copied().unwrap_or(0.0), r.truth == c))))
            .collect();
        #[allow(clippy::cast_precision_loss)]
        (each.len() >= 2).then(|| each.iter().sum::<f64>() / each.len() as f64)
    };
    let eps = f64::EPSILON;
    let log_loss = rows
        .iter()
        .map(|r| {
            // Rows are normalised first, as scikit-learn does.
            let total: f64 = r.probabilities.iter().map(|p| p.clamp(eps, 1.0 - eps)).sum();
            let p = r.probabilities.get(r.truth).copied().unwrap_or(0.0).clamp(eps, 1.0 - eps) / total;
            -p.ln()
        })
        .sum::<f64>()
        / n;
    #[allow(clippy::cast_precision_loss)]
    Some(ClassificationQuality {
        count: rows.len(),
        accuracy: correct as f64 / n,
        precision,
        recall,
        f1,
        roc_auc,
        log_loss,
    })
}

/// Area under the ROC curve of (score, is positive) pairs: the probability
/// that a positive outscores a negative, ties counting half (the
/// Mann–Whitney statistic, which equals scikit-learn's trapezoidal AUC).
fn auc(pairs: impl Iterator<Item = (f64, bool)>) -> Option<f64> {
    let mut pairs: Vec<(f64, bool)> = pairs.collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = pairs.iter().filter(|p| p.1).count();
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Sum of the positives' ranks, ties given their mean rank.
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < pairs.len() {
        let mut j = i;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            j += 1;
        }
        #[allow(clippy::cast_precision_loss)]
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += mean_rank * pairs[i..j].iter().filter(|p| p.1).count() as f64;
        i = j;
    }
    #[allow(clippy::cast_precision_loss)]
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Scores (truth, predicted) pairs; `None` without pairs.
pub fn regression(pairs: &[(f64, f64)]) -> Option<RegressionQuality> {
    if pairs.is_empty() {
        return None;
    }
    #[allow(clippy::cast_precision_loss)]
    let n = pairs.len() as f64;
    let mae = pairs.iter().map(|(t, p)| (t - p).abs()).sum::<f64>() / n;
    let sse: f64 = pairs.iter().map(|(t, p)| (t - p).powi(2)).sum();
    let mean = pairs.iter().map(|(t, _)| t).sum::<f64>() / n;
    let sst: f64 = pairs.iter().map(|(t, _)| (t - mean).powi(2)).sum();
    let r2 = (sst > 0.0).then(|| 1.0 - sse / sst);
    Some(RegressionQuality { count: pairs.len(), mae, rmse: (sse / n).sqrt(), r2 })
}
