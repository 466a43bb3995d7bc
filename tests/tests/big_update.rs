//! A 256 MiB artifact over the air: downloaded, verified, staged and loaded without the agent ever
//! holding it in memory. The agent stops itself once the artifact is staged
//! (`EDGE_AGENT_STOP_AT=staged`), so its peak RSS (VmHWM, reset before the update) is read for
//! exactly the update path; then it goes on, and the update succeeds.
//!
//! The artifact is churn 2.0.0's network followed by a 256 MiB protobuf field ONNX parsers skip
//! as unknown: what is measured is the path, not a model's weights (a model whose weights are
//! 256 MiB needs them resident while it serves, whatever the path).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgefleet_e2e::demo::{self, DemoOptions};
use edgefleet_e2e::fleet::eventually;
use edgefleet_e2e::{AgentProcess, models_dir, run_ok};
use serde_json::json;

const ARTIFACT_BYTES: u64 = 256 * 1024 * 1024;

/// churn 2.0.0 as release 3.1.0, its model padded to [`ARTIFACT_BYTES`] with an unknown field
/// (number 1000, length-delimited), written a MiB at a time.
fn padded_release(dir: &Path) -> PathBuf {
    let out = dir.join("churn-3.1.0");
    std::fs::create_dir_all(&out).unwrap();
    let source = models_dir().join("churn/2.0.0");
    for file in ["interface.json", "health.json", "baseline.json"] {
        std::fs::copy(source.join(file), out.join(file)).unwrap();
    }
    std::fs::write(
        out.join("release.json"),
        json!({"model": "churn", "version": "3.1.0", "sequence": 10}).to_string(),
    )
    .unwrap();
    let network = std::fs::read(source.join("model.onnx")).unwrap();
    let mut head = network.clone();
    head.extend_from_slice(&[0xC2, 0x3E]); // field 1000, wire type 2
    let varint_len = 5; // lengths between 2^28 and 2^35
    let padding = ARTIFACT_BYTES - head.len() as u64 - varint_len;
    let mut n = padding;
    for _ in 0..varint_len - 1 {
        head.push((n as u8 & 0x7F) | 0x80);
        n >>= 7;
    }
    head.push(n as u8);
    assert_eq!(n >> 7, 0, "the length fits five varint bytes");
    let mut file = std::io::BufWriter::new(std::fs::File::create(out.join("model.onnx")).unwrap());
    file.write_all(&head).unwrap();
    let mib = vec![0u8; 1024 * 1024];
    let mut left = padding;
    while left > 0 {
        let n = left.min(mib.len() as u64) as usize;
        file.write_all(&mib[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
    assert_eq!(
        std::fs::metadata(out.join("model.onnx")).unwrap().len(),
        ARTIFACT_BYTES
    );
    out
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in {status}"))
}

fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|rest| rest.trim_start().starts_with('T'))
        })
        .unwrap_or(false)
}

#[test]
fn a_256_mib_update_never_takes_the_agent_64_mb_beyond_what_it_had() {
    let tmp = tempfile::tempdir().unwrap();
    let mut fleet = demo::set_up(tmp.path(), &DemoOptions::embedded(1));
    assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
    let release = padded_release(tmp.path());
    run_ok(
        fleet
            .operator
            .fleetctl()
            .args(["push", "--server"])
            .arg(&release),
    );

    // The same agent, told to stop itself once the artifact is staged.
    let (config, port) = (fleet.agents[0].config.clone(), fleet.agents[0].port);
    fleet.agents[0].kill();
    fleet.agents[0] = AgentProcess::spawn(config, port, &[("EDGE_AGENT_STOP_AT", "staged")]);
    let agent = &fleet.agents[0];
    eventually("1.0.0 serving again", Duration::from_secs(30), || {
        (agent.model("churn")["serving"] == "1.0.0").then_some(())
    });
    let pid = agent.child.id();
    std::thread::sleep(Duration::from_secs(2));
    let before_kib = status_kib(pid, "VmRSS:");
    // "5" resets the peak (VmHWM) to the current RSS.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();

    let started = Instant::now();
    run_ok(
        fleet
            .operator
            .fleetctl()
            .args(["device", "assign", "dev-01", "churn=3.1.0"]),
    );
    eventually(
        "the agent stopped at staged",
        Duration::from_secs(300),
        || stopped(pid).then_some(()),
    );
    let staged_after = started.elapsed();
    let peak_kib = status_kib(pid, "VmHWM:");
    let growth_mib = (peak_kib.saturating_sub(before_kib)) as f64 / 1024.0;
    eprintln!(
        "256 MiB artifact: RSS before {:.1} MiB, peak through download + verification + staging {:.1} MiB (+{growth_mib:.1} MiB); assigned to staged in {:.1} s ({:.0} MB/s, debug build)",
        before_kib as f64 / 1024.0,
        peak_kib as f64 / 1024.0,
        staged_after.as_secs_f64(),
        ARTIFACT_BYTES as f64 / 1e6 / staged_after.as_secs_f64()
    );
    // The bound: 64 MB (decimal) beyond what the agent had.
    const BOUND_KIB: u64 = 64_000_000 / 1024;
    assert!(
        peak_kib.saturating_sub(before_kib) < BOUND_KIB,
        "the update path took the agent {growth_mib:.1} MiB beyond its {:.1} MiB",
        before_kib as f64 / 1024.0
    );
    run_ok(std::process::Command::new("kill").args(["-CONT", &pid.to_string()]));
    eventually("3.1.0 committed", Duration::from_secs(120), || {
        let m = agent.model("churn");
        (m["active"]["version"] == "3.1.0" && m["state"] == "committed").then_some(())
    });
    let peak_kib = status_kib(pid, "VmHWM:");
    eprintln!(
        "after loading and serving it: peak {:.1} MiB, now {:.1} MiB",
        peak_kib as f64 / 1024.0,
        status_kib(pid, "VmRSS:") as f64 / 1024.0
    );
    // Loading maps the stored file (only the parts the parser reads are touched), so the whole
    // update, load and health check included, stays within the bound too.
    assert!(
        peak_kib.saturating_sub(before_kib) < BOUND_KIB,
        "loading took the agent to {:.1} MiB from {:.1} MiB",
        peak_kib as f64 / 1024.0,
        before_kib as f64 / 1024.0
    );
}
