//! `edgefleet-sim` as the tests and the fleet benchmark run it: started on a configuration,
//! waited for until every device is connected, stopped with SIGINT for its summary, and killed
//! if the caller panics first (a simulated fleet must not outlive its test).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

#[derive(Debug)]
pub struct SimProcess {
    child: Child,
    pub log: PathBuf,
}

impl SimProcess {
    /// The simulator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `config` (the simulator's TOML) to `dir/sim.toml`, starts the simulator and waits
    /// until it says every device is connected.
    pub fn start_connected(dir: &Path, config: &str, within: Duration) -> Self {
        std::fs::write(dir.join("sim.toml"), config).unwrap();
        Self::start(dir, None, within)
    }

    /// Registers and enrolls the fleet `config` describes (`edgefleet-sim enroll`, config
    /// written to `dir/sim.toml`) and returns the file of its credentials, for
    /// [`SimProcess::start_enrolled`] once the broker knows them.
    pub fn enroll(dir: &Path, config: &str) -> PathBuf {
        let path = dir.join("sim.toml");
        std::fs::write(&path, config).unwrap();
        let enrolled = dir.join("sim-enrolled.json");
        crate::run_ok(
            Command::new(crate::binary("edgefleet-sim"))
                .args(["enroll", "--config"])
                .arg(&path)
                .arg("--out")
                .arg(&enrolled),
        );
        enrolled
    }

    /// Runs the fleet [`SimProcess::enroll`] enrolled and waits until every device is connected.
    pub fn start_enrolled(dir: &Path, enrolled: &Path, within: Duration) -> Self {
        Self::start(dir, Some(enrolled), within)
    }

    fn start(dir: &Path, enrolled: Option<&Path>, within: Duration) -> Self {
        let mut sim = Self::spawn(dir, enrolled);
        sim.wait_connected(within);
        sim
    }

    /// Starts the fleet [`SimProcess::enroll`] enrolled in `dir` without waiting: several
    /// simulators (one per bridging broker) connect at once, then each is waited for with
    /// [`SimProcess::wait_connected`].
    pub fn spawn(dir: &Path, enrolled: Option<&Path>) -> Self {
        let log = dir.join("sim.log");
        let mut command = Command::new(crate::binary("edgefleet-sim"));
        command.args(["run", "--config"]).arg(dir.join("sim.toml"));
        if let Some(enrolled) = enrolled {
            command.arg("--enrolled").arg(enrolled);
        }
        let child = command
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// Waits until the simulator says every device is connected.
    pub fn wait_connected(&mut self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            assert!(
                !text.contains("ERROR") && self.child.try_wait().unwrap().is_none(),
                "the simulator stopped: {text}"
            );
            if text.contains("every device connected") {
                return;
            }
            if std::time::Instant::now() > deadline {
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                panic!(
                    "not every simulated device connected within {within:?}; the simulator's log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the run as an operator would (SIGINT: it drains, disconnects and sums up) and
    /// returns its JSON summary.
    pub fn stop(mut self) -> Value {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "{out}\n{log}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("summary: {e}: {out}"))
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One summary of several simulators run side by side (one per bridging broker): counts add up,
/// durations (`*_seconds`) are the longest, as the fleet's whole took that long.
pub fn combined_summary(summaries: &[Value]) -> Value {
    fn combine(into: &mut Value, from: &Value, key: &str) {
        match (into, from) {
            (Value::Object(into), Value::Object(from)) => {
                for (k, v) in from {
                    match into.get_mut(k) {
                        Some(existing) => combine(existing, v, k),
                        None => {
                            into.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            (into @ Value::Number(_), Value::Number(from)) => {
                let (a, b) = (into.as_f64().unwrap_or(0.0), from.as_f64().unwrap_or(0.0));
                let combined = if key.ends_with("_seconds") {
                    a.max(b)
                } else {
                    a + b
                };
                *into = if into.is_u64() && from.is_u64() {
                    Value::from(combined as u64)
                } else {
                    Value::from(combined)
                };
            }
            // A duration one simulator never reached (`null`): the fleet's whole never did.
            (into, Value::Null) if key.ends_with("_seconds") => *into = Value::Null,
            _ => {}
        }
    }
    let mut all = summaries.first().cloned().unwrap_or(Value::Null);
    for summary in summaries.iter().skip(1) {
        combine(&mut all, summary, "");
    }
    all
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn counts_add_up_and_durations_are_the_longest() {
        let a = json!({"devices": 2, "connect_storm_seconds": 1.5, "acked": {"metrics": 3}});
        let b = json!({"devices": 3, "connect_storm_seconds": 2.5, "acked": {"metrics": 4}});
        assert_eq!(
            super::combined_summary(&[a.clone(), b]),
            json!({"devices": 5, "connect_storm_seconds": 2.5, "acked": {"metrics": 7}})
        );
        let never = json!({"devices": 1, "connect_storm_seconds": null, "acked": {"metrics": 0}});
        assert_eq!(
            super::combined_summary(&[a, never])["connect_storm_seconds"],
            serde_json::Value::Null
        );
    }
}
