//! The server's state behind one trait, so callers never see which database holds it. SQLite
//! ([`sqlite::SqliteStore`]) is the default; PostgreSQL ([`postgres::PostgresStore`]) carries
//! several servers sharing one database. Both speak the same schema and the same SQL but for
//! placeholders and a few functions, and one test suite (`tests/store.rs`) runs against both.
//!
//! Times are Unix seconds. Device documents (reported and desired state, events, metrics
//! batches) cross this boundary as the protocol crate's types, validated before they are
//! stored; the database keeps them as JSON text, and reading one back decodes it again, so no
//! caller ever parses a document by hand.

pub mod postgres;
pub(crate) mod rollout_rows;
pub mod rollups;
pub mod sqlite;

use std::collections::BTreeMap;

use async_trait::async_trait;
use edgefleet_protocol::DeviceId;
use edgefleet_protocol::message::{Desired, MetricsBatch, Reported};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth::Role;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{what} already exists")]
    Conflict { what: String },
    #[error("enrollment refused: {reason}")]
    Enrollment { reason: EnrollRefusal },
    #[error("database error: {0}")]
    Backend(String),
}

/// Why a device's enrollment token was not accepted. Deliberately coarse towards the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnrollRefusal {
    #[error("unknown device or wrong token")]
    UnknownOrWrongToken,
    #[error("the token has expired; ask the operator for a new one (fleetctl device add --renew)")]
    Expired,
    #[error("the device is already enrolled; a token works once")]
    AlreadyEnrolled,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The schema, one entry per migration, applied in order once each and recorded in
