//! Putting a challenger in a model's shadow slot: admitted, stored, loaded and health-checked
//! like any candidate, then run on copies of requests by [`crate::shadow`], never activated.
//! Its model file stays in the store, so a promotion installs it without a second download.

use std::sync::Arc;

use edgefleet_protocol::message::EventKind;
use edgefleet_protocol::shadow::DesiredShadow;
use edgefleet_tuf::client::{self, ModelTarget};
use tracing::{info, warn};

use super::{Agent, ArtifactSource, InstallError, blocking};
use crate::shadow::ShadowSlot;
use crate::store::StoredVersion;

/// Why a challenger may not take the shadow slot on this device, if it may not: the slot is
/// off, the file is over the device's limit, or the memory free now cannot hold it beside the
/// champion (`mem_available`, when known).
pub fn shadow_fits(length: u64, limit: u64, mem_available: Option<u64>) -> Result<(), String> {
    if limit == 0 {
        return Err(
            "this device's shadow slot is off (limits.max_shadow_artifact_bytes = 0)".into(),
        );
    }
    if length > limit {
        return Err(format!(
            "the challenger's model file is {length} bytes, over this device's shadow limit of {limit} (limits.max_shadow_artifact_bytes)"
        ));
    }
    // Loading takes about twice the file for a moment; keep as much again for everything else.
    if let Some(free) = mem_available
        && length.saturating_mul(3) > free
    {
        return Err(format!(
            "{free} bytes of memory are available, too few to hold a {length}-byte challenger beside the serving model"
        ));
    }
    Ok(())
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl Agent {
    /// Installs `target` into `model`'s shadow slot with `plan`'s share and CPU budget. A
    /// refusal is reported as a rejected event naming the shadow; the champion is not touched
    /// either way.
    pub async fn install_shadow(
        self: &Arc<Self>,
        target: &ModelTarget,
        source: ArtifactSource,
        plan: DesiredShadow,
    ) -> Result<(), InstallError> {
        let _ = self.loaded.subscribe().wait_for(|loaded| *loaded).await;
        let _guard = self.install_lock.lock().await;
        let model = target.meta.model.to_string();
        let version = StoredVersion::of(target);
        let refuse = |reason: String| {
            warn!(model, target = %version.target, reason, "shadow challenger refused");
            self.shadows.refuse(&model, &version.target, &reason);
            self.notify(
                &model,
                EventKind::Rejected,
                &version.target,
                Some(format!("shadow: {reason}")),
            );
            InstallError::Rejected {
                target: version.target.clone(),
                reason,
            }
        };
        let record = {
            let store = self.store.clone();
            let m = model.clone();
            blocking(move || store.record(&m)).await??
        };
        client::admit(target, record.as_ref().map_or(0, |r| r.floor))?;
        if let Err(why) = plan.check() {
            return Err(refuse(why));
        }
        if let Err(why) = shadow_fits(
            target.length,
            self.config.limits.max_shadow_artifact_bytes,
            mem_available(),
        ) {
            return Err(refuse(why));
        }
        match source {
            ArtifactSource::Downloaded(artifact) => {
                if artifact.sha256_hex() != version.sha256 {
                    return Err(refuse(format!(
                        "the downloaded file is sha256 {}, not the target's",
                        artifact.sha256_hex()
                    )));
                }
                let store = self.store.clone();
                let margin = self.config.limits.min_free_disk_bytes;
                let size = artifact.length();
                blocking(move || store.check_free_space(size, margin)).await??;
                let store = self.store.clone();
                let v = version.clone();
                blocking(move || store.write_files(&v, artifact)).await??;
            }
            ArtifactSource::Stored if !self.store.has_artifact(&model, &version.sha256) => {
                return Err(InstallError::Internal(format!(
                    "{}: its model file is not in the store; download it",
                    target.name
                )));
            }
            ArtifactSource::Stored => {}
        }
        {
            let store = self.store.clone();
            let (m, t, sha) = (
                model.clone(),
                version.target.clone(),
                version.sha256.clone(),
            );
            blocking(move || store.set_shadow(&m, &t, &sha)).await??;
        }
        let slot = match self.load_slot(&version).await {
            Ok((slot, _)) => Arc::new(slot),
            Err(e) => return Err(refuse(format!("load failed: {e}"))),
        };
        let report = match self.health_check(&slot).await? {
            Ok(r) => r,
            Err(e) => return Err(refuse(format!("health check failed: {e}"))),
        };
        let share = plan.share();
        let shadow = ShadowSlot::start(slot, version.sha256.clone(), plan)
            .map_err(|e| InstallError::Internal(format!("cannot start the shadow worker: {e}")))?;
        self.shadows.put(&model, shadow);
        self.notify(
            &model,
            EventKind::Installed,
            &version.target,
            Some(format!(
                "into the shadow slot (health check p99 {:.3} ms); runs on {:.0} % of requests and answers none",
                report.p99_ms,
                share * 100.0
            )),
        );
        info!(model, target = %version.target, share, "challenger in the shadow slot");
        Ok(())
    }

    /// Empties `model`'s shadow slot, if it holds anything, and lets its file go unless a
    /// version of the model uses it.
    pub async fn drop_shadow(&self, model: &str) -> Result<(), InstallError> {
        if let Some(target) = self.shadows.remove(model) {
            info!(model, target, "shadow slot emptied");
        }
        let store = self.store.clone();
        let m = model.to_owned();
        blocking(move || store.clear_shadow(&m)).await??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::shadow_fits;

    #[test]
    fn a_device_says_why_it_cannot_hold_a_challenger() {
        assert!(shadow_fits(10 << 20, 128 << 20, Some(1 << 30)).is_ok());
        assert!(shadow_fits(10 << 20, 128 << 20, None).is_ok());
        let off = shadow_fits(10, 0, None).unwrap_err();
        assert!(off.contains("off"), "{off}");
        let big = shadow_fits(200 << 20, 128 << 20, None).unwrap_err();
        assert!(big.contains("max_shadow_artifact_bytes"), "{big}");
        let tight = shadow_fits(100 << 20, 128 << 20, Some(200 << 20)).unwrap_err();
        assert!(tight.contains("memory"), "{tight}");
    }
}
