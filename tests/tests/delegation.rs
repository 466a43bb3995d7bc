//! One targets role per model, through the real fleet server, `fleetctl` and an agent: after
//! `fleetctl delegate`, a device that runs only churn fetches churn's role and the golden cases
//! and baseline of the churn releases it installs, and never anything of vision (counted at a
//! relay between the device and the server); pushes of a delegated model land in its role, and
//! the server signs, serves and authorizes them as before.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgefleet_e2e::demo::{self, DemoOptions};
use edgefleet_e2e::one_fleet_at_a_time as one_at_a_time;
use edgefleet_e2e::relay::Relay;
use edgefleet_e2e::{AgentProcess, run_ok};

#[test]
fn through_the_server_a_device_running_churn_fetches_only_churns_role() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let options = DemoOptions {
        latency_budget_factor: 10.0,
        ..DemoOptions::embedded(1)
    };
    let mut fleet = demo::set_up(tmp.path(), &options);
    let vision = fleet.operator.push("vision/1.0.0");
    for model in ["churn", "vision"] {
        let out = run_ok(
            fleet
                .operator
                .fleetctl()
                .args(["delegate", "--server", model]),
        );
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains(&format!("role model-{model}")), "{said}");
    }
    // A model delegated before its first release: the push lands in its own role.
    run_ok(
        fleet
            .operator
            .fleetctl()
            .args(["delegate", "--server", "iris"]),
    );
    let out = run_ok(
        fleet
            .operator
            .fleetctl()
            .args(["push", "--server"])
            .arg(edgefleet_e2e::models_dir().join("iris/1.0.0")),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("model-iris version 2"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let admin = fleet.operator.token();
    let (status, models) = fleet
        .server
        .call("GET", "/api/v1/models", Some(&admin), None);
    assert_eq!(status, 200, "{models}");
    let listed = models.to_string();
    for target in [
        "models/churn/2.0.0/model.onnx",
        "models/iris/1.0.0/model.onnx",
        vision.as_str(),
    ] {
        assert!(listed.contains(target), "{target} missing from {listed}");
    }

    // A version's signed lineage and model card, as `fleetctl models show` reads them.
    let shown = run_ok(
        fleet
            .operator
            .fleetctl()
            .args(["models", "show", "churn", "2.0.0"]),
    );
    let shown = String::from_utf8_lossy(&shown.stdout);
    for expected in [
        "path models/build.py",
        "window customers 2000..7999 of 10000",
        "roc_auc=0.8746",
        "hidden_layer_sizes=24",
        "(signed)",
        "# churn 2.0.0",
    ] {
        assert!(
            shown.contains(expected),
            "{expected:?} missing from:\n{shown}"
        );
    }

    let server = fleet.server.addr();
    let relay = Relay::start(server, None);
    demo::reroute(&mut fleet, 0, Some(&relay.http_url()), None, "");
    assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
    assert_eq!(demo::roll_out(&fleet, "2.0.0", &[100.0], 0), "completed");
    let running = demo::running(&fleet);
    assert!(running.iter().all(|r| r.ends_with(" 2.0.0")), "{running:?}");

    let requests = relay.requests();
    let metadata: Vec<&String> = requests
        .iter()
        .filter(|r| r.contains("/tuf/metadata/"))
        .collect();
    assert!(
        metadata.iter().any(|r| r.contains(".model-churn.json")),
        "{metadata:#?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.contains("vision") || r.contains("iris")),
        "the device fetched metadata of models it does not run: {requests:#?}"
    );
    // Golden cases and baseline travel as release files, once per release installed: gzipped
    // when sent whole, as stored when a range resumes one.
    let golden = requests
        .iter()
        .find(|r| r.contains("/churn/2.0.0/") && r.contains(".golden.json"))
        .and_then(|r| r.split_whitespace().nth(1))
        .unwrap()
        .to_owned();
    let credential = demo::Demo::credential_of(tmp.path(), "dev-01");
    let get = |range: Option<&str>| {
        let mut request = edgefleet_e2e::http()
            .get(&fleet.server.url(&golden))
            .header("Authorization", &format!("Bearer {credential}"))
            .header("Accept-Encoding", "gzip");
        if let Some(range) = range {
            request = request.header("Range", range);
        }
        let response = request.call().unwrap();
        (
            response.status().as_u16(),
            response
                .headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap().to_owned()),
        )
    };
    assert_eq!(get(None), (200, Some("gzip".to_owned())));
    assert_eq!(get(Some("bytes=10-")), (206, None));
    for version in ["1.0.0", "2.0.0"] {
        for file in ["golden.json", "baseline.json"] {
            let fetched = requests
                .iter()
                .filter(|r| {
                    r.contains(&format!("/tuf/targets/models/churn/{version}/"))
                        && r.contains(&format!(".{file}"))
                })
                .count();
            assert_eq!(fetched, 1, "churn {version} {file}: {requests:#?}");
        }
    }

    // An offline bundle of delegated iris, made through the server, installs on a device that
    // never reached the fleet: the stick is all it has.
    let offline_dir = tmp.path().join("offline-device");
    std::fs::create_dir_all(&offline_dir).unwrap();
    let stick = offline_dir.join("stick");
    let bundle = |out: &std::path::Path| {
        fleet
            .operator
            .fleetctl()
            .args(["bundle", "--model", "iris", "--version", "1.0.0"])
            .args(["--valid-days", "30", "--out"])
            .arg(out)
            .output()
            .unwrap()
    };
    let made = bundle(&stick);
    assert!(made.status.success(), "{made:?}");
    let offline = AgentProcess::start(
        &offline_dir,
        &offline_dir.join("data"),
        &fleet.operator.trusted_root(),
        "",
        &[],
    );
    let installed = offline.install(&stick, None);
    assert!(installed.status.success(), "{installed:?}");
    assert_eq!(offline.model("iris")["serving"], "1.0.0");
    // The fleet's device still syncs: the live repository moved past the bundle's versions.
    assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
    // Archived versions are not bundled, and the refusal is audited like any operator call.
    run_ok(
        fleet
            .operator
            .fleetctl()
            .args(["promote", "iris", "1.0.0", "--stage", "archived"]),
    );
    let refused = bundle(&offline_dir.join("archived"));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("archived"),
        "{refused:?}"
    );
    assert!(!offline_dir.join("archived").exists());
    let (_, audit) = fleet
        .server
        .call("GET", "/api/v1/audit?limit=2", Some(&admin), None);
    let subjects = audit.to_string();
    assert!(subjects.contains("bundle iris 1.0.0"), "{subjects}");
}
