//! `conformance-client`: the client CLI contract of the public tuf-conformance suite
//! (`CLIENT-CLI.md` there), implemented on `edgefleet_tuf::client` — the verification code the
//! edge agent runs — so the suite checks our client, not a stand-in.
//!
//! ```text
//! conformance-client --metadata-dir DIR init TRUSTED_ROOT
//! conformance-client --metadata-dir DIR --metadata-url URL refresh
//! conformance-client --metadata-dir DIR --metadata-url URL --target-name NAME [--target-name NAME ...]
//!                    --target-base-url URL --target-dir DIR download
//! ```
//!
//! Options may come in any order; exit 0 only on full success, 1 otherwise.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use edgefleet_tuf::client::{self, ClientConfig, ClientLimits};
use url::Url;

#[derive(Debug, Parser)]
#[command(
    name = "conformance-client",
    about = "tuf-conformance client CLI over Edgefleet's TUF client"
)]
struct Cli {
    #[arg(long)]
    metadata_dir: PathBuf,
    #[arg(long)]
    metadata_url: Option<String>,
    #[arg(long)]
    target_name: Vec<String>,
    #[arg(long)]
    target_base_url: Option<String>,
    #[arg(long)]
    target_dir: Option<PathBuf>,
    command: CommandName,
    /// For `init`: the trusted root file.
    trusted_root: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CommandName {
    Init,
    Refresh,
    Download,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("conformance-client: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// A base URL that `Url::join` extends instead of replacing its last segment.
fn base_url(s: &str) -> anyhow::Result<Url> {
    let with_slash = if s.ends_with('/') {
        s.to_string()
    } else {
        format!("{s}/")
    };
    Url::parse(&with_slash).with_context(|| format!("invalid URL {s:?}"))
}

fn config(cli: &Cli, targets_url: Option<&str>) -> anyhow::Result<ClientConfig> {
    let metadata_url = base_url(
        cli.metadata_url
            .as_deref()
            .context("--metadata-url is required")?,
    )?;
    let targets_url = match targets_url {
        Some(u) => base_url(u)?,
        None => metadata_url.clone(),
    };
    Ok(ClientConfig {
        metadata_dir: cli.metadata_dir.clone(),
        metadata_url,
        targets_url,
        limits: ClientLimits::default(),
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        CommandName::Init => {
            let path = cli
                .trusted_root
                .as_deref()
                .context("init needs TRUSTED_ROOT")?;
            let root =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            client::init(&cli.metadata_dir, &root)?;
        }
        CommandName::Refresh => {
            client::refresh(&config(&cli, None)?, transport()).await?;
        }
        CommandName::Download => {
            if cli.target_name.is_empty() {
                bail!("download needs at least one --target-name");
            }
            let target_dir = cli
                .target_dir
                .as_deref()
                .context("--target-dir is required")?;
            let config = config(
                &cli,
                Some(
                    cli.target_base_url
                        .as_deref()
                        .context("--target-base-url is required")?,
                ),
            )?;
            let mut trusted = client::refresh(&config, transport()).await?;
            for name in &cli.target_name {
                let target = trusted.resolve(name).await?;
                let dest = target_dir.join(local_name(name));
                if already_there(&dest, &target) {
                    continue;
                }
                let artifact = trusted
                    .fetch_plain(&target, &target_dir.join(".staging"))
                    .await?;
                let dir = dest.parent().context("target path has no parent")?;
                std::fs::create_dir_all(dir)?;
                artifact
                    .persist(&dest)
                    .with_context(|| dest.display().to_string())?;
            }
        }
    }
    Ok(())
}

/// http(s):// for the suite, file:// for local repositories (tests, USB sticks).
fn transport() -> tough::DefaultTransport {
    tough::DefaultTransport::new()
}

/// One flat file name per target path, so nothing lands outside the target directory.
fn local_name(target: &str) -> String {
    url::form_urlencoded::byte_serialize(target.as_bytes()).collect()
}

fn already_there(dest: &Path, target: &client::PlainTarget) -> bool {
    std::fs::read(dest).is_ok_and(|bytes| {
        edgefleet_tuf::metadata::check_length_and_hashes(
            &target.name,
            &bytes,
            Some(target.length),
            Some(&target.hashes),
        )
        .is_ok()
    })
}
