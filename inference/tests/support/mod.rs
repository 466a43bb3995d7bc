//! Shared by the inference tests and the back-end bench.

use std::path::{Path, PathBuf};

use edgefleet_protocol::target::{ModelTargetMeta, ReleaseFiles};

pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// A release directory under `models/`: the artifact's bytes and its assembled metadata.
pub fn release(dir: &str) -> (Vec<u8>, ModelTargetMeta) {
    let dir = models_dir().join(dir);
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let baseline = std::fs::read(dir.join("baseline.json")).ok();
    let meta = ReleaseFiles {
        release: &read("release.json"),
        interface: &read("interface.json"),
        health: &read("health.json"),
        baseline: baseline.as_deref(),
    }
    .assemble()
    .unwrap();
    (read("model.onnx"), meta)
}

#[allow(dead_code)] // not every test file uses it
/// ONNX Runtime's shared library from the onnxruntime wheel (`scripts/setup.sh` installs the
/// version `models/requirements.txt` pins), or `EDGEFLEET_ONNXRUNTIME_LIB`.
pub fn onnxruntime_library() -> PathBuf {
    if let Some(path) = std::env::var_os("EDGEFLEET_ONNXRUNTIME_LIB") {
        return PathBuf::from(path);
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import onnxruntime, os, glob; \
             print(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*'))[0])",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the onnxruntime wheel is missing (run scripts/setup.sh, or set EDGEFLEET_ONNXRUNTIME_LIB): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}
