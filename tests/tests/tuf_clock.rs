//! The device-side TUF client reads the system clock (as the conformance suite requires) and a
//! clock that went backwards never makes expired metadata valid again. Real processes: the
//! repository is made by `fleetctl` with the clock set back by `faketime`, and checked by
//! `conformance-client`, which runs the agent's verification code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use edgefleet_e2e::{binary, models_dir};

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
