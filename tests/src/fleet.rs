//! Harness for the fleet server: a real `fleet-server` process, an operator driving it with the
//! real `fleetctl`, a real Mosquitto, and MQTT device clients (rumqttc) speaking the wire protocol.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{binary, free_port, http, models_dir, run_ok};

/// Which broker the server uses.
#[derive(Debug, Clone)]
pub enum Broker {
    Embedded,
    External {
        url: String,
        password: String,
        /// The CA of an `mqtts://` broker.
        ca_file: Option<PathBuf>,
    },
}

/// A running `fleet-server`; killed when dropped. `restart` keeps its ports and data.
#[derive(Debug)]
pub struct ServerProcess {
    pub child: Child,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub http_port: u16,
    pub mqtt_port: u16,
    pub log: PathBuf,
    /// Environment the process gets beside the test's own (e.g. S3 credentials).
    pub env: Vec<(String, String)>,
}

impl ServerProcess {
    pub fn start(dir: &Path, broker: Broker) -> Self {
        Self::start_with(dir, broker, "")
    }

    /// `start`, with `extra` TOML appended to the config (sections such as `[database]`).
    pub fn start_with(dir: &Path, broker: Broker, extra: &str) -> Self {
        Self::start_with_env(dir, broker, extra, Vec::new())
    }

    /// `start_with`, the process also getting `env`.
    pub fn start_with_env(
        dir: &Path,
        broker: Broker,
        extra: &str,
        env: Vec<(String, String)>,
    ) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let http_port = free_port();
        let mqtt_port = free_port();
        let mqtt = match &broker {
            Broker::Embedded => format!("embedded_listen = \"127.0.0.1:{mqtt_port}\""),
            Broker::External {
                url,
                password,
                ca_file,
            } => {
                let ca = ca_file
                    .as_ref()
                    .map(|p| format!("\nca_file = \"{}\"", p.display()))
                    .unwrap_or_default();
                format!("url = \"{url}\"\npassword = \"{password}\"{ca}")
            }
        };
        // Tests read the fleet's figures right after acting; the default caches them 15 s.
        let metrics = if extra.contains("[metrics]") {
            ""
        } else {
            "[metrics]\nrefresh_seconds = 1\n"
        };
        let config = dir.join("server.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{http_port}\"\ndata_dir = \"{}\"\n{metrics}[mqtt]\n{mqtt}\n{extra}",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let mut server = Self {
            child: Command::new("true").spawn().unwrap(),
            dir: dir.to_path_buf(),
            config,
            http_port,
            mqtt_port,
            log: dir.join("server.log"),
            env,
        };
        server.spawn();
        server
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Command::new(binary("fleet-server"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.wait_ready();
    }

    /// Waits for `/readyz` (database and broker connection up).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "fleet-server exited with {status}; log:\n{}",
                    self.log_text()
                );
            }
            if let Ok(r) = http().get(&self.url("/readyz")).call()
                && r.status() == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "fleet-server not ready after 30 s; log:\n{}",
            self.log_text()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn base_url(&self) -> String {
        self.url("")
    }

    /// The server's HTTP address, for a relay in front of it.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("data/admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as systemd or ECS stop a server, and waits for it to exit.
    pub fn stop_gracefully(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The server's Prometheus text.
    pub fn metrics_text(&self) -> String {
        let mut response = crate::http().get(&self.url("/metrics")).call().unwrap();
        response.body_mut().read_to_string().unwrap()
    }

    /// The sum of the server's samples whose line starts with `prefix` (a name, or a name and
    /// some of its labels).
    pub fn metric_sum(&self, prefix: &str) -> f64 {
        self.metrics_text()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `fleet-server SUBCOMMAND --config <this server's config>`.
    pub fn command(&self, subcommand: &str) -> Command {
        let mut cmd = Command::new(binary("fleet-server"));
        cmd.arg(subcommand).arg("--config").arg(&self.config);
        cmd
    }

    /// A request with a bearer token; returns (status, JSON body or Null).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        call(&self.url(path), method, token, body)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills a child process when dropped, so a failing test leaves no server behind.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills a child and every process it started when dropped: it runs in a process group of its
/// own, and the group goes. For servers that start workers of their own (MLflow's uvicorn, job
/// runner and huey consumers outlived a test that killed the first process alone).
#[derive(Debug)]
pub struct KillGroupOnDrop(Child);

impl KillGroupOnDrop {
    pub fn spawn(command: &mut Command) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        command.process_group(0).spawn().map(Self)
    }

    /// The process group the child leads.
    pub fn group(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_raw(self.0.id() as i32).expect("a child's pid is positive")
    }
}

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process_group(self.group(), rustix::process::Signal::KILL);
        let _ = self.0.wait();
    }
}

