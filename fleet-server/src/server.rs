//! Start-up: open the store, the artifact store and the TUF repository, start (or reach) the MQTT
//! broker, then serve HTTP until SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edgefleet_tuf::operator::Expiries;

use crate::api::{self, Shared};
use crate::artifacts::BlobStore;
use crate::auth::{self, Role, SecretKind};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::mqtt;
use crate::sessions::Sessions;
use crate::store::Store;
use crate::tufhost::TufHost;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot make the online TUF keys in {dir}: {detail}")]
    Keys { dir: PathBuf, detail: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Artifacts(#[from] crate::artifacts::ArtifactError),
    #[error(transparent)]
    Tuf(#[from] crate::tufhost::HostError),
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttError),
    #[error("cannot listen on {addr}: {source} (is another server running? change `listen`)")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    MetricsToken { path: PathBuf, detail: String },
    #[error("a secret could not be generated")]
    Random(#[from] auth::RandomError),
}

/// Names this process in leases and logs among servers sharing a database.
fn instance_id() -> Result<String, StartError> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let random: [u8; 4] = auth::random_bytes()?;
    Ok(format!(
        "{}-{}-{}",
        host.trim(),
        std::process::id(),
        hex::encode(random)
    ))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |source| StartError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes the online snapshot and timestamp keys on first start. They stay on this machine; the
/// operator's `fleetctl init --server` puts their public halves into root.json.
fn ensure_online_keys(dir: &Path) -> Result<(), StartError> {
    for role in ["snapshot", "timestamp"] {
        if !dir.join(format!("{role}.pem")).exists() {
            edgefleet_tuf::keys::generate(dir, role).map_err(|e| StartError::Keys {
                dir: dir.to_path_buf(),
                detail: e.to_string(),
            })?;
            tracing::info!(dir = %dir.display(), role, "generated an online TUF key");
        }
    }
    Ok(())
}

/// On a server with no operator token, writes a first admin token to `data_dir/admin.token`
/// (mode 0600) for `fleetctl login`.
async fn bootstrap_admin(store: &dyn Store, data_dir: &Path, now: i64) -> Result<(), StartError> {
    if !store.operator_tokens().await?.is_empty() {
        return Ok(());
    }
    let secret = auth::new_secret(SecretKind::Operator)?;
    let path = data_dir.join("admin.token");
    edgefleet_files::write_private(&path, format!("{secret}\n").as_bytes()).map_err(io(&path))?;
    store
        .create_operator_token(
            "bootstrap-admin",
            Role::Admin,
            &auth::secret_hash(&secret),
            now,
        )
        .await?;
    tracing::warn!(
        path = %path.display(),
        "no operator tokens yet: wrote a first admin token; `fleetctl login --token-file` it, then make named tokens and delete the file"
    );
    Ok(())
}

/// A server that is up: the HTTP listener is bound and the broker started (or dialled).
#[derive(Debug)]
pub struct Running {
    pub state: api::AppState,
    pub listener: tokio::net::TcpListener,
    /// The background tasks (broker client, rollout engine, lease renewal, pruning,
    /// re-signing), each stopping when `state.shutdown` is cancelled; [`serve`] joins them.
    pub tasks: tokio::task::JoinSet<()>,
}

/// Everything before serving: stores opened, keys present, broker up, listener bound.
/// This server's broker client id (and, on an external broker, its user name): `mqtt.client_id`;
/// else on an external broker the replica slot this data directory had before (so a restart
/// takes its own persistent session back), or the first slot free in the shared database. The
/// embedded broker lives in this process, so there the server's user name serves.
async fn mqtt_client_id(
    config: &Config,
    store: &dyn Store,
    instance: &str,
    clock: &dyn edgefleet_clock::Clock,
) -> Result<String, StartError> {
    match (&config.mqtt.url, &config.mqtt.client_id) {
        (None, _) => return Ok(config.mqtt.username.clone()),
        (Some(_), Some(id)) => return Ok(id.clone()),
        (Some(_), None) => {}
    }
    let users = config.mqtt.server_users();
    let path = config.data_dir.join("mqtt-client-id");
    match std::fs::read_to_string(&path) {
        // Its lease is waited for (`Sessions::wait_until_ours`) like any configured id's.
        Ok(id) if users.iter().any(|u| u == id.trim()) => return Ok(id.trim().to_owned()),
        Ok(id) => tracing::warn!(
            old = id.trim(),
            "this data directory's broker client id is no replica slot (servers before per-replica broker users made their own); taking a slot"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(StartError::Io { path, source }),
    }
    let id = crate::sessions::claim_replica_slot(store, &users, instance, clock).await;
    edgefleet_files::write_private(&path, id.as_bytes()).map_err(io(&path))?;
    Ok(id)
}

pub async fn start(config: Config) -> Result<Running, StartError> {
    start_with_clock(config, Arc::new(edgefleet_clock::SystemClock)).await
}

/// [`start`] with the time taken from `clock` (tests pass one they pause and move).
pub async fn start_with_clock(
    config: Config,
    clock: Arc<dyn edgefleet_clock::Clock>,
) -> Result<Running, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(io(&config.data_dir))?;
    ensure_online_keys(&config.online_keys_dir())?;
    let store: Arc<dyn Store> = crate::store::open(&config).await?;
    bootstrap_admin(&*store, &config.data_dir, clock.unix()).await?;
    let blobs = BlobStore::open_url(&config.artifacts_url()).await?;
    let expiries = Expiries {
        snapshot_days: config.tuf.snapshot_days,
        timestamp_days: config.tuf.timestamp_days,
        ..Expiries::default()
    };
    let tuf = Arc::new(
        TufHost::open(
            store.clone(),
            blobs.clone(),
            &config.online_keys_dir(),
            expiries,
            &config.data_dir.join("repo"),
        )
        .await?,
    );
    let metrics = Arc::new(Metrics::default());

    let password = match (&config.mqtt.url, &config.mqtt.password) {
        (Some(_), Some(password)) => password.clone(),
        _ => {
            // The embedded broker only ever sees this process's own credential.
            let password = auth::new_secret(SecretKind::Operator)?;
            let authenticator = mqtt::embedded_authenticator(
                store.clone(),
                config.mqtt.username.clone(),
                password.clone(),
            );
            mqtt::start_embedded_broker(config.mqtt.embedded_listen, authenticator).await?;
            tracing::info!(listen = %config.mqtt.embedded_listen, "embedded MQTT broker started");
            password
        }
    };
    let broker = mqtt::broker_of(&config)?;
    let instance = instance_id()?;
    let keys = Arc::new(crate::device_keys::DeviceKeys::default());
    let client_id = mqtt_client_id(&config, &*store, &instance, &*clock).await?;
    let sessions = config.mqtt.url.is_some().then(|| Sessions {
        store: store.clone(),
        metrics: metrics.clone(),
        config: config.clone(),
        address: broker.clone(),
        password: password.clone(),
        share_group: config.mqtt.share_group.clone(),
        instance: instance.clone(),
        client_id: client_id.clone(),
        keys: keys.clone(),
        draining: Arc::default(),
        clock: clock.clone(),
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(sessions) = &sessions {
        sessions.wait_until_ours().await;
        tasks.spawn(sessions.clone().run(shutdown.clone()));
    }
    let (handle, loops) = mqtt::connect(&config, &broker, &password, &client_id, metrics.clone())?;
    tasks.spawn(mqtt::run(
        handle.clone(),
        loops,
        mqtt::ClientParts {
            store: store.clone(),
            tuf: tuf.clone(),
            metrics: metrics.clone(),
            keys,
            share_group: config
                .mqtt
                .url
                .is_some()
                .then(|| config.mqtt.share_group.clone()),
            sessions: sessions.clone(),
            retained_sweep: Duration::from_secs(config.mqtt.retained_sweep_seconds),
            ingest_window: mqtt::ingest_window(&config),
            shutdown: shutdown.clone(),
            clock: clock.clone(),
        },
    ));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let metrics_token = match &config.metrics.token_file {
        Some(path) => Some(crate::config::read_metrics_token(path).map_err(|detail| {
            StartError::MetricsToken {
                path: path.clone(),
                detail,
            }
        })?),
        None => None,
    };
    let state = Arc::new(Shared {
        device_mqtt_url: config.device_mqtt_url(),
        metrics_token,
        live: Default::default(),
        config,
        store,
        blobs,
        tuf,
        mqtt: handle,
        metrics,
        desired_locks: Default::default(),
        engine_lock: tokio::sync::Mutex::new(Default::default()),
        rollout_views: Default::default(),
        pending_batches: Default::default(),
        instance,
        sessions,
        driving_rollouts: std::sync::atomic::AtomicBool::new(false),
        clock,
        baselines: Default::default(),
        shutdown,
    });
    crate::api::refresh_known_versions(&state).await;
    tasks.spawn(refresh_online_metadata(state.clone()));
    tasks.spawn(crate::engine::run(state.clone()));
    tasks.spawn(crate::notifier::run(state.clone()));
    tasks.spawn(crate::fleet_guard::run(state.clone()));
    tasks.spawn(prune_by_age(state.clone()));
    tasks.spawn(roll_up_telemetry(state.clone()));
    tasks.spawn(crate::fleet_figures::run(state.clone()));
    tasks.spawn({
        let state = state.clone();
        async move {
            let (store, clock) = (state.store.clone(), state.clock.clone());
            state.live.run(store, clock, state.shutdown.clone()).await;
        }
    });
    Ok(Running {
        state,
        listener,
        tasks,
    })
}

/// Labels wait this long for their device: past the 35 days a device keeps its predictions by
/// default, with room for a device offline a few weeks.
const LABELS_KEPT_SECONDS: i64 = 60 * 86_400;

/// How often stored batches are folded into rollups. Reads fold what is newer themselves, so
/// this bounds what each read folds: at 100,000 devices sending a batch a minute, 2 s is ~3,300
/// batches at most (10 s was ~17,000, ~70 MB of JSON per read).
const ROLLUP_EVERY: Duration = Duration::from_secs(2);

/// Folds stored telemetry into rollups every [`ROLLUP_EVERY`] (`crate::telemetry::rollups`).
/// Each batch is folded once whichever server folds it, so every server may run this.
async fn roll_up_telemetry(state: api::AppState) {
    let minute_hours = i64::from(state.config.telemetry.minute_rollups_hours);
    let mut cursor = crate::telemetry::rollups::RollupCursor::default();
    let mut tick = tokio::time::interval(ROLLUP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = state.clock.unix();
        match crate::telemetry::rollups::pass(&*state.store, &mut cursor, minute_hours, now).await {
            Ok(report) => tracing::debug!(
                folded = report.folded,
                merged = report.merged,
                compacted = report.compacted,
                "telemetry rolled up"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot roll telemetry up; retrying"),
        }
    }
}

/// Deletes raw telemetry past `telemetry.raw_retention_hours` (once rolled up), rollups past
/// `telemetry.retention_days`, audit entries past
/// `audit.retention_days`, labels no device fetched and samples past theirs, at start and
/// hourly. Idempotent, so every server sharing a database may do it.
async fn prune_by_age(state: api::AppState) {
    let keep = i64::from(state.config.telemetry.retention_days) * 86_400;
    let keep_raw = i64::from(state.config.telemetry.raw_retention_hours) * 3600;
    let keep_audit = i64::from(state.config.audit.retention_days) * 86_400;
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match state
            .store
            .prune_metrics(state.clock.unix() - keep_raw)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "raw telemetry past its retention deleted"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot delete old raw telemetry; retrying in an hour")
            }
        }
        match state.store.prune_rollups(state.clock.unix() - keep).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deleted = n,
                "telemetry rollups past their retention deleted"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot delete old telemetry rollups; retrying in an hour")
            }
        }
        match state
            .store
            .prune_labels(state.clock.unix() - LABELS_KEPT_SECONDS)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "labels no device fetched in 60 days deleted"),
            Err(e) => tracing::warn!(error = %e, "cannot delete old labels; retrying in an hour"),
        }
        match state
            .store
            .prune_samples(state.clock.unix() - crate::samples::RETAIN_DAYS * 86_400)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "prediction samples past their 30 days deleted"),
            Err(e) => tracing::warn!(error = %e, "cannot delete old samples; retrying in an hour"),
        }
        match state
            .store
            .prune_audit(state.clock.unix() - keep_audit)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "audit entries past their retention deleted"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot delete old audit entries; retrying in an hour")
            }
        }
    }
}

