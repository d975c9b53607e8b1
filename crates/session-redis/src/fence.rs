//! Fencing: a write the store gave up on can never land afterwards.
//!
//! A command that timed out (or whose connection broke) may still be on its
//! way: held in a socket buffer, a retransmit queue or a stalled server's
//! input. If it ran later it would overwrite a newer value or revive a
//! deleted session. Redis runs nothing of a connection it has closed, and
//! `CLIENT KILL ID n` returns only once connection `n` is closed. So before
//! the store reports such a write, it kills the connection the write went out
//! on — from a separate control connection — and waits for the answer:
//!
//! * **killed** (or already gone): the write ran before the kill or never
//!   will; the store reports `Timeout` (or `Unavailable`) and the outcome,
//!   though unknown, is final. The pooled client reconnects by itself (once fred
//!   sees the close, or its unresponsive check fires) and is
//!   used again once it has a new connection.
//! * **not confirmed** (Redis unreachable on the control connection too): the
//!   connection is recorded as pending and every later *write* of this store
//!   fails fast with `Unavailable` until a background task has killed it, so
//!   nothing this store writes afterwards — a retry, a fallback's replay — can
//!   be overwritten by the old write. Reads go on.
//!
//! A caller that drops a write's future midway (a fallback's own deadline,
//! say) gets the same treatment from a drop guard.
//!
//! The kill goes to the server the write was sent to (a cluster store has a
//! fence per primary, each on that node's connections).
//!
//! **Sentinel: a kill on a former master is settled by the switch.** When the
//! store's watcher (`sentinel.rs`) has seen the sentinels switch to a new
//! master M, a pending kill of a connection on another server X is dropped
//! instead of retried (X may be dead, or cut off, and would keep writes
//! paused on M for nothing). Why nothing X runs later can be seen:
//!
//! * the switch follows M's promotion (`SLAVEOF NO ONE`; the sentinels
//!   announce `+switch-master` only after M reports itself a master). From
//!   that instant M no longer applies X's replication stream, so whatever X
//!   runs afterwards never reaches M; what X ran before reached M before the
//!   switch; so what X ran before it either reached M before the store
//!   reports the write's error or never will;
//! * X itself keeps nothing it takes after the promotion: the sentinels make
//!   it a replica of M (closing its clients: `CLIENT KILL TYPE normal` is part
//!   of their reconfiguration), and its resync replaces its data set by M's,
//!   so a held write that runs on X meanwhile is discarded with it; a
//!   restarted X has no connection from before;
//! * the store itself sends nothing more to X: after the switch it uses only
//!   connections that are on M (`MasterView::serves`), for reads and writes.
//!
//! This applies only to a server the sentinels have replaced
//! (`MasterView::superseded`): a kill on the current master — or on any
//! server while no switch has been seen, and always on standalone and cluster
//! nodes — is retried until Redis confirms it, as before. Likewise, when the
//! control connection reconnects and lands on another server than the
//! target's, the kill is settled only if that server is superseded; otherwise
//! it is retried (the control may have reached a former master through a
//! sentinel that has not switched yet).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use fred::clients::{Client, WithOptions};
use fred::error::{Error as FredError, ErrorKind as FredKind};
use fred::interfaces::{ClientLike, EventInterface};
use fred::prelude::ClientInterface;
use fred::types::config::{Options, Server};
use fred::types::{ClusterHash, CustomCommand, Value};

use crate::sentinel::MasterView;
use crate::BACKEND;

/// How often the background task retries kills that could not be confirmed.
const SETTLE_EVERY: Duration = Duration::from_millis(50);

/// One connection to close: which pooled client, on which server, with which `CLIENT ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    conn: usize,
    server: Server,
    id: i64,
}

/// The fencing state of one store.
pub(crate) struct Fence {
    /// The pooled data clients, by index.
    clients: Vec<Client>,
    /// The connection kills (and health checks) are sent on.
    control: WithOptions<Client>,
    timeout: Duration,
    /// Per pooled client: not to be used until it has a connection other than those killed.
    quarantined: Vec<AtomicBool>,
    /// Per pooled client: (re)connections seen, from fred's reconnect notifications.
    generations: Arc<[AtomicU64]>,
    /// Per pooled client: its generation when it was last quarantined.
    quarantined_at: Vec<AtomicU64>,
    killed: Mutex<Vec<Target>>,
    /// Kills not yet confirmed; writes are refused while any is.
    pending: Mutex<Vec<Target>>,
    pending_len: AtomicUsize,
    /// Fences started by a drop guard and still running.
    in_progress: AtomicUsize,
    settling: AtomicBool,
    /// Connections closed by a fence, since start.
    pub(crate) fenced: AtomicU64,
    /// Sentinel only: which master the sentinels name (a kill on a replaced one is settled).
    view: Option<Arc<MasterView>>,
    me: Weak<Fence>,
}

