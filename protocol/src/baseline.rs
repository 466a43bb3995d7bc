//! Reference statistics a model ships with, to measure input drift on the device.
//!
//! Each feature has a histogram of its training distribution (numeric: bins between cut points;
//! categorical: one share per category). The device counts live values into the same bins and
//! computes the population stability index (PSI) per feature; PSI above about 0.2 is the usual
//! sign of a material shift.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Smallest share a bin is given when computing PSI, so an empty bin yields a large but finite
/// figure instead of infinity.
pub const PSI_EPSILON: f64 = 1e-4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Rows the statistics were computed from.
    pub rows: u64,
    pub features: BTreeMap<String, FeatureBaseline>,
    /// Share of each predicted label on the reference data, for output-distribution shift.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub predictions: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FeatureBaseline {
    /// `edges` are increasing interior cut points; bin `i` holds `edges[i-1] < x <= edges[i]`,
    /// with open-ended first and last bins, so `shares.len() == edges.len() + 1`.
    Numeric { edges: Vec<f64>, shares: Vec<f64> },
    /// Share per category; values outside it count as the `other` share.
    Categorical {
        shares: BTreeMap<String, f64>,
        #[serde(default)]
        other: f64,
    },
}

impl FeatureBaseline {
    pub fn validate(&self, feature: &str) -> Result<(), Error> {
        let bad =
            |detail: &str| Error::invalid("baseline", format!("feature {feature:?}: {detail}"));
        let shares: Vec<f64> = match self {
            FeatureBaseline::Numeric { edges, shares } => {
                if edges.is_empty() || shares.len() != edges.len() + 1 || edges.len() > 1000 {
                    return Err(bad("needs 1..=1000 edges and one more share than edges"));
                }
                if edges.iter().any(|e| !e.is_finite()) || edges.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(bad("edges must be finite and strictly increasing"));
                }
                shares.clone()
            }
            FeatureBaseline::Categorical { shares, other } => {
                if shares.is_empty() || shares.len() > 4096 {
                    return Err(bad("needs 1..=4096 category shares"));
                }
                shares.values().copied().chain([*other]).collect()
            }
        };
        if shares.iter().any(|s| !s.is_finite() || *s < 0.0) {
            return Err(bad("shares must be finite and >= 0"));
        }
        let sum: f64 = shares.iter().sum();
        if (sum - 1.0).abs() > 1e-3 {
            return Err(bad("shares must sum to 1"));
        }
        Ok(())
    }

    /// Number of bins live counts are kept in.
    pub fn bins(&self) -> usize {
        match self {
            FeatureBaseline::Numeric { shares, .. } => shares.len(),
            FeatureBaseline::Categorical { shares, .. } => shares.len() + 1,
        }
    }

    /// Bin of a numeric value (NaN goes to the last bin).
    pub fn numeric_bin(edges: &[f64], x: f64) -> usize {
        edges.partition_point(|&e| e < x)
    }

    /// Reference shares in bin order (categorical: sorted category names, then `other`).
    pub fn expected_shares(&self) -> Vec<f64> {
        match self {
            FeatureBaseline::Numeric { shares, .. } => shares.clone(),
            FeatureBaseline::Categorical { shares, other } => {
                shares.values().copied().chain([*other]).collect()
            }
        }
    }
}

impl Baseline {
    pub fn validate(&self) -> Result<(), Error> {
        for (name, feature) in &self.features {
            feature.validate(name)?;
        }
        Ok(())
    }

    /// Feature → reference shares in bin order, what live counts are judged against.
    pub fn expected_shares(&self) -> BTreeMap<String, Vec<f64>> {
        self.features
            .iter()
            .map(|(name, f)| (name.clone(), f.expected_shares()))
            .collect()
    }
}

