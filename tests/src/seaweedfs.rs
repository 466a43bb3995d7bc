//! A real S3 implementation for tests: SeaweedFS (a production distributed object store), one
//! `weed server` on loopback running its master, volume server, filer and S3 gateway, with a
//! bucket `artifacts` and one key. `scripts/seaweedfs.sh` installs the binary once into a cache;
//! `EDGEFLEET_SEAWEEDFS` points at another one.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fleet::poll_for;
use crate::free_port;

pub const BUCKET: &str = "artifacts";
pub const REGION: &str = "us-east-1";
pub const ACCESS_KEY_ID: &str = "AKEF0E1D9E5F0A7C3B2D";
pub const SECRET_ACCESS_KEY: &str = "5f0e3c1a9b7d2e4f6a8c0b1d3e5f7a9c2b4d6e8f";

/// Where `scripts/seaweedfs.sh` puts the binary.
pub fn weed_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("EDGEFLEET_SEAWEEDFS") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("EDGEFLEET_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is not set"))
                .join(".cache/edgefleet")
        });
    let bin = cache.join("seaweedfs-4.48/bin/weed");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/seaweedfs.sh (installs SeaweedFS once, seconds)",
        bin.display()
    );
    bin
}

/// A SeaweedFS node of a test's own, killed when dropped.
#[derive(Debug)]
pub struct SeaweedFs {
    child: Child,
    s3_port: u16,
    dir: tempfile::TempDir,
}

impl SeaweedFs {
    /// Starts the node and creates the bucket; the key is in its S3 configuration from the start.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let s3_config = dir.path().join("s3.json");
        std::fs::write(
            &s3_config,
            serde_json::json!({"identities": [{
                "name": "edgefleet",
                "credentials": [{"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }]})
            .to_string(),
        )
        .unwrap();
        // Every port explicit: a gRPC port left to its default is the HTTP port + 10000, which
        // may be taken or past 65535.
        let [
            master,
            master_grpc,
            volume,
            volume_grpc,
            filer,
            filer_grpc,
            s3_port,
            s3_grpc,
        ] = std::array::from_fn(|_| free_port());
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let child = Command::new(weed_bin())
            .arg("server")
            .arg(format!("-dir={}", dir.path().display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={master_grpc}"))
            // No reports to seaweedfs.com from a test.
            .arg("-master.telemetry=false")
            // At most four volumes of 64 MB: tests move kilobytes, and the defaults (eight
            // volumes of 30 GB) are sized for a storage server's disk.
            .args(["-master.volumeSizeLimitMB=64", "-volume.max=4"])
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={volume_grpc}"))
            .arg("-filer")
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={filer_grpc}"))
            .arg("-s3")
            .arg(format!("-s3.port={s3_port}"))
            .arg(format!("-s3.port.grpc={s3_grpc}"))
            // Its Iceberg and Lance catalogs would listen on fixed ports of their own.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.config={}", s3_config.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let node = Self {
            child,
            s3_port,
            dir,
        };
        // The S3 port listens before the filer behind it does: the bucket is created through the
        // filer, retried until it answers.
        let shell_input = format!("s3.bucket.create -name {BUCKET}\n");
        let mut last = String::new();
        poll_for(Duration::from_secs(60), || {
            last = node.shell(
                &format!("127.0.0.1:{master}.{master_grpc}"),
                &format!("127.0.0.1:{filer}.{filer_grpc}"),
                &shell_input,
            );
            last.contains(&format!("created bucket {BUCKET}"))
                .then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "SeaweedFS did not create the bucket within 60 s: {last}\n{}",
                node.log()
            )
        });
        node
    }

    /// Runs `weed shell` commands; what it printed. Killed after 10 s: pointed at a port that
    /// is not the one it expects, it waits without end.
    fn shell(&self, master: &str, filer: &str, input: &str) -> String {
        use std::io::Write;
        let output = self.dir.path().join("shell.out");
        let file = std::fs::File::create(&output).unwrap();
        let mut child = Command::new(weed_bin())
            .arg("shell")
            .arg(format!("-master={master}"))
            .arg(format!("-filer={filer}"))
            .stdin(Stdio::piped())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::read_to_string(&output).unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The environment a fleet-server needs to use this node (`artifacts.url` is separate).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        // SIGKILL: on SIGTERM it waits out its graceful stop (~25 s) for data a test throws away.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
