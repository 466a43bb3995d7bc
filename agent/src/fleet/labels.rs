//! Ground truth uploaded to the fleet server (`POST /api/v1/feedback`) reaches this device by
//! polling `GET /api/v1/device/labels` with its own credential: each label is joined to the
//! prediction log as if it had come to the local API, and asking for what follows acknowledges
//! it. The cursor survives restarts (the outbox's counters), so a label is joined once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use edgefleet_protocol::feedback::{QueuedLabels, check_label};
use tracing::{info, warn};

use super::Fleet;
use crate::predictions::Truth;
use crate::transport::FleetTransport;

const CURSOR: &str = "labels_cursor";
/// An answer of 1,000 labels is well under this.
const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;

impl Fleet {
    pub(super) async fn labels_loop(self: Arc<Self>) {
        let every = Duration::from_secs(self.agent.config.fleet.labels_poll_seconds);
        let transport = match FleetTransport::new(self.link.credential.clone()) {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "cannot build the HTTP client; labels sent to the server do not reach this device");
                return;
            }
        };
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.agent.shutdown.cancelled() => return,
            }
            // Page through what is waiting: a backlog drains at once, not a page a minute.
            loop {
                match self.fetch_labels(&transport).await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        warn!(error = %e, "cannot fetch labels from the fleet server; retrying later");
                        break;
                    }
                }
            }
        }
    }

    /// Fetches one page, joins it and moves the cursor; true when more are waiting.
    async fn fetch_labels(&self, transport: &FleetTransport) -> Result<bool, String> {
        let cursor = self.outbox.counter(CURSOR).map_err(|e| e.to_string())?;
        let base = self.link.server_url.trim_end_matches('/');
        let url = url::Url::parse(&format!("{base}/api/v1/device/labels?after={cursor}"))
            .map_err(|e| e.to_string())?;
        let page: QueuedLabels = transport.get_json(&url, MAX_ANSWER_BYTES).await?;
        let Some(last) = page.labels.iter().map(|l| l.seq).max() else {
            return Ok(false);
        };
        let mut by_model: BTreeMap<String, Vec<(String, Truth)>> = BTreeMap::new();
        for label in page.labels {
            let truth = match (label.label, label.value) {
                (Some(l), None) if check_label(&l).is_ok() => Truth::Label(l),
                (None, Some(v)) if v.is_finite() => Truth::Value(v),
                _ => {
                    warn!(
                        seq = label.seq,
                        "a label from the server is malformed; skipped"
                    );
                    continue;
                }
            };
            by_model
                .entry(label.model.to_string())
                .or_default()
                .push((label.id, truth));
        }
        let now = self.agent.now_unix();
        for (model, labels) in by_model {
            self.agent.shadows.truths(&model, &labels);
            let log = self.agent.predictions.clone();
            let name = model.clone();
            let outcome = tokio::task::spawn_blocking(move || log.feedback(&name, &labels, now))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            self.agent.metrics.record_feedback(&model, &outcome);
            info!(
                model,
                accepted = outcome.accepted,
                duplicates = outcome.duplicates,
                unknown = outcome.unknown,
                "labels from the fleet server joined"
            );
        }
        self.outbox
            .set_counter(CURSOR, last)
            .map_err(|e| e.to_string())?;
        Ok(page.more)
    }
}