/// Re-signs snapshot and timestamp before they expire, every few minutes.
async fn refresh_online_metadata(state: api::AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match state.tuf.refresh(state.clock.now()).await {
            Ok(true) => tracing::info!("re-signed snapshot/timestamp metadata"),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "cannot re-sign online TUF metadata"),
        }
    }
}

/// The configured connection limits, with the total kept below the open-file limit (raised to
/// its hard limit first) less `reserved` files (the embedded broker's silent connections):
/// running out of descriptors would also stop the database, the broker and the artifact store,
/// not only HTTP.
fn connection_limits(
    limits: &crate::config::Limits,
    reserved: usize,
) -> crate::listener::ConnectionLimits {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let mut nofile = getrlimit(Resource::Nofile);
    if nofile.current < nofile.maximum {
        let raised = Rlimit {
            current: nofile.maximum,
            maximum: nofile.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            nofile = raised;
        }
    }
    let fd_room = nofile
        .current
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
        .saturating_sub(1024)
        .saturating_sub(reserved)
        .max(64);
    let max_connections = limits.max_connections.min(fd_room);
    crate::listener::ConnectionLimits {
        max_connections,
        max_connections_per_client: limits.max_connections_per_client.min(max_connections),
        header_read_timeout: Duration::from_secs(limits.header_read_timeout_seconds),
    }
}

