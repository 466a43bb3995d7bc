//! Shared by the ONNX Runtime tests and the back-end bench.

use std::path::PathBuf;

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
