//! Model quality against ground truth. A label arrives late (a customer churns a month after the
//! prediction), is joined to the prediction it belongs to, and becomes one [`Observation`]. What
//! devices send and servers keep are [`QualityCounts`]: the sufficient statistics of many
//! observations, which add up across devices, windows and groups in any order, so a fleet-wide
//! figure equals the figure over all the labelled predictions at once. [`QualityCounts::figures`]
//! turns them into accuracy, per-label precision and recall, ROC AUC and calibration error
//! (classifiers) or MAE and RMSE (regressors).
//!
//! AUC and calibration are computed from the positive label's score in [`SCORE_BINS`] equal bins:
//! two scores in one bin count as a tie, which moves AUC by at most half the share of
//! positive/negative pairs that share a bin (under 0.01 on the project's models). Exact AUC would
//! need every score, which neither a device's message nor a server's memory can hold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bins of the positive label's score over `[0, 1]`.
pub const SCORE_BINS: u16 = 100;
/// Most distinct labels counted per version; a larger set is a lie or a bug.
pub const MAX_LABELS: usize = 64;
/// Longest label counted, in bytes.
pub const MAX_LABEL_BYTES: usize = 128;

/// One labelled prediction.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// A classifier's answer and the true label. `positive_score` is the probability the model
    /// gave its positive label (the second of two), for binary classifiers only.
    Class {
        predicted: String,
        actual: String,
        positive_score: Option<(f64, bool)>,
    },
    /// A regressor's first output and the true value.
    Value { predicted: f64, actual: f64 },
}

/// The labelled predictions in one bin of positive-label scores.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ScoreBin {
    /// Observations whose true label was the positive one.
    pub pos: u64,
    pub neg: u64,
    /// Sum of the scores in the bin, for calibration (mean predicted probability).
    pub sum: f64,
}

/// Sums of a regressor's errors.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ErrorSums {
    pub count: u64,
    pub abs: f64,
    pub squared: f64,
}

/// Labelled predictions of one model version, summed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QualityCounts {
    /// Observations counted.
    pub labelled: u64,
    /// Classifiers: predicted label → true label → count.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub confusion: BTreeMap<String, BTreeMap<String, u64>>,
    /// Binary classifiers: bin of the positive label's score → counts (only bins with any).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scores: BTreeMap<u16, ScoreBin>,
    /// Regressors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<ErrorSums>,
}

/// Precision and recall of one label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct LabelFigures {
    /// Observations whose true label this is.
    pub support: u64,
    /// Of the predictions of this label, the share that were right (none if never predicted).
    pub precision: Option<f64>,
    /// Of the observations with this true label, the share predicted right.
    pub recall: Option<f64>,
}

/// What the counts say about the model.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct QualityFigures {
    pub labelled: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, LabelFigures>,
    /// ROC AUC of the positive label's score (binary classifiers with both labels observed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roc_auc: Option<f64>,
    /// Expected calibration error: the bins' gap between mean score and observed positive rate,
    /// weighted by their share of observations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration_error: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
}

/// Why counts cannot be true.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QualityError {
    #[error("quality counts name {count} labels (at most {MAX_LABELS})")]
    TooManyLabels { count: usize },
    #[error("a label in the quality counts is {len} bytes (at most {MAX_LABEL_BYTES})")]
    LabelTooLong { len: usize },
    #[error("score bin {bin} is outside 0..{SCORE_BINS}")]
    BinOutOfRange { bin: u16 },
    #[error("quality counts add up to {counted} observations but claim {labelled}")]
    Inconsistent { counted: u64, labelled: u64 },
    #[error("quality counts hold a non-finite or negative sum")]
    BadSum,
}

/// The bin a score in `[0, 1]` falls in (a score of exactly 1 goes in the last bin).
pub fn score_bin(score: f64) -> u16 {
    let clamped = if score.is_finite() {
        score.clamp(0.0, 1.0)
    } else {
        0.0
    };
    // Truncation is the point: bin i holds [i/B, (i+1)/B).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bin = (clamped * f64::from(SCORE_BINS)) as u16;
    bin.min(SCORE_BINS - 1)
}

impl QualityCounts {
    pub fn is_empty(&self) -> bool {
        self.labelled == 0
    }

    /// Classifier observations whose predicted label was the true one.
    pub fn correct(&self) -> u64 {
        self.confusion
            .iter()
            .filter_map(|(predicted, row)| row.get(predicted))
            .sum()
    }