/// `schema_migrations`. Both back-ends speak this SQL; `{id}` is each one's auto-increment key.
/// Never edit an entry that has shipped; add another.
const SCHEMA: &[&str] = &[
    // 1: tokens, devices, desired/reported, events, metrics, registry.
    "CREATE TABLE operator_tokens (
        {id},
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        grp TEXT NOT NULL,
        tags TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        enrollment_hash TEXT,
        enrollment_expires_at BIGINT,
        enrolled_at BIGINT,
        credential_hash TEXT UNIQUE,
        mosquitto_hash TEXT,
        last_seen BIGINT,
        agent_version TEXT,
        reported TEXT,
        reported_seq BIGINT NOT NULL DEFAULT 0,
        desired TEXT,
        desired_revision BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX devices_by_group ON devices (grp);
    CREATE TABLE assignments (
        device TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
        target TEXT NOT NULL,
        PRIMARY KEY (device, target)
    );
    CREATE TABLE events (
        device TEXT NOT NULL,
        message_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at BIGINT NOT NULL,
        message TEXT NOT NULL,
        PRIMARY KEY (device, message_id)
    );
    CREATE INDEX events_by_time ON events (at);
    CREATE TABLE metrics_batches (
        device TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at BIGINT NOT NULL,
        batch TEXT NOT NULL,
        PRIMARY KEY (device, seq)
    );
    CREATE TABLE releases (
        target TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        version TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        sha256 TEXT NOT NULL,
        length BIGINT NOT NULL,
        stage TEXT NOT NULL,
        pushed_by TEXT NOT NULL,
        pushed_at BIGINT NOT NULL,
        UNIQUE (model, version)
    );",
    // 2: rollouts, each stored whole as JSON beside the columns queries filter on.
    "CREATE TABLE rollouts (
        id TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        active BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX rollouts_active ON rollouts (active, created_at);",
    // 3: optimistic concurrency on rollouts; leases for work one server does for all.
    "ALTER TABLE rollouts ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );",
    // 4: the TUF repository's metadata files, shared by every server (see tufhost.rs);
    // `version` is the TUF version of timestamp.json, which publications compare and set.
    "CREATE TABLE tuf_metadata (
        file TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        version BIGINT NOT NULL
    );",
    // 5: telemetry read back in arrival order (`received`, Unix microseconds) and pruned by age.
    "ALTER TABLE metrics_batches ADD COLUMN received BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX metrics_by_time ON metrics_batches (at);
    CREATE INDEX metrics_by_arrival ON metrics_batches (device, received);",
    // 6: the device's own public key (hex ed25519), registered at enrollment; its messages must
    // then be sealed with it (edgefleet-sealed). NULL: enrolled before keys, plain messages.
    "ALTER TABLE devices ADD COLUMN public_key TEXT;",
    // 7: the audit log (crate::audit), each entry whole as JSON beside the columns queries
    // filter on; `seq` is the chain's sequence number, assigned under a lock.
    "CREATE TABLE audit (
        seq BIGINT PRIMARY KEY,
        at BIGINT NOT NULL,
        actor TEXT NOT NULL,
        route TEXT NOT NULL,
        body TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_by_time ON audit (at);
    CREATE INDEX audit_by_actor ON audit (actor, seq);",
    // 8: alerts the server raises (crate::alerts), whole as JSON beside the columns queries
    // filter on: open ones by fingerprint, due work (a fleet action, a webhook delivery).
    "CREATE TABLE alerts (
        {id},
        fingerprint TEXT NOT NULL,
        state TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        action_due BIGINT NOT NULL,
        notify_due BIGINT,
        body TEXT NOT NULL
    );
    CREATE INDEX alerts_by_fingerprint ON alerts (fingerprint, state);
    CREATE INDEX alerts_by_update ON alerts (updated_at);
    CREATE INDEX alerts_due ON alerts (action_due, notify_due);",
    // 9: ground truth uploaded to the server, waiting for the device that made the prediction
    // to fetch it (crate::api::feedback); `body` is the label or value as JSON.
    "CREATE TABLE labels (
        {id},
        device TEXT NOT NULL,
        model TEXT NOT NULL,
        body TEXT NOT NULL,
        received_at BIGINT NOT NULL
    );
    CREATE INDEX labels_by_device ON labels (device, id);
    CREATE INDEX labels_by_time ON labels (received_at);",
    // 10: the sampled prediction log devices send (crate::samples), each sample whole as JSON
    // beside the columns queries filter on; `review` is NULL for a plain sample, else where it
    // stands in the review queue.
    "CREATE TABLE samples (
        device TEXT NOT NULL,
        model TEXT NOT NULL,
        id TEXT NOT NULL,
        version TEXT NOT NULL,
        received_at BIGINT NOT NULL,
        review TEXT,
        body TEXT NOT NULL,
        PRIMARY KEY (device, model, id)
    );
    CREATE INDEX samples_by_model ON samples (model, received_at);
    CREATE INDEX samples_for_review ON samples (review, model, received_at);
    CREATE INDEX samples_by_time ON samples (received_at);",
    // 11: guard policies operators set per group and model (crate::guard_policies), in place of
    // the releases' signed ones for the server's judgement of that group.
    "CREATE TABLE group_guards (
        grp TEXT NOT NULL,
        model TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (grp, model)
    );",
    // 12: alerts change under several writers (a new occurrence, the engine's fleet action,
    // the notifier, an operator): each write must follow the version it read.
    "ALTER TABLE alerts ADD COLUMN row_version BIGINT NOT NULL DEFAULT 0;",
    // 13: what the registry keeps of each rollout with its release (who started and approved it,
    // how it ended, its champion–challenger verdicts), beside the whole rollout so that listing
    // releases reads a few hundred bytes per rollout, not its device list. Rollouts saved before
    // this have none until they are saved again.
    "ALTER TABLE rollouts ADD COLUMN target TEXT;
    ALTER TABLE rollouts ADD COLUMN record TEXT;
    CREATE INDEX rollouts_by_target ON rollouts (target);",
    // 14: telemetry rollups (crate::telemetry::rollups): each batch is folded once (`rolled`),
    // in the transaction that stores the rows it went into. Batches stored before this are
    // folded by the first passes after the upgrade.
    "ALTER TABLE metrics_batches ADD COLUMN rolled BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX metrics_to_roll_up ON metrics_batches (received) WHERE rolled = 0;
    CREATE TABLE telemetry_rollups (
        {id},
        grp TEXT NOT NULL,
        model TEXT NOT NULL,
        version TEXT NOT NULL,
        span BIGINT NOT NULL,
        bucket BIGINT NOT NULL,
        figures TEXT NOT NULL
    );
    CREATE INDEX rollups_by_bucket ON telemetry_rollups (span, bucket);",
    // 15: when each device's reported state was last stored (server time), so that the rollout
    // engine reads only the devices whose state changed since its last pass, not the fleet.
    "ALTER TABLE devices ADD COLUMN reported_at BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX devices_by_reported_at ON devices (reported_at);",
    // 16: a rollout's devices in rows of their own (crate::store::rollout_rows), so that a save
    // writes the devices that changed, not the whole fleet's list, and its summary as lists show
    // it, so that listing rollouts reads no devices. Rollouts saved before this keep their
    // devices in their body and have no summary until their next save.
    "CREATE TABLE rollout_devices (
        rollout TEXT NOT NULL,
        idx BIGINT NOT NULL,
        body TEXT NOT NULL,
        problem BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (rollout, idx)
    );
    ALTER TABLE rollouts ADD COLUMN summary TEXT;",
    // 17: the batches waiting to be folded into rollups in a narrow table of their own, in
    // place of the `rolled` mark. Marking a batch rewrote its whole row (about 2-4 kB) and every
    // index of it, as much write-ahead log again as storing it; taking a row out of this queue
    // writes a few bytes, and `metrics_batches` is only ever inserted into and pruned.
    "CREATE TABLE metrics_unrolled (
        device TEXT NOT NULL,
        seq BIGINT NOT NULL,
        received BIGINT NOT NULL,
        PRIMARY KEY (device, seq)
    );
    CREATE INDEX unrolled_by_arrival ON metrics_unrolled (received);
    INSERT INTO metrics_unrolled (device, seq, received)
        SELECT device, seq, received FROM metrics_batches WHERE rolled = 0;
    DROP INDEX metrics_to_roll_up;
    ALTER TABLE metrics_batches DROP COLUMN rolled;",
    // 18: how many devices each group has, kept as changes (+1 when a device joins a group, -1
    // when it leaves) written with the change itself and summed on reading; compaction folds
    // them into one row per group. Counting the devices themselves on PostgreSQL reads every
    // heap page their messages keep rewriting (~100 ms at 100,000 devices, for every page of
    // the device list); inserting changes never waits on a row another writer holds.
    "CREATE TABLE device_tally (
        grp TEXT NOT NULL,
        n BIGINT NOT NULL
    );
    INSERT INTO device_tally (grp, n) SELECT grp, COUNT(*) FROM devices GROUP BY grp;",
];

