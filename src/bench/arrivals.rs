//! When an open-loop bench sends each request: a renewal process whose gaps are
//! Gamma-distributed with shape `burstiness` and mean `1 / rate`, as vLLM's
//! `benchmark_serving` defines it. Burstiness 1 is a Poisson process; below 1 requests come
//! in clumps, above 1 more evenly (the coefficient of variation of the gaps is
//! `1 / √burstiness`).
//!
//! With a request count, the N arrivals are drawn *conditioned on the N-th falling at
//! `N / rate`*: the gaps are drawn and rescaled to that sum. For Gamma gaps the rescaled vector
//! is exactly the process's conditional law (a Dirichlet), so every arrival pattern keeps its
//! shape while the run offers precisely `rate` over its length — a bench is then comparable
//! run to run, and the offered rate is checkable. Without a count, arrivals run until the
//! duration ends, unconditioned.

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Gamma};

/// An open-loop arrival process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Process {
    /// Mean requests per second.
    pub rate: f64,
    /// Gamma shape of the gaps: 1 is Poisson, lower is burstier.
    pub burstiness: f64,
}

impl Process {
    /// The gap distribution; `None` when rate or burstiness is not a positive number.
    fn gaps(self) -> Option<Gamma<f64>> {
        let valid = |x: f64| x.is_finite() && x > 0.0;
        if !valid(self.rate) || !valid(self.burstiness) {
            return None;
        }
        Gamma::new(self.burstiness, 1.0 / (self.rate * self.burstiness)).ok()
    }

    /// Send offsets from the start of the run, ascending: `requests` of them ending at
    /// `requests / rate`, cut at `duration` when both are given; or, with only `duration`,
    /// as many as the process yields within it. Empty when the process is invalid or
    /// neither bound is given.
    pub fn offsets(
        self,
        requests: Option<u64>,
        duration: Option<Duration>,
        seed: u64,
    ) -> Box<dyn Iterator<Item = Duration> + Send> {
        let Some(gaps) = self.gaps() else {
            return Box::new(std::iter::empty());
        };
        let mut rng = SmallRng::seed_from_u64(seed);
        let within = move |offset: &Duration| duration.is_none_or(|limit| *offset <= limit);
        match (requests, duration) {
            (Some(count), _) => {
                let drawn: Vec<f64> = (0..count).map(|_| gaps.sample(&mut rng)).collect();
                let total: f64 = drawn.iter().sum();
                let scale = if total > 0.0 {
                    count as f64 / self.rate / total
                } else {
                    0.0
                };
                let mut at = 0.0;
                let offsets = drawn.into_iter().map(move |gap| {
                    at += gap;
                    Duration::from_secs_f64(at * scale)
                });
                Box::new(offsets.take_while(within))
            }
            (None, Some(_)) => {
                let mut at = 0.0;
                let offsets = std::iter::repeat_with(move || {
                    at += gaps.sample(&mut rng);
                    Duration::from_secs_f64(at)
                });
                Box::new(offsets.take_while(within))
            }
            (None, None) => Box::new(std::iter::empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(process: Process, count: u64, seed: u64) -> Vec<f64> {
        let offsets: Vec<f64> = process
            .offsets(Some(count), None, seed)
            .map(|d| d.as_secs_f64())
            .collect();
        let mut previous = 0.0;
        offsets
            .into_iter()
            .map(|at| {
                let gap = at - previous;
                previous = at;
                gap
            })
            .collect()
    }

    fn cv(values: &[f64]) -> f64 {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        var.sqrt() / mean
    }

    #[test]
    fn a_counted_run_ends_exactly_at_count_over_rate() {
        let process = Process {
            rate: 250.0,
            burstiness: 1.0,
        };
        let offsets: Vec<Duration> = process.offsets(Some(1000), None, 7).collect();
        assert_eq!(offsets.len(), 1000);
        assert!(offsets.windows(2).all(|pair| pair[0] <= pair[1]));
        let last = offsets.last().unwrap().as_secs_f64();
        assert!((last - 4.0).abs() < 1e-6, "{last}");
    }

    #[test]
    fn burstiness_sets_the_spread_of_the_gaps() {
        for (burstiness, want) in [(1.0, 1.0), (0.25, 2.0), (4.0, 0.5)] {
            let process = Process {
                rate: 100.0,
                burstiness,
            };
            let got = cv(&gaps(process, 20_000, 3));
            assert!(
                (got - want).abs() < want * 0.06,
                "burstiness {burstiness}: cv {got}, want {want}"
            );
        }
    }

    #[test]
    fn a_duration_bounds_the_arrivals() {
        let process = Process {
            rate: 1000.0,
            burstiness: 1.0,
        };
        let offsets: Vec<Duration> = process
            .offsets(None, Some(Duration::from_secs(2)), 11)
            .collect();
        assert!(offsets.iter().all(|d| *d <= Duration::from_secs(2)));
        assert!((1850..=2150).contains(&offsets.len()), "{}", offsets.len());
        let cut: Vec<Duration> = process
            .offsets(Some(5000), Some(Duration::from_secs(1)), 11)
            .collect();
        assert!(cut.len() < 5000 && cut.iter().all(|d| *d <= Duration::from_secs(1)));
    }

    #[test]
    fn invalid_processes_send_nothing() {
        for (rate, burstiness) in [(0.0, 1.0), (10.0, 0.0), (f64::NAN, 1.0)] {
            let process = Process { rate, burstiness };
            assert_eq!(process.offsets(Some(10), None, 1).count(), 0);
        }
    }
}
