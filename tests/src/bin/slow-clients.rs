//! A slowloris attacker for `tests/server.rs`: opens connections to a server from a range of
//! loopback source addresses and sends each half a request header, then waits for the server to
//! close them. One process can hold only as many sockets as its open-file limit allows, so the
//! test runs several of these.
//!
//! `slow-clients PORT FIRST_ADDRESS ADDRESSES PER_ADDRESS WAIT_SECONDS [SILENT]` prints
//! `opened N` once every connection is tried, then `closed M` when the server closed M of them
//! (or the wait ran out), and exits. With `SILENT` 1 the connections send nothing at all (an
//! MQTT client that never sends CONNECT).

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric arguments"))
        .collect();
    let (port, first, addresses, per_address, wait, silent) = match args[..] {
        [port, first, addresses, per_address, wait] => {
            (port, first, addresses, per_address, wait, false)
        }
        [port, first, addresses, per_address, wait, silent] => {
            (port, first, addresses, per_address, wait, silent == 1)
        }
        _ => panic!(
            "usage: slow-clients PORT FIRST_ADDRESS ADDRESSES PER_ADDRESS WAIT_SECONDS [SILENT]"
        ),
    };
    let target: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut sockets = Vec::new();
    for a in first..first + addresses {
        let source: std::net::SocketAddr = format!("127.0.{}.{}:0", a / 250, a % 250 + 2)
            .parse()
            .unwrap();
        for _ in 0..per_address {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(source).unwrap();
            if let Ok(Ok(mut stream)) =
                tokio::time::timeout(Duration::from_secs(2), socket.connect(target)).await
            {
                if !silent {
                    let _ = stream
                        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                        .await;
                }
                sockets.push(stream);
            }
        }
    }
    println!("opened {}", sockets.len());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let mut closed = 0;
    for mut s in sockets {
        let mut buf = [0u8; 512];
        if let Ok(Ok(_) | Err(_)) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            closed += 1;
        }
    }
    println!("closed {closed}");
}
