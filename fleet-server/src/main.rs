//! `fleet-server`: serve, check a config, write Mosquitto's password and ACL files, or make an
//! operator token directly in the database (recovery when every admin token is lost).

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleet_server::auth::{self, Role, SecretKind};
use fleet_server::config::Config;

#[derive(Debug, Parser)]
#[command(name = "fleet-server", version, about = "Edgefleet's fleet server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        #[arg(long, default_value = "/etc/edgefleet/server.toml")]
        config: PathBuf,
    },
    /// Validate a config (with environment overrides) and exit: 0 if good, 78 if not.
    CheckConfig {
        #[arg(long, default_value = "/etc/edgefleet/server.toml")]
        config: PathBuf,
    },
    /// Write Mosquitto's `passwd` and `acl` files (and an `edgefleet.conf` that includes them)
    /// for the server and every enrolled device; re-run after enrolling devices, then SIGHUP
    /// Mosquitto.
    MosquittoConfig {
        #[arg(long, default_value = "/etc/edgefleet/server.toml")]
        config: PathBuf,
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Create an operator token directly in the database and print it once.
    CreateToken {
        #[arg(long, default_value = "/etc/edgefleet/server.toml")]
        config: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
    },
}

/// sysexits' EX_CONFIG: systemd units use it to stop restarting on a bad config.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // rustls is built without a default provider; the MQTT client's TLS uses aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config_path = match &cli.command {
        Command::Serve { config }
        | Command::CheckConfig { config }
        | Command::MosquittoConfig { config, .. }
        | Command::CreateToken { config, .. } => config.clone(),
    };
    let config = match Config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleet-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { .. } => serve(config).await,
            Command::CheckConfig { .. } => {
                eprintln!("{}: ok", config_path.display());
                Ok(())
            }
            Command::MosquittoConfig { out_dir, .. } => mosquitto_config(&config, &out_dir).await,
            Command::CreateToken { name, role, .. } => create_token(&config, &name, &role).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("fleet-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = fleet_server::server::start(config).await?;
    let stopped = tokio_util::sync::CancellationToken::new();
    // systemd (`Type=notify`): the API listens and the store is open.
    let watchdog = edgefleet_notify::ready(&stopped);
    let served = fleet_server::server::serve(running, shutdown_signal()).await;
    stopped.cancel();
    if let Some(watchdog) = watchdog {
        let _ = watchdog.await;
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    edgefleet_notify::tell(&edgefleet_notify::NotifyState::Stopping);
    tracing::info!("shutting down: finishing in-flight requests");
}

async fn mosquitto_config(config: &Config, out_dir: &Path) -> anyhow::Result<()> {
    let password = match (&config.mqtt.url, &config.mqtt.password) {
        (Some(_), Some(p)) => p,
        _ => anyhow::bail!(
            "mosquitto-config is for an external broker: set mqtt.url and mqtt.password first"
        ),
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| config.data_dir.display().to_string())?;
    let store = fleet_server::store::open(config).await?;
    let devices = store.mqtt_credentials().await?;
    let server_users = config.mqtt.server_users();
    let files = fleet_server::mosquitto::mosquitto_files(
        &server_users,
        &auth::mosquitto_hash(password)?,
        &devices,
    );
    std::fs::create_dir_all(out_dir).with_context(|| out_dir.display().to_string())?;
    let passwd = out_dir.join("passwd");
    let acl = out_dir.join("acl");
    write_private(&passwd, &files.passwd)?;
    write_private(&acl, &files.acl)?;
    let conf = out_dir.join("edgefleet.conf");
    write_private(
        &conf,
        &fleet_server::mosquitto::mosquitto_settings(&passwd, &acl),
    )?;
    println!(
        "wrote {} ({} server replica users, {} devices), {} and {}; reload Mosquitto (SIGHUP) to apply",
        passwd.display(),
        server_users.len(),
        devices.len(),
        acl.display(),
        conf.display()
    );
    Ok(())
}

/// Mosquitto refuses world-readable password files in newer versions; these hold hashes only,
/// but keep them to the owner and group.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    edgefleet_files::write_atomic(
        path,
        text.as_bytes(),
        edgefleet_files::Visibility::OwnerAndGroup,
    )
    .with_context(|| path.display().to_string())
}

async fn create_token(config: &Config, name: &str, role: &str) -> anyhow::Result<()> {
    let role = Role::parse(role).context("role must be viewer, operator or admin")?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| config.data_dir.display().to_string())?;
    let store = fleet_server::store::open(config).await?;
    let secret = auth::new_secret(SecretKind::Operator)?;
    store
        .create_operator_token(
            name,
            role,
            &auth::secret_hash(&secret),
            jiff::Timestamp::now().as_second(),
        )
        .await?;
    println!("{secret}");
    Ok(())
}
