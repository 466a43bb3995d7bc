//! `rollout create|list|status|pause|resume|approve|abort|retry-failed`, on the request and view
//! types the server itself uses (`edgefleet-rollout`).

use anyhow::bail;
use edgefleet_rollout::{
    Exponential, Fallback, ModelGates, RolloutList, RolloutRequest, RolloutView, ShadowOptions,
    StateView, Strategy,
};
use reqwest::Method;

use super::devices::parse_tags;
use super::show::{ago, print_json, table, wire_name};
use super::{Client, urlencode};
use crate::cli::RolloutCreate;

impl RolloutCreate {
    /// The API request these arguments ask for; the server fills in the defaults.
    pub(crate) fn request(&self) -> anyhow::Result<RolloutRequest> {
        let exponential = match self.exponential.as_deref() {
            None => None,
            Some([start_percent, factor]) => Some(Exponential {
                start_percent: *start_percent,
                factor: *factor,
            }),
            Some(_) => bail!("--exponential takes START,FACTOR, e.g. 1,2"),
        };
        let gates = ModelGates {
            max_error_rate_increase: self.gate_error_rate_increase,
            max_p99_slowdown_percent: self.gate_p99_slowdown_percent,
            max_output_shift_psi: self.gate_output_shift_psi,
            max_input_drift_psi: self.gate_input_drift_psi,
            max_accuracy_drop: self.gate_accuracy_drop,
            ..ModelGates::default()
        };
        let any_gate = gates != ModelGates::default();
        if self.gate_min_labelled.is_some() && gates.max_accuracy_drop.is_none() {
            bail!("--gate-min-labelled needs --gate-accuracy-drop");
        }
        let gates = ModelGates {
            min_labelled: self.gate_min_labelled.unwrap_or(gates.min_labelled),
            ..gates
        };
        let model_gates = match self.gate_min_requests {
            Some(_) if !any_gate => {
                bail!("--gate-min-requests needs a model gate (--gate-p99-slowdown-percent, ...)")
            }
            Some(min_requests) => Some(ModelGates {
                min_requests,
                ..gates
            }),
            None => any_gate.then_some(gates),
        };
        let strategy = match self.strategy.as_deref() {
            Some("shadow") => Strategy::Shadow,
            Some("split") => Strategy::Split,
            _ => Strategy::Canary,
        };
        let mut shadow = ShadowOptions::default();
        let mut any_shadow = false;
        let mut set = |name: &str, given: bool| -> anyhow::Result<()> {
            if given && !strategy.uses_slot() {
                bail!("--{name} needs --strategy shadow or split");
            }
            any_shadow |= given;
            Ok(())
        };
        set("shadow-share", self.shadow_share.is_some())?;
        set("shadow-cpu-share", self.shadow_cpu_share.is_some())?;
        set("shadow-min-compared", self.shadow_min_compared.is_some())?;
        set("shadow-min-agreement", self.shadow_min_agreement.is_some())?;
        set(
            "shadow-max-accuracy-drop",
            self.shadow_max_accuracy_drop.is_some(),
        )?;
        set("shadow-min-labelled", self.shadow_min_labelled.is_some())?;
        set("shadow-fallback", self.shadow_fallback.is_some())?;
        shadow.share = self.shadow_share.unwrap_or(shadow.share);
        shadow.max_cpu_share = self.shadow_cpu_share.unwrap_or(shadow.max_cpu_share);
        shadow.gate.min_compared = self.shadow_min_compared.unwrap_or(shadow.gate.min_compared);
        shadow.gate.min_agreement = self
            .shadow_min_agreement
            .unwrap_or(shadow.gate.min_agreement);
        shadow.gate.min_labelled = self.shadow_min_labelled.unwrap_or(shadow.gate.min_labelled);
        shadow.gate.max_accuracy_drop = self
            .shadow_max_accuracy_drop
            .unwrap_or(shadow.gate.max_accuracy_drop);
        if self.shadow_fallback.as_deref() == Some("refuse") {
            shadow.fallback = Fallback::Refuse;
        }
        Ok(RolloutRequest {
            strategy,
            shadow: any_shadow.then_some(shadow),
            group: self.group.clone(),
            tags: parse_tags(&self.tag)?,
            devices: self.device.clone(),
            waves: self.waves.clone(),
            exponential,
            max_failure_ratio: self.max_failure_ratio,
            min_healthy_ratio: self.min_healthy_ratio,
            bake_seconds: self.bake_seconds,
            device_timeout_seconds: self.device_timeout_seconds,
            require_approval: self.require_approval,
            model_gates,
            rollback_on_halt: !self.no_rollback,
            ..RolloutRequest::new(&self.model, &self.version)
        })
    }
}

pub async fn rollout_create(
    client: &Client,
    request: &RolloutRequest,
    as_json: bool,
) -> anyhow::Result<()> {
    let r: RolloutView = client
        .send_json(
            Method::POST,
            "/api/v1/rollouts",
            request,
            "creating the rollout",
        )
        .await?;
    if as_json {
        return print_json(&r);
    }
    println!(
        "rollout {} started: {} {} to {} devices in {} waves ({})",
        r.id,
        r.model,
        r.version,
        r.devices_total,
        r.waves.len(),
        r.strategy.name()
    );
    Ok(())
}

