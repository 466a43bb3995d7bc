//! `edge-agent`: thin main. Parse arguments, set up tracing, load and validate the config, then
//! run the daemon, check a config, or hand a USB-stick repository to the running daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use edge_agent::agent::Agent;
use edge_agent::config::{Config, ConfigError, Listen};
use edgefleet_inference::select::Engine;
use tracing::{error, info, warn};

#[derive(Debug, Parser)]
#[command(
    name = "edge-agent",
    version,
    about = "Serve ML models on this device and keep them healthy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, default_value = "/etc/edgefleet/agent.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and print every problem, by key.
    CheckConfig {
        #[arg(long, default_value = "/etc/edgefleet/agent.toml")]
        config: PathBuf,
    },
    /// Enroll this device with a fleet server: trade the one-time token from `fleetctl device
    /// add` for this device's own credential (saved to `<data_dir>/fleet.json`, mode 0600). The
    /// next `run` connects to the fleet.
    Enroll {
        #[arg(long, default_value = "/etc/edgefleet/agent.toml")]
        config: PathBuf,
        /// The fleet server's URL, e.g. https://fleet.example.com.
        #[arg(long)]
        server: String,
        /// File holding the enrollment token.
        #[arg(long)]
        token_file: PathBuf,
    },
    /// Install models from a repository directory (e.g. a USB stick made with `fleetctl`): the
    /// running daemon verifies it against its trusted root and health-checks each model.
    Install {
        #[arg(long, default_value = "/etc/edgefleet/agent.toml")]
        config: PathBuf,
        /// Repository directory (with metadata/ and targets/).
        repository: PathBuf,
        /// Target names to install; default: the newest release of every model in it.
        #[arg(long = "target")]
        targets: Vec<String>,
    },
    /// Put a model's previous version back in service from the copy this device kept (no
    /// network needed); it is health-checked and goes through probation like any install.
    Rollback {
        #[arg(long, default_value = "/etc/edgefleet/agent.toml")]
        config: PathBuf,
        model: String,
    },
}

/// EX_CONFIG from sysexits.h: systemd and operators can tell a bad config from a crash.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // reqwest (ours and tough's) uses rustls without a built-in provider: name one, once.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(_) => {
                eprintln!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return config_failure(e),
            };
            exit(runtime().and_then(|rt| {
                let result = rt.block_on(run(config));
                // A model still loading from a stalled disk must not hold the stop for ever
                // (the journal already says what to resume).
                rt.shutdown_timeout(Duration::from_secs(5));
                result
            }))
        }
        Command::Enroll {
            config,
            server,
            token_file,
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return config_failure(e),
            };
            exit(runtime().and_then(|rt| rt.block_on(enroll(config, server, token_file))))
        }
        Command::Install {
            config,
            repository,
            targets,
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return config_failure(e),
            };
            exit(runtime().and_then(|rt| rt.block_on(install(config, repository, targets))))
        }
        Command::Rollback { config, model } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return config_failure(e),
            };
            let body = serde_json::json!({ "model": model });
            exit(runtime().and_then(|rt| rt.block_on(admin_call(config, "rollback", body))))
        }
    }
}

