//! A whole run: enroll the fleet, connect it at the configured pace, let it live for the run's
//! duration, stop every device cleanly and add up what happened.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgefleet_protocol::DeviceId;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::SimConfig;
use crate::device::SimDevice;
use crate::fleet::{Enrolled, FleetApi};
use crate::link::{self, LinkSettings, Tally, load};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: cannot read the operator token: {detail}")]
    Token {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    #[error("initial_target {0} is not in the registry; push it first")]
    UnknownInitialTarget(String),
    #[error("broker address {url:?}: {detail}")]
    Broker { url: String, detail: String },
    #[error("device id {id:?}: {detail}")]
    DeviceId { id: String, detail: String },
    #[error(transparent)]
    Saved(#[from] crate::enrolled::EnrolledError),
}

/// Per-channel message counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ByChannel {
    pub reported: u64,
    pub events: u64,
    pub metrics: u64,
}

impl ByChannel {
    fn from(counters: &[std::sync::atomic::AtomicU64; 3]) -> Self {
        Self {
            reported: load(&counters[0]),
            events: load(&counters[1]),
            metrics: load(&counters[2]),
        }
    }
}

/// What a run did, printed as JSON at its end.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub devices: u64,
    /// 0 for a fleet enrolled before the run (`--enrolled`).
    pub enroll_seconds: f64,
    /// From the first connection attempt until every device was connected once (`None`: not all
    /// of them ever were).
    pub connect_storm_seconds: Option<f64>,
    pub connections: u64,
    pub refused_connections: u64,
    pub connection_errors: u64,
    /// Desired-state messages that arrived (replays and retained copies included).
    pub desired_received: u64,
    /// Of those, the ones with a new revision the device acted on.
    pub desired_acted_on: u64,
    /// Of those, the ones the device could not read (not a signed statement, another device's).
    pub desired_not_acted_on: u64,
    pub installs_committed: u64,
    pub installs_rejected: u64,
    pub predictions: u64,
    /// Messages published (each counted once, however often it had to be sent again).
    pub sent: ByChannel,
    /// Messages the broker acknowledged.
    pub acked: ByChannel,
    /// Messages still unacknowledged when the run stopped (lost to the server).
    pub unacked: u64,
    pub run_seconds: f64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The devices a configuration describes, in order, each with its group.
pub fn wanted_devices(config: &SimConfig) -> Result<Vec<(DeviceId, String)>, RunError> {
    let mut wanted = Vec::new();
    for group in &config.groups {
        for n in 0..group.devices {
            let id = format!("{}-{}-{n}", config.id_prefix, group.name);
            let id = DeviceId::new(id.as_str()).map_err(|e| RunError::DeviceId {
                id: id.clone(),
                detail: e.to_string(),
            })?;
            wanted.push((id, group.name.clone()));
        }
    }
    Ok(wanted)
}

fn fleet_api(config: &SimConfig) -> Result<FleetApi, RunError> {
    let token = std::fs::read_to_string(&config.admin_token_file).map_err(|e| RunError::Token {
        path: config.admin_token_file.clone(),
        detail: e.to_string(),
    })?;
    Ok(FleetApi::new(&config.server_url, &token)?)
}

/// Registers and enrolls the configuration's fleet, each device with a key of its own; returns
/// it with each device's group, and the seconds it took.
pub async fn enroll(config: &SimConfig) -> Result<(Vec<(Enrolled, String)>, f64), RunError> {
    let api = fleet_api(config)?;
    let wanted = wanted_devices(config)?;
    let groups: Vec<String> = wanted.iter().map(|(_, g)| g.clone()).collect();
    let started = Instant::now();
    tracing::info!(
        devices = wanted.len(),
        "registering and enrolling the simulated fleet"
    );
    let enrolled = api.enroll_all(wanted, config.enroll_concurrency).await?;
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(devices = enrolled.len(), seconds, "fleet enrolled");
    Ok((enrolled.into_iter().zip(groups).collect(), seconds))
}

/// Where a run's devices come from.
#[derive(Debug, Clone)]
pub enum Fleet {
    /// Registered and enrolled by the run itself.
    Enroll,
    /// Enrolled before, by `edgefleet-sim enroll` (see [`crate::enrolled`]).
    Saved(std::path::PathBuf),
}