impl Fence {
    pub(crate) fn new(
        clients: Vec<Client>,
        control: WithOptions<Client>,
        timeout: Duration,
        view: Option<Arc<MasterView>>,
    ) -> Arc<Fence> {
        let n = clients.len();
        let generations: Arc<[AtomicU64]> = (0..n).map(|_| AtomicU64::new(0)).collect();
        watch_reconnects(&clients, &generations);
        Arc::new_cyclic(|me| Fence {
            clients,
            control,
            timeout,
            quarantined: (0..n).map(|_| AtomicBool::new(false)).collect(),
            generations,
            quarantined_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
            killed: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            pending_len: AtomicUsize::new(0),
            in_progress: AtomicUsize::new(0),
            settling: AtomicBool::new(false),
            fenced: AtomicU64::new(0),
            view,
            me: me.clone(),
        })
    }

    /// The control connection (health checks use it too).
    pub(crate) fn control(&self) -> &WithOptions<Client> {
        &self.control
    }

    /// Writes may be sent: no kill is waiting for confirmation.
    #[inline]
    pub(crate) fn writable(&self) -> bool {
        self.pending() == 0
    }

    /// Kills waiting for confirmation (or started in the background and not finished).
    pub(crate) fn pending(&self) -> usize {
        self.pending_len.load(Ordering::Acquire) + self.in_progress.load(Ordering::Acquire)
    }

    /// Whether pooled client `i` may be used: not quarantined, or reconnected since its fence.
    #[inline]
    pub(crate) fn usable(&self, i: usize) -> bool {
        match self.quarantined.get(i) {
            Some(q) if q.load(Ordering::Acquire) => self.release_if_reconnected(i),
            _ => true,
        }
    }

    /// A quarantined client is released once fred has reconnected it since the fence, or
    /// once none of its current connections is one that was killed. (Connection ids restart
    /// with a restarted server, so a reconnect counts even when an id repeats.) Releasing
    /// early costs at most a failed write: a killed connection runs nothing.
    fn release_if_reconnected(&self, i: usize) -> bool {
        let Some(client) = self.clients.get(i) else {
            return false;
        };
        if !client.is_connected() {
            return false;
        }
        let ids = client.connection_ids();
        if ids.is_empty() {
            return false;
        }
        let reconnected = match (self.generations.get(i), self.quarantined_at.get(i)) {
            (Some(now), Some(at)) => now.load(Ordering::Acquire) != at.load(Ordering::Acquire),
            _ => false,
        };
        let mut killed = self.killed.lock().unwrap_or_else(PoisonError::into_inner);
        let stale = killed
            .iter()
            .any(|t| t.conn == i && ids.get(&t.server) == Some(&t.id));
        if stale && !reconnected {
            return false;
        }
        killed.retain(|t| t.conn != i);
        drop(killed);
        if let Some(q) = self.quarantined.get(i) {
            q.store(false, Ordering::Release);
        }
        true
    }

    /// Arms a guard for a write about to be sent on pooled client `i`.
    #[inline]
    pub(crate) fn arm(&self, i: usize) -> Armed {
        let ids = self
            .clients
            .get(i)
            .map(|c| c.connection_ids())
            .unwrap_or_default();
        Armed {
            fence: self.me.clone(),
            conn: i,
            ids,
            done: false,
        }
    }

    /// Closes every connection of pooled client `conn` named in `sent` (the ids when the
    /// command was sent) or current now. True once Redis confirmed each is closed.
    async fn close(&self, conn: usize, sent: &HashMap<Server, i64>) -> bool {
        let Some(client) = self.clients.get(conn) else {
            return true;
        };
        if let (Some(at), Some(now)) = (self.quarantined_at.get(conn), self.generations.get(conn)) {
            at.store(now.load(Ordering::Acquire), Ordering::Release);
        }
        if let Some(q) = self.quarantined.get(conn) {
            q.store(true, Ordering::Release);
        }
        let mut targets: Vec<Target> = Vec::new();
        for (server, id) in sent.iter().chain(client.connection_ids().iter()) {
            let t = Target {
                conn,
                server: server.clone(),
                id: *id,
            };
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        self.killed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(targets.iter().cloned());
        let mut all = true;
        for t in targets {
            if !self.kill(&t).await {
                all = false;
                self.add_pending(t);
            }
        }
        all
    }

    fn add_pending(&self, t: Target) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if !pending.contains(&t) {
            pending.push(t);
        }
        self.pending_len.store(pending.len(), Ordering::Release);
        drop(pending);
        tracing::warn!(
            backend = BACKEND,
            "redis: a connection with a write in flight could not be closed yet; writes are refused until \
             Redis confirms it is closed"
        );
        self.ensure_settler();
    }

