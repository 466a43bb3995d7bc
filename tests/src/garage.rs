//! A real S3 implementation for tests: Garage (crates.io `garage`, a production distributed
//! object store), one node on loopback with a bucket `artifacts` and one key. `scripts/garage.sh`
//! builds the binary once into a cache; `EDGEFLEET_GARAGE` points at another one.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

pub const BUCKET: &str = "artifacts";
pub const ACCESS_KEY_ID: &str = "GK0e1d9e5f0a7c3b2d4e6f8a9b";
pub const SECRET_ACCESS_KEY: &str =
    "5f0e3c1a9b7d2e4f6a8c0b1d3e5f7a9c2b4d6e8f0a1c3e5b7d9f1a3c5e7b9d0f";

/// A Garage node of a test's own, killed when dropped.
#[derive(Debug)]
pub struct Garage {
    child: Child,
    s3_port: u16,
    config: PathBuf,
    dir: tempfile::TempDir,
}

/// Where `scripts/garage.sh` puts the binary.
pub fn garage_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("EDGEFLEET_GARAGE") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("EDGEFLEET_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is not set"))
                .join(".cache/edgefleet")
        });
    let bin = cache.join("garage-2.5.0/bin/garage");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/garage.sh (builds Garage once, ~10 min)",
        bin.display()
    );
    bin
}

impl Garage {
    /// Starts the node, gives it a layout, creates the bucket and imports the key.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (rpc, s3_port, admin) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        let root = dir.path().display();
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{root}/meta\"\n\
                 data_dir = \"{root}/data\"\n\
                 db_engine = \"sqlite\"\n\
                 replication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{}\"\n\
                 [s3_api]\n\
                 s3_region = \"garage\"\n\
                 api_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n\
                 [admin]\n\
                 api_bind_addr = \"127.0.0.1:{admin}\"\n\
                 admin_token = \"{}\"\n",
                "ab".repeat(32),
                "cd".repeat(16),
            ),
        )
        .unwrap();
        // Garage refuses a world-readable file holding secrets.
        std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let log = std::fs::File::create(dir.path().join("garage.log")).unwrap();
        let child = Command::new(garage_bin())
            .arg("-c")
            .arg(&config)
            .arg("server")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let garage = Self {
            child,
            s3_port,
            config,
            dir,
        };
        // `node id` answers from the key on disk, before the RPC port listens; the layout
        // commands need it listening.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", rpc)).is_err() {
            assert!(
                Instant::now() < deadline,
                "garage did not listen within 30 s: {}",
                garage.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let node = loop {
            let out = garage.cli(&["node", "id", "-q"]);
            if out.status.success() {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                break text.split('@').next().unwrap().trim().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "garage did not answer within 30 s: {}",
                garage.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        for args in [
            &["layout", "assign", "-z", "dc1", "-c", "1G", &node][..],
            &["layout", "apply", "--version", "1"],
            &["bucket", "create", BUCKET],
            &[
                "key",
                "import",
                "--yes",
                "-n",
                "edgefleet",
                ACCESS_KEY_ID,
                SECRET_ACCESS_KEY,
            ],
            &[
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                BUCKET,
                "--key",
                "edgefleet",
            ],
        ] {
            // Retried: a fresh node may still be settling its own membership.
            let mut out = garage.cli(args);
            while !out.status.success() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                out = garage.cli(args);
            }
            assert!(
                out.status.success(),
                "garage {args:?}: {}{}",
                String::from_utf8_lossy(&out.stderr),
                garage.log()
            );
        }
        garage
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(garage_bin())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The environment a fleet-server needs to use this node (`artifacts.url` is separate).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
            ("AWS_REGION", "garage".to_owned()),
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
