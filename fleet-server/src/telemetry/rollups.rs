//! Telemetry rollups: per group, model version and minute, the figures of every batch, kept
//! incrementally so the fleet's figures and charts never read raw batches of the whole fleet.
//!
//! A pass folds the batches stored since the last one into minute rows, in the transaction that
//! marks them folded (exactly once, whichever server gets there). Minute rows of one bucket
//! written by several passes are merged once the minute has settled, and minutes older than
//! `telemetry.minute_rollups_hours` become hour rows. Everything adds up, so any window's figures
//! are the sum of its rows (the property tests check them against the raw batches); only the
//! device count is a peak (the most devices reporting in one bucket), since distinct devices do
//! not add up across buckets.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use edgefleet_protocol::baseline::BinCounts;
use edgefleet_protocol::latency::LatencyHistogram;
use edgefleet_protocol::message::{MetricsBatch, ModelMetrics};
use edgefleet_protocol::quality::QualityCounts;

use super::pending::PendingBatches;
use super::{SeriesPoint, VersionFigures, points};
use crate::baselines::Baselines;
use crate::store::StoreError;
use crate::store::rollups::{
    HOUR, MINUTE, NewRollup, Rollup, RollupFigures, RollupStore, UnrolledBatch,
};

/// Batches one pass folds per transaction.
pub const FOLD_LIMIT: usize = 5_000;
/// A minute's rows are merged once this long has passed since it ended (later batches make new
/// rows, which a read adds up all the same).
const SETTLE_SECONDS: i64 = 180;

/// Where a batch's figures fall in time: its window's end, but never later than it arrived (a
/// device clock running ahead cannot put rows in the future, out of pruning's reach).
pub fn batch_time(batch: &MetricsBatch, received_us: i64) -> i64 {
    let end = i64::try_from(batch.window_end_unix).unwrap_or(i64::MAX);
    end.min(received_us.div_euclid(1_000_000))
}

/// The figures that add up, borrowed from wherever they are kept: a batch's model metrics, a
/// rollup row, a version's figures.
pub(crate) struct Sums<'a> {
    pub requests: u64,
    pub errors: u64,
    pub latency: &'a LatencyHistogram,
    pub predictions: &'a BTreeMap<String, u64>,
    pub drift_counts: &'a BTreeMap<String, BinCounts>,
    pub quality: &'a QualityCounts,
}

/// Where [`Sums`] are added to.
pub(crate) struct SumsInto<'a> {
    pub requests: &'a mut u64,
    pub errors: &'a mut u64,
    pub latency: &'a mut LatencyHistogram,
    pub predictions: &'a mut BTreeMap<String, u64>,
    pub drift_counts: &'a mut BTreeMap<String, BinCounts>,
    pub quality: &'a mut QualityCounts,
}

/// The one place figures are added: counts saturate, histograms and bin counts merge.
pub(crate) fn add_sums(into: SumsInto<'_>, from: Sums<'_>) {
    *into.requests = into.requests.saturating_add(from.requests);
    *into.errors = into.errors.saturating_add(from.errors);
    into.latency.merge(from.latency);
    for (label, n) in from.predictions {
        let mine = into.predictions.entry(label.clone()).or_default();
        *mine = mine.saturating_add(*n);
    }
    for (feature, counts) in from.drift_counts {
        into.drift_counts
            .entry(feature.clone())
            .or_default()
            .add(counts);
    }
    into.quality.merge(from.quality);
}

impl<'a> From<&'a ModelMetrics> for Sums<'a> {
    fn from(m: &'a ModelMetrics) -> Self {
        Self {
            requests: m.requests,
            errors: m.errors,
            latency: &m.latency_histogram,
            predictions: &m.predictions,
            drift_counts: &m.drift_counts,
            quality: &m.quality,
        }
    }
}

impl<'a> From<&'a RollupFigures> for Sums<'a> {
    fn from(f: &'a RollupFigures) -> Self {
        Self {
            requests: f.requests,
            errors: f.errors,
            latency: &f.latency,
            predictions: &f.predictions,
            drift_counts: &f.drift_counts,
            quality: &f.quality,
        }
    }
}

fn sums_into(f: &mut RollupFigures) -> SumsInto<'_> {
    SumsInto {
        requests: &mut f.requests,
        errors: &mut f.errors,
        latency: &mut f.latency,
        predictions: &mut f.predictions,
        drift_counts: &mut f.drift_counts,
        quality: &mut f.quality,
    }
}

