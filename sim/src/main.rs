//! `edgefleet-sim run --config sim.toml`: runs the simulation and prints its summary as JSON.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Simulates a fleet of devices against a fleet server (loopback only)"
)]
enum Cli {
    /// Enrolls the configured devices (unless `--enrolled` has them), runs them for the
    /// configured time, prints a JSON summary.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Devices enrolled before by `edgefleet-sim enroll` with this configuration.
        #[arg(long)]
        enrolled: Option<PathBuf>,
    },
    /// Registers and enrolls the configured devices and saves their keys and credentials to
    /// `--out` (mode 0600) for `run --enrolled`: a broker that must learn the credentials first
    /// (Mosquitto: `fleet-server mosquitto-config`) gets that step in between.
    Enroll {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Checks a configuration and says what it would run.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "edgefleet_sim=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse() {
        Cli::Check { config } => {
            let c = edgefleet_sim::config::SimConfig::load(&config)?;
            eprintln!(
                "{}: {} devices in {} groups for {} s",
                config.display(),
                c.devices(),
                c.groups.len(),
                c.duration_seconds
            );
            Ok(())
        }
        Cli::Enroll { config, out } => {
            let c = edgefleet_sim::config::SimConfig::load(&config)?;
            let (enrolled, seconds) = edgefleet_sim::run::enroll(&c).await?;
            edgefleet_sim::enrolled::save(&out, &enrolled)?;
            let text = serde_json::to_string_pretty(&serde_json::json!({
                "devices": enrolled.len(),
                "enroll_seconds": seconds,
                "saved": out,
            }))?;
            #[allow(clippy::print_stdout)]
            {
                println!("{text}");
            }
            Ok(())
        }
        Cli::Run { config, enrolled } => {
            let c = edgefleet_sim::config::SimConfig::load(&config)?;
            let fleet = match enrolled {
                Some(path) => edgefleet_sim::run::Fleet::Saved(path),
                None => edgefleet_sim::run::Fleet::Enroll,
            };
            raise_open_file_limit(c.devices())?;
            let stop = CancellationToken::new();
            let on_signal = stop.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    on_signal.cancel();
                }
            });
            let summary = edgefleet_sim::run::run(c, fleet, stop)
                .await
                .context("the simulation stopped")?;
            let text = serde_json::to_string_pretty(&summary)?;
            #[allow(clippy::print_stdout)]
            {
                println!("{text}");
            }
            Ok(())
        }
    }
}

/// One socket per device: the soft limit goes up to the hard one, and a run that still would not
/// fit says so before it starts.
fn raise_open_file_limit(devices: u64) -> anyhow::Result<()> {
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
    // Room for the runtime, the HTTP client and the log beside the devices' sockets.
    let needed = devices + 256;
    match nofile.current {
        Some(limit) if limit < needed => anyhow::bail!(
            "{devices} devices need {needed} open files and this process may have {limit}: \
             raise the hard limit (ulimit -Hn, LimitNOFILE=) or simulate fewer"
        ),
        _ => Ok(()),
    }
}