    pub fn add(&mut self, observation: &Observation) {
        self.labelled += 1;
        match observation {
            Observation::Class {
                predicted,
                actual,
                positive_score,
            } => {
                *self
                    .confusion
                    .entry(predicted.clone())
                    .or_default()
                    .entry(actual.clone())
                    .or_default() += 1;
                if let Some((score, is_positive)) = positive_score {
                    let bin = self.scores.entry(score_bin(*score)).or_default();
                    if *is_positive {
                        bin.pos += 1;
                    } else {
                        bin.neg += 1;
                    }
                    bin.sum += score.clamp(0.0, 1.0);
                }
            }
            Observation::Value { predicted, actual } => {
                let sums = self.errors.get_or_insert_with(ErrorSums::default);
                let error = predicted - actual;
                sums.count += 1;
                sums.abs += error.abs();
                sums.squared += error * error;
            }
        }
    }

    /// Adds another set of counts (of the same model version) to these.
    pub fn merge(&mut self, other: &QualityCounts) {
        self.labelled = self.labelled.saturating_add(other.labelled);
        for (predicted, row) in &other.confusion {
            let mine = self.confusion.entry(predicted.clone()).or_default();
            for (actual, n) in row {
                let cell = mine.entry(actual.clone()).or_default();
                *cell = cell.saturating_add(*n);
            }
        }
        for (bin, counts) in &other.scores {
            let mine = self.scores.entry(*bin).or_default();
            mine.pos = mine.pos.saturating_add(counts.pos);
            mine.neg = mine.neg.saturating_add(counts.neg);
            mine.sum += counts.sum;
        }
        if let Some(theirs) = &other.errors {
            let mine = self.errors.get_or_insert_with(ErrorSums::default);
            mine.count = mine.count.saturating_add(theirs.count);
            mine.abs += theirs.abs;
            mine.squared += theirs.squared;
        }
    }

    /// Whether counts from a device can be true: bounded label sets, bins in range, finite
    /// sums, and parts that add up to `labelled`. The server counts none of a batch that fails.
    pub fn check(&self) -> Result<(), QualityError> {
        let mut labels = std::collections::BTreeSet::new();
        for (predicted, row) in &self.confusion {
            labels.insert(predicted.as_str());
            labels.extend(row.keys().map(String::as_str));
        }
        if labels.len() > MAX_LABELS {
            return Err(QualityError::TooManyLabels {
                count: labels.len(),
            });
        }
        if let Some(long) = labels.iter().find(|l| l.len() > MAX_LABEL_BYTES) {
            return Err(QualityError::LabelTooLong { len: long.len() });
        }
        if let Some(bin) = self.scores.keys().find(|b| **b >= SCORE_BINS) {
            return Err(QualityError::BinOutOfRange { bin: *bin });
        }
        let finite = |x: f64| x.is_finite() && x >= 0.0;
        let bins_ok = self
            .scores
            .values()
            .all(|b| finite(b.sum) && b.sum <= b.pos.saturating_add(b.neg) as f64 * (1.0 + 1e-9));
        let errors_ok = self
            .errors
            .is_none_or(|e| finite(e.abs) && finite(e.squared));
        if !bins_ok || !errors_ok {
            return Err(QualityError::BadSum);
        }
        let classified = self
            .confusion
            .values()
            .flat_map(|row| row.values())
            .fold(0u64, |a, n| a.saturating_add(*n));
        let regressed = self.errors.map_or(0, |e| e.count);
        let scored = self
            .scores
            .values()
            .fold(0u64, |a, b| a.saturating_add(b.pos).saturating_add(b.neg));
        let counted = classified.saturating_add(regressed);
        if counted != self.labelled || scored > classified {
            return Err(QualityError::Inconsistent {
                counted,
                labelled: self.labelled,
            });
        }
        Ok(())
    }

