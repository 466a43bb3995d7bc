//! Shadow rollouts over real processes: two agents serve churn 2.0.0 to a steady stream of the
//! newest customers. A challenger right on its own held-out rows but wrong on these
//! (`bad/decaying`) runs in the devices' shadow slots and is stopped by the shadow gate before it
//! answers one request; a like-for-like challenger (2.0.0's network, re-exported: another file)
//! is promoted in place, from the file the shadow slot stored, with no request failing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgefleet_e2e::demo::{self, Demo};
use edgefleet_e2e::fleet::eventually;
use edgefleet_e2e::{http, models_dir, run_ok};
use serde_json::{Value, json};

use super::one_at_a_time;

/// Predictions from several threads; which version answered each, and how many failed.
pub(super) struct Traffic {
    stop: Arc<AtomicBool>,
    answered: Arc<Mutex<BTreeMap<String, u64>>>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    /// Sends `rows` round and round to each `:predict` URL; with `truths` (one per row), labels
    /// each answer at once through the agent's feedback API.
    pub(super) fn start(urls: Vec<String>, rows: Vec<Value>, truths: Option<Vec<String>>) -> Self {
        let rows = Arc::new(rows);
        let truths = Arc::new(truths);
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(Mutex::new(BTreeMap::new()));
        let failed = Arc::new(AtomicU64::new(0));
        let threads = urls
            .into_iter()
            .enumerate()
            .map(|(start, url)| {
                let (stop, answered, failed, rows, truths) = (
                    stop.clone(),
                    answered.clone(),
                    failed.clone(),
                    rows.clone(),
                    truths.clone(),
                );
                let feedback = url.replace(":predict", "/feedback");
                std::thread::spawn(move || {
                    let agent = http();
                    let mut i = start * 101;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let answer = agent
                            .post(&url)
                            .send_json(&rows[i % rows.len()])
                            .ok()
                            .filter(|r| r.status() == 200)
                            .and_then(|mut r| r.body_mut().read_json::<Value>().ok());
                        let version = answer
                            .as_ref()
                            .and_then(|v| v["version"].as_str().map(str::to_owned));
                        match version {
                            Some(v) => *answered.lock().unwrap().entry(v).or_default() += 1,
                            None => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        if let (Some(truths), Some(answer)) = (truths.as_ref(), &answer) {
                            let label = json!({"labels": [{
                                "id": answer["id"],
                                "label": truths[i % truths.len()],
                            }]});
                            let sent = agent.post(&feedback).send_json(&label);
                            assert!(
                                sent.as_ref().is_ok_and(|r| r.status() == 200),
                                "feedback refused: {sent:?}"
                            );
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        Self {
            stop,
            answered,
            failed,
            threads,
        }
    }

    pub(super) fn answered(&self) -> BTreeMap<String, u64> {
        self.answered.lock().unwrap().clone()
    }

    pub(super) fn stop(self) -> (BTreeMap<String, u64>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let answered = self.answered.lock().unwrap().clone();
        (answered, self.failed.load(Ordering::Relaxed))
    }
}

/// A shadow rollout to the whole group, started with fleetctl, followed to its end; how long
/// it took.
fn shadow_rollout(fleet: &Demo, version: &str) -> (Value, Duration) {
    rollout_to_the_end(
        fleet,
        version,
        &[
            "--strategy=shadow",
            "--shadow-share=1",
            "--shadow-cpu-share=0.5",
            "--shadow-min-compared=150",
        ],
    )
}

/// A rollout of `version` to the whole group with `strategy` (fleetctl arguments), followed to
/// its end; how long it took.
pub(super) fn rollout_to_the_end(
    fleet: &Demo,
    version: &str,
    strategy: &[&str],
) -> (Value, Duration) {
    let started = std::time::Instant::now();
    let mut args = vec![
        "rollout",
        "create",
        "churn",
        version,
        "--group=demo",
        "--waves=100",
        "--device-timeout-seconds=120",
        "--json",
    ];
    args.extend_from_slice(strategy);
    let created: Value =
        serde_json::from_slice(&run_ok(fleet.operator.fleetctl().args(args)).stdout).unwrap();
    let wanted = strategy
        .iter()
        .find_map(|a| a.strip_prefix("--strategy="))
        .unwrap_or("canary");
    assert_eq!(created["strategy"], wanted, "{created:#}");
    let id = created["id"].as_str().unwrap().to_owned();
    let admin = fleet.operator.token();
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let (_, r) =
            fleet
                .server
                .call("GET", &format!("/api/v1/rollouts/{id}"), Some(&admin), None);
        if matches!(r["state"]["state"].as_str(), Some("completed" | "halted")) {
            return (r, started.elapsed());
        }
        if std::time::Instant::now() > deadline {
            for agent in &fleet.agents {
                let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!(
                    "--- {}:\n{}",
                    agent.log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            panic!(
                "the rollout of {version} did not end: {r:#}\n{:#?}",
                shadows_of(fleet)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The release of churn 2.0.0 as version `version`, its network re-exported: the same weights in
/// a file with other bytes (an unknown protobuf field appended, which ONNX readers skip).
pub(super) fn re_exported(
    dir: &std::path::Path,
    version: &str,
    sequence: u64,
) -> std::path::PathBuf {
    let release = dir.join(format!("churn-{version}"));
    std::fs::create_dir_all(&release).unwrap();
    for entry in std::fs::read_dir(models_dir().join("churn/2.0.0")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), release.join(entry.file_name())).unwrap();
    }
    let mut info: Value =
        serde_json::from_slice(&std::fs::read(release.join("release.json")).unwrap()).unwrap();
    info["version"] = json!(version);
    info["sequence"] = json!(sequence);
    std::fs::write(release.join("release.json"), info.to_string()).unwrap();
    let mut onnx = std::fs::read(release.join("model.onnx")).unwrap();
    // Field 100, varint 1: tag (100 << 3 | 0) = 800 = 0xa0 0x06.
    onnx.extend([0xa0, 0x06, 0x01]);
    std::fs::write(release.join("model.onnx"), onnx).unwrap();
    release
}

/// A rollout its `strategy`'s gate halted: the devices' slots are emptied (they serve the
/// champion alone), `fleetctl rollout status` shows the verdict, and the rollout is aborted.
pub(super) fn halted_then_aborted(fleet: &Demo, rollout: &Value, strategy: &str) {
    eventually("the slots emptied", Duration::from_secs(60), || {
        shadows_of(fleet).iter().all(Value::is_null).then_some(())
    });
    let id = rollout["id"].as_str().unwrap();
    let status =
        String::from_utf8(run_ok(fleet.operator.fleetctl().args(["rollout", "status", id])).stdout)
            .unwrap();
    assert!(
        status.contains(&format!("({strategy})"))
            && status.contains(&format!("{strategy} gate (wave 1): stopped")),
        "{status}"
    );
    run_ok(fleet.operator.fleetctl().args(["rollout", "abort", id]));
}

fn shadows_of(fleet: &Demo) -> Vec<Value> {
    let admin = fleet.operator.token();
    (1..=fleet.agents.len())
        .map(|i| {
            let (_, d) = fleet.server.call(
                "GET",
                &format!("/api/v1/devices/dev-{i:02}"),
                Some(&admin),
                None,
            );
            d["reported"]["models"][0]["shadow"].clone()
        })
        .collect()
}

/// Two agents serving churn 2.0.0 to a steady stream of the newest customers (the rows
/// `bad/decaying` is wrong on), each answer labelled with its real outcome at once if `labelled`.
pub(super) fn serving_the_newest_customers(
    dir: &std::path::Path,
    labelled: bool,
) -> (Demo, Traffic) {
    let fleet = demo::set_up(dir, &super::options(2, false));
    assert_eq!(demo::roll_out(&fleet, "2.0.0", &[100.0], 0), "completed");
    let field: Value = serde_json::from_slice(
        &std::fs::read(models_dir().join("bad/decaying/field.json")).unwrap(),
    )
    .unwrap();
    let (rows, truths): (Vec<Value>, Vec<String>) = field["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let churned = r["churn"].as_bool().unwrap();
            let truth = if churned { "churn" } else { "stay" };
            (r["features"].clone(), truth.to_owned())
        })
        .unzip();
    let urls = fleet
        .agents
        .iter()
        .map(|a| a.url("/v1/models/churn:predict"))
        .collect();
    let traffic = Traffic::start(urls, rows, labelled.then_some(truths));
    (fleet, traffic)
}

#[test]
fn a_shadow_rollout_stops_a_challenger_wrong_on_live_traffic_and_promotes_a_like_one_in_place() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let (fleet, traffic) = serving_the_newest_customers(tmp.path(), false);

    // Right on its own held-out rows (its golden vectors pass on the device), wrong on these.
    fleet
        .operator
        .push(models_dir().join("bad/decaying").to_str().unwrap());
    let (bad, stopped_after) = shadow_rollout(&fleet, "3.1.0-decaying");
    assert_eq!(bad["state"]["state"], "halted", "{bad:#}");
    let reason = bad["state"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("stopped by its shadow gate before the challenger answered")
            && reason.contains("agreement"),
        "{bad:#}"
    );
    let check = &bad["shadow_check"];
    assert_eq!(check["decision"], "stopped", "{bad:#}");
    let compared = check["counts"]["compared"].as_u64().unwrap();
    assert!(compared >= 150, "{check:#}");
    let agreed = check["counts"]["agreed"].as_u64().unwrap();
    assert!((agreed as f64) < 0.9 * compared as f64, "{check:#}");
    let answered = traffic.answered();
    assert!(
        !answered.contains_key("3.1.0-decaying"),
        "the challenger answered: {answered:?}"
    );
    halted_then_aborted(&fleet, &bad, "shadow");

    // Like for like: promoted in place, from the file its shadow slot stored.
    fleet
        .operator
        .push(re_exported(tmp.path(), "3.2.0", 6).to_str().unwrap());
    let (good, completed_after) = shadow_rollout(&fleet, "3.2.0");
    let (answered, failed) = traffic.stop();
    assert_eq!(good["state"]["state"], "completed", "{good:#}");
    assert_eq!(good["shadow_check"]["decision"], "promoted", "{good:#}");
    assert_eq!(
        good["shadow_check"]["counts"]["agreed"],
        good["shadow_check"]["counts"]["compared"]
    );
    assert_eq!(
        failed, 0,
        "no request failed during promotion: {answered:?}"
    );
    assert!(
        answered.get("3.2.0").is_some_and(|n| *n > 0),
        "{answered:?}"
    );
    assert!(!answered.contains_key("3.1.0-decaying"), "{answered:?}");
    assert!(demo::running(&fleet).iter().all(|r| r.ends_with(" 3.2.0")));
    // One download per device: the shadow slot's. The promotion found the file stored.
    let admin = fleet.operator.token();
    for i in 1..=fleet.agents.len() {
        let (_, events) = fleet.server.call(
            "GET",
            &format!("/api/v1/events?device=dev-{i:02}&limit=200"),
            Some(&admin),
            None,
        );
        let of_new = |kind: &str| {
            events["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| {
                    e["message"]["kind"] == kind
                        && e["message"]["target"] == "models/churn/3.2.0/model.onnx"
                })
                .count()
        };
        assert_eq!(of_new("downloading"), 1, "{events:#}");
        assert_eq!(of_new("committed"), 1, "{events:#}");
        assert!(
            events["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["message"]["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("already stored"))),
            "{events:#}"
        );
    }
    // docs/BENCHMARKS.md: from `rollout create` to the verdict (stopped) and to completion.
    eprintln!(
        "shadow: stopped after {:.1} s ({compared} compared), promoted and completed after {:.1} s ({} compared); answers {answered:?}",
        stopped_after.as_secs_f64(),
        completed_after.as_secs_f64(),
        good["shadow_check"]["counts"]["compared"]
    );
}