/// A request with an optional bearer token and JSON body; returns (status, JSON body or Null).
pub fn call(url: &str, method: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    call_within(url, method, token, body, &http())
}

/// [`call`] through `agent` (a longer timeout, for a request that is slow by nature).
pub fn call_within(
    url: &str,
    method: &str,
    token: Option<&str>,
    body: Option<&Value>,
    agent: &ureq::Agent,
) -> (u16, Value) {
    let request = ureq::http::Request::builder().method(method).uri(url);
    let request = match token {
        Some(t) => request.header("Authorization", format!("Bearer {t}")),
        None => request,
    };
    let result = match body {
        Some(b) => agent.run(
            request
                .header("Content-Type", "application/json")
                .body(b.to_string())
                .unwrap(),
        ),
        None => agent.run(request.body(()).unwrap()),
    };
    // Status 0: nothing answered (the server is not up yet, or gone).
    let Ok(mut response) = result else {
        return (0, Value::Null);
    };
    let status = response.status().as_u16();
    let value = response
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_json()
        .unwrap_or(Value::Null);
    (status, value)
}

/// An operator with keys, logged in to a server with `fleetctl`, its repository initialised.
#[derive(Debug)]
pub struct FleetOperator {
    pub dir: PathBuf,
    pub server_url: String,
}

impl FleetOperator {
    pub fn new(dir: &Path, server: &ServerProcess) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let op = Self {
            dir: dir.to_path_buf(),
            server_url: server.base_url(),
        };
        run_ok(op.fleetctl().args(["keygen", "root", "targets"]));
        std::fs::write(dir.join("admin.token"), server.admin_token()).unwrap();
        run_ok(op.fleetctl().args([
            "login",
            "--server",
            &op.server_url,
            "--token-file",
            "admin.token",
        ]));
        run_ok(op.fleetctl().args(["init", "--server"]));
        op
    }

    pub fn fleetctl(&self) -> Command {
        let mut cmd = Command::new(binary("fleetctl"));
        cmd.current_dir(&self.dir)
            .env("FLEETCTL_CONFIG", self.dir.join("fleetctl.toml"))
            .env_remove("FLEETCTL_URL")
            .env_remove("FLEETCTL_TOKEN");
        cmd
    }

    /// Pushes `models/<release>` through the server; returns the target name.
    pub fn push(&self, release: &str) -> String {
        self.push_with(release, &[])
    }

    /// [`FleetOperator::push`] with more `fleetctl push` flags (`--allow-downgrade`).
    pub fn push_with(&self, release: &str, flags: &[&str]) -> String {
        let out = run_ok(
            self.fleetctl()
                .args(["push", "--server"])
                .args(flags)
                .arg(models_dir().join(release)),
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .expect("pushed NAME")
            .to_string()
    }

    /// The root devices trust (written by `fleetctl init --server`).
    pub fn trusted_root(&self) -> PathBuf {
        self.dir.join("keys/root.json")
    }

    /// A desired-state message from the broker, verified as a device does (signed by the
    /// timestamp key of the trusted root, for `device`).
    pub fn verify_desired(
        &self,
        bytes: &[u8],
        device: &str,
    ) -> Result<edgefleet_protocol::message::Desired, edgefleet_tuf::desired::DesiredRefused> {
        let root: tough::schema::Signed<tough::schema::Root> =
            serde_json::from_slice(&std::fs::read(self.trusted_root()).unwrap()).unwrap();
        edgefleet_tuf::desired::verify(
            bytes,
            &root.signed,
            &edgefleet_protocol::DeviceId::new(device).unwrap(),
        )
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("admin.token")).unwrap()
    }

    /// Registers and enrolls a device through the API; returns its credential.
    pub fn enroll(&self, server: &ServerProcess, id: &str, group: &str) -> String {
        let token = self.token();
        let (status, added) = server.call(
            "POST",
            "/api/v1/devices",
            Some(&token),
            Some(&json!({"id": id, "group": group})),
        );
        assert_eq!(status, 201, "{added}");
        let (status, enrolled) = server.call(
            "POST",
            "/api/v1/enroll",
            None,
            Some(&json!({"device_id": id, "token": added["enrollment_token"]})),
        );
        assert_eq!(status, 200, "{enrolled}");
        enrolled["credential"].as_str().unwrap().to_owned()
    }
}