    /// Runs [`close`](Self::close) in a task that outlives the caller; writes are refused until
    /// it is done. `None` outside a Tokio runtime.
    fn spawn_close(&self, conn: usize, ids: HashMap<Server, i64>) -> Option<tokio::task::JoinHandle<bool>> {
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let fence = self.me.upgrade()?;
        fence.in_progress.fetch_add(1, Ordering::AcqRel);
        // Counted down by a guard: a task dropped unfinished (its runtime shut down) must not
        // leave writes refused for good.
        let running = InProgress(Arc::clone(&fence));
        Some(rt.spawn(async move {
            let ok = running.0.close(conn, &ids).await;
            drop(running);
            ok
        }))
    }

    /// `CLIENT KILL ID n` on the target's server. True when Redis answered (killed, or no
    /// such client: closed already).
    async fn kill(&self, t: &Target) -> bool {
        if self.superseded(&t.server) {
            // A server the sentinels have replaced: see the module docs.
            self.settled_by_switch(t);
            return true;
        }
        let control: &Client = &self.control;
        if !control.connection_ids().contains_key(&t.server) {
            // The control connection is on another server than the write (a sentinel
            // failover, seen by one client before the other). Ask the sentinels again (a
            // reconnection resolves the master anew): if the control then lands on the
            // write's server, kill there.
            let again = control.force_reconnection();
            if !matches!(tokio::time::timeout(self.timeout, again).await, Ok(Ok(()))) {
                return false;
            }
            let ids = control.connection_ids();
            if ids.is_empty() || !control.is_connected() {
                return false;
            }
            if !ids.contains_key(&t.server) {
                if self.view.is_none() {
                    // Standalone: the one configured server, reached under another name.
                    return true;
                }
                // Sentinel: settled only once the switch away from the write's server is
                // known; until then the control may be on a former master (a sentinel that
                // has not switched yet), and the write's server the real one.
                if self.superseded(&t.server) {
                    self.settled_by_switch(t);
                    return true;
                }
                return false;
            }
        }
        let on = control.with_options(&Options {
            timeout: Some(self.timeout),
            fail_fast: true,
            ..Options::default()
        });
        let cmd = CustomCommand::new_static("CLIENT", ClusterHash::Custom(0), false);
        let args = vec![Value::from("KILL"), Value::from("ID"), Value::Integer(t.id)];
        let answered = match on.custom::<Value, Value>(cmd, args).await {
            Ok(_) => true,
            Err(e) if is_no_such_client(&e) => true,
            Err(e) => {
                if outcome_unknown(&e) {
                    // The control connection may be the stuck one: replace it. What fred re-sends
                    // on it (kills, pings) is harmless to repeat.
                    let control: Client = (*self.control).clone();
                    tokio::spawn(async move {
                        let _ = control.force_reconnection().await;
                    });
                }
                false
            }
        };
        if answered {
            self.fenced.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(backend = BACKEND, client_id = t.id, "redis: fenced a connection");
        }
        answered
    }

    /// Whether `server` is a master the sentinels have replaced (never on standalone or
    /// cluster nodes, and never before a switch has been seen).
    fn superseded(&self, server: &Server) -> bool {
        self.view.as_ref().is_some_and(|v| v.superseded(server))
    }

    fn settled_by_switch(&self, t: &Target) {
        tracing::debug!(
            backend = BACKEND,
            client_id = t.id,
            "redis: a connection on a replaced master needs no kill (the sentinels switched the master)"
        );
    }

