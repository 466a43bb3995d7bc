//! A TCP relay on loopback between a device and the fleet: it counts the bytes each way and can
//! slow down the answers to artifact downloads, so a test can cut a device off mid-download at a
//! known point and a bench can count what an update costs on the wire. Nothing is simulated: the
//! bytes are the real HTTP and MQTT exchanges, passed through unchanged.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct RelayStats {
    /// Bytes from the device to the upstream.
    pub up: AtomicU64,
    /// Bytes from the upstream to the device.
    pub down: AtomicU64,
    /// Of `down`, the bytes answering model artifact downloads, `GET /tuf/targets/….model.onnx`
    /// (headers included; a release's golden cases and baseline are not counted here).
    pub target_down: AtomicU64,
    /// Each HTTP request's first line, with its `Range` header when it had one.
    requests: Mutex<Vec<String>>,
}

#[derive(Debug)]
pub struct Relay {
    pub addr: SocketAddr,
    pub stats: Arc<RelayStats>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Relays every connection made to the returned address to `upstream`. With
    /// `target_bytes_per_second`, answers to artifact downloads trickle at that rate.
    pub fn start(upstream: SocketAddr, target_bytes_per_second: Option<u64>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(RelayStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (stats.clone(), stop.clone());
        std::thread::spawn(move || {
            for device in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(device) = device else { continue };
                let Ok(fleet) = TcpStream::connect(upstream) else {
                    continue;
                };
                relay_connection(device, fleet, s.clone(), target_bytes_per_second);
            }
        });
        Self { addr, stats, stop }
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn mqtt_url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<String> {
        self.stats.requests.lock().unwrap().clone()
    }

    pub fn total_bytes(&self) -> u64 {
        self.stats.up.load(Ordering::Relaxed) + self.stats.down.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

fn relay_connection(
    device: TcpStream,
    fleet: TcpStream,
    stats: Arc<RelayStats>,
    target_bytes_per_second: Option<u64>,
) {
    let downloading = Arc::new(AtomicBool::new(false));
    let (mut device_in, mut fleet_out) = (device.try_clone().unwrap(), fleet.try_clone().unwrap());
    let (s, d) = (stats.clone(), downloading.clone());
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = device_in.read(&mut buf) {
            if n == 0 {
                break;
            }
            note_requests(&buf[..n], &s, &d);
            s.up.fetch_add(n as u64, Ordering::Relaxed);
            if fleet_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = fleet_out.shutdown(Shutdown::Write);
    });
    let (mut fleet_in, mut device_out) = (fleet, device);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = fleet_in.read(&mut buf) {
            if n == 0 {
                break;
            }
            let trickle = downloading.load(Ordering::Relaxed);
            let slice = match (trickle, target_bytes_per_second) {
                // Ten slices a second at the configured rate.
                (true, Some(rate)) => usize::try_from((rate / 10).max(1)).unwrap_or(1),
                _ => n,
            };
            for part in buf[..n].chunks(slice) {
                if device_out.write_all(part).is_err() {
                    let _ = fleet_in.shutdown(Shutdown::Both);
                    return;
                }
                stats.down.fetch_add(part.len() as u64, Ordering::Relaxed);
                if trickle {
                    stats
                        .target_down
                        .fetch_add(part.len() as u64, Ordering::Relaxed);
                    if target_bytes_per_second.is_some() {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
        let _ = device_out.shutdown(Shutdown::Write);
    });
}

/// Notes HTTP request lines (MQTT bytes never start with an HTTP method and a path).
fn note_requests(bytes: &[u8], stats: &RelayStats, downloading: &AtomicBool) {
    let text = String::from_utf8_lossy(bytes);
    let Some(first) = text.lines().next() else {
        return;
    };
    if !(first.starts_with("GET /") || first.starts_with("POST /") || first.starts_with("HEAD /")) {
        return;
    }
    downloading.store(
        first.starts_with("GET /tuf/targets/") && first.contains(".model.onnx "),
        Ordering::Relaxed,
    );
    let range = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("range:"))
        .map(|l| format!(" [{}]", l.trim()))
        .unwrap_or_default();
    stats
        .requests
        .lock()
        .unwrap()
        .push(format!("{first}{range}"));
}
