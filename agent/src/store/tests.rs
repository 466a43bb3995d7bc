//! The store against real SQLite in a temporary directory: versions are signed targets, files
//! are shared by content, and a first-schema database migrates in place.

use std::path::Path;

use edgefleet_protocol::target::ModelTargetMeta;
use rusqlite::params;

use super::*;

fn meta(version: &str, sequence: u64, abs_tolerance: f64) -> ModelTargetMeta {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/churn/1.0.0");
    let (_, mut meta) = edgefleet_tuf::operator::read_release_dir(&dir).unwrap();
    meta.version = version.parse().unwrap();
    meta.sequence = sequence;
    meta.min_sequence = 0;
    meta.health.tolerance.abs = abs_tolerance;
    meta
}

fn version(version: &str, sequence: u64, sha: char, abs_tolerance: f64) -> StoredVersion {
    StoredVersion {
        sha256: sha.to_string().repeat(64),
        target: format!("models/churn/{version}/model.onnx"),
        meta: meta(version, sequence, abs_tolerance),
    }
}

/// Runs an install to activation; `file` puts the bytes in place as a download would (an
/// install whose file is stored already skips that, as the agent does).
fn activate(store: &Store, v: &StoredVersion, file: bool) {
    store.begin(v, 1).unwrap();
    if file {
        let dir = store.version_dir("churn", &v.sha256);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.onnx"), v.sha256.as_bytes()).unwrap();
    }
    for event in [Event::FilesWritten, Event::CheckStarted, Event::Activated] {
        store.transition("churn", event, None, 2).unwrap();
    }
}

fn commit(store: &Store, v: &StoredVersion, file: bool) {
    activate(store, v, file);
    store
        .transition("churn", Event::ProbationPassed, None, 3)
        .unwrap();
}

fn stored_files(store: &Store) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.root.join("models/churn"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_release_with_the_same_file_and_new_metadata_is_a_new_version_sharing_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let v1 = version("1.0.0", 1, 'a', 1e-5);
    let v1_1 = version("1.1.0", 2, 'a', 1e-3);
    assert_ne!(v1.key(), v1_1.key());
    commit(&store, &v1, true);
    assert!(store.has_artifact("churn", &v1_1.sha256));
    commit(&store, &v1_1, false);
    let record = store.record("churn").unwrap().unwrap();
    assert_eq!(
        record.active.as_ref(),
        Some(&v1_1),
        "the new metadata is active"
    );
    assert_eq!(record.previous.as_ref(), Some(&v1));
    assert_eq!(stored_files(&store), ["a".repeat(64)], "one file for both");

    // The file stays while any kept version uses it, and goes with the last of them.
    let v2 = version("2.0.0", 3, 'b', 1e-5);
    commit(&store, &v2, true);
    assert_eq!(stored_files(&store), ["a".repeat(64), "b".repeat(64)]);
    commit(&store, &version("3.0.0", 4, 'c', 1e-5), true);
    assert_eq!(stored_files(&store), ["b".repeat(64), "c".repeat(64)]);
}

#[test]
fn rolling_back_a_same_file_release_restores_the_old_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let v1 = version("1.0.0", 1, 'a', 1e-5);
    let v1_1 = version("1.1.0", 2, 'a', 1e-3);
    commit(&store, &v1, true);
    activate(&store, &v1_1, false);
    let next = store
        .transition("churn", Event::Failed, Some("probation failed"), 4)
        .unwrap();
    assert_eq!(next, Next::Done(Outcome::RolledBack));
    let record = store.record("churn").unwrap().unwrap();
    assert_eq!(record.active.as_ref(), Some(&v1));
    assert_eq!(record.active.unwrap().meta.health.tolerance.abs, 1e-5);
    assert!(
        store.has_artifact("churn", &v1.sha256),
        "the shared file stays"
    );
}

/// The first schema, as agents before version keys created it.
const FIRST_SCHEMA: &str = "
CREATE TABLE models (name TEXT PRIMARY KEY, active_sha TEXT, previous_sha TEXT,
    floor INTEGER NOT NULL DEFAULT 0, last_outcome TEXT, last_error TEXT);
CREATE TABLE versions (model TEXT NOT NULL, sha256 TEXT NOT NULL, target TEXT NOT NULL,
    meta TEXT NOT NULL, PRIMARY KEY (model, sha256));
CREATE TABLE install (model TEXT PRIMARY KEY, sha256 TEXT NOT NULL, target TEXT NOT NULL,
    meta TEXT NOT NULL, state TEXT NOT NULL, previous_before TEXT, started_unix INTEGER NOT NULL,
    probation_served_ms INTEGER NOT NULL DEFAULT 0, stopped_cleanly INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0);
CREATE TABLE journal (id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL,
    sha256 TEXT NOT NULL, state TEXT NOT NULL, detail TEXT, at_unix INTEGER NOT NULL);
";

#[test]
fn a_first_schema_store_in_mid_probation_migrates_and_the_probation_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (v1, v2) = (
        version("1.0.0", 1, 'a', 1e-5),
        version("2.0.0", 2, 'b', 1e-5),
    );
    {
        let conn = rusqlite::Connection::open(tmp.path().join("agent.db")).unwrap();
        conn.execute_batch(FIRST_SCHEMA).unwrap();
        for v in [&v1, &v2] {
            conn.execute(
                "INSERT INTO versions VALUES ('churn', ?1, ?2, ?3)",
                params![v.sha256, v.target, serde_json::to_string(&v.meta).unwrap()],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO models (name, active_sha, previous_sha, floor) VALUES ('churn', ?1, ?2, 1)",
            params![v2.sha256, v1.sha256],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO install VALUES ('churn', ?1, ?2, ?3, 'probation', NULL, 1, 5000, 1, 0)",
            params![
                v2.sha256,
                v2.target,
                serde_json::to_string(&v2.meta).unwrap()
            ],
        )
        .unwrap();
    }
    for v in [&v1, &v2] {
        let dir = tmp.path().join("store/models/churn").join(&v.sha256);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.onnx"), b"x").unwrap();
    }
    let store = Store::open(tmp.path()).unwrap();
    let record = store.record("churn").unwrap().unwrap();
    assert_eq!(record.active.as_ref(), Some(&v2));
    assert_eq!(record.previous.as_ref(), Some(&v1));
    assert_eq!(record.floor, 1);
    assert_eq!(
        record.install.as_ref().map(|(v, _)| v.key()),
        Some(v2.key())
    );
    // Opening again does not migrate twice.
    drop(store);
    let store = Store::open(tmp.path()).unwrap();
    let recovered = store.recover(10).unwrap();
    assert_eq!(
        recovered.resumed,
        [Resumed {
            model: "churn".into(),
            served: std::time::Duration::from_secs(5),
            after_crash: false
        }]
    );
    // The probation ends as new installs do, and a failure rolls back to the migrated v1.
    store
        .transition("churn", Event::Failed, Some("probation failed"), 11)
        .unwrap();
    let record = store.record("churn").unwrap().unwrap();
    assert_eq!(record.active.as_ref(), Some(&v1));
    assert_eq!(stored_files(&store), ["a".repeat(64)]);
}
