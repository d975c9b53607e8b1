//! Following a sentinel failover as it happens.
//!
//! fred 10.1 asks the sentinels for the master only when a connection is made (after a close,
//! or a `READONLY`/`LOADING`/`MASTERDOWN` reply); it does not follow `+switch-master`. After a
//! graceful `SENTINEL FAILOVER` the old master stays a writable master for seconds (the
//! sentinels reconfigure it only ≈ 10 s after the promotion), and every write the store sends
//! there meanwhile is acknowledged and then discarded by the old master's resync. So a
//! sentinel store runs a watcher (one task per store; it holds only a `Weak` and ends when the
//! store is dropped) that:
//!
//! * **subscribes** on every configured sentinel (their own credentials, `redis.sentinel.*`) to
//!   the failover events, and at the first sign that a failover of *our* master has started
//!   (`+elected-leader`, `+failover-state-*`, `+selected-slave`, `+promoted-slave`, … naming
//!   our master: each is published before the replica is told `SLAVEOF NO ONE`, at least one
//!   sentinel timer tick ahead) **pauses writes** ([`MasterView::paused`]: writes fail at once
//!   with `Error::Unavailable`, reads go on);
//! * on `+switch-master` naming our master, records the new master ([`MasterView::master`]):
//!   from then on a pooled connection is used (for reads and writes) only while it is connected
//!   to that server; every connection elsewhere is made again (`force_reconnection`, which
//!   asks the sentinels anew and checks `ROLE` is master), the fence forgets kills that target
//!   the old server (see `fence.rs`), and writes resume as soon as a pooled connection is on
//!   the new master;
//! * **polls** `SENTINEL MASTER <name>` on every configured sentinel every [`POLL_EVERY`]
//!   (more often while paused), a backstop in case pub/sub is down: a sentinel failing over
//!   (`failover_in_progress`) pauses writes too; the master named with the highest
//!   `config-epoch` (by sentinels not failing over) becomes ours when its epoch is higher than
//!   the one we follow (so a sentinel that has not switched yet never takes us back); a pause
//!   that no switch followed ends when the poll sees no failover in progress and our master
//!   still named. A user that may not run `SENTINEL MASTER` gets `GET-MASTER-ADDR-BY-NAME`
//!   instead, and a switch only when every answering sentinel (a majority) names the new one;
//! * **never pauses for ever**: a pause ends after the sentinels' `failover-timeout` (read by
//!   the poll; [`DEFAULT_BOUND`] until known, within [`MIN_BOUND`]..[`MAX_BOUND`]) even if no
//!   event or poll ended it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientInterface, ClientLike, EventInterface, PubsubInterface};
use fred::types::config::{Config as FredConfig, Options, Server, ServerConfig};
use fred::types::{ClusterHash, CustomCommand, Value};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::config::Built;
use crate::node::Node;
use crate::store::{Inner, Nodes};
use crate::BACKEND;

/// How often the watcher looks at its state (resume, connections to follow the master).
const TICK: Duration = Duration::from_millis(50);
/// How often the sentinels are polled while no failover is in progress.
pub(crate) const POLL_EVERY: Duration = Duration::from_secs(1);
/// How often they are polled while writes are paused.
const POLL_WHILE_PAUSED: Duration = Duration::from_millis(250);
/// The longest pause until a poll has read the sentinels' `failover-timeout`.
pub(crate) const DEFAULT_BOUND: Duration = Duration::from_secs(15);
/// Bounds of the pause, whatever `failover-timeout` says.
pub(crate) const MIN_BOUND: Duration = Duration::from_secs(2);
/// See [`MIN_BOUND`].
pub(crate) const MAX_BOUND: Duration = Duration::from_secs(60);

/// Events (channels) that say a failover of a master has started or is under way. Each names
/// the master (as `master NAME ip port`, or after `@` for a replica's event).
const STARTED: &[&str] = &[
    "+elected-leader",
    "+failover-state-select-slave",
    "+selected-slave",
    "+failover-state-send-slaveof-noone",
    "+failover-state-wait-promotion",
    "+promoted-slave",
    "+failover-state-reconf-slaves",
    "+failover-end",
    "+failover-end-for-timeout",
];
/// A failover that ended without a new master.
const ABORTED: &[&str] = &[
    "-failover-abort-not-elected",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
];
/// `NAME old-ip old-port new-ip new-port`.
const SWITCH: &str = "+switch-master";

