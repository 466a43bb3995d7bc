//! The alert rules and the Grafana dashboard shipped in `deploy/`, against the real tools: the
//! rules pass `promtool check` and their own `promtool test`; a real Prometheus (Debian's) scrapes
//! a running fleet server with them loaded and a real Alertmanager delivers the accuracy alert to
//! a webhook when a device's labels say its version decayed; every metric the dashboard names is
//! one the server exposes, and every query in it is one Prometheus accepts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgefleet_e2e::demo;
use edgefleet_e2e::fleet::{KillOnDrop, eventually};
use edgefleet_e2e::{baseline_rows, free_port, http, post_json};
use serde_json::{Value, json};

use super::{one_at_a_time, options};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn run_promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .output()
        .expect("promtool (Debian's prometheus package; scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A webhook receiver: every request body it gets, answered 200.
pub(super) fn webhook() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length.min(1 << 20)];
            if reader.read_exact(&mut body).is_ok() {
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, bodies)
}

fn start(program: &str, args: &[String]) -> KillOnDrop {
    KillOnDrop(
        Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} (scripts/setup.sh installs it): {e}")),
    )
}

/// Labels `count` of the agent's churn answers, each one right or wrong as `right` says.
fn label(agent_url: &dyn Fn(&str) -> String, count: usize, seed: u64, right: bool) {
    let mut labels = Vec::new();
    for row in baseline_rows("churn/1.0.0", count, seed, &[]) {
        let (status, answer) = post_json(&agent_url("/v1/models/churn:predict"), &row);
        assert_eq!(status, 200, "{answer}");
        let predicted = answer["prediction"].as_str().unwrap();
        let other = if predicted == "churn" {
            "stay"
        } else {
            "churn"
        };
        labels.push(json!({"id": answer["id"], "label": if right { predicted } else { other }}));
    }
    let (status, outcome) = post_json(
        &agent_url("/v1/models/churn/feedback"),
        &json!({ "labels": labels }),
    );
    assert_eq!(
        (status, outcome["accepted"].as_u64()),
        (200, Some(count as u64)),
        "{outcome}"
    );
}

#[test]
fn prometheus_with_the_shipped_rules_pages_through_alertmanager_when_labels_say_a_version_decayed()
{
    run_promtool(&["check", "rules", "edgefleet.rules.yml"]);
    run_promtool(&["test", "rules", "edgefleet.rules.test.yml"]);

    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let fleet = demo::set_up(tmp.path(), &options(1, false));
    assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");

    let (hook_port, delivered) = webhook();
    let (am_port, prom_port) = (free_port(), free_port());
    let am_config = tmp.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route:\n  receiver: test\n  group_by: [alertname, model, version]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: test\n    webhook_configs:\n      - url: http://127.0.0.1:{hook_port}/\n        send_resolved: false\n"
        ),
    )
    .unwrap();
    let _alertmanager = start(
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", am_config.display()),
            format!("--storage.path={}", tmp.path().join("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".into(),
        ],
    );
    let server_target = fleet
        .server
        .url("")
        .trim_start_matches("http://")
        .to_owned();
    let prom_config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
             scrape_configs:\n  - job_name: edgefleet\n    static_configs:\n      - targets: ['{server_target}']\n",
            deploy().join("prometheus/edgefleet.rules.yml").display()
        ),
    )
    .unwrap();
    let _prometheus = start(
        "prometheus",
        &[
            format!("--config.file={}", prom_config.display()),
            format!(
                "--storage.tsdb.path={}",
                tmp.path().join("prom-data").display()
            ),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
    );
    let query = |expr: &str| -> Value {
        http()
            .get(format!("http://127.0.0.1:{prom_port}/api/v1/query"))
            .query("query", expr)
            .call()
            .map(|mut r| r.body_mut().read_json().unwrap_or(Value::Null))
            .unwrap_or(Value::Null)
    };

    // One labelled answer first, so the label counters exist in Prometheus before the batch
    // that moves them (an increase needs two samples).
    let agent_url = |path: &str| fleet.agents[0].url(path);
    label(&agent_url, 1, 1, true);
    eventually(
        "Prometheus to scrape the label counter",
        Duration::from_secs(60),
        || {
            let r = query(r#"edgefleet_server_fleet_labels_total{model="churn",version="1.0.0"}"#);
            (r["data"]["result"]
                .as_array()
                .is_some_and(|a| !a.is_empty()))
            .then_some(())
        },
    );
    // Then 210 answers labelled wrong: accuracy far below the 0.79 churn 1.0.0 claims.
    label(&agent_url, 210, 2, false);
    let labelled_at = std::time::Instant::now();
    let alert = eventually(
        "Alertmanager to deliver the accuracy alert",
        Duration::from_secs(90),
        || {
            let bodies = delivered.lock().unwrap().clone();
            bodies.iter().find_map(|b| {
                let v: Value = serde_json::from_str(b).ok()?;
                v["alerts"]
                    .as_array()?
                    .iter()
                    .find(|a| {
                        a["labels"]["alertname"] == "EdgefleetModelAccuracyDecayed"
                            && a["status"] == "firing"
                    })
                    .cloned()
            })
        },
    );
    // docs/BENCHMARKS.md: from labels sent to a page, with 3 s telemetry windows and 1 s
    // scrape and evaluation intervals.
    eprintln!(
        "accuracy alert delivered {:.1} s after the labels were sent",
        labelled_at.elapsed().as_secs_f64()
    );
    assert_eq!(alert["labels"]["model"], "churn", "{alert:#}");
    assert_eq!(alert["labels"]["version"], "1.0.0", "{alert:#}");
    assert_eq!(alert["labels"]["severity"], "page", "{alert:#}");
    // No other model-quality alert fired on a healthy fleet.
    let others: Vec<String> = delivered
        .lock()
        .unwrap()
        .iter()
        .filter(|b| !b.contains("EdgefleetModelAccuracyDecayed"))
        .cloned()
        .collect();
    assert!(others.is_empty(), "{others:?}");

    // The fleet's input drift is shown once 50 values per baseline bin are pooled (fewer say
    // nothing): 211 answers so far are too few, 600 more are enough.
    for row in baseline_rows("churn/1.0.0", 600, 3, &[]) {
        let (status, answer) = post_json(&agent_url("/v1/models/churn:predict"), &row);
        assert_eq!(status, 200, "{answer}");
    }
    eventually(
        "the fleet's input drift figure",
        Duration::from_secs(60),
        || {
            edgefleet_e2e::get_text(&fleet.server.url("/metrics"))
                .contains("# TYPE edgefleet_server_fleet_input_drift_psi ")
                .then_some(())
        },
    );

    // The Grafana dashboard: every metric it names is exposed by the server, every query parses.
    let dashboard: Value =
        serde_json::from_slice(&std::fs::read(deploy().join("grafana/edgefleet.json")).unwrap())
            .unwrap();
    let exposed = edgefleet_e2e::get_text(&fleet.server.url("/metrics"));
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert!(exprs.len() >= 8);
    for expr in exprs {
        for name in metric_names(expr) {
            let family = name.strip_suffix("_total").unwrap_or(&name).to_owned();
            assert!(
                exposed.contains(&format!("# TYPE {family} ")),
                "the dashboard's {name} is not among the server's metrics"
            );
        }
        let r = query(expr);
        assert_eq!(r["status"], "success", "{expr}: {r}");
    }
}

/// The `edgefleet_…` names an expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("edgefleet_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}
