//! What a step of a rollout writes in its history about its devices. One entry per device
//! change made the history of a 100,000-device wave 300,000 entries (~7 MB, in the rollout's
//! saved body and again in its summary): every save wrote it, every status read parsed it. The
//! devices' own rows and events keep each device's path; the history keeps one entry per kind
//! of change per step, naming a few of the devices.

use crate::DeviceState;

/// Devices named in one entry; the rest are counted.
const NAMED: usize = 5;
/// Entries one step writes at most; further kinds of change are counted in the last.
const MOST_PER_STEP: usize = 20;

/// How a device's change reads in the history: its new state, and the reason if it failed.
pub(crate) fn change_text(next: DeviceState, detail: Option<&str>) -> String {
    match detail {
        Some(why) if next.failed() => format!("{next:?}: {why}"),
        _ => format!("{next:?}"),
    }
}

/// The history entries for one step's `(device, change)` pairs: one per distinct change, in the
/// order first seen, naming up to [`NAMED`] devices ("device d1 Healthy", "3 devices Healthy:
/// d1, d2, d3", "120 devices Healthy: d1, …, d5 and 115 more").
pub(crate) fn change_notes(changes: Vec<(String, String)>) -> Vec<String> {
    let mut kinds: Vec<(String, Vec<String>)> = Vec::new();
    for (device, change) in changes {
        match kinds.iter_mut().find(|(kind, _)| *kind == change) {
            Some((_, devices)) => devices.push(device),
            None => kinds.push((change, vec![device])),
        }
    }
    let mut notes: Vec<String> = kinds
        .iter()
        .take(MOST_PER_STEP)
        .map(|(change, devices)| match devices.as_slice() {
            [one] => format!("device {one} {change}"),
            _ => {
                let named = devices[..devices.len().min(NAMED)].join(", ");
                match devices.len().saturating_sub(NAMED) {
                    0 => format!("{} devices {change}: {named}", devices.len()),
                    more => format!(
                        "{} devices {change}: {named} and {more} more",
                        devices.len()
                    ),
                }
            }
        })
        .collect();
    let rest: usize = kinds.iter().skip(MOST_PER_STEP).map(|(_, d)| d.len()).sum();
    if rest > 0 {
        notes.push(format!(
            "{rest} more device changes of {} other kinds (each device's row has its state)",
            kinds.len() - MOST_PER_STEP
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(n: usize, change: &str) -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("d{i}"), change.to_owned()))
            .collect()
    }

    #[test]
    fn one_entry_per_kind_of_change_naming_a_few_devices() {
        assert_eq!(change_notes(changes(1, "Healthy")), ["device d0 Healthy"]);
        assert_eq!(
            change_notes(changes(3, "Healthy")),
            ["3 devices Healthy: d0, d1, d2"]
        );
        let mut mixed = changes(100_000, "Healthy");
        mixed.insert(7, ("x".into(), "Failed: health check failed".into()));
        assert_eq!(
            change_notes(mixed),
            [
                "100000 devices Healthy: d0, d1, d2, d3, d4 and 99995 more",
                "device x Failed: health check failed"
            ]
        );
        assert!(change_notes(Vec::new()).is_empty());
    }

    #[test]
    fn a_step_writes_a_bounded_number_of_entries_however_varied_its_changes() {
        let varied: Vec<(String, String)> = (0..1_000)
            .map(|i| (format!("d{i}"), format!("Failed: error {i}")))
            .collect();
        let notes = change_notes(varied);
        assert_eq!(notes.len(), MOST_PER_STEP + 1);
        assert_eq!(notes[0], "device d0 Failed: error 0");
        assert_eq!(
            notes[MOST_PER_STEP],
            "980 more device changes of 980 other kinds (each device's row has its state)"
        );
    }

    #[test]
    fn a_failure_reads_with_its_reason_and_progress_without() {
        assert_eq!(
            change_text(DeviceState::Failed, Some("health check failed")),
            "Failed: health check failed"
        );
        assert_eq!(change_text(DeviceState::Healthy, Some("stale")), "Healthy");
    }
}
