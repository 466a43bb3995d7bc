//! The inventory: devices, their enrollment and credentials, groups.

use super::*;
use crate::store::{DevicePage, DevicePageQuery, DeviceStore};

#[async_trait]
impl DeviceStore for PostgresStore {
    async fn add_device(
        &self,
        device: &NewDevice,
        enrollment_hash: &str,
        expires_at: i64,
        now: i64,
        renew: bool,
    ) -> Result<()> {
        let tags = tags_json(&device.tags)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let existing: Option<Option<i64>> = tx
            .query_opt(
                "SELECT enrolled_at FROM devices WHERE id = $1 FOR UPDATE",
                &[&device.id.as_str()],
            )
            .await
            .map_err(pg)?
            .map(|r| r.get(0));
        match judge_add_device(&device.id, existing, renew)? {
            AddDevice::Insert => {
                let inserted = tx
                    .execute(
                        "INSERT INTO devices (id, grp, tags, created_at, enrollment_hash, enrollment_expires_at)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                        &[&device.id.as_str(), &device.group, &tags, &now, &enrollment_hash, &expires_at],
                    )
                    .await;
                match inserted {
                    Ok(_) => {
                        tx.execute(
                            "INSERT INTO device_tally (grp, n) VALUES ($1, 1)",
                            &[&device.group],
                        )
                        .await
                        .map_err(pg)?;
                    }
                    // Another replica added it between our check and insert.
                    Err(e) if is_unique_violation(&e) => {
                        return Err(StoreError::Conflict {
                            what: format!("device {}", device.id),
                        });
                    }
                    Err(e) => return Err(pg(e)),
                }
            }
            AddDevice::RenewToken => {
                tx.execute(
                    "UPDATE devices SET enrollment_hash = $2, enrollment_expires_at = $3 WHERE id = $1",
                    &[&device.id.as_str(), &enrollment_hash, &expires_at],
                )
                .await
                .map_err(pg)?;
            }
        }
        tx.commit().await.map_err(pg)
    }

    async fn enroll(
        &self,
        id: &DeviceId,
        enrollment_hash: &str,
        credential_hash: &str,
        mosquitto_hash: &str,
        public_key: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let row: Option<(Option<String>, Option<i64>, Option<i64>)> = tx
            .query_opt(
                "SELECT enrollment_hash, enrollment_expires_at, enrolled_at FROM devices
                 WHERE id = $1 FOR UPDATE",
                &[&id.as_str()],
            )
            .await
            .map_err(pg)?
            .map(|r| (r.get(0), r.get(1), r.get(2)));
        crate::store::judge_enrollment(row, enrollment_hash, now)
            .map_err(|reason| StoreError::Enrollment { reason })?;
        tx.execute(
            "UPDATE devices SET enrollment_hash = NULL, enrollment_expires_at = NULL,
             enrolled_at = $2, credential_hash = $3, mosquitto_hash = $4, public_key = $5
             WHERE id = $1",
            &[
                &id.as_str(),
                &now,
                &credential_hash,
                &mosquitto_hash,
                &public_key,
            ],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn device_public_key(&self, id: &DeviceId) -> Result<Option<String>> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT public_key FROM devices WHERE id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(pg)?
            .and_then(|r| r.get::<_, Option<String>>(0)))
    }

    async fn device(&self, id: &DeviceId) -> Result<Option<Device>> {
        self.client()
            .await?
            .query_opt(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"),
                &[&id.as_str()],
            )
            .await
            .map_err(pg)?
            .as_ref()
            .map(device_row)
            .transpose()
    }

