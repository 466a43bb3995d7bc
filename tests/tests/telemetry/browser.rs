//! A headless Chromium session through chromedriver, and signing in to the dashboard: for the
//! dashboard tests (`tests/telemetry.rs`) and the fleet bench's dashboard loads.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgefleet_e2e::fleet::KillOnDrop;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// chromedriver on a free loopback port, and a headless Chromium session through it.
pub async fn browser() -> (KillOnDrop, Client) {
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

/// Opens the dashboard at `base` and signs in with `token` (kept for the tab's session).
pub async fn sign_in(client: &Client, base: &str, token: &str) {
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
