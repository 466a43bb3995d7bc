//! `fleetctl`, the operator's command line. It runs where the offline keys are: it makes the TUF
//! keys, creates the repository, signs model versions into `targets`, revokes them, rotates
//! `root`, and verifies a repository the way a device would. Private keys never leave this
//! machine and are never printed.
//!
//! Repository commands work on a local repository directory (`--repo`, default `repo`) with the
//! online keys from `--keys` (the same code the fleet server runs, so an operator can also make an
//! offline repository for a USB stick), or with `--server` on the fleet server they logged in to:
//! then only signed metadata and artifacts travel, and the server signs snapshot and timestamp
//! with its own online keys.
//!
//! Fleet commands (`login`, `models`, `devices`, `device`, `groups`, `promote`, `token`) talk to
//! the server's operator API: tables for people, `--json` for scripts.

// A CLI answers on stdout; the workspace lint against print_stdout is meant for daemons.
#![allow(clippy::print_stdout)]

mod delegate;
mod push;
mod remote;
mod rotate;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use edgefleet_tuf::client::{self, ClientConfig, ClientLimits};
use edgefleet_tuf::keys::{self, PemKeySource};
use edgefleet_tuf::operator::{self, Expiries, RoleSpec, RootSpec};
use edgefleet_tuf::repo::{OnlineKeys, RepoStore};
use jiff::Timestamp;
use tough::key_source::KeySource;

