//! What the device sends: events and telemetry through the outbox, notices from the agent,
//! and its reported state.

use super::*;

impl Fleet {
    /// Sends outbox rows not yet sent on this connection, oldest first.
    pub(super) async fn publish_outbox(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.wake_publisher.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                () = self.agent.shutdown.cancelled() => return,
            }
            if !self.is_connected() {
                continue;
            }
            let outbox = self.outbox.clone();
            let pending = tokio::task::spawn_blocking(move || outbox.claim_for_sending(200)).await;
            let Ok(Ok(pending)) = pending else { continue };
            let full = pending.len() == 200;
            for q in pending {
                let channel = if q.channel == "metrics" {
                    Channel::Metrics
                } else {
                    Channel::Events
                };
                if !self.send(channel, q.payload, false, Some(q.seq)) {
                    if let Err(e) = self.outbox.unclaim_from(q.seq) {
                        warn!(error = %e, "cannot put unsent messages back in the outbox queue");
                    }
                    break;
                }
            }
            if full {
                self.wake_publisher.notify_one();
            }
        }
    }

    /// Turns the agent's install steps into events, and re-reports state after each.
    pub(super) async fn relay_notices(self: Arc<Self>) {
        let mut notices = self.agent.notices.subscribe();
        loop {
            let notice = tokio::select! {
                notice = notices.recv() => notice,
                () = self.agent.shutdown.cancelled() => return,
            };
            match notice {
                Ok(notice) => {
                    if let Some(key) = &notice.refuse_again {
                        self.remember_failed(&notice.model, key);
                    }
                    self.emit(notice).await;
                    self.publish_reported();
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!(
                        missed = n,
                        "install notices overflowed; reported state still follows"
                    );
                    self.publish_reported();
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Every telemetry window, queues a metrics batch in the outbox (it survives restarts and
    /// outages there; when full, the oldest batches go first and the next batch says how many).
    pub(super) async fn telemetry_loop(self: Arc<Self>) {
        let every = Duration::from_secs(self.agent.config.fleet.telemetry_seconds);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        // After the process was stopped or the device slept, one batch covers the gap: a burst
        // of empty windows would only push real batches out of a full outbox.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut window_start = self.agent.now_unix();
        loop {
            // A stop closes the window early: its figures go in the outbox, not down with the
            // process.
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                () = self.agent.shutdown.cancelled() => true,
            };
            let window_end = self.agent.now_unix();
            let mut models = self.agent.telemetry.take();
            let log = self.agent.predictions.clone();
            match tokio::task::spawn_blocking(move || log.take_unreported()).await {
                Ok(Ok(quality)) => crate::telemetry::add_quality(&mut models, quality),
                Ok(Err(e)) => warn!(error = %e, "cannot read the labels joined in this window"),
                Err(e) => warn!(error = %e, "cannot read the labels joined in this window"),
            }
            crate::sampling::add_samples(&mut models, self.agent.samples.take());
            crate::shadow::add_reports(&mut models, self.agent.shadows.take(), |model| {
                let slot = self.agent.serving.get(model)?;
                Some((slot.meta.model.clone(), slot.meta.version.clone()))
            });
            if stopping && models.is_empty() {
                return;
            }
            let process = crate::telemetry::process_stats();
            let metrics = &self.agent.metrics;
            metrics.process_cpu_seconds.set(process.cpu_seconds);
            metrics.process_resident_bytes.set(process.rss_bytes as i64);
            for m in &models {
                for (feature, psi) in &m.drift_psi {
                    metrics
                        .drift_psi
                        .get_or_create(&crate::metrics::FeatureLabels {
                            model: m.model.to_string(),
                            version: m.version.to_string(),
                            feature: feature.clone(),
                        })
                        .set(*psi);
                }
            }
            let device = self.link.device_id.clone();
            let outbox = self.outbox.clone();
            let queued = tokio::task::spawn_blocking(move || -> Result<(), String> {
                let seq = outbox.next_seq().map_err(|e| e.to_string())?;
                let dropped = outbox.take_dropped().map_err(|e| e.to_string())?;
                let batch = MetricsBatch {
                    schema: SCHEMA_VERSION,
                    id: MessageId::from_random(random_bytes()),
                    device,
                    seq,
                    window_start_unix: window_start,
                    window_end_unix: window_end,
                    dropped_batches: dropped,
                    process,
                    models,
                };
                let bytes = message::encode(&batch).map_err(|e| e.to_string())?;
                outbox
                    .push_carrying(seq, "metrics", &bytes, dropped)
                    .map_err(|e| e.to_string())
            })
            .await;
            window_start = window_end;
            match queued {
                Ok(Ok(())) => {
                    self.agent.metrics.telemetry_batches.inc();
                    self.wake_publisher.notify_one();
                }
                Ok(Err(e)) => warn!(error = %e, "cannot queue a telemetry batch"),
                Err(e) => warn!(error = %e, "cannot queue a telemetry batch"),
            }
            if stopping {
                return;
            }
        }
    }

    /// Queues an event in the outbox (it survives restarts there) and wakes the publisher.
    pub async fn emit(&self, notice: Notice) {
        let Ok(model) = ModelName::new(notice.model.clone()) else {
            return;
        };
        let rollout = self
            .rollouts
            .lock()
            .ok()
            .and_then(|r| r.get(&notice.model).cloned());
        let device = self.link.device_id.clone();
        let outbox = self.outbox.clone();
        let at_unix = self.agent.now_unix();
        let queued = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let seq = outbox.next_seq().map_err(|e| e.to_string())?;
            let event = Event {
                schema: SCHEMA_VERSION,
                id: MessageId::from_random(random_bytes()),
                device,
                seq,
                at_unix,
                kind: notice.kind,
                model,
                target: notice.target,
                rollout,
                detail: notice.detail,
                evidence: notice.evidence,
            };
            let bytes = message::encode(&event).map_err(|e| e.to_string())?;
            outbox
                .push(seq, "events", &bytes)
                .map_err(|e| e.to_string())
        })
        .await;
        match queued {
            Ok(Ok(())) => self.wake_publisher.notify_one(),
            Ok(Err(e)) => warn!(error = %e, "cannot queue an event"),
            Err(e) => warn!(error = %e, "cannot queue an event"),
        }
    }

    /// Publishes what really runs, retained, if connected (also after a local rollback).
    pub(super) fn publish_reported(&self) {
        if !self.is_connected() {
            return; // sent on the next connection
        }
        let build = || -> Result<Vec<u8>, String> {
            let models = self.agent.reported_models().map_err(|e| e.to_string())?;
            let reported = Reported {
                schema: SCHEMA_VERSION,
                id: MessageId::from_random(random_bytes()),
                device: self.link.device_id.clone(),
                seq: self.outbox.bump(REPORTED_SEQ).map_err(|e| e.to_string())?,
                at_unix: self.agent.now_unix(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
                desired_revision: self
                    .outbox
                    .counter(DESIRED_REVISION)
                    .map_err(|e| e.to_string())?,
                models,
            };
            message::encode(&reported).map_err(|e| e.to_string())
        };
        match build() {
            Ok(bytes) => {
                self.send(Channel::Reported, bytes, true, None);
            }
            Err(e) => warn!(error = %e, "cannot build the reported state"),
        }
    }
}
