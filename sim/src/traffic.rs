//! One window of a simulated device's predictions, summarised the way the agent summarises its
//! own: requests, errors, a latency histogram, predicted labels and the inputs' counts per
//! baseline bin. Counts are drawn (binomial, then multinomial over bins), so a quiet device's
//! window is as noisy as a real one's — which is what the server's pooling has to cope with.

use std::collections::BTreeMap;
use std::time::Duration;

use edgefleet_protocol::ModelName;
use edgefleet_protocol::baseline::{self, Baseline, BinCounts};
use edgefleet_protocol::latency::LatencyHistogram;
use edgefleet_protocol::message::ModelMetrics;

use crate::config::{DriftConfig, TelemetryConfig};

/// Above this many trials a count is drawn from the normal approximation: exact draws would cost
/// one random number per prediction at 100,000 devices.
const EXACT_TRIALS: u64 = 1_000;
/// Latencies drawn per window; each stands for an equal share of the window's requests.
const LATENCY_DRAWS: u64 = 1_000;

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u = 1.0 - rng.f64(); // (0, 1]: ln(0) never happens
    let v = rng.f64();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Successes in `n` trials of probability `p`.
pub fn binomial(rng: &mut fastrand::Rng, n: u64, p: f64) -> u64 {
    let p = p.clamp(0.0, 1.0);
    if n <= EXACT_TRIALS {
        return (0..n).filter(|_| rng.f64() < p).count() as u64;
    }
    let mean = n as f64 * p;
    let sd = (mean * (1.0 - p)).sqrt();
    (mean + sd * normal(rng)).round().clamp(0.0, n as f64) as u64
}

/// `n` draws spread over categories of the given shares (which need not sum to exactly 1).
pub fn multinomial(rng: &mut fastrand::Rng, n: u64, shares: &[f64]) -> Vec<u64> {
    let mut left = n;
    let mut mass: f64 = shares.iter().map(|s| s.max(0.0)).sum();
    let mut out = Vec::with_capacity(shares.len());
    for (i, share) in shares.iter().enumerate() {
        let share = share.max(0.0);
        let count = if i + 1 == shares.len() {
            left
        } else if mass <= 0.0 {
            0
        } else {
            binomial(rng, left, share / mass)
        };
        out.push(count);
        left -= count;
        mass -= share;
    }
    out
}

/// Requests in a window: Poisson-like around the configured rate.
pub fn requests_in(rng: &mut fastrand::Rng, t: &TelemetryConfig) -> u64 {
    let mean = t.requests_per_second * t.window_seconds as f64;
    if mean < 30.0 {
        // Poisson by counting exponential arrivals: exact where the approximation is poor.
        let mut count = 0;
        let mut elapsed = -(1.0 - rng.f64()).ln();
        while elapsed < mean {
            count += 1;
            elapsed += -(1.0 - rng.f64()).ln();
        }
        count
    } else {
        (mean + mean.sqrt() * normal(rng)).round().max(0.0) as u64
    }
}

/// The shares a drifting device's values follow: `strength` of each shifted feature's mass moved
/// into its top bin.
pub fn drifted(feature: &str, shares: &[f64], drift: Option<&DriftConfig>) -> Vec<f64> {
    let Some(d) = drift else {
        return shares.to_vec();
    };
    if !(d.features.is_empty() || d.features.iter().any(|f| f == feature)) {
        return shares.to_vec();
    }
    let mut out: Vec<f64> = shares.iter().map(|s| s * (1.0 - d.strength)).collect();
    if let Some(top) = out.last_mut() {
        *top += d.strength;
    }
    out
}

/// One model version's figures for one window of `requests` predictions.
pub fn window_metrics(
    rng: &mut fastrand::Rng,
    t: &TelemetryConfig,
    model: &ModelName,
    version: &semver::Version,
    baseline: Option<&Baseline>,
    drift: Option<&DriftConfig>,
    requests: u64,
) -> ModelMetrics {
    let mut m = ModelMetrics::empty(model.clone(), version.clone());
    m.requests = requests;
    m.errors = binomial(rng, requests, t.error_ratio);
    m.latency_histogram = latencies(rng, t.latency_ms, requests);
    m.latency = m.latency_histogram.summary();
    let Some(baseline) = baseline else {
        return m;
    };
    let served = requests - m.errors;
    if !baseline.predictions.is_empty() {
        let shares: Vec<f64> = baseline.predictions.values().copied().collect();
        m.predictions = baseline
            .predictions
            .keys()
            .cloned()
            .zip(multinomial(rng, served, &shares))
            .filter(|(_, n)| *n > 0)
            .collect();
    }
    for (feature, expected) in baseline.expected_shares() {
        let counts = multinomial(rng, served, &drifted(&feature, &expected, drift));
        if let Some(psi) = baseline::psi(&expected, &counts) {
            m.drift_psi.insert(feature.clone(), psi);
        }
        let counts = BinCounts::from_dense(&counts);
        if !counts.is_empty() {
            m.drift_counts.insert(feature, counts);
        }
    }
    m
}

