//! Fleet input drift on a quiet fleet: churn 2.0.0's signed baseline, devices answering one
//! request a second in 60 s windows, inputs drawn from the baseline itself (no drift at all) or
//! shifted. Averaging each window's PSI called such a fleet drifting; the pooled histogram
//! must not, and must still catch a real shift.

use edgefleet_protocol::baseline::{Baseline, BinCounts, psi};
use edgefleet_protocol::message::{MetricsBatch, ModelMetrics};

use super::*;

const WINDOW_REQUESTS: u64 = 60;

fn churn_baseline() -> Baseline {
    let baseline: Baseline =
        serde_json::from_str(include_str!("../../../models/churn/2.0.0/baseline.json")).unwrap();
    baseline.validate().unwrap();
    baseline
}

/// splitmix64: reproducible draws without a dependency.
struct Draws(u64);

impl Draws {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    }

    fn bin(&mut self, shares: &[f64]) -> usize {
        let u = self.unit() * shares.iter().sum::<f64>();
        let mut acc = 0.0;
        for (bin, share) in shares.iter().enumerate() {
            acc += share;
            if u < acc {
                return bin;
            }
        }
        shares.len() - 1
    }
}

/// One device's window: `WINDOW_REQUESTS` inputs, each feature's bin drawn from the baseline,
/// `shift` bins higher for the features it names. Sent as the agent sends it: the window's own
/// PSI and its bin counts.
fn window(
    draws: &mut Draws,
    expected: &Expected,
    shift: &BTreeMap<&str, usize>,
    device: usize,
    seq: u64,
) -> MetricsBatch {
    let mut m = ModelMetrics::empty("churn".parse().unwrap(), "2.0.0".parse().unwrap());
    m.requests = WINDOW_REQUESTS;
    for (feature, shares) in expected {
        let mut counts = vec![0u64; shares.len()];
        for _ in 0..WINDOW_REQUESTS {
            let by = shift.get(feature.as_str()).copied().unwrap_or(0);
            counts[(draws.bin(shares) + by).min(shares.len() - 1)] += 1;
        }
        m.drift_psi
            .insert(feature.clone(), psi(shares, &counts).unwrap());
        m.drift_counts
            .insert(feature.clone(), BinCounts::from_dense(&counts));
    }
    super::tests::batch(&format!("device-{device}"), seq, m)
}

fn fleet(devices: usize, windows: u64, shift: &BTreeMap<&str, usize>) -> Vec<MetricsBatch> {
    let expected = churn_baseline().expected_shares();
    let mut draws = Draws(7);
    (0..devices)
        .flat_map(|d| (0..windows).map(move |w| (d, w)))
        .map(|(d, w)| window(&mut draws, &expected, shift, d, w))
        .collect()
}

/// The drift gate alone, at the usual 0.25.
fn drift_gate() -> ModelGates {
    ModelGates {
        min_requests: 100,
        max_input_drift_psi: Some(0.25),
        ..ModelGates::default()
    }
}

fn figures(batches: &[MetricsBatch]) -> VersionFigures {
    let mut baselines = Baselines::default();
    baselines.insert("churn", "2.0.0", churn_baseline().expected_shares());
    by_version(batches, &baselines, |_| true)
        .remove(&("churn".to_owned(), "2.0.0".to_owned()))
        .unwrap()
}

/// What the server computed before: each window's PSI, weighted by its requests.
fn averaged_worst(batches: &[MetricsBatch]) -> f64 {
    let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
    for m in batches.iter().flat_map(|b| &b.models) {
        for (feature, value) in &m.drift_psi {
            *sums.entry(feature).or_default() += value;
        }
    }
    sums.values().fold(0.0_f64, |a, s| a.max(*s)) / batches.len() as f64
}

#[test]
fn a_quiet_fleet_without_drift_passes_the_drift_gate_once_enough_is_pooled() {
    // 20 devices for 10 minutes at one request a second: 12,000 live values per feature.
    let batches = fleet(20, 10, &BTreeMap::new());
    let averaged = averaged_worst(&batches);
    assert!(
        averaged > 0.1,
        "the old averaged figure ({averaged:.3}) is what halted healthy rollouts"
    );
    let f = figures(&batches);
    let (feature, worst) = f.worst_drift().unwrap();
    assert!(worst < 0.02, "pooled PSI of {feature} is {worst:.4}");
    eprintln!("worst feature: windows averaged {averaged:.3}, pooled {worst:.4} ({feature})");
    assert!(matches!(
        judge(&drift_gate(), &f, &VersionFigures::default()),
        Verdict::Pass(_)
    ));
}

#[test]
fn too_few_values_pooled_are_not_judged_yet() {
    // One device, two windows: 120 values over ten bins say nothing yet.
    let f = figures(&fleet(1, 2, &BTreeMap::new()));
    assert!(f.drift_psi().is_empty(), "{:?}", f.drift_psi());
    let verdict = judge(&drift_gate(), &f, &VersionFigures::default());
    let Verdict::Insufficient(why) = verdict else {
        panic!("judged on 120 values: {verdict:?}");
    };
    assert!(why.contains("of the 500 live values"), "{why}");
}

#[test]
fn a_real_shift_on_the_same_quiet_fleet_breaches_the_gate() {
    let shift: BTreeMap<&str, usize> = [("monthly_charges", 3)].into();
    let batches = fleet(20, 10, &shift);
    let f = figures(&batches);
    let (feature, worst) = f.worst_drift().unwrap();
    assert_eq!(feature, "monthly_charges");
    assert!(worst > 0.25, "{worst}");
    let Verdict::Breach(why) = judge(&drift_gate(), &f, &VersionFigures::default()) else {
        panic!("a shift of three bins passed");
    };
    assert!(why.contains("monthly_charges"), "{why}");
    // Every other feature, drawn from the baseline, stays quiet.
    for (other, value) in f.drift_psi() {
        if other != "monthly_charges" {
            assert!(value < 0.02, "{other}: {value}");
        }
    }
}
