//! Drift statistics against numpy and scipy on fixed data sets
//! (`drift/make_expected.py` wrote `drift/expected.json`): equal to 1e-9
//! relative where the computation is exact on the same bins (PSI,
//! Jensen–Shannon, chi-square, the KS p-value of a statistic); within the
//! stated bound where bins approximate (the KS statistic, Wasserstein).

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use vigil_monitor::drift::{
    Column, Counter, DriftSettings, Method, Observed, ProfileKind, ReferenceProfile, compare, stats,
};

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/drift/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1e-300) || (got - want).abs() < 1e-15,
        "{what}: {got} vs {want}"
    );
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect()
}

#[test]
fn statistics_match_numpy_and_scipy() {
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let numerical = case["type"] == "numerical";
        let column = if numerical {
            Column::Numbers(numbers(&case["reference"]).into_iter().map(Some).collect())
        } else {
            Column::Categories(strings(&case["reference"]).into_iter().map(Some).collect())
        };
        let profile = ReferenceProfile::build(vec![(name.to_owned(), column)]).unwrap();
        let counter = Counter::new(profile.clone());
        let mut window = counter.window();
        let current_numbers;
        if numerical {
            current_numbers = numbers(&case["current"]);
            for &x in &current_numbers {
                counter.observe(&mut window, 0, Observed::Number(x));
            }
        } else {
            current_numbers = Vec::new();
            for c in strings(&case["current"]) {
                counter.observe(&mut window, 0, Observed::Category(&c));
            }
        }
        let report = compare(&profile, &window);
        let d = &report.features[0];
        close(d.psi.unwrap(), case["psi"].as_f64().unwrap(), &format!("{name} psi"));
        close(d.jensen_shannon.unwrap(), case["jensen_shannon"].as_f64().unwrap(), &format!("{name} js"));
        match case["chi_square_p"].as_f64() {
            Some(p) => close(d.chi_square_p.unwrap(), p, &format!("{name} chi-square p")),
            None => assert_eq!(d.chi_square_p, None, "{name}: one reference bin, no chi-square"),
        }
        if !numerical {
            assert_eq!(
                match &profile.features[0].kind {
                    ProfileKind::Categorical { categories, .. } => categories.clone(),
                    ProfileKind::Numerical { .. } => panic!(),
                },
                strings(&case["categories"])
            );
            close(d.unseen_share, case["unseen_share"].as_f64().unwrap(), &format!("{name} unseen"));
            continue;
        }
        let ProfileKind::Numerical { bins, deciles, histogram, std, min, max, .. } = &profile.features[0].kind else {
            panic!()
        };
        for (g, w) in deciles.edges.iter().zip(numbers(&case["deciles"])) {
            close(*g, w, &format!("{name} decile edge"));
        }
        assert_eq!(deciles.edges.len(), case["deciles"].as_array().unwrap().len(), "{name}");
        close(*std, case["std"].as_f64().unwrap(), &format!("{name} std"));
        // KS: the binned statistic is scipy's binned one exactly, its p-value
        // scipy's for it, and it falls short of the exact statistic by no
        // more than the bound.
        let counts = &window.features[0].counts;
        let (ks, p) = stats::kolmogorov_smirnov(histogram, counts).unwrap();
        close(ks, case["ks_binned"].as_f64().unwrap(), &format!("{name} binned KS"));
        close(p, case["ks_binned_p"].as_f64().unwrap(), &format!("{name} KS p"));
        let exact = case["ks_exact"].as_f64().unwrap();
        let bound = stats::ks_error_bound(histogram, counts);
        assert!(ks <= exact + 1e-12 && exact - ks <= bound, "{name}: KS {ks} vs exact {exact}, bound {bound}");
        // Wasserstein within its bound.
        let s = &window.features[0];
        let mut edges = vec![s.min.unwrap().min(*min)];
        edges.extend_from_slice(&bins.edges);
        edges.push(s.max.unwrap().max(*max));
        let (w, bound) = stats::wasserstein(histogram, counts, &edges).unwrap();
        let exact = case["wasserstein_exact"].as_f64().unwrap();
        assert!((w - exact).abs() <= bound + 1e-12, "{name}: Wasserstein {w} vs exact {exact}, bound {bound}");
        close(d.wasserstein_normed.unwrap(), w / std.max(0.001), &format!("{name} normed"));
        let _ = current_numbers;
    }
}

