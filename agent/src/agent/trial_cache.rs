//! Loading a model on the back-end chosen for it before, when nothing the choice depends on has
//! changed; measuring every back-end (and remembering the choice) otherwise.
//!
//! The key names the artifact, its interface and health spec (the budget scaled as this device
//! scales it), every back-end with its version and thread count, and the device (CPU model and
//! cores): a different board, library or budget measures again. Only passing choices are kept;
//! a refusal is measured afresh each time.

use edgefleet_inference::select::{Engine, Selected};
use edgefleet_inference::{Artifact, Error};
use edgefleet_protocol::health::HealthSpec;
use edgefleet_protocol::target::ModelTargetMeta;
use tracing::{info, warn};

use crate::store::Store;

/// Loads `artifact` (whose sha256 it names) as [`Engine::load_artifact`] would; returns whether
/// the choice came from the cache. A new choice is remembered as made at `now` (Unix seconds).
pub(super) fn load(
    engine: &Engine,
    store: &Store,
    artifact: Artifact<'_>,
    meta: &ModelTargetMeta,
    spec: &HealthSpec,
    now: i64,
) -> Result<(Selected, bool), Error> {
    // Only a choice made by measuring is worth keeping, and only a stored file names its bytes.
    let key = match artifact {
        Artifact::File { sha256_hex, .. } if engine.measures(meta.runtime) => {
            key(engine, sha256_hex, meta, spec)
        }
        _ => {
            return engine
                .load_artifact(artifact, &meta.interface, spec, meta.runtime)
                .map(|s| (s, false));
        }
    };
    if let Ok(Some((runtime, trials))) = store.runtime_choice(&key) {
        match engine.load_on(&runtime, artifact, &meta.interface) {
            Ok(loaded) => {
                info!(model = %meta.model, version = %meta.version, runtime, "back-end chosen before; not measured again");
                return Ok((Selected { loaded, trials }, true));
            }
            Err(e) => {
                warn!(model = %meta.model, runtime, error = %e, "the back-end chosen before no longer loads the model; measuring again");
            }
        }
    }
    let selected = engine.load_artifact(artifact, &meta.interface, spec, meta.runtime)?;
    if let Err(e) =
        store.remember_runtime_choice(&key, selected.loaded.model.runtime(), &selected.trials, now)
    {
        // Only the next start's speed depends on it.
        warn!(model = %meta.model, error = %e, "could not remember the back-end choice");
    }
    Ok((selected, false))
}

fn key(engine: &Engine, sha256_hex: &str, meta: &ModelTargetMeta, spec: &HealthSpec) -> String {
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [
        sha256_hex.to_string(),
        serde_json::to_string(&meta.interface).unwrap_or_default(),
        serde_json::to_string(spec).unwrap_or_default(),
        engine.fingerprint(),
        device(),
    ] {
        digest.update(&(part.len() as u64).to_le_bytes());
        digest.update(part.as_bytes());
    }
    hex::encode(digest.finish().as_ref())
}

/// The CPU model and the cores this process may use; read once per process.
fn device() -> String {
    static DEVICE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DEVICE.get_or_init(read_device).clone()
}

fn read_device() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| {
                    l.starts_with("model name")
                        || l.starts_with("Model")
                        || l.starts_with("CPU part")
                })
                .map(str::to_string)
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu} x{cores} {}", std::env::consts::ARCH)
}
