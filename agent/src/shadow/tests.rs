use std::path::Path;
use std::time::{Duration, Instant};

use edgefleet_inference::Runtime;
use edgefleet_protocol::target::{ModelTargetMeta, ReleaseFiles};
use serde_json::Value;

use super::*;
use crate::live::LiveStats;

fn models() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"))
}

fn meta(dir: &Path) -> ModelTargetMeta {
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let (interface, health) = (read("interface.json"), read("health.json"));
    ReleaseFiles {
        release: &read("release.json"),
        interface: &interface,
        health: &health,
        baseline: None,
    }
    .assemble()
    .unwrap()
}

/// A real model on tract, as the agent would serve it.
fn slot(release: &str) -> Arc<Slot> {
    let dir = models().join(release);
    let meta = Arc::new(meta(&dir));
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let loaded = edgefleet_inference::tract::TractRuntime
        .load(&bytes, &meta.interface)
        .unwrap();
    Arc::new(Slot {
        key: release.into(),
        target: format!("models/{}/{}/model.onnx", meta.model, meta.version),
        stats: Arc::new(LiveStats::new(None)),
        meta,
        model: loaded.model,
        trials: Vec::new(),
        trials_cached: false,
    })
}

/// The newest customers, as live traffic: (features, true label).
fn field_rows() -> Vec<(Map<String, Value>, String)> {
    let field: Value =
        serde_json::from_slice(&std::fs::read(models().join("bad/decaying/field.json")).unwrap())
            .unwrap();
    field["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let label = if r["churn"].as_bool().unwrap() {
                "churn"
            } else {
                "stay"
            };
            (r["features"].as_object().unwrap().clone(), label.to_owned())
        })
        .collect()
}

fn champion_answer(champion: &Slot, row: &Map<String, Value>) -> ChampionAnswer {
    let spec = champion.meta.interface.prediction.clone().unwrap();
    let inputs =
        edgefleet_inference::features_to_input(&champion.meta.interface, std::slice::from_ref(row))
            .unwrap();
    let outputs = champion.infer(&inputs).unwrap();
    let scores = outputs[spec.output()].data.floats_as_f32().unwrap();
    ChampionAnswer::of(&spec.interpret(&scores))
}

fn plan(share: f64, max_cpu_share: f64) -> DesiredShadow {
    DesiredShadow {
        target: String::new(),
        artifact_urls: Vec::new(),
        share_ppm: edgefleet_protocol::shadow::to_ppm(share),
        max_cpu_ppm: edgefleet_protocol::shadow::to_ppm(max_cpu_share),
        mode: edgefleet_protocol::shadow::SlotMode::Shadow,
    }
}

