//! The shadow slot: a challenger installed and health-checked beside the version that serves a
//! model, run on a sampled copy of live requests and never answering one
//! ([`edgefleet_protocol::shadow`]).
//!
//! The champion's answer never waits for it. The serving path draws once per answer against the
//! rollout's share; a picked request is copied into a short bounded queue, and when the queue is
//! full the copy is dropped and counted as shed. One worker thread per slot runs the challenger
//! at the lowest scheduling priority and within a CPU budget (a share of one core, earned as wall
//! time passes and spent by each run); a copy over the budget is shed too. So under load the
//! shadow work is what gives way.
//!
//! What the worker learns adds up in [`ShadowCounts`] that the next telemetry window carries;
//! the last few thousand pairs of answers are remembered, so labels that arrive later count for
//! both models on the same requests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use edgefleet_inference::Inputs;
use edgefleet_protocol::ModelName;
use edgefleet_protocol::interface::{Prediction, PredictionSpec};
use edgefleet_protocol::message::ModelMetrics;
use edgefleet_protocol::shadow::{
    Compared, DesiredShadow, ShadowCounts, ShadowRefusal, ShadowReport, SlotMode,
};
use edgefleet_protocol::split::Arm;
use serde_json::{Map, Value};
use tracing::warn;

use crate::predictions::Truth;
use crate::serving::Slot;

/// Copies waiting for the challenger: enough to ride out a burst, few enough that memory stays
/// bounded by a handful of requests.
pub const QUEUE_DEPTH: usize = 32;
/// Pairs of answers kept per slot for labels to join.
pub const REMEMBERED: usize = 4096;
/// CPU time the challenger may have saved up after an idle spell. Any run may start while the
/// credit is positive, so a slow model still runs (and pays its debt over the following wall
/// time); a fast one gets a short burst, not a backlog of saved time.
const BURST: Duration = Duration::from_millis(10);

/// A request as the challenger needs it: the tensors, or the named features of a `:predict`
/// call (encoded by the challenger's own interface, which may differ from the champion's).
#[derive(Debug, Clone)]
pub enum Request {
    Tensors(Inputs),
    Row(Map<String, Value>),
}

/// The champion's answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChampionAnswer {
    pub label: Option<String>,
    /// The predicted label's probability, or the first value of a regressor.
    pub score: f64,
}

impl ChampionAnswer {
    pub fn of(prediction: &Prediction) -> Self {
        let score = match &prediction.label {
            Some(label) => prediction
                .probabilities
                .as_ref()
                .and_then(|p| p.get(label).copied()),
            None => prediction.value.as_ref().and_then(|v| v.first().copied()),
        };
        Self {
            label: prediction.label.clone(),
            score: score.unwrap_or(f64::NAN),
        }
    }
}

struct Job {
    id: String,
    request: Request,
    champion: ChampionAnswer,
}

/// A share of one core's time, earned as wall time passes and spent by each run.
#[derive(Debug, Clone, Copy)]
pub struct CpuBudget {
    share: f64,
    credit: f64,
    last: Instant,
}

impl CpuBudget {
    pub fn new(share: f64, now: Instant) -> Self {
        Self {
            share,
            credit: BURST.as_secs_f64(),
            last: now,
        }
    }

    /// Whether a run may start at `now`.
    pub fn allows(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * self.share;
        self.credit = (self.credit + earned).min(BURST.as_secs_f64());
        self.last = now;
        self.credit > 0.0
    }

    pub fn spend(&mut self, took: Duration) {
        self.credit -= took.as_secs_f64();
    }
}

/// What a label, arriving later, is checked against.
enum Remembered {
    /// Both models' labels for a compared request (shadow).
    Both {
        champion: String,
        challenger: String,
    },
    /// The label of the arm that answered (split).
    One { arm: Arm, label: String },
}

#[derive(Default)]
struct Shared {
    counts: ShadowCounts,
    /// id → the labels given, of classifications.
    answers: HashMap<String, Remembered>,
    order: VecDeque<String>,
}

impl Shared {
    fn remember(&mut self, id: String, answer: Remembered) {
        if self.order.len() >= REMEMBERED
            && let Some(oldest) = self.order.pop_front()
        {
            self.answers.remove(&oldest);
        }
        if self.answers.insert(id.clone(), answer).is_none() {
            self.order.push_back(id);
        }
    }
}