#[derive(Debug, Parser)]
#[command(name = "fleetctl", version, about = "Operate an Edgefleet fleet")]
struct Cli {
    /// Fleet server URL (default: from `fleetctl login`).
    #[arg(long, global = true, env = "FLEETCTL_URL")]
    url: Option<String>,
    /// Operator token (default: from `fleetctl login`).
    #[arg(long, global = true, env = "FLEETCTL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct RepoArgs {
    /// Directory holding the operator's keys (NAME.pem, NAME.pub.json).
    #[arg(long, default_value = "keys")]
    keys: PathBuf,
    /// Repository directory (metadata/ and targets/).
    #[arg(long, default_value = "repo")]
    repo: PathBuf,
    /// Key name of the online snapshot key.
    #[arg(long, default_value = "snapshot")]
    snapshot_key: String,
    /// Key name of the online timestamp key.
    #[arg(long, default_value = "timestamp")]
    timestamp_key: String,
    /// Names of the targets keys to sign with (comma-separated).
    #[arg(long, default_value = "targets", value_delimiter = ',')]
    targets_keys: Vec<String>,
    /// Days the new targets metadata stays valid.
    #[arg(long, default_value_t = Expiries::default().targets_days)]
    targets_days: u32,
    /// Publish through the fleet server (`fleetctl login`) instead of the local `--repo`. The
    /// online keys are then the server's; only root and targets keys are used here.
    #[arg(long)]
    server: bool,
    /// Names of the keys that sign a delegated model's role (comma-separated; `fleetctl
    /// delegate`). Default: the targets keys.
    #[arg(long, value_delimiter = ',')]
    model_keys: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate ed25519 key pairs: NAME.pem (private, 0600) and NAME.pub.json.
    Keygen {
        /// Directory to write the keys into (created if missing).
        #[arg(long, default_value = "keys")]
        dir: PathBuf,
        /// Key names; one per role by default. Use e.g. `root-2` for a second root key.
        #[arg(default_values_t = ["root".to_string(), "targets".to_string(), "snapshot".to_string(), "timestamp".to_string()])]
        names: Vec<String>,
    },
    /// Create a repository: root (version 1) signed by the root keys, empty targets.
    Init {
        #[command(flatten)]
        repo: RepoArgs,
        /// Root key names (comma-separated).
        #[arg(long, default_value = "root", value_delimiter = ',')]
        root_keys: Vec<String>,
        #[arg(long, default_value_t = 1)]
        root_threshold: u64,
        #[arg(long, default_value_t = 1)]
        targets_threshold: u64,
        #[arg(long, default_value_t = Expiries::default().root_days)]
        root_days: u32,
    },
    /// Sign a model release directory (model.onnx, release.json, interface.json, health.json,
    /// baseline.json) into targets and publish it.
    Push {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        release: ReleaseArgs,
        model_dir: PathBuf,
    },
    /// Give a model a targets role of its own (`models/MODEL/*/*`), signed by `--model-keys`
    /// (default: the targets keys), and move its releases into it. Devices then fetch only the
    /// metadata of the models they run; later pushes of the model sign only its role.
    Delegate {
        #[command(flatten)]
        repo: RepoArgs,
        /// Signatures the model's role needs.
        #[arg(long, default_value_t = 1)]
        threshold: u64,
        /// Every model the top-level targets still list: the whole repository moves to one role
        /// per model, one publication per model.
        #[arg(long, conflicts_with = "model")]
        all: bool,
        #[arg(required_unless_present = "all")]
        model: Option<String>,
    },
    /// Keep only the newest releases of a model listed (by sequence) and drop the rest, so the
    /// role devices re-fetch on every change of the model stays small. Devices keep serving what
    /// they run; a dropped release can no longer be installed or rolled back to.
    Prune {
        #[command(flatten)]
        repo: RepoArgs,
        /// Releases to keep; 2 keeps the one a halted rollout goes back to.
        #[arg(long, default_value_t = 2)]
        keep: usize,
        model: String,
    },
    /// Remove a target from targets: devices refuse it from then on.
    Revoke {
        #[command(flatten)]
        repo: RepoArgs,
        /// Target name, e.g. models/churn/2.0.0/model.onnx.
        target: String,
    },
    /// Replace the keys of one role (root, targets, snapshot or timestamp): a new root version
    /// signed by the current root keys (and the new ones, for root). Targets are re-signed with
    /// new targets keys in the same step; snapshot and timestamp keys are made by the server.
    RotateKeys {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long, value_enum)]
        role: rotate::RotatedRole,
        /// Current root key names to sign the new root with (comma-separated).
        #[arg(long, alias = "old-keys", value_delimiter = ',', required = true)]
        root_keys: Vec<String>,
        /// New key names for root or targets (comma-separated; `fleetctl keygen` them first).
        #[arg(long, value_delimiter = ',')]
        new_keys: Vec<String>,
        /// Signatures the rotated role needs (root and targets).
        #[arg(long, default_value_t = 1)]
        threshold: u64,
        #[arg(long, default_value_t = Expiries::default().root_days)]
        root_days: u32,
    },
    /// Save the fleet server URL and an operator token for the other commands (file mode 0600).
    Login {
        #[arg(long)]
        server: String,
        /// File holding the token (e.g. the server's admin.token); or pass --token.
        #[arg(long, conflicts_with = "token")]
        token_file: Option<PathBuf>,
    },
    /// The model registry: every signed version, its stage and who pushed it.
    Models {
        #[arg(long)]
        json: bool,
    },
    /// Devices, with their state and what they run.
    Devices {
        #[arg(long)]
        group: Option<String>,
        /// `KEY` or `KEY=VALUE`.
        #[arg(long)]
        tag: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Register, inspect, assign or remove one device.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Device groups and their sizes.
    Groups {
        #[arg(long)]
        json: bool,
    },
    /// Move a model version to a registry stage.
    Promote {
        model: String,
        version: String,
        #[arg(long, default_value = "production", value_parser = ["staging", "production", "archived"])]
        stage: String,
    },
    /// Staged rollouts: create, list, status (--watch), pause, resume, approve, abort,
    /// retry-failed.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Operator tokens (admin only).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Check a repository as a device would, starting from a trusted root, and verify every
    /// artifact.
    Verify {
        #[arg(long, default_value = "repo")]
        repo: PathBuf,
        /// The root devices trust (default: the repository's first root).
        #[arg(long)]
        root: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Register a device; prints its one-time enrollment token.
    Add {
        id: String,
        #[arg(long)]
        group: Option<String>,
        /// `KEY=VALUE`, repeatable.
        #[arg(long)]
        tag: Vec<String>,
        /// Replace the token of a device that has not enrolled yet.
        #[arg(long)]
        renew: bool,
        #[arg(long)]
        json: bool,
    },
    /// One device: state, desired and reported models, recent events.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Set the model versions a device should run: `MODEL=VERSION ...`.
    Assign { id: String, models: Vec<String> },
    /// Remove a device; its credential stops working.
    Remove { id: String },
}

#[derive(Debug, Args)]
struct RolloutCreate {
    model: String,
    version: String,
    /// Only devices of this group.
    #[arg(long)]
    group: Option<String>,
    /// Only devices with this tag (`KEY=VALUE`, repeatable).
    #[arg(long)]
    tag: Vec<String>,
    /// Only these devices (repeatable).
    #[arg(long)]
    device: Vec<String>,
    /// Cumulative percentages, e.g. `1,10,50,100` (the default).
    #[arg(long, value_delimiter = ',', conflicts_with = "exponential")]
    waves: Option<Vec<f64>>,
    /// An exponential rate instead of waves: `START,FACTOR`, e.g. `1,2` for 1, 2, 4, ... 100 %.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    exponential: Option<Vec<f64>>,
    /// Largest share of a wave that may fail (default 0).
    #[arg(long)]
    max_failure_ratio: Option<f64>,
    /// Smallest share of a wave that must be healthy (default 1 - max failure ratio).
    #[arg(long)]
    min_healthy_ratio: Option<f64>,
    /// Seconds to watch a passed wave before the next (default 0).
    #[arg(long)]
    bake_seconds: Option<u64>,
    /// Seconds a device has to settle before it counts as failed (default 600).
    #[arg(long)]
    device_timeout_seconds: Option<u64>,
    /// Wait for `fleetctl rollout approve` between waves.
    #[arg(long)]
    require_approval: bool,
    /// Model gate: the new version's error rate at most this much above the previous
    /// version's (a fraction: 0.01 is one percentage point).
    #[arg(long)]
    gate_error_rate_increase: Option<f64>,
    /// Model gate: the new version's p99 latency at most this many percent above the previous's.
    #[arg(long)]
    gate_p99_slowdown_percent: Option<f64>,
    /// Model gate: PSI between the new and previous version's predicted labels at most this.
    #[arg(long)]
    gate_output_shift_psi: Option<f64>,
    /// Model gate: no input feature's drift PSI against the new version's baseline above this.
    #[arg(long)]
    gate_input_drift_psi: Option<f64>,
    /// Requests each side must have served before the model gates judge (default 100).
    #[arg(long)]
    gate_min_requests: Option<u64>,
    /// On a gate breach, halt but leave updated devices on the new version.
    #[arg(long)]
    no_rollback: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Roll a signed version out in waves.
    Create(Box<RolloutCreate>),
    List {
        #[arg(long)]
        json: bool,
    },
    /// Per-wave progress; `--watch` redraws until the rollout ends.
    Status {
        id: String,
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        json: bool,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Approve {
        id: String,
    },
    Abort {
        id: String,
    },
    RetryFailed {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token; its secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Revoke {
        id: i64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // reqwest is built without a default TLS provider; use aws-lc-rs as tough does.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("fleetctl: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fleetctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let url = cli.url.as_deref();
    let token = cli.token.as_deref();
    let client = || remote::Client::new(remote::resolve(url, token)?);
    match cli.command {
        Command::Keygen { dir, names } => keygen(&dir, &names),
        Command::Init {
            repo,
            root_keys,
            root_threshold,
            targets_threshold,
            root_days,
        } => {
            let spec = InitSpec {
                root_keys: &root_keys,
                root_threshold,
                targets_threshold,
                root_days,
            };
            if repo.server {
                init_on_server(&client()?, &repo, &spec).await
            } else {
                init(&repo, &spec).await
            }
        }
        Command::Push {
            repo,
            release,
            model_dir,
        } => {
            let client = if repo.server { Some(client()?) } else { None };
            let target = repository(&repo, client.as_ref())?;
            push::push(&target, &repo, &release, &model_dir).await
        }
        Command::Delegate {
            repo,
            threshold,
            all,
            model,
        } => {
            let client = if repo.server { Some(client()?) } else { None };
            let target = repository(&repo, client.as_ref())?;
            let models = match model {
                Some(model) if !all => vec![model],
                _ => delegate::listed_models(&target, &repo).await?,
            };
            for model in models {
                delegate::delegate(&target, &repo, &model, &repo.model_keys, threshold).await?;
            }
            Ok(())
        }
        Command::Prune { repo, keep, model } => {
            let client = if repo.server { Some(client()?) } else { None };
            push::prune(&repository(&repo, client.as_ref())?, &repo, &model, keep).await
        }
        Command::Revoke { repo, target } => {
            let client = if repo.server { Some(client()?) } else { None };
            push::revoke(&repository(&repo, client.as_ref())?, &repo, &target).await
        }
        Command::RotateKeys {
            repo,
            role,
            root_keys,
            new_keys,
            threshold,
            root_days,
        } => {
            let server = if repo.server { Some(client()?) } else { None };
            let spec = rotate::RotationSpec {
                role,
                root_keys: &root_keys,
                new_keys: &new_keys,
                threshold,
                root_days,
            };
            rotate::rotate_keys(server.as_ref(), &repo, &spec).await
        }
        Command::Verify { repo, root } => verify(&repo, root.as_deref()).await,
        Command::Login { server, token_file } => {
            let token = match (token_file, token) {
                (Some(path), _) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
                (None, Some(t)) => t.to_owned(),
                (None, None) => bail!("pass --token-file FILE (or --token TOKEN)"),
            };
            remote::login(&server, &token).await
        }
        Command::Models { json } => remote::models(&client()?, json).await,
        Command::Devices { group, tag, json } => {
            remote::devices(&client()?, group.as_deref(), tag.as_deref(), json).await
        }
        Command::Device { command } => {
            let client = client()?;
            match command {
                DeviceCommand::Add {
                    id,
                    group,
                    tag,
                    renew,
                    json,
                } => remote::device_add(&client, &id, group.as_deref(), &tag, renew, json).await,
                DeviceCommand::Show { id, json } => remote::device_show(&client, &id, json).await,
                DeviceCommand::Assign { id, models } => {
                    remote::device_assign(&client, &id, &models).await
                }
                DeviceCommand::Remove { id } => remote::device_remove(&client, &id).await,
            }
        }
        Command::Groups { json } => remote::groups(&client()?, json).await,
        Command::Promote {
            model,
            version,
            stage,
        } => remote::promote(&client()?, &model, &version, &stage).await,
        Command::Rollout { command } => {
            let client = client()?;
            match command {
                RolloutCommand::Create(args) => {
                    let RolloutCreate {
                        model,
                        version,
                        group,
                        tag,
                        device,
                        waves,
                        exponential,
                        max_failure_ratio,
                        min_healthy_ratio,
                        bake_seconds,
                        device_timeout_seconds,
                        require_approval,
                        gate_error_rate_increase,
                        gate_p99_slowdown_percent,
                        gate_output_shift_psi,
                        gate_input_drift_psi,
                        gate_min_requests,
                        no_rollback,
                        json,
                    } = *args;
                    let gates = [
                        ("max_error_rate_increase", gate_error_rate_increase),
                        ("max_p99_slowdown_percent", gate_p99_slowdown_percent),
                        ("max_output_shift_psi", gate_output_shift_psi),
                        ("max_input_drift_psi", gate_input_drift_psi),
                    ];
                    let mut model_gates = serde_json::Map::new();
                    for (key, value) in gates {
                        if let Some(v) = value {
                            model_gates.insert(key.into(), serde_json::json!(v));
                        }
                    }
                    if let Some(n) = gate_min_requests {
                        if model_gates.is_empty() {
                            bail!(
                                "--gate-min-requests needs a model gate (--gate-p99-slowdown-percent, ...)"
                            );
                        }
                        model_gates.insert("min_requests".into(), serde_json::json!(n));
                    }
                    let exponential = match exponential.as_deref() {
                        None => None,
                        Some([start, factor]) => Some((*start, *factor)),
                        Some(_) => bail!("--exponential takes START,FACTOR, e.g. 1,2"),
                    };
                    let options = remote::RolloutOptions {
                        model,
                        version,
                        group,
                        tags: tag,
                        devices: device,
                        waves,
                        exponential,
                        max_failure_ratio,
                        min_healthy_ratio,
                        bake_seconds,
                        device_timeout_seconds,
                        require_approval,
                        model_gates: (!model_gates.is_empty())
                            .then_some(serde_json::Value::Object(model_gates)),
                        no_rollback,
                    };
                    remote::rollout_create(&client, &options, json).await
                }
                RolloutCommand::List { json } => remote::rollout_list(&client, json).await,
                RolloutCommand::Status { id, watch, json } => {
                    remote::rollout_status(&client, &id, watch, json).await
                }
                RolloutCommand::Pause { id } => {
                    remote::rollout_command(&client, &id, "pause").await
                }
                RolloutCommand::Resume { id } => {
                    remote::rollout_command(&client, &id, "resume").await
                }
                RolloutCommand::Approve { id } => {
                    remote::rollout_command(&client, &id, "approve").await
                }
                RolloutCommand::Abort { id } => {
                    remote::rollout_command(&client, &id, "abort").await
                }
                RolloutCommand::RetryFailed { id } => {
                    remote::rollout_command(&client, &id, "retry-failed").await
                }
            }
        }
        Command::Token { command } => {
            let client = client()?;
            match command {
                TokenCommand::Create { name, role, json } => {
                    remote::token_create(&client, &name, &role, json).await
                }
                TokenCommand::List { json } => remote::token_list(&client, json).await,
                TokenCommand::Revoke { id } => remote::token_revoke(&client, id).await,
            }
        }
    }
}

fn check_key_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!("key name {name:?} must be letters, digits, '-' or '_'");
    }
    Ok(())
}

fn keygen(dir: &Path, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        check_key_name(name)?;
    }
    // Check every name first so a partial run never leaves some roles keyed and others not.
    for name in names {
        let path = dir.join(format!("{name}.pem"));
        if path.exists() {
            bail!(
                "{} already exists; refusing to overwrite a key (move it away first)",
                path.display()
            );
        }
    }
    let mut out = std::io::stdout().lock();
    for name in names {
        let key = keys::generate(dir, name).with_context(|| format!("generating key {name:?}"))?;
        writeln!(
            out,
            "{name}: key id {}  private {} (0600)  public {}",
            key.key_id,
            key.private_path.display(),
            key.public_path.display()
        )?;
    }
    Ok(())
}

fn source(keys_dir: &Path, name: &str) -> anyhow::Result<Box<dyn KeySource>> {
    check_key_name(name)?;
    let path = keys_dir.join(format!("{name}.pem"));
    // Fail early, with the path, rather than inside a signing call.
    keys::load_signer(&path).with_context(|| format!("loading key {name:?}"))?;
    Ok(Box::new(PemKeySource { path }))
}

fn public(keys_dir: &Path, name: &str) -> anyhow::Result<tough::schema::key::Key> {
    check_key_name(name)?;
    keys::read_public(&keys_dir.join(format!("{name}.pub.json")))
        .with_context(|| format!("reading public key {name:?}"))
}

fn online(args: &RepoArgs) -> anyhow::Result<OnlineKeys> {
    Ok(OnlineKeys {
        snapshot: source(&args.keys, &args.snapshot_key)?,
        timestamp: source(&args.keys, &args.timestamp_key)?,
    })
}

fn targets_signers(args: &RepoArgs) -> anyhow::Result<Vec<Box<dyn KeySource>>> {
    args.targets_keys
        .iter()
        .map(|n| source(&args.keys, n))
        .collect()
}

fn open(args: &RepoArgs) -> anyhow::Result<RepoStore> {
    Ok(RepoStore::open(
        &args.repo,
        online(args)?,
        Expiries::default(),
    )?)
}

struct InitSpec<'a> {
    root_keys: &'a [String],
    root_threshold: u64,
    targets_threshold: u64,
    root_days: u32,
}

