//! Model-quality scores against scikit-learn's metrics on fixed data
//! (`quality/make_expected.py` wrote `quality/expected.json`): equal to 1e-9
//! relative, every score being exact.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use vigil_monitor::quality::{Classified, classification, regression};

fn cases() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/quality/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn close(got: f64, want: &Value, what: &str) {
    let want = want.as_f64().unwrap();
    assert!((got - want).abs() <= 1e-9 * want.abs().max(1e-12), "{what}: {got} vs scikit-learn's {want}");
}

fn list(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn classification_scores_match_scikit_learn() {
    for case in cases()["classification"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let rows: Vec<Classified> = (0..case["truth"].as_array().unwrap().len())
            .map(|i| Classified {
                truth: case["truth"][i].as_u64().unwrap() as usize,
                predicted: case["predicted"][i].as_u64().unwrap() as usize,
                probabilities: list(&case["probabilities"][i]),
            })
            .collect();
        let q = classification(&rows, case["classes"].as_u64().unwrap() as usize).unwrap();
        for (got, key) in [
            (q.accuracy, "accuracy"),
            (q.precision, "precision"),
            (q.recall, "recall"),
            (q.f1, "f1"),
            (q.log_loss, "log_loss"),
        ] {
            close(got, &case[key], &format!("{name} {key}"));
        }
        close(q.roc_auc.unwrap(), &case["roc_auc"], &format!("{name} roc_auc"));
    }
}

#[test]
fn regression_scores_match_scikit_learn() {
    for case in cases()["regression"].as_array().unwrap() {
        let pairs: Vec<(f64, f64)> = list(&case["truth"]).into_iter().zip(list(&case["predicted"])).collect();
        let q = regression(&pairs).unwrap();
        close(q.mae, &case["mae"], "mae");
        close(q.rmse, &case["rmse"], "rmse");
        close(q.r2.unwrap(), &case["r2"], "r2");
    }
}

#[test]
fn macro_averages_cover_the_labels_present_as_scikit_learn_does() {
    // Three labels, only 0 and 1 seen: averaged over two (sklearn without labels=).
    let rows = [
        Classified { truth: 0, predicted: 0, probabilities: vec![0.7, 0.2, 0.1] },
        Classified { truth: 1, predicted: 0, probabilities: vec![0.5, 0.4, 0.1] },
        Classified { truth: 1, predicted: 1, probabilities: vec![0.2, 0.7, 0.1] },
    ];
    let q = classification(&rows, 3).unwrap();
    // Class 0: precision 1/2, recall 1; class 1: precision 1, recall 1/2.
    assert!((q.precision - 0.75).abs() < 1e-12 && (q.recall - 0.75).abs() < 1e-12, "{q:?}");
}

#[test]
fn degenerate_inputs_give_no_score_rather_than_a_wrong_one() {
    assert_eq!(classification(&[], 2), None);
    let one_class = [Classified { truth: 1, predicted: 1, probabilities: vec![0.2, 0.8] }];
    assert_eq!(classification(&one_class, 2).unwrap().roc_auc, None, "AUC needs both classes");
    assert_eq!(regression(&[]), None);
    assert_eq!(regression(&[(3.0, 2.0), (3.0, 4.0)]).unwrap().r2, None, "constant truth: no R²");
}
