//! `fleetctl delegate` on an offline repository, as an operator runs it: a repository made in
//! the old layout (every release in the top-level role, cases inline) moves to one role per model
//! with `--all`, `fleetctl verify` (the device's client) finds every release and its release files
//! before and after, a model re-delegated to a key of its own is then signed only by that key, and
//! revocations and prunes land in the model's role.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use edgefleet_e2e::{binary, models_dir};

fn fleetctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary("fleetctl"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("spawn fleetctl")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = fleetctl(dir, args);
    assert!(
        out.status.success(),
        "fleetctl {args:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn verified_targets(dir: &Path) -> Vec<String> {
    let mut listed: Vec<String> = ok(dir, &["verify"])
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ok  "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    listed.sort();
    listed
}

#[test]
fn an_old_layout_repository_moves_to_one_role_per_model_and_keeps_every_release() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["keygen"]);
    ok(dir, &["keygen", "churn-key"]);
    ok(dir, &["init"]);
    let release = |r: &str| models_dir().join(r).display().to_string();
    // Releases signed the old way (cases and baseline inline) beside one with release files.
    for r in ["churn/1.0.0", "iris/1.0.0"] {
        ok(dir, &["push", "--inline-release-files", &release(r)]);
    }
    let pushed = ok(dir, &["push", &release("churn/2.0.0")]);
    assert!(
        pushed.contains("golden.json") && pushed.contains("baseline.json"),
        "{pushed}"
    );
    let verified = ok(dir, &["verify"]);
    let churn_2 = verified
        .lines()
        .find(|l| l.contains("models/churn/2.0.0/"))
        .unwrap();
    assert!(churn_2.contains("golden.json"), "{verified}");
    let before = verified_targets(dir);
    assert_eq!(
        before,
        [
            "models/churn/1.0.0/model.onnx",
            "models/churn/2.0.0/model.onnx",
            "models/iris/1.0.0/model.onnx"
        ]
    );

    let said = ok(dir, &["delegate", "--all"]);
    assert!(said.contains("role model-churn"), "{said}");
    assert!(said.contains("role model-iris"), "{said}");
    assert_eq!(
        verified_targets(dir),
        before,
        "every release found in its role"
    );
    assert!(dir.join("repo/metadata/1.model-churn.json").exists());

    // churn moves to a key of its own: the targets key can no longer sign its releases.
    ok(dir, &["delegate", "churn", "--model-keys", "churn-key"]);
    let refused = fleetctl(dir, &["revoke", "models/churn/1.0.0/model.onnx"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("signature"), "{stderr}");
    let said = ok(
        dir,
        &[
            "revoke",
            "models/churn/1.0.0/model.onnx",
            "--model-keys",
            "churn-key",
        ],
    );
    assert!(said.contains("model-churn version"), "{said}");
    assert_eq!(
        verified_targets(dir),
        [
            "models/churn/2.0.0/model.onnx",
            "models/iris/1.0.0/model.onnx"
        ]
    );

    // Pruning keeps the newest releases of one model, in its role, and touches no other model.
    let next = dir.join("churn-2.1.0");
    std::fs::create_dir_all(&next).unwrap();
    for file in std::fs::read_dir(models_dir().join("churn/2.0.0")).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), next.join(file.file_name())).unwrap();
    }
    std::fs::write(
        next.join("release.json"),
        r#"{"model": "churn", "version": "2.1.0", "sequence": 3}"#,
    )
    .unwrap();
    ok(
        dir,
        &["push", next.to_str().unwrap(), "--model-keys", "churn-key"],
    );
    let said = ok(dir, &["prune", "iris", "--keep", "1"]);
    assert!(said.contains("nothing to prune"), "{said}");
    let said = ok(
        dir,
        &["prune", "churn", "--keep", "1", "--model-keys", "churn-key"],
    );
    assert!(
        said.contains("models/churn/2.0.0/model.onnx") && said.contains("model-churn version"),
        "{said}"
    );
    assert_eq!(
        verified_targets(dir),
        [
            "models/churn/2.1.0/model.onnx",
            "models/iris/1.0.0/model.onnx"
        ]
    );
}