/// Root (version 1) over the given snapshot and timestamp keys, signed by the root keys, and
/// empty targets (version 1) signed by the targets keys.
async fn initial_metadata(
    args: &RepoArgs,
    spec: &InitSpec<'_>,
    snapshot: tough::schema::key::Key,
    timestamp: tough::schema::key::Key,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let now = Timestamp::now();
    let root_spec = RootSpec {
        root: RoleSpec {
            keys: spec
                .root_keys
                .iter()
                .map(|n| public(&args.keys, n))
                .collect::<Result<_, _>>()?,
            threshold: spec.root_threshold,
        },
        targets: RoleSpec {
            keys: args
                .targets_keys
                .iter()
                .map(|n| public(&args.keys, n))
                .collect::<Result<_, _>>()?,
            threshold: spec.targets_threshold,
        },
        snapshot: RoleSpec {
            keys: vec![snapshot],
            threshold: 1,
        },
        timestamp: RoleSpec {
            keys: vec![timestamp],
            threshold: 1,
        },
    };
    let root = operator::build_root(&root_spec, 1, operator::days_after(now, spec.root_days)?)?;
    let root_signers: Vec<_> = spec
        .root_keys
        .iter()
        .map(|n| source(&args.keys, n))
        .collect::<Result<_, _>>()?;
    let root_bytes = operator::sign_root(&root, &[&root], &root_signers).await?;
    let targets = operator::empty_targets(1, operator::days_after(now, args.targets_days)?)?;
    let targets = operator::sign_with(targets, &root, &targets_signers(args)?).await?;
    Ok((root_bytes, operator::to_bytes(&targets)?))
}

