//! Figures for docs/BENCHMARKS.md: tract against ONNX Runtime on every model of models/ and the
//! larger zoo graphs (`python3 models/build.py --zoo`, run here when missing): load time, p50,
//! p99 and GFLOP/s per back-end (one thread each), the outputs cross-checked, what `auto` picks
//! and how close its serving latency is to the faster back-end, and onnxruntime's Python package
//! on the same inputs as the outside reference.
//!
//! `cargo bench -p edgefleet-inference --bench backends`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use edgefleet_inference::onnxruntime::OnnxRuntime;
use edgefleet_inference::select::Engine;
use edgefleet_inference::tract::{self, CachedTractRuntime, TractRuntime};
use edgefleet_inference::{
    Inputs, LoadedModel, Runtime, Tensor, TensorData, features_to_input, health,
};
use edgefleet_protocol::health::HealthSpec;
use edgefleet_protocol::interface::ModelInterface;
use edgefleet_protocol::target::RuntimePreference;
use serde_json::json;

#[path = "../tests/support/mod.rs"]
mod support;

use support::models_dir;

struct Subject {
    name: String,
    path: PathBuf,
    interface: ModelInterface,
    spec: Option<HealthSpec>,
    inputs: Inputs,
    /// One feature row, for tabular models: the agent's whole `:predict` path is timed on it.
    row: Option<serde_json::Map<String, serde_json::Value>>,
}

fn release(dir: &str) -> Subject {
    let root = models_dir().join(dir);
    let (_, mut meta) = support::release(dir);
    meta.health.p99_budget_ms *= 50.0;
    let case = meta.health.cases[0].clone();
    Subject {
        name: dir.to_owned(),
        path: root.join("model.onnx"),
        inputs: health::case_inputs(&meta.interface, &case).unwrap(),
        row: case.features.first().cloned(),
        interface: meta.interface,
        spec: Some(meta.health),
    }
}

fn zoo(name: &str, input: &str, output: &str, output_shape: &[i64]) -> Subject {
    let path = models_dir().join(".cache/zoo").join(format!("{name}.onnx"));
    if !path.exists() {
        let status = std::process::Command::new("python3")
            .arg(models_dir().join("build.py"))
            .arg("--zoo")
            .status()
            .unwrap();
        assert!(status.success(), "python3 models/build.py --zoo failed");
    }
    let interface: ModelInterface = serde_json::from_value(json!({
        "inputs": [{"name": input, "dtype": "float32", "shape": [1, 3, 224, 224]}],
        "outputs": [{"name": output, "dtype": "float32", "shape": output_shape}],
    }))
    .unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let data = (0..3 * 224 * 224)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    Subject {
        name: format!("zoo/{name}"),
        path,
        interface,
        spec: None,
        inputs: BTreeMap::from([(
            input.to_owned(),
            Tensor {
                shape: vec![1, 3, 224, 224],
                data: TensorData::Float32(data),
            },
        )]),
        row: None,
    }
}

struct Timing {
    p50_ms: f64,
    p99_ms: f64,
}

fn time(mut f: impl FnMut()) -> Timing {
    for _ in 0..5 {
        f();
    }
    let mut samples = Vec::new();
    let started = Instant::now();
    while (samples.len() < 30 || started.elapsed().as_secs_f64() < 1.0) && samples.len() < 5000 {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    let q = |p: f64| samples[((p * samples.len() as f64) as usize).min(samples.len() - 1)];
    Timing {
        p50_ms: q(0.5),
        p99_ms: q(0.99),
    }
}

/// Single-core f32 peak from the CPU's clock and vector units: two FMA pipes of 8 lanes (AVX2)
/// or 16 (AVX-512) doing two FLOPs each per cycle.
fn single_core_peak_gflops() -> (f64, String) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let mhz: f64 = field("cpu MHz").parse().unwrap_or(0.0);
    let flags = field("flags");
    let lanes = if flags.split(' ').any(|f| f == "avx512f") {
        16.0
    } else {
        8.0
    };
    (
        mhz / 1e3 * lanes * 2.0 * 2.0,
        format!("{} at {mhz:.0} MHz", field("model name")),
    )
}

