//! Cost of counting one served record into a drift window, per feature: what
//! monitoring adds to every request of a version with a reference profile.
//!
//!     cargo bench -p vigil-monitor --bench drift
//!
//! `baseline_sum_30` touches the same 30 values (the least any per-value work
//! costs); `observe_30_numerical` bins them into the window; the categorical
//! line looks 4 categories up. Divide by the features for the cost per value.
//! Memory: a numerical feature's window is its percentile bins (up to 102
//! counts of 8 bytes) plus 48 bytes, under 1 KiB; a categorical one is one
//! count per reference category plus one.

#![allow(clippy::unwrap_used)]

use divan::Bencher;
use vigil_monitor::drift::{Column, Counter, Observed, ReferenceProfile};

fn main() {
    divan::main();
}

fn numerical(features: usize) -> Counter {
    let columns = (0..features)
        .map(|f| {
            let values = (0..2000u32).map(|i| Some(f64::from((i * 37 + f as u32 * 11) % 1000) / 7.0)).collect();
            (format!("f{f}"), Column::Numbers(values))
        })
        .collect();
    Counter::new(ReferenceProfile::build(columns).unwrap())
}

fn record(features: usize) -> Vec<f64> {
    (0..features).map(|f| (f * 13 % 140) as f64 + 0.5).collect()
}

#[divan::bench]
fn baseline_sum_30(bencher: Bencher) {
    let values = record(30);
    bencher.bench(|| divan::black_box(values.iter().sum::<f64>()));
}

#[divan::bench]
fn observe_30_numerical(bencher: Bencher) {
    let counter = numerical(30);
    let mut window = counter.window();
    let values = record(30);
    bencher.bench_local(|| {
        for (i, &x) in values.iter().enumerate() {
            counter.observe(&mut window, i, Observed::Number(x));
        }
    });
}

#[divan::bench]
fn observe_4_categorical(bencher: Bencher) {
    let categories = ["salaried", "self_employed", "unemployed", "retired", "student", "other"];
    let columns = (0..4)
        .map(|f| {
            let values = (0..2000usize).map(|i| Some(categories[(i + f) % categories.len()].to_owned())).collect();
            (format!("c{f}"), Column::Categories(values))
        })
        .collect();
    let counter = Counter::new(ReferenceProfile::build(columns).unwrap());
    let mut window = counter.window();
    bencher.bench_local(|| {
        for i in 0..4 {
            counter.observe(&mut window, i, Observed::Category(categories[i + 1]));
        }
    });
}
