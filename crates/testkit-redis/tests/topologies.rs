//! Starts every topology against the real `redis-server`, injects faults, and
//! checks that dropping a guard leaves no process behind.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use testkit_redis::resp::{self, Reply};
use testkit_redis::{
    can_start_servers, stop_pidfiles, Cluster, RedisServer, RedisTopology, Role, Sentinel, ServerOptions,
    Standalone, Tls, TopologyOptions, CLUSTER_URL_ENV, REDIS_URL_ENV, SENTINEL_URL_ENV, TLS_CA_ENV,
    TLS_URL_ENV, TOPOLOGY_ENV,
};

/// Whether `pid` still exists as a live (non-zombie) process.
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit(')').next().unwrap_or("").split_whitespace().next();
        !matches!(state, None | Some("Z" | "X"))
    })
}

fn assert_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "still running after drop: {left:?}");
}

fn ping(port: u16) -> bool {
    resp::command(port, &["PING"]).is_ok_and(|r| r == Reply::Status("PONG".into()))
}

#[test]
fn standalone_survives_kill9_with_aof_and_pauses() {
    if !can_start_servers() {
        return;
    }
    let mut topology = Standalone::start_with(&TopologyOptions::new().aof(true)).unwrap();
    println!("standalone ready in {:?}", topology.ready_after());
    let env = topology.env();
    assert_eq!(env[TOPOLOGY_ENV], "standalone");
    assert_eq!(
        env[REDIS_URL_ENV],
        format!("redis://127.0.0.1:{}", topology.server().port())
    );
    let pids = topology.pids();
    let server = topology.server_mut();
    assert!(ping(server.port()));

    assert_eq!(
        server.cmd(&["SET", "k", "v"]).unwrap(),
        Reply::Status("OK".into())
    );
    let old_pid = server.pid().unwrap();
    server.kill9().unwrap();
    assert!(!alive(old_pid));
    assert_eq!(server.pid(), None);
    assert!(!ping(server.port()));
    server.restart().unwrap();
    assert_eq!(
        server.cmd(&["GET", "k"]).unwrap(),
        Reply::Bulk(Some(b"v".to_vec()))
    );

    server.sigstop().unwrap();
    assert!(server.is_paused());
    let frozen = resp::Connection::connect_with(
        server.port(),
        Duration::from_millis(200),
        Duration::from_millis(300),
    )
    .and_then(|mut c| c.command(&["PING"]));
    assert!(frozen.is_err(), "a stopped server answered: {frozen:?}");
    server.sigcont().unwrap();
    server.wait_ready(Duration::from_secs(5)).unwrap();

    let mut pids = pids;
    pids.extend(topology.pids());
    drop(topology);
    assert_gone(&pids);
}

