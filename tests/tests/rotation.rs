//! Key rotation for every TUF role through `fleetctl rotate-keys --server`, with a real agent
//! that keeps updating across each rotation: root, targets (re-signed in the same step),
//! snapshot and timestamp (made and switched on the server).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgefleet_e2e::demo::{self, DemoOptions};
use edgefleet_e2e::fleet::eventually;
use edgefleet_e2e::{models_dir, run_ok};
use serde_json::Value;

/// A copy of churn release `from` as `version` with `sequence`: the same model and golden
/// vectors, a release of its own.
fn churn_release(dir: &Path, from: &str, version: &str, sequence: u64) -> PathBuf {
    let out = dir.join("releases/churn").join(version);
    std::fs::create_dir_all(&out).unwrap();
    let source = models_dir().join("churn").join(from);
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, out.join(path.file_name().unwrap())).unwrap();
    }
    let mut release: Value =
        serde_json::from_slice(&std::fs::read(out.join("release.json")).unwrap()).unwrap();
    release["version"] = version.into();
    release["sequence"] = sequence.into();
    std::fs::write(out.join("release.json"), release.to_string()).unwrap();
    out
}

fn online_key_id(fleet: &demo::Demo, role: &str) -> String {
    let (status, keys) = fleet.server.call(
        "GET",
        "/api/v1/tuf/online-keys",
        Some(&fleet.operator.token()),
        None,
    );
    assert_eq!(status, 200, "{keys}");
    keys[role].to_string()
}

#[test]
fn every_role_rotates_and_a_device_keeps_updating_across_each_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = demo::set_up(tmp.path(), &DemoOptions::embedded(1));
    assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
    let op = &fleet.operator;
    run_ok(op.fleetctl().args(["keygen", "root-2", "targets-2"]));
    let mut targets_keys = "targets";
    // Each rotation, then a release signed and rolled out under the rotated keys.
    let steps: [(&str, &[&str], &str, &str); 4] = [
        (
            "root",
            &["--root-keys", "root", "--new-keys", "root-2"],
            "2.0.0",
            "3.0.0",
        ),
        (
            "targets",
            &["--root-keys", "root-2", "--new-keys", "targets-2"],
            "1.0.0",
            "4.0.0",
        ),
        ("snapshot", &["--root-keys", "root-2"], "2.0.0", "5.0.0"),
        ("timestamp", &["--root-keys", "root-2"], "1.0.0", "6.0.0"),
    ];
    for (sequence, (role, flags, from, version)) in (10..).zip(steps) {
        let online_before = ["snapshot", "timestamp"].map(|r| online_key_id(&fleet, r));
        let out = run_ok(
            op.fleetctl()
                .args(["rotate-keys", "--server", "--role", role])
                .args(flags),
        );
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(said.contains("keys rotated"), "{role}: {said}");
        if role == "targets" {
            targets_keys = "targets-2";
        }
        let online_after = ["snapshot", "timestamp"].map(|r| online_key_id(&fleet, r));
        for (i, online) in ["snapshot", "timestamp"].iter().enumerate() {
            assert_eq!(
                online_before[i] != online_after[i],
                online == &role,
                "{role} rotation and the server's {online} key"
            );
        }
        // The old targets key can no longer publish anything.
        if role == "targets" {
            let refused = op
                .fleetctl()
                .args(["push", "--server", "--targets-keys", "targets"])
                .arg(churn_release(tmp.path(), from, "3.5.0", 99))
                .output()
                .unwrap();
            assert!(
                !refused.status.success(),
                "the retired targets key still signs"
            );
        }
        run_ok(
            op.fleetctl()
                .args(["push", "--server", "--targets-keys", targets_keys])
                .arg(churn_release(tmp.path(), from, version, sequence)),
        );
        assert_eq!(
            demo::roll_out(&fleet, version, &[100.0], 0),
            "completed",
            "the rollout after rotating {role}"
        );
        let agent = &fleet.agents[0];
        eventually(
            &format!("the device serving {version} after rotating {role}"),
            Duration::from_secs(30),
            || (agent.model("churn")["serving"] == version).then_some(()),
        );
    }
    // The device trusts the newest root, which the new root keys signed.
    let root: Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("agents/dev-01/data/tuf/root.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(root["signed"]["version"], 5, "{root}");
}