    pub fn figures(&self) -> QualityFigures {
        let mut figures = QualityFigures {
            labelled: self.labelled,
            ..QualityFigures::default()
        };
        let classified: u64 = self.confusion.values().flat_map(|r| r.values()).sum();
        if classified > 0 {
            figures.accuracy = Some(ratio(self.correct(), classified));
            let mut labels: std::collections::BTreeSet<&String> = self.confusion.keys().collect();
            labels.extend(self.confusion.values().flat_map(|r| r.keys()));
            for label in labels {
                let predicted_as: u64 = self.confusion.get(label).map_or(0, |r| r.values().sum());
                let support: u64 = self.confusion.values().filter_map(|r| r.get(label)).sum();
                let hits = self
                    .confusion
                    .get(label)
                    .and_then(|r| r.get(label))
                    .copied()
                    .unwrap_or(0);
                figures.labels.insert(
                    label.clone(),
                    LabelFigures {
                        support,
                        precision: (predicted_as > 0).then(|| ratio(hits, predicted_as)),
                        recall: (support > 0).then(|| ratio(hits, support)),
                    },
                );
            }
        }
        figures.roc_auc = self.roc_auc();
        figures.calibration_error = self.calibration_error();
        if let Some(e) = self.errors.filter(|e| e.count > 0) {
            let n = e.count as f64;
            figures.mae = Some(e.abs / n);
            figures.rmse = Some((e.squared / n).sqrt());
        }
        figures
    }

    /// Probability that a random positive scores above a random negative, ties (same bin) half.
    fn roc_auc(&self) -> Option<f64> {
        let positives: u64 = self.scores.values().map(|b| b.pos).sum();
        let negatives: u64 = self.scores.values().map(|b| b.neg).sum();
        if positives == 0 || negatives == 0 {
            return None;
        }
        let mut below = 0.0;
        let mut wins = 0.0;
        for bin in self.scores.values() {
            wins += bin.pos as f64 * (below + 0.5 * bin.neg as f64);
            below += bin.neg as f64;
        }
        Some(wins / (positives as f64 * negatives as f64))
    }