fn config_failure(e: ConfigError) -> ExitCode {
    eprintln!("edge-agent: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The blocking pool's bound: enough for the inferences of a many-core board beside the store.
const BLOCKING_THREADS: usize = 64;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        // Inference is bounded by `inference.max_parallel`; the rest (store, hashing) is short.
        // Tokio's default of 512 threads would let a burst leave hundreds of threads and their
        // allocator arenas behind.
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// tract always; ONNX Runtime when its library loads (and the build includes it).
fn engine(config: &Config) -> Engine {
    let settings = &config.inference;
    if !edgefleet_inference::tract::set_threads(settings.threads) {
        warn!(
            threads = settings.threads,
            "this build runs tract on one thread per inference (built without the tract-threads \
             feature); inference.threads applies to ONNX Runtime only"
        );
    }
    let tract: Arc<dyn edgefleet_inference::Runtime> =
        Arc::new(edgefleet_inference::tract::CachedTractRuntime {
            dir: config.data_dir.join("cache/tract"),
            min_bytes: settings.tract_cache_min_bytes,
        });
    #[cfg(feature = "onnxruntime")]
    let (runtimes, unavailable) = match edgefleet_inference::onnxruntime::OnnxRuntime::open(
        &settings.onnxruntime_library,
        settings.threads,
    ) {
        Ok(ort) => (vec![tract, Arc::new(ort) as Arc<_>], Vec::new()),
        Err(e) => {
            info!(reason = %e, "ONNX Runtime unavailable: tract serves every model");
            (vec![tract], vec![("onnxruntime", e.to_string())])
        }
    };
    #[cfg(not(feature = "onnxruntime"))]
    let (runtimes, unavailable) = (
        vec![tract],
        vec![(
            "onnxruntime",
            "this edge-agent was built without the onnxruntime feature (tract only)".to_string(),
        )],
    );
    Engine::new(runtimes, unavailable, config.inference.runtime)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let listen = config.listen().map_err(anyhow::Error::msg)?;
    let grace = Duration::from_secs(config.api.shutdown_grace_seconds);
    let engine = Arc::new(engine(&config));
    let agent = Agent::open(config, engine)
        .await
        .context("starting the agent")?;
    match edge_agent::fleet::load_link(&agent.config.data_dir)? {
        Some(link) => {
            info!(server = %link.server_url, broker = %link.mqtt_url, "enrolled: connecting to the fleet");
            edge_agent::fleet::Fleet::start(agent.clone(), link)?;
        }
        None => info!("not enrolled with a fleet server: serving and local installs only"),
    }
    let admin_token =
        edge_agent::admin::ensure_token(&agent.config.data_dir).with_context(|| {
            format!(
                "the admin token {}",
                edge_agent::admin::token_path(&agent.config.data_dir).display()
            )
        })?;
    let app = edge_agent::api::router(agent.clone(), admin_token);
    let stopping = tokio_util::sync::CancellationToken::new();
    let shutdown = shutdown_signal(stopping.clone());
    // The watchdog is fed until the agent has stopped, drain included.
    let stopped = tokio_util::sync::CancellationToken::new();
    let watchdog;
    // The API answers liveness at once and readiness per model while this loads them.
    let loader = {
        let agent = agent.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            agent.load_models().await;
            info!(
                models = ?agent.serving.names(),
                load_ms = started.elapsed().as_secs_f64() * 1e3,
                "models loaded"
            );
        })
    };
    let served = match listen {
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} (api.listen)"))?;
            info!(%addr, device = %agent.config.device_id, loading = ?agent.loading(), "serving");
            // systemd (`Type=notify`): the API is up.
            watchdog = edgefleet_notify::ready(&stopped);
            serve(
                axum::serve(listener, app).with_graceful_shutdown(shutdown),
                &stopping,
                grace,
            )
            .await
        }
        Listen::Unix(path) => {
            let _ = std::fs::remove_file(&path);
            let listener = tokio::net::UnixListener::bind(&path)
                .with_context(|| format!("binding {} (api.listen)", path.display()))?;
            info!(socket = %path.display(), device = %agent.config.device_id, "serving");
            // systemd (`Type=notify`): the API is up.
            watchdog = edgefleet_notify::ready(&stopped);
            serve(
                axum::serve(listener, app).with_graceful_shutdown(shutdown),
                &stopping,
                grace,
            )
            .await
        }
    };
    loader.abort();
    let _ = loader.await;
    // A stop is not a failure: probations in progress resume at the next start.
    let aborted = agent.stop(grace).await;
    stopped.cancel();
    if let Some(watchdog) = watchdog {
        let _ = watchdog.await;
    }
    info!(aborted, "stopped");
    served
}

/// Drives the server; once shutdown begins, in-flight requests get `grace` to finish.
async fn serve(
    server: impl std::future::IntoFuture<Output = std::io::Result<()>>,
    stopping: &tokio_util::sync::CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result.context("serving the API"),
        () = async { stopping.cancelled().await; tokio::time::sleep(grace).await } => {
            warn!(?grace, "in-flight requests did not finish within the grace period");
            Ok(())
        }
    }
}

async fn shutdown_signal(stopping: tokio_util::sync::CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: draining in-flight requests"),
        _ = tokio::signal::ctrl_c() => info!("interrupt: draining in-flight requests"),
    }
    edgefleet_notify::tell(&edgefleet_notify::NotifyState::Stopping);
    stopping.cancel();
}

async fn enroll(config: Config, server: String, token_file: PathBuf) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("reading {}", token_file.display()))?;
    let link =
        edge_agent::fleet::enroll(&config.data_dir, &config.device_id, &server, &token).await?;
    info!(device = %link.device_id, server = %link.server_url, broker = %link.mqtt_url, "enrolled; restart `edge-agent run` to connect");
    Ok(())
}

async fn install(config: Config, repository: PathBuf, targets: Vec<String>) -> anyhow::Result<()> {
    let repository =
        std::fs::canonicalize(&repository).with_context(|| format!("{}", repository.display()))?;
    let body = serde_json::json!({ "repository": repository, "targets": targets });
    admin_call(config, "install", body).await
}

/// Asks the running daemon to do `action` (`POST /v1/admin/<action>` with its admin token) and
/// prints its report.
async fn admin_call(config: Config, action: &str, body: serde_json::Value) -> anyhow::Result<()> {
    let Listen::Tcp(addr) = config.listen().map_err(anyhow::Error::msg)? else {
        anyhow::bail!(
            "api.listen is a unix socket; run: curl --unix-socket PATH -H 'Content-Type: application/json' -H \"Authorization: Bearer $(cat {})\" -d '{body}' http://agent/v1/admin/{action}",
            edge_agent::admin::token_path(&config.data_dir).display()
        );
    };
    let token_file = edge_agent::admin::token_path(&config.data_dir);
    let token = std::fs::read_to_string(&token_file).with_context(|| {
        format!(
            "reading the admin token {} (run as the agent's user or root; the agent makes it at its first start)",
            token_file.display()
        )
    })?;
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/admin/{action}"))
        .bearer_auth(token.trim())
        .json(&body)
        .send()
        .await
        .with_context(|| format!("reaching the agent at {addr}: is `edge-agent run` up?"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{action} refused ({status}): {text}");
    }
    // The one command that answers a person rather than logs: the install report, on stdout.
    #[allow(clippy::print_stdout)]
    {
        println!("{text}");
    }
    Ok(())
}
