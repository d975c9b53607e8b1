//! `cargo xtask demo [--backend memory|redis|fallback] [--instances N] [--chaos] [--users N] [--turns N] [--release]`:
//! the demo server driven by the chat simulator, with a short report.
//!
//! `--backend redis|fallback` starts a local `redis-server` (append-only file
//! on, so a restarted Redis keeps what it acknowledged). `--instances N` (1–3;
//! 2 with `--chaos`) starts N demo servers on that one Redis, and the simulator
//! spreads each user's requests over them. `--chaos` (fallback only) kills
//! Redis with SIGKILL mid-run and restarts it, and the report shows whether
//! any acknowledged write was lost or any deleted session came back, and per
//! instance how many outage calls its warm copy answered (sessions that
//! predate the outage).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit_redis::{RedisServer, ServerOptions};

use crate::serve::{build_demo, http_get, metric_sum, run_simulator, DemoServer};

struct Args {
    backend: String,
    instances: Option<usize>,
    chaos: bool,
    users: usize,
    turns: usize,
    release: bool,
}

fn parse(args: &[String]) -> crate::Result<Args> {
    let mut a = Args {
        backend: "memory".into(),
        instances: None,
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
            "--instances" => a.instances = Some(value()?.parse()?),
            "--users" => a.users = value()?.parse()?,
            "--turns" => a.turns = value()?.parse()?,
            "--release" => a.release = true,
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    if !matches!(a.backend.as_str(), "memory" | "redis" | "fallback") {
        return Err(format!("--backend must be memory, redis or fallback, not `{}`", a.backend).into());
    }
    if let Some(n) = a.instances {
        if !(1..=3).contains(&n) {
            return Err(format!("--instances must be 1, 2 or 3, not {n}").into());
        }
        if n > 1 && a.backend == "memory" {
            return Err(
                "--instances above 1 needs --backend redis or fallback (memory is per process)".into(),
            );
        }
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
    println!("demo: building session-demo and chat-sim (cargo's progress follows; the first build takes a minute or two)");
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
    let instances = a.instances.unwrap_or(if a.chaos { 2 } else { 1 });
    let mut servers = Vec::new();
    for _ in 0..instances {
        let server = DemoServer::start(&bin, &env)?;
        println!("demo: session-demo on {} (backend {})", server.url(), a.backend);
        servers.push(server);
    }

    let mut sim_args = Vec::new();
    for server in &servers {
        sim_args.extend(["--target".to_string(), server.url()]);
    }
    sim_args.extend([
        "--users".into(),
        a.users.to_string(),
        "--turns".into(),
        a.turns.to_string(),
        "--concurrency".into(),
        "32".into(),
    ]);
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
            let ports: Vec<u16> = servers.iter().map(DemoServer::port).collect();
            Some(std::thread::spawn(move || {
                chaos_monkey(&r, &done, &ports).map_err(|e| e.to_string())
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

    for (n, server) in servers.iter().enumerate() {
        let who = if instances > 1 {
            format!("instance {}: ", n + 1)
        } else {
            String::new()
        };
        if let Ok((_, health)) = http_get(server.port(), "/health") {
            println!("{who}health: {}", health.trim());
        }
        if let Ok((200, metrics)) = http_get(server.port(), "/metrics") {
            let get = |name: &str| metric_sum(&metrics, name, "");
            let mut line = format!(
                "{who}metrics (the server's count, the verification's reads included; a miss is a load \
                 that found no session, such as checking that a deleted one stayed deleted): loads hit={} miss={}",
                metric_sum(&metrics, "session_store_operations_total", "outcome=\"hit\""),
                metric_sum(&metrics, "session_store_operations_total", "outcome=\"miss\"")
            );
            if a.backend == "fallback" {
                line.push_str(&format!(
                    " fallback failovers={} replayed={} conflicts={} warm_served={}",
                    get("session_fallback_failovers_total"),
                    get("session_fallback_replayed_total"),
                    get("session_fallback_conflicts_total"),
                    get("session_fallback_warm_served_total")
                ));
            }
            println!("{line}");
        }
    }
    drop(servers);
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Kills Redis after 2 s of load, restarts it 3 s later, and prints what each
/// demo instance's `/health` said meanwhile.
fn chaos_monkey(redis: &Mutex<RedisServer>, done: &AtomicBool, demo_ports: &[u16]) -> crate::Result<()> {
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
    for (n, port) in demo_ports.iter().enumerate() {
        if let Ok((_, h)) = http_get(*port, "/health") {
            stamp(&format!(
                "instance {}: health during the outage: {}",
                n + 1,
                h.trim()
            ));
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    redis.lock().map_err(|_| "redis guard poisoned")?.restart()?;
    stamp("redis-server restarted on the same port (AOF replayed)");
    Ok(())
}
