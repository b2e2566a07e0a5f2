//! Node.js test suites run against real sidecars (the SDK, the Socket.IO
//! frontend): whether their npm packages are there, and running them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory of the repository.
pub fn dir(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Whether `needed` exists; without it the suite is skipped only when the
/// machine opted out of the JavaScript tests (RTSYNC_SKIP_BROWSER), and
/// fails naming `fix` otherwise.
pub fn ready(needed: &Path, fix: &str) -> bool {
    if needed.exists() {
        return true;
    }
    if std::env::var_os("RTSYNC_SKIP_BROWSER").is_some() {
        eprintln!(
            "{} is missing and RTSYNC_SKIP_BROWSER is set: skipping",
            needed.display()
        );
        return false;
    }
    panic!("{} is missing: {fix}", needed.display());
}

/// Runs `node --test` on `files` in `dir`, one test at a time, each with a
/// 60 s timeout, with `env`; whether every test passed.
pub async fn run_tests(dir: PathBuf, files: &[&str], env: Vec<(&'static str, String)>) -> bool {
    let mut args = vec![
        "--test".to_owned(),
        "--test-concurrency=1".to_owned(),
        "--test-timeout=60000".to_owned(),
        // Parked requests (long-polling) would hold the process.
        "--test-force-exit".to_owned(),
    ];
    args.extend(files.iter().map(|f| (*f).to_owned()));
    tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(&args)
            .current_dir(dir)
            .envs(env)
            .status()
    })
    .await
    .expect("join")
    .expect("run node (is Node.js installed?)")
    .success()
}
