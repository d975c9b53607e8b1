//! `cargo xtask load [--instances N] [--users N] [--turns N] [--concurrency N] [--release]`:
//! N demo servers on one local Redis, the chat simulator spread across them.
//! Every session is created through one instance and read and updated
//! through the others; the report counts cross-instance misses (must be 0).

use std::process::ExitCode;

use testkit_redis::RedisServer;

use crate::serve::{build_demo, run_simulator, DemoServer};

pub(crate) fn run(args: &[String]) -> crate::Result<ExitCode> {
    let mut instances = 2usize;
    let mut users = 500usize;
    let mut turns = 5usize;
    let mut concurrency = 64usize;
    let mut release = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--instances" => instances = value()?.parse()?,
            "--users" => users = value()?.parse()?,
            "--turns" => turns = value()?.parse()?,
            "--concurrency" => concurrency = value()?.parse()?,
            "--release" => release = true,
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    if instances == 0 {
        return Err("--instances must be at least 1".into());
    }
    crate::exec::install_interrupt_handler();
    crate::tools::ensure_redis_tools()?;
    println!("load: building session-demo and chat-sim");
    let bin = build_demo(release)?;
    let redis = RedisServer::start()?;
    println!("load: redis-server on 127.0.0.1:{}", redis.port());
    let env = vec![
        ("SESSION_BACKEND".to_string(), "redis".to_string()),
        ("SESSION_REDIS__URL".to_string(), redis.url()),
    ];
    let servers = (0..instances)
        .map(|_| DemoServer::start(&bin, &env))
        .collect::<crate::Result<Vec<_>>>()?;
    for (i, s) in servers.iter().enumerate() {
        println!(
            "load: instance {} on {} (backend redis, sharing redis-server 127.0.0.1:{})",
            i + 1,
            s.url(),
            redis.port()
        );
    }
    let mut sim_args = Vec::new();
    for s in &servers {
        sim_args.extend(["--target".to_string(), s.url()]);
    }
    sim_args.extend([
        "--users".into(),
        users.to_string(),
        "--turns".into(),
        turns.to_string(),
        "--concurrency".into(),
        concurrency.to_string(),
    ]);
    let status = run_simulator(&bin, &sim_args)?;
    let keys = match redis.cmd(&["DBSIZE"]) {
        Ok(testkit_redis::resp::Reply::Integer(n)) => n.to_string(),
        other => format!("{other:?}"),
    };
    println!(
        "load: instances={instances}; keys in Redis after the run: {keys} (reads: cross_instance_hits are \
         sessions one instance created and another served)"
    );
    drop(servers);
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