#[test]
fn server_guard_cleans_up_its_directory() {
    if !can_start_servers() {
        return;
    }
    let server = RedisServer::start_with(ServerOptions::new().debug_command(true)).unwrap();
    let dir = server.dir().to_path_buf();
    let pid = server.pid().unwrap();
    assert_eq!(
        server.cmd(&["DEBUG", "SLEEP", "0"]).unwrap(),
        Reply::Status("OK".into())
    );
    assert!(server.url().starts_with("redis://127.0.0.1:"));
    drop(server);
    assert_gone(&[pid]);
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[test]
fn cluster_promotes_a_replica_when_a_master_dies() {
    if !can_start_servers() {
        return;
    }
    let mut cluster = Cluster::start().unwrap();
    println!("cluster ready in {:?}", cluster.ready_after());
    let url = &cluster.env()[CLUSTER_URL_ENV];
    assert!(url.starts_with("redis-cluster://127.0.0.1:"), "{url}");
    assert_eq!(url.matches("node=127.0.0.1:").count(), 5, "{url}");
    for node in cluster.nodes() {
        assert!(ping(node.port()));
    }
    let roles = cluster.roles().unwrap();
    assert_eq!(roles.iter().filter(|(_, r)| *r == Role::Master).count(), 3);
    assert_eq!(roles.iter().filter(|(_, r)| *r == Role::Replica).count(), 3);

    let pids = cluster.pids();
    let master = cluster.masters().unwrap()[0];
    let replica = cluster.replica_of(master).unwrap();
    let killed_at = Instant::now();
    cluster.node_mut(master).unwrap().kill9().unwrap();
    let promoted = cluster
        .wait_for_failover(master, Duration::from_secs(15))
        .unwrap();
    println!("cluster failover took {:?}", killed_at.elapsed());
    assert_eq!(promoted, replica);
    assert_eq!(cluster.masters().unwrap().len(), 3);

    // The old master comes back as a replica of the promoted node.
    cluster.node_mut(master).unwrap().restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.replica_of(promoted).ok() != Some(master) {
        assert!(Instant::now() < deadline, "old master did not rejoin as replica");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut pids = pids;
    pids.extend(cluster.pids());
    drop(cluster);
    assert_gone(&pids);
}

#[test]
fn sentinel_fails_over() {
    if !can_start_servers() {
        return;
    }
    let mut topology = Sentinel::start().unwrap();
    println!("sentinel ready in {:?}", topology.ready_after());
    let url = &topology.env()[SENTINEL_URL_ENV];
    assert!(url.starts_with("redis-sentinel://127.0.0.1:"), "{url}");
    assert!(url.ends_with("&sentinelServiceName=mymaster"), "{url}");
    assert_eq!(url.matches("node=127.0.0.1:").count(), 2, "{url}");
    assert_eq!(topology.pids().len(), 5);
    for server in topology.servers() {
        assert!(ping(server.port()));
    }
    let master = topology.master().port();
    assert_eq!(topology.current_master().unwrap(), master);

    let pids = topology.pids();
    let killed_at = Instant::now();
    topology.master_mut().kill9().unwrap();
    let promoted = topology
        .wait_for_failover(master, Duration::from_secs(20))
        .unwrap();
    println!("sentinel failover took {:?}", killed_at.elapsed());
    assert_eq!(promoted, topology.replica().port());

    drop(topology);
    assert_gone(&pids);
}

#[test]
fn tls_with_acl_user() {
    if !can_start_servers() {
        return;
    }
    let tls = Tls::start().unwrap();
    println!("tls ready in {:?}", tls.ready_after());
    let env = tls.env();
    let port = tls.server().port();
    assert_eq!(
        env[TLS_URL_ENV],
        format!("rediss://app:{}@127.0.0.1:{port}", tls.password())
    );
    assert!(Path::new(&env[TLS_CA_ENV]).is_file());
    assert!(!format!("{tls:?}").contains(tls.password()));

    let server = tls.server();
    assert_eq!(server.cli(&["PING"]).unwrap().trim(), "PONG");
    // No plaintext, and no access without the password.
    assert!(!ping(port));
    let mut anonymous = std::process::Command::new("redis-cli");
    anonymous
        .args(server.cli_args().iter().take_while(|a| *a != "--user"))
        .args(["-e", "GET", "x"]);
    let denied = anonymous.output().unwrap();
    assert!(!denied.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&denied.stdout),
        String::from_utf8_lossy(&denied.stderr)
    );
    assert!(said.contains("NOAUTH"), "{said}");

    // The app user has what a session store needs ...
    for command in [
        &["SET", "session:a", "1", "PXAT", "99999999999999"][..],
        &["GET", "session:a"],
        &["EXISTS", "session:a"],
        &["PTTL", "session:a"],
        &["PEXPIREAT", "session:a", "99999999999999"],
        &["MEMORY", "USAGE", "session:a"],
        &["GETDEL", "session:a"],
        &["SET", "other:b", "1"],
        &["DEL", "other:b"],
        &["SCAN", "0", "MATCH", "session:*", "COUNT", "100"],
        &["INFO", "memory"],
        &["DBSIZE"],
        &["EVAL", "return redis.call('GET', KEYS[1])", "1", "session:a"],
        &["ROLE"],
    ] {
        server.cli(command).unwrap_or_else(|e| panic!("{command:?}: {e}"));
    }
    let sha = server.cli(&["SCRIPT", "LOAD", "return 1"]).unwrap();
    assert_eq!(server.cli(&["EVALSHA", sha.trim(), "0"]).unwrap().trim(), "1");
    // ... and none of what managed Redis forbids.
    for command in [
        &["KEYS", "*"][..],
        &["FLUSHALL"],
        &["FLUSHDB"],
        &["CONFIG", "GET", "maxmemory"],
    ] {
        let error = server.cli(command).unwrap_err().to_string();
        assert!(error.contains("NOPERM"), "{command:?}: {error}");
    }

    let pids = tls.pids();
    drop(tls);
    assert_gone(&pids);
}

#[test]
fn mutual_tls_requires_a_client_certificate() {
    if !can_start_servers() {
        return;
    }
    let tls = Tls::start_with(&TopologyOptions::new().mutual_tls(true)).unwrap();
    assert_eq!(tls.server().cli(&["PING"]).unwrap().trim(), "PONG");
    let args = tls.server().cli_args();
    let cert = args.iter().position(|a| a == "--cert").unwrap();
    let mut without_cert = args.clone();
    without_cert.drain(cert..cert + 4);
    let output = std::process::Command::new("redis-cli")
        .args(&without_cert)
        .env("REDISCLI_AUTH", tls.password())
        .args(["-e", "PING"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&output.stdout).contains("PONG"));
}

#[test]
fn detached_servers_outlive_the_guard_until_stopped_by_pidfile() {
    if !can_start_servers() {
        return;
    }
    let base = std::env::temp_dir().join(format!("testkit-redis-detached-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let options = TopologyOptions::new().daemonize(true).base_dir(&base);
    let mut standalone = testkit_redis::start(testkit_redis::Topology::Standalone, &options).unwrap();
    let pids = standalone.pids();
    let port = standalone.servers()[0].port();
    assert!(testkit_redis::registered_pids().contains(&pids[0]));
    standalone.detach();
    assert!(!testkit_redis::registered_pids().contains(&pids[0]));
    drop(standalone);
    assert!(
        alive(pids[0]) && ping(port),
        "a detached server stopped with its guard"
    );

    let stopped = stop_pidfiles(&base).unwrap();
    assert_eq!(stopped, pids);
    assert_gone(&pids);
    fs::remove_dir_all(&base).unwrap();
}

/// Set in the child process of [`servers_die_with_a_killed_test_process`].
const HOLD_ENV: &str = "TESTKIT_REDIS_TEST_HOLD";

#[test]
fn servers_die_with_a_killed_test_process() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    if std::env::var_os(HOLD_ENV).is_some() {
        // The child: start a topology, say where it is, and wait to be killed.
        let standalone = Standalone::start().unwrap();
        let root = standalone.server().dir().parent().unwrap().to_path_buf();
        println!("\nHOLD {} {}", standalone.server().pid().unwrap(), root.display());
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    if !can_start_servers() {
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["servers_die_with_a_killed_test_process", "--exact", "--nocapture"])
        .env(HOLD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let hold = stdout
        .lines()
        .map(Result::unwrap)
        .find_map(|line| line.strip_prefix("HOLD ").map(str::to_owned))
        .expect("the child printed no HOLD line");
    let (pid, root) = hold.split_once(' ').unwrap();
    let (pid, root): (u32, &Path) = (pid.parse().unwrap(), Path::new(root));
    assert!(alive(pid) && root.is_dir());

    child.kill().unwrap(); // SIGKILL: no Drop, no signal handler.
    child.wait().unwrap();
    assert_gone(&[pid]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while root.exists() {
        assert!(Instant::now() < deadline, "{} was not removed", root.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}
