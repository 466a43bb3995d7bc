//! `fleetctl`, the operator's command line. It runs where the offline keys are: it makes the TUF
//! keys, creates the repository, signs model versions into `targets`, revokes them, rotates
//! `root`, and verifies a repository the way a device would. Private keys never leave this
//! machine and are never printed.
//!
//! Repository commands work on a repository directory (`--repo`, default `repo`) with the
//! online keys from `--keys`: the same code the fleet server runs, so an operator can also make
//! an offline repository for a USB stick.

// A CLI answers on stdout; the workspace lint against print_stdout is meant for daemons.
#![allow(clippy::print_stdout)]

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
use tough::schema::RoleType;

#[derive(Debug, Parser)]
#[command(name = "fleetctl", version, about = "Operate an Edgefleet fleet")]
struct Cli {
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
        model_dir: PathBuf,
    },
    /// Remove a target from targets: devices refuse it from then on.
    Revoke {
        #[command(flatten)]
        repo: RepoArgs,
        /// Target name, e.g. models/churn/2.0.0/model.onnx.
        target: String,
    },
    /// Replace the root keys: a new root version signed by a threshold of the old and the new keys.
    RotateRoot {
        #[command(flatten)]
        repo: RepoArgs,
        /// Current root key names to sign with (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        old_keys: Vec<String>,
        /// New root key names (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        new_keys: Vec<String>,
        #[arg(long, default_value_t = 1)]
        threshold: u64,
        #[arg(long, default_value_t = Expiries::default().root_days)]
        root_days: u32,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    match cli.command {
        Command::Keygen { dir, names } => keygen(&dir, &names),
        Command::Init {
            repo,
            root_keys,
            root_threshold,
            targets_threshold,
            root_days,
        } => {
            init(
                &repo,
                &root_keys,
                root_threshold,
                targets_threshold,
                root_days,
            )
            .await
        }
        Command::Push { repo, model_dir } => push(&repo, &model_dir).await,
        Command::Revoke { repo, target } => revoke(&repo, &target).await,
        Command::RotateRoot {
            repo,
            old_keys,
            new_keys,
            threshold,
            root_days,
        } => rotate_root(&repo, &old_keys, &new_keys, threshold, root_days).await,
        Command::Verify { repo, root } => verify(&repo, root.as_deref()).await,
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

async fn init(
    args: &RepoArgs,
    root_keys: &[String],
    root_threshold: u64,
    targets_threshold: u64,
    root_days: u32,
) -> anyhow::Result<()> {
    let now = Timestamp::now();
    let spec = RootSpec {
        root: RoleSpec {
            keys: root_keys
                .iter()
                .map(|n| public(&args.keys, n))
                .collect::<Result<_, _>>()?,
            threshold: root_threshold,
        },
        targets: RoleSpec {
            keys: args
                .targets_keys
                .iter()
                .map(|n| public(&args.keys, n))
                .collect::<Result<_, _>>()?,
            threshold: targets_threshold,
        },
        snapshot: RoleSpec {
            keys: vec![public(&args.keys, &args.snapshot_key)?],
            threshold: 1,
        },
        timestamp: RoleSpec {
            keys: vec![public(&args.keys, &args.timestamp_key)?],
            threshold: 1,
        },
    };
    let root = operator::build_root(&spec, 1, operator::days_after(now, root_days)?)?;
    let root_signers: Vec<_> = root_keys
        .iter()
        .map(|n| source(&args.keys, n))
        .collect::<Result<_, _>>()?;
    let root_bytes = operator::sign_root(&root, &[&root], &root_signers).await?;
    let targets = operator::empty_targets(1, operator::days_after(now, args.targets_days)?)?;
    let targets = operator::sign_with(targets, &root, &targets_signers(args)?).await?;
    let (_, published) = RepoStore::create(
        &args.repo,
        &root_bytes,
        &operator::to_bytes(&targets)?,
        online(args)?,
        Expiries::default(),
        now,
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

async fn push(args: &RepoArgs, model_dir: &Path) -> anyhow::Result<()> {
    let (artifact, meta) = operator::read_release_dir(model_dir)?;
    let store = open(args)?;
    let now = Timestamp::now();
    let (name, target) = operator::model_target(&artifact, &meta)?;
    let sha = hex::encode(&target.hashes.sha256);
    let (current, _) = store.targets()?;
    let next = operator::with_target(
        &current.signed,
        &name,
        target,
        operator::days_after(now, args.targets_days)?,
    )?;
    let signed = operator::sign_with(next, &store.root()?.signed, &targets_signers(args)?).await?;
    store.store_artifact(&name, &artifact)?;
    let published = store
        .accept_targets(&operator::to_bytes(&signed)?, now)
        .await?;
    println!(
        "pushed {name} (sequence {}, {} bytes, sha256 {sha}); targets version {}",
        meta.sequence,
        artifact.len(),
        published.targets_version
    );
    Ok(())
}

async fn revoke(args: &RepoArgs, target: &str) -> anyhow::Result<()> {
    let store = open(args)?;
    let now = Timestamp::now();
    let (current, _) = store.targets()?;
    let next = operator::without_target(
        &current.signed,
        target,
        operator::days_after(now, args.targets_days)?,
    )?;
    let signed = operator::sign_with(next, &store.root()?.signed, &targets_signers(args)?).await?;
    let published = store
        .accept_targets(&operator::to_bytes(&signed)?, now)
        .await?;
    println!(
        "revoked {target}; targets version {}",
        published.targets_version
    );
    Ok(())
}

async fn rotate_root(
    args: &RepoArgs,
    old_keys: &[String],
    new_keys: &[String],
    threshold: u64,
    root_days: u32,
) -> anyhow::Result<()> {
    let store = open(args)?;
    let old = store.root()?.signed;
    let spec = RootSpec {
        root: RoleSpec {
            keys: new_keys
                .iter()
                .map(|n| public(&args.keys, n))
                .collect::<Result<_, _>>()?,
            threshold,
        },
        targets: operator::role_spec_of(&old, RoleType::Targets)?,
        snapshot: operator::role_spec_of(&old, RoleType::Snapshot)?,
        timestamp: operator::role_spec_of(&old, RoleType::Timestamp)?,
    };
    let signers: Vec<_> = old_keys
        .iter()
        .chain(new_keys)
        .map(|n| source(&args.keys, n))
        .collect::<Result<_, _>>()?;
    let now = Timestamp::now();
    let bytes =
        operator::rotate_root(&old, &spec, operator::days_after(now, root_days)?, &signers).await?;
    store.accept_root(&bytes, now).await?;
    println!(
        "root rotated to version {}; devices follow it on their next refresh",
        old.version.get() + 1
    );
    Ok(())
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
    let trusted = client::refresh(&config, tough::FilesystemTransport).await?;
    println!(
        "metadata verifies: root {}, targets {}",
        trusted.root().signed.version,
        trusted.targets_version()
    );
    for target in trusted.model_targets() {
        trusted
            .fetch(&target, &scratch.join("staging"))
            .await
            .with_context(|| format!("artifact of {}", target.name))?;
        println!(
            "  ok  {}  sequence {}  {} bytes  sha256 {}",
            target.name, target.meta.sequence, target.length, target.sha256_hex
        );
    }
    Ok(())
}
