//! The benchmarks' load generator: Debian's `wrk` (installed by scripts/setup.sh), with the same
//! settings for the agent and any peer it is compared with, and the figures of the server process
//! under that load read from `/proc`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{cpu_seconds, rss_mib};

/// What one `wrk` run did to the server answering it.
#[derive(Debug, Clone)]
pub struct LoadRun {
    pub requests_per_second: f64,
    /// Requests answered with a status other than 2xx or 3xx, and socket errors.
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The server's user + system CPU over the run, per answered request.
    pub cpu_per_request: Duration,
    pub rss_before_mib: f64,
    /// Sampled every 100 ms.
    pub rss_peak_mib: f64,
    pub rss_after_mib: f64,
}

/// POSTs `body` as JSON to `url` from `connections` kept-alive connections over 2 threads for
/// `duration`, while sampling the process `pid`.
pub fn post_load(url: &str, body: &str, connections: u32, duration: Duration, pid: u32) -> LoadRun {
    let script = tempfile::NamedTempFile::new().expect("a temporary file for wrk's script");
    let quoted = serde_json::to_string(body).expect("a JSON string");
    // A JSON string is a valid Lua string literal for the ASCII bodies the benchmarks send.
    std::fs::write(
        script.path(),
        format!(
            "wrk.method = \"POST\"\nwrk.body = {quoted}\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )
    .expect("wrk's script written");
    run(url, script.path(), connections, duration, pid)
}

fn run(url: &str, script: &Path, connections: u32, duration: Duration, pid: u32) -> LoadRun {
    let rss_before = rss_mib(pid);
    let cpu_before = cpu_seconds(pid);
    let mut child = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}")])
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .args(["--latency", "--timeout", "10s", "-s"])
        .arg(script)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wrk runs (apt-get install wrk; scripts/setup.sh installs it)");
    let started = Instant::now();
    let mut rss_peak = rss_before;
    while child.try_wait().expect("wrk's status").is_none() {
        std::thread::sleep(Duration::from_millis(100));
        rss_peak = rss_peak.max(rss_mib(pid));
        assert!(
            started.elapsed() < duration + Duration::from_secs(30),
            "wrk did not finish"
        );
    }
    let cpu = cpu_seconds(pid) - cpu_before;
    let output = child.wait_with_output().expect("wrk's output");
    assert!(output.status.success(), "wrk failed");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    std::thread::sleep(Duration::from_secs(1));
    let report = parse(&text).unwrap_or_else(|| panic!("unreadable wrk report:\n{text}"));
    let answered = (report.requests.saturating_sub(report.failed)).max(1);
    LoadRun {
        requests_per_second: report.requests_per_second,
        failed: report.failed,
        p50_ms: report.p50_ms,
        p99_ms: report.p99_ms,
        cpu_per_request: Duration::from_secs_f64(cpu / answered as f64),
        rss_before_mib: rss_before,
        rss_peak_mib: rss_peak,
        rss_after_mib: rss_mib(pid),
    }
}

#[derive(Debug, PartialEq)]
struct Report {
    requests: u64,
    failed: u64,
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn parse(text: &str) -> Option<Report> {
    let mut requests = None;
    let mut failed = 0;
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [n, "requests", "in", ..] => requests = n.parse().ok(),
            ["Requests/sec:", r] => rps = r.parse().ok(),
            ["Non-2xx", "or", "3xx", "responses:", n] => failed += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                failed += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["50%", v] => p50 = millis(v),
            ["99%", v] => p99 = millis(v),
            _ => {}
        }
    }
    Some(Report {
        requests: requests?,
        failed,
        requests_per_second: rps?,
        p50_ms: p50?,
        p99_ms: p99?,
    })
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.01s`, `1.50m`.
fn millis(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrks_report() {
        let text = "Running 10s test @ http://127.0.0.1:1/x\n  2 threads and 64 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     2.10ms    1.00ms  30.00ms   90.00%\n  Latency Distribution\n     50%  812.00us\n     75%    2.00ms\n     90%    3.00ms\n     99%    1.20s\n  250000 requests in 10.00s, 50.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 4\nRequests/sec:  25000.00\nTransfer/sec:      5.00MB\n";
        assert_eq!(
            parse(text),
            Some(Report {
                requests: 250_000,
                failed: 7,
                requests_per_second: 25_000.0,
                p50_ms: 0.812,
                p99_ms: 1200.0,
            })
        );
        assert_eq!(parse("garbage"), None);
    }
}
