//! Downloads over real HTTP (tough's transport, a misbehaving server on loopback): a mirror that
//! lies about lengths, never stops, or trickles is cut off, and no partial file stays behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use edgefleet_tuf::client::{self, ClientConfig, ClientLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

#[derive(Clone, Copy, Debug)]
enum Artifact {
    Honest,
    /// Content-Length says one byte less than the signed length, then sends everything.
    LyingContentLength,
    /// No Content-Length; bytes forever (until the client hangs up).
    Endless,
    /// One byte every 200 ms.
    Trickle,
    /// Artifacts honest, but `timestamp.json` never ends (a mirror filling the device's RAM).
    EndlessTimestamp,
}

/// Serves `repo_dir` over HTTP/1.1 on loopback, misbehaving on artifact requests as told.
async fn serve(repo_dir: PathBuf, mode: Artifact) -> Url {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let repo_dir = repo_dir.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/')
                    .to_string();
                let file = repo_dir.join(&path);
                let Ok(body) = std::fs::read(&file) else {
                    let _ = sock.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                    return;
                };
                let is_artifact = path.starts_with("targets/");
                if matches!(mode, Artifact::EndlessTimestamp) && path.ends_with("timestamp.json") {
                    let _ = sock
                        .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
                        .await;
                    let chunk = vec![b' '; 64 * 1024];
                    for _ in 0..100_000 {
                        if sock.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                match (is_artifact, mode) {
                    (false, _) | (true, Artifact::Honest | Artifact::EndlessTimestamp) => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = sock.write_all(head.as_bytes()).await;
                        let _ = sock.write_all(&body).await;
                    }
                    (true, Artifact::LyingContentLength) => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len() - 1
                        );
                        let _ = sock.write_all(head.as_bytes()).await;
                        let _ = sock.write_all(&body).await;
                    }
                    (true, Artifact::Endless) => {
                        let _ = sock
                            .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
                            .await;
                        let _ = sock.write_all(&body).await;
                        let chunk = vec![0x42u8; 64 * 1024];
                        for _ in 0..100_000 {
                            if sock.write_all(&chunk).await.is_err() {
                                return;
                            }
                        }
                    }
                    (true, Artifact::Trickle) => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = sock.write_all(head.as_bytes()).await;
                        for byte in body.iter().take(200) {
                            if sock.write_all(&[*byte]).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            });
        }
    });
    Url::parse(&format!("http://{addr}/")).unwrap()
}

fn transport() -> tough::HttpTransport {
    tough::HttpTransportBuilder::new()
        .timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(2))
        .tries(1)
        .build()
}

async fn client_config(f: &Fixture, mode: Artifact) -> ClientConfig {
    let base = serve(f.repo_dir.clone(), mode).await;
    ClientConfig {
        metadata_dir: f.client_dir.clone(),
        metadata_url: base.join("metadata/").unwrap(),
        targets_url: base.join("targets/").unwrap(),
        limits: ClientLimits {
            grace: Duration::from_secs(1),
            min_bytes_per_second: 1024,
            stall_timeout: Duration::from_secs(3),
            ..ClientLimits::default()
        },
    }
}

async fn attempt(mode: Artifact) -> (Result<Vec<u8>, edgefleet_tuf::Error>, PathBuf, Fixture) {
    let f = Fixture::new().await;
    let config = client_config(&f, mode).await;
    let mut trusted = client::refresh(&config, transport()).await.unwrap();
    let target = trusted
        .model_target("models/churn/1.0.0/model.onnx")
        .await
        .unwrap();
    let staging = f.tmp.path().join("staging");
    let result = trusted
        .fetch(&target, &staging)
        .await
        .map(|artifact| artifact.read().unwrap());
    (result, staging, f)
}

#[tokio::test]
async fn an_honest_mirror_over_http_delivers_the_signed_bytes() {
    let (result, _, _f) = attempt(Artifact::Honest).await;
    assert_eq!(result.unwrap(), release("churn/1.0.0").0);
}

/// Cut off, and what stays on disk is at most the signed length: a body that ended early or
/// trickled leaves its part file for the next attempt to continue (the whole is verified then);
/// one longer than the signed length proves itself wrong and leaves nothing.
#[tokio::test]
async fn lying_content_length_endless_bodies_and_trickles_are_cut_off_keeping_at_most_the_signed_length()
 {
    let signed_length = release("churn/1.0.0").0.len() as u64;
    for (mode, may_keep) in [
        (Artifact::LyingContentLength, true),
        (Artifact::Endless, false),
        (Artifact::Trickle, true),
    ] {
        let started = std::time::Instant::now();
        let (result, staging, _f) = attempt(mode).await;
        let err = result.unwrap_err();
        assert!(
            matches!(err, edgefleet_tuf::Error::Download { .. }),
            "{mode:?}: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{mode:?} took {:?}",
            started.elapsed()
        );
        let left: Vec<u64> = std::fs::read_dir(&staging)
            .map(|d| d.flatten().map(|e| e.metadata().unwrap().len()).collect())
            .unwrap_or_default();
        if may_keep {
            assert!(left.len() <= 1, "{mode:?}: {left:?}");
            assert!(
                left.iter().all(|l| *l <= signed_length),
                "{mode:?}: {left:?}"
            );
        } else {
            assert!(
                left.is_empty(),
                "{mode:?}: wrong bytes left behind: {left:?}"
            );
        }
    }
}

#[tokio::test]
async fn endless_metadata_is_cut_off_at_the_devices_limit_while_it_arrives() {
    let f = Fixture::new().await;
    let config = client_config(&f, Artifact::EndlessTimestamp).await;
    let started = std::time::Instant::now();
    let err = client::refresh(&config, transport()).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("larger than this device's limit"), "{text}");
    // Cut at 1 MiB, not after the 6.4 GB the mirror would send.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