pub async fn rollout_list(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let list: RolloutList = client.get("/api/v1/rollouts", "listing rollouts").await?;
    if as_json {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .rollouts
        .iter()
        .map(|r| {
            let healthy: usize = r.waves.iter().map(|w| w.healthy).sum();
            let total: usize = r.waves.iter().map(|w| w.devices).sum();
            vec![
                r.id.clone(),
                format!("{} {}", r.model, r.version),
                state_text(&r.state),
                format!("{healthy}/{total}"),
                ago(Some(r.created_at)),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ROLLOUT", "VERSION", "STATE", "HEALTHY", "CREATED"],
            &rows
        )
    );
    Ok(())
}

fn state_text(state: &StateView) -> String {
    match (state.wave, &state.reason) {
        (Some(w), Some(reason)) => format!("{} at wave {w}: {reason}", state.state),
        (Some(w), None) => format!("{} (wave {w})", state.state),
        _ => state.state.clone(),
    }
}

/// Devices with a problem a status shows (the rest are one `--json` away).
const PROBLEMS_SHOWN: usize = 10;

/// One rollout's status as a block of text: state, a bar per wave, problem devices, history.
pub fn render_rollout(r: &RolloutView) -> String {
    let mut out = format!(
        "rollout {}  {} {}  {}  ({})\n",
        r.id,
        r.model,
        r.version,
        state_text(&r.state),
        r.strategy.name()
    );
    for w in &r.waves {
        let n = w.devices;
        let (ok, bad, busy, back) = (w.healthy, w.failed, w.in_progress, w.rolled_back);
        let width = 20usize;
        let cells = |k: usize| if n == 0 { 0 } else { (k * width).div_ceil(n) };
        let (g, f, b) = (cells(ok), cells(bad), cells(busy));
        let bar: String = "#".repeat(g.min(width))
            + &"x".repeat(f.min(width.saturating_sub(g)))
            + &"~".repeat(b.min(width.saturating_sub(g + f)));
        let shadowing = if w.shadowing > 0 {
            format!(" ({} shadowing)", w.shadowing)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  wave {} ({:>5}%) [{bar:<width$}] {ok}/{n} healthy, {bad} failed, {busy} in progress{shadowing}, {back} rolled back\n",
            w.wave, w.percent,
        ));
    }
    // Earlier waves' decisions, then the current one (which may still be waiting).
    let earlier = r
        .verdicts
        .iter()
        .filter(|v| r.shadow_check.as_ref().is_none_or(|c| c.wave != v.wave));
    for check in earlier.chain(&r.shadow_check) {
        out.push_str(&format!(
            "  {} gate (wave {}): {} — {}\n",
            r.strategy.name(),
            check.wave + 1,
            check.decision,
            check.summary
        ));
    }
    if let Some(check) = &r.model_check {
        out.push_str(&format!(
            "  model gates (wave {}): {} — {}\n",
            check.wave + 1,
            if check.passed { "pass" } else { "not passed" },
            check.summary
        ));
    }
    let problems: Vec<_> = r.devices.iter().filter(|d| d.detail.is_some()).collect();
    for d in problems.iter().take(PROBLEMS_SHOWN) {
        out.push_str(&format!(
            "  {} {}: {}\n",
            d.id,
            wire_name(&d.state),
            d.detail.as_deref().unwrap_or_default()
        ));
    }
    if problems.len() > PROBLEMS_SHOWN || r.devices_next.is_some() {
        out.push_str(&format!(
            "  (more devices: fleetctl rollout status {} --json)\n",
            r.id
        ));
    }
    let recent = r.history.len().saturating_sub(5);
    for h in &r.history[recent..] {
        out.push_str(&format!("  {:>9}  {}\n", ago(Some(h.at)), h.text));
    }
    out
}

pub async fn rollout_status(
    client: &Client,
    id: &str,
    watch: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let path = format!("/api/v1/rollouts/{}", urlencode(id));
    if as_json {
        return print_json(&whole_rollout(client, &path).await?);
    }
    // The text shows problem devices only: one more than it lists says whether there are more.
    let problems = format!("{path}?problems=true&devices_limit={}", PROBLEMS_SHOWN + 1);
    let mut last_lines = 0usize;
    loop {
        let r: RolloutView = client.get(&problems, "reading the rollout").await?;
        let text = render_rollout(&r);
        if watch && last_lines > 0 && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            // Redraw in place: cursor up over the previous frame, clear to the end.
            print!("\x1b[{last_lines}A\x1b[J");
        }
        print!("{text}");
        last_lines = text.lines().count();
        if !watch || !r.state.is_active() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// The rollout at `path` with every device, page after page.
async fn whole_rollout(client: &Client, path: &str) -> anyhow::Result<RolloutView> {
    let mut whole: RolloutView = client
        .get(
            &format!("{path}?devices_limit={PAGE}"),
            "reading the rollout",
        )
        .await?;
    while let Some(from) = whole.devices_next.take() {
        let page: RolloutView = client
            .get(
                &format!("{path}?devices_limit={PAGE}&devices_from={from}"),
                "reading the rollout's devices",
            )
            .await?;
        whole.devices.extend(page.devices);
        whole.devices_next = page.devices_next;
    }
    Ok(whole)
}

/// Devices asked for per page when every one is wanted.
const PAGE: usize = 10_000;

pub async fn rollout_command(client: &Client, id: &str, action: &str) -> anyhow::Result<()> {
    let r: RolloutView = client
        .post(
            &format!("/api/v1/rollouts/{}/{action}", urlencode(id)),
            &format!("{action} {id}"),
        )
        .await?;
    println!("{}: {}", r.id, state_text(&r.state));
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command, RolloutCommand};

    fn create(args: &[&str]) -> anyhow::Result<RolloutRequest> {
        let cli = Cli::try_parse_from(["fleetctl", "rollout", "create"].iter().chain(args))?;
        match cli.command {
            Command::Rollout {
                command: RolloutCommand::Create(create),
            } => create.request(),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn bare_arguments_ask_for_the_servers_defaults() {
        assert_eq!(
            create(&["churn", "2.0.0"]).unwrap(),
            RolloutRequest::new("churn", "2.0.0")
        );
    }

    #[test]
    fn every_flag_lands_in_its_request_field() {
        let r = create(&[
            "churn",
            "2.0.0",
            "--group=north",
            "--tag=hw=pi5",
            "--device=d1",
            "--exponential=1,2",
            "--max-failure-ratio=0.1",
            "--bake-seconds=30",
            "--device-timeout-seconds=90",
            "--require-approval",
            "--gate-p99-slowdown-percent=20",
            "--gate-min-requests=50",
            "--no-rollback",
        ])
        .unwrap();
        assert_eq!(r.group.as_deref(), Some("north"));
        assert_eq!(r.tags.get("hw").map(String::as_str), Some("pi5"));
        assert_eq!(r.devices, ["d1"]);
        assert_eq!(
            r.exponential,
            Some(Exponential {
                start_percent: 1.0,
                factor: 2.0
            })
        );
        assert_eq!(r.max_failure_ratio, Some(0.1));
        assert_eq!(r.bake_seconds, Some(30));
        assert_eq!(r.device_timeout_seconds, Some(90));
        assert!(r.require_approval);
        let gates = r.model_gates.unwrap();
        assert_eq!(gates.max_p99_slowdown_percent, Some(20.0));
        assert_eq!(gates.min_requests, 50);
        assert!(!r.rollback_on_halt);
    }

    #[test]
    fn the_shadow_strategy_carries_its_share_gate_and_fallback() {
        let r = create(&["churn", "2.0.0", "--strategy=shadow"]).unwrap();
        assert_eq!((r.strategy, r.shadow), (Strategy::Shadow, None));
        let r = create(&[
            "churn",
            "2.0.0",
            "--strategy=shadow",
            "--shadow-share=0.5",
            "--shadow-cpu-share=0.1",
            "--shadow-min-compared=50",
            "--shadow-min-agreement=0.95",
            "--shadow-max-accuracy-drop=0.01",
            "--shadow-fallback=refuse",
        ])
        .unwrap();
        let shadow = r.shadow.unwrap();
        assert_eq!((shadow.share, shadow.max_cpu_share), (0.5, 0.1));
        assert_eq!(shadow.gate.min_compared, 50);
        assert_eq!(shadow.gate.min_agreement, 0.95);
        assert_eq!(shadow.gate.max_accuracy_drop, 0.01);
        assert_eq!(shadow.fallback, Fallback::Refuse);
        let without = create(&["churn", "2.0.0", "--shadow-share=0.5"]).unwrap_err();
        assert!(
            without.to_string().contains("needs --strategy shadow"),
            "{without}"
        );
        let split = create(&[
            "churn",
            "2.0.0",
            "--strategy=split",
            "--shadow-share=0.3",
            "--shadow-min-labelled=40",
        ])
        .unwrap();
        assert_eq!(split.strategy, Strategy::Split);
        let options = split.shadow.unwrap();
        assert_eq!((options.share, options.gate.min_labelled), (0.3, 40));
        assert!(create(&["churn", "2.0.0", "--strategy=a-b"]).is_err());
    }

    #[test]
    fn a_minimum_of_requests_without_a_gate_or_a_bad_rate_is_refused() {
        let alone = create(&["churn", "2.0.0", "--gate-min-requests=50"]).unwrap_err();
        assert!(alone.to_string().contains("needs a model gate"), "{alone}");
        let rate = create(&["churn", "2.0.0", "--exponential=1"]).unwrap_err();
        assert!(rate.to_string().contains("START,FACTOR"), "{rate}");
    }

    #[test]
    fn a_halted_rollout_reads_with_its_wave_and_reason() {
        let state = StateView {
            state: "halted".into(),
            wave: Some(2),
            until: None,
            reason: Some("d3 failed".into()),
        };
        assert_eq!(state_text(&state), "halted at wave 2: d3 failed");
    }
}