async fn init(args: &RepoArgs, spec: &InitSpec<'_>) -> anyhow::Result<()> {
    let (root_bytes, targets_bytes) = initial_metadata(
        args,
        spec,
        public(&args.keys, &args.snapshot_key)?,
        public(&args.keys, &args.timestamp_key)?,
    )
    .await?;
    let (_, published) = RepoStore::create(
        &args.repo,
        &root_bytes,
        &targets_bytes,
        online(args)?,
        Expiries::default(),
        Timestamp::now(),
    )
    .await?;
    println!(
        "created {} (root 1, targets {}, snapshot {}, timestamp {})\nship {} to devices as their trusted root",
        args.repo.display(),
        published.targets_version,
        published.snapshot_version,
        published.timestamp_version,
        args.repo.join("metadata/1.root.json").display()
    );
    Ok(())
}

/// Creates the server's repository: the server's online public keys go into a root signed here.
/// The root is also written to `<keys>/root.json`, to ship to devices as their trusted root.
async fn init_on_server(
    client: &remote::Client,
    args: &RepoArgs,
    spec: &InitSpec<'_>,
) -> anyhow::Result<()> {
    let online = client
        .get(
            "/api/v1/tuf/online-keys",
            "fetching the server's online keys",
        )
        .await?;
    let key = |role: &str| -> anyhow::Result<tough::schema::key::Key> {
        serde_json::from_value(online[role].clone())
            .with_context(|| format!("the server's {role} key is not a TUF key"))
    };
    let (root_bytes, targets_bytes) =
        initial_metadata(args, spec, key("snapshot")?, key("timestamp")?).await?;
    let body = serde_json::json!({
        "root": String::from_utf8(root_bytes.clone())?,
        "targets": String::from_utf8(targets_bytes)?,
    });
    client
        .send_json(
            reqwest::Method::POST,
            "/api/v1/tuf/init",
            &body,
            "creating the repository",
        )
        .await?;
    let root_path = args.keys.join("root.json");
    std::fs::write(&root_path, &root_bytes)
        .with_context(|| format!("writing {}", root_path.display()))?;
    println!(
        "created the repository on {}\nship {} to devices as their trusted root",
        client.login.server,
        root_path.display()
    );
    Ok(())
}

