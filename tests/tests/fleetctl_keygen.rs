//! `fleetctl keygen` as an operator runs it.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use edgefleet_e2e::binary;

#[test]
fn keygen_writes_private_keys_0600_never_prints_them_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let out = Command::new(binary("fleetctl"))
        .args(["keygen", "--dir"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    for role in ["root", "targets", "snapshot", "timestamp"] {
        let private = keys.join(format!("{role}.pem"));
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{role}");
        assert!(keys.join(format!("{role}.pub.json")).exists());
        let pem = std::fs::read_to_string(&private).unwrap();
        let body = pem.lines().nth(1).unwrap();
        assert!(
            !stdout.contains(body),
            "private key material printed for {role}"
        );
        assert!(stdout.contains(&format!("{role}: key id ")), "{stdout}");
    }

    let before = std::fs::read(keys.join("root.pem")).unwrap();
    let again = Command::new(binary("fleetctl"))
        .args(["keygen", "--dir"])
        .arg(&keys)
        .arg("root")
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(keys.join("root.pem")).unwrap(), before);
}

#[test]
fn keygen_refuses_names_that_could_escape_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary("fleetctl"))
        .args(["keygen", "--dir"])
        .arg(dir.path())
        .arg("../evil")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
