//! `FaultProxy` in front of a local echo server (ordering, shutdown) and in
//! front of a real `redis-server` (held writes land later, dropped ones never,
//! resets, refusals, per-connection modes, and `CLIENT KILL` against a held
//! write). The Redis tests skip when `redis-server` is not installed.

#![allow(clippy::unwrap_used, reason = "test helpers: a panic is the failure report")]

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use testkit_redis::resp::{Connection, Reply};
use testkit_redis::{can_start_servers, Direction, FaultProxy, Mode, RedisServer, Standalone};

/// How long a held write must stay invisible to a direct connection.
const HELD_FOR: Duration = Duration::from_millis(300);
/// Upper bound for anything that should happen "promptly".
const PROMPTLY: Duration = Duration::from_secs(2);
/// How long the client waits for a reply before it gives up.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(200);

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A Redis server and a proxy in front of it, or `None` when no server can be started.
fn redis_behind_proxy() -> Option<(Standalone, FaultProxy)> {
    if !can_start_servers() {
        return None;
    }
    let redis = Standalone::start().unwrap();
    let proxy = FaultProxy::start(localhost(redis.server().port())).unwrap();
    Some((redis, proxy))
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

fn eventually(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// `GET key` on a direct connection to the server, bypassing the proxy.
fn direct_get(server: &RedisServer, key: &str) -> Option<String> {
    server.cmd(&["GET", key]).unwrap().text()
}

/// A raw client socket through the proxy, so a test controls when it sends and reads.
struct Client {
    stream: TcpStream,
}

impl Client {
    /// Connects and waits until the proxy has paired the connection as `id`.
    fn connect(proxy: &FaultProxy, id: u64) -> Client {
        let stream = TcpStream::connect(proxy.addr()).unwrap();
        stream.set_nodelay(true).unwrap();
        proxy.wait_accepted(id, PROMPTLY).unwrap();
        let info = proxy.connection(id).unwrap();
        assert_eq!(info.peer, stream.local_addr().unwrap());
        Client { stream }
    }

    fn send(&mut self, args: &[&str]) -> usize {
        let bytes = encode(args);
        self.stream.write_all(&bytes).unwrap();
        bytes.len()
    }

    /// Reads until at least `len` bytes arrived; fails on EOF or when `timeout` passes.
    fn read(&mut self, len: usize, timeout: Duration) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut buf = [0; 512];
        while got.len() < len {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("got {got:?}")));
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf)? {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("got {got:?}"),
                    ))
                }
                n => got.extend_from_slice(&buf[..n]),
            }
        }
        Ok(got)
    }

    /// Reads one reply line, without its CRLF.
    fn read_line(&mut self) -> String {
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            line.extend(self.read(1, PROMPTLY).unwrap());
        }
        String::from_utf8(line).unwrap().trim_end().to_owned()
    }

    fn expect(&mut self, reply: &str) {
        let got = self.read(reply.len(), PROMPTLY).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), reply);
    }

    fn command(&mut self, args: &[&str], reply: &str) {
        self.send(args);
        self.expect(reply);
    }

    /// Asserts that nothing arrives for `wait` (the client's request timed out).
    fn expect_silence(&mut self, wait: Duration) {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0; 64];
        match self.stream.read(&mut buf) {
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Whether the proxy closed the socket: a read returns 0 or fails, not times out.
    fn closed_within(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0; 64];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                // Stray bytes (e.g. a late reply) before the close.
                Ok(_) => {}
                Err(e) => return !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
            }
        }
    }
}

/// Names of this process's threads that belong to the proxy on `port`.
fn proxy_threads(port: u16) -> Vec<String> {
    let prefix = format!("fproxy{port}");
    fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name == &prefix || name.starts_with(&format!("{prefix}-")))
        .collect()
}

/// An upstream that echoes every connection's bytes back.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let mut reader = stream.try_clone().unwrap();
                let _ = io::copy(&mut reader, &mut stream);
            });
        }
    });
    addr
}

#[test]
fn proxy_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FaultProxy>();
}