/// The server's current root and targets, after checking the targets carry a signature by one
/// of this operator's targets keys (so the server cannot slip in targets nobody signed).
async fn server_targets(
    client: &remote::Client,
    args: &RepoArgs,
) -> anyhow::Result<(
    tough::schema::Root,
    tough::schema::Signed<tough::schema::Targets>,
)> {
    let root_bytes = client
        .get_bytes("/tuf/metadata/root.json", "fetching root.json")
        .await?;
    let root: tough::schema::Signed<tough::schema::Root> =
        serde_json::from_slice(&root_bytes).context("the server's root.json does not parse")?;
    let bytes = client
        .get_bytes("/api/v1/tuf/targets", "fetching the current targets")
        .await?;
    let current: tough::schema::Signed<tough::schema::Targets> =
        serde_json::from_slice(&bytes).context("the server's targets.json does not parse")?;
    let ours: Vec<_> = args
        .targets_keys
        .iter()
        .map(|n| public(&args.keys, n))
        .collect::<Result<_, _>>()?;
    edgefleet_tuf::verify::signed_by_one_of(&root.signed, &current, &ours)
        .context("the server's current targets are not signed by your targets keys; refusing to sign on top of them")?;
    Ok((root.signed, current))
}

/// The repository `args` name: the fleet server's (`--server`) or the local one.
fn repository<'a>(
    args: &RepoArgs,
    client: Option<&'a remote::Client>,
) -> anyhow::Result<delegate::Repository<'a>> {
    Ok(match client {
        Some(client) => delegate::Repository::Server(client),
        None => delegate::Repository::Local(open(args)?),
    })
}

