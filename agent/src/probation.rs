//! The verdict on a newly activated version under live traffic: a pure function of what was
//! counted, so it is tested without clocks or traffic.

/// Thresholds for one probation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub min_requests: u64,
    pub max_error_ratio: f64,
    pub max_p99_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing wrong so far (or too little traffic to say).
    Healthy,
    /// Roll back, for this reason.
    Breach(String),
}

pub fn judge(requests: u64, errors: u64, p99_ms: Option<f64>, policy: Policy) -> Verdict {
    if requests < policy.min_requests.max(1) {
        return Verdict::Healthy;
    }
    let ratio = errors as f64 / requests as f64;
    if ratio > policy.max_error_ratio {
        return Verdict::Breach(format!(
            "{errors} of {requests} live inferences failed ({:.1}% > {:.1}%)",
            ratio * 100.0,
            policy.max_error_ratio * 100.0
        ));
    }
    if let Some(p99) = p99_ms.filter(|&p| p > policy.max_p99_ms) {
        return Verdict::Breach(format!(
            "live p99 latency {p99:.2} ms exceeds {:.2} ms",
            policy.max_p99_ms
        ));
    }
    Verdict::Healthy
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        min_requests: 20,
        max_error_ratio: 0.05,
        max_p99_ms: 10.0,
    };

    #[test]
    fn too_little_traffic_is_not_judged() {
        assert_eq!(judge(19, 19, Some(1e6), POLICY), Verdict::Healthy);
    }

    #[test]
    fn errors_over_the_ratio_breach() {
        assert_eq!(judge(100, 5, Some(1.0), POLICY), Verdict::Healthy);
        assert!(
            matches!(judge(100, 6, Some(1.0), POLICY), Verdict::Breach(r) if r.contains("6 of 100"))
        );
    }

    #[test]
    fn slow_live_p99_breaches() {
        assert!(
            matches!(judge(100, 0, Some(10.5), POLICY), Verdict::Breach(r) if r.contains("p99"))
        );
        assert_eq!(judge(100, 0, Some(9.9), POLICY), Verdict::Healthy);
    }
}