/// What the store knows of a sentinel failover; shared by the node (which refuses writes and
/// avoids connections to a former master) and the watcher (which updates it).
#[derive(Default)]
pub(crate) struct MasterView {
    paused: AtomicBool,
    master: RwLock<Option<Server>>,
    /// Every connection of the node was last seen connected to `master`: the hot path's
    /// [`serves`](Self::serves) then answers without reading connection ids. Cleared when the
    /// master changes; set again by the watcher once it has checked every connection.
    settled: AtomicBool,
}

impl MasterView {
    /// A view knowing nothing yet: no pause, no master (every connection is used).
    pub(crate) fn new() -> Arc<MasterView> {
        Arc::new(MasterView::default())
    }

    /// Writes are refused: a failover of our master is in progress.
    #[inline]
    pub(crate) fn paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }

    /// The master the sentinels last named (`None` until the watcher has heard from them).
    pub(crate) fn master(&self) -> Option<Server> {
        self.master.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_master(&self, server: Server) {
        let mut master = self.master.write().unwrap_or_else(PoisonError::into_inner);
        if master.as_ref() != Some(&server) {
            self.settled.store(false, Ordering::Release);
        }
        *master = Some(server);
    }

    /// Whether `client` may be used: connected to the master the sentinels name (or no master
    /// known yet). A connection still on a former master would read stale sessions, and what
    /// it wrote would be discarded. Per call, so it reads connection ids only while some
    /// connection has not been seen on the current master (see `settled`).
    #[inline]
    pub(crate) fn serves(&self, client: &Client) -> bool {
        self.settled.load(Ordering::Acquire) || self.on_master(client)
    }

    /// Records whether every one of `clients` is connected to the master (the watcher's
    /// check, every tick).
    fn settle(&self, clients: &[Client]) {
        let all = clients.iter().all(|c| c.is_connected() && self.on_master(c));
        self.settled.store(all, Ordering::Release);
    }

    /// [`serves`](Self::serves) without the shortcut: `client`'s connection is to the master.
    fn on_master(&self, client: &Client) -> bool {
        let master = self.master.read().unwrap_or_else(PoisonError::into_inner);
        match &*master {
            None => true,
            Some(m) => client.connection_ids().contains_key(m),
        }
    }

    /// Whether `server` is no longer the master: the sentinels have switched to another one.
    pub(crate) fn superseded(&self, server: &Server) -> bool {
        self.master
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|m| m != server)
    }
}

/// An event about our master, from one sentinel.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Started(&'static str),
    Switched(Server),
    Aborted,
}

/// One sentinel's answer to the poll.
#[derive(Debug, Clone)]
struct Answer {
    master: Server,
    /// `config-epoch` (`None` from `GET-MASTER-ADDR-BY-NAME`).
    epoch: Option<u64>,
    in_progress: bool,
    failover_timeout: Option<Duration>,
}

/// Starts the watcher of a sentinel store (nothing for other topologies). Must run inside a
/// Tokio runtime; ends when the store is dropped.
pub(crate) fn spawn_watch(inner: &Arc<Inner>, built: &Built) {
    let ServerConfig::Sentinel {
        hosts,
        service_name,
        username,
        password,
    } = &built.fred.server
    else {
        return;
    };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let config_for = |server: &Server| FredConfig {
        server: ServerConfig::Centralized {
            server: server.clone(),
        },
        username: username.clone(),
        password: password.clone(),
        #[cfg(feature = "tls")]
        tls: built.fred.tls.clone(),
        fail_fast: false,
        ..FredConfig::default()
    };
    let mut connection = built.connection.clone();
    connection.reconnect_errors = Vec::new();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut handles: Vec<AbortHandle> = Vec::new();
    let mut subscribers = Vec::new();
    let mut pollers = Vec::new();
    for server in hosts {
        let sub = SubscriberClient::new(
            config_for(server),
            Some(built.perf.clone()),
            Some(connection.clone()),
            Some(built.policy.clone()),
        );
        handles.push(sub.connect().abort_handle());
        handles.push(sub.manage_subscriptions().abort_handle());
        handles.push(forward(&sub, service_name.clone(), tx.clone()));
        subscribers.push(sub);
        let poller = Client::new(
            config_for(server),
            Some(built.perf.clone()),
            Some(connection.clone()),
            Some(built.policy.clone()),
        );
        handles.push(poller.connect().abort_handle());
        pollers.push(poller);
    }
    drop(tx);
    let watch = Watch {
        inner: Arc::downgrade(inner),
        name: service_name.clone(),
        subscribers,
        pollers,
        timeout: built.timeout,
        connect_timeout: built.connect_timeout,
        epoch: None,
        paused_since: None,
        switching: false,
        bound: DEFAULT_BOUND,
        last_poll: None,
        reconnecting: Vec::new(),
    };
    rt.spawn(watch.run(rx, handles));
}