/// [`SCHEMA`] with a back-end's auto-increment key column.
pub(crate) fn migrations(id_column: &str) -> Vec<String> {
    SCHEMA
        .iter()
        .map(|m| m.replace("{id}", id_column))
        .collect()
}

/// The schema version this server knows (a database newer than it is refused).
const SCHEMA_VERSION: i64 = SCHEMA.len() as i64;

/// Opens the store the configuration names: SQLite (created if needed) or PostgreSQL.
pub async fn open(config: &crate::config::Config) -> Result<std::sync::Arc<dyn Store>> {
    use crate::config::Database;
    match config
        .database()
        .map_err(|e| StoreError::Backend(format!("database.url: {e}")))?
    {
        Database::Sqlite(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Backend(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            Ok(std::sync::Arc::new(sqlite::SqliteStore::open_with_readers(
                &path,
                config.database.sqlite_readers,
            )?))
        }
        Database::Postgres(url) => Ok(std::sync::Arc::new(
            postgres::PostgresStore::connect(
                &url,
                config.database.pool_size,
                config.database.ca_file.as_deref(),
            )
            .await?,
        )),
    }
}

/// A device as the operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub id: DeviceId,
    pub group: String,
    pub tags: BTreeMap<String, String>,
    pub created_at: i64,
    pub enrolled_at: Option<i64>,
    pub last_seen: Option<i64>,
    pub agent_version: Option<String>,
    /// The device's last reported state.
    pub reported: Option<Reported>,
    /// What the server last asked it to run.
    pub desired: Option<Desired>,
    pub desired_revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDevice {
    pub id: DeviceId,
    pub group: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    pub group: Option<String>,
    /// `key` or `key=value`.
    pub tag: Option<(String, Option<String>)>,
}

impl DeviceFilter {
    /// The tag condition (the group is filtered in SQL).
    pub(crate) fn tag_matches(&self, device: &Device) -> bool {
        match &self.tag {
            None => true,
            Some((key, None)) => device.tags.contains_key(key),
            Some((key, Some(value))) => device.tags.get(key) == Some(value),
        }
    }
}

/// One page of the device list ([`Store::device_page`]): the devices matching every condition
/// given, in id order, from just after `after`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevicePageQuery {
    pub filter: DeviceFilter,
    /// Heard from at or after `online_since` (`Some(true)`), or not (`Some(false)`).
    pub online: Option<bool>,
    pub online_since: i64,
    /// Lower-case text found in the id, the group or the tags (keys and values).
    pub text: Option<String>,
    /// The last id of the previous page.
    pub after: Option<String>,
    pub limit: u32,
}

