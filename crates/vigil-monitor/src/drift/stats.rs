//! Drift statistics between a reference and a current distribution, both
//! given as counts on the same bins. Each function documents its exact
//! formula; the tests compare them with numpy and scipy on fixed data.

/// Proportions of each bin; all zeros when there is nothing.
pub fn proportions(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    #[allow(clippy::cast_precision_loss)]
    counts.iter().map(|&c| if total == 0 { 0.0 } else { c as f64 / total as f64 }).collect()
}

/// Population stability index, as Evidently computes it: proportions with
/// empty bins set to 0.0001, then `Σ (ref − cur) · ln(ref / cur)`.
pub fn psi(reference: &[u64], current: &[u64]) -> f64 {
    let floor = |p: f64| if p == 0.0 { 0.0001 } else { p };
    proportions(reference)
        .into_iter()
        .zip(proportions(current))
        .map(|(r, c)| {
            let (r, c) = (floor(r), floor(c));
            (r - c) * (r / c).ln()
        })
        .sum()
}

/// Jensen–Shannon distance (natural log), as `scipy.spatial.distance.jensenshannon`:
/// the square root of the mean of the two Kullback–Leibler divergences from
/// the midpoint distribution.
pub fn jensen_shannon(reference: &[u64], current: &[u64]) -> f64 {
    let (p, q) = (proportions(reference), proportions(current));
    let kl = |a: &[f64], m: &[f64]| -> f64 {
        a.iter().zip(m).filter(|(x, _)| **x > 0.0).map(|(x, m)| x * (x / m).ln()).sum()
    };
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    ((kl(&p, &m) + kl(&q, &m)) / 2.0).max(0.0).sqrt()
}

/// Pearson's chi-square goodness of fit of the current counts to the
/// reference's proportions. Bins the reference never saw are left out (their
/// expected count is 0; they are reported as unseen or out of range instead),
/// and the expected counts are scaled to the current counts in the bins kept.
/// Returns the statistic and its p-value (`k − 1` degrees of freedom), or
/// `None` with fewer than two bins or no current counts to compare.
pub fn chi_square(reference: &[u64], current: &[u64]) -> Option<(f64, f64)> {
    let kept: Vec<(f64, f64)> =
        reference.iter().zip(current).filter(|(r, _)| **r > 0).map(|(&r, &c)| (r as f64, c as f64)).collect();
    let (r_total, c_total) = kept.iter().fold((0.0, 0.0), |(a, b), (r, c)| (a + r, b + c));
    if kept.len() < 2 || c_total == 0.0 {
        return None;
    }
    let statistic: f64 = kept
        .iter()
        .map(|(r, c)| {
            let expected = r / r_total * c_total;
            (c - expected).powi(2) / expected
        })
        .sum();
    #[allow(clippy::cast_precision_loss)]
    let dof = (kept.len() - 1) as f64;
    Some((statistic, chi_square_sf(statistic, dof)))
}

/// The two-sample Kolmogorov–Smirnov statistic on the bins: the largest
/// difference of the two empirical CDFs at the bin edges, with the
/// asymptotic p-value scipy's `ks_2samp(method="asymp")` gives for it
/// (`kstwobign.sf(√(n·m/(n+m)) · D)`). On bins, D is a lower bound of the
/// exact statistic, short of it by at most [`ks_error_bound`].
pub fn kolmogorov_smirnov(reference: &[u64], current: &[u64]) -> Option<(f64, f64)> {
    let (n, m): (u64, u64) = (reference.iter().sum(), current.iter().sum());
    if n == 0 || m == 0 || reference.len() != current.len() {
        return None;
    }
    let (p, q) = (proportions(reference), proportions(current));
    let (mut f, mut g, mut d) = (0.0_f64, 0.0_f64, 0.0_f64);
    for (a, b) in p.iter().zip(&q) {
        f += a;
        g += b;
        d = d.max((f - g).abs());
    }
    #[allow(clippy::cast_precision_loss)]
    let en = (n as f64 * m as f64) / (n as f64 + m as f64);
    Some((d, kolmogorov_sf(en.sqrt() * d)))
}

/// How far the binned KS statistic may fall short of the exact one: the
/// largest mass either distribution has in one bin.
pub fn ks_error_bound(reference: &[u64], current: &[u64]) -> f64 {
    proportions(reference).into_iter().chain(proportions(current)).fold(0.0, f64::max)
}