/// Forwards one sentinel's messages about `name` to the watcher; ends when the watcher or the
/// subscriber does.
fn forward(sub: &SubscriberClient, name: String, tx: mpsc::UnboundedSender<Event>) -> AbortHandle {
    let mut rx = sub.message_rx();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(message) => {
                    let Some(payload) = message.value.as_str() else {
                        continue;
                    };
                    if let Some(event) = parse_event(&message.channel, &payload, &name) {
                        if tx.send(event).is_err() {
                            return;
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
    .abort_handle()
}

/// The master name an event's payload is about: `master NAME ip port` for a master's event,
/// `… @ NAME ip port` for a replica's, `NAME …` for `+switch-master`.
fn event_master(channel: &str, payload: &str) -> Option<String> {
    let words: Vec<&str> = payload.split_whitespace().collect();
    if channel == SWITCH {
        return words.first().map(|w| (*w).to_owned());
    }
    if let Some(at) = words.iter().position(|w| *w == "@") {
        return words.get(at + 1).map(|w| (*w).to_owned());
    }
    match words.as_slice() {
        ["master", name, ..] => Some((*name).to_owned()),
        _ => None,
    }
}

fn parse_event(channel: &str, payload: &str, name: &str) -> Option<Event> {
    if event_master(channel, payload).as_deref() != Some(name) {
        return None;
    }
    if channel == SWITCH {
        let words: Vec<&str> = payload.split_whitespace().collect();
        let (host, port) = (words.get(3)?, words.get(4)?.parse::<u16>().ok()?);
        return Some(Event::Switched(Server::new(*host, port)));
    }
    if let Some(started) = STARTED.iter().find(|c| **c == channel) {
        return Some(Event::Started(started));
    }
    ABORTED.contains(&channel).then_some(Event::Aborted)
}

struct Watch {
    inner: Weak<Inner>,
    name: String,
    subscribers: Vec<SubscriberClient>,
    pollers: Vec<Client>,
    timeout: Duration,
    connect_timeout: Duration,
    /// `config-epoch` of the master we follow, when known.
    epoch: Option<u64>,
    paused_since: Option<Instant>,
    /// A switch was seen; writes resume once a pooled connection is on the new master.
    switching: bool,
    bound: Duration,
    last_poll: Option<Instant>,
    /// Per client of the node (pooled, then control): a forced reconnection is running.
    reconnecting: Vec<Arc<AtomicBool>>,
}

impl Watch {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>, handles: Vec<AbortHandle>) {
        let subscribing: Vec<Arc<AtomicBool>> = self
            .subscribers
            .iter()
            .map(|_| Arc::new(AtomicBool::new(false)))
            .collect();
        let mut events_open = true;
        loop {
            let event = if events_open {
                tokio::select! {
                    e = rx.recv() => {
                        if e.is_none() {
                            events_open = false;
                        }
                        e
                    }
                    () = tokio::time::sleep(TICK) => None,
                }
            } else {
                tokio::time::sleep(TICK).await;
                None
            };
            let Some(inner) = self.inner.upgrade() else { break };
            let Nodes::One(node) = &inner.nodes else { break };
            let Some(view) = node.view.clone() else { break };
            if let Some(event) = event {
                self.on_event(event, node, &view);
            }
            let every = if view.paused() {
                POLL_WHILE_PAUSED
            } else {
                POLL_EVERY
            };
            if self.last_poll.is_none_or(|t| t.elapsed() >= every) {
                self.poll(node, &view).await;
            }
            self.tick(node, &view);
            drop(inner);
            self.subscribe(&subscribing);
        }
        for h in handles {
            h.abort();
        }
        for sub in &self.subscribers {
            let _ = sub.quit().await;
        }
        for p in &self.pollers {
            let _ = p.quit().await;
        }
    }

    /// Subscribes every connected sentinel that has not confirmed its subscriptions yet (the
    /// subscriber client subscribes again by itself after a reconnection, once it has).
    fn subscribe(&self, busy: &[Arc<AtomicBool>]) {
        let wanted = STARTED.len() + ABORTED.len() + 1;
        for (sub, busy) in self.subscribers.iter().zip(busy) {
            if !sub.is_connected()
                || sub.tracked_channels().len() >= wanted
                || busy.swap(true, Ordering::AcqRel)
            {
                continue;
            }
            let (sub, busy) = (sub.clone(), Arc::clone(busy));
            let channels: Vec<String> = STARTED
                .iter()
                .chain(ABORTED.iter())
                .chain(std::iter::once(&SWITCH))
                .map(|c| (*c).to_owned())
                .collect();
            tokio::spawn(async move {
                if let Err(e) = sub.subscribe(channels).await {
                    tracing::debug!(backend = BACKEND, error = %e, "redis: subscribing to sentinel events failed");
                }
                busy.store(false, Ordering::Release);
            });
        }
    }

    fn pause(&mut self, view: &MasterView, why: &str) {
        if !view.paused() {
            view.set_paused(true);
            self.paused_since = Some(Instant::now());
            tracing::info!(
                backend = BACKEND,
                event = why,
                "redis: a sentinel failover of the master has started; writes are paused until the store \
                 is connected to the new master (reads go on)"
            );
        }
    }

    fn resume(&mut self, view: &MasterView, why: &'static str) {
        if view.paused() {
            let paused_ms = self.paused_since.map_or(0, |t| t.elapsed().as_millis() as u64);
            view.set_paused(false);
            tracing::info!(backend = BACKEND, paused_ms, why, "redis: writes resume");
        }
        self.paused_since = None;
        self.switching = false;
    }

    fn on_event(&mut self, event: Event, node: &Node, view: &MasterView) {
        match event {
            Event::Started(why) => self.pause(view, why),
            Event::Switched(new) => self.switch(new, None, node, view),
            // The poll tells whether our master is still the one.
            Event::Aborted => self.last_poll = None,
        }
    }

    /// The sentinels named `new` (with `epoch`, when known): follow it.
    fn switch(&mut self, new: Server, epoch: Option<u64>, node: &Node, view: &MasterView) {
        if view.master().as_ref() == Some(&new) {
            // Every sentinel announces the same switch.
            if epoch.is_some() {
                self.epoch = epoch;
            }
            return;
        }
        // A switch means a higher epoch than the one followed.
        self.epoch = epoch.or(self.epoch.map(|e| e + 1));
        let first = view.master().is_none();
        view.set_master(new);
        if first {
            return;
        }
        // Writes wait for a pooled connection on the new master (fred may already have made
        // one through a sentinel that switched first).
        self.switching = true;
        if !node.conns.iter().any(|c| c.is_connected() && view.on_master(c)) {
            self.pause(view, SWITCH);
        }
        tracing::info!(
            backend = BACKEND,
            "redis: the sentinels switched the master; the store follows it"
        );
        node.fence.settle_superseded();
        self.follow(node, view);
    }

    /// Makes every connection of the node that is up on another server than the master
    /// connect again (through the sentinels), one reconnection per client at a time.
    fn follow(&mut self, node: &Node, view: &MasterView) {
        let clients = node.all_clients();
        while self.reconnecting.len() < clients.len() {
            self.reconnecting.push(Arc::new(AtomicBool::new(false)));
        }
        for (client, busy) in clients.into_iter().zip(&self.reconnecting) {
            if !client.is_connected() || view.on_master(&client) || busy.swap(true, Ordering::AcqRel) {
                continue;
            }
            let busy = Arc::clone(busy);
            let limit = self.connect_timeout * 2;
            tokio::spawn(async move {
                let _ = tokio::time::timeout(limit, client.force_reconnection()).await;
                busy.store(false, Ordering::Release);
            });
        }
    }

    fn tick(&mut self, node: &Node, view: &MasterView) {
        if view.master().is_some() {
            self.follow(node, view);
            view.settle(&node.all_clients());
        }
        if !view.paused() {
            self.switching = false;
            return;
        }
        if self.switching && node.conns.iter().any(|c| c.is_connected() && view.on_master(c)) {
            self.resume(view, "connected to the new master");
            return;
        }
        if self.paused_since.is_some_and(|t| t.elapsed() >= self.bound) {
            tracing::warn!(
                backend = BACKEND,
                bound_ms = self.bound.as_millis() as u64,
                "redis: no end of the sentinel failover was seen within the failover timeout; writes resume"
            );
            self.resume(view, "failover timeout");
        }
    }

    async fn poll(&mut self, node: &Node, view: &MasterView) {
        let started = Instant::now();
        self.last_poll = Some(started);
        let answers: Vec<Answer> = futures::future::join_all(self.pollers.iter().map(|p| self.ask(p)))
            .await
            .into_iter()
            .flatten()
            .collect();
        if answers.is_empty() {
            return;
        }
        if let Some(t) = answers.iter().filter_map(|a| a.failover_timeout).min() {
            self.bound = t.clamp(MIN_BOUND, MAX_BOUND);
        }
        let in_progress = answers.iter().any(|a| a.in_progress);
        if in_progress {
            self.pause(view, "failover_in_progress");
        }
        let Some((best, epoch)) = choose(&answers, self.pollers.len()) else {
            return;
        };
        match view.master() {
            None => {
                self.epoch = epoch;
                view.set_master(best);
            }
            Some(m) if m == best => {
                if epoch.is_some() {
                    self.epoch = epoch;
                }
                let quiet = !in_progress && !self.switching;
                if quiet && view.paused() && self.paused_since.is_some_and(|t| t < started) {
                    self.resume(view, "the failover ended without a new master");
                }
            }
            Some(_) => {
                let newer = match (epoch, self.epoch) {
                    (Some(e), Some(ours)) => e > ours,
                    // Without epochs `choose` asks for every answering sentinel to agree.
                    (None, _) => true,
                    (Some(_), None) => false,
                };
                if newer {
                    self.switch(best, epoch, node, view);
                }
            }
        }
    }

    /// One sentinel's view of our master: `SENTINEL MASTER`, or `GET-MASTER-ADDR-BY-NAME`
    /// when that is refused.
    async fn ask(&self, sentinel: &Client) -> Option<Answer> {
        if !sentinel.is_connected() {
            return None;
        }
        let on = sentinel.with_options(&Options {
            timeout: Some(self.timeout),
            fail_fast: true,
            ..Options::default()
        });
        let cmd = || CustomCommand::new_static("SENTINEL", ClusterHash::Custom(0), false);
        let master = on
            .custom::<Value, Value>(
                cmd(),
                vec![Value::from("MASTER"), Value::from(self.name.as_str())],
            )
            .await;
        match master {
            Ok(reply) => parse_master(&reply),
            Err(e) if e.details().starts_with("ERR") || e.details().starts_with("NOPERM") => {
                let args = vec![
                    Value::from("GET-MASTER-ADDR-BY-NAME"),
                    Value::from(self.name.as_str()),
                ];
                let reply = on.custom::<Value, Value>(cmd(), args).await.ok()?;
                let items = match reply {
                    Value::Array(items) => items,
                    _ => return None,
                };
                let host = items.first()?.as_str()?.into_owned();
                let port = items.get(1)?.as_str()?.parse::<u16>().ok()?;
                Some(Answer {
                    master: Server::new(host, port),
                    epoch: None,
                    in_progress: false,
                    failover_timeout: None,
                })
            }
            Err(_) => None,
        }
    }
}

/// `SENTINEL MASTER`'s field list (RESP2: name, value, name, value, …).
fn parse_master(reply: &Value) -> Option<Answer> {
    let pairs: Vec<(String, String)> = match reply {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|pair| {
                Some((
                    pair.first()?.as_str()?.into_owned(),
                    pair.get(1)?.as_str()?.into_owned(),
                ))
            })
            .collect(),
        _ => return None,
    };
    let field = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let port = field("port")?.parse::<u16>().ok()?;
    Some(Answer {
        master: Server::new(field("ip")?.to_owned(), port),
        epoch: field("config-epoch").and_then(|e| e.parse().ok()),
        in_progress: field("flags").is_some_and(|f| f.split(',').any(|f| f == "failover_in_progress")),
        failover_timeout: field("failover-timeout")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_millis),
    })
}