/// Population stability index between reference shares and live counts:
/// `sum((a - e) * ln(a / e))` over bins, each share floored at [`PSI_EPSILON`]. `None` when the
/// bin counts differ or nothing was counted.
pub fn psi(expected: &[f64], actual_counts: &[u64]) -> Option<f64> {
    if expected.len() != actual_counts.len() {
        return None;
    }
    // Counts come from devices: a lie must not overflow the sum.
    let total = actual_counts.iter().fold(0u64, |a, n| a.saturating_add(*n));
    if total == 0 {
        return None;
    }
    Some(
        expected
            .iter()
            .zip(actual_counts)
            .map(|(&e, &count)| {
                let e = e.max(PSI_EPSILON);
                let a = (count as f64 / total as f64).max(PSI_EPSILON);
                (a - e) * (a / e).ln()
            })
            .sum(),
    )
}

/// Live counts of one feature per baseline bin, sparse (bins with no count left out), so that
/// windows and devices add up exactly and the fleet's PSI is computed on the pooled histogram:
/// PSI of small windows averaged is biased upwards by about `(bins - 1) / samples` each (0.15
/// for ten bins at 60 requests) and called healthy quiet fleets drifting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BinCounts(BTreeMap<u32, u64>);

/// Samples per bin a pooled histogram needs before its PSI is shown or judged: the PSI of a
/// sample from the baseline itself is then about `1 / 50`, far below any sensible gate.
pub const DRIFT_MIN_SAMPLES_PER_BIN: u64 = 50;

/// Fewest samples a drift figure is ever judged on, however few bins the feature has.
pub const DRIFT_MIN_SAMPLES: u64 = 500;

