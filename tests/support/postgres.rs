//! A PostgreSQL server for one test: `initdb` and `pg_ctl` (Debian's
//! server binaries) on a free port in a temporary directory, trust
//! authentication on 127.0.0.1, stopped and removed on drop. As root the
//! server runs as the `postgres` user (PostgreSQL refuses root).

use std::path::PathBuf;
use std::process::Command;

use super::redis_server::{free_port, rand_suffix};

pub struct Postgres {
    pub port: u16,
    dir: PathBuf,
}

/// A PostgreSQL program: from /usr/lib/postgresql/<version>/bin, else PATH.
fn bin(name: &str) -> PathBuf {
    if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut dirs: Vec<PathBuf> = versions
            .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
            .collect();
        dirs.sort();
        if let Some(p) = dirs.into_iter().rev().find(|p| p.exists()) {
            return p;
        }
    }
    PathBuf::from(name)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// Runs a server program, as `postgres` when we are root.
fn run(program: &str, args: &[&str]) -> bool {
    let path = bin(program);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    cmd.args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = std::env::temp_dir().join(format!(
            "rtsync-test-pg-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("create the PostgreSQL directory");
        if is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status();
        }
        let data = dir.join("data");
        let data = data.to_str().expect("utf-8 path");
        assert!(
            run(
                "initdb",
                &[
                    "-D",
                    data,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync"
                ]
            ),
            "initdb failed (install PostgreSQL: scripts/ensure-postgres.sh)"
        );
        let port = free_port();
        let opts = format!("-p {port} -h 127.0.0.1 -k {} -F", dir.display());
        let log = dir.join("log");
        assert!(
            run(
                "pg_ctl",
                &[
                    "-D",
                    data,
                    "-o",
                    &opts,
                    "-l",
                    log.to_str().expect("utf-8"),
                    "-w",
                    "-t",
                    "30",
                    "start"
                ]
            ),
            "pg_ctl start failed: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Postgres { port, dir }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs SQL with psql; returns its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(bin("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        if let Some(d) = data.to_str() {
            run("pg_ctl", &["-D", d, "-m", "immediate", "-w", "stop"]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
