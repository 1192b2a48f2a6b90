//! A real KMS-compatible server (`moto_server`, PyPI `moto[server]`) for tests, on a free port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `moto_server`; killed on drop.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    pub endpoint: String,
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `moto_server` from `OMNISQL_MOTO_SERVER`, the e2e virtualenv that `scripts/test` builds, or `PATH`.
pub fn moto_server_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("OMNISQL_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    // The running test's crate folder (cargo sets it), not the one this was compiled in: a build
    // shared between checkouts must not look into another checkout.
    let crate_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let root = crate_dir.join("..");
    let venv = root.join("e2e/.venv/bin/moto_server");
    if venv.exists() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("moto_server")).find(|p| p.exists()))
}

impl MotoServer {
    /// Starts `moto_server` and waits until it answers.
    pub async fn start() -> Result<MotoServer, String> {
        let binary = moto_server_binary()
            .ok_or("moto_server not found: run scripts/test (it installs moto[server]) or set OMNISQL_MOTO_SERVER")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let server = MotoServer { child, endpoint: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("moto_server did not start listening within 30 s".into())
    }
}

impl MotoServer {
    /// An `aws-kms` provider talking to this server with the dummy credentials moto accepts.
    pub fn provider(&self) -> crate::AwsKms {
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_kms::config::Credentials::new("testing", "testing", None, None, "moto"))
            .build();
        crate::AwsKms::from_client(aws_sdk_kms::Client::from_conf(config))
    }

    /// Creates a symmetric key and returns its id.
    pub async fn create_key(&self) -> Result<String, String> {
        let out = self.provider().client().create_key().send().await.map_err(|e| format!("CreateKey failed: {e:?}"))?;
        out.key_metadata().map(|m| m.key_id().to_string()).ok_or_else(|| "CreateKey returned no key".into())
    }
}
