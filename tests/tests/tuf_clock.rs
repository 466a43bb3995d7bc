//! The device-side TUF client reads the system clock (as the conformance suite requires) and a
//! clock that went backwards never makes expired metadata valid again. Real processes: the
//! repository is made by `fleetctl` with the clock set back by `faketime`, and checked by
//! `conformance-client`, which runs the agent's verification code. Offline bundles live by the
//! same clock: a real agent, its clock moved on by libfaketime, installs one or refuses it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use edgefleet_e2e::{AgentProcess, Operator, binary, models_dir, run_ok};

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

fn faketime(offset: &str, program: &Path) -> Command {
    assert!(
        Path::new("/usr/bin/faketime").exists(),
        "faketime is missing: scripts/setup.sh installs it"
    );
    let mut cmd = Command::new("/usr/bin/faketime");
    cmd.arg("-f").arg(offset).arg(program);
    cmd
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn expired_metadata_stays_expired_when_the_clock_is_set_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fleetctl = binary("fleetctl");
    ok(&run(Command::new(&fleetctl).current_dir(dir).arg("keygen")));
    // Sign the repository three days ago: its timestamp (1 day) expired two days ago.
    ok(&run(faketime("-3d", &fleetctl)
        .current_dir(dir)
        .arg("init")));
    ok(&run(faketime("-3d", &fleetctl)
        .current_dir(dir)
        .arg("push")
        .arg(models_dir().join("iris/1.0.0"))));

    let client = binary("conformance-client");
    let metadata_url = format!("file://{}/repo/metadata/", dir.display());
    let refresh = |metadata_dir: &str, clock: Option<&str>| {
        let mut cmd = match clock {
            Some(offset) => faketime(offset, &client),
            None => Command::new(&client),
        };
        cmd.current_dir(dir).args([
            "--metadata-dir",
            metadata_dir,
            "--metadata-url",
            &metadata_url,
            "refresh",
        ]);
        run(&mut cmd)
    };
    let init = |metadata_dir: &str| {
        ok(&run(Command::new(&client).current_dir(dir).args([
            "--metadata-dir",
            metadata_dir,
            "init",
            "repo/metadata/1.root.json",
        ])));
    };

    // Control: a device whose clock has always been three days behind accepts it.
    init("behind");
    ok(&refresh("behind", Some("-3d")));

    // A device with a correct clock refuses the expired metadata...
    init("device");
    let now = refresh("device", None);
    assert!(!now.status.success());
    assert!(
        String::from_utf8_lossy(&now.stderr)
            .to_lowercase()
            .contains("expired")
    );
    // ...and setting its clock back does not make it valid again.
    let back = refresh("device", Some("-3d"));
    assert!(
        !back.status.success(),
        "clock set back revived expired metadata"
    );
    let stderr = String::from_utf8_lossy(&back.stderr).to_lowercase();
    assert!(
        stderr.contains("time") || stderr.contains("clock"),
        "{stderr}"
    );
    assert!(
        !dir.join("device/timestamp.json").exists(),
        "expired timestamp was cached"
    );
}

/// The agent's environment for a clock `days` ahead (libfaketime, preloaded).
fn days_ahead(days: u32) -> Vec<(&'static str, String)> {
    let library = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| format!("/usr/lib/{arch}/faketime/libfaketimeMT.so.1"))
        .find(|p| Path::new(p).exists())
        .expect("libfaketime is missing: scripts/setup.sh installs it");
    vec![("LD_PRELOAD", library), ("FAKETIME", format!("+{days}d"))]
}

fn agent_at(dir: &Path, op: &Operator, days: u32) -> AgentProcess {
    std::fs::create_dir_all(dir).unwrap();
    let env = days_ahead(days);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    AgentProcess::start(dir, &dir.join("data"), &op.trusted_root(), "", &env)
}

#[test]
fn a_bundle_valid_for_30_days_installs_on_day_29_and_is_refused_on_day_31_until_re_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let op = Operator::new(&tmp.path().join("operator"));
    let target = op.push("iris/1.0.0");
    let stick = tmp.path().join("day29/stick");
    let made = run_ok(
        op.fleetctl()
            .args([
                "bundle",
                "--repo",
                "repo",
                "--model",
                "iris",
                "--version",
                "1.0.0",
            ])
            .args(["--valid-days", "30", "--out"])
            .arg(&stick),
    );
    assert!(String::from_utf8_lossy(&made.stdout).contains(&target));

    let day29 = agent_at(&tmp.path().join("day29"), &op, 29);
    let out = day29.install(&stick, None);
    ok(&out);
    assert_eq!(
        day29.model("iris")["serving"],
        "1.0.0",
        "{}",
        day29.log_text()
    );

    // Day 31: the same bundle (copied to that device's stick) is refused and nothing changes.
    let day31_dir = tmp.path().join("day31");
    std::fs::create_dir_all(&day31_dir).unwrap();
    run_ok(Command::new("cp").arg("-r").arg(&stick).arg(&day31_dir));
    let stick31 = day31_dir.join("stick");
    let day31 = agent_at(&day31_dir, &op, 31);
    let refused = day31.install(&stick31, None);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("expired") && stderr.contains("fleetctl resign-bundle"),
        "{stderr}"
    );
    assert!(
        day31.model("iris")["active"].is_null(),
        "{}",
        day31.models()
    );

    // Re-signed on day 31 by the operator (offline: the repository's own online keys), it
    // installs.
    ok(&run(faketime("+31d", &binary("fleetctl"))
        .current_dir(&op.dir)
        .args(["resign-bundle", "--valid-days", "30"])
        .arg(&stick31)));
    ok(&day31.install(&stick31, None));
    assert_eq!(day31.model("iris")["serving"], "1.0.0");
}
