//! The command line: every command, its arguments and their defaults (what `--help` shows).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use edgefleet_tuf::operator::{self, Expiries};

#[derive(Debug, Parser)]
#[command(name = "fleetctl", version, about = "Operate an Edgefleet fleet")]
pub(crate) struct Cli {
    /// Fleet server URL (default: from `fleetctl login`).
    #[arg(long, global = true, env = "FLEETCTL_URL")]
    pub(crate) url: Option<String>,
    /// Operator token (default: from `fleetctl login`).
    #[arg(long, global = true, env = "FLEETCTL_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Args)]
pub(crate) struct RepoArgs {
    /// Directory holding the operator's keys (NAME.pem, NAME.pub.json).
    #[arg(long, default_value = "keys")]
    pub(crate) keys: PathBuf,
    /// Repository directory (metadata/ and targets/).
    #[arg(long, default_value = "repo")]
    pub(crate) repo: PathBuf,
    /// Key name of the online snapshot key.
    #[arg(long, default_value = "snapshot")]
    pub(crate) snapshot_key: String,
    /// Key name of the online timestamp key.
    #[arg(long, default_value = "timestamp")]
    pub(crate) timestamp_key: String,
    /// Names of the targets keys to sign with (comma-separated).
    #[arg(long, default_value = "targets", value_delimiter = ',')]
    pub(crate) targets_keys: Vec<String>,
    /// Days the new targets metadata stays valid.
    #[arg(long, default_value_t = Expiries::default().targets_days)]
    pub(crate) targets_days: u32,
    /// Publish through the fleet server (`fleetctl login`) instead of the local `--repo`. The
    /// online keys are then the server's; only root and targets keys are used here.
    #[arg(long)]
    pub(crate) server: bool,
    /// Names of the keys that sign a delegated model's role (comma-separated; `fleetctl
    /// delegate`). Default: the targets keys.
    #[arg(long, value_delimiter = ',')]
    pub(crate) model_keys: Vec<String>,
}

/// The online keys of a local repository, for bundles.
#[derive(Debug, Args)]
pub(crate) struct OnlineKeyArgs {
    /// Directory holding the keys (NAME.pem).
    #[arg(long, default_value = "keys")]
    pub(crate) keys: PathBuf,
    #[arg(long, default_value = "snapshot")]
    pub(crate) snapshot_key: String,
    #[arg(long, default_value = "timestamp")]
    pub(crate) timestamp_key: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
        role: RotatedRole,
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
    /// The model registry: every signed version, its stage and who pushed it; `models show
    /// MODEL VERSION` for one version's signed lineage and model card.
    Models {
        #[command(subcommand)]
        command: Option<ModelsCommand>,
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
    /// A model's versions against the ground truth labelled on the devices: labels joined,
    /// accuracy, ROC AUC, calibration, RMSE, and decay against the release's signed evaluation.
    Quality {
        model: String,
        /// Only this group's devices.
        #[arg(long)]
        group: Option<String>,
        /// Labels that reached devices in the last this many hours (at most 744).
        #[arg(long, default_value_t = 168)]
        hours: u32,
        #[arg(long)]
        json: bool,
    },
    /// Upload ground truth for devices' predictions (late, in any order): a CSV file with a
    /// header `device,model,id,label` (or `value`), or JSON `{"labels": [...]}`; each device
    /// fetches its own and joins them to its predictions.
    Feedback {
        file: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The sampled prediction log devices sent (what each release's signed sampling policy lets
    /// leave them), newest first.
    Samples {
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        device: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Guard policies set per group and model: the server judges that group's telemetry by
    /// them (and takes their fleet action) in place of the releases' signed policies; devices
    /// keep to the signed ones.
    Guard {
        #[command(subcommand)]
        command: Option<GuardCommand>,
    },
    /// The review queue of low-confidence answers: list, label (the label goes to the device,
    /// which counts it in the version's accuracy), dismiss.
    Review {
        #[command(subcommand)]
        command: Option<ReviewCommand>,
    },
    /// The server's own alerts (a release's guard policy breached on devices): list, show,
    /// ack, resolve.
    Alerts {
        #[command(subcommand)]
        command: Option<AlertsCommand>,
    },
    /// The audit log of operator calls, and the check of its hash chain (admin only).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Import a model version from another registry as a release directory, and push it.
    Import {
        #[command(subcommand)]
        source: ImportSource,
    },
    /// Write an offline bundle: one signed model version and the metadata to trust it, as a
    /// directory `edge-agent install DIR` takes with no network, installable for `--valid-days`
    /// (docs/BUNDLES.md). From the fleet server by default (it signs the bundle's timestamp and
    /// snapshot), or from a local repository with `--repo`.
    Bundle {
        #[arg(long)]
        model: String,
        #[arg(long)]
        version: String,
        /// Days the bundle stays installable (1 to 366; at most as long as targets lasts).
        #[arg(long)]
        valid_days: u32,
        /// Directory to create.
        #[arg(long)]
        out: PathBuf,
        /// Bundle from this local repository (signed with its online keys from --keys)
        /// instead of the fleet server.
        #[arg(long)]
        repo: Option<PathBuf>,
        #[command(flatten)]
        keys: OnlineKeyArgs,
    },
    /// Re-sign a bundle's timestamp and snapshot for another `--valid-days` from now, offline,
    /// with the online keys of the repository it came from (a local repository's; a fleet
    /// server's bundle is made anew instead).
    ResignBundle {
        /// The bundle directory.
        dir: PathBuf,
        #[arg(long)]
        valid_days: u32,
        #[command(flatten)]
        keys: OnlineKeyArgs,
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
pub(crate) enum ImportSource {
    /// An MLflow model version (ONNX flavour): interface from its signature, golden vectors
    /// computed with ONNX Runtime from its input example (or --sample), lineage from its run
    /// (params, metrics, git commit), card from its description; then signed like `push`.
    Mlflow(MlflowImportArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MlflowImportArgs {
    /// The tracking server, e.g. http://mlflow:5000.
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    pub(crate) tracking_uri: String,
    /// Registered model name, or `models:/NAME/VERSION`, or `models:/NAME@ALIAS`.
    #[arg(long)]
    pub(crate) model: String,
    #[arg(long)]
    pub(crate) version: Option<String>,
    #[arg(long)]
    pub(crate) alias: Option<String>,
    /// The Edgefleet model name (default: the registered model's).
    #[arg(long = "as")]
    pub(crate) name: Option<String>,
    /// The release's semantic version (default: N.0.0 for MLflow version N, which is also its
    /// sequence).
    #[arg(long)]
    pub(crate) release_version: Option<String>,
    /// Example inputs for the golden vectors (JSON: an array for a single input, or arrays by
    /// input name), instead of the logged input example.
    #[arg(long)]
    pub(crate) sample: Option<PathBuf>,
    /// Where to write the release directory (default: NAME-VERSION).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// ONNX Runtime (≥ 1.22), which computes the golden vectors.
    #[arg(
        long,
        env = "EDGEFLEET_ONNXRUNTIME_LIBRARY",
        default_value = "/usr/lib/edgefleet/libonnxruntime.so"
    )]
    pub(crate) onnxruntime_library: PathBuf,
    /// The p99 latency budget of the health check, in ms.
    #[arg(long, default_value_t = 50.0)]
    pub(crate) p99_budget_ms: f64,
    /// Write the release directory only; push it later with `fleetctl push`.
    #[arg(long)]
    pub(crate) no_push: bool,
    #[command(flatten)]
    pub(crate) repo: RepoArgs,
    #[command(flatten)]
    pub(crate) release: ReleaseArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ModelsCommand {
    /// One version: stage, who pushed it, its signed lineage (training code, data, parameters,
    /// metrics) and its model card.
    Show {
        model: String,
        version: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeviceCommand {
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
pub(crate) struct RolloutCreate {
    pub(crate) model: String,
    pub(crate) version: String,
    /// Only devices of this group.
    #[arg(long)]
    pub(crate) group: Option<String>,
    /// Only devices with this tag (`KEY=VALUE`, repeatable).
    #[arg(long)]
    pub(crate) tag: Vec<String>,
    /// Only these devices (repeatable).
    #[arg(long)]
    pub(crate) device: Vec<String>,
    /// Cumulative percentages, e.g. `1,10,50,100` (the default).
    #[arg(long, value_delimiter = ',', conflicts_with = "exponential")]
    pub(crate) waves: Option<Vec<f64>>,
    /// An exponential rate instead of waves: `START,FACTOR`, e.g. `1,2` for 1, 2, 4, ... 100 %.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    pub(crate) exponential: Option<Vec<f64>>,
    /// Largest share of a wave that may fail (default 0).
    #[arg(long)]
    pub(crate) max_failure_ratio: Option<f64>,
    /// Smallest share of a wave that must be healthy (default 1 - max failure ratio).
    #[arg(long)]
    pub(crate) min_healthy_ratio: Option<f64>,
    /// Seconds to watch a passed wave before the next (default 0).
    #[arg(long)]
    pub(crate) bake_seconds: Option<u64>,
    /// Seconds a device has to settle before it counts as failed (default 600).
    #[arg(long)]
    pub(crate) device_timeout_seconds: Option<u64>,
    /// Wait for `fleetctl rollout approve` between waves.
    #[arg(long)]
    pub(crate) require_approval: bool,
    /// Model gate: the new version's error rate at most this much above the previous
    /// version's (a fraction: 0.01 is one percentage point).
    #[arg(long)]
    pub(crate) gate_error_rate_increase: Option<f64>,
    /// Model gate: the new version's p99 latency at most this many percent above the previous's.
    #[arg(long)]
    pub(crate) gate_p99_slowdown_percent: Option<f64>,
    /// Model gate: PSI between the new and previous version's predicted labels at most this.
    #[arg(long)]
    pub(crate) gate_output_shift_psi: Option<f64>,
    /// Model gate: no input feature's drift PSI against the new version's baseline above this.
    #[arg(long)]
    pub(crate) gate_input_drift_psi: Option<f64>,
    /// Model gate: accuracy on labelled traffic (labels joined on the devices) at most this
    /// fraction below the previous version's (0.02: two points).
    #[arg(long)]
    pub(crate) gate_accuracy_drop: Option<f64>,
    /// Labels each version needs before the accuracy gate judges (server default 100).
    #[arg(long)]
    pub(crate) gate_min_labelled: Option<u64>,
    /// Requests each side must have served before the model gates judge (default 100).
    #[arg(long)]
    pub(crate) gate_min_requests: Option<u64>,
    /// On a gate breach, halt but leave updated devices on the new version.
    #[arg(long)]
    pub(crate) no_rollback: bool,
    /// `canary` (default): each wave installs and serves the version. `shadow`: each wave
    /// first runs it beside the serving version on copies of requests and promotes it in place
    /// only once the shadow gate passes. `split`: each wave's devices answer `--shadow-share`
    /// of their requests with it, each arm's outcomes counted, and promote it once the split
    /// gate passes (errors, p99, and with labels no significantly worse accuracy).
    #[arg(long, value_parser = ["canary", "shadow", "split"])]
    pub(crate) strategy: Option<String>,
    /// Shadow: share of each device's requests copied to the challenger; split: answered by it
    /// (default 0.1).
    #[arg(long)]
    pub(crate) shadow_share: Option<f64>,
    /// Shadow: most of one core's time the challenger may take (default 0.25).
    #[arg(long)]
    pub(crate) shadow_cpu_share: Option<f64>,
    /// Shadow gate: compared requests (split: the challenger's answers) a wave needs before its
    /// verdict (default 200).
    #[arg(long)]
    pub(crate) shadow_min_compared: Option<u64>,
    /// Shadow gate: least share of requests both versions answer alike (default 0.9).
    #[arg(long)]
    pub(crate) shadow_min_agreement: Option<f64>,
    /// Shadow gate: the challenger's accuracy on labelled requests at most this far below the
    /// serving version's on the same requests; a split stops a challenger only when its arm is
    /// behind by significantly more (default 0.02).
    #[arg(long)]
    pub(crate) shadow_max_accuracy_drop: Option<f64>,
    /// Shadow gate: labelled requests (split: on each arm) needed before accuracy is judged
    /// (default 100).
    #[arg(long)]
    pub(crate) shadow_min_labelled: Option<u64>,
    /// Shadow: a device that cannot hold both models goes `canary` (default) or fails
    /// (`refuse`).
    #[arg(long, value_parser = ["canary", "refuse"])]
    pub(crate) shadow_fallback: Option<String>,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RolloutCommand {
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
pub(crate) enum TokenCommand {
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

#[derive(Debug, Subcommand)]
pub(crate) enum AlertsCommand {
    /// Open alerts (firing or acknowledged), newest change first. The default.
    List {
        /// Only alerts in this state.
        #[arg(long, value_parser = ["firing", "acknowledged", "resolved"])]
        state: Option<String>,
        /// Resolved ones too.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// One alert: its evidence, what the server did, webhook deliveries.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge: someone is on it (it stays open).
    Ack {
        id: i64,
        #[arg(long)]
        note: Option<String>,
    },
    /// Resolve: webhooks hear it resolved; a later breach opens a new alert.
    Resolve { id: i64 },
}

#[derive(Debug, Subcommand)]
pub(crate) enum GuardCommand {
    /// Every group's policies. The default.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Set a group's policy for a model from a JSON file (the form of release.json's `guard`).
    Set {
        #[arg(long)]
        group: String,
        #[arg(long)]
        model: String,
        file: PathBuf,
    },
    /// Remove it: the releases' signed policies apply to the group again.
    Clear {
        #[arg(long)]
        group: String,
        #[arg(long)]
        model: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ReviewCommand {
    /// Items waiting for review, newest first. The default.
    List {
        #[arg(long)]
        model: Option<String>,
        /// Closed ones instead: `labelled` or `dismissed`.
        #[arg(long, value_parser = ["open", "labelled", "dismissed"], default_value = "open")]
        state: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Label an item (a classifier's label, or `--value` for a regressor).
    Label {
        device: String,
        model: String,
        id: String,
        /// The true label.
        #[arg(required_unless_present = "value")]
        label: Option<String>,
        #[arg(long, conflicts_with = "label")]
        value: Option<f64>,
    },
    /// Set an item aside without a label.
    Dismiss {
        device: String,
        model: String,
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Entries, newest first.
    List {
        /// Only this operator's calls (a token name; `device:<id>` for enrollments).
        #[arg(long)]
        actor: Option<String>,
        /// Only calls of this route, as the API declares it (`/api/v1/devices/{id}`).
        #[arg(long)]
        route: Option<String>,
        /// Only the last this many hours.
        #[arg(long)]
        hours: Option<u32>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Walk the hash chain; exits non-zero when it is broken, or when `--expect-head` (a head
    /// printed by an earlier check, `SEQ:HASH`) is no longer in it.
    Verify {
        #[arg(long)]
        expect_head: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// How a pushed release's rollback floor and downgrades are decided, and how its files travel.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ReleaseArgs {
    /// The rollback floor (`min_sequence`) a release sets when its release.json does not:
    /// "previous" lets a device go back exactly one release (the rollback after a halted
    /// rollout) and never further; "own" allows no way back at all. Set it once for your
    /// release machine in the environment.
    #[arg(long, env = "EDGEFLEET_FLOOR_POLICY", default_value = "previous")]
    pub(crate) floor_policy: operator::FloorPolicy,
    /// Sign a release whose version is below one already listed (a deliberate downgrade). It
    /// still needs a higher sequence; the version it goes back from is recorded in the target.
    #[arg(long)]
    pub(crate) allow_downgrade: bool,
    /// Sign without checking interface.json against the model's graph (names, element types,
    /// ranks, fixed dims). Devices still refuse a model that does not fit; this exists to test
    /// that they do, and for a graph this check misreads.
    #[arg(long)]
    pub(crate) skip_graph_check: bool,
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

/// Which role's keys to replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RotatedRole {
    Root,
    Targets,
    Snapshot,
    Timestamp,
}