impl DevicePageQuery {
    /// Whether only the group (if any) narrows it: its total is then the group tally's.
    pub(crate) fn only_by_group(&self) -> bool {
        self.filter.tag.is_none() && self.online.is_none() && self.text.is_none()
    }
}

/// What [`Store::device_page`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DevicePage {
    pub devices: Vec<Device>,
    /// Devices matching the conditions on every page.
    pub total: u64,
    /// Every group in the fleet, sorted (what a viewer can filter on).
    pub groups: Vec<String>,
}

/// Every group in the fleet, sorted: one step down the group index per group (a "skip scan",
/// the same SQL on both stores). `SELECT DISTINCT grp` visits every device's index entry, and on
/// PostgreSQL, while devices' rows are being rewritten as their messages arrive, every heap page
/// as well: ~100 ms at 100,000 devices, against ~1 ms for this (measured with `psql`).
pub(crate) const GROUPS_SQL: &str = "WITH RECURSIVE g (grp) AS (
        SELECT MIN(grp) FROM devices
        UNION ALL
        SELECT (SELECT MIN(grp) FROM devices WHERE grp > g.grp) FROM g WHERE g.grp IS NOT NULL
    )
    SELECT grp FROM g WHERE grp IS NOT NULL";

/// Whether a device row (`enrollment_hash`, `enrollment_expires_at`, `enrolled_at`) accepts the
/// token hashed as `presented` at `now`; both stores lock the row and then ask this.
pub(crate) fn judge_enrollment(
    row: Option<(Option<String>, Option<i64>, Option<i64>)>,
    presented: &str,
    now: i64,
) -> std::result::Result<(), EnrollRefusal> {
    match row {
        None | Some((None, _, None)) => Err(EnrollRefusal::UnknownOrWrongToken),
        Some((_, _, Some(_))) => Err(EnrollRefusal::AlreadyEnrolled),
        Some((Some(stored), _, None)) if stored != presented => {
            Err(EnrollRefusal::UnknownOrWrongToken)
        }
        Some((_, Some(expires), None)) if expires <= now => Err(EnrollRefusal::Expired),
        Some(_) => Ok(()),
    }
}

/// What registering `id` does, given its row (`None`: no such device; `Some(enrolled_at)`):
/// both stores lock the row, ask this, then write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddDevice {
    Insert,
    /// A new one-time token for a device that has not enrolled yet.
    RenewToken,
}

pub(crate) fn judge_add_device(
    id: &DeviceId,
    existing: Option<Option<i64>>,
    renew: bool,
) -> Result<AddDevice> {
    match (existing, renew) {
        (None, _) => Ok(AddDevice::Insert),
        (Some(None), true) => Ok(AddDevice::RenewToken),
        (Some(Some(_)), true) => Err(StoreError::Conflict {
            what: format!("device {id} is enrolled; remove it first to enroll it again"),
        }),
        (Some(_), false) => Err(StoreError::Conflict {
            what: format!("device {id}"),
        }),
    }
}

pub use edgefleet_protocol::api::Stage;

/// Who pushed a signed target, and what the registry says about it. The signed metadata stays
/// the authority on what exists; this adds the human side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub target: String,
    pub model: String,
    pub version: String,
    pub sequence: u64,
    pub sha256: String,
    pub length: u64,
    pub stage: Stage,
    pub pushed_by: String,
    pub pushed_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorToken {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: i64,
}

