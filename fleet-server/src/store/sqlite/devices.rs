//! The inventory: devices, their enrollment and credentials, groups.

use super::*;
use crate::store::{DevicePage, DevicePageQuery, DeviceStore};

/// Whether `device_tally` holds one row per group (nothing to fold).
fn tally_is_folded(c: &Connection) -> Result<bool> {
    c.query_row(
        "SELECT COUNT(*) = COUNT(DISTINCT grp) FROM device_tally",
        [],
        |r| r.get(0),
    )
    .map_err(backend)
}

#[async_trait]
impl DeviceStore for SqliteStore {
    async fn add_device(
        &self,
        device: &NewDevice,
        enrollment_hash: &str,
        expires_at: i64,
        now: i64,
        renew: bool,
    ) -> Result<()> {
        let device = device.clone();
        let hash = enrollment_hash.to_owned();
        self.write(move |c| {
            let tags = tags_json(&device.tags)?;
            let existing: Option<Option<i64>> = c
                .query_row(
                    "SELECT enrolled_at FROM devices WHERE id = ?1",
                    params![device.id.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            match judge_add_device(&device.id, existing, renew)? {
                AddDevice::Insert => {
                    let tx = c.savepoint().map_err(backend)?;
                    tx.execute(
                        "INSERT INTO devices (id, grp, tags, created_at, enrollment_hash, enrollment_expires_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![device.id.as_str(), device.group, tags, now, hash, expires_at],
                    )
                    .map_err(backend)?;
                    tx.execute(
                        "INSERT INTO device_tally (grp, n) VALUES (?1, 1)",
                        params![device.group],
                    )
                    .map_err(backend)?;
                    tx.commit().map_err(backend)?;
                }
                AddDevice::RenewToken => {
                    c.execute(
                        "UPDATE devices SET enrollment_hash = ?2, enrollment_expires_at = ?3 WHERE id = ?1",
                        params![device.id.as_str(), hash, expires_at],
                    )
                    .map_err(backend)?;
                }
            }
            Ok(())
        })
        .await
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
        let id = id.clone();
        let (enrollment_hash, credential_hash, mosquitto_hash) = (
            enrollment_hash.to_owned(),
            credential_hash.to_owned(),
            mosquitto_hash.to_owned(),
        );
        let public_key = public_key.map(str::to_owned);
        self.write(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let row: Option<(Option<String>, Option<i64>, Option<i64>)> = tx
                .query_row(
                    "SELECT enrollment_hash, enrollment_expires_at, enrolled_at FROM devices WHERE id = ?1",
                    params![id.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(backend)?;
            crate::store::judge_enrollment(row, &enrollment_hash, now)
            .map_err(|reason| StoreError::Enrollment { reason })?;
            tx.execute(
                "UPDATE devices SET enrollment_hash = NULL, enrollment_expires_at = NULL,
                 enrolled_at = ?2, credential_hash = ?3, mosquitto_hash = ?4, public_key = ?5
                 WHERE id = ?1",
                params![id.as_str(), now, credential_hash, mosquitto_hash, public_key],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn device_public_key(&self, id: &DeviceId) -> Result<Option<String>> {
        let id = id.clone();
        self.read(move |c| {
            c.query_row(
                "SELECT public_key FROM devices WHERE id = ?1",
                params![id.as_str()],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(backend)
        })
        .await
    }

    async fn device(&self, id: &DeviceId) -> Result<Option<Device>> {
        let id = id.clone();
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"),
                params![id.as_str()],
                device_row,
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn devices_named(&self, ids: &[DeviceId]) -> Result<Vec<Device>> {
        let ids: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
        self.read(move |c| {
            // One statement, one lookup by primary key per id, in the one read.
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1"
                ))
                .map_err(backend)?;
            let mut devices = Vec::new();
            for id in &ids {
                if let Some(device) = stmt
                    .query_row(params![id], device_row)
                    .optional()
                    .map_err(backend)?
                {
                    devices.push(device);
                }
            }
            devices.sort_by(|a, b| a.id.cmp(&b.id));
            devices.dedup_by(|a, b| a.id == b.id);
            Ok(devices)
        })
        .await
    }

    async fn devices(&self, filter: &DeviceFilter) -> Result<Vec<Device>> {
        let filter = filter.clone();
        self.read(move |c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {DEVICE_COLUMNS} FROM devices
                     WHERE (?1 IS NULL OR grp = ?1) ORDER BY id"
                ))
                .map_err(backend)?;
            let devices = stmt
                .query_map(params![filter.group], device_row)
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            Ok(devices
                .into_iter()
                .filter(|d| filter.tag_matches(d))
                .collect())
        })
        .await
    }

    async fn reported_states(&self, since: Option<i64>) -> Result<Vec<(DeviceId, Reported)>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT id, reported FROM devices
                     WHERE reported IS NOT NULL AND (?1 IS NULL OR reported_at >= ?1) ORDER BY id",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![since], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
                })
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            Ok(rows
                .into_iter()
                .filter_map(|(id, text)| {
                    let reported = device_document(&id, "reported state", text)?;
                    Some((DeviceId::new(id).ok()?, reported))
                })
                .collect())
        })
        .await
    }

    async fn device_page(&self, query: &DevicePageQuery) -> Result<DevicePage> {
        let q = query.clone();
        self.read(move |c| {
            // The conditions (`?1` to `?6`), shared by the page and its count.
            const MATCHES: &str = "(?1 IS NULL OR grp = ?1)
                 AND (?2 IS NULL OR EXISTS (SELECT 1 FROM json_each(devices.tags) AS t
                      WHERE t.key = ?2 AND (?3 IS NULL OR t.value = ?3)))
                 AND (?4 IS NULL OR (?4 = 1 AND last_seen >= ?5)
                      OR (?4 = 0 AND (last_seen IS NULL OR last_seen < ?5)))
                 AND (?6 IS NULL OR instr(lower(id), ?6) > 0 OR instr(lower(grp), ?6) > 0
                      OR instr(lower(tags), ?6) > 0)";
            let (tag_key, tag_value) = match &q.filter.tag {
                Some((k, v)) => (Some(k.clone()), v.clone()),
                None => (None, None),
            };
            let args = params![
                q.filter.group,
                tag_key,
                tag_value,
                q.online,
                q.online_since,
                q.text,
                q.after,
                i64::from(q.limit),
            ];
            let devices = c
                .prepare(&format!(
                    "SELECT {DEVICE_COLUMNS} FROM devices WHERE {MATCHES}
                     AND (?7 IS NULL OR id > ?7) ORDER BY id LIMIT ?8"
                ))
                .map_err(backend)?
                .query_map(args, device_row)
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            let total = if q.only_by_group() {
                c.query_row(
                    "SELECT COALESCE(SUM(n), 0) FROM device_tally WHERE ?1 IS NULL OR grp = ?1",
                    params![q.filter.group],
                    |r| r.get::<_, i64>(0),
                )
            } else {
                c.query_row(
                    &format!("SELECT COUNT(*) FROM devices WHERE {MATCHES}"),
                    &args[..6],
                    |r| r.get::<_, i64>(0),
                )
            }
            .map_err(backend)?
            .max(0) as u64;
            let groups = c
                .prepare_cached(crate::store::GROUPS_SQL)
                .map_err(backend)?
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            Ok(DevicePage {
                devices,
                total,
                groups,
            })
        })
        .await
    }

    async fn device_counts(&self, online_since: i64) -> Result<(u64, u64)> {
        self.read(move |c| {
            c.query_row(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE last_seen >= ?1) FROM devices",
                [online_since],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(backend)
        })
        .await
    }

    async fn update_device(
        &self,
        id: &DeviceId,
        group: Option<&str>,
        tags: Option<&BTreeMap<String, String>>,
    ) -> Result<()> {
        let id = id.clone();
        let group = group.map(str::to_owned);
        let tags = tags.map(tags_json).transpose()?;
        self.write(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let before: Option<String> = tx
                .query_row(
                    "SELECT grp FROM devices WHERE id = ?1",
                    params![id.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            let Some(before) = before else {
                return Err(StoreError::NotFound {
                    what: format!("device {id}"),
                });
            };
            tx.execute(
                "UPDATE devices SET grp = COALESCE(?2, grp), tags = COALESCE(?3, tags) WHERE id = ?1",
                params![id.as_str(), group, tags],
            )
            .map_err(backend)?;
            if let Some(group) = group.filter(|g| *g != before) {
                tx.execute(
                    "INSERT INTO device_tally (grp, n) VALUES (?1, -1), (?2, 1)",
                    params![before, group],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn remove_device(&self, id: &DeviceId) -> Result<()> {
        let id = id.clone();
        self.write(move |c| {
            let tx = c.savepoint().map_err(backend)?;
            let group: Option<String> = tx
                .query_row(
                    "DELETE FROM devices WHERE id = ?1 RETURNING grp",
                    params![id.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            let Some(group) = group else {
                return Err(StoreError::NotFound {
                    what: format!("device {id}"),
                });
            };
            tx.execute(
                "INSERT INTO device_tally (grp, n) VALUES (?1, -1)",
                params![group],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn compact_device_tally(&self) -> Result<usize> {
        // Asked first on a reader: folded already is the usual answer, and the single writer
        // (every device message's way into the store) is then not taken at all.
        if self.read(tally_is_folded).await? {
            return Ok(0);
        }
        self.write(|c| {
            if tally_is_folded(c)? {
                return Ok(0);
            }
            let tx = c.savepoint().map_err(backend)?;
            let summed = tx
                .prepare("SELECT grp, SUM(n) FROM device_tally GROUP BY grp HAVING SUM(n) <> 0")
                .map_err(backend)?
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            let replaced = tx
                .execute("DELETE FROM device_tally", [])
                .map_err(backend)?;
            for (group, n) in summed {
                tx.execute(
                    "INSERT INTO device_tally (grp, n) VALUES (?1, ?2)",
                    params![group, n],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)?;
            Ok(replaced)
        })
        .await
    }

    async fn device_by_credential(&self, hash: &str) -> Result<Option<DeviceId>> {
        let hash = hash.to_owned();
        self.read(move |c| {
            let id: Option<String> = c
                .query_row(
                    "SELECT id FROM devices WHERE credential_hash = ?1",
                    params![hash],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            id.map(|id| DeviceId::new(id).map_err(backend)).transpose()
        })
        .await
    }

    async fn mqtt_credentials(&self) -> Result<Vec<(DeviceId, String)>> {
        self.read(|c| {
            let mut stmt = c
                .prepare(
                    "SELECT id, mosquitto_hash FROM devices WHERE mosquitto_hash IS NOT NULL ORDER BY id",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            rows.into_iter()
                .map(|(id, hash)| Ok((DeviceId::new(id).map_err(backend)?, hash)))
                .collect()
        })
        .await
    }

    async fn groups(&self) -> Result<BTreeMap<String, u64>> {
        self.read(|c| {
            let mut stmt = c
                .prepare("SELECT grp, COUNT(*) FROM devices GROUP BY grp ORDER BY grp")
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })
                .map_err(backend)?
                .collect::<rusqlite::Result<BTreeMap<_, _>>>()
                .map_err(backend)?;
            Ok(rows)
        })
        .await
    }
}