    async fn devices_named(&self, ids: &[DeviceId]) -> Result<Vec<Device>> {
        let ids: Vec<&str> = ids.iter().map(DeviceId::as_str).collect();
        self.client()
            .await?
            .query(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ANY($1) ORDER BY id"),
                &[&ids],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(device_row)
            .collect()
    }

    async fn devices(&self, filter: &DeviceFilter) -> Result<Vec<Device>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {DEVICE_COLUMNS} FROM devices
                     WHERE ($1::text IS NULL OR grp = $1) ORDER BY id"
                ),
                &[&filter.group],
            )
            .await
            .map_err(pg)?;
        let devices = rows.iter().map(device_row).collect::<Result<Vec<_>>>()?;
        Ok(devices
            .into_iter()
            .filter(|d| filter.tag_matches(d))
            .collect())
    }

    async fn reported_states(&self, since: Option<i64>) -> Result<Vec<(DeviceId, Reported)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, reported FROM devices
                 WHERE reported IS NOT NULL AND ($1::bigint IS NULL OR reported_at >= $1)
                 ORDER BY id",
                &[&since],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let id = row.get::<_, String>(0);
                let reported = device_document(&id, "reported state", row.get(1))?;
                Some((DeviceId::new(id).ok()?, reported))
            })
            .collect())
    }

    async fn device_page(&self, query: &DevicePageQuery) -> Result<DevicePage> {
        // The conditions (`$1` to `$6`), shared by the page and its count.
        const MATCHES: &str = "($1::text IS NULL OR grp = $1)
             AND ($2::text IS NULL OR (jsonb_exists(tags::jsonb, $2)
                  AND ($3::text IS NULL OR tags::jsonb ->> $2 = $3)))
             AND ($4::bool IS NULL OR ($4 AND last_seen >= $5)
                  OR (NOT $4 AND (last_seen IS NULL OR last_seen < $5)))
             AND ($6::text IS NULL OR strpos(lower(id), $6) > 0 OR strpos(lower(grp), $6) > 0
                  OR strpos(lower(tags), $6) > 0)";
        let (tag_key, tag_value) = match &query.filter.tag {
            Some((k, v)) => (Some(k.as_str()), v.as_deref()),
            None => (None, None),
        };
        let limit = i64::from(query.limit);
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &query.filter.group,
            &tag_key,
            &tag_value,
            &query.online,
            &query.online_since,
            &query.text,
            &query.after,
            &limit,
        ];
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {DEVICE_COLUMNS} FROM devices WHERE {MATCHES}
                     AND ($7::text IS NULL OR id > $7) ORDER BY id LIMIT $8"
                ),
                &args,
            )
            .await
            .map_err(pg)?;
        let devices = rows.iter().map(device_row).collect::<Result<Vec<_>>>()?;
        let total = if query.only_by_group() {
            client
                .query_one(
                    "SELECT COALESCE(SUM(n), 0)::BIGINT FROM device_tally
                     WHERE $1::text IS NULL OR grp = $1",
                    &[&query.filter.group],
                )
                .await
        } else {
            client
                .query_one(
                    &format!("SELECT COUNT(*) FROM devices WHERE {MATCHES}"),
                    &args[..6],
                )
                .await
        }
        .map_err(pg)?
        .get::<_, i64>(0)
        .max(0) as u64;
        let groups = client
            .query(crate::store::GROUPS_SQL, &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        Ok(DevicePage {
            devices,
            total,
            groups,
        })
    }

    async fn device_counts(&self, online_since: i64) -> Result<(u64, u64)> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE last_seen >= $1) FROM devices",
                &[&online_since],
            )
            .await
            .map_err(pg)?;
        Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
    }

    async fn update_device(
        &self,
        id: &DeviceId,
        group: Option<&str>,
        tags: Option<&BTreeMap<String, String>>,
    ) -> Result<()> {
        let tags = tags.map(tags_json).transpose()?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let Some(before) = tx
            .query_opt(
                "SELECT grp FROM devices WHERE id = $1 FOR UPDATE",
                &[&id.as_str()],
            )
            .await
            .map_err(pg)?
            .map(|r| r.get::<_, String>(0))
        else {
            return Err(StoreError::NotFound {
                what: format!("device {id}"),
            });
        };
        tx.execute(
            "UPDATE devices SET grp = COALESCE($2, grp), tags = COALESCE($3, tags) WHERE id = $1",
            &[&id.as_str(), &group, &tags],
        )
        .await
        .map_err(pg)?;
        if let Some(group) = group.filter(|g| *g != before) {
            tx.execute(
                "INSERT INTO device_tally (grp, n) VALUES ($1, -1), ($2, 1)",
                &[&before, &group],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)
    }

    async fn remove_device(&self, id: &DeviceId) -> Result<()> {
        let removed = self
            .client()
            .await?
            .execute(
                "WITH gone AS (DELETE FROM devices WHERE id = $1 RETURNING grp)
                 INSERT INTO device_tally (grp, n) SELECT grp, -1 FROM gone",
                &[&id.as_str()],
            )
            .await
            .map_err(pg)?;
        if removed == 0 {
            return Err(StoreError::NotFound {
                what: format!("device {id}"),
            });
        }
        Ok(())
    }

    async fn compact_device_tally(&self) -> Result<usize> {
        // Rows another compaction deletes first are skipped by this one's delete (it waits for
        // theirs, then finds them gone), so each change is summed once.
        let client = self.client().await?;
        let compact: bool = client
            .query_one(
                "SELECT COUNT(*) = COUNT(DISTINCT grp) FROM device_tally",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        if compact {
            return Ok(0);
        }
        let replaced = client
            .query_one(
                "WITH gone AS (DELETE FROM device_tally RETURNING grp, n),
                      kept AS (INSERT INTO device_tally (grp, n)
                               SELECT grp, SUM(n) FROM gone GROUP BY grp HAVING SUM(n) <> 0)
                 SELECT COUNT(*) FROM gone",
                &[],
            )
            .await
            .map_err(pg)?
            .get::<_, i64>(0);
        Ok(usize::try_from(replaced).unwrap_or(0))
    }

    async fn device_by_credential(&self, hash: &str) -> Result<Option<DeviceId>> {
        self.client()
            .await?
            .query_opt(
                "SELECT id FROM devices WHERE credential_hash = $1",
                &[&hash],
            )
            .await
            .map_err(pg)?
            .map(|r| DeviceId::new(r.get::<_, String>(0)).map_err(backend))
            .transpose()
    }

    async fn mqtt_credentials(&self) -> Result<Vec<(DeviceId, String)>> {
        self.client()
            .await?
            .query(
                "SELECT id, mosquitto_hash FROM devices WHERE mosquitto_hash IS NOT NULL ORDER BY id",
                &[],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| Ok((DeviceId::new(r.get::<_, String>(0)).map_err(backend)?, r.get(1))))
            .collect()
    }

    async fn groups(&self) -> Result<BTreeMap<String, u64>> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT grp, COUNT(*) FROM devices GROUP BY grp ORDER BY grp",
                &[],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .collect())
    }
}