/// How a pushed release's rollback floor and downgrades are decided, and how its files travel.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ReleaseArgs {
    /// The rollback floor (`min_sequence`) a release sets when its release.json does not:
    /// "previous" lets a device go back exactly one release (the rollback after a halted
    /// rollout) and never further; "own" allows no way back at all. Set it once for your
    /// release machine in the environment.
    #[arg(long, env = "EDGEFLEET_FLOOR_POLICY", default_value = "previous")]
    floor_policy: operator::FloorPolicy,
    /// Sign a release whose version is below one already listed (a deliberate downgrade). It
    /// still needs a higher sequence; the version it goes back from is recorded in the target.
    #[arg(long)]
    allow_downgrade: bool,
    /// Sign without checking interface.json against the model's graph (names, element types,
    /// ranks, fixed dims). Devices still refuse a model that does not fit; this exists to test
    /// that they do, and for a graph this check misreads.
    #[arg(long)]
    skip_graph_check: bool,
    /// Largest release file (the golden cases or the baseline, as JSON) a push signs, in MiB.
    /// Devices have their own limit (`limits.max_release_file_bytes`, default 64 MiB).
    #[arg(long, default_value_t = 64)]
    pub(crate) max_release_file_mib: u64,
    /// Keep the golden cases and baseline inside the signed metadata, as releases did before
    /// they became release files: only for fleets whose agents predate release files (every
    /// device then downloads them with the metadata, for every release listed).
    #[arg(long)]
    pub(crate) inline_release_files: bool,
}