/// A real Mosquitto on a free loopback port with the given password and ACL files.
#[derive(Debug)]
pub struct Mosquitto {
    pub child: Child,
    pub port: u16,
    pub conf: PathBuf,
}

impl Mosquitto {
    /// Runs Mosquitto with the settings `fleet-server mosquitto-config` wrote (`settings`, its
    /// `edgefleet.conf`) on a listener of its own. With `tls`, the listener speaks TLS with that
    /// certificate set (see [`TlsFiles`]).
    pub fn start(dir: &Path, settings: &Path, tls: Option<&TlsFiles>) -> Self {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        let tls_lines = tls
            .map(|t| {
                format!(
                    "cafile {}\ncertfile {}\nkeyfile {}\n",
                    t.ca.display(),
                    t.cert.display(),
                    t.key.display()
                )
            })
            .unwrap_or_default();
        std::fs::write(
            &conf,
            format!(
                // `user root`: the test runs as root and keeps the files to itself; Mosquitto would
                // otherwise drop to the `mosquitto` user and fail to read them.
                "listener {port} 127.0.0.1\n{tls_lines}{}persistence true\npersistence_location {}/\nuser root\nlog_dest stderr\nlog_type error\nlog_type warning\n",
                std::fs::read_to_string(settings).unwrap(),
                dir.display(),
            ),
        )
        .unwrap();
        Self::run(conf, port)
    }

    /// Runs Mosquitto on `conf` (its log beside it) and waits until it listens on `port`.
    pub fn run(conf: PathBuf, port: u16) -> Self {
        let log = conf.with_file_name("mosquitto.log");
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port, conf }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn tls_url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, as systemd stops a broker, and waits for it to exit. Mosquitto saves its state
    /// (`persistence true`, as SERVER.md recommends): sessions and their queues survive.
    pub fn stop_gracefully(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Kills the broker (SIGKILL: what it had not saved is gone, which since the last graceful
    /// stop is everything) and starts it again on the same port and files.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.conf.with_file_name("mosquitto.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.child = Command::new(mosquitto_binary())
                .arg("-c")
                .arg(&self.conf)
                .stdout(Stdio::null())
                .stderr(
                    std::fs::OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(&log)
                        .unwrap(),
                )
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(200));
            // The port may linger for a moment after the kill; try again then.
            if self.child.try_wait().unwrap().is_none() {
                break;
            }
            assert!(Instant::now() < deadline, "mosquitto did not restart");
        }
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not restart");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGHUP: Mosquitto re-reads its password and ACL files.
    pub fn reload(&self) {
        run_ok(Command::new("kill").args(["-HUP", &self.child.id().to_string()]));
        std::thread::sleep(Duration::from_millis(300));
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway CA and a broker certificate for 127.0.0.1, made with the `openssl` command.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn make(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let openssl = |args: &[&str]| {
            run_ok(Command::new("openssl").args(args).current_dir(dir));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=edgefleet test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "broker.key",
            "-out",
            "broker.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "broker.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "broker.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("broker.pem"),
            key: dir.join("broker.key"),
        }
    }
}

pub fn mosquitto_binary() -> PathBuf {
    let path = PathBuf::from("/usr/sbin/mosquitto");
    assert!(
        path.exists(),
        "mosquitto is not installed: run scripts/setup.sh (it installs the Debian package)"
    );
    path
}

/// A device's MQTT connection (rumqttc, blocking API), events read on a background thread.
pub struct MqttDevice {
    pub client: rumqttc::Client,
    events: std::sync::mpsc::Receiver<rumqttc::Event>,
    connected: std::sync::mpsc::Receiver<Result<(), String>>,
}

impl std::fmt::Debug for MqttDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MqttDevice")
    }
}