/// A latency histogram of `requests` answers around `typical_ms` (log-normal, σ = 0.25).
fn latencies(rng: &mut fastrand::Rng, typical_ms: f64, requests: u64) -> LatencyHistogram {
    let mut h = LatencyHistogram::default();
    let draws = requests.min(LATENCY_DRAWS);
    let mut buckets: BTreeMap<u16, u64> = BTreeMap::new();
    for i in 0..draws {
        let ms = typical_ms * (0.25 * normal(rng)).exp();
        let weight = requests / draws + u64::from(i < requests % draws);
        *buckets
            .entry(LatencyHistogram::bucket_of(Duration::from_secs_f64(
                ms / 1e3,
            )))
            .or_default() += weight;
        h.max_ms = h.max_ms.max(ms);
    }
    h.buckets = buckets;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry(rate: f64, window: u64) -> TelemetryConfig {
        TelemetryConfig {
            window_seconds: window,
            requests_per_second: rate,
            error_ratio: 0.01,
            latency_ms: 5.0,
        }
    }

    fn churn_baseline() -> Baseline {
        let text = include_str!("../../models/churn/2.0.0/baseline.json");
        serde_json::from_str(text).unwrap_or_else(|e| panic!("churn baseline: {e}"))
    }

    #[test]
    fn multinomial_keeps_every_draw_and_follows_the_shares() {
        let mut rng = fastrand::Rng::with_seed(7);
        for n in [0, 1, 17, 999, 1_000, 50_000] {
            let counts = multinomial(&mut rng, n, &[0.5, 0.3, 0.2]);
            assert_eq!(counts.iter().sum::<u64>(), n);
        }
        let counts = multinomial(&mut rng, 100_000, &[0.5, 0.3, 0.2]);
        for (got, share) in counts.iter().zip([0.5, 0.3, 0.2]) {
            assert!((*got as f64 / 1e5 - share).abs() < 0.01, "{counts:?}");
        }
    }

    #[test]
    fn requests_average_the_rate_over_the_window() {
        let mut rng = fastrand::Rng::with_seed(3);
        for (rate, window) in [(1.0, 60), (0.1, 60), (50.0, 60)] {
            let t = telemetry(rate, window);
            let total: u64 = (0..2_000).map(|_| requests_in(&mut rng, &t)).sum();
            let mean = total as f64 / 2_000.0;
            let want = rate * window as f64;
            assert!(
                (mean - want).abs() < want * 0.05 + 0.1,
                "{rate}/s: {mean} vs {want}"
            );
        }
    }

    #[test]
    fn a_clean_window_pools_to_no_drift_and_a_drifting_one_breaches() {
        let baseline = churn_baseline();
        let t = telemetry(1.0, 60);
        let model = ModelName::new("churn").unwrap_or_else(|e| panic!("{e}"));
        let version = semver::Version::new(2, 0, 0);
        let drift = DriftConfig {
            features: vec!["monthly_charges".into()],
            strength: 0.3,
        };
        let mut rng = fastrand::Rng::with_seed(11);
        let mut pooled: BTreeMap<String, BinCounts> = BTreeMap::new();
        let mut pooled_drifting: BTreeMap<String, BinCounts> = BTreeMap::new();
        for _ in 0..200 {
            let clean = window_metrics(&mut rng, &t, &model, &version, Some(&baseline), None, 60);
            assert_eq!(clean.requests, 60);
            assert_eq!(clean.latency_histogram.count(), 60);
            assert_eq!(
                clean.predictions.values().sum::<u64>(),
                clean.requests - clean.errors
            );
            for (f, c) in clean.drift_counts {
                pooled.entry(f).or_default().add(&c);
            }
            let drifting = window_metrics(
                &mut rng,
                &t,
                &model,
                &version,
                Some(&baseline),
                Some(&drift),
                60,
            );
            for (f, c) in drifting.drift_counts {
                pooled_drifting.entry(f).or_default().add(&c);
            }
        }
        let expected = baseline.expected_shares();
        for (feature, shares) in &expected {
            let clean = baseline::pooled_psi(shares, &pooled[feature]).unwrap_or(f64::NAN);
            assert!(
                clean < 0.05,
                "{feature}: pooled PSI {clean} on clean traffic"
            );
            let shifted = baseline::pooled_psi(shares, &pooled_drifting[feature]).unwrap_or(0.0);
            if feature == "monthly_charges" {
                assert!(shifted > 0.3, "shifted {feature}: PSI {shifted}");
            } else {
                assert!(shifted < 0.05, "{feature} was not shifted: PSI {shifted}");
            }
        }
    }

    #[test]
    fn no_baseline_means_no_input_figures() {
        let mut rng = fastrand::Rng::with_seed(1);
        let model = ModelName::new("churn").unwrap_or_else(|e| panic!("{e}"));
        let m = window_metrics(
            &mut rng,
            &telemetry(1.0, 60),
            &model,
            &semver::Version::new(1, 0, 0),
            None,
            None,
            5_000,
        );
        assert_eq!(m.latency_histogram.count(), 5_000);
        assert!(m.drift_counts.is_empty() && m.predictions.is_empty());
    }
}