#[test]
fn held_bytes_come_out_in_order_before_newer_ones() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut client = Client::connect(&proxy, 1);
    client.stream.write_all(b"ping").unwrap();
    assert_eq!(client.read(4, PROMPTLY).unwrap(), b"ping");

    proxy.set_mode(1, Mode::Hold(Direction::ToServer)).unwrap();
    for chunk in [&b"abc"[..], b"def", b"ghi"] {
        client.stream.write_all(chunk).unwrap();
        thread::sleep(Duration::from_millis(30));
    }
    client.expect_silence(Duration::from_millis(100));
    assert_eq!(proxy.connection(1).unwrap().mode, Mode::Hold(Direction::ToServer));
    assert!(eventually(PROMPTLY, || proxy.connection(1).is_some_and(|c| (
        c.to_server.held,
        c.to_server.forwarded
    )
        == (9, 4))));

    proxy.set_mode(1, Mode::Pass).unwrap();
    client.stream.write_all(b"jkl").unwrap();
    assert_eq!(client.read(12, PROMPTLY).unwrap(), b"abcdefghijkl");

    // Replies held while requests pass: the echo comes back only on release.
    proxy.set_mode(1, Mode::Hold(Direction::ToClient)).unwrap();
    client.stream.write_all(b"mno").unwrap();
    client.expect_silence(Duration::from_millis(100));
    assert!(eventually(PROMPTLY, || proxy
        .connection(1)
        .unwrap()
        .to_client
        .held
        == 3));
    proxy.release_all();
    assert_eq!(client.read(3, PROMPTLY).unwrap(), b"mno");
    // The counters move right after the write, so possibly after the client read.
    let counts = || {
        let info = proxy.connection(1).unwrap();
        (info.to_server.forwarded, info.to_client.forwarded)
    };
    assert!(eventually(PROMPTLY, || counts() == (19, 19)), "{:?}", counts());
}

#[test]
fn stop_closes_clients_and_ends_every_thread() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let port = proxy.port();
    let mut clients: Vec<Client> = (1..=3).map(|id| Client::connect(&proxy, id)).collect();
    proxy.set_mode(2, Mode::Hold(Direction::Both)).unwrap();
    clients[1].stream.write_all(b"held").unwrap();
    // The listener accepts and starts a connection's pumps in its own time.
    assert!(
        eventually(PROMPTLY, || proxy_threads(port).len() == 1 + 2 * 3),
        "{:?}",
        proxy_threads(port)
    );

    proxy.stop();
    assert!(proxy_threads(port).is_empty(), "{:?}", proxy_threads(port));
    for client in &mut clients {
        assert!(client.closed_within(PROMPTLY));
    }
    assert!(proxy.connections().is_empty());
    assert!(
        TcpStream::connect(localhost(port)).is_err(),
        "the listener is still open"
    );
    proxy.stop();
}

#[test]
fn passes_ping_set_get() {
    let Some((redis, proxy)) = redis_behind_proxy() else {
        return;
    };
    let mut client = Connection::connect(proxy.port()).unwrap();
    assert_eq!(client.command(&["PING"]).unwrap(), Reply::Status("PONG".into()));
    assert_eq!(
        client.command(&["SET", "k", "v"]).unwrap(),
        Reply::Status("OK".into())
    );
    assert_eq!(
        client.command(&["GET", "k"]).unwrap().text().as_deref(),
        Some("v")
    );
    assert_eq!(direct_get(redis.server(), "k").as_deref(), Some("v"));

    let info = proxy.connections();
    assert_eq!(info.len(), 1);
    assert_eq!((info[0].id, info[0].mode), (1, Mode::Pass));
    let sent = [
        encode(&["PING"]),
        encode(&["SET", "k", "v"]),
        encode(&["GET", "k"]),
    ];
    let sent = sent.iter().map(Vec::len).sum::<usize>() as u64;
    let received = b"+PONG\r\n+OK\r\n$1\r\nv\r\n".len() as u64;
    // The counters move right after the write, so possibly after the client read.
    assert!(eventually(PROMPTLY, || proxy.connection(1).is_some_and(|c| (
        c.to_server.forwarded,
        c.to_client.forwarded
    )
        == (sent, received))));
}

#[test]
fn held_write_lands_after_release() {
    let Some((redis, proxy)) = redis_behind_proxy() else {
        return;
    };
    let mut client = Client::connect(&proxy, 1);
    client.command(&["PING"], "+PONG\r\n");

    proxy.set_mode(1, Mode::Hold(Direction::ToServer)).unwrap();
    let len = client.send(&["SET", "k", "v"]);
    client.send(&["PING"]);
    client.expect_silence(CLIENT_TIMEOUT);
    assert_eq!(direct_get(redis.server(), "k"), None);
    thread::sleep(HELD_FOR);
    assert_eq!(direct_get(redis.server(), "k"), None);
    let held = proxy.connection(1).unwrap().to_server.held;
    assert_eq!(held, (len + encode(&["PING"]).len()) as u64);

    proxy.set_mode(1, Mode::Pass).unwrap();
    assert!(eventually(PROMPTLY, || direct_get(redis.server(), "k")
        .as_deref()
        == Some("v")));
    // The late replies reach the client, in order.
    client.expect("+OK\r\n+PONG\r\n");
    assert_eq!(proxy.connection(1).unwrap().to_server.held, 0);
}