impl ReleaseArgs {
    /// Checks the release against its graph, then settles its floor and downgrade fields
    /// against what is already signed.
    pub(crate) fn settle(
        &self,
        current: &tough::schema::Targets,
        release: &mut operator::ReleaseDir,
    ) -> anyhow::Result<()> {
        if self.skip_graph_check {
            eprintln!(
                "warning: interface.json was not checked against the graph (--skip-graph-check)"
            );
        } else {
            let graph = edgefleet_onnx_graph::read(&release.artifact)
                .context("reading model.onnx's inputs and outputs")?;
            let notes = edgefleet_onnx_graph::check(&graph, &release.meta.interface)?;
            for note in notes.0 {
                eprintln!("note: {note}");
            }
            for named in edgefleet_onnx_graph::name_dims(&graph, &mut release.meta.interface) {
                eprintln!("note: from the graph, {named}");
            }
        }
        operator::settle_release(current, release, self.floor_policy, self.allow_downgrade)?;
        Ok(())
    }
}

async fn verify(repo: &Path, root: Option<&Path>) -> anyhow::Result<()> {
    let root_path = root
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo.join("metadata/1.root.json"));
    let trusted_root =
        std::fs::read(&root_path).with_context(|| format!("reading {}", root_path.display()))?;
    let scratch = std::env::temp_dir().join(format!("fleetctl-verify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let result = verify_in(repo, &trusted_root, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

async fn verify_in(repo: &Path, trusted_root: &[u8], scratch: &Path) -> anyhow::Result<()> {
    let repo = std::fs::canonicalize(repo).with_context(|| format!("{}", repo.display()))?;
    let url = |sub: &str| {
        url::Url::from_directory_path(repo.join(sub))
            .map_err(|()| anyhow::anyhow!("{} is not an absolute path", repo.display()))
    };
    client::init(&scratch.join("metadata"), trusted_root)?;
    let config = ClientConfig {
        metadata_dir: scratch.join("metadata"),
        metadata_url: url("metadata")?,
        targets_url: url("targets")?,
        limits: ClientLimits::default(),
    };
    let mut trusted = client::refresh(&config, tough::FilesystemTransport).await?;
    println!(
        "metadata verifies: root {}, targets {}",
        trusted.root_version(),
        trusted.targets_version()
    );
    for mut target in trusted.all_model_targets().await? {
        trusted
            .fetch(&target, &scratch.join("staging"))
            .await
            .with_context(|| format!("artifact of {}", target.name))?;
        let files: Vec<String> = target
            .meta
            .files
            .iter()
            .map(|(kind, file)| format!("  {kind} {} bytes", file.length))
            .collect();
        trusted
            .fetch_release_files(&mut target, &scratch.join("staging"))
            .await
            .with_context(|| format!("release files of {}", target.name))?;
        println!(
            "  ok  {}  sequence {}  {} bytes  sha256 {}{}",
            target.name,
            target.meta.sequence,
            target.length,
            target.sha256_hex,
            files.concat()
        );
    }
    Ok(())
}
