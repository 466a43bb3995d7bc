//! `fleetctl`, the operator's command line: makes the TUF keys, and (as later commands land)
//! signs and pushes model versions and steers rollouts. Private keys never leave the operator's
//! machine and are never printed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "fleetctl", version, about = "Operate an Edgefleet fleet")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate ed25519 key pairs for TUF roles: NAME.pem (private, 0600) and NAME.pub.json.
    Keygen {
        /// Directory to write the keys into (created if missing).
        #[arg(long, default_value = "keys")]
        dir: PathBuf,
        /// Key names; one per role by default. Use e.g. `root-2` for a second root key.
        #[arg(default_values_t = ["root".to_string(), "targets".to_string(), "snapshot".to_string(), "timestamp".to_string()])]
        names: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fleetctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen { dir, names } => keygen(&dir, &names),
    }
}

fn keygen(dir: &std::path::Path, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            anyhow::bail!("key name {name:?} must be letters, digits, '-' or '_'");
        }
    }
    // Check every name first so a partial run never leaves some roles keyed and others not.
    for name in names {
        let path = dir.join(format!("{name}.pem"));
        if path.exists() {
            anyhow::bail!(
                "{} already exists; refusing to overwrite a key (move it away first)",
                path.display()
            );
        }
    }
    let mut out = std::io::stdout().lock();
    for name in names {
        let key = edgefleet_tuf::keys::generate(dir, name)
            .with_context(|| format!("generating key {name:?}"))?;
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
