//! The statistics sonde's verdicts rest on, in one place: Wilson intervals for rates, the
//! two-proportion tests (pooled z, Fisher's exact), Holm's step-down correction and the
//! sample size a two-proportion comparison needs.

use statrs::distribution::{ContinuousCDF, DiscreteCDF, Hypergeometric, Normal};

/// The standard normal distribution.
fn standard() -> Normal {
    Normal::standard()
}

/// z such that P(Z > z) = `tail`.
pub fn z_upper(tail: f64) -> f64 {
    standard().inverse_cdf(1.0 - tail.clamp(1e-12, 0.5))
}

/// The Wilson score interval of `hits` in `total` at two-sided confidence `1 − alpha`:
/// honest near 0 and 1 and with few samples, where the normal interval is not. `None`
/// without samples.
pub fn wilson(hits: u64, total: u64, alpha: f64) -> Option<(f64, f64)> {
    if total == 0 {
        return None;
    }
    let n = total as f64;
    let p = hits as f64 / n;
    let z = z_upper(alpha / 2.0);
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// The pooled two-proportion z statistic of rate 2 (`x2` in `n2`) over rate 1: positive
/// when rate 2 is higher; 0 when the pooled rate leaves no variance.
pub fn two_proportion_z(x1: u64, n1: u64, x2: u64, n2: u64) -> f64 {
    let (f1, f2) = (n1.max(1) as f64, n2.max(1) as f64);
    let (p1, p2) = (x1 as f64 / f1, x2 as f64 / f2);
    let pooled = (x1 + x2) as f64 / (f1 + f2);
    let se = (pooled * (1.0 - pooled) * (1.0 / f1 + 1.0 / f2)).sqrt();
    if se > 0.0 { (p2 - p1) / se } else { 0.0 }
}

/// Fisher's exact one-sided p-value that rate 2 (`x2` in `n2`) is below rate 1 (`x1` in
/// `n1`): the chance, with the margins fixed, of rate 2 having `x2` hits or fewer. Exact at
/// any sample size, so a flag at level α is wrong at most α of the time.
pub fn fisher_less(x1: u64, n1: u64, x2: u64, n2: u64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    match Hypergeometric::new(n1 + n2, x1 + x2, n2) {
        Ok(null) => null.cdf(x2).clamp(0.0, 1.0),
        Err(_) => 1.0,
    }
}

/// Holm's step-down correction: which of `p_values` are rejected with the family-wise error
/// rate held at `alpha`. The smallest is compared with α/m, the next with α/(m−1), …, and
/// the first that fails stops the rest.
pub fn holm(p_values: &[f64], alpha: f64) -> Vec<bool> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut rejected = vec![false; m];
    for (rank, &index) in order.iter().enumerate() {
        if p_values[index] > alpha / (m - rank) as f64 {
            break;
        }
        rejected[index] = true;
    }
    rejected
}

/// Runs per arm a one-sided two-proportion test at level `alpha` needs to see rate `p2`
/// below `p1` with probability `power` (Fleiss's normal approximation, no continuity
/// correction); `None` when `p2` is not below `p1`.
pub fn runs_to_detect(p1: f64, p2: f64, alpha: f64, power: f64) -> Option<u64> {
    let delta = p1 - p2;
    if delta <= 0.0 {
        return None;
    }
    let mean = (p1 + p2) / 2.0;
    let a = z_upper(alpha) * (2.0 * mean * (1.0 - mean)).sqrt();
    let b = z_upper(1.0 - power) * (p1 * (1.0 - p1) + p2 * (1.0 - p2)).sqrt();
    Some(((a + b).powi(2) / (delta * delta)).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_published_values() {
        // Newcombe (1998), table I: 81 of 263 → 0.2553–0.3662 at 95 %.
        let (low, high) = wilson(81, 263, 0.05).unwrap();
        assert!((low - 0.2553).abs() < 5e-4 && (high - 0.3662).abs() < 5e-4);
        // 0 of 10 still has an upper bound.
        let (low, high) = wilson(0, 10, 0.05).unwrap();
        assert!(low.abs() < 1e-12, "{low}");
        assert!((high - 0.2775).abs() < 5e-4, "{high}");
        assert_eq!(wilson(0, 0, 0.05), None);
    }

    #[test]
    fn fisher_matches_the_tea_tasting_lady() {
        // Fisher's tea: 3 of 4 right in each arm of 8 cups; one-sided p = 0.2429.
        assert!((fisher_less(3, 4, 1, 4) - 0.2429).abs() < 1e-4);
        assert_eq!(fisher_less(5, 5, 5, 5), 1.0);
        assert!(fisher_less(100, 100, 80, 100) < 1e-5);
    }

    #[test]
    fn holm_steps_down_and_stops() {
        assert_eq!(holm(&[0.01, 0.04, 0.03], 0.05), [true, false, false]);
        assert_eq!(holm(&[0.01, 0.02, 0.04], 0.05), [true, true, true]);
        assert_eq!(holm(&[], 0.05), Vec::<bool>::new());
    }

    #[test]
    fn sample_sizes_match_the_textbook() {
        // p1 = 0.6 vs p2 = 0.4, one-sided α = 0.025, power 0.8: 97 per arm (Fleiss).
        assert_eq!(runs_to_detect(0.6, 0.4, 0.025, 0.8), Some(97));
        assert_eq!(runs_to_detect(0.4, 0.6, 0.025, 0.8), None);
        assert!((z_upper(0.025) - 1.959_96).abs() < 1e-4);
    }
}