/// Adds `other` into `f`; `devices` adds up (rows of one bucket) or takes the larger (rows of
/// different buckets).
fn merge(f: &mut RollupFigures, other: &RollupFigures, same_bucket: bool) {
    f.batches = f.batches.saturating_add(other.batches);
    f.dropped_batches = f.dropped_batches.saturating_add(other.dropped_batches);
    f.devices = if same_bucket {
        f.devices.saturating_add(other.devices)
    } else {
        f.devices.max(other.devices)
    };
    add_sums(sums_into(f), other.into());
}

type RowKey = (String, String, String, i64);

/// The minute rows of `batches`: one per (group, model, version, minute), and per (group,
/// minute) one with an empty model for the batches themselves. Unreadable batches add nothing.
pub fn fold<B: Borrow<UnrolledBatch>>(batches: &[B]) -> Vec<NewRollup> {
    let mut rows: BTreeMap<RowKey, (RollupFigures, BTreeSet<&str>)> = BTreeMap::new();
    for unrolled in batches {
        let unrolled = unrolled.borrow();
        let Some(batch) = &unrolled.batch else {
            continue;
        };
        let bucket = batch_time(batch, unrolled.received_us).div_euclid(MINUTE) * MINUTE;
        let group = &unrolled.group;
        let whole = rows
            .entry((group.clone(), String::new(), String::new(), bucket))
            .or_default();
        whole.0.batches += 1;
        whole.0.dropped_batches = whole
            .0
            .dropped_batches
            .saturating_add(batch.dropped_batches);
        whole.1.insert(&unrolled.device);
        for m in &batch.models {
            let key = (
                group.clone(),
                m.model.to_string(),
                m.version.to_string(),
                bucket,
            );
            let (figures, devices) = rows.entry(key).or_default();
            figures.batches += 1;
            add_sums(sums_into(figures), m.into());
            devices.insert(&unrolled.device);
        }
    }
    rows.into_iter()
        .map(
            |((group, model, version, bucket), (mut figures, devices))| {
                figures.devices = devices.len() as u64;
                NewRollup {
                    group,
                    model,
                    version,
                    span: MINUTE,
                    bucket,
                    figures,
                }
            },
        )
        .collect()
}

/// `rows` merged into one per (group, model, version, bucket of `span`); rows already of that
/// bucket add up, the buckets within one larger bucket take the peak device count.
pub fn merge_rows(rows: &[NewRollup], span: i64) -> Vec<NewRollup> {
    // First per original bucket (partial rows add up), then into the target bucket.
    let mut per_bucket: BTreeMap<(RowKey, i64), RollupFigures> = BTreeMap::new();
    for row in rows {
        let key = (
            row.group.clone(),
            row.model.clone(),
            row.version.clone(),
            row.bucket.div_euclid(span) * span,
        );
        merge(
            per_bucket.entry((key, row.bucket)).or_default(),
            &row.figures,
            true,
        );
    }
    let mut merged: BTreeMap<RowKey, RollupFigures> = BTreeMap::new();
    for ((key, _), figures) in per_bucket {
        merge(merged.entry(key).or_default(), &figures, false);
    }
    merged
        .into_iter()
        .map(|((group, model, version, bucket), figures)| NewRollup {
            group,
            model,
            version,
            span,
            bucket,
            figures,
        })
        .collect()
}

/// A window's figures read from rollups: per version, the chart, and the batch counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowFigures {
    pub versions: BTreeMap<(String, String), VersionFigures>,
    pub series: Vec<SeriesPoint>,
    pub batches: u64,
    pub dropped_batches: u64,
}

/// The figures of `rows` (any spans; those of groups `include` refuses left out), with the chart
/// of `model` in steps of `step` seconds.
pub fn window_figures(
    rows: &[NewRollup],
    baselines: &Baselines,
    include: impl Fn(&str) -> bool,
    model: Option<&str>,
    step: i64,
) -> WindowFigures {
    let step = step.max(1);
    // Per (model, version, bucket start, span) first: rows of one bucket add up.
    let mut buckets: BTreeMap<(String, String, i64, i64), RollupFigures> = BTreeMap::new();
    for row in rows.iter().filter(|r| include(&r.group)) {
        let key = (row.model.clone(), row.version.clone(), row.bucket, row.span);
        merge(buckets.entry(key).or_default(), &row.figures, true);
    }
    let mut out = WindowFigures::default();
    let mut steps: BTreeMap<(i64, String), VersionFigures> = BTreeMap::new();
    for ((row_model, version, bucket, _), figures) in &buckets {
        if row_model.is_empty() {
            out.batches += figures.batches;
            out.dropped_batches += figures.dropped_batches;
            continue;
        }
        out.versions
            .entry((row_model.clone(), version.clone()))
            .or_insert_with(|| {
                VersionFigures::default().with_baseline(baselines.get(row_model, version))
            })
            .absorb_rollup(figures);
        if model == Some(row_model.as_str()) {
            steps
                .entry((bucket.div_euclid(step) * step, version.clone()))
                .or_insert_with(|| {
                    VersionFigures::default().with_baseline(baselines.get(row_model, version))
                })
                .absorb_rollup(figures);
        }
    }
    out.series = points(steps);
    out
}

