//! A release file (golden cases, baseline) as a device receives it: arbitrary bytes under a
//! signed reference that matches them, so the parser and the checks against the release's
//! interface run on every input. Never a panic; a file that attaches leaves valid metadata.
#![no_main]

use std::sync::LazyLock;

use edgefleet_protocol::release_files::{FileRef, ReleaseFileKind};
use edgefleet_protocol::target::{ModelTargetMeta, ReleaseFiles};
use edgefleet_tuf::release_files::{attach, detach};
use libfuzzer_sys::fuzz_target;

/// churn 2.0.0 as signed: its cases and baseline named by hash, not inline.
static SIGNED: LazyLock<ModelTargetMeta> = LazyLock::new(|| {
    let mut meta = ReleaseFiles {
        release: include_bytes!("../../models/churn/2.0.0/release.json"),
        interface: include_bytes!("../../models/churn/2.0.0/interface.json"),
        health: include_bytes!("../../models/churn/2.0.0/health.json"),
        baseline: Some(include_bytes!("../../models/churn/2.0.0/baseline.json")),
    }
    .assemble()
    .expect("churn 2.0.0 assembles");
    detach(&mut meta, u64::MAX).expect("churn 2.0.0 detaches");
    meta
});

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    for kind in ReleaseFileKind::ALL {
        let mut meta = SIGNED.clone();
        meta.files.set(
            kind,
            FileRef {
                length: data.len() as u64,
                sha256: edgefleet_tuf::client::sha256_hex(data),
            },
        );
        if attach(&mut meta, kind, data).is_ok() {
            assert!(!meta.pending().contains(&kind));
            meta.validate().expect("attached metadata validates");
        }
    }
});
