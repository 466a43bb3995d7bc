//! The wall clock, passed in rather than read: code that needs "now" takes a [`Clock`], so a
//! test can run hours of rollout, token expiry or retention in milliseconds.
//!
//! [`SystemClock`] is the real one. [`TokioClock`] derives wall time from tokio's clock, so
//! `tokio::time::pause()` and `advance()` move it together with every timer and interval: a test
//! with paused time sees a consistent world. [`ManualClock`] is set by hand, for plain functions
//! that take the time and nothing else.

use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;

/// Where "now" comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;

    /// Unix seconds.
    fn unix(&self) -> i64 {
        self.now().as_second()
    }

    /// Unix milliseconds.
    fn unix_ms(&self) -> i64 {
        self.now().as_millisecond()
    }

    /// Unix microseconds.
    fn unix_us(&self) -> i64 {
        self.now().as_microsecond()
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Wall time that starts at `start` and then moves with tokio's clock (paused, advanced or
/// real). Must be made inside a tokio runtime.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: Timestamp,
    since: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(start: Timestamp) -> Self {
        Self {
            start,
            since: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = jiff::SignedDuration::try_from(self.since.elapsed())
            .unwrap_or(jiff::SignedDuration::MAX);
        self.start.saturating_add(elapsed).unwrap_or(self.start)
    }
}

/// A clock that says what it was last told.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(at: Timestamp) -> Self {
        Self(Mutex::new(at))
    }

    pub fn set(&self, at: Timestamp) {
        if let Ok(mut now) = self.0.lock() {
            *now = at;
        }
    }

    pub fn advance(&self, by: Duration) {
        if let Ok(mut now) = self.0.lock() {
            let by = jiff::SignedDuration::try_from(by).unwrap_or(jiff::SignedDuration::MAX);
            *now = now.saturating_add(by).unwrap_or(*now);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.0
            .lock()
            .map(|now| *now)
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_with_paused_time_and_only_then() {
        let clock = TokioClock::starting_at(at(1_800_000_000));
        assert_eq!(clock.unix(), 1_800_000_000);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.unix(), 1_800_003_600);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(clock.unix_ms(), 1_800_003_601_500);
    }

    #[test]
    fn a_manual_clock_says_what_it_was_told() {
        let clock = ManualClock::new(at(100));
        clock.advance(Duration::from_secs(50));
        assert_eq!(clock.unix(), 150);
        clock.set(at(7));
        assert_eq!(clock.unix(), 7);
    }

    #[test]
    fn the_system_clock_is_the_system_time() {
        let before = Timestamp::now();
        let now = SystemClock.now();
        assert!(now >= before && now <= Timestamp::now());
    }
}
