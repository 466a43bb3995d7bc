//! The wall clock, passed in rather than read: code that needs "now" takes a [`Clock`], so a
//! test can run hours of rollout, token expiry or retention in milliseconds.
//!
//! [`SystemClock`] is the real one. [`TokioClock`] derives wall time from tokio's clock, so
//! `tokio::time::pause()` and `advance()` move it together with every timer and interval: a test
//! with paused time sees a consistent world. (Plain functions take the time as an argument
//! instead, as the rollout engine's pass does.)

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
    fn the_system_clock_is_the_system_time() {
        let before = Timestamp::now();
        let now = SystemClock.now();
        assert!(now >= before && now <= Timestamp::now());
    }
}
