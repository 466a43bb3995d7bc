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

mod bundle;
mod cli;
mod delegate;
mod mlflow;
mod push;
mod remote;
mod repo;
mod rotate;

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;

use crate::cli::{
    AlertsCommand, AuditCommand, Cli, Command, DeviceCommand, GuardCommand, ReviewCommand,
    RolloutCommand, TokenCommand,
};
use crate::repo::{InitSpec, init, init_on_server, keygen, verify};

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
            let target = delegate::Repository::open(&repo, client.as_ref())?;
            push::push(&target, &repo, &release, &model_dir).await
        }
        Command::Delegate {
            repo,
            threshold,
            all,
            model,
        } => {
            let client = if repo.server { Some(client()?) } else { None };
            let target = delegate::Repository::open(&repo, client.as_ref())?;
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
            push::prune(
                &delegate::Repository::open(&repo, client.as_ref())?,
                &repo,
                &model,
                keep,
            )
            .await
        }
        Command::Revoke { repo, target } => {
            let client = if repo.server { Some(client()?) } else { None };
            push::revoke(
                &delegate::Repository::open(&repo, client.as_ref())?,
                &repo,
                &target,
            )
            .await
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
        Command::Import {
            source: cli::ImportSource::Mlflow(args),
        } => {
            let started = std::time::Instant::now();
            let spec = mlflow::ImportSpec {
                tracking_uri: args.tracking_uri,
                model: args.model,
                version: args.version,
                alias: args.alias,
                name: args.name,
                release_version: args.release_version,
                sample: args.sample,
                out: args.out,
                onnxruntime_library: args.onnxruntime_library,
                p99_budget_ms: args.p99_budget_ms,
            };
            let dir = mlflow::import(&spec).await?;
            println!(
                "imported into {} in {:.1} s",
                dir.display(),
                started.elapsed().as_secs_f64()
            );
            if args.no_push {
                return Ok(());
            }
            let client = if args.repo.server {
                Some(client()?)
            } else {
                None
            };
            let target = delegate::Repository::open(&args.repo, client.as_ref())?;
            push::push(&target, &args.repo, &args.release, &dir).await
        }
        Command::Bundle {
            model,
            version,
            valid_days,
            out,
            repo,
            keys,
        } => {
            let spec = bundle::BundleSpec {
                model,
                version,
                valid_days,
                out,
            };
            match repo {
                Some(repo) => bundle::from_repo(&repo, online_keys(&keys)?, &spec).await,
                None => bundle::from_server(&client()?, &spec).await,
            }
        }
        Command::ResignBundle {
            dir,
            valid_days,
            keys,
        } => bundle::resign(&dir, online_keys(&keys)?, valid_days).await,
        Command::Login { server, token_file } => {
            let token = match (token_file, token) {
                (Some(path), _) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
                (None, Some(t)) => t.to_owned(),
                (None, None) => bail!("pass --token-file FILE (or --token TOKEN)"),
            };
            remote::login(&server, &token).await
        }
        Command::Models { command, json } => match command {
            None => remote::models(&client()?, json).await,
            Some(cli::ModelsCommand::Show {
                model,
                version,
                json,
            }) => remote::model_show(&client()?, &model, &version, json).await,
        },
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
                    remote::rollout_create(&client, &args.request()?, args.json).await
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
        Command::Quality {
            model,
            group,
            hours,
            json,
        } => remote::quality(&client()?, &model, group.as_deref(), hours, json).await,
        Command::Feedback { file, json } => remote::feedback(&client()?, &file, json).await,
        Command::Samples {
            model,
            version,
            device,
            limit,
            json,
        } => {
            let query = remote::SampleQuery {
                model: model.as_deref(),
                version: version.as_deref(),
                device: device.as_deref(),
                review: None,
                limit,
            };
            remote::samples_list(&client()?, &query, json).await
        }
        Command::Guard { command } => {
            let client = client()?;
            match command.unwrap_or(GuardCommand::List { json: false }) {
                GuardCommand::List { json } => remote::guard_list(&client, json).await,
                GuardCommand::Set { group, model, file } => {
                    remote::guard_set(&client, &group, &model, &file).await
                }
                GuardCommand::Clear { group, model } => {
                    remote::guard_clear(&client, &group, &model).await
                }
            }
        }
        Command::Review { command } => {
            let client = client()?;
            match command.unwrap_or(ReviewCommand::List {
                model: None,
                state: "open".into(),
                limit: 50,
                json: false,
            }) {
                ReviewCommand::List {
                    model,
                    state,
                    limit,
                    json,
                } => {
                    let query = remote::SampleQuery {
                        model: model.as_deref(),
                        review: Some(&state),
                        limit,
                        ..remote::SampleQuery::default()
                    };
                    remote::samples_list(&client, &query, json).await
                }
                ReviewCommand::Label {
                    device,
                    model,
                    id,
                    label,
                    value,
                } => {
                    let verdict = match (&label, value) {
                        (Some(label), _) => remote::Verdict::Label(label),
                        (None, Some(value)) => remote::Verdict::Value(value),
                        (None, None) => anyhow::bail!("give the true label, or --value"),
                    };
                    remote::review_close(&client, &device, &model, &id, verdict).await
                }
                ReviewCommand::Dismiss { device, model, id } => {
                    remote::review_close(&client, &device, &model, &id, remote::Verdict::Dismiss)
                        .await
                }
            }
        }
        Command::Alerts { command } => {
            let client = client()?;
            match command.unwrap_or(AlertsCommand::List {
                state: None,
                all: false,
                json: false,
            }) {
                AlertsCommand::List { state, all, json } => {
                    remote::alerts_list(&client, state.as_deref(), all, json).await
                }
                AlertsCommand::Show { id, json } => remote::alert_show(&client, id, json).await,
                AlertsCommand::Ack { id, note } => {
                    remote::alert_ack(&client, id, note.as_deref()).await
                }
                AlertsCommand::Resolve { id } => remote::alert_resolve(&client, id).await,
            }
        }
        Command::Audit { command } => {
            let client = client()?;
            match command {
                AuditCommand::List {
                    actor,
                    route,
                    hours,
                    limit,
                    json,
                } => {
                    let filter = remote::AuditQuery {
                        actor,
                        route,
                        hours,
                        limit,
                    };
                    remote::audit_list(&client, &filter, json).await
                }
                AuditCommand::Verify { expect_head, json } => {
                    remote::audit_verify(&client, expect_head.as_deref(), json).await
                }
            }
        }
    }
}

fn online_keys(args: &cli::OnlineKeyArgs) -> anyhow::Result<edgefleet_tuf::repo::OnlineKeys> {
    Ok(edgefleet_tuf::repo::OnlineKeys {
        snapshot: repo::source(&args.keys, &args.snapshot_key)?,
        timestamp: repo::source(&args.keys, &args.timestamp_key)?,
    })
}