#[test]
fn held_write_lands_after_the_client_gave_up() {
    let Some((redis, proxy)) = redis_behind_proxy() else {
        return;
    };
    let mut client = Client::connect(&proxy, 1);
    proxy.set_mode(1, Mode::Hold(Direction::Both)).unwrap();
    client.send(&["SET", "gave-up", "v"]);
    client.expect_silence(CLIENT_TIMEOUT);
    drop(client);
    thread::sleep(HELD_FOR);
    assert_eq!(direct_get(redis.server(), "gave-up"), None);
    // The client's close is held behind its bytes, so the pair is still open.
    assert_eq!(proxy.connections().len(), 1);

    proxy.release_all();
    assert!(eventually(PROMPTLY, || direct_get(redis.server(), "gave-up")
        .as_deref()
        == Some("v")));
    assert!(eventually(PROMPTLY, || proxy.connections().is_empty()));
}

#[test]
fn dropped_write_never_lands() {
    let Some((redis, proxy)) = redis_behind_proxy() else {
        return;
    };
    let mut client = Client::connect(&proxy, 1);
    proxy.set_mode(1, Mode::Drop(Direction::ToServer)).unwrap();
    let len = client.send(&["SET", "dropped", "v"]);
    client.expect_silence(CLIENT_TIMEOUT);
    assert!(eventually(PROMPTLY, || proxy
        .connection(1)
        .unwrap()
        .to_server
        .dropped
        == len as u64));

    proxy.set_mode(1, Mode::Pass).unwrap();
    thread::sleep(HELD_FOR);
    assert_eq!(direct_get(redis.server(), "dropped"), None);
    // The connection is still usable: the next reply is PING's, not the lost SET's.
    client.command(&["PING"], "+PONG\r\n");
    assert_eq!(direct_get(redis.server(), "dropped"), None);

    // Dropping replies only: the write lands, its reply is lost.
    proxy.set_mode(1, Mode::Drop(Direction::ToClient)).unwrap();
    client.send(&["SET", "reply-lost", "v"]);
    client.expect_silence(CLIENT_TIMEOUT);
    assert_eq!(direct_get(redis.server(), "reply-lost").as_deref(), Some("v"));
    proxy.set_mode(1, Mode::Pass).unwrap();
    client.command(&["PING"], "+PONG\r\n");
}

