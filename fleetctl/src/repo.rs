//! The repository commands that work on local files and keys: key generation, creating a
//! repository (locally or on the server), and verifying one the way a device would.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use edgefleet_tuf::client::{self, ClientConfig, ClientLimits};
use edgefleet_tuf::keys::{self, PemKeySource};
use edgefleet_tuf::operator::{self, Expiries, RoleSpec, RootSpec};
use edgefleet_tuf::repo::{OnlineKeys, RepoStore};
use jiff::Timestamp;
use tough::key_source::KeySource;

use crate::cli::RepoArgs;
use crate::remote;

pub(crate) fn check_key_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!("key name {name:?} must be letters, digits, '-' or '_'");
    }
    Ok(())
}

pub(crate) fn keygen(dir: &Path, names: &[String]) -> anyhow::Result<()> {
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

pub(crate) fn source(keys_dir: &Path, name: &str) -> anyhow::Result<Box<dyn KeySource>> {
    check_key_name(name)?;
    let path = keys_dir.join(format!("{name}.pem"));
    // Fail early, with the path, rather than inside a signing call.
    keys::load_signer(&path).with_context(|| format!("loading key {name:?}"))?;
    Ok(Box::new(PemKeySource { path }))
}

pub(crate) fn public(keys_dir: &Path, name: &str) -> anyhow::Result<tough::schema::key::Key> {
    check_key_name(name)?;
    keys::read_public(&keys_dir.join(format!("{name}.pub.json")))
        .with_context(|| format!("reading public key {name:?}"))
}

pub(crate) fn online(args: &RepoArgs) -> anyhow::Result<OnlineKeys> {
    Ok(OnlineKeys {
        snapshot: source(&args.keys, &args.snapshot_key)?,
        timestamp: source(&args.keys, &args.timestamp_key)?,
    })
}

pub(crate) fn targets_signers(args: &RepoArgs) -> anyhow::Result<Vec<Box<dyn KeySource>>> {
    args.targets_keys
        .iter()
        .map(|n| source(&args.keys, n))
        .collect()
}

pub(crate) fn open(args: &RepoArgs) -> anyhow::Result<RepoStore> {
    Ok(RepoStore::open(
        &args.repo,
        online(args)?,
        Expiries::default(),
    )?)
}

pub(crate) struct InitSpec<'a> {
    pub(crate) root_keys: &'a [String],
    pub(crate) root_threshold: u64,
    pub(crate) targets_threshold: u64,
    pub(crate) root_days: u32,
}

/// Root (version 1) over the given snapshot and timestamp keys, signed by the root keys, and
/// empty targets (version 1) signed by the targets keys.
pub(crate) async fn initial_metadata(
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

pub(crate) async fn init(args: &RepoArgs, spec: &InitSpec<'_>) -> anyhow::Result<()> {
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
pub(crate) async fn init_on_server(
    client: &remote::Client,
    args: &RepoArgs,
    spec: &InitSpec<'_>,
) -> anyhow::Result<()> {
    let online: serde_json::Value = client
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
    let _: serde_json::Value = client
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
pub(crate) async fn server_targets(
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
pub(crate) async fn verify(repo: &Path, root: Option<&Path>) -> anyhow::Result<()> {
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

pub(crate) async fn verify_in(
    repo: &Path,
    trusted_root: &[u8],
    scratch: &Path,
) -> anyhow::Result<()> {
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