/// How long the background tasks get to finish at shutdown (the broker client stores and
/// acknowledges the device messages it holds) before the rest are aborted.
const TASKS_GRACE: Duration = Duration::from_secs(15);

/// Serves until `shutdown` resolves, then stops in order: HTTP (in-flight requests finish), the
/// rollout engine (its lease given up), every background task (joined; the broker client
/// stores and acknowledges what it holds, then disconnects), and last the broker session's
/// lease. Returns once nothing of the server runs.
pub async fn serve(
    running: Running,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<Stopped> {
    let Running {
        state,
        listener,
        mut tasks,
    } = running;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, public_url = %state.config.public_url(), "serving");
    let reserved = if state.config.mqtt.url.is_none() {
        crate::mqtt::EMBEDDED_HALF_OPEN_MAX
    } else {
        0
    };
    let limits = connection_limits(&state.config.limits, reserved);
    tracing::info!(
        max_connections = limits.max_connections,
        per_client = limits.max_connections_per_client,
        header_read_timeout_s = limits.header_read_timeout.as_secs(),
        "connection limits"
    );
    let served = crate::listener::serve(
        listener,
        api::router(state.clone()),
        limits,
        state.metrics.clone(),
        shutdown,
        Duration::from_secs(10),
    )
    .await;
    // Cancels `state.shutdown`, so every task starts stopping meanwhile.
    crate::engine::hand_over(&state).await;
    let joined = tokio::time::timeout(TASKS_GRACE, async {
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done
                && e.is_panic()
            {
                tracing::error!(error = %e, "a background task had panicked");
            }
        }
    })
    .await;
    let aborted = tasks.len();
    if joined.is_err() {
        tracing::warn!(
            left = aborted,
            "background tasks still running after the grace period; aborted"
        );
        tasks.shutdown().await;
    }
    // Only now that the broker client has disconnected may another server take its session.
    if let Some(sessions) = &state.sessions {
        sessions.hand_over().await;
    }
    tracing::info!("stopped");
    served.map(|()| Stopped { aborted })
}

/// How a server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Background tasks that did not finish within the grace period and were aborted (0 when
    /// every task stopped by itself, as each should).
    pub aborted: usize,
}