#[test]
fn the_default_test_follows_evidently_and_drift_is_called() {
    let by_name: Vec<Value> = cases();
    let report_of = |name: &str| {
        let case = by_name.iter().find(|c| c["name"] == name).unwrap();
        let column = Column::Numbers(numbers(&case["reference"]).into_iter().map(Some).collect());
        let profile = ReferenceProfile::build(vec![(name.to_owned(), column)]).unwrap();
        let counter = Counter::new(profile.clone());
        let mut window = counter.window();
        for x in numbers(&case["current"]) {
            counter.observe(&mut window, 0, Observed::Number(x));
        }
        compare(&profile, &window).features.remove(0)
    };
    // More than 1000 reference rows: normed Wasserstein, threshold 0.1.
    let shift = report_of("shift");
    assert_eq!((shift.method, shift.threshold, shift.drifted), (Method::WassersteinNormed, 0.1, true));
    let same = report_of("same");
    assert_eq!((same.method, same.drifted), (Method::WassersteinNormed, false), "{same:?}");
    // A small reference: KS with p < 0.05; few distinct values: chi-square.
    let small = report_of("small_reference");
    assert_eq!((small.method, small.threshold, small.drifted), (Method::KolmogorovSmirnov, 0.05, true));
    assert!(small.out_of_range_share > 0.0);
    assert_eq!(report_of("few_values").method, Method::ChiSquare);
    // A constant reference still gets a verdict (no division by zero).
    let constant = report_of("constant");
    assert!(constant.drifted && constant.out_of_range_share > 0.39, "{constant:?}");
}

#[test]
fn empty_and_all_missing_windows_give_no_verdict_and_windows_merge_exactly() {
    let profile = ReferenceProfile::build(vec![
        ("x".into(), Column::Numbers((0..2000).map(|i| Some(f64::from(i))).collect())),
        ("c".into(), Column::Categories((0..2000).map(|i| Some(["a", "b"][i % 2].to_owned())).collect())),
    ])
    .unwrap();
    let counter = Counter::new(profile.clone());
    let empty = compare(&profile, &counter.window());
    assert!(empty.features.iter().all(|f| f.score.is_none() && !f.drifted));
    assert!(!empty.dataset_drift);
    let mut missing = counter.window();
    for _ in 0..10 {
        counter.observe(&mut missing, 0, Observed::Missing);
        counter.observe(&mut missing, 0, Observed::Number(f64::NAN));
    }
    let r = compare(&profile, &missing);
    assert_eq!((r.features[0].score, r.features[0].missing_share), (None, 1.0));

    // Two halves merged are the whole, bin for bin.
    let (mut a, mut b, mut whole) = (counter.window(), counter.window(), counter.window());
    for i in 0..500u32 {
        let x = f64::from(i * 7 % 2500);
        let c = ["a", "b", "z"][i as usize % 3];
        let half = if i % 2 == 0 { &mut a } else { &mut b };
        counter.observe(half, 0, Observed::Number(x));
        counter.observe(half, 1, Observed::Category(c));
        counter.observe(&mut whole, 0, Observed::Number(x));
        counter.observe(&mut whole, 1, Observed::Category(c));
    }
    a.merge(&b);
    assert_eq!(a, whole);
    // Windows travel between replicas as JSON: nothing is lost on the way.
    let text = serde_json::to_string(&a).unwrap();
    assert_eq!(serde_json::from_str::<vigil_monitor::drift::WindowSketch>(&text).unwrap(), a);
    let r = compare(&profile, &a);
    assert!(r.features[1].unseen_share > 0.3, "'z' is unseen: {:?}", r.features[1]);
    // A setting overrides the test.
    let mut tuned = profile.clone();
    tuned.settings.insert("x".into(), DriftSettings { method: Some(Method::Psi), threshold: Some(0.2) });
    tuned.validate().unwrap();
    // The dataset's threshold: at 1.0 every input feature must drift.
    let mut strict = profile.clone();
    strict.dataset_drift_share = Some(1.0);
    let share = compare(&profile, &a).drift_share;
    assert_eq!(compare(&strict, &a).dataset_drift, share >= 1.0, "share {share}");
    strict.dataset_drift_share = Some(1.5);
    assert!(strict.validate().unwrap_err().contains("dataset_drift_share"));
    let mut wrong = tuned.clone();
    wrong.settings.insert("nope".into(), DriftSettings::default());
    assert!(wrong.validate().unwrap_err().contains("settings.nope"));
    let psi = compare(&tuned, &a);
    assert_eq!((psi.features[0].method, psi.features[0].threshold), (Method::Psi, 0.2));
}