/// The rows of the window starting at `from` (Unix seconds): hour rows, minute rows, and the
/// batches stored but not folded yet (folded here as a pass would, each read from the store
/// once across reads through `pending`), so figures are current.
pub async fn window_rows(
    store: &(impl RollupStore + ?Sized),
    pending: &PendingBatches,
    from: i64,
    now: i64,
) -> Result<Vec<NewRollup>, StoreError> {
    let until = now + MINUTE;
    let mut rows: Vec<NewRollup> = store
        .rollups(HOUR, from.div_euclid(HOUR) * HOUR, until)
        .await?
        .into_iter()
        .chain(
            store
                .rollups(MINUTE, from.div_euclid(MINUTE) * MINUTE, until)
                .await?,
        )
        .map(|r| r.row)
        .filter(|r| r.bucket + r.span > from)
        .collect();
    let pending = pending.read(store, FOLD_LIMIT * 4).await?;
    rows.extend(
        fold(&pending)
            .into_iter()
            .filter(|r| r.bucket + r.span > from),
    );
    Ok(rows)
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    pub folded: usize,
    pub merged: usize,
    pub compacted: usize,
}

/// The state a roll-up loop keeps between passes: minute buckets before `settled_until` hold one
/// row each (apart from late arrivals).
#[derive(Debug, Default)]
pub struct RollupCursor {
    settled_until: Option<i64>,
}

/// Folds what arrived, merges settled minutes and turns minutes older than `minute_hours` into
/// hour rows, at `now`.
pub async fn pass(
    store: &(impl RollupStore + ?Sized),
    cursor: &mut RollupCursor,
    minute_hours: i64,
    now: i64,
) -> Result<PassReport, StoreError> {
    let mut report = PassReport::default();
    loop {
        let batches = store.unrolled_metrics(FOLD_LIMIT).await?;
        if batches.is_empty() {
            break;
        }
        let keys: Vec<(String, u64)> = batches.iter().map(|b| (b.device.clone(), b.seq)).collect();
        if !store.add_rollups(&keys, &fold(&batches)).await? {
            break; // another server is folding the same batches; the next pass goes on
        }
        report.folded += batches.len();
        if batches.len() < FOLD_LIMIT {
            break;
        }
    }
    let hours_from = (now - minute_hours * HOUR).div_euclid(HOUR) * HOUR;
    let settled = (now - SETTLE_SECONDS).div_euclid(MINUTE) * MINUTE;
    let from = cursor.settled_until.unwrap_or(hours_from).min(settled);
    report.merged = replace(store, MINUTE, from, settled, MINUTE).await?;
    cursor.settled_until = Some(settled);
    report.compacted = replace(store, MINUTE, i64::MIN, hours_from, HOUR).await?;
    Ok(report)
}

/// Replaces the `span` rows in `[from, until)` by their merge into buckets of `into`, where that
/// makes fewer rows. Returns how many rows went.
async fn replace(
    store: &(impl RollupStore + ?Sized),
    span: i64,
    from: i64,
    until: i64,
    into: i64,
) -> Result<usize, StoreError> {
    if from >= until {
        return Ok(0);
    }
    let rows: Vec<Rollup> = store.rollups(span, from, until).await?;
    if rows.is_empty() {
        return Ok(0); // the usual case for compaction: nothing to write
    }
    let plain: Vec<NewRollup> = rows.iter().map(|r| r.row.clone()).collect();
    let merged = merge_rows(&plain, into);
    if merged.len() == rows.len() && into == span {
        return Ok(0);
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    Ok(if store.replace_rollups(&ids, &merged).await? {
        ids.len()
    } else {
        0 // another server merged them first
    })
}

#[cfg(test)]
mod tests;
