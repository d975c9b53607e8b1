//! `cargo xtask demo [--backend memory|redis|fallback] [--chaos] [--users N] [--turns N] [--release]`:
//! the demo server driven by the chat simulator, with a short report.
//!
//! `--backend redis|fallback` starts a local `redis-server` (append-only file
//! on, so a restarted Redis keeps what it acknowledged). `--chaos` (fallback
//! only) kills Redis with SIGKILL mid-run and restarts it, and the report
//! shows whether any acknowledged write was lost or any deleted session came
//! back.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit_redis::{RedisServer, ServerOptions};

use crate::serve::{build_demo, http_get, metric_sum, run_simulator, DemoServer};

struct Args {
    backend: String,
    chaos: bool,
    users: usize,
    turns: usize,
    release: bool,
}

fn parse(args: &[String]) -> crate::Result<Args> {
    let mut a = Args {
        backend: "memory".into(),
        chaos: false,
        users: 200,
        turns: 5,
        release: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => a.backend = value()?,
            "--chaos" => a.chaos = true,
            "--users" => a.users = value()?.parse()?,
            "--turns" => a.turns = value()?.parse()?,
            "--release" => a.release = true,
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    if !matches!(a.backend.as_str(), "memory" | "redis" | "fallback") {
        return Err(format!("--backend must be memory, redis or fallback, not `{}`", a.backend).into());
    }
    if a.chaos && a.backend != "fallback" {
        return Err("--chaos needs --backend fallback (Redis is stopped mid-run)".into());
    }
    if a.chaos {
        // Short users, many of them: sessions are created, updated and
        // deleted before, during and after the outage.
        a.users = a.users.max(300);
        a.turns = a.turns.max(10);
    }
    Ok(a)
}

pub(crate) fn run(args: &[String]) -> crate::Result<ExitCode> {
    let a = parse(args)?;
    crate::exec::install_interrupt_handler();
    println!("demo: building session-demo and chat-sim");
    let bin = build_demo(a.release)?;

    let redis = if a.backend == "memory" {
        None
    } else {
        crate::tools::ensure_redis_tools()?;
        let server = RedisServer::start_with(ServerOptions::new().aof(true))?;
        println!(
            "demo: redis-server on 127.0.0.1:{} (appendonly yes, appendfsync always)",
            server.port()
        );
        Some(Arc::new(Mutex::new(server)))
    };

    let mut env = vec![("SESSION_BACKEND".to_string(), a.backend.clone())];
    if let Some(r) = &redis {
        let url = r.lock().map_err(|_| "redis guard poisoned")?.url();
        env.push(("SESSION_REDIS__URL".into(), url));
    }
    let server = DemoServer::start(&bin, &env)?;
    println!("demo: session-demo on {} (backend {})", server.url(), a.backend);

    let mut sim_args = vec![
        "--target".to_string(),
        server.url(),
        "--users".into(),
        a.users.to_string(),
        "--turns".into(),
        a.turns.to_string(),
        "--concurrency".into(),
        "32".into(),
    ];
    if a.backend == "fallback" {
        sim_args.extend(["--wait-recovered-secs".into(), "60".into()]);
    }
    if a.chaos {
        sim_args.extend(["--pause-ms".into(), "150".into(), "--outage".into()]);
    }

    let done = Arc::new(AtomicBool::new(false));
    let chaos = match (&redis, a.chaos) {
        (Some(r), true) => {
            let r = Arc::clone(r);
            let done = Arc::clone(&done);
            let port = server.port();
            Some(std::thread::spawn(move || {
                chaos_monkey(&r, &done, port).map_err(|e| e.to_string())
            }))
        }
        _ => None,
    };
    println!("demo: chat-sim {}", sim_args.join(" "));
    let status = run_simulator(&bin, &sim_args)?;
    done.store(true, Ordering::SeqCst);
    if let Some(c) = chaos {
        match c.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => println!("demo: chaos: {e}"),
            Err(_) => println!("demo: chaos thread panicked"),
        }
    }

    if let Ok((_, health)) = http_get(server.port(), "/health") {
        println!("health: {}", health.trim());
    }
    if let Ok((200, metrics)) = http_get(server.port(), "/metrics") {
        let failovers = metric_sum(&metrics, "session_fallback_failovers_total", "");
        let replayed = metric_sum(&metrics, "session_fallback_replayed_total", "");
        let conflicts = metric_sum(&metrics, "session_fallback_conflicts_total", "");
        let hits = metric_sum(&metrics, "session_store_hits_total", "");
        let misses = metric_sum(&metrics, "session_store_misses_total", "");
        let mut line = format!("metrics: store hits={hits} misses={misses}");
        if a.backend == "fallback" {
            line.push_str(&format!(
                " fallback failovers={failovers} replayed={replayed} conflicts={conflicts}"
            ));
        }
        println!("{line}");
    }
    drop(server);
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Kills Redis after 2 s of load, restarts it 3 s later, and prints what the
/// demo's `/health` said meanwhile.
fn chaos_monkey(redis: &Mutex<RedisServer>, done: &AtomicBool, demo_port: u16) -> crate::Result<()> {
    let start = Instant::now();
    let stamp = |what: &str| println!("chaos: t={:.1}s {what}", start.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(2));
    if done.load(Ordering::SeqCst) {
        stamp("the run ended before the outage; nothing to do");
        return Ok(());
    }
    redis.lock().map_err(|_| "redis guard poisoned")?.kill9()?;
    stamp("redis-server killed (SIGKILL)");
    std::thread::sleep(Duration::from_millis(1500));
    if let Ok((_, h)) = http_get(demo_port, "/health") {
        stamp(&format!("health during the outage: {}", h.trim()));
    }
    std::thread::sleep(Duration::from_millis(1500));
    redis.lock().map_err(|_| "redis guard poisoned")?.restart()?;
    stamp("redis-server restarted on the same port (AOF replayed)");
    Ok(())
}