/// One model's challenger and the worker that runs it.
pub struct ShadowSlot {
    pub slot: Arc<Slot>,
    /// The challenger's model file.
    pub sha256: String,
    pub plan: DesiredShadow,
    /// Read by every offer (a read lock: the serving threads never wait on each other), taken
    /// away at stop to wake the worker.
    jobs: RwLock<Option<SyncSender<Job>>>,
    /// Copies shed, counted without a lock: under load this is the common path.
    shed: Arc<AtomicU64>,
    stopping: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for ShadowSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowSlot")
            .field("target", &self.slot.target)
            .field("share", &self.plan.share())
            .finish()
    }
}

impl ShadowSlot {
    /// Starts the worker for a loaded and checked challenger.
    pub fn start(slot: Arc<Slot>, sha256: String, plan: DesiredShadow) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE_DEPTH);
        let stopping = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let shed = Arc::new(AtomicU64::new(0));
        // A split's challenger answers on the request path: it has no copies to work through.
        let worker = if plan.mode == SlotMode::Split {
            None
        } else {
            let (slot, stopping, shared, shed) =
                (slot.clone(), stopping.clone(), shared.clone(), shed.clone());
            let share = plan.max_cpu_share();
            Some(
                std::thread::Builder::new()
                    .name(format!("shadow-{}", slot.meta.model))
                    .spawn(move || work(&slot, share, &rx, &stopping, &shared, &shed))?,
            )
        };
        Ok(Self {
            slot,
            sha256,
            plan,
            jobs: RwLock::new(worker.is_some().then_some(tx)),
            shed,
            stopping,
            shared,
            worker: Mutex::new(worker),
        })
    }

    /// Whether the challenger answers its share of requests itself.
    pub fn splits(&self) -> bool {
        self.plan.mode == SlotMode::Split
    }

    /// Counts one answer of a split's `arm`, and remembers its label for the ground truth.
    pub fn answered(&self, arm: Arm, id: &str, label: Option<&str>, took: Duration) {
        let Ok(mut shared) = self.shared.lock() else {
            return;
        };
        shared.counts.split.arm_mut(arm).answer(label, took);
        if let Some(label) = label {
            shared.remember(
                id.to_owned(),
                Remembered::One {
                    arm,
                    label: label.to_owned(),
                },
            );
        }
    }

    /// Counts a request a split's challenger failed (the champion answered it).
    pub fn failed(&self) {
        if let Ok(mut shared) = self.shared.lock() {
            shared.counts.split.challenger.errors += 1;
        }
    }

    /// Whether to copy the request being answered now: one draw against the share. The caller
    /// keeps a copy of the request only when this says so.
    pub fn draw(&self) -> bool {
        fastrand::f64() < self.plan.share()
    }

    /// Queues a drawn copy of one answered request if there is room; sheds it if not.
    pub fn offer(&self, id: &str, request: Request, champion: ChampionAnswer) {
        let Ok(jobs) = self.jobs.read() else { return };
        let Some(jobs) = jobs.as_ref() else { return };
        let job = Job {
            id: id.to_owned(),
            request,
            champion,
        };
        if let Err(TrySendError::Full(_)) = jobs.try_send(job) {
            self.shed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts the ground truth of a compared request, once.
    pub fn truth(&self, id: &str, label: &str) {
        let Ok(mut shared) = self.shared.lock() else {
            return;
        };
        match shared.answers.remove(id) {
            Some(Remembered::Both {
                champion,
                challenger,
            }) => shared
                .counts
                .add_truth(champion == label, challenger == label),
            Some(Remembered::One { arm, label: given }) => {
                let counts = shared.counts.split.arm_mut(arm);
                counts.labelled += 1;
                counts.correct += u64::from(given == label);
            }
            None => {}
        }
    }

    /// The counts since the last take.
    pub fn take(&self) -> Option<ShadowReport> {
        let mut shared = self.shared.lock().ok()?;
        let mut counts = std::mem::take(&mut shared.counts);
        counts.shed = counts
            .shed
            .saturating_add(self.shed.swap(0, Ordering::Relaxed));
        (!counts.is_empty()).then(|| ShadowReport {
            target: self.slot.target.clone(),
            counts,
        })
    }

    /// The counts so far, without taking them.
    #[cfg(test)]
    fn peek(&self) -> ShadowCounts {
        let mut counts = self.shared.lock().unwrap().counts.clone();
        counts.shed += self.shed.load(Ordering::Relaxed);
        counts
    }

    /// Tells the worker to stop and returns it to be joined (once).
    fn stop(&self) -> Option<JoinHandle<()>> {
        self.stopping.store(true, Ordering::Relaxed);
        if let Ok(mut jobs) = self.jobs.write() {
            jobs.take();
        }
        self.worker.lock().ok()?.take()
    }
}

impl Drop for ShadowSlot {
    fn drop(&mut self) {
        // Not joined here (a drop may happen on an async thread): the worker ends by itself
        // after at most the run in progress.
        let _ = self.stop();
    }
}

fn work(
    slot: &Slot,
    max_cpu_share: f64,
    jobs: &Receiver<Job>,
    stopping: &AtomicBool,
    shared: &Mutex<Shared>,
    shed: &AtomicU64,
) {
    // The lowest priority (nice 19; per thread on Linux): where the champion's requests keep
    // every core busy, the scheduler gives them the CPU and the challenger waits, its queue fills
    // and copies are shed. Failing to lower it only costs that preference.
    if let Err(e) = rustix::process::setpriority_process(None, 19) {
        warn!(error = %e, "cannot lower the shadow worker's priority");
    }
    let mut budget = CpuBudget::new(max_cpu_share, Instant::now());
    while let Ok(job) = jobs.recv() {
        if stopping.load(Ordering::Relaxed) {
            return;
        }
        if !budget.allows(Instant::now()) {
            shed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let started = Instant::now();
        let answered = run(slot, &job.request, &job.champion);
        let took = started.elapsed();
        budget.spend(took);
        let Ok(mut s) = shared.lock() else { return };
        match answered {
            Ok(challenger) => {
                s.counts.add(&Compared {
                    champion_label: job.champion.label.as_deref(),
                    challenger_label: challenger.label.as_deref(),
                    champion_score: job.champion.score,
                    challenger_score: challenger.score,
                    tolerance: challenger.tolerance,
                });
                s.counts.challenger_latency.record(took);
                if let (Some(champion), Some(challenger)) = (job.champion.label, challenger.label) {
                    s.remember(
                        job.id,
                        Remembered::Both {
                            champion,
                            challenger,
                        },
                    );
                }
            }
            Err(why) => {
                s.counts.challenger_errors += 1;
                drop(s);
                warn!(target = %slot.target, why, "shadow challenger failed a request");
            }
        }
    }
}

struct ChallengerAnswer {
    label: Option<String>,
    score: f64,
    tolerance: f64,
}

/// The challenger's answer to a copied request, in the champion's terms: for a classifier, the
/// probability it gives the champion's label, so the difference measures how far apart they are.
fn run(
    slot: &Slot,
    request: &Request,
    champion: &ChampionAnswer,
) -> Result<ChallengerAnswer, String> {
    let interface = &slot.meta.interface;
    let spec = interface
        .prediction
        .as_ref()
        .ok_or("the challenger's interface declares no prediction")?;
    let encoded;
    let inputs = match request {
        Request::Tensors(inputs) => inputs,
        Request::Row(row) => {
            encoded = edgefleet_inference::features_to_input(interface, std::slice::from_ref(row))
                .map_err(|e| e.to_string())?;
            &encoded
        }
    };
    let outputs = slot.model.run(inputs).map_err(|e| e.to_string())?;
    let output = outputs
        .get(spec.output())
        .ok_or_else(|| format!("output {:?} missing", spec.output()))?;
    let scores = output
        .data
        .floats_as_f32()
        .ok_or_else(|| format!("output {:?} is not floats", spec.output()))?;
    if scores.iter().any(|s| !s.is_finite()) {
        return Err(format!(
            "output {:?} contains NaN or infinity",
            spec.output()
        ));
    }
    let prediction = spec.interpret(&scores);
    let tolerance = slot.meta.health.tolerance;
    Ok(match spec {
        PredictionSpec::Classification { .. } => ChallengerAnswer {
            score: champion
                .label
                .as_ref()
                .and_then(|l| prediction.probabilities.as_ref()?.get(l).copied())
                .unwrap_or(0.0),
            label: prediction.label,
            tolerance: 0.0,
        },
        PredictionSpec::Regression { .. } => ChallengerAnswer {
            score: prediction
                .value
                .as_ref()
                .and_then(|v| v.first().copied())
                .unwrap_or(f64::NAN),
            label: None,
            tolerance: tolerance.abs + tolerance.rel * champion.score.abs(),
        },
    })
}

/// The shadow slots of all models.
#[derive(Debug, Default)]
pub struct Shadows {
    /// Read on every answer, written at install: a read lock never makes two requests wait.
    slots: RwLock<BTreeMap<String, Arc<ShadowSlot>>>,
    /// Workers of slots replaced or removed, joined at stop.
    retired: Mutex<Vec<JoinHandle<()>>>,
    /// The last challenger refused per model, reported until a challenger is accepted or none
    /// is wanted.
    refused: Mutex<BTreeMap<String, ShadowRefusal>>,
}

impl Shadows {
    pub fn get(&self, model: &str) -> Option<Arc<ShadowSlot>> {
        self.slots.read().ok()?.get(model).cloned()
    }

    pub fn refusal(&self, model: &str) -> Option<ShadowRefusal> {
        self.refused.lock().ok()?.get(model).cloned()
    }

    /// Records that `target` may not take `model`'s shadow slot.
    pub fn refuse(&self, model: &str, target: &str, reason: &str) {
        if let Ok(mut refused) = self.refused.lock() {
            refused.insert(
                model.to_owned(),
                ShadowRefusal {
                    target: target.to_owned(),
                    reason: reason.to_owned(),
                },
            );
        }
    }

    /// Puts `slot` in `model`'s shadow, stopping the one it replaces.
    pub fn put(&self, model: &str, slot: ShadowSlot) {
        if let Ok(mut refused) = self.refused.lock() {
            refused.remove(model);
        }
        let old = match self.slots.write() {
            Ok(mut slots) => slots.insert(model.to_owned(), Arc::new(slot)),
            Err(_) => return,
        };
        self.retire(old);
    }

    /// Empties `model`'s shadow slot (and forgets a refusal); returns the challenger's target if
    /// there was one.
    pub fn remove(&self, model: &str) -> Option<String> {
        if let Ok(mut refused) = self.refused.lock() {
            refused.remove(model);
        }
        let old = self.slots.write().ok()?.remove(model);
        let target = old.as_ref().map(|s| s.slot.target.clone());
        self.retire(old);
        target
    }

    fn retire(&self, old: Option<Arc<ShadowSlot>>) {
        if let Some(worker) = old.and_then(|s| s.stop())
            && let Ok(mut retired) = self.retired.lock()
        {
            retired.retain(|w| !w.is_finished());
            retired.push(worker);
        }
    }

    /// Each model's counts since the last take.
    pub fn take(&self) -> Vec<(String, ShadowReport)> {
        let Ok(slots) = self.slots.read() else {
            return Vec::new();
        };
        slots
            .iter()
            .filter_map(|(model, s)| Some((model.clone(), s.take()?)))
            .collect()
    }

    /// Counts the ground truth of `model`'s requests its challenger answered (labels; values
    /// of regressors are not judged here).
    pub fn truths(&self, model: &str, labels: &[(String, Truth)]) {
        let Some(slot) = self.get(model) else { return };
        for (id, truth) in labels {
            if let Truth::Label(label) = truth {
                slot.truth(id, label);
            }
        }
    }

    /// Stops every worker; returns them to be joined (each ends after at most the run in
    /// progress).
    pub fn stop_all(&self) -> Vec<JoinHandle<()>> {
        let models: Vec<String> = self
            .slots
            .read()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        for model in models {
            self.remove(&model);
        }
        self.retired
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

/// Puts each model's report in the window's entry of the version that served beside the
/// challenger (`serving` names it), adding the entry if that version had no other figures.
pub fn add_reports(
    models: &mut Vec<ModelMetrics>,
    reports: Vec<(String, ShadowReport)>,
    serving: impl Fn(&str) -> Option<(ModelName, semver::Version)>,
) {
    for (model, report) in reports {
        let Some((model, version)) = serving(&model) else {
            continue;
        };
        match models
            .iter_mut()
            .find(|m| m.model == model && m.version == version)
        {
            Some(entry) => entry.shadow = Some(report),
            None => {
                let mut entry = ModelMetrics::empty(model, version);
                entry.shadow = Some(report);
                models.push(entry);
            }
        }
    }
}

#[cfg(test)]
mod tests;
