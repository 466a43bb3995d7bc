//! The guard after commit on the device, without I/O: which counts a sliding window covers, and
//! the window's figures as [`edgefleet_protocol::guard::judge`] takes them. The task that reads
//! the live counts and acts on a breach is `agent::guard_watch`.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use edgefleet_protocol::baseline::{mix_psi, psi};
use edgefleet_protocol::guard::GuardWindow;
use edgefleet_protocol::quality::QualityFigures;

use crate::live::Counts;

/// Readings kept per window at most: the window slides in steps of 1/64 of its length.
const STEPS: u64 = 64;

/// Cumulative readings of one slot's counts, thinned so that a month-long window costs the same
/// memory as an hour-long one.
#[derive(Debug)]
pub struct Readings {
    window: u64,
    readings: VecDeque<(u64, Counts)>,
}

impl Readings {
    /// Starts at `start` (Unix seconds) from nothing: the slot's counters began there.
    pub fn new(start: u64, window_seconds: u64) -> Self {
        Self {
            window: window_seconds.max(1),
            readings: VecDeque::from([(start, Counts::default())]),
        }
    }

    /// Takes the reading at `now` and returns what happened over the window that ends now (over
    /// less while the slot is younger than the window), with the seconds it covers.
    pub fn push(&mut self, now: u64, counts: Counts) -> (u64, Counts) {
        let start = now.saturating_sub(self.window);
        while self.readings.len() > 1 && self.readings[1].0 <= start {
            self.readings.pop_front();
        }
        let (base_at, base) = &self.readings[0];
        let covered = (now.saturating_sub(*base_at), counts.since(base));
        let step = (self.window / STEPS).max(1);
        if self
            .readings
            .back()
            .is_none_or(|(at, _)| now.saturating_sub(*at) >= step)
        {
            self.readings.push_back((now, counts));
        }
        covered
    }

    pub fn len(&self) -> usize {
        self.readings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
    }
}

/// One window's counts (and the labels joined in it) as the guard judges them: input drift per
/// feature against `expected` bins, the prediction mix against `expected_mix`, p99 from the
/// latency histogram (never above `max`, the slowest inference seen).
pub fn window(
    counts: &Counts,
    max: Duration,
    expected: &BTreeMap<String, Vec<f64>>,
    expected_mix: &BTreeMap<String, f64>,
    quality: Option<&QualityFigures>,
) -> GuardWindow {
    let histogram = counts.histogram(max);
    let input_psi = counts
        .bins
        .iter()
        .filter_map(|(name, bins)| Some((name.clone(), psi(expected.get(name)?, bins)?)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    GuardWindow {
        requests: counts.requests,
        errors: counts.errors,
        p99_ms: (histogram.count() > 0).then(|| histogram.quantile_ms(0.99)),
        output_psi: mix_psi(expected_mix, &counts.labels),
        input_psi,
        labelled: quality.map_or(0, |q| q.labelled),
        accuracy: quality.and_then(|q| q.accuracy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(n: u64) -> Counts {
        Counts {
            requests: n,
            ..Counts::default()
        }
    }

    #[test]
    fn the_window_slides_over_the_readings() {
        let mut r = Readings::new(1_000, 100);
        // Younger than the window: everything since the start.
        assert_eq!(r.push(1_050, requests(50)), (50, requests(50)));
        assert_eq!(r.push(1_100, requests(80)), (100, requests(80)));
        // Past it: from the newest reading at or before the window's start.
        let (covered, counts) = r.push(1_160, requests(200));
        assert_eq!((covered, counts.requests), (110, 150));
        let (covered, counts) = r.push(1_200, requests(260));
        assert_eq!((covered, counts.requests), (100, 180));
    }

    #[test]
    fn a_long_window_keeps_a_bounded_number_of_readings() {
        let window = 30 * 86_400;
        let mut r = Readings::new(0, window);
        for i in 1..=200_000u64 {
            r.push(i * 30, requests(i));
        }
        assert!(r.len() <= STEPS as usize + 2, "{} readings", r.len());
        let (covered, counts) = r.push(200_001 * 30, requests(200_001));
        assert!(covered >= window && covered <= window + window / STEPS + 30);
        assert!(counts.requests >= window / 30);
    }

    #[test]
    fn the_figures_compare_with_the_signed_baseline() {
        let counts = Counts {
            requests: 100,
            errors: 2,
            latency: {
                let mut l = vec![0; 200];
                l[100] = 98;
                l
            },
            labels: [("churn".to_owned(), 90), ("stay".to_owned(), 10)].into(),
            bins: [("tenure".to_owned(), vec![90, 5, 5])].into(),
            ..Counts::default()
        };
        let expected = [("tenure".to_owned(), vec![0.34, 0.33, 0.33])].into();
        let mix = [("churn".to_owned(), 0.3), ("stay".to_owned(), 0.7)].into();
        let w = window(&counts, Duration::from_secs(1), &expected, &mix, None);
        assert_eq!((w.requests, w.errors, w.labelled), (100, 2, 0));
        assert!(w.p99_ms.is_some());
        assert!(w.output_psi.unwrap() > 0.5);
        let (feature, drift) = w.input_psi.unwrap();
        assert_eq!(feature, "tenure");
        assert!(drift > 0.5);
    }
}
