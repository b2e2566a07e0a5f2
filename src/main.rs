//! The `rtsync` binary: flags and environment → [`Config`], JSON logs on
//! stderr, signal handling, then [`rtsync::run`].

use std::process::ExitCode;

use clap::Parser;
use rtsync::config::Config;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// mimalloc: less time in the allocator on the hot path and less memory
/// held per idle connection than the system allocator (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = Config::parse();
    if config.health_check {
        return health_check(&config);
    }
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|e| {
        eprintln!("invalid RTS_LOG {:?} ({e}); using info", config.log);
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(true)
        .init();
    if let Err(e) = config.validate() {
        tracing::error!(error = %e, "invalid configuration");
        eprintln!("rtsync: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rtsync: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(rtsync::config::Mode::Audit(rtsync::config::AuditCommand::Verify)) = &config.mode {
        return audit_verify(&config, &runtime);
    }
    let result: anyhow::Result<()> = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(wait_for_signal(shutdown.clone()));
        let result: anyhow::Result<()> = match config.mode.clone() {
            Some(rtsync::config::Mode::Sink(sink)) => {
                rtsync::sink::run(config, sink, shutdown.clone())
                    .await
                    .map_err(Into::into)
            }
            // Answered before the runtime's main task (see `audit_verify`).
            Some(rtsync::config::Mode::Audit(_)) => Ok(()),
            None => rtsync::run(config, shutdown.clone())
                .await
                .map_err(Into::into),
        };
        signals.abort();
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "rtsync failed");
            eprintln!("rtsync: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `rtsync audit verify`: the report on stdout and exit code 0, the first
/// break on stdout and 1, or 3 when the log cannot be read.
fn audit_verify(config: &Config, runtime: &tokio::runtime::Runtime) -> ExitCode {
    use rtsync::audit::verify::VerifyError;
    match runtime.block_on(rtsync::audit::verify::run(config)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(VerifyError::Broken(b)) => {
            println!("broken: {b}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("rtsync: {e}");
            ExitCode::from(3)
        }
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
    shutdown.cancel();
}

/// `GET /healthz` over loopback on the configured port.
fn health_check(config: &Config) -> ExitCode {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], config.listen.port()));
    let timeout = std::time::Duration::from_secs(2);
    let ok = std::net::TcpStream::connect_timeout(&addr, timeout)
        .and_then(|mut s| {
            s.set_read_timeout(Some(timeout))?;
            s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head)?;
            Ok(head.ends_with(b"200"))
        })
        .unwrap_or(false);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
