//! Enrollment against a server that is not one: an answer far over the size of any enrollment is
//! cut off at 64 KiB with a clear error, an answer trickled forever hits the 30 s deadline, and a
//! failed enrollment leaves no key or link behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edge_agent::fleet;
use edgefleet_protocol::DeviceId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server on a free port that takes one request and answers with `answer`; returns its address.
async fn serve_once<F, Fut>(answer: F) -> std::net::SocketAddr
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut request = vec![0u8; 4096];
        let _ = sock.read(&mut request).await;
        answer(sock).await;
    });
    addr
}

#[tokio::test]
async fn an_endless_answer_is_cut_at_the_cap_and_leaves_nothing_behind() {
    let addr = serve_once(|mut sock| async move {
        let _ = sock
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n")
            .await;
        let chunk = vec![b' '; 64 * 1024];
        // 64 MiB unless the client hangs up first.
        for _ in 0..1024 {
            if sock.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
    .await;
    // As the agent's main does.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let data = tempfile::tempdir().unwrap();
    let err = fleet::enroll(
        data.path(),
        &DeviceId::new("d1").unwrap(),
        &format!("http://{addr}"),
        "efe_token",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("over 65536 bytes"), "{err}");
    assert!(!fleet::link_path(data.path()).exists());
    assert!(!edge_agent::device_key::key_path(data.path()).exists());
}

/// A server that accepts and then trickles its answer (a byte of header every 5 s, forever):
/// the whole exchange has a 30 s deadline. On tokio's paused clock, so the test takes no time:
/// the clock jumps whenever nothing is ready, which is how a quiet network looks.
#[tokio::test(start_paused = true)]
async fn a_trickled_answer_hits_the_30_second_deadline_and_leaves_nothing_behind() {
    let addr = serve_once(|mut sock| async move {
        let _ = sock.write_all(b"HTTP/1.1 200 OK\r\n").await;
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            if sock.write_all(b"x").await.is_err() {
                return;
            }
        }
    })
    .await;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let data = tempfile::tempdir().unwrap();
    let started = tokio::time::Instant::now();
    let device = DeviceId::new("d1").unwrap();
    let url = format!("http://{addr}");
    let enrolling = fleet::enroll(data.path(), &device, &url, "efe_token");
    let err = tokio::time::timeout(std::time::Duration::from_secs(120), enrolling)
        .await
        .expect("no deadline: still enrolling after 120 s")
        .unwrap_err()
        .to_string();
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(30) && took < std::time::Duration::from_secs(35),
        "gave up after {took:?}: {err}"
    );
    assert!(!fleet::link_path(data.path()).exists());
    assert!(!edge_agent::device_key::key_path(data.path()).exists());
}
