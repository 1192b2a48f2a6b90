//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary folder (as user `postgres` when
//! running as root, since PostgreSQL refuses to run as root), a server on a free port, and a database
//! owned by a role that is not a superuser, so row-level security applies to it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct PostgresServer {
    child: Child,
    dir: PathBuf,
    pub port: u16,
    /// The application's URL (role `omnisql`, not a superuser).
    pub url: String,
    /// The superuser's URL, for tests that inspect the database behind the store's back.
    pub admin_url: String,
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PostgreSQL's binaries: `OMNISQL_PG_BIN`, the newest `/usr/lib/postgresql/*/bin` (Debian), or `PATH`.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("OMNISQL_PG_BIN") {
        return Some(PathBuf::from(p));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()?.parse::<u32>().ok()));
    versions.pop().or_else(|| {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).find(|d| d.join("initdb").exists() && d.join("postgres").exists()))
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Runs `program` as `postgres` when we are root.
fn as_postgres(program: PathBuf, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PostgresServer {
    pub async fn start() -> Result<PostgresServer, String> {
        let bin = postgres_bin_dir()
            .ok_or("PostgreSQL not found: run scripts/test (it installs the Debian package) or set OMNISQL_PG_BIN")?;
        let root = is_root();
        let dir = std::env::temp_dir().join(format!("omnisql-pg-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        if root {
            let ok = Command::new("chown").args(["postgres:postgres"]).arg(&dir).status().map(|s| s.success()).unwrap_or(false);
            if !ok {
                return Err(format!("cannot hand {} to user postgres", dir.display()));
            }
        }
        let data = dir.join("data");
        let out = as_postgres(bin.join("initdb"), root)
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = as_postgres(bin.join("postgres"), root)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .arg("-k")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        let admin_url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let server = PostgresServer {
            child,
            dir,
            port,
            url: format!("postgres://omnisql:omnisql@127.0.0.1:{port}/omnisql"),
            admin_url: admin_url.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        use sqlx::Connection;
        let mut admin = loop {
            match sqlx::PgConnection::connect(&admin_url).await {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => return Err(format!("postgres did not accept connections within 30 s: {e}")),
            }
        };
        use sqlx::Executor;
        admin
            .execute("CREATE ROLE omnisql LOGIN PASSWORD 'omnisql' NOSUPERUSER NOBYPASSRLS")
            .await
            .map_err(|e| format!("cannot create the application role: {e}"))?;
        admin.execute("CREATE DATABASE omnisql OWNER omnisql").await.map_err(|e| format!("cannot create the database: {e}"))?;
        Ok(server)
    }
}
