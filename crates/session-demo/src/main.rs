//! The demo API server: `session-demo [--listen ADDR] [--config FILE]`.
//!
//! Configuration comes from the TOML file and `SESSION_*` environment
//! variables (see `docs/configuration.md`); without either it stores sessions
//! in memory with the JSON codec and the key prefix `omnia:session:`.

#![allow(clippy::print_stdout, reason = "a server prints where it listens")]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use session_demo::{router, AppState, MetricsRender};
use session_store::backup::{read_snapshot, write_snapshot, CopyMode};
use session_store::{Backend, Settings};

/// The demo's defaults, overridden by the file and the environment.
const DEMO_DEFAULTS: &str = r#"
key_prefix = "omnia:session:"
codec = "json"

[metrics]
refresh_secs = 5
namespaces = ["task", "orchestrator"]
"#;

struct Args {
    listen: SocketAddr,
    config: Option<PathBuf>,
    /// With the memory backend: the sessions are written there at shutdown and read back at
    /// start, so a restart (or a switch to Redis) logs no one out.
    snapshot: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        config: None,
        snapshot: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--listen" => {
                let v = it
                    .next()
                    .ok_or("--listen needs an address, e.g. 127.0.0.1:8080")?;
                args.listen = v
                    .parse()
                    .map_err(|_| format!("--listen: {v:?} is not an address like 127.0.0.1:8080"))?;
            }
            "--config" => args.config = Some(it.next().ok_or("--config needs a file")?.into()),
            "--snapshot" => args.snapshot = Some(it.next().ok_or("--snapshot needs a file")?.into()),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The Redis client's own connection chatter ("Broadcasting error …") repeats what
                // the store reports in its own words; RUST_LOG=fred=warn shows it again.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fred=error")),
        )
        .with_target(false)
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("session-demo: {e}");
            }
            eprintln!("usage: session-demo [--listen 127.0.0.1:8080] [--config FILE] [--snapshot FILE]");
            return ExitCode::from(2);
        }
    };
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), String> {
    let settings =
        Settings::load_with_defaults(DEMO_DEFAULTS, args.config.as_deref()).map_err(|e| e.to_string())?;

    // The recorder must be installed before the store registers its metrics.
    let handle = session_demo::metrics::install_prometheus().map_err(|e| format!("metrics: {e}"))?;
    let render: MetricsRender = Arc::new(move || handle.render());

    let built = session_store::build(&settings).await.map_err(|e| e.to_string())?;
    if let Some(path) = args.snapshot.as_deref().filter(|p| p.exists()) {
        // Sessions of the previous process (a memory store's, written at its shutdown); a newer
        // session or a logout already in the store stays.
        let read = read_snapshot(path, built.store.as_ref(), CopyMode::KeepNewer)
            .await
            .map_err(|e| format!("snapshot {}: {e}", path.display()))?;
        tracing::info!(sessions = read.copied, expired = read.expired, "snapshot read");
    }
    let state = AppState::new(
        Arc::clone(&built.store),
        built.backend.as_str(),
        &built.core,
        Some(render),
    )
    .map_err(|e| e.to_string())?;
    let app = router(state, settings.core.max_session_bytes);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!(
        "session-demo listening on http://{local} (backend {})",
        built.backend
    );
    tracing::info!(backend = built.backend.as_str(), %local, "listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))?;
    if let Err(e) = built.shutdown().await {
        tracing::error!(error = %e, "the backup's queue could not be written at shutdown");
    }
    if let Some(path) = args.snapshot.as_deref() {
        if built.backend == Backend::Memory {
            let report = write_snapshot(built.store.as_ref(), path)
                .await
                .map_err(|e| format!("snapshot {}: {e}", path.display()))?;
            tracing::info!(sessions = report.sessions, path = %path.display(), "snapshot written");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
