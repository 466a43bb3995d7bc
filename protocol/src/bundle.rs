//! `bundle.json`, the one unsigned file of an offline bundle (`fleetctl bundle`): which targets
//! the bundle carries, so `edge-agent install DIR` knows what to install. It only selects: every
//! target it names is verified through the bundle's signed metadata like any other.

use serde::{Deserialize, Serialize};

/// The file's name at the top of a bundle directory.
pub const MANIFEST_FILE: &str = "bundle.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleManifest {
    /// Model targets, e.g. `models/churn/2.0.0/model.onnx`.
    pub targets: Vec<String>,
    /// RFC 3339: when the bundle's timestamp and snapshot expire (as signed; informative here).
    pub expires: String,
}