fn main() {
    let ort = Arc::new(OnnxRuntime::open(&support::onnxruntime_library(), 1).unwrap());
    let runtimes: Vec<Arc<dyn Runtime>> = vec![Arc::new(TractRuntime), ort.clone()];
    let subjects = vec![
        release("churn/1.0.0"),
        release("churn/2.0.0"),
        release("iris/1.0.0"),
        release("vision/1.0.0"),
        zoo("squeezenet", "data_0", "softmaxout_1", &[1, 1000, 1, 1]),
        zoo("shufflenet", "gpu_0/data_0", "gpu_0/softmax_1", &[1, 1000]),
        zoo("resnet50", "gpu_0/data_0", "gpu_0/softmax_1", &[1, 1000]),
    ];

    // The Python reference, on byte-identical inputs.
    let tmp = tempfile::tempdir().unwrap();
    let manifest: Vec<serde_json::Value> = subjects
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (name, tensor) = s.inputs.iter().next().unwrap();
            let data = tmp.path().join(format!("{i}.f32"));
            let floats = tensor.data.floats_as_f32().unwrap();
            let bytes: Vec<u8> = floats.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(&data, bytes).unwrap();
            json!({"name": s.name, "model": s.path, "input": name, "shape": tensor.shape, "data": data})
        })
        .collect();
    let manifest_path = tmp.path().join("manifest.json");
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .arg(models_dir().join("bench_ort.py"))
        .arg(&manifest_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let (peak, cpu) = single_core_peak_gflops();
    println!("CPU: {cpu}; single-core f32 peak taken as {peak:.0} GFLOP/s");
    println!();
    println!(
        "| model | GFLOP | back-end | load ms | p50 ms | p99 ms | GFLOP/s (% of peak) | max abs diff vs onnxruntime |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut summary = Vec::new();
    for s in &subjects {
        let bytes = std::fs::read(&s.path).unwrap();
        let gflop = python[&s.name]["gflop"].as_f64().unwrap();
        let mut p50s = BTreeMap::new();
        let mut reference: Option<Vec<f32>> = None;
        let mut rows = Vec::new();
        for runtime in runtimes.iter().rev() {
            let loaded = match runtime.load(&bytes, &s.interface) {
                Ok(l) => l,
                Err(e) => {
                    rows.push(format!(
                        "| {} | {gflop:.3} | {} | cannot load: {} | | | | |",
                        s.name,
                        runtime.name(),
                        e.to_string().chars().take(60).collect::<String>()
                    ));
                    continue;
                }
            };
            let model: &dyn LoadedModel = loaded.model.as_ref();
            let outputs = model.run(&s.inputs).unwrap();
            let values: Vec<f32> = outputs
                .values()
                .flat_map(|t| t.data.floats_as_f32().unwrap())
                .collect();
            let diff = match &reference {
                None => {
                    reference = Some(values);
                    "—".to_owned()
                }
                Some(r) => {
                    let d = r
                        .iter()
                        .zip(&values)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0f32, f32::max);
                    format!("{d:.1e}")
                }
            };
            let t = time(|| {
                model.run(&s.inputs).unwrap();
            });
            p50s.insert(runtime.name(), t.p50_ms);
            let gflops = gflop / (t.p50_ms / 1e3);
            rows.push(format!(
                "| {} | {gflop:.3} | {} | {:.1} | {:.3} | {:.3} | {gflops:.1} ({:.0} %) | {diff} |",
                s.name,
                runtime.name(),
                loaded.load_time.as_secs_f64() * 1e3,
                t.p50_ms,
                t.p99_ms,
                100.0 * gflops / peak,
            ));
        }
        let py = &python[&s.name];
        rows.push(format!(
            "| {} | {gflop:.3} | onnxruntime (Python) | | {:.3} | {:.3} | {:.1} | |",
            s.name,
            py["p50_ms"].as_f64().unwrap(),
            py["p99_ms"].as_f64().unwrap(),
            gflop / (py["p50_ms"].as_f64().unwrap() / 1e3),
        ));
        // Measured onnxruntime first (the reference for the diff); printed tract first.
        rows.swap(0, 1);
        for r in &rows {
            println!("{r}");
        }

        // What `auto` picks, and its serving latency against the faster back-end.
        let spec = s.spec.clone().unwrap_or_else(|| {
            let expected: BTreeMap<String, serde_json::Value> = {
                let outputs = ort
                    .load(&bytes, &s.interface)
                    .unwrap()
                    .model
                    .run(&s.inputs)
                    .unwrap();
                outputs
                    .into_iter()
                    .map(|(n, t)| (n, serde_json::to_value(&t).unwrap()))
                    .collect()
            };
            let (name, tensor) = s.inputs.iter().next().unwrap();
            serde_json::from_value(json!({
                "warmup_runs": 2, "latency_runs": 10, "p99_budget_ms": 1e9,
                "tolerance": {"abs": 1e-4, "rel": 1e-3},
                "cases": [{"name": "seeded", "inputs": {name: serde_json::to_value(tensor).unwrap()}, "expected": expected}]
            }))
            .unwrap()
        });
        let engine = Engine::new(runtimes.clone(), Vec::new(), RuntimePreference::Auto);
        let selected = engine.load(&bytes, &s.interface, &spec, None).unwrap();
        let chosen = selected.loaded.model.runtime();
        let serving = time(|| {
            selected.loaded.model.run(&s.inputs).unwrap();
        });
        let best = p50s.values().copied().fold(f64::INFINITY, f64::min);
        let predict = s.row.as_ref().map(|row| {
            let spec = s.interface.prediction.clone().unwrap();
            time(|| {
                let inputs = features_to_input(&s.interface, std::slice::from_ref(row)).unwrap();
                let out = selected.loaded.model.run(&inputs).unwrap();
                let probabilities = out[spec.output()].data.floats_as_f32().unwrap();
                std::hint::black_box(spec.interpret(&probabilities));
            })
        });
        summary.push(format!(
            "| {} | {chosen} | {:.3} | {:.2}x | {} |",
            s.name,
            serving.p50_ms,
            serving.p50_ms / best,
            predict.map_or("—".to_owned(), |p| format!(
                "{:.3} ms = {:.2}x Python's raw session.run",
                p.p50_ms,
                p.p50_ms / python[&s.name]["p50_ms"].as_f64().unwrap()
            )),
        ));
    }
    println!();
    println!(
        "| model | `auto` chose | serving p50 ms | vs the faster back-end | whole predict path (features → label) |"
    );
    println!("|---|---|---|---|---|");
    for line in summary {
        println!("{line}");
    }

    // tract's NNEF cache: a second load of the same artifact.
    println!();
    println!("| model | tract load from ONNX ms | tract reload from its NNEF cache ms |");
    println!("|---|---|---|");
    let cache = tempfile::tempdir().unwrap();
    let cached = CachedTractRuntime {
        dir: cache.path().to_path_buf(),
        min_bytes: 0,
    };
    for s in subjects
        .iter()
        .filter(|s| s.spec.is_none() || s.name.starts_with("vision"))
    {
        let bytes = std::fs::read(&s.path).unwrap();
        let first = cached.load(&bytes, &s.interface).unwrap().load_time;
        let again = cached.load(&bytes, &s.interface).unwrap().load_time;
        println!(
            "| {} | {:.1} | {:.1} |",
            s.name,
            first.as_secs_f64() * 1e3,
            again.as_secs_f64() * 1e3
        );
    }

    // Two threads per inference (`inference.threads = 2`), on an otherwise idle machine.
    tract::set_threads(2);
    let ort2 = OnnxRuntime::open(&support::onnxruntime_library(), 2).unwrap();
    println!();
    println!("| model | tract p50 ms, 2 threads | ONNX Runtime p50 ms, 2 threads |");
    println!("|---|---|---|");
    for s in subjects.iter().filter(|s| s.spec.is_none()) {
        let bytes = std::fs::read(&s.path).unwrap();
        let p50 = |runtime: &dyn Runtime| {
            let loaded = runtime.load(&bytes, &s.interface).unwrap();
            time(|| {
                loaded.model.run(&s.inputs).unwrap();
            })
            .p50_ms
        };
        println!(
            "| {} | {:.2} | {:.2} |",
            s.name,
            p50(&TractRuntime),
            p50(&ort2)
        );
    }
}
