//! One connection pair and the two threads that copy its bytes.
//!
//! Each direction ("lane") has exactly one pump thread, which both reads and
//! writes it; so held bytes, taken out of the buffer before the next read,
//! always reach the receiver before newer bytes of the same lane.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{Action, ConnInfo, Mode, Traffic};

/// Read timeout of both sockets: how soon a pump notices a mode change.
const READ_TIMEOUT: Duration = Duration::from_millis(10);
/// Size of one read.
const CHUNK: usize = 16 * 1024;

/// One direction of a connection pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lane {
    ToServer,
    ToClient,
}

impl Lane {
    /// The lane's letter in thread names (Linux keeps 15 bytes of a name).
    pub(super) fn tag(self) -> char {
        match self {
            Lane::ToServer => 's',
            Lane::ToClient => 'c',
        }
    }
}

/// A client connection, its upstream connection and their mode.
pub(super) struct Conn {
    pub(super) id: u64,
    peer: SocketAddr,
    client: TcpStream,
    server: TcpStream,
    state: Mutex<State>,
    /// Notified on mode changes and on close (wakes a pump waiting to deliver a close).
    changed: Condvar,
}

struct State {
    mode: Mode,
    closed: bool,
    to_server: LaneState,
    to_client: LaneState,
}

#[derive(Default)]
struct LaneState {
    held: Vec<u8>,
    forwarded: u64,
    dropped: u64,
}

impl State {
    fn lane(&mut self, lane: Lane) -> &mut LaneState {
        match lane {
            Lane::ToServer => &mut self.to_server,
            Lane::ToClient => &mut self.to_client,
        }
    }
}

impl LaneState {
    fn traffic(&self) -> Traffic {
        Traffic {
            forwarded: self.forwarded,
            held: self.held.len() as u64,
            dropped: self.dropped,
        }
    }
}

/// What a pump does next, decided under the lock.
enum Step {
    /// Write out bytes that were held.
    Deliver(Vec<u8>),
    /// Read more.
    Read,
    /// The sender closed and this lane does not pass yet: wait for a mode change.
    Wait,
    /// Stop and close the pair.
    Finish,
}

impl Conn {
    pub(super) fn new(
        id: u64,
        peer: SocketAddr,
        client: TcpStream,
        server: TcpStream,
        mode: Mode,
    ) -> io::Result<Self> {
        for socket in [&client, &server] {
            socket.set_nodelay(true)?;
            socket.set_read_timeout(Some(READ_TIMEOUT))?;
        }
        Ok(Self {
            id,
            peer,
            client,
            server,
            state: Mutex::new(State {
                mode,
                closed: false,
                to_server: LaneState::default(),
                to_client: LaneState::default(),
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn info(&self) -> ConnInfo {
        let state = self.lock();
        ConnInfo {
            id: self.id,
            peer: self.peer,
            upstream_local: self.server.local_addr().ok(),
            mode: state.mode,
            to_server: state.to_server.traffic(),
            to_client: state.to_client.traffic(),
        }
    }

    pub(super) fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
        self.changed.notify_all();
    }

    /// Closes both sockets (waking pumps blocked in a read or write) and
    /// discards held bytes. Idempotent.
    pub(super) fn close(&self) {
        {
            let mut state = self.lock();
            state.closed = true;
            state.to_server.held = Vec::new();
            state.to_client.held = Vec::new();
        }
        self.changed.notify_all();
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }

    /// The sending and the receiving socket of `lane`.
    fn ends(&self, lane: Lane) -> (&TcpStream, &TcpStream) {
        match lane {
            Lane::ToServer => (&self.client, &self.server),
            Lane::ToClient => (&self.server, &self.client),
        }
    }

    /// Copies `lane` until either side closes (and the close may pass), the
    /// pair is closed, or the proxy stops; then closes the pair.
    pub(super) fn pump(&self, lane: Lane, stopping: &AtomicBool) {
        let (mut from, mut to) = self.ends(lane);
        let mut buf = vec![0; CHUNK];
        // The sender closed (EOF or a read error): nothing more to read.
        let mut eof = false;
        loop {
            match self.next_step(lane, eof, stopping) {
                Step::Finish => break,
                Step::Wait => {}
                Step::Deliver(bytes) => {
                    if self.forward(lane, &mut to, &bytes).is_err() {
                        break;
                    }
                }
                Step::Read => match from.read(&mut buf) {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        let bytes = &buf[..n];
                        if self.take_in(lane, bytes) && self.forward(lane, &mut to, bytes).is_err() {
                            break;
                        }
                    }
                    Err(e) if is_timeout(&e) => {}
                    // A reset by the sender travels like a close.
                    Err(_) => eof = true,
                },
            }
        }
        self.close();
    }

    fn next_step(&self, lane: Lane, eof: bool, stopping: &AtomicBool) -> Step {
        let mut state = self.lock();
        if state.closed || stopping.load(Ordering::SeqCst) {
            return Step::Finish;
        }
        let passes = state.mode.action(lane) == Action::Pass;
        let held = &mut state.lane(lane).held;
        if passes && !held.is_empty() {
            return Step::Deliver(std::mem::take(held));
        }
        match (passes, eof) {
            (true, true) => Step::Finish,
            (false, true) => {
                // Bounded wait, so a stop without notification is noticed too.
                let _ = self.changed.wait_timeout(state, READ_TIMEOUT);
                Step::Wait
            }
            (_, false) => Step::Read,
        }
    }

    /// Accounts for bytes just read; returns whether to forward them now.
    /// Under [`Mode::Pass`] they are forwarded unless older bytes are still
    /// held (the mode changed during the read): then they queue behind those.
    fn take_in(&self, lane: Lane, bytes: &[u8]) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        let action = state.mode.action(lane);
        let lane = state.lane(lane);
        match action {
            Action::Pass if lane.held.is_empty() => return true,
            Action::Pass | Action::Hold => lane.held.extend_from_slice(bytes),
            Action::Drop => lane.dropped += bytes.len() as u64,
        }
        false
    }

    fn forward(&self, lane: Lane, to: &mut &TcpStream, bytes: &[u8]) -> io::Result<()> {
        to.write_all(bytes)?;
        self.lock().lane(lane).forwarded += bytes.len() as u64;
        Ok(())
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