impl MqttDevice {
    /// Connects as `client_id` / `username` with `password`; `Err` with the broker's answer when
    /// it refuses.
    pub fn connect(
        port: u16,
        client_id: &str,
        username: &str,
        password: &str,
    ) -> Result<Self, String> {
        let mut options = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_credentials(username, password)
            .set_keep_alive(Duration::from_secs(10))
            // Outgoing limit far above any broker's: an attacker's client has none.
            .set_max_packet_size(512 * 1024, 64 * 1024 * 1024);
        let (client, mut connection) = rumqttc::Client::new(options, 100);
        let (tx, events) = std::sync::mpsc::channel();
        let (connected_tx, connected) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut first = true;
            for event in connection.iter() {
                match event {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) if first => {
                        first = false;
                        let _ = connected_tx.send(Ok(()));
                    }
                    Ok(e) => {
                        if tx.send(e).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        if first {
                            let _ = connected_tx.send(Err(e.to_string()));
                        }
                        return;
                    }
                }
            }
        });
        let device = Self {
            client,
            events,
            connected,
        };
        match device.connected.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(device),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("no CONNACK within 10 s".into()),
        }
    }

    /// Subscribes and returns the broker's SUBACK codes.
    pub fn subscribe(&self, filter: &str) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(ack))) =
                self.events.recv_timeout(Duration::from_millis(100))
            {
                return ack.return_codes;
            }
        }
        panic!("no SUBACK for {filter}");
    }

    /// Publishes at QoS 1 and waits for the broker's PUBACK.
    pub fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) =
                self.events.recv_timeout(Duration::from_millis(100))
            {
                return;
            }
        }
        panic!("no PUBACK for {topic}");
    }

    /// Publishes at QoS 1 without waiting for anything (the broker may well disconnect instead).
    pub fn fire(&self, topic: &str, payload: Vec<u8>) {
        let _ = self
            .client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload);
    }

    /// Publishes `payloads` at QoS 1 as fast as the client's in-flight window allows, and returns
    /// once the broker acknowledged them all.
    pub fn publish_all(&self, topic: &str, payloads: Vec<Vec<u8>>, within: Duration) {
        let messages = payloads
            .into_iter()
            .map(|p| (topic.to_owned(), p))
            .collect();
        self.publish_all_to(messages, false, within);
    }

    /// [`MqttDevice::publish_all`] for (topic, payload) pairs, retained or not.
    pub fn publish_all_to(&self, messages: Vec<(String, Vec<u8>)>, retain: bool, within: Duration) {
        let total = messages.len();
        let sender = self.client.clone();
        let feeder = std::thread::spawn(move || {
            for (topic, payload) in messages {
                sender
                    .publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload)
                    .unwrap();
            }
        });
        let deadline = Instant::now() + within;
        let mut acked = 0;
        while acked < total {
            assert!(Instant::now() < deadline, "{acked} of {total} PUBACKs");
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) =
                self.events.recv_timeout(Duration::from_millis(100))
            {
                acked += 1;
            }
        }
        feeder.join().unwrap();
    }

    /// The topics of every message that arrives within `within`.
    pub fn topics_within(&self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut topics = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) =
                self.events.recv_timeout(left)
            {
                topics.push(p.topic);
            }
        }
        topics
    }

    /// The next message on `topic` within `within`.
    pub fn next_message(&self, topic: &str, within: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) =
                self.events.recv_timeout(Duration::from_millis(50))
                && p.topic == topic
            {
                return Some(p.payload.to_vec());
            }
        }
        None
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `within`.
pub fn eventually<T>(what: &str, within: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_for(within, f).unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// Polls `f` every 100 ms until it returns `Some`; `None` after `within` (for a caller that
/// says more than "timed out" when it gives up).
pub fn poll_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A device's "downloading churn 2.0.0" event, encoded: message `id`, sequence number `seq`.
pub fn downloading_event(device: &str, id: [u8; 16], seq: u64) -> Vec<u8> {
    use edgefleet_protocol::message::{self, Event, EventKind, SCHEMA_VERSION};
    message::encode(&Event {
        schema: SCHEMA_VERSION,
        id: edgefleet_protocol::MessageId::from_random(id),
        device: edgefleet_protocol::DeviceId::new(device).unwrap(),
        seq,
        at_unix: 1,
        kind: EventKind::Downloading,
        model: edgefleet_protocol::ModelName::new("churn").unwrap(),
        target: Some("models/churn/2.0.0/model.onnx".into()),
        rollout: None,
        detail: None,
        evidence: Vec::new(),
    })
    .unwrap()
}