    /// After a sentinel switch: drops every pending kill of a connection on a server other
    /// than the new master (see the module docs), so writes on the new master do not wait for
    /// a server that is gone or replaced. Kills on the new master stay pending.
    pub(crate) fn settle_superseded(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let before = pending.len();
        pending.retain(|t| !self.superseded(&t.server));
        self.pending_len.store(pending.len(), Ordering::Release);
        let settled = before - pending.len();
        let left = pending.len();
        drop(pending);
        if settled > 0 {
            tracing::info!(
                backend = BACKEND,
                settled,
                left,
                "redis: connections on the replaced master need no kill; writes wait only for the new master's"
            );
        }
    }

    fn ensure_settler(&self) {
        if self.settling.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.settling.store(false, Ordering::Release);
            return;
        };
        let me = self.me.clone();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(SETTLE_EVERY).await;
                let Some(fence) = me.upgrade() else { return };
                if fence.settle().await {
                    fence.settling.store(false, Ordering::Release);
                    // Pending added between the last look and the flag: go on.
                    if fence.writable() || fence.settling.swap(true, Ordering::AcqRel) {
                        return;
                    }
                }
            }
        });
    }

    /// Retries every pending kill once; true when none is left.
    async fn settle(&self) -> bool {
        let todo: Vec<Target> = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for t in todo {
            if self.kill(&t).await {
                let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                pending.retain(|p| p != &t);
                self.pending_len.store(pending.len(), Ordering::Release);
            }
        }
        let left = self.pending_len.load(Ordering::Acquire);
        if left == 0 {
            tracing::info!(
                backend = BACKEND,
                "redis: every abandoned connection is closed; writes resume"
            );
        }
        left == 0
    }
}

/// One running background fence; counts itself out of `in_progress` when it ends or is dropped.
struct InProgress(Arc<Fence>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts each pooled client's (re)connections, from fred's reconnect notifications. Each
/// listener ends with its client (the notification channel closes).
fn watch_reconnects(clients: &[Client], generations: &Arc<[AtomicU64]>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    for (i, client) in clients.iter().enumerate() {
        let mut rx = client.reconnect_rx();
        let generations = Arc::downgrade(generations);
        rt.spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let Some(generations) = generations.upgrade() else {
                            return;
                        };
                        if let Some(g) = generations.get(i) {
                            g.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

/// Whether Redis answered a `CLIENT KILL` with "no such client" (older syntax).
fn is_no_such_client(e: &FredError) -> bool {
    e.details().to_ascii_lowercase().contains("no such client")
}

/// Whether a failed command may still run on the server: it was (or may have been) written
/// and its connection is in an unknown state.
pub(crate) fn outcome_unknown(e: &FredError) -> bool {
    match e.kind() {
        FredKind::Timeout | FredKind::IO => true,
        // Not sent: the fail-fast check refused it while disconnected.
        FredKind::Canceled => false,
        FredKind::Routing | FredKind::Unknown => {
            let d = e.details();
            d.starts_with("Too many failed write attempts")
                || d.starts_with("Max attempts")
                || d.starts_with("Too many redirections")
        }
        _ => false,
    }
}

/// A write in flight on one pooled client. Disarm it when the outcome is known; fire it when
/// it is not; dropping it armed (the caller gave up) fences in the background.
pub(crate) struct Armed {
    fence: Weak<Fence>,
    conn: usize,
    ids: HashMap<Server, i64>,
    done: bool,
}

impl Armed {
    /// Whether the connection's `CLIENT ID` is unknown, so that a write sent on it could not
    /// be fenced (fred reads the id when it connects; an ACL without `+client|id` hides it).
    #[inline]
    pub(crate) fn is_blind(&self) -> bool {
        self.ids.is_empty()
    }

    /// The outcome is known (answered, or refused before sending).
    #[inline]
    pub(crate) fn disarm(mut self) {
        self.done = true;
    }

    /// The outcome is unknown: close the connection before the error is reported. True when
    /// Redis confirmed it (the write can no longer land).
    pub(crate) async fn fire(mut self) -> bool {
        self.done = true;
        let Some(fence) = self.fence.upgrade() else {
            return true;
        };
        // In a task of its own: if the caller stops waiting (a fallback's deadline), the fence
        // still completes, and writes wait for it meanwhile.
        match fence.spawn_close(self.conn, std::mem::take(&mut self.ids)) {
            Some(task) => task.await.unwrap_or(false),
            None => fence.close(self.conn, &self.ids).await,
        }
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Some(fence) = self.fence.upgrade() else { return };
        // Outside a runtime nothing can be sent; the connection task is gone with it.
        let _ = fence.spawn_close(self.conn, std::mem::take(&mut self.ids));
    }
}
