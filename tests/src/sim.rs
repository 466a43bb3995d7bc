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
        let mut sim = Self { child, log };
        let deadline = std::time::Instant::now() + within;
        loop {
            let text = std::fs::read_to_string(&sim.log).unwrap_or_default();
            assert!(
                !text.contains("ERROR") && sim.child.try_wait().unwrap().is_none(),
                "the simulator stopped: {text}"
            );
            if text.contains("every device connected") {
                return sim;
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