/// The first Wasserstein distance between the two distributions on the bins
/// (`bounds[i]..bounds[i+1]` is bin `i`; overflow bins are bounded by the
/// smallest and largest value seen), with each bin's mass spread evenly over
/// it. Returns the distance and how far it may be from the exact one:
/// `Σ width · (p + q)` over the bins.
pub fn wasserstein(reference: &[u64], current: &[u64], bounds: &[f64]) -> Option<(f64, f64)> {
    let (p, q) = (proportions(reference), proportions(current));
    if bounds.len() != p.len() + 1 || q.len() != p.len() || p.iter().all(|x| *x == 0.0) || q.iter().all(|x| *x == 0.0) {
        return None;
    }
    // ∫|F − G|: both CDFs are linear inside a bin, so the integral of |F − G|
    // over it is exact for the linear pieces (a crossing splits it in two).
    let (mut f, mut g, mut distance, mut bound) = (0.0_f64, 0.0_f64, 0.0_f64, 0.0_f64);
    for i in 0..p.len() {
        let width = (bounds[i + 1] - bounds[i]).max(0.0);
        let (d0, d1) = (f - g, f + p[i] - g - q[i]);
        distance += if d0 * d1 >= 0.0 {
            width * (d0.abs() + d1.abs()) / 2.0
        } else {
            // Crosses zero at t = d0 / (d0 − d1) of the way.
            width * (d0 * d0 + d1 * d1) / (2.0 * (d0.abs() + d1.abs()))
        };
        bound += width * (p[i] + q[i]);
        f += p[i];
        g += q[i];
    }
    Some((distance, bound))
}

/// `P(K > x)` for the Kolmogorov distribution: `2 Σ (−1)^(k−1) e^(−2k²x²)`.
pub fn kolmogorov_sf(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < 0.3 {
        // The alternating series converges slowly here; the value is 1 to double precision.
        return 1.0;
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = f64::from(k);
        let term = (-2.0 * k * k * x * x).exp();
        sum += if k as u64 % 2 == 1 { term } else { -term };
        if term < 1e-18 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// `P(X > x)` for chi-square with `k` degrees of freedom: the regularised
/// upper incomplete gamma function `Q(k/2, x/2)`.
pub fn chi_square_sf(x: f64, k: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    gamma_q(k / 2.0, x / 2.0)
}

/// Regularised upper incomplete gamma `Q(a, x)`: the series for `x < a + 1`,
/// else the continued fraction (Lentz), as in Numerical Recipes §6.2.
fn gamma_q(a: f64, x: f64) -> f64 {
    let ln_front = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let (mut sum, mut term, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..10_000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        (1.0 - sum * ln_front.exp()).clamp(0.0, 1.0)
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -f64::from(i) * (f64::from(i) - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (ln_front.exp() * h).clamp(0.0, 1.0)
    }
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, n = 9: about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let series = G[1..].iter().enumerate().fold(G[0], |s, (i, g)| s + g / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_distributions_do_not_drift() {
        let c = [10, 20, 30, 40];
        assert!(psi(&c, &c).abs() < 1e-15);
        assert!(jensen_shannon(&c, &c).abs() < 1e-7);
        assert_eq!(kolmogorov_smirnov(&c, &c).unwrap().0, 0.0);
        let (stat, p) = chi_square(&c, &c).unwrap();
        assert!(stat.abs() < 1e-12 && (p - 1.0).abs() < 1e-12);
    }

    #[test]
    fn empty_windows_and_constant_references_are_guarded() {
        assert_eq!(kolmogorov_smirnov(&[1, 2], &[0, 0]), None);
        assert_eq!(chi_square(&[5, 0, 0], &[1, 2, 3]), None, "one reference bin: nothing to test");
        assert_eq!(wasserstein(&[1, 2], &[0, 0], &[0.0, 1.0, 2.0]), None);
        assert!(psi(&[0, 0], &[0, 0]).is_finite());
    }

    #[test]
    fn special_functions_match_known_values() {
        // scipy.stats.chi2.sf(3.84, 1) and kstwobign.sf(1.36).
        assert!((chi_square_sf(3.84, 1.0) - 0.050_043_521_248_705_19).abs() < 1e-12);
        assert!((chi_square_sf(20.0, 10.0) - 0.029_252_688_076_961_124).abs() < 1e-12);
        assert!((kolmogorov_sf(1.36) - 0.049_485_876_755_377_876).abs() < 1e-12);
        assert!((ln_gamma(10.0) - 362_880_f64.ln()).abs() < 1e-12);
    }
}