/// One stored device event, with when the server received it; newest first when listed. The
/// API returns it as it is stored.
pub use edgefleet_protocol::api::ReceivedEvent as StoredEvent;

/// One stored metrics batch (`device` and `seq` repeat the batch's, for readers of the API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMetrics {
    pub device: DeviceId,
    pub seq: u64,
    /// When it arrived, Unix microseconds.
    pub received_us: i64,
    pub batch: MetricsBatch,
}

impl StoredMetrics {
    pub fn received(batch: MetricsBatch, received_us: i64) -> Self {
        Self {
            device: batch.device.clone(),
            seq: batch.seq,
            received_us,
            batch,
        }
    }
}

/// A stored document of `what`, decoded. The protocol crate validated it before it was stored,
/// so failing here means the row was edited or written by a build with another message format;
/// the error names the row so an operator can find it.
pub(crate) fn decode_stored<T: DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Backend(format!("stored {what} cannot be read: {e}")))
}

/// A device's stored reported or desired state or metrics batch: one unreadable document must
/// not hide the whole fleet (or every figure) from the operator, so it reads as absent (and says
/// so in the log).
pub(crate) fn device_document<T: DeserializeOwned>(
    device: &str,
    what: &str,
    text: Option<String>,
) -> Option<T> {
    let text = text?;
    match serde_json::from_str(&text) {
        Ok(doc) => Some(doc),
        Err(e) => {
            tracing::warn!(device, what, error = %e, "a stored device document cannot be read; shown as absent");
            None
        }
    }
}

/// A document as the database keeps it.
pub(crate) fn encode_stored<T: Serialize>(what: &str, doc: &T) -> Result<String> {
    serde_json::to_string(doc)
        .map_err(|e| StoreError::Backend(format!("cannot encode {what}: {e}")))
}

/// Everything a server keeps: each part behind its own trait, so code that needs one part
/// (the engine: rollouts and device state) says so, and the backends keep one file per part.
#[async_trait]
pub trait Store:
    TokenStore
    + DeviceStore
    + StateStore
    + RegistryStore
    + RolloutStore
    + AuditStore
    + AlertStore
    + LabelStore
    + SampleStore
    + GroupGuardStore
    + rollups::RollupStore
    + Send
    + Sync
    + std::fmt::Debug
{
    /// Fails when the database cannot answer (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    /// The store as the broker ingester should use it, if not this one: on PostgreSQL, one that
    /// holds at most half the pool's connections at once, so that however many device messages
    /// are being stored, operators and the rollout engine find a connection.
    fn for_ingester(&self) -> Option<std::sync::Arc<dyn Store>> {
        None
    }
}

/// Operator tokens.
#[async_trait]
pub trait TokenStore: Send + Sync {
    // Operator tokens.
    async fn create_operator_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        now: i64,
    ) -> Result<i64>;
    async fn operator_by_hash(&self, hash: &str) -> Result<Option<OperatorToken>>;
    async fn operator_tokens(&self) -> Result<Vec<OperatorToken>>;
    async fn revoke_operator_token(&self, id: i64, now: i64) -> Result<()>;
}

