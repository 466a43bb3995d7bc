//! `edgefleet-demo`: the main job on one machine (see `edgefleet_e2e::demo`). Exits 0 only if
//! v1 and v2 completed, v3 was halted and rolled back, every device ends on 2.0.0 and no
//! prediction failed.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::ExitCode;

use edgefleet_e2e::demo::{self, DemoOptions};

fn main() -> ExitCode {
    let mut options = DemoOptions {
        agents: 5,
        mosquitto: false,
        tls: false,
        verbose: true,
        tiny_artifact_limit: Vec::new(),
        latency_budget_factor: 10.0,
        database_url: None,
        server_toml: String::new(),
        // Five-second telemetry windows (60 s by default) keep the dashboard lively.
        agent_fleet_toml: "telemetry_seconds = 5".into(),
    };
    let mut keep_running = false;
    let mut dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--agents" => {
                options.agents = match args.next().and_then(|n| n.parse().ok()) {
                    Some(n) if n >= 1 => n,
                    _ => {
                        eprintln!("--agents takes a number of at least 1");
                        return ExitCode::from(2);
                    }
                }
            }
            "--mosquitto" => options.mosquitto = true,
            "--keep-running" => keep_running = true,
            "--dir" => dir = args.next().map(PathBuf::from),
            "--help" | "-h" => {
                println!(
                    "edgefleet-demo [--agents N] [--mosquitto] [--keep-running] [--dir DIR]\n\
                     Runs a fleet server, N agents and three rollouts; exits 0 if all went as designed."
                );
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}; see --help");
                return ExitCode::from(2);
            }
        }
    }
    // Every simulated device shares this machine's cores: widen the latency budget with their
    // number (a real device has its own CPU).
    options.latency_budget_factor = 10.0 * (options.agents as f64 / 5.0).max(1.0);
    let (work, _tmp) = demo::work_dir(dir);
    println!(
        "Edgefleet demo: a fleet server and {} edge agents on this machine (files in {})",
        options.agents,
        work.display()
    );
    let (demo, report) = demo::run(&work, &options);
    let all_on_v2 = report.running.iter().all(|r| r.ends_with(" 2.0.0"));
    let expected = ["completed", "completed", "halted"];
    let ok = report.failed_predictions == 0
        && report.predictions > 0
        && report.rollout_states == expected
        && all_on_v2;
    println!();
    println!(
        "rollouts:     churn 1.0.0 {}, churn 2.0.0 {}, churn 3.0.0-nan {} (expected: completed, completed, halted)",
        report.rollout_states[0], report.rollout_states[1], report.rollout_states[2]
    );
    println!("devices:      {}", report.running.join(", "));
    println!(
        "predictions:  {} served by the agents during the rollouts, {} failed",
        report.predictions, report.failed_predictions
    );
    println!(
        "fleet server: {} (dashboard at /, operator API; GET /openapi.json lists it)",
        report.server_url
    );
    println!(
        "result:       {}",
        if ok { "OK" } else { "NOT AS DESIGNED" }
    );
    if keep_running {
        println!(
            "operator:     FLEETCTL_CONFIG={} fleetctl rollout list",
            demo.operator.dir.join("fleetctl.toml").display()
        );
        println!(
            "dashboard:    {}/ (sign in with the token in {})",
            report.server_url,
            demo.operator.dir.join("admin.token").display()
        );
        println!("--keep-running: everything stays up; press Ctrl-C to stop.");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    drop(demo);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
