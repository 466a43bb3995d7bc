//! The sampled prediction log and its review queue.

use std::collections::BTreeMap as Counts;

use super::*;
use crate::samples::{ReviewBounds, ReviewState, SampleFilter, StoredSample};
use crate::store::{SampleStore, SamplesAdded};

fn review_column(s: &StoredSample) -> Option<&'static str> {
    s.review.as_ref().map(|r| r.state.as_str())
}

fn sample_of(row: &Row) -> Result<StoredSample> {
    decode_stored("sample", row.get::<_, &str>(0))
}

#[async_trait]
impl SampleStore for PostgresStore {
    async fn add_samples(
        &self,
        samples: &[StoredSample],
        bounds: ReviewBounds,
    ) -> Result<SamplesAdded> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let count = tx
            .prepare("SELECT COUNT(*) FROM samples WHERE review = 'open' AND model = $1")
            .await
            .map_err(pg)?;
        let count_of_device = tx
            .prepare(
                "SELECT COUNT(*) FROM samples WHERE review = 'open' AND model = $1 AND device = $2",
            )
            .await
            .map_err(pg)?;
        let insert = tx
            .prepare(
                "INSERT INTO samples (device, model, id, version, received_at, review, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(pg)?;
        let mut added = SamplesAdded::default();
        // Counted once per model and call, then kept up to date here: concurrent uploads may
        // pass the bound by what they add together, which is as exact as a queue bound needs.
        let mut open: Counts<String, u64> = Counts::new();
        let mut open_of_device: Counts<(String, String), u64> = Counts::new();
        for sample in samples {
            let mut sample = sample.clone();
            let device_key = (sample.model.clone(), sample.device.clone());
            if sample.review.is_some() {
                let waiting = match open.get(&sample.model) {
                    Some(n) => *n,
                    None => {
                        let n: i64 = tx
                            .query_one(&count, &[&sample.model])
                            .await
                            .map_err(pg)?
                            .get(0);
                        n as u64
                    }
                };
                let of_device = match open_of_device.get(&device_key) {
                    Some(n) => *n,
                    None => {
                        let n: i64 = tx
                            .query_one(&count_of_device, &[&sample.model, &sample.device])
                            .await
                            .map_err(pg)?
                            .get(0);
                        n as u64
                    }
                };
                if waiting >= bounds.per_model || of_device >= bounds.per_device {
                    sample.review = None;
                    added.review_overflow += 1;
                }
                open.insert(sample.model.clone(), waiting);
                open_of_device.insert(device_key.clone(), of_device);
            }
            let body = encode_stored("a sample", &sample)?;
            let n = tx
                .execute(
                    &insert,
                    &[
                        &sample.device,
                        &sample.model,
                        &sample.sample.id,
                        &sample.version,
                        &sample.received_at,
                        &review_column(&sample),
                        &body,
                    ],
                )
                .await
                .map_err(pg)?;
            added.stored += n;
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
        tx.commit().await.map_err(pg)?;
        Ok(added)
    }

    async fn samples(&self, filter: &SampleFilter) -> Result<Vec<StoredSample>> {
        self.client()
            .await?
            .query(
                "SELECT body FROM samples
                 WHERE ($1::text IS NULL OR model = $1) AND ($2::text IS NULL OR version = $2)
                   AND ($3::text IS NULL OR device = $3) AND ($4::text IS NULL OR review = $4)
                 ORDER BY received_at DESC, device, id LIMIT $5",
                &[
                    &filter.model,
                    &filter.version,
                    &filter.device,
                    &filter.review.map(ReviewState::as_str),
                    &i64::from(filter.limit),
                ],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(sample_of)
            .collect()
    }

    async fn sample(&self, device: &str, model: &str, id: &str) -> Result<Option<StoredSample>> {
        self.client()
            .await?
            .query_opt(
                "SELECT body FROM samples WHERE device = $1 AND model = $2 AND id = $3",
                &[&device, &model, &id],
            )
            .await
            .map_err(pg)?
            .as_ref()
            .map(sample_of)
            .transpose()
    }

    async fn close_review(&self, closed: &StoredSample) -> Result<bool> {
        let body = encode_stored("a sample", closed)?;
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE samples SET review = $4, body = $5
                 WHERE device = $1 AND model = $2 AND id = $3 AND review = 'open'",
                &[
                    &closed.device,
                    &closed.model,
                    &closed.sample.id,
                    &review_column(closed),
                    &body,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(n > 0)
    }

    async fn prune_samples(&self, before: i64) -> Result<u64> {
        self.client()
            .await?
            .execute("DELETE FROM samples WHERE received_at < $1", &[&before])
            .await
            .map_err(pg)
    }
}