/// The inventory: devices, their enrollment and credentials, groups.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    // Devices.
    /// Registers a device that has not enrolled yet, with the hash of its one-time token.
    /// `renew` replaces the token of a device that has not enrolled yet.
    async fn add_device(
        &self,
        device: &NewDevice,
        enrollment_hash: &str,
        expires_at: i64,
        now: i64,
        renew: bool,
    ) -> Result<()>;
    /// Trades a one-time token for the device's credential (both stored hashed).
    async fn enroll(
        &self,
        id: &DeviceId,
        enrollment_hash: &str,
        credential_hash: &str,
        mosquitto_hash: &str,
        public_key: Option<&str>,
        now: i64,
    ) -> Result<()>;
    async fn device(&self, id: &DeviceId) -> Result<Option<Device>>;
    /// The devices of `ids` that exist, in id order: one read for many devices (the live
    /// stream's followed ones), not one each.
    async fn devices_named(&self, ids: &[DeviceId]) -> Result<Vec<Device>>;
    async fn devices(&self, filter: &DeviceFilter) -> Result<Vec<Device>>;
    /// Devices' reported states alone (what the rollout engine judges by, a fraction of a
    /// device's row), in id order: those stored at or after `since` (the `at` of
    /// [`StateStore::record_reported`]), or every one.
    async fn reported_states(&self, since: Option<i64>) -> Result<Vec<(DeviceId, Reported)>>;
    /// One page of the device list, filtered in the database: a viewer of a large fleet reads a
    /// page, not the fleet.
    async fn device_page(&self, query: &DevicePageQuery) -> Result<DevicePage>;
    /// Devices registered, and those heard from at or after `online_since` (unix seconds): two
    /// counts, not the devices (a scrape must not load the fleet).
    async fn device_counts(&self, online_since: i64) -> Result<(u64, u64)>;
    /// Folds the group tally's changes into one row per group (and drops groups at zero);
    /// returns how many rows it replaced. Safe beside writers and on every replica at once.
    async fn compact_device_tally(&self) -> Result<usize>;
    async fn update_device(
        &self,
        id: &DeviceId,
        group: Option<&str>,
        tags: Option<&BTreeMap<String, String>>,
    ) -> Result<()>;
    async fn remove_device(&self, id: &DeviceId) -> Result<()>;
    async fn device_by_credential(&self, hash: &str) -> Result<Option<DeviceId>>;
    /// The public key a device registered at enrollment (hex), if it did.
    async fn device_public_key(&self, id: &DeviceId) -> Result<Option<String>>;
    /// Enrolled devices and their Mosquitto password hashes.
    async fn mqtt_credentials(&self) -> Result<Vec<(DeviceId, String)>>;
    /// Group name → number of devices.
    async fn groups(&self) -> Result<BTreeMap<String, u64>>;
}

/// What devices report and are told: reported and desired state, events, metrics.
#[async_trait]
pub trait StateStore: Send + Sync {
    // What devices say.
    /// Keeps `reported`, received at `at`, if its `seq` is above the last one stored; returns
    /// whether it did. A stored one moves the device's `last_seen` forward to `at`, as every
    /// stored device message does, in the same write.
    async fn record_reported(&self, reported: &Reported, at: i64) -> Result<bool>;
    /// Stores an event once per (device, message id); returns whether it was new. A new one
    /// moves the device's `last_seen` forward to its arrival (`event.at`).
    async fn record_event(&self, event: &StoredEvent) -> Result<bool>;
    async fn events(&self, id: Option<&DeviceId>, limit: u32) -> Result<Vec<StoredEvent>>;
    /// Stores a metrics batch once per (device, seq), received at `received_us` (Unix
    /// microseconds); returns whether it was new. A new one moves the device's `last_seen`
    /// forward to its arrival.
    async fn record_metrics(&self, batch: &MetricsBatch, received_us: i64) -> Result<bool>;
    /// Batches received at or after `since` (Unix seconds), of one device or all, in the order
    /// they arrived (one this server cannot read is left out).
    async fn metrics(&self, id: Option<&DeviceId>, since: i64) -> Result<Vec<StoredMetrics>>;
    /// Deletes the batches received before `before` (Unix seconds) that are folded into
    /// rollups; returns how many.
    async fn prune_metrics(&self, before: i64) -> Result<u64>;
    // What the server wants.
    /// Stores the device's new desired state (`desired.device`, at `desired.revision`) and
    /// remembers the targets it names, which the device may then download.
    async fn set_desired(&self, desired: &Desired) -> Result<()>;
    async fn all_desired(&self) -> Result<Vec<Desired>>;
    /// Whether the device was ever assigned `target` (so it may download it again to roll back).
    async fn is_assigned(&self, id: &DeviceId, target: &str) -> Result<bool>;
}

