//! A TCP fault proxy between clients and one upstream server.
//!
//! [`FaultProxy`] listens on `127.0.0.1`, pairs every accepted client
//! connection with a fresh connection to the upstream address, and copies
//! bytes both ways with two threads per pair. Each connection has a [`Mode`]
//! that decides, per [`Direction`], whether bytes pass, are held (buffered,
//! delivered later in order) or are dropped; connections can also be reset
//! and new ones refused. This models network partitions that SIGSTOP and
//! SIGKILL cannot: a request held while its client times out still runs
//! when the partition heals.
//!
//! The control methods take one short lock and never wait on the network,
//! so they are safe to call from async code and from many threads. Mode
//! changes take effect within the pump threads' read timeout (10 ms).
//!
//! Threads are named `fproxyP` (the accept loop of the proxy on port `P`)
//! and `fproxyP-Ns` / `fproxyP-Nc` (connection `N`, to server / to client).

mod pump;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use pump::{Conn, Lane};

/// Pause of the accept loop between two polls of its non-blocking listener.
const ACCEPT_POLL: Duration = Duration::from_millis(10);
/// Timeout of the connection to the upstream server made for each accepted client.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between two checks of [`FaultProxy::wait_accepted`].
const WAIT_POLL: Duration = Duration::from_millis(2);

/// Which way bytes travel through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client to the upstream server: requests.
    ToServer,
    /// From the upstream server to the client: replies.
    ToClient,
    /// Both ways.
    Both,
}

impl Direction {
    fn covers(self, lane: Lane) -> bool {
        matches!(
            (self, lane),
            (Direction::Both, _)
                | (Direction::ToServer, Lane::ToServer)
                | (Direction::ToClient, Lane::ToClient)
        )
    }
}

/// What the proxy does with the bytes of a connection.
///
/// A direction not named by [`Mode::Hold`] or [`Mode::Drop`] passes.
/// Bytes already held stay held until their direction passes again (also
/// through a switch to [`Mode::Drop`]); only a reset discards them. A close
/// (EOF or reset) by one side is never dropped: it waits behind that
/// direction's held bytes until the direction passes, then closes both sides
/// — so a client that gave up and closed still has its held request run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Forward everything (the default).
    #[default]
    Pass,
    /// Read and buffer the bytes of `Direction`, in order, without
    /// forwarding them; the TCP connections stay open. Switching back to
    /// [`Mode::Pass`] writes the buffered bytes first, then newer ones.
    Hold(Direction),
    /// Read and silently discard the bytes of `Direction`: a black hole, the
    /// TCP connections stay open.
    Drop(Direction),
}

/// What a [`Mode`] does to one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Pass,
    Hold,
    Drop,
}

impl Mode {
    fn action(self, lane: Lane) -> Action {
        match self {
            Mode::Hold(direction) if direction.covers(lane) => Action::Hold,
            Mode::Drop(direction) if direction.covers(lane) => Action::Drop,
            _ => Action::Pass,
        }
    }
}

/// Byte counts of one direction of a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes written to the receiving side so far.
    pub forwarded: u64,
    /// Bytes read and buffered by [`Mode::Hold`], not yet written.
    pub held: u64,
    /// Bytes read and discarded by [`Mode::Drop`].
    pub dropped: u64,
}

/// A snapshot of one open connection pair, from [`FaultProxy::connections`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// The connection's id: 1 for the first accepted connection, increasing in accept order.
    pub id: u64,
    /// The client's address: what `local_addr` returns on the client's socket.
    pub peer: SocketAddr,
    /// The proxy's own address on its connection to the server: the `addr` the server's
    /// `CLIENT LIST` shows for this client (`None` if the socket could not say).
    pub upstream_local: Option<SocketAddr>,
    /// The connection's current mode.
    pub mode: Mode,
    /// Client-to-server bytes.
    pub to_server: Traffic,
    /// Server-to-client bytes.
    pub to_client: Traffic,
}

/// A TCP proxy on `127.0.0.1` in front of one upstream address, with
/// per-connection fault injection; stopped on drop.
///
/// ```no_run
/// use std::net::SocketAddr;
/// use testkit_redis::{Direction, FaultProxy, Mode, Standalone};
///
/// # fn main() -> std::io::Result<()> {
/// let redis = Standalone::start()?;
/// let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.server().port())))?;
/// // Point the client under test at `proxy.port()`, then partition it:
/// proxy.set_all(Mode::Hold(Direction::Both));
/// // … the client times out; its request is still in flight …
/// proxy.release_all(); // the held request reaches Redis now
/// # Ok(())
/// # }
/// ```
pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Mutex<Option<JoinHandle<()>>>,
}