/// Waits until the worker has dealt with `n` copies (run, failed or shed).
fn settled(shadow: &ShadowSlot, n: u64) -> ShadowCounts {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = shadow.peek();
        if counts.compared + counts.challenger_errors + counts.shed >= n {
            return counts;
        }
        assert!(Instant::now() < deadline, "worker stuck at {counts:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Offers every row, one at a time (so nothing is shed), with its label arriving afterwards.
fn shadow_run(challenger: &str) -> ShadowCounts {
    let champion = slot("churn/2.0.0");
    let shadow = ShadowSlot::start(slot(challenger), String::new(), plan(1.0, 1.0)).unwrap();
    let rows = field_rows();
    for (i, (row, _)) in rows.iter().enumerate() {
        let answer = champion_answer(&champion, row);
        shadow.offer(&format!("r{i}"), Request::Row(row.clone()), answer);
        settled(&shadow, i as u64 + 1);
    }
    for (i, (_, truth)) in rows.iter().enumerate() {
        shadow.truth(&format!("r{i}"), truth);
        // A label counts once.
        shadow.truth(&format!("r{i}"), truth);
    }
    let report = shadow.take().unwrap();
    assert!(shadow.take().is_none(), "a take starts the counts over");
    assert_eq!(
        report.target,
        format!("models/churn/{}/model.onnx", challenger_version(challenger))
    );
    report.counts
}

fn challenger_version(release: &str) -> String {
    meta(&models().join(release)).version.to_string()
}

#[test]
fn a_challenger_that_fails_live_traffic_is_told_apart_from_a_like_one() {
    use edgefleet_protocol::verdict::{ShadowGate, ShadowVerdict, judge};
    let gate = ShadowGate::default();

    let like = shadow_run("churn/2.0.0");
    assert_eq!(like.compared, 800);
    assert_eq!(like.agreed, 800, "the same model agrees with itself");
    assert!(like.abs_diff_sum < 1e-3, "{}", like.abs_diff_sum);
    assert_eq!(like.labelled, 800);
    assert_eq!(like.champion_correct, like.challenger_correct);
    assert_eq!(like.challenger_latency.count(), 800);
    assert_eq!(judge(&gate, &like), ShadowVerdict::Pass);

    // Right on its own held-out rows, wrong on the newest customers.
    let bad = shadow_run("bad/decaying");
    assert_eq!(bad.compared, 800);
    assert!(bad.agreement().unwrap() < 0.8, "{bad:?}");
    assert!(
        bad.challenger_correct + 100 < bad.champion_correct,
        "{} vs {}",
        bad.challenger_correct,
        bad.champion_correct
    );
    match judge(&gate, &bad) {
        ShadowVerdict::Breach(why) => assert!(why[0].starts_with("agreement"), "{why:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn copies_over_the_cpu_budget_or_the_queue_are_shed_never_waited_for() {
    let champion = slot("churn/2.0.0");
    // A millionth of a core: once the saved-up burst is spent nothing more may run.
    let shadow = ShadowSlot::start(slot("churn/2.0.0"), String::new(), plan(1.0, 1e-6)).unwrap();
    let answered: Vec<_> = field_rows()
        .into_iter()
        .map(|(row, _)| {
            let answer = champion_answer(&champion, &row);
            (row, answer)
        })
        .collect();
    // Offered faster than the worker may run them: some run, the rest are shed (queue full or
    // budget spent), and the offering side never blocks (`try_send`).
    for (i, (row, answer)) in answered.iter().enumerate() {
        shadow.offer(&format!("r{i}"), Request::Row(row.clone()), answer.clone());
    }
    let counts = settled(&shadow, 800);
    assert_eq!(counts.compared + counts.shed, 800, "{counts:?}");
    assert!(counts.shed > 0 && counts.compared > 0, "{counts:?}");
    // One at a time (the queue never fills): copies run until the budget is spent, then every
    // one is shed, however long they keep coming.
    let mut seen = 800;
    let mut spent = false;
    let mut after_spent = 0;
    for (i, (row, answer)) in answered.iter().cycle().take(2000).enumerate() {
        let before = settled(&shadow, seen);
        shadow.offer(&format!("s{i}"), Request::Row(row.clone()), answer.clone());
        seen += 1;
        let now = settled(&shadow, seen);
        if now.shed > before.shed {
            spent = true;
        }
        if spent {
            after_spent += 1;
            assert_eq!(now.compared, before.compared, "ran with its budget spent");
            if after_spent == 50 {
                return;
            }
        }
    }
    panic!("the budget was never spent");
}

#[test]
fn the_share_picks_about_that_many_copies() {
    let champion = slot("churn/2.0.0");
    let shadow = ShadowSlot::start(slot("churn/2.0.0"), String::new(), plan(0.25, 1.0)).unwrap();
    let rows = field_rows();
    let mut offered_at = 0;
    for (i, (row, _)) in rows.iter().enumerate() {
        let answer = champion_answer(&champion, row);
        if shadow.draw() {
            shadow.offer(&format!("r{i}"), Request::Row(row.clone()), answer);
            offered_at += 1;
            settled(&shadow, offered_at);
        }
    }
    // 800 draws at 25 %: 200 expected, sd ≈ 12.
    assert!((140..=260).contains(&offered_at), "{offered_at}");
    assert_eq!(shadow.take().unwrap().counts.compared, offered_at);
}

#[test]
fn a_failing_challenger_counts_errors_and_the_registry_stops_its_worker() {
    let champion = slot("churn/2.0.0");
    let shadows = Shadows::default();
    shadows.put(
        "churn",
        ShadowSlot::start(slot("churn/2.0.0"), String::new(), plan(1.0, 1.0)).unwrap(),
    );
    let (row, _) = &field_rows()[0];
    let answer = champion_answer(&champion, row);
    // Tensors of the wrong width: the challenger fails, the champion had answered.
    let wrong = edgefleet_inference::Inputs::from([(
        "features".to_string(),
        edgefleet_inference::Tensor::f32(vec![1, 3], vec![0.0; 3]).unwrap(),
    )]);
    let shadow = shadows.get("churn").unwrap();
    shadow.offer("bad", Request::Tensors(wrong), answer.clone());
    shadow.offer("good", Request::Row(row.clone()), answer);
    let counts = settled(&shadow, 2);
    assert_eq!((counts.challenger_errors, counts.compared), (1, 1));
    drop(shadow);
    let taken = shadows.take();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].0, "churn");
    assert_eq!(
        shadows.remove("churn").as_deref(),
        Some("models/churn/2.0.0/model.onnx")
    );
    assert!(shadows.get("churn").is_none());
    for worker in shadows.stop_all() {
        worker.join().unwrap();
    }
    assert!(shadows.retired.lock().unwrap().is_empty());
}

#[test]
fn the_cpu_budget_is_earned_by_wall_time_and_spent_by_runs() {
    let t0 = Instant::now();
    let mut budget = CpuBudget::new(0.1, t0);
    assert!(budget.allows(t0), "starts with the burst allowance");
    budget.spend(Duration::from_millis(60));
    assert!(!budget.allows(t0 + Duration::from_millis(100)));
    // 10 % of 1 s earns 100 ms: the 50 ms debt is paid.
    assert!(budget.allows(t0 + Duration::from_millis(1100)));
    // Credit never builds past the burst allowance, however long it idles.
    let mut idle = CpuBudget::new(0.5, t0);
    assert!(idle.allows(t0 + Duration::from_secs(3600)));
    idle.spend(Duration::from_millis(30));
    assert!(!idle.allows(t0 + Duration::from_secs(3600)));
}

/// Answers one row with `slot`, as the serving path would: (label, time taken).
fn answer_with(slot: &Slot, row: &Map<String, Value>) -> (String, Duration) {
    let started = Instant::now();
    let answer = champion_answer(slot, row);
    (answer.label.unwrap(), started.elapsed())
}

#[test]
fn a_split_counts_each_arm_on_its_own_requests_and_names_the_better_one() {
    use edgefleet_protocol::verdict::{judge_split, split_readout};
    // The decaying model serves; the like-for-like 2.0.0 takes half the requests.
    let champion = slot("bad/decaying");
    let split_plan = DesiredShadow {
        mode: edgefleet_protocol::shadow::SlotMode::Split,
        ..plan(0.5, 1.0)
    };
    let split = ShadowSlot::start(slot("churn/2.0.0"), String::new(), split_plan).unwrap();
    assert!(split.splits());
    assert!(split.worker.lock().unwrap().is_none(), "no worker thread");
    let rows = field_rows();
    for (i, (row, _)) in rows.iter().enumerate() {
        let id = format!("r{i}");
        let (arm, answering) = if split.draw() {
            (Arm::Challenger, &split.slot)
        } else {
            (Arm::Champion, &champion)
        };
        let (label, took) = answer_with(answering, row);
        split.answered(arm, &id, Some(&label), took);
    }
    for (i, (_, truth)) in rows.iter().enumerate() {
        split.truth(&format!("r{i}"), truth);
    }
    let counts = split.take().unwrap().counts;
    let s = &counts.split;
    assert_eq!(s.champion.answered + s.challenger.answered, 800);
    assert!(
        (300..500).contains(&s.challenger.answered),
        "a half share: {}",
        s.challenger.answered
    );
    assert_eq!(s.champion.labelled + s.challenger.labelled, 800);
    assert_eq!(s.challenger.latency.count(), s.challenger.answered);
    assert_eq!(
        counts.compared, 0,
        "a split compares nothing on one request"
    );
    counts.check_within(800).unwrap();
    let readout = split_readout(s);
    assert!(readout.contains("the challenger is better"), "{readout}");
    assert_eq!(
        judge_split(&edgefleet_protocol::verdict::ShadowGate::default(), s),
        edgefleet_protocol::verdict::ShadowVerdict::Pass
    );
}

/// The champion's p99 over `per_thread` answers on each of two threads (this machine's cores,
/// saturated), each answer offered to `shadow` when there is one: what the serving path does.
fn champion_p99(champion: &Arc<Slot>, shadow: Option<&Arc<ShadowSlot>>, per_thread: usize) -> f64 {
    let rows = Arc::new(field_rows());
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (champion, shadow, rows) = (champion.clone(), shadow.cloned(), rows.clone());
            std::thread::spawn(move || {
                let mut took = Vec::with_capacity(per_thread);
                for i in 0..per_thread {
                    let (row, _) = &rows[(i + t * 400) % rows.len()];
                    let started = Instant::now();
                    let answer = champion_answer(&champion, row);
                    if let Some(shadow) = &shadow
                        && shadow.draw()
                    {
                        shadow.offer(&format!("{t}-{i}"), Request::Row(row.clone()), answer);
                    }
                    took.push(started.elapsed().as_secs_f64() * 1e3);
                }
                took
            })
        })
        .collect();
    let mut all: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_by(f64::total_cmp);
    all[all.len() * 99 / 100]
}