/// The model registry and the TUF repository's metadata.
#[async_trait]
pub trait RegistryStore: Send + Sync {
    // Registry.
    async fn record_release(&self, release: &Release) -> Result<()>;
    async fn releases(&self) -> Result<Vec<Release>>;
    async fn set_stage(&self, model: &str, version: &str, stage: Stage) -> Result<()>;
    // The TUF repository's metadata.
    /// A metadata file (`timestamp.json`, `N.snapshot.json`, ...), `None` when absent.
    async fn tuf_file(&self, file: &str) -> Result<Option<String>>;
    /// Stores one publication all at once: `timestamp.json` moves from version `based_on`
    /// (`None`: there is none yet) to `timestamp_version`, every other file is written or
    /// replaced. `Conflict` when timestamp.json is no longer at `based_on`: another server
    /// published first, and nothing was written.
    async fn publish_tuf(
        &self,
        files: Vec<(String, String)>,
        based_on: Option<u64>,
        timestamp_version: u64,
    ) -> Result<()>;
}

/// A rollout as lists show it, at a revision.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSummary {
    pub revision: u64,
    /// Its devices counted per wave, none listed ([`crate::rollout::DevicePage::NONE`]).
    pub view: crate::rollout::RolloutView,
}

/// Rollouts, and the leases that share background work between servers.
#[async_trait]
pub trait RolloutStore: Send + Sync {
    // Rollouts (the state machine is in `crate::rollout`; how they are kept in [`rollout_rows`]).
    /// Stores a new rollout (revision 0) or a change to the revision the store holds, and
    /// advances `rollout.revision`; `Conflict` if another server saved it in between (reload).
    async fn save_rollout(&self, rollout: &mut crate::rollout::Rollout) -> Result<()>;
    async fn rollout(&self, id: &str) -> Result<Option<crate::rollout::Rollout>>;
    /// The rollouts still running (neither completed nor aborted), newest first, whole: what
    /// the engine steps. Lists read [`RolloutStore::rollout_summaries`] instead.
    async fn active_rollouts(&self) -> Result<Vec<crate::rollout::Rollout>>;
    /// One rollout as the status view shows it: its state and counts, and the page of its
    /// devices `page` asks for, read without its other devices.
    async fn rollout_page(
        &self,
        id: &str,
        page: crate::rollout::DevicePage,
    ) -> Result<Option<crate::rollout::RolloutView>>;
    /// The newest `limit` rollouts as lists show them (state and counts, no devices), without
    /// reading their devices.
    async fn rollout_summaries(
        &self,
        active_only: bool,
        limit: usize,
    ) -> Result<Vec<RolloutSummary>>;
    /// The registry's record of each rollout of `target` (of every target: `None`), oldest
    /// first.
    async fn release_records(
        &self,
        target: Option<&str>,
    ) -> Result<Vec<crate::rollout::ReleaseRecord>>;
    // Work one server does for all (driving rollouts).
    /// Takes or renews the lease `name` for `holder` until `now_ms + ttl_ms`. False while
    /// another holder's lease has not expired.
    async fn lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool>;
    /// Gives the lease up if `holder` has it (at shutdown, so another server need not wait).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
    /// Names of leases starting with `prefix` (no `%` or `_` in it) that expired by `now_ms`
    /// or were given up: work a server that died or stopped left behind.
    async fn expired_leases(&self, prefix: &str, now_ms: i64) -> Result<Vec<String>>;
}

/// The conflict a TUF publication gets when another server published first.
pub(crate) fn concurrent_publication() -> StoreError {
    StoreError::Conflict {
        what: "a newer publication of the TUF repository".into(),
    }
}

/// The conflict a stale rollout save gets.
pub(crate) fn stale_rollout(id: &str) -> StoreError {
    StoreError::Conflict {
        what: format!(
            "a newer revision of rollout {id} (another server changed it; reload and retry)"
        ),
    }
}

/// Alerts ([`crate::alerts`]); the merging and state changes are there, these only keep them.
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// Stores a new alert; returns its id.
    async fn insert_alert(&self, alert: &crate::alerts::Alert) -> Result<i64>;
    /// Saves a changed alert under its id, if it is still at the `row_version` it was read at;
    /// `Conflict` when another writer changed it since (read it again and redo the change).
    async fn update_alert(&self, alert: &crate::alerts::Alert) -> Result<()>;
    async fn alert(&self, id: i64) -> Result<Option<crate::alerts::Alert>>;
    /// The open (firing or acknowledged) alert with this fingerprint, newest if several.
    async fn open_alert(&self, fingerprint: &str) -> Result<Option<crate::alerts::Alert>>;
    /// Alerts matching `filter`, newest change first.
    async fn alerts(
        &self,
        filter: &crate::alerts::AlertFilter,
    ) -> Result<Vec<crate::alerts::Alert>>;
    /// Alerts whose fleet action is still to be taken, oldest first.
    async fn alerts_action_due(&self, limit: u32) -> Result<Vec<crate::alerts::Alert>>;
    /// Alerts with a webhook delivery due at `now`, the longest waiting first.
    async fn alerts_notify_due(&self, now: i64, limit: u32) -> Result<Vec<crate::alerts::Alert>>;
}