    fn calibration_error(&self) -> Option<f64> {
        let total: u64 = self.scores.values().map(|b| b.pos + b.neg).sum();
        if total == 0 {
            return None;
        }
        let gap: f64 = self
            .scores
            .values()
            .filter(|b| b.pos + b.neg > 0)
            .map(|b| {
                let n = (b.pos + b.neg) as f64;
                (b.sum / n - b.pos as f64 / n).abs() * n
            })
            .sum();
        Some(gap / total as f64)
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    part as f64 / whole as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn class(predicted: &str, actual: &str, score: f64) -> Observation {
        Observation::Class {
            predicted: predicted.into(),
            actual: actual.into(),
            positive_score: Some((score, actual == "churn")),
        }
    }

    #[test]
    fn figures_of_a_small_binary_set_match_a_hand_count() {
        let mut counts = QualityCounts::default();
        for o in [
            class("churn", "churn", 0.9),
            class("churn", "stay", 0.7),
            class("stay", "churn", 0.4),
            class("stay", "stay", 0.1),
            class("stay", "stay", 0.2),
        ] {
            counts.add(&o);
        }
        counts.check().unwrap();
        let f = counts.figures();
        assert_eq!(f.labelled, 5);
        assert_eq!(f.accuracy, Some(0.6));
        assert_eq!(f.labels["churn"].precision, Some(0.5));
        assert_eq!(f.labels["churn"].recall, Some(0.5));
        assert_eq!(f.labels["stay"].support, 3);
        // Positives 0.9, 0.4 against negatives 0.7, 0.1, 0.2: 5 of 6 pairs ordered right.
        assert!((f.roc_auc.unwrap() - 5.0 / 6.0).abs() < 1e-12);
        assert!(f.calibration_error.unwrap() > 0.0);
        assert_eq!(f.mae, None);
    }

    #[test]
    fn regression_errors() {
        let mut counts = QualityCounts::default();
        counts.add(&Observation::Value {
            predicted: 3.0,
            actual: 1.0,
        });
        counts.add(&Observation::Value {
            predicted: 1.0,
            actual: 1.0,
        });
        counts.check().unwrap();
        let f = counts.figures();
        assert_eq!(f.mae, Some(1.0));
        assert!((f.rmse.unwrap() - 2.0_f64.sqrt()).abs() < 1e-12);
        assert_eq!(f.accuracy, None);
    }

    #[test]
    fn impossible_counts_are_named() {
        let mut counts = QualityCounts::default();
        counts.add(&class("churn", "churn", 0.9));
        counts.labelled = 2;
        assert!(matches!(
            counts.check(),
            Err(QualityError::Inconsistent { .. })
        ));
        let mut counts = QualityCounts::default();
        counts.add(&class("churn", "churn", 0.9));
        counts.scores.insert(SCORE_BINS, ScoreBin::default());
        assert!(matches!(
            counts.check(),
            Err(QualityError::BinOutOfRange { .. })
        ));
        let mut counts = QualityCounts::default();
        for i in 0..=MAX_LABELS {
            counts.add(&Observation::Class {
                predicted: format!("l{i}"),
                actual: "x".into(),
                positive_score: None,
            });
        }
        assert!(matches!(
            counts.check(),
            Err(QualityError::TooManyLabels { .. })
        ));
        let mut counts = QualityCounts::default();
        counts.add(&class("churn", "churn", 0.9));
        counts.scores.values_mut().for_each(|b| b.sum = f64::NAN);
        assert_eq!(counts.check(), Err(QualityError::BadSum));
    }

    #[test]
    fn edge_scores_fall_in_the_end_bins() {
        assert_eq!(score_bin(0.0), 0);
        assert_eq!(score_bin(1.0), SCORE_BINS - 1);
        assert_eq!(score_bin(f64::NAN), 0);
        assert_eq!(score_bin(0.505), 50);
    }

    fn observation() -> impl Strategy<Value = Observation> {
        prop_oneof![
            (0usize..3, 0usize..3, 0.0f64..=1.0).prop_map(|(p, a, s)| {
                let names = ["stay", "churn", "maybe"];
                Observation::Class {
                    predicted: names[p].into(),
                    actual: names[a].into(),
                    positive_score: Some((s, a == 1)),
                }
            }),
            (-1e3f64..1e3, -1e3f64..1e3)
                .prop_map(|(predicted, actual)| Observation::Value { predicted, actual }),
        ]
    }

    proptest! {
        /// Counts summed in any split and order give the figures of counting everything at once
        /// (what lets the server add devices, windows and groups).
        #[test]
        fn any_split_merges_to_the_whole(
            observations in proptest::collection::vec(observation(), 0..200),
            cut in 0usize..200,
        ) {
            let cut = cut.min(observations.len());
            let mut whole = QualityCounts::default();
            observations.iter().for_each(|o| whole.add(o));
            let (mut left, mut right) = (QualityCounts::default(), QualityCounts::default());
            observations[..cut].iter().rev().for_each(|o| left.add(o));
            observations[cut..].iter().for_each(|o| right.add(o));
            right.merge(&left);
            prop_assert!(whole.check().is_ok());
            prop_assert!(right.check().is_ok());
            let (a, b) = (whole.figures(), right.figures());
            prop_assert_eq!(a.labelled, b.labelled);
            prop_assert_eq!(a.accuracy, b.accuracy);
            prop_assert_eq!(a.labels, b.labels);
            prop_assert_eq!(a.roc_auc.map(|x| (x * 1e9).round()), b.roc_auc.map(|x| (x * 1e9).round()));
            let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-6 * (1.0 + x.abs()),
                (x, y) => x == y,
            };
            prop_assert!(close(a.mae, b.mae) && close(a.rmse, b.rmse));
            prop_assert!(close(a.calibration_error, b.calibration_error));
        }

        /// With every score in its own bin, the binned AUC is the exact pairwise one.
        #[test]
        fn auc_is_exact_without_ties(
            labels in proptest::collection::vec(any::<bool>(), 2..(SCORE_BINS as usize)),
        ) {
            let scores: Vec<f64> = (0..labels.len())
                .map(|i| (i as f64 + 0.5) / f64::from(SCORE_BINS))
                .collect();
            let mut counts = QualityCounts::default();
            for (s, positive) in scores.iter().zip(&labels) {
                counts.add(&Observation::Class {
                    predicted: "x".into(),
                    actual: if *positive { "churn" } else { "stay" }.into(),
                    positive_score: Some((*s, *positive)),
                });
            }
            let (mut wins, mut pairs) = (0u64, 0u64);
            for (i, pi) in labels.iter().enumerate() {
                for (j, pj) in labels.iter().enumerate() {
                    if *pi && !*pj {
                        pairs += 1;
                        wins += u64::from(scores[i] > scores[j]);
                    }
                }
            }
            let auc = counts.figures().roc_auc;
            if pairs == 0 {
                prop_assert_eq!(auc, None);
            } else {
                prop_assert!((auc.unwrap() - wins as f64 / pairs as f64).abs() < 1e-12);
            }
        }
    }
}
