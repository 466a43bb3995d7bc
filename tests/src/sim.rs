//! `edgefleet-sim` as the tests and the fleet benchmark run it: started on a configuration,
//! waited for until every device is connected, stopped with SIGINT for its summary, and killed
//! if the caller panics first (a simulated fleet must not outlive its test).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::fleet::eventually;

#[derive(Debug)]
pub struct SimProcess {
    child: Child,
    pub log: PathBuf,
}

impl SimProcess {
    /// Writes `config` (the simulator's TOML) to `dir/sim.toml`, starts the simulator and waits
    /// until it says every device is connected.
    pub fn start_connected(dir: &Path, config: &str, within: Duration) -> Self {
        let path = dir.join("sim.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.join("sim.log");
        let child = Command::new(crate::binary("edgefleet-sim"))
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut sim = Self { child, log };
        eventually("every simulated device connected", within, || {
            let text = std::fs::read_to_string(&sim.log).unwrap_or_default();
            assert!(
                !text.contains("ERROR") && sim.child.try_wait().unwrap().is_none(),
                "the simulator stopped: {text}"
            );
            text.contains("every device connected").then_some(())
        });
        sim
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