impl BinCounts {
    /// From dense per-bin counts (the device's live counters).
    pub fn from_dense(counts: &[u64]) -> Self {
        Self(
            counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(bin, n)| (bin as u32, *n))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds another window's or device's counts (saturating: counts come from devices).
    pub fn add(&mut self, other: &BinCounts) {
        for (bin, n) in &other.0 {
            let mine = self.0.entry(*bin).or_default();
            *mine = mine.saturating_add(*n);
        }
    }

    pub fn samples(&self) -> u64 {
        self.0.values().fold(0u64, |a, n| a.saturating_add(*n))
    }

    /// Dense counts over `bins` bins. A count naming a bin past them (counted against another
    /// baseline, or a lie) is left out: one device's must not void the whole fleet's figure.
    pub fn to_dense(&self, bins: usize) -> Vec<u64> {
        let mut dense = vec![0; bins];
        for (bin, n) in &self.0 {
            if let Some(slot) = dense.get_mut(*bin as usize) {
                *slot = *n;
            }
        }
        dense
    }

    /// Samples within the first `bins` bins (those a baseline of that many bins judges).
    pub fn samples_within(&self, bins: usize) -> u64 {
        self.0
            .range(..u32::try_from(bins).unwrap_or(u32::MAX))
            .fold(0u64, |a, (_, n)| a.saturating_add(*n))
    }
}

/// Samples a pooled histogram over `bins` bins needs before its PSI means anything.
pub fn drift_min_samples(bins: usize) -> u64 {
    (bins as u64)
        .saturating_mul(DRIFT_MIN_SAMPLES_PER_BIN)
        .max(DRIFT_MIN_SAMPLES)
}

/// PSI of pooled counts against the expected shares, or `None` while they hold fewer samples than
/// [`drift_min_samples`] in the baseline's bins.
pub fn pooled_psi(expected: &[f64], counts: &BinCounts) -> Option<f64> {
    if counts.samples_within(expected.len()) < drift_min_samples(expected.len()) {
        return None;
    }
    psi(expected, &counts.to_dense(expected.len()))
}

/// PSI of an observed predicted-label mix (counts) against expected shares, over the labels
/// either names (a label the baseline never saw expects nothing). `None` with no observations or
/// no expectation.
pub fn mix_psi(expected: &BTreeMap<String, f64>, observed: &BTreeMap<String, u64>) -> Option<f64> {
    if expected.is_empty() {
        return None;
    }
    let labels: std::collections::BTreeSet<&String> =
        expected.keys().chain(observed.keys()).collect();
    let shares: Vec<f64> = labels
        .iter()
        .map(|l| expected.get(*l).copied().unwrap_or(0.0))
        .collect();
    let counts: Vec<u64> = labels
        .iter()
        .map(|l| observed.get(*l).copied().unwrap_or(0))
        .collect();
    psi(&shares, &counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prediction_mix_is_judged_over_every_label_either_side_names() {
        let expected: BTreeMap<String, f64> =
            [("stay".to_owned(), 0.7), ("churn".to_owned(), 0.3)].into();
        let same: BTreeMap<String, u64> =
            [("stay".to_owned(), 70), ("churn".to_owned(), 30)].into();
        assert!(mix_psi(&expected, &same).unwrap() < 1e-9);
        let flipped: BTreeMap<String, u64> =
            [("stay".to_owned(), 20), ("churn".to_owned(), 80)].into();
        assert!(mix_psi(&expected, &flipped).unwrap() > 0.5);
        let unknown: BTreeMap<String, u64> = [("maybe".to_owned(), 10)].into();
        assert!(mix_psi(&expected, &unknown).unwrap() > 1.0);
        assert_eq!(mix_psi(&expected, &BTreeMap::new()), None);
        assert_eq!(mix_psi(&BTreeMap::new(), &same), None);
    }

    #[test]
    fn pooled_counts_add_exactly_and_are_judged_only_past_the_minimum() {
        let e = [0.25, 0.25, 0.25, 0.25];
        let mut pooled = BinCounts::default();
        for _ in 0..8 {
            pooled.add(&BinCounts::from_dense(&[15, 15, 15, 15]));
        }
        assert_eq!(pooled.samples(), 480);
        assert_eq!(pooled_psi(&e, &pooled), None, "480 < the 500 floor");
        pooled.add(&BinCounts::from_dense(&[5, 5, 5, 5]));
        assert!(pooled_psi(&e, &pooled).unwrap().abs() < 1e-12);
        assert_eq!(pooled.to_dense(4), vec![125, 125, 125, 125]);
        // A count past the baseline's bins (a lie, or another baseline's) is left out: it
        // neither voids the figure nor moves it.
        pooled.add(&BinCounts::from_dense(&[0, 0, 0, 0, 1_000_000]));
        assert_eq!(pooled.samples_within(4), 500);
        assert!(pooled_psi(&e, &pooled).unwrap().abs() < 1e-12);
        assert_eq!(drift_min_samples(20), 1000);
        let json = serde_json::to_string(&BinCounts::from_dense(&[0, 3, 0, 7])).unwrap();
        assert_eq!(json, r#"{"1":3,"3":7}"#);
    }

    #[test]
    fn psi_is_zero_for_the_same_distribution_and_grows_with_shift() {
        let e = [0.25, 0.25, 0.25, 0.25];
        assert!(psi(&e, &[100, 100, 100, 100]).unwrap().abs() < 1e-12);
        let small = psi(&e, &[110, 100, 95, 95]).unwrap();
        let large = psi(&e, &[10, 40, 150, 200]).unwrap();
        assert!(small < 0.02 && large > 0.2, "{small} {large}");
        assert_eq!(psi(&e, &[0, 0, 0, 0]), None);
        assert_eq!(psi(&e, &[1, 2]), None);
    }

    #[test]
    fn numeric_bins_are_right_closed_with_open_ends() {
        let edges = [0.0, 10.0];
        assert_eq!(FeatureBaseline::numeric_bin(&edges, -5.0), 0);
        assert_eq!(FeatureBaseline::numeric_bin(&edges, 0.0), 0);
        assert_eq!(FeatureBaseline::numeric_bin(&edges, 0.1), 1);
        assert_eq!(FeatureBaseline::numeric_bin(&edges, 10.0), 1);
        assert_eq!(FeatureBaseline::numeric_bin(&edges, 11.0), 2);
    }

    #[test]
    fn baselines_are_validated() {
        let ok = FeatureBaseline::Numeric {
            edges: vec![1.0, 2.0],
            shares: vec![0.2, 0.3, 0.5],
        };
        ok.validate("a").unwrap();
        let bad_sum = FeatureBaseline::Numeric {
            edges: vec![1.0],
            shares: vec![0.2, 0.3],
        };
        assert!(bad_sum.validate("a").is_err());
        let unsorted = FeatureBaseline::Numeric {
            edges: vec![2.0, 1.0],
            shares: vec![0.2, 0.3, 0.5],
        };
        assert!(unsorted.validate("a").is_err());
    }
}