/// Ground truth waiting for its devices, in arrival order per device.
#[async_trait]
pub trait LabelStore: Send + Sync {
    /// Queues labels (device, model, the label or value as JSON) in one transaction.
    async fn add_labels(&self, labels: &[(String, String, String)], now: i64) -> Result<u64>;
    /// A device's labels after `after` (a sequence number), oldest first: (seq, model, body).
    async fn labels_for(
        &self,
        device: &DeviceId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<(u64, String, String)>>;
    /// Drops a device's labels up to and including `through`; returns how many.
    async fn ack_labels(&self, device: &DeviceId, through: u64) -> Result<u64>;
    /// Drops labels no device fetched by `before` (Unix seconds); returns how many.
    async fn prune_labels(&self, before: i64) -> Result<u64>;
}

/// What [`SampleStore::add_samples`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SamplesAdded {
    /// New samples stored (a redelivered one is not stored twice).
    pub stored: u64,
    /// Of them, review items that entered the queue.
    pub queued_for_review: u64,
    /// Review items kept as plain samples because their model's queue was full.
    pub review_overflow: u64,
}

/// The sampled prediction log and its review queue.
#[async_trait]
pub trait SampleStore: Send + Sync {
    /// Stores each sample once per (device, model, id), in one transaction. A review item whose
    /// model, or whose device for that model, already has as many open as `bounds` allow is kept
    /// as a plain sample.
    async fn add_samples(
        &self,
        samples: &[crate::samples::StoredSample],
        bounds: crate::samples::ReviewBounds,
    ) -> Result<SamplesAdded>;
    /// Newest first, as the filter says.
    async fn samples(
        &self,
        filter: &crate::samples::SampleFilter,
    ) -> Result<Vec<crate::samples::StoredSample>>;
    async fn sample(
        &self,
        device: &str,
        model: &str,
        id: &str,
    ) -> Result<Option<crate::samples::StoredSample>>;
    /// Stores `closed` (whose review is labelled or dismissed) if its review is still open;
    /// false when it is not (someone else closed it first, or it never was a review item).
    async fn close_review(&self, closed: &crate::samples::StoredSample) -> Result<bool>;
    /// Drops samples received before `before` (Unix seconds); returns how many.
    async fn prune_samples(&self, before: i64) -> Result<u64>;
}

/// Guard policies set per group.
#[async_trait]
pub trait GroupGuardStore: Send + Sync {
    /// Sets (or replaces) the group's policy for the model.
    async fn set_group_guard(&self, guard: &crate::guard_policies::GroupGuard) -> Result<()>;
    /// Removes it; false when there was none.
    async fn clear_group_guard(&self, group: &str, model: &str) -> Result<bool>;
    /// Every group's, by group and model.
    async fn group_guards(&self) -> Result<Vec<crate::guard_policies::GroupGuard>>;
}

/// The audit log: appended under a lock so the chain has one order across servers.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Seals `record` after the newest entry (`crate::audit::seal`) and stores it.
    async fn append_audit(
        &self,
        record: crate::audit::AuditRecord,
    ) -> Result<crate::audit::AuditEntry>;
    /// Entries matching `filter`, newest first.
    async fn audit(
        &self,
        filter: &crate::audit::AuditFilter,
    ) -> Result<Vec<crate::audit::AuditEntry>>;
    /// Every entry kept, oldest first (for `crate::audit::verify`).
    async fn audit_chain(&self) -> Result<Vec<crate::audit::AuditEntry>>;
    /// Deletes entries older than `before` (Unix seconds); returns how many.
    async fn prune_audit(&self, before: i64) -> Result<u64>;
}