/// The master the sentinels name: with epochs, the one named with the highest `config-epoch`
/// by the sentinels not failing over (if they agree at that epoch); without, the one every
/// answering sentinel names, if they are a majority of `configured`.
fn choose(answers: &[Answer], configured: usize) -> Option<(Server, Option<u64>)> {
    if answers.iter().all(|a| a.epoch.is_some()) {
        let settled: Vec<&Answer> = answers.iter().filter(|a| !a.in_progress).collect();
        let top = settled.iter().filter_map(|a| a.epoch).max()?;
        let mut at_top = settled.iter().filter(|a| a.epoch == Some(top));
        let first = at_top.next()?;
        return at_top
            .all(|a| a.master == first.master)
            .then(|| (first.master.clone(), Some(top)));
    }
    let first = answers.first()?;
    (answers.len() * 2 > configured && answers.iter().all(|a| a.master == first.master))
        .then(|| (first.master.clone(), None))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn events_name_their_master() {
        let name = "mymaster";
        assert_eq!(
            parse_event("+switch-master", "mymaster 127.0.0.1 6379 127.0.0.1 6380", name),
            Some(Event::Switched(Server::new("127.0.0.1", 6380)))
        );
        assert_eq!(
            parse_event("+switch-master", "other 127.0.0.1 6379 127.0.0.1 6380", name),
            None
        );
        assert_eq!(
            parse_event(
                "+failover-state-send-slaveof-noone",
                "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379",
                name
            ),
            Some(Event::Started("+failover-state-send-slaveof-noone"))
        );
        assert_eq!(
            parse_event("+elected-leader", "master mymaster 127.0.0.1 6379", name),
            Some(Event::Started("+elected-leader"))
        );
        assert_eq!(
            parse_event("+elected-leader", "master mymaster2 127.0.0.1 6379", name),
            None
        );
        assert_eq!(
            parse_event(
                "-failover-abort-not-elected",
                "master mymaster 127.0.0.1 6379",
                name
            ),
            Some(Event::Aborted)
        );
        assert_eq!(
            parse_event("+sdown", "master mymaster 127.0.0.1 6379", name),
            None
        );
    }

    fn answer(port: u16, epoch: Option<u64>, in_progress: bool) -> Answer {
        Answer {
            master: Server::new("127.0.0.1", port),
            epoch,
            in_progress,
            failover_timeout: None,
        }
    }

    #[test]
    fn the_highest_epoch_names_the_master() {
        // The leader has switched, the others not yet: the leader's answer wins.
        let a = [
            answer(6380, Some(2), false),
            answer(6379, Some(1), false),
            answer(6379, Some(1), false),
        ];
        assert_eq!(choose(&a, 3), Some((Server::new("127.0.0.1", 6380), Some(2))));
        // The leader, mid-failover, still shows the old address at the new epoch: ignored.
        let a = [answer(6379, Some(2), true), answer(6379, Some(1), false)];
        assert_eq!(choose(&a, 3), Some((Server::new("127.0.0.1", 6379), Some(1))));
        // Disagreement at the top epoch: no answer.
        let a = [answer(6379, Some(2), false), answer(6380, Some(2), false)];
        assert_eq!(choose(&a, 3), None);
        // Without epochs every answer must agree, and a majority answer.
        let a = [answer(6380, None, false), answer(6380, None, false)];
        assert_eq!(choose(&a, 3), Some((Server::new("127.0.0.1", 6380), None)));
        assert_eq!(choose(&a[..1], 3), None);
        let a = [answer(6380, None, false), answer(6379, None, false)];
        assert_eq!(choose(&a, 3), None);
    }

    #[test]
    fn parses_sentinel_master() {
        let fields = [
            "name",
            "mymaster",
            "ip",
            "127.0.0.1",
            "port",
            "6380",
            "flags",
            "master,failover_in_progress",
            "config-epoch",
            "3",
            "failover-timeout",
            "5000",
        ];
        let reply = Value::Array(fields.iter().map(|f| Value::from(*f)).collect());
        let a = parse_master(&reply).unwrap();
        assert_eq!(a.master, Server::new("127.0.0.1", 6380));
        assert_eq!(a.epoch, Some(3));
        assert!(a.in_progress);
        assert_eq!(a.failover_timeout, Some(Duration::from_millis(5000)));
    }

    #[test]
    fn a_view_follows_its_master() {
        let view = MasterView::new();
        let old = Server::new("127.0.0.1", 6379);
        assert!(!view.superseded(&old), "no master known: nothing superseded");
        view.set_master(old.clone());
        assert!(!view.superseded(&old));
        view.set_master(Server::new("127.0.0.1", 6380));
        assert!(view.superseded(&old));
    }
}
