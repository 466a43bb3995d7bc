//! An artifact is streamed to disk while hashed, never whole in memory: the heap this process
//! holds while 64 MiB arrive stays within a few network chunks. Measured with a counting
//! allocator, so the figure is exact and the test needs no clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgefleet_tuf::artifact::download;
use edgefleet_tuf::client::{ClientLimits, PlainTarget};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

const CHUNK: usize = 64 * 1024;
const CHUNKS: usize = 1024;

fn chunk(i: usize) -> bytes::Bytes {
    bytes::Bytes::from(
        (0..CHUNK)
            .map(|j| ((i * 7 + j * 31) % 251) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn body() -> tough::TransportStream {
    Box::pin(futures::stream::iter((0..CHUNKS).map(|i| Ok(chunk(i)))))
}

#[tokio::test(flavor = "current_thread")]
async fn a_64_mib_artifact_is_never_held_in_memory() {
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for i in 0..CHUNKS {
        digest.update(&chunk(i));
    }
    let target = PlainTarget {
        name: "models/big/1.0.0/model.onnx".into(),
        length: (CHUNK * CHUNKS) as u64,
        hashes: [("sha256".to_string(), hex::encode(digest.finish()))].into(),
    };
    let staging = tempfile::tempdir().unwrap();
    // Heap use is counted from here: the peak is what the download itself held at once.
    let _profiler = dhat::Profiler::builder().testing().build();
    let artifact = download(body(), &target, staging.path(), &ClientLimits::default())
        .await
        .unwrap();
    let growth = dhat::HeapStats::get().max_bytes;
    assert!(
        growth < 1024 * 1024,
        "the heap grew by {growth} bytes while 64 MiB streamed through"
    );
    assert_eq!(artifact.length(), target.length);
    assert_eq!(
        std::fs::metadata(artifact.path()).unwrap().len(),
        target.length
    );

    // A wrong hash leaves nothing behind, and neither does an unused verified file.
    let mut lying = target.clone();
    lying.hashes = [("sha256".to_string(), "00".repeat(32))].into();
    let err = download(body(), &lying, staging.path(), &ClientLimits::default())
        .await
        .unwrap_err();
    assert!(err.contains("sha256"), "{err}");
    drop(artifact);
    assert_eq!(std::fs::read_dir(staging.path()).unwrap().count(), 0);
}
