//! HTTP `Range` for artifact downloads (RFC 9110 §14), so a device on a flaky link resumes where it
//! was cut off instead of starting over.
//!
//! Policy: one byte range is served as `206`. A request for several ranges is answered with the
//! whole artifact (`200`), which RFC 9110 allows: devices resume, they never need multipart
//! bodies, and refusing them would break clients that merely ask. A header that does not parse is
//! ignored (also RFC 9110). A range that starts at or past the end is `416`.

/// What to send for a `Range` header against a body of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeDecision {
    /// `200` with the whole body.
    Full,
    /// `206` with bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// `416` with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Decides how to answer `header` (the `Range` value, if any) for a body of `len` bytes.
pub fn decide(header: Option<&str>, len: u64) -> RangeDecision {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeDecision::Full;
    };
    if spec.contains(',') {
        return RangeDecision::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeDecision::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (first.is_empty(), last.is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match parse(last) {
            None => RangeDecision::Full,
            Some(0) => RangeDecision::Unsatisfiable,
            Some(_) if len == 0 => RangeDecision::Unsatisfiable,
            Some(n) => RangeDecision::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        },
        // `bytes=A-`: from A to the end.
        (false, true) => match parse(first) {
            None => RangeDecision::Full,
            Some(start) if start >= len => RangeDecision::Unsatisfiable,
            Some(start) => RangeDecision::Partial {
                start,
                end: len - 1,
            },
        },
        // `bytes=A-B`.
        (false, false) => match (parse(first), parse(last)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= len {
                    RangeDecision::Unsatisfiable
                } else {
                    RangeDecision::Partial {
                        start,
                        end: end.min(len - 1),
                    }
                }
            }
            _ => RangeDecision::Full,
        },
        (true, true) => RangeDecision::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::RangeDecision::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn single_ranges_follow_rfc_9110() {
        let cases = [
            (None, Full),
            (Some("bytes=0-99"), Partial { start: 0, end: 99 }),
            (
                Some("bytes=10-"),
                Partial {
                    start: 10,
                    end: 999,
                },
            ),
            (
                Some("bytes=-100"),
                Partial {
                    start: 900,
                    end: 999,
                },
            ),
            (Some("bytes=-5000"), Partial { start: 0, end: 999 }),
            (
                Some("bytes=990-5000"),
                Partial {
                    start: 990,
                    end: 999,
                },
            ),
            (
                Some("bytes=999-999"),
                Partial {
                    start: 999,
                    end: 999,
                },
            ),
            (Some("bytes=1000-"), Unsatisfiable),
            (Some("bytes=1000-2000"), Unsatisfiable),
            (Some("bytes=-0"), Unsatisfiable),
            (Some("bytes=0-0,5-9"), Full),
            (Some("bytes=5-1"), Full),
            (Some("items=0-1"), Full),
            (Some("bytes=a-b"), Full),
            (Some("bytes=+1-2"), Full),
            (Some("bytes=-"), Full),
            (Some("bytes=99999999999999999999999-"), Full),
        ];
        for (header, expected) in cases {
            assert_eq!(decide(header, 1000), expected, "{header:?}");
        }
    }

    #[test]
    fn an_empty_body_has_no_satisfiable_range() {
        assert_eq!(decide(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(decide(Some("bytes=-1"), 0), Unsatisfiable);
        assert_eq!(decide(None, 0), Full);
    }

    proptest! {
        #[test]
        fn a_partial_answer_always_lies_inside_the_body(header in ".{0,40}", len in 0u64..5000) {
            if let Partial { start, end } = decide(Some(&header), len) {
                prop_assert!(start <= end && end < len);
            }
        }

        #[test]
        fn resuming_at_any_offset_returns_exactly_the_rest(len in 1u64..1_000_000, at in 0u64..1_000_000) {
            let decision = decide(Some(&format!("bytes={at}-")), len);
            if at < len {
                prop_assert_eq!(decision, Partial { start: at, end: len - 1 });
            } else {
                prop_assert_eq!(decision, Unsatisfiable);
            }
        }
    }
}
