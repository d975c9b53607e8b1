//! Tests: parsing `/etc/passwd` and versions, and real servers started, killed, frozen and
//! stopped.

use std::io;
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use super::bindir::parse_version;
use super::user::{passwd_entry, RunAs};
use super::{Postgres, READY_LINE};
use crate::env::{can_start_postgres, REQUIRE_POSTGRES_ENV};
use crate::process;

#[test]
fn reads_users_and_versions() {
    let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                  nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                  postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
    assert_eq!(
        passwd_entry(passwd, "postgres"),
        Some(RunAs {
            name: "postgres".into(),
            uid: 101,
            gid: 104
        })
    );
    assert_eq!(passwd_entry(passwd, "nobody").map(|u| u.uid), Some(65534));
    assert_eq!(passwd_entry(passwd, "root"), None, "never root");
    assert_eq!(passwd_entry(passwd, "post"), None);
    assert_eq!(parse_version("15"), Some(vec![15]));
    assert!(parse_version("9.6") < parse_version("15"));
    assert_eq!(parse_version("15-old"), None);
}

/// Whether PostgreSQL can be started here; says why not when it cannot.
fn postgres_available() -> bool {
    if can_start_postgres() {
        return true;
    }
    eprintln!("skipping: no PostgreSQL here and {REQUIRE_POSTGRES_ENV} is not 1");
    false
}

/// Whether `psql` is installed (the SQL checks are skipped without it).
fn has_psql(server: &Postgres) -> bool {
    match server.psql("select 1") {
        Ok(out) => {
            assert_eq!(out.trim(), "1");
            true
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!("psql not found: skipping the SQL checks");
            false
        }
        Err(e) => panic!("select 1: {e}"),
    }
}

#[test]
fn starts_survives_kill9_and_stops_by_pid() {
    if !postgres_available() {
        return;
    }
    let mut server = Postgres::start().unwrap();
    let port = server.port();
    let pid = server.pid().unwrap();
    let dir = server.dir().to_path_buf();
    assert_eq!(
        server.url(),
        format!("postgres://session@127.0.0.1:{port}/postgres")
    );
    assert!(crate::registered_pids().contains(&pid));
    assert!(server.log_tail(50).contains(READY_LINE));
    let psql = has_psql(&server);
    if psql {
        assert_eq!(server.psql("show max_connections").unwrap().trim(), "200");
        assert_eq!(server.psql("show synchronous_commit").unwrap().trim(), "on");
        server
            .psql("create table acked (n int); insert into acked values (1), (2)")
            .unwrap();
    }

    let children = process::children_of(pid);
    assert!(!children.is_empty(), "a running postmaster has processes");
    server.kill9().unwrap();
    assert!(!process::is_alive(pid) && server.pid().is_none());
    assert!(
        children.iter().all(|&c| !process::is_alive(c)),
        "the backends exited with their postmaster"
    );
    assert!(!crate::registered_pids().contains(&pid));
    assert!(server.psql("select 1").is_err() || !psql);

    server.restart().unwrap();
    assert_eq!(server.port(), port);
    assert!(server.log_tail(50).contains("database system was interrupted"));
    let killed = pid;
    let pid = server.pid().unwrap();
    assert_ne!(pid, killed);
    assert!(crate::registered_pids().contains(&pid));
    if psql {
        assert_eq!(
            server.psql("select sum(n) from acked").unwrap().trim(),
            "3",
            "committed rows survive SIGKILL"
        );
    }
    let children = process::children_of(pid);
    drop(server);
    assert!(!process::is_alive(pid), "the postmaster is gone after drop");
    assert!(children.iter().all(|&c| !process::is_alive(c)));
    assert!(!crate::registered_pids().contains(&pid));
    assert!(!dir.exists(), "the scratch directory is removed");
}

/// Whether the server answers an SSLRequest (it says `N`: no SSL) within half a second.
fn answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let request = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]; // length 8, code 80877103
    let mut reply = [0u8; 1];
    stream.write_all(&request).is_ok() && stream.read_exact(&mut reply).is_ok() && reply == *b"N"
}

#[test]
fn freezes_and_thaws() {
    if !postgres_available() {
        return;
    }
    let server = Postgres::start().unwrap();
    let psql = has_psql(&server);
    server.sigstop().unwrap();
    assert!(server.is_paused());
    let pid = server.pid().unwrap();
    assert!(process::children_of(pid).iter().all(|&c| process::is_stopped(c)));
    assert!(!answers(server.port()), "a frozen server answers nothing");
    server.sigcont().unwrap();
    assert!(!server.is_paused());
    assert!(answers(server.port()));
    if psql {
        assert_eq!(server.psql("select 1").unwrap().trim(), "1");
    }
    server.sigstop().unwrap();
    let children = process::children_of(pid);
    drop(server);
    assert!(!process::is_alive(pid), "a frozen server stops on drop");
    assert!(children.iter().all(|&c| !process::is_alive(c)));
}
