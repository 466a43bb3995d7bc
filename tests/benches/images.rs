//! Figures for docs/BENCHMARKS.md: one 1×3×640×640 float32 image through the detector
//! (`models/detector`, dynamic height and width) three ways — in this process with tract, over
//! HTTP as JSON, over HTTP in the binary tensor extension — with the same runtime and thread count.
//!
//! Uses the release binaries: `cargo build --release --bins && cargo bench -p edgefleet-e2e --bench images`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use edgefleet_e2e::*;
use edgefleet_inference::Runtime;
use edgefleet_protocol::health::{GeneratedTensor, GoldenInput};

const RUNS: usize = 30;
const WARMUP: usize = 3;

fn timed(mut f: impl FnMut()) -> (f64, f64) {
    let mut samples = Vec::with_capacity(RUNS);
    for i in 0..WARMUP + RUNS {
        let started = Instant::now();
        f();
        if i >= WARMUP {
            samples.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut q = |q| edgefleet_protocol::health::quantile(&mut samples, q).unwrap();
    (q(0.5), q(0.99))
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    let target = op.push("detector/1.0.0");
    // The JSON request is ~25 MB: over the default body limit, so the config raises it.
    let agent = AgentProcess::start_with_api(
        tmp.path(),
        &tmp.path().join("data"),
        &op.trusted_root(),
        "[inference]\nruntime = \"tract\"\n",
        "max_body_bytes = 134217728",
        &[],
    );
    assert!(agent.install(&op.repo(), Some(&target)).status.success());
    agent.wait_state(
        "detector",
        &["probation", "committed"],
        Duration::from_secs(30),
    );

    let image = GoldenInput::Generated(GeneratedTensor {
        dtype: edgefleet_protocol::DType::Float32,
        shape: vec![1, 3, 640, 640],
        uniform_seed: 640,
    })
    .materialize("images")
    .unwrap();

    let (model_bytes, meta) =
        edgefleet_tuf::operator::read_release_dir(&models_dir().join("detector/1.0.0")).unwrap();
    let loaded = edgefleet_inference::tract::TractRuntime
        .load(&model_bytes, &meta.interface)
        .unwrap();
    let inputs = edgefleet_inference::Inputs::from([("images".to_string(), image.clone())]);
    let expected = loaded.model.run(&inputs).unwrap();
    let (raw50, raw99) = timed(|| {
        loaded.model.run(&inputs).unwrap();
    });

    let url = agent.url("/v2/models/detector/infer");
    let json_body = serde_json::json!({ "inputs": [image.to_oip_json("images")] });
    let json_bytes = serde_json::to_vec(&json_body).unwrap();
    let mut response_bytes = 0;
    let (json50, json99) = timed(|| {
        let mut r = http()
            .post(&url)
            .header("Content-Type", "application/json")
            .send(&json_bytes[..])
            .unwrap();
        response_bytes = r
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_vec()
            .unwrap()
            .len();
    });
    let (status, _, outputs) = post_infer_binary(&url, &[("images", &image)]);
    assert_eq!(status, 200);
    assert_eq!(
        outputs["heads"], expected["heads"],
        "binary answers as in-process"
    );
    let (bin50, bin99) = timed(|| {
        post_infer_binary(&url, &[("images", &image)]);
    });
    let binary_bytes = image.data.len() * 4;
    println!(
        "detector 1x3x640x640 f32 (output 1x6x320x320), tract, 1 thread, p50 / p99 of {RUNS} runs:"
    );
    println!("  in-process run:        {raw50:.1} / {raw99:.1} ms");
    println!(
        "  HTTP JSON:             {json50:.1} / {json99:.1} ms ({:.1} MB request, {:.1} MB response)",
        json_bytes.len() as f64 / 1e6,
        response_bytes as f64 / 1e6
    );
    println!(
        "  HTTP binary extension: {bin50:.1} / {bin99:.1} ms ({:.1} MB request tensors, outputs binary too)",
        binary_bytes as f64 / 1e6
    );
    println!(
        "  binary / in-process p50: {:.2}x; JSON / in-process: {:.2}x",
        bin50 / raw50,
        json50 / raw50
    );
}