/// State shared by the handle, the accept thread and the pump threads.
struct Shared {
    upstream: SocketAddr,
    /// The listener's port, for thread names.
    port: u16,
    stopping: AtomicBool,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    conns: BTreeMap<u64, Arc<Conn>>,
    default_mode: Mode,
    refuse_new: bool,
    /// The id of the last paired connection, i.e. how many were paired.
    last_id: u64,
    refused: u64,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a free port of `127.0.0.1`.
    ///
    /// # Errors
    ///
    /// When the listener cannot be bound or its thread cannot be spawned.
    pub fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            port: addr.port(),
            stopping: AtomicBool::new(false),
            table: Mutex::new(Table::default()),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("fproxy{}", addr.port()))
                .spawn(move || shared.accept_loop(&listener))?
        };
        Ok(Self {
            shared,
            addr,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The upstream address every connection is paired with.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// `redis://127.0.0.1:P` for the proxy's port.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// The open connection pairs, by increasing id.
    pub fn connections(&self) -> Vec<ConnInfo> {
        self.shared
            .lock()
            .conns
            .values()
            .map(|conn| conn.info())
            .collect()
    }

    /// The open connection pair `id`, if any.
    pub fn connection(&self, id: u64) -> Option<ConnInfo> {
        self.shared.lock().conns.get(&id).map(|conn| conn.info())
    }

    /// How many connections were paired with the upstream so far (the
    /// highest id given out); refused ones are not counted.
    pub fn accepted(&self) -> u64 {
        self.shared.lock().last_id
    }

    /// How many accepted connections were closed at once, because of
    /// [`Self::refuse_new`] or because the upstream could not be reached.
    pub fn refused(&self) -> u64 {
        self.shared.lock().refused
    }

    /// Blocks until [`Self::accepted`] reaches `count`. A client's `connect`
    /// returns before the proxy accepts, so a test that wants to address its
    /// connection by id waits here first. From async code, poll
    /// [`Self::accepted`] instead.
    ///
    /// # Errors
    ///
    /// `TimedOut` when `timeout` passes first.
    pub fn wait_accepted(&self, count: u64, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let accepted = self.accepted();
            if accepted >= count {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "fault proxy {}: {accepted} of {count} connections accepted",
                        self.addr
                    ),
                ));
            }
            thread::sleep(WAIT_POLL);
        }
    }

    /// Sets the mode of connection `id`. Leaving [`Mode::Hold`] delivers the
    /// held bytes of the directions that now pass, before any newer ones.
    ///
    /// # Errors
    ///
    /// `NotFound` when no connection `id` is open.
    pub fn set_mode(&self, id: u64, mode: Mode) -> io::Result<()> {
        self.with_conn(id, |conn| conn.set_mode(mode))
    }

    /// Closes both sockets of connection `id` at once, discarding held bytes.
    ///
    /// The client sees an orderly close (read returns 0), not a TCP RST:
    /// std cannot set `SO_LINGER`.
    ///
    /// # Errors
    ///
    /// `NotFound` when no connection `id` is open.
    pub fn reset(&self, id: u64) -> io::Result<()> {
        let conn = self.shared.lock().conns.remove(&id);
        let conn = conn.ok_or_else(|| self.not_found(id))?;
        conn.close();
        Ok(())
    }

    /// Sets the mode of every open connection; connections accepted later get
    /// the default mode ([`Self::set_default`]). With the default left at
    /// [`Mode::Pass`], this partitions only the connections that exist now.
    pub fn set_all(&self, mode: Mode) {
        for conn in self.shared.lock().conns.values() {
            conn.set_mode(mode);
        }
    }

    /// Sets the mode of connections accepted from now on.
    pub fn set_default(&self, mode: Mode) {
        self.shared.lock().default_mode = mode;
    }

    /// The mode connections accepted from now on get.
    pub fn default_mode(&self) -> Mode {
        self.shared.lock().default_mode
    }

    /// [`Self::set_default`] and [`Self::set_all`] at once, so that no
    /// connection accepted in between escapes: a full partition.
    pub fn set_all_and_default(&self, mode: Mode) {
        let mut table = self.shared.lock();
        table.default_mode = mode;
        for conn in table.conns.values() {
            conn.set_mode(mode);
        }
    }

    /// Resets every open connection (see [`Self::reset`]).
    pub fn reset_all(&self) {
        let conns = std::mem::take(&mut self.shared.lock().conns);
        for conn in conns.values() {
            conn.close();
        }
    }

    /// Sets every open connection to [`Mode::Pass`], delivering held bytes.
    /// The default mode is unchanged; [`Self::heal`] resets it too.
    pub fn release_all(&self) {
        self.set_all(Mode::Pass);
    }

    /// Ends every fault: default and all connections [`Mode::Pass`] (held
    /// bytes are delivered), and new connections accepted again.
    pub fn heal(&self) {
        let mut table = self.shared.lock();
        table.refuse_new = false;
        table.default_mode = Mode::Pass;
        for conn in table.conns.values() {
            conn.set_mode(Mode::Pass);
        }
    }

    /// While `refuse` is true, newly accepted connections are closed at once
    /// (the client's connect succeeds, then it reads EOF): a server that
    /// cannot be reached again. Open connections are not affected.
    pub fn refuse_new(&self, refuse: bool) {
        self.shared.lock().refuse_new = refuse;
    }

    /// Stops the proxy: closes the listener and every connection pair and
    /// waits for their threads (a few poll intervals; up to about a second
    /// while a new connection is being paired). Idempotent; drop calls it.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.close_all();
        let accept = self.accept.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(accept) = accept {
            let _ = accept.join();
        }
    }

    fn with_conn(&self, id: u64, f: impl FnOnce(&Conn)) -> io::Result<()> {
        let table = self.shared.lock();
        let conn = table.conns.get(&id).ok_or_else(|| self.not_found(id))?;
        f(conn);
        Ok(())
    }

    fn not_found(&self, id: u64) -> io::Error {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("fault proxy {}: no open connection {id}", self.addr),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Accepts clients until the proxy stops, then closes every pair and
    /// joins the pump threads. Dropping the listener closes it.
    fn accept_loop(self: Arc<Self>, listener: &TcpListener) {
        let mut pumps: Vec<JoinHandle<()>> = Vec::new();
        while !self.stopping() {
            match listener.accept() {
                Ok((client, peer)) => self.admit(client, peer, &mut pumps),
                // WouldBlock, or a transient error such as EMFILE: try again shortly.
                Err(_) => thread::sleep(ACCEPT_POLL),
            }
            pumps.retain(|pump| !pump.is_finished());
        }
        self.close_all();
        for pump in pumps {
            let _ = pump.join();
        }
    }

    /// Pairs `client` with a new upstream connection and starts its pumps,
    /// or closes it when new connections are refused or the pairing fails.
    fn admit(self: &Arc<Self>, client: TcpStream, peer: SocketAddr, pumps: &mut Vec<JoinHandle<()>>) {
        if self.lock().refuse_new || self.pair(client, peer, pumps).is_err() {
            self.lock().refused += 1;
        }
    }

    fn pair(
        self: &Arc<Self>,
        client: TcpStream,
        peer: SocketAddr,
        pumps: &mut Vec<JoinHandle<()>>,
    ) -> io::Result<()> {
        // Accepted sockets do not inherit O_NONBLOCK on Linux; make sure anyway.
        client.set_nonblocking(false)?;
        let server = TcpStream::connect_timeout(&self.upstream, UPSTREAM_CONNECT_TIMEOUT)?;
        let conn = {
            let mut table = self.lock();
            if table.refuse_new || self.stopping() {
                let _ = server.shutdown(Shutdown::Both);
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "refusing new connections",
                ));
            }
            let conn = Arc::new(Conn::new(
                table.last_id + 1,
                peer,
                client,
                server,
                table.default_mode,
            )?);
            table.last_id = conn.id;
            table.conns.insert(conn.id, Arc::clone(&conn));
            conn
        };
        for lane in [Lane::ToServer, Lane::ToClient] {
            let shared = Arc::clone(self);
            let pair = Arc::clone(&conn);
            let spawned = thread::Builder::new()
                .name(format!("fproxy{}-{}{}", self.port, conn.id, lane.tag()))
                .spawn(move || {
                    pair.pump(lane, &shared.stopping);
                    shared.lock().conns.remove(&pair.id);
                });
            match spawned {
                Ok(pump) => pumps.push(pump),
                Err(e) => {
                    self.lock().conns.remove(&conn.id);
                    conn.close();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn close_all(&self) {
        let conns = std::mem::take(&mut self.lock().conns);
        for conn in conns.values() {
            conn.close();
        }
    }
}
