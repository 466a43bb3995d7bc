//! The sampled prediction log and its review queue.

use std::collections::BTreeMap as Counts;

use super::*;
use crate::samples::{ReviewBounds, ReviewState, SampleFilter, StoredSample};
use crate::store::{SampleStore, SamplesAdded};

fn review_column(s: &StoredSample) -> Option<&'static str> {
    s.review.as_ref().map(|r| r.state.as_str())
}

fn collect(bodies: Vec<String>) -> Result<Vec<StoredSample>> {
    bodies.iter().map(|b| decode_stored("sample", b)).collect()
}

#[async_trait]
impl SampleStore for SqliteStore {
    async fn add_samples(
        &self,
        samples: &[StoredSample],
        bounds: ReviewBounds,
    ) -> Result<SamplesAdded> {
        let mut samples = samples.to_vec();
        self.write(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let mut added = SamplesAdded::default();
            let mut open: Counts<String, u64> = Counts::new();
            let mut open_of_device: Counts<(String, String), u64> = Counts::new();
            {
                let mut count = tx
                    .prepare_cached(
                        "SELECT COUNT(*) FROM samples WHERE review = 'open' AND model = ?1",
                    )
                    .map_err(backend)?;
                let mut count_of_device = tx
                    .prepare_cached(
                        "SELECT COUNT(*) FROM samples
                         WHERE review = 'open' AND model = ?1 AND device = ?2",
                    )
                    .map_err(backend)?;
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO samples (device, model, id, version, received_at, review, body)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                    )
                    .map_err(backend)?;
                for sample in &mut samples {
                    let device_key = (sample.model.clone(), sample.device.clone());
                    if sample.review.is_some() {
                        let waiting = match open.get(&sample.model) {
                            Some(n) => *n,
                            None => count
                                .query_row(params![sample.model], |r| r.get::<_, i64>(0))
                                .map_err(backend)? as u64,
                        };
                        let of_device = match open_of_device.get(&device_key) {
                            Some(n) => *n,
                            None => count_of_device
                                .query_row(params![sample.model, sample.device], |r| {
                                    r.get::<_, i64>(0)
                                })
                                .map_err(backend)? as u64,
                        };
                        if waiting >= bounds.per_model || of_device >= bounds.per_device {
                            sample.review = None;
                            added.review_overflow += 1;
                        }
                        open.insert(sample.model.clone(), waiting);
                        open_of_device.insert(device_key.clone(), of_device);
                    }
                    let body = encode_stored("a sample", &*sample)?;
                    let n = insert
                        .execute(params![
                            sample.device,
                            sample.model,
                            sample.sample.id,
                            sample.version,
                            sample.received_at,
                            review_column(sample),
                            body
                        ])
                        .map_err(backend)?;
                    added.stored += n as u64;
                    if n > 0 && sample.review.is_some() {
                        added.queued_for_review += 1;
                        if let Some(waiting) = open.get_mut(&sample.model) {
                            *waiting += 1;
                        }
                        if let Some(waiting) = open_of_device.get_mut(&device_key) {
                            *waiting += 1;
                        }
                    }
                }
            }
            tx.commit().map_err(backend)?;
            Ok(added)
        })
        .await
    }

    async fn samples(&self, filter: &SampleFilter) -> Result<Vec<StoredSample>> {
        let f = filter.clone();
        let bodies = self
            .read(move |c| {
                let mut statement = c
                    .prepare_cached(
                        "SELECT body FROM samples
                         WHERE (?1 IS NULL OR model = ?1) AND (?2 IS NULL OR version = ?2)
                           AND (?3 IS NULL OR device = ?3) AND (?4 IS NULL OR review = ?4)
                         ORDER BY received_at DESC, device, id LIMIT ?5",
                    )
                    .map_err(backend)?;
                let rows = statement
                    .query_map(
                        params![
                            f.model,
                            f.version,
                            f.device,
                            f.review.map(ReviewState::as_str),
                            i64::from(f.limit)
                        ],
                        |r| r.get::<_, String>(0),
                    )
                    .map_err(backend)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
            })
            .await?;
        collect(bodies)
    }

    async fn sample(&self, device: &str, model: &str, id: &str) -> Result<Option<StoredSample>> {
        let key = (device.to_owned(), model.to_owned(), id.to_owned());
        let body = self
            .read(move |c| {
                c.query_row(
                    "SELECT body FROM samples WHERE device = ?1 AND model = ?2 AND id = ?3",
                    params![key.0, key.1, key.2],
                    |r| r.get::<_, String>(0),
                )
                .optional()
                .map_err(backend)
            })
            .await?;
        body.map(|b| decode_stored("sample", &b)).transpose()
    }

    async fn close_review(&self, closed: &StoredSample) -> Result<bool> {
        let body = encode_stored("a sample", closed)?;
        let closed = closed.clone();
        self.write(move |c| {
            c.execute(
                "UPDATE samples SET review = ?4, body = ?5
                 WHERE device = ?1 AND model = ?2 AND id = ?3 AND review = 'open'",
                params![
                    closed.device,
                    closed.model,
                    closed.sample.id,
                    review_column(&closed),
                    body
                ],
            )
            .map(|n| n > 0)
            .map_err(backend)
        })
        .await
    }

    async fn prune_samples(&self, before: i64) -> Result<u64> {
        self.write(move |c| {
            c.execute(
                "DELETE FROM samples WHERE received_at < ?1",
                params![before],
            )
            .map(|n| n as u64)
            .map_err(backend)
        })
        .await
    }
}