/// Runs the simulation until its duration is up or `stop` is cancelled.
pub async fn run(
    config: SimConfig,
    fleet: Fleet,
    stop: CancellationToken,
) -> Result<Summary, RunError> {
    let api = fleet_api(&config)?;
    let catalog = api.catalog().await?;
    let initial = match &config.initial_target {
        Some(target) => Some(
            catalog
                .get_key_value(target.as_str())
                .map(|(t, r)| (t.clone(), r.clone()))
                .ok_or_else(|| RunError::UnknownInitialTarget(target.clone()))?,
        ),
        None => None,
    };
    let (enrolled, enroll_seconds) = match fleet {
        Fleet::Enroll => {
            let (enrolled, seconds) = enroll(&config).await?;
            (
                enrolled.into_iter().map(|(device, _)| device).collect(),
                seconds,
            )
        }
        Fleet::Saved(path) => (
            crate::enrolled::load(&path, &wanted_devices(&config)?)?,
            0.0,
        ),
    };

    let shared = Arc::new(link::Shared {
        catalog,
        started: Instant::now(),
        started_unix: unix_now(),
        tally: Tally::default(),
    });
    let started = shared.started;
    let tally = &shared.tally;
    let tasks = TaskTracker::new();
    let devices_stop = CancellationToken::new();
    let telemetry = Arc::new(config.telemetry.clone());
    let groups: Vec<_> = config.groups.iter().cloned().map(Arc::new).collect();
    let pace = Duration::from_secs_f64(1.0 / f64::from(config.connects_per_second));
    let mut handles = Vec::with_capacity(enrolled.len());
    let mut broker: Option<(String, SocketAddr)> = match &config.broker_url {
        Some(url) => Some((url.clone(), broker_address(url)?)),
        None => None,
    };
    let mut n: u64 = 0;
    let mut group_of = groups
        .iter()
        .flat_map(|g| std::iter::repeat_n(g, g.devices as usize));
    for device in enrolled {
        let Some(group) = group_of.next() else { break };
        let address = match &broker {
            Some((_, address)) if config.broker_url.is_some() => *address,
            Some((url, address)) if *url == device.mqtt_url => *address,
            _ => {
                let address = broker_address(&device.mqtt_url)?;
                broker = Some((device.mqtt_url.clone(), address));
                address
            }
        };
        let now = shared.now();
        let sim = SimDevice::new(
            device.id,
            group.clone(),
            telemetry.clone(),
            config
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(n),
            initial.as_ref().map(|(t, r)| (t.as_str(), r)),
            now,
        );
        let settings = LinkSettings {
            broker: address,
            source: config.source_address(n),
            keep_alive: Duration::from_secs(u64::from(config.keep_alive_seconds)),
            credential: device.credential,
        };
        handles.push(tasks.spawn(link::run(
            sim,
            device.key,
            settings,
            shared.clone(),
            devices_stop.clone(),
        )));
        n += 1;
        tokio::select! {
            () = tokio::time::sleep(pace) => {}
            () = stop.cancelled() => break,
        }
    }
    tasks.close();

    let deadline = started + config.duration();
    let mut connect_storm_seconds = None;
    loop {
        if connect_storm_seconds.is_none()
            && load(&tally.connections) >= n
            && load(&tally.connected) >= n
        {
            connect_storm_seconds = Some(started.elapsed().as_secs_f64());
            tracing::info!(
                devices = n,
                seconds = started.elapsed().as_secs_f64(),
                "every device connected"
            );
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = stop.cancelled() => break,
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    tracing::info!("stopping the simulated fleet");
    devices_stop.cancel();
    let mut counts = crate::device::DeviceCounts::default();
    for handle in handles {
        if let Ok(device) = handle.await {
            counts.desired += device.counts.desired;
            counts.committed += device.counts.committed;
            counts.rejected += device.counts.rejected;
            counts.predictions += device.counts.predictions;
        }
    }
    tasks.wait().await;
    Ok(Summary {
        devices: n,
        enroll_seconds,
        connect_storm_seconds,
        connections: load(&tally.connections),
        refused_connections: load(&tally.refused),
        connection_errors: load(&tally.connection_errors),
        desired_received: load(&tally.desired_received),
        desired_acted_on: counts.desired,
        desired_not_acted_on: load(&tally.desired_errors),
        installs_committed: counts.committed,
        installs_rejected: counts.rejected,
        predictions: counts.predictions,
        sent: ByChannel::from(&tally.sent),
        acked: ByChannel::from(&tally.acked),
        unacked: load(&tally.unacked_at_stop),
        run_seconds: started.elapsed().as_secs_f64(),
    })
}

/// The broker the server gave at enrollment (or `broker_url`); the simulator speaks plain MQTT
/// only.
fn broker_address(url: &str) -> Result<SocketAddr, RunError> {
    let broker = |detail: String| RunError::Broker {
        url: url.to_owned(),
        detail,
    };
    let address =
        edgefleet_protocol::broker::BrokerAddress::parse(url).map_err(|e| broker(e.to_string()))?;
    if address.tls {
        return Err(broker(
            "the simulator speaks plain MQTT: give the broker a plain loopback listener".into(),
        ));
    }
    (address.host.as_str(), address.port)
        .to_socket_addrs()
        .map_err(|e| broker(e.to_string()))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| broker("no IPv4 address".into()))
}
