//! The dashboard in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `scripts/setup.sh` installs) driven over WebDriver against a live
//! fleet server whose agents are running a rollout. Screenshots land in
//! `target/test-artifacts/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgefleet_e2e::demo::{self, DemoOptions, Load};
use edgefleet_e2e::fleet::KillOnDrop;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// chromedriver on a free loopback port, and a headless Chromium session through it.
async fn browser() -> (KillOnDrop, Client) {
    let port = edgefleet_e2e::free_port();
    let driver = KillOnDrop(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt install chromium-driver; scripts/setup.sh does)"),
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            // Root in a container: no sandbox; no GPU; a fresh profile each run.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--no-first-run"]
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => return (driver, client),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start a Chromium session: {e}"),
        }
    }
}

/// Waits until `script` (a JavaScript expression) is truthy in the page; returns its value.
async fn until(client: &Client, what: &str, within: Duration, script: &str) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let value = client
            .execute(&format!("return {script};"), vec![])
            .await
            .unwrap();
        let truthy = !matches!(&value, Value::Null | Value::Bool(false))
            && value != json!("")
            && value != json!(0);
        if truthy {
            return value;
        }
        if Instant::now() > deadline {
            let shot = client.screenshot().await.unwrap_or_default();
            std::fs::write(artifacts().join("dashboard-failure.png"), shot).unwrap();
            let text = client
                .execute("return document.body.innerText;", vec![])
                .await
                .unwrap_or_default();
            panic!("the page never showed {what} ({script}); it shows:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sign_in(client: &Client, base: &str, token: &str) {
    client.goto(base).await.unwrap();
    let field = client
        .wait()
        .for_element(Locator::Id("login-token"))
        .await
        .unwrap();
    field.send_keys(token).await.unwrap();
    client
        .find(Locator::Id("login-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Clicks what `css` finds, as a user would; the page re-renders on every live update, so an
/// element found a moment ago may be replaced before the click lands: find it again.
async fn click(client: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = match client.find(Locator::Css(css)).await {
            Ok(element) => element.click().await,
            Err(e) => Err(e),
        };
        match attempt {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("cannot click {css}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

const WAVE_TEXT: &str =
    "(n) => document.querySelector(`#waves [data-wave=\"${n}\"] .wave-count`)?.textContent";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_a_rollout_live_and_an_abort_click_stops_it() {
    let tmp = tempfile::tempdir().unwrap();
    let options = DemoOptions {
        agents: 3,
        mosquitto: false,
        tls: false,
        verbose: false,
        tiny_artifact_limit: Vec::new(),
        latency_budget_factor: 20.0,
        database_url: None,
        server_toml: String::new(),
        agent_fleet_toml: "telemetry_seconds = 2".into(),
    };
    let dir = tmp.path().to_path_buf();
    let fleet = tokio::task::spawn_blocking(move || {
        let fleet = demo::set_up(&dir, &options);
        assert_eq!(demo::roll_out(&fleet, "1.0.0", &[100.0], 0), "completed");
        fleet
    })
    .await
    .unwrap();
    let urls = fleet
        .agents
        .iter()
        .map(|a| a.url("/v1/models/churn:predict"))
        .collect();
    let load = Load::start(urls);
    let admin = fleet.operator.token();
    let (_, viewer) = fleet.server.call(
        "POST",
        "/api/v1/tokens",
        Some(&admin),
        Some(&json!({"name": "watcher", "role": "viewer"})),
    );
    let viewer = viewer["token"].as_str().unwrap().to_owned();
    let base = fleet.server.base_url();

    let (_driver, client) = browser().await;
    sign_in(&client, &base, &admin).await;
    until(
        &client,
        "the signed-in operator",
        Duration::from_secs(10),
        "document.getElementById('who').textContent.includes('admin')",
    )
    .await;
    let paint = client
        .execute(
            "return performance.getEntriesByType('paint').map(p => [p.name, p.startTime]);",
            vec![],
        )
        .await
        .unwrap();

    // A rollout that waits for approval after each wave, started while the page is open: the
    // page learns of it from the event stream, not from a reload.
    let (status, created) = fleet.server.call(
        "POST",
        "/api/v1/rollouts",
        Some(&admin),
        Some(
            &json!({"model": "churn", "version": "2.0.0", "group": "demo",
                     "waves": [33, 66, 100], "require_approval": true}),
        ),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let row = format!("[data-rollout-id=\"{id}\"]");
    until(
        &client,
        "the new rollout",
        Duration::from_secs(10),
        &format!("document.querySelector('{row}')"),
    )
    .await;
    click(&client, &row).await;
    until(
        &client,
        "wave 1 healthy",
        Duration::from_secs(60),
        &format!("({WAVE_TEXT})(1) === '1/1 healthy'"),
    )
    .await;
    until(
        &client,
        "awaiting approval",
        Duration::from_secs(30),
        "document.getElementById('rollout-state').dataset.state === 'awaiting_approval'",
    )
    .await;

    // The operator approves wave 2 from the page and watches it advance.
    click(&client, "button[data-action=approve]").await;
    until(
        &client,
        "wave 2 healthy",
        Duration::from_secs(60),
        &format!("({WAVE_TEXT})(2) === '1/1 healthy'"),
    )
    .await;
    until(
        &client,
        "awaiting approval again",
        Duration::from_secs(30),
        "document.getElementById('rollout-state').dataset.state === 'awaiting_approval'",
    )
    .await;
    until(
        &client,
        "telemetry of both versions",
        Duration::from_secs(30),
        "document.querySelectorAll('#chart-latency path[data-version]').length >= 2",
    )
    .await;
    let desktop = client.screenshot().await.unwrap();
    std::fs::write(artifacts().join("dashboard-desktop.png"), &desktop).unwrap();

    // Abort: one click asks, the second confirms; the rollout stops before wave 3.
    click(&client, "button[data-action=abort]").await;
    click(&client, "#confirm-yes").await;
    until(
        &client,
        "the rollout aborted",
        Duration::from_secs(10),
        "document.getElementById('rollout-state').dataset.state === 'aborted'",
    )
    .await;
    let (_, after) =
        fleet
            .server
            .call("GET", &format!("/api/v1/rollouts/{id}"), Some(&admin), None);
    assert_eq!(after["state"]["state"], "aborted", "{after:#}");
    let devices = after["devices"].as_array().unwrap();
    assert!(
        devices
            .iter()
            .filter(|d| d["wave"] == 2)
            .all(|d| d["notified_at"].is_null()),
        "wave 3 was never started: {after:#}"
    );
    assert!(
        after["history"]
            .to_string()
            .contains("aborted by bootstrap-admin"),
        "{after:#}"
    );

    // Devices: all three listed online with their version; a filter narrows the list.
    click(&client, "[data-tab=devices]").await;
    until(&client, "three online devices", Duration::from_secs(10), "document.querySelectorAll('#devices tbody tr').length === 3 && [...document.querySelectorAll('#devices tbody tr')].every(r => r.innerText.includes('online'))").await;
    let filter = client.find(Locator::Id("filter-text")).await.unwrap();
    filter.send_keys("dev-02").await.unwrap();
    until(
        &client,
        "one filtered device",
        Duration::from_secs(5),
        "document.querySelectorAll('#devices tbody tr').length === 1",
    )
    .await;

    // The timeline has the devices' events, live from the stream.
    click(&client, "[data-tab=timeline]").await;
    until(
        &client,
        "committed events in the timeline",
        Duration::from_secs(10),
        "document.querySelectorAll('#timeline li.kind-committed').length >= 2",
    )
    .await;
    click(&client, "[data-tab=devices]").await;

    // On a phone: no sideways scrolling, the device rows become cards.
    client.set_window_size(390, 844).await.unwrap();
    until(
        &client,
        "a phone-width layout",
        Duration::from_secs(5),
        "document.documentElement.scrollWidth <= window.innerWidth + 1",
    )
    .await;
    click(&client, "[data-tab=rollouts]").await;
    until(
        &client,
        "no sideways scroll on the rollout",
        Duration::from_secs(5),
        "document.documentElement.scrollWidth <= window.innerWidth + 1",
    )
    .await;
    let phone = client.screenshot().await.unwrap();
    std::fs::write(artifacts().join("dashboard-phone.png"), &phone).unwrap();
    client.set_window_size(1280, 900).await.unwrap();

    // A viewer sees the same rollout but no operator actions.
    client
        .execute("sessionStorage.clear();", vec![])
        .await
        .unwrap();
    sign_in(&client, &base, &viewer).await;
    until(
        &client,
        "the viewer signed in",
        Duration::from_secs(10),
        "document.getElementById('who').textContent.includes('viewer')",
    )
    .await;
    click(&client, &row).await;
    until(
        &client,
        "the read-only note",
        Duration::from_secs(10),
        "document.getElementById('actions').innerText.includes('read only')",
    )
    .await;
    let buttons = client
        .find_all(Locator::Css("#actions button"))
        .await
        .unwrap();
    assert!(buttons.is_empty());
    // And a wrong token is refused with the server's reason.
    client
        .execute("sessionStorage.clear();", vec![])
        .await
        .unwrap();
    sign_in(&client, &base, "efo_not-a-real-token").await;
    until(
        &client,
        "the refusal",
        Duration::from_secs(10),
        "document.getElementById('login-error').textContent.includes('unknown or revoked')",
    )
    .await;

    client.close().await.unwrap();
    let (_, failed) = load.stop();
    assert_eq!(failed, 0);
    assert!(desktop.len() > 10_000 && phone.len() > 10_000);
    eprintln!("dashboard paint timings (ms): {paint}");
}