#[test]
fn reset_closes_the_client_and_discards_held_bytes() {
    let Some((redis, proxy)) = redis_behind_proxy() else {
        return;
    };
    let mut client = Client::connect(&proxy, 1);
    client.command(&["PING"], "+PONG\r\n");
    proxy.set_mode(1, Mode::Hold(Direction::ToServer)).unwrap();
    let len = client.send(&["SET", "reset", "v"]);
    assert!(eventually(PROMPTLY, || proxy
        .connection(1)
        .unwrap()
        .to_server
        .held
        == len as u64));

    proxy.reset(1).unwrap();
    assert!(client.closed_within(PROMPTLY));
    assert!(proxy.connections().is_empty());
    assert_eq!(
        proxy.set_mode(1, Mode::Pass).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    thread::sleep(HELD_FOR);
    assert_eq!(direct_get(redis.server(), "reset"), None);

    // reset_all closes every connection; new ones still work.
    let mut a = Client::connect(&proxy, 2);
    let mut b = Client::connect(&proxy, 3);
    proxy.reset_all();
    assert!(a.closed_within(PROMPTLY) && b.closed_within(PROMPTLY));
    Client::connect(&proxy, 4).command(&["PING"], "+PONG\r\n");
}

#[test]
fn refuse_new_closes_new_connections() {
    let Some((_redis, proxy)) = redis_behind_proxy() else {
        return;
    };
    let mut open = Client::connect(&proxy, 1);
    proxy.refuse_new(true);

    let mut refused = TcpStream::connect(proxy.addr()).unwrap();
    assert!(eventually(PROMPTLY, || proxy.refused() == 1));
    let _ = refused.write_all(&encode(&["PING"]));
    refused.set_read_timeout(Some(PROMPTLY)).unwrap();
    let mut buf = [0; 16];
    match refused.read(&mut buf) {
        Ok(0) => {}
        Err(e) => assert_ne!(e.kind(), io::ErrorKind::WouldBlock, "not closed: {e}"),
        Ok(n) => panic!("a refused connection got {:?}", &buf[..n]),
    }
    assert_eq!(proxy.accepted(), 1);
    open.command(&["PING"], "+PONG\r\n");

    proxy.refuse_new(false);
    Client::connect(&proxy, 2).command(&["PING"], "+PONG\r\n");
}

#[test]
fn holding_one_connection_leaves_the_others_alone() {
    let Some((redis, proxy)) = redis_behind_proxy() else {
        return;
    };
    let mut first = Client::connect(&proxy, 1);
    let mut second = Client::connect(&proxy, 2);
    proxy.set_mode(1, Mode::Hold(Direction::Both)).unwrap();

    first.send(&["SET", "first", "1"]);
    second.command(&["SET", "second", "2"], "+OK\r\n");
    second.command(&["GET", "second"], "$1\r\n2\r\n");
    first.expect_silence(CLIENT_TIMEOUT);
    assert_eq!(direct_get(redis.server(), "first"), None);
    let modes: Vec<(u64, Mode)> = proxy.connections().iter().map(|c| (c.id, c.mode)).collect();
    assert_eq!(modes, [(1, Mode::Hold(Direction::Both)), (2, Mode::Pass)]);

    proxy.set_mode(1, Mode::Pass).unwrap();
    first.expect("+OK\r\n");
    assert_eq!(direct_get(redis.server(), "first").as_deref(), Some("1"));
}

#[test]
fn set_all_holds_existing_connections_and_the_default_holds_new_ones() {
    let Some((redis, proxy)) = redis_behind_proxy() else {
        return;
    };
    let mut old = Client::connect(&proxy, 1);
    proxy.set_all(Mode::Hold(Direction::ToServer));
    let mut new = Client::connect(&proxy, 2);
    new.command(&["SET", "new", "1"], "+OK\r\n");
    old.send(&["SET", "old", "1"]);
    old.expect_silence(CLIENT_TIMEOUT);
    assert_eq!(direct_get(redis.server(), "old"), None);

    proxy.set_default(Mode::Hold(Direction::ToServer));
    assert_eq!(proxy.default_mode(), Mode::Hold(Direction::ToServer));
    let mut later = Client::connect(&proxy, 3);
    later.send(&["SET", "later", "1"]);
    later.expect_silence(CLIENT_TIMEOUT);
    assert_eq!(direct_get(redis.server(), "later"), None);

    proxy.heal();
    old.expect("+OK\r\n");
    later.expect("+OK\r\n");
    assert_eq!(direct_get(redis.server(), "old").as_deref(), Some("1"));
    assert_eq!(direct_get(redis.server(), "later").as_deref(), Some("1"));
    assert_eq!(proxy.default_mode(), Mode::Pass);
    Client::connect(&proxy, 4).command(&["PING"], "+PONG\r\n");
}

/// The mechanism a store can rely on: once the server has killed a client
/// (`CLIENT KILL ID n` on another connection), bytes of that client that were
/// still in flight never run, even when they arrive later.
#[test]
fn client_kill_discards_a_held_write() {
    let Some((redis, proxy)) = redis_behind_proxy() else {
        return;
    };
    let server = redis.server();
    for (id, direction) in [(1, Direction::Both), (2, Direction::ToServer)] {
        let key = format!("killed-{id}");
        let mut client = Client::connect(&proxy, id);
        client.send(&["CLIENT", "ID"]);
        let client_id = client.read_line().trim_start_matches(':').to_owned();

        proxy.set_mode(id, Mode::Hold(direction)).unwrap();
        let len = client.send(&["SET", &key, "v"]) as u64;
        assert!(eventually(PROMPTLY, || proxy
            .connection(id)
            .is_some_and(|c| c.to_server.held == len)));
        let before = proxy.connection(id).unwrap().to_server.forwarded;
        assert_eq!(
            server.cmd(&["CLIENT", "KILL", "ID", &client_id]).unwrap(),
            Reply::Integer(1)
        );

        if direction == Direction::Both {
            // The server's close is held too, so the proxy still writes the
            // SET to the killed connection: it arrives after the kill.
            proxy.set_mode(id, Mode::Hold(Direction::ToClient)).unwrap();
            assert!(eventually(PROMPTLY, || proxy
                .connection(id)
                .is_some_and(|c| c.to_server.forwarded == before + len)));
            thread::sleep(HELD_FOR);
            assert_eq!(direct_get(server, &key), None);
            proxy.release_all();
        } else {
            // Replies pass, so the server's close reaches the proxy, which
            // closes the pair and discards the held SET.
            assert!(eventually(PROMPTLY, || proxy.connection(id).is_none()));
        }
        assert!(client.closed_within(PROMPTLY));
        thread::sleep(HELD_FOR);
        assert_eq!(direct_get(server, &key), None, "{direction:?}");
    }
}