/// The figure the issue sets (p99 within 10 % of no shadow at all) is measured by
/// `benches/shadow.rs` on a release build (docs/BENCHMARKS.md). This checks the property behind
/// it with a bound no busy machine breaks and no waiting design meets: with a challenger ~20x
/// slower than the champion taking every request at a whole core's budget, the champion's p99
/// stays within twice its p99 alone plus 5 ms. A champion that waited for its challenger would
/// add a whole challenger run to its tail.
#[test]
fn under_a_saturating_load_the_champion_never_waits_for_a_slow_challenger() {
    let champion = slot("churn/2.0.0");
    let challenger = slot("bad/slower-live");
    let started = Instant::now();
    champion_answer(&challenger, &field_rows()[0].0);
    let one_challenger_run = started.elapsed().as_secs_f64() * 1e3;
    let alone = champion_p99(&champion, None, 10_000);
    assert!(
        one_challenger_run > 2.0 * alone + 5.0,
        "the challenger ({one_challenger_run:.2} ms a run) must be slow enough to show a wait (champion p99 {alone:.2} ms)"
    );
    let shadow = Arc::new(ShadowSlot::start(challenger, String::new(), plan(1.0, 1.0)).unwrap());
    let beside = champion_p99(&champion, Some(&shadow), 10_000);
    // The challenger works through what it took on its own thread; on a busy machine its first
    // run may end after the champion's last answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shadow.peek().compared == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let counts = shadow.peek();
    eprintln!(
        "champion p99 {alone:.3} ms alone, {beside:.3} ms beside a {one_challenger_run:.1} ms challenger; {} run, {} shed",
        counts.compared, counts.shed
    );
    assert!(
        counts.shed > 0 && counts.compared > 0,
        "the challenger runs what its budget allows and sheds the rest: {counts:?}"
    );
    assert!(
        beside <= 2.0 * alone + 5.0,
        "champion p99 {beside:.2} ms beside a challenger, {alone:.2} ms alone (one challenger run {one_challenger_run:.2} ms)"
    );
}
