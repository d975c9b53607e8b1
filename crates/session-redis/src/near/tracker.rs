//! The invalidation stream of one Redis primary, kept whole or declared broken.
//!
//! A tracker owns RESP2 connections to its primary: a *listener* and `redis.pool_size`
//! *readers*. The *listener* runs `CLIENT ID` and
//! `SUBSCRIBE __redis__:invalidate`; each *reader* runs `CLIENT TRACKING ON REDIRECT <listener
//! id>` and carries every `GET` whose reply the cache may keep. Redis then remembers each key
//! the reader read and, when any client writes, deletes or expires it (or it is evicted),
//! sends the key to the listener, once; `FLUSHALL`/`FLUSHDB` arrive as an empty key list.
//! Writes to keys this process never read cost Redis nothing. (fred's RESP3 push path drops
//! the flush message, hence RESP2 and a redirect.)
//!
//! The tracker counts as ready from the moment both are set up until it can no longer be sure
//! it hears everything: either connection fails, a heartbeat `PING` on the listener is not
//! answered within `max_stale`, its server is no longer the primary (a failover: `ROLE` on the
//! node's control connection, or the master the sentinels name), or it fell behind the stream.
//! Then all its connections are dropped together (Redis forgets the readers' keys with them)
//! and new ones are made; the cache serves only while every tracker of the store is ready and its
//! lease runs (see [`NearCache`]).
//!
//! A `PONG` on the listener follows every invalidation Redis queued on it before (Redis writes
//! an invalidation to the listener while it runs the write, before the write's reply), and
//! fred hands both over in order, so "ping, then drain what arrived" confirms that every write
//! acknowledged before the ping was sent has been applied ([`Syncer::sync`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientInterface, ClientLike, EventInterface, PubsubInterface, TrackingInterface};
use fred::types::client::Invalidation;
use fred::types::config::{Config as FredConfig, ConnectionConfig, PerformanceConfig, Server, ServerConfig};
use fred::types::{ConnectHandle, CustomCommand, Value};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::cache::NearCache;
use crate::sentinel::MasterView;
use crate::BACKEND;

/// The channel Redis sends invalidations on in RESP2.
const INVALIDATE_CHANNEL: &str = "__redis__:invalidate";
/// The listener's `CLIENT SETNAME`.
pub(crate) const LISTENER_NAME: &str = "session-near-cache";
/// The reader's `CLIENT SETNAME`.
pub(crate) const READER_NAME: &str = "session-near-cache-reader";
/// Invalidation messages fred may buffer for the tracker before it counts as behind.
const STREAM_CAPACITY: usize = 4096;

/// Where a tracker connects.
#[derive(Clone)]
pub(crate) enum Target {
    /// A fixed server: a standalone server (no check), or a cluster primary, whose role is
    /// checked with `ROLE` on `control` (the node's own connection to the same server).
    Fixed { server: Server, control: Option<Client> },
    /// The master the sentinels name (the store's watcher keeps `view`), else the server the
    /// node's `control` connection is on.
    Sentinel { view: Arc<MasterView>, control: Client },
}

/// The settings a tracker connects with.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) fred: FredConfig,
    pub(crate) connection: ConnectionConfig,
    /// Reading connections (the store's `redis.pool_size`).
    pub(crate) readers: usize,
    /// The store's per-command timeout, for the readers' `GET`s.
    pub(crate) timeout: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) max_stale: Duration,
}

/// Whether the tracker is ready, and whether it has been dropped (then the task's late
/// transitions are ignored).
struct Flags {
    ready: bool,
    removed: bool,
}

struct Shared {
    cache: Arc<NearCache>,
    /// This tracker's id in the cache's leases.
    id: u64,
    /// How long a confirmation holds: the heartbeat plus `max_stale`.
    lease: u64,
    flags: Mutex<Flags>,
    /// The current connections' tasks, stopped with the tracker.
    connections: Mutex<Vec<ConnectHandle>>,
    /// The readers while the tracker is ready: `GET`s whose replies the cache may keep.
    readers: std::sync::RwLock<Vec<Client>>,
    /// Which reader the next `GET` takes.
    next_reader: std::sync::atomic::AtomicUsize,
}

impl Shared {
    /// `confirmed_at`: the cache clock when the set-up began (ready) .
    fn set_ready(&self, ready: bool, confirmed_at: u64, why: &'static str) {
        let mut flags = self.flags.lock().unwrap_or_else(PoisonError::into_inner);
        if flags.removed || flags.ready == ready {
            return;
        }
        flags.ready = ready;
        if ready {
            self.cache
                .tracker_ready(self.id, confirmed_at.saturating_add(self.lease));
            tracing::debug!(backend = BACKEND, "near cache: tracking set up");
        } else {
            self.cache.tracker_lost(self.id);
            tracing::debug!(backend = BACKEND, why, "near cache: tracking lost; cache dropped");
        }
    }

    fn is_ready(&self) -> bool {
        let flags = self.flags.lock().unwrap_or_else(PoisonError::into_inner);
        flags.ready && !flags.removed
    }

    /// Every invalidation sent before the cache clock read `sent_at` has been applied.
    fn confirmed(&self, sent_at: u64) {
        let flags = self.flags.lock().unwrap_or_else(PoisonError::into_inner);
        if flags.ready && !flags.removed {
            self.cache.renew(self.id, sent_at.saturating_add(self.lease));
        }
    }
}

impl Shared {
    /// Stops the connections' tasks (a connection ends with its task).
    fn stop_connections(&self) {
        let handles: Vec<ConnectHandle> = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for handle in handles {
            handle.abort();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Connections the task made after the tracker's own drop stopped the others.
        self.stop_connections();
    }
}

/// The background task keeping one primary's invalidations flowing into the cache.
pub(crate) struct Tracker {
    task: JoinHandle<()>,
    shared: Arc<Shared>,
    syncs: mpsc::UnboundedSender<Request>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.stop_connections();
        let mut flags = self.shared.flags.lock().unwrap_or_else(PoisonError::into_inner);
        flags.removed = true;
        self.shared.cache.tracker_removed(self.shared.id);
    }
}

impl Tracker {
    /// Starts tracking for `cache` (which stops serving until this tracker is ready).
    pub(crate) fn start(cache: Arc<NearCache>, settings: Settings, target: Target) -> Self {
        let id = cache.tracker_added();
        let lease = u64::try_from((settings.heartbeat + settings.max_stale).as_millis()).unwrap_or(u64::MAX);
        let shared = Arc::new(Shared {
            cache,
            id,
            lease,
            flags: Mutex::new(Flags {
                ready: false,
                removed: false,
            }),
            connections: Mutex::new(Vec::new()),
            readers: std::sync::RwLock::new(Vec::new()),
            next_reader: std::sync::atomic::AtomicUsize::new(0),
        });
        let (syncs, requests) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(Arc::clone(&shared), settings, target, requests));
        Tracker { task, shared, syncs }
    }

    /// The reader, while the tracker is ready: a `GET` sent on it is tracked, so its reply may
    /// be kept (until Redis says the key changed).
    pub(crate) fn reader(&self) -> Option<Client> {
        let readers = self.shared.readers.read().unwrap_or_else(PoisonError::into_inner);
        if readers.is_empty() {
            return None;
        }
        let i = self.shared.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        readers.get(i).cloned()
    }

    /// A handle to [`Syncer::sync`] with this tracker, usable without holding it.
    pub(crate) fn syncer(&self) -> Syncer {
        Syncer {
            requests: self.syncs.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Asks a tracker to confirm its stream ([`Tracker::syncer`]).
pub(crate) struct Syncer {
    requests: mpsc::UnboundedSender<Request>,
    shared: Arc<Shared>,
}

impl Syncer {
    /// Waits until every invalidation Redis sent the tracker before now has been applied: the
    /// next heartbeat's answer, at most `heartbeat_ms + max_stale_ms` away. At once when the
    /// tracker is not ready (its lease is 0: nothing is served until it is set up anew, after
    /// now); a heartbeat that fails ends the lease before the answer.
    pub(crate) async fn sync(&self) {
        if !self.shared.is_ready() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        if self.requests.send(tx).is_ok() {
            let _ = rx.await;
        }
    }
}

/// One pair's life: connect, set up, apply invalidations and confirm with heartbeats until
/// something breaks; then again, with a growing pause, for as long as the tracker lives.
async fn run(
    shared: Arc<Shared>,
    settings: Settings,
    target: Target,
    mut requests: mpsc::UnboundedReceiver<Request>,
) {
    let mut pause = settings.heartbeat;
    // A refusal is logged once as a warning (an ACL user without the commands the tracker
    // needs: the cache then never serves), then at debug level.
    let mut warned = false;
    loop {
        shared.set_ready(false, 0, "reconnecting");
        let Some(server) = target.server() else {
            answer_all(&mut requests);
            tokio::time::sleep(settings.heartbeat).await;
            continue;
        };
        let listener = connection_to(&settings, &server, settings.max_stale);
        let readers: Vec<Client> = (0..settings.readers.max(1))
            .map(|_| connection_to(&settings, &server, settings.timeout))
            .collect();
        {
            let mut tasks = shared.connections.lock().unwrap_or_else(PoisonError::into_inner);
            tasks.push(listener.connect());
            tasks.extend(readers.iter().map(|r| r.connect()));
        }
        let mut stream = listener.invalidation_rx();
        let mut errors = listener.error_rx();
        // The readers' errors, merged (one task each, stopped with this pair).
        let (failed, mut reader_errors) = mpsc::channel::<()>(1);
        let watchers: Vec<tokio::task::AbortHandle> = readers
            .iter()
            .map(|reader| {
                let mut rx = reader.error_rx();
                let failed = failed.clone();
                tokio::spawn(async move {
                    if rx.recv().await.is_ok() {
                        let _ = failed.send(()).await;
                    }
                })
                .abort_handle()
            })
            .collect();
        let began = shared.cache.clock();
        match tokio::time::timeout(
            settings.connection.connection_timeout + settings.max_stale,
            set_up(&listener, &readers),
        )
        .await
        {
            Ok(Ok(())) if target.still_primary(&server).await => {
                shared.set_ready(true, began, "");
                *shared.readers.write().unwrap_or_else(PoisonError::into_inner) = readers.clone();
                pause = settings.heartbeat;
                let why = serve(
                    &shared,
                    &settings,
                    &target,
                    &server,
                    &listener,
                    &readers,
                    &mut stream,
                    &mut errors,
                    &mut reader_errors,
                    &mut requests,
                )
                .await;
                shared
                    .readers
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
                shared.set_ready(false, 0, why);
            }
            Ok(Ok(())) => tracing::debug!(backend = BACKEND, "near cache: the server is not the primary"),
            Ok(Err(e))
                if !warned && (e.details().contains("NOPERM") || e.details().contains("not confirmed")) =>
            {
                warned = true;
                tracing::warn!(
                    backend = BACKEND,
                    error = %e,
                    "near cache: Redis refused the tracking set-up (CLIENT TRACKING, SUBSCRIBE to \
                     __redis__:invalidate, ROLE); the cache does not serve until it is allowed"
                );
            }
            Ok(Err(e)) => tracing::debug!(backend = BACKEND, error = %e, "near cache: tracking not set up"),
            Err(_) => tracing::debug!(backend = BACKEND, "near cache: tracking set-up timed out"),
        }
        let _ = tokio::time::timeout(settings.max_stale, async {
            let quits = readers.iter().map(|r| r.quit());
            let _ = futures::future::join(listener.quit(), futures::future::join_all(quits)).await;
        })
        .await;
        shared.stop_connections();
        for watcher in watchers {
            watcher.abort();
        }
        answer_all(&mut requests);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// A sync request: answered once a heartbeat sent after it has been answered and everything
/// before its answer applied.
type Request = oneshot::Sender<()>;

/// The ready state: applies invalidations as they come, also while a heartbeat is out (so a
/// delivered invalidation takes effect at once); a heartbeat every `heartbeat`, and one for
/// sync requests. Returns why it stopped being sure, after ending the tracker's lease (so a
/// sync request answered on the way out never sees a lease that should have ended).
#[allow(
    clippy::too_many_arguments,
    reason = "the one loop of the task, its parts borrowed from run"
)]
async fn serve(
    shared: &Shared,
    settings: &Settings,
    target: &Target,
    server: &Server,
    client: &Client,
    readers: &[Client],
    stream: &mut Receiver<Invalidation>,
    errors: &mut Receiver<(fred::error::Error, Option<Server>)>,
    reader_errors: &mut mpsc::Receiver<()>,
    requests: &mut mpsc::UnboundedReceiver<Request>,
) -> &'static str {
    let mut tick = tokio::time::interval(settings.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A heartbeat runs as a task of its own, its result sent back, so invalidations keep being
    // applied while it is out.
    let (beats, mut answers) = mpsc::channel::<Result<(), &'static str>>(1);
    let mut out: Option<tokio::task::AbortHandle> = None;
    let mut sent_at = 0;
    // The requests the heartbeat out now answers, and those that came after it was sent.
    let mut covered: Vec<Request> = Vec::new();
    let mut waiting: Vec<Request> = Vec::new();
    let send_beat = |sent_at: &mut u64| {
        *sent_at = shared.cache.clock();
        let beats = beats.clone();
        let (settings, target, server, client, readers) = (
            settings.clone(),
            target.clone(),
            server.clone(),
            client.clone(),
            readers.to_vec(),
        );
        tokio::spawn(async move {
            let result = heartbeat(&settings, &target, &server, &client, &readers).await;
            let _ = beats.send(result).await;
        })
        .abort_handle()
    };
    let why = loop {
        if out.is_none() && !waiting.is_empty() {
            covered.append(&mut waiting);
            out = Some(send_beat(&mut sent_at));
        }
        tokio::select! {
            received = stream.recv() => match received {
                Ok(invalidation) => apply(&shared.cache, &invalidation),
                Err(RecvError::Lagged(_)) => break "fell behind the invalidation stream",
                Err(RecvError::Closed) => break "the invalidation stream closed",
            },
            _ = errors.recv() => break "the listening connection failed",
            _ = reader_errors.recv() => break "the tracked reading connection failed",
            request = requests.recv() => {
                if let Some(reply) = request {
                    waiting.push(reply);
                }
            }
            _ = tick.tick() => {
                if out.is_none() {
                    out = Some(send_beat(&mut sent_at));
                }
            }
            answer = answers.recv() => {
                out = None;
                match answer {
                    Some(Ok(())) => {}
                    Some(Err(why)) => break why,
                    None => break "the heartbeat ended",
                }
                // Everything Redis sent before the PONG is in the channel now.
                if let Err(why) = drain(&shared.cache, stream) {
                    break why;
                }
                shared.confirmed(sent_at);
                for reply in covered.drain(..) {
                    let _ = reply.send(());
                }
            }
        }
    };
    if let Some(beat) = out {
        beat.abort();
    }
    shared.set_ready(false, 0, why);
    for reply in covered.into_iter().chain(waiting) {
        let _ = reply.send(());
    }
    why
}

/// `PING` on the listener answered, in the subscribed form, and on every reader, each within
/// `max_stale`, and the server still the primary (asked within `max_stale` too).
async fn heartbeat(
    settings: &Settings,
    target: &Target,
    server: &Server,
    client: &Client,
    readers: &[Client],
) -> Result<(), &'static str> {
    match tokio::time::timeout(settings.max_stale, subscribed(client)).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return Err("the listening connection is not subscribed"),
        Ok(Err(_)) => return Err("the heartbeat failed"),
        Err(_) => return Err("the heartbeat went unanswered"),
    }
    // A reader Redis dropped without the close reaching this process (a NAT or firewall that
    // forgot an idle connection) takes the keys it tracked with it: each must answer too.
    let pings = readers.iter().map(|r| r.ping::<Value>(None));
    match tokio::time::timeout(settings.max_stale, futures::future::join_all(pings)).await {
        Ok(answers) if answers.iter().all(Result::is_ok) => {}
        Ok(_) => return Err("a tracked reading connection failed its heartbeat"),
        Err(_) => return Err("a tracked reading connection went unanswered"),
    }
    match tokio::time::timeout(settings.max_stale, target.still_primary(server)).await {
        Ok(true) => Ok(()),
        Ok(false) => Err("the server is no longer the primary"),
        Err(_) => Err("the primary check went unanswered"),
    }
}

/// Applies every invalidation waiting in the channel.
fn drain(cache: &NearCache, stream: &mut Receiver<Invalidation>) -> Result<(), &'static str> {
    loop {
        match stream.try_recv() {
            Ok(invalidation) => apply(cache, &invalidation),
            Err(TryRecvError::Empty) => return Ok(()),
            Err(TryRecvError::Lagged(_)) => return Err("fell behind the invalidation stream"),
            Err(TryRecvError::Closed) => return Err("the invalidation stream closed"),
        }
    }
}

fn apply(cache: &NearCache, invalidation: &Invalidation) {
    if invalidation.keys.is_empty() {
        // FLUSHALL / FLUSHDB.
        cache.drop_all();
        return;
    }
    for key in &invalidation.keys {
        match key.as_str() {
            Some(k) => cache.invalidate(k),
            // Not a key this store writes (its keys are UTF-8): drop all to be safe.
            None => {
                cache.drop_all();
                return;
            }
        }
    }
}

/// Answers waiting sync requests at once (the tracker is not ready: the cache is not serving).
fn answer_all(requests: &mut mpsc::UnboundedReceiver<Request>) {
    while let Ok(reply) = requests.try_recv() {
        let _ = reply.send(());
    }
}

/// A RESP2 client to `server` with the store's credentials and TLS, that never reconnects by
/// itself (a reconnect neither tracks nor listens: the tracker makes a new one).
fn connection_to(settings: &Settings, server: &Server, timeout: Duration) -> Client {
    let mut fred = settings.fred.clone();
    fred.server = ServerConfig::Centralized {
        server: server.clone(),
    };
    fred.fail_fast = true;
    fred.version = fred::types::RespVersion::RESP2;
    let perf = PerformanceConfig {
        broadcast_channel_capacity: STREAM_CAPACITY,
        default_command_timeout: timeout,
        ..PerformanceConfig::default()
    };
    let mut connection = settings.connection.clone();
    connection.max_command_attempts = 1;
    Client::new(fred, Some(perf), Some(connection), None)
}

/// The listener: `CLIENT ID`, `CLIENT SETNAME`, `SUBSCRIBE`; then each reader: `CLIENT
/// SETNAME`, `CLIENT TRACKING ON REDIRECT <listener id>` (default mode: only the keys it reads).
async fn set_up(listener: &Client, readers: &[Client]) -> Result<(), fred::error::Error> {
    listener.wait_for_connect().await?;
    let id: i64 = listener.client_id().await?;
    set_name(listener, LISTENER_NAME).await;
    listener.subscribe(INVALIDATE_CHANNEL).await?;
    // fred counts a SUBSCRIBE as done once it is queued, and drops a refusal (`NOPERM` for the
    // channel) as a reply nobody waits for; Redis drops redirected invalidations for a client
    // that is not subscribed. Only a subscribed connection answers `PING` with `pong` in an
    // array, so that answer is what confirms it.
    if !subscribed(listener).await? {
        return Err(fred::error::Error::new(
            fred::error::ErrorKind::Unknown,
            "the listener's SUBSCRIBE to __redis__:invalidate was not confirmed (NOPERM for the channel?)",
        ));
    }
    for reader in readers {
        reader.wait_for_connect().await?;
        set_name(reader, READER_NAME).await;
        let _: Value = reader
            .client_tracking("ON", Some(id), Vec::<String>::new(), false, false, false, false)
            .await?;
    }
    Ok(())
}

/// Whether `listener` is subscribed: its `PING` is answered in the subscribed form (`pong` in
/// an array), not `PONG`.
async fn subscribed(listener: &Client) -> Result<bool, fred::error::Error> {
    let pong: Value = listener.ping(None).await?;
    Ok(match pong {
        Value::Array(parts) => parts
            .first()
            .and_then(Value::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case("pong")),
        _ => false,
    })
}

/// `CLIENT SETNAME`, so an operator sees the tracker's connections in `CLIENT LIST` (best
/// effort: a user that may not name its connections still gets a working cache).
async fn set_name(client: &Client, name: &'static str) {
    let named: Result<Value, _> = client
        .custom(
            CustomCommand::new_static("CLIENT", None, false),
            vec![Value::from("SETNAME"), Value::from(name)],
        )
        .await;
    if let Err(e) = named {
        tracing::debug!(backend = BACKEND, error = %e, "near cache: CLIENT SETNAME refused");
    }
}

impl Target {
    /// The server to track now (`None`: not known yet).
    fn server(&self) -> Option<Server> {
        match self {
            Target::Fixed { server, .. } => Some(server.clone()),
            Target::Sentinel { view, control } => view
                .master()
                .or_else(|| control.active_connections().into_iter().next()),
        }
    }

    /// Whether `server` is still where the store's writes go.
    async fn still_primary(&self, server: &Server) -> bool {
        match self {
            Target::Fixed { control: None, .. } => true,
            Target::Fixed {
                control: Some(control),
                ..
            } => is_master(control).await && cluster_ok(control).await,
            Target::Sentinel { view, control } => {
                !view.paused()
                    && match view.master() {
                        Some(master) => &master == server,
                        None => control.active_connections().first() == Some(server),
                    }
            }
        }
    }
}

/// Whether a refused `CLUSTER INFO` has been logged as a warning (once per process).
static CLUSTER_INFO_REFUSAL_LOGGED: AtomicBool = AtomicBool::new(false);

/// `CLUSTER INFO` says `cluster_state:ok`: a master cut off from the rest of its cluster still
/// answers `PING` and `ROLE` (its replica may be promoted meanwhile, and written to), but not
/// that (an unreadable reply or a refusal counts as no; a refusal is logged once).
async fn cluster_ok(control: &Client) -> bool {
    let info: Result<String, _> = control
        .custom(
            CustomCommand::new_static("CLUSTER", None, false),
            vec![Value::from("INFO")],
        )
        .await;
    match info {
        Ok(text) => text.lines().any(|line| line.trim() == "cluster_state:ok"),
        Err(e) => {
            if e.details().contains("NOPERM") && !CLUSTER_INFO_REFUSAL_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    backend = BACKEND,
                    error = %e,
                    "near cache: Redis refused CLUSTER INFO; a cluster store's near cache does not serve until it is allowed"
                );
            }
            false
        }
    }
}

/// Whether a refused `ROLE` has been logged as a warning (once per process).
static ROLE_REFUSAL_LOGGED: AtomicBool = AtomicBool::new(false);

/// `ROLE` says `master` (a reply that cannot be read, or a refusal, counts as no; a refusal
/// is logged as a warning once: the cache of a cluster store never serves without `ROLE`).
async fn is_master(control: &Client) -> bool {
    let role: Result<Value, _> = control
        .custom(
            CustomCommand::new_static("ROLE", None, false),
            Vec::<Value>::new(),
        )
        .await;
    match role {
        Ok(Value::Array(parts)) => parts.first().and_then(Value::as_str).as_deref() == Some("master"),
        Err(e) if e.details().contains("NOPERM") => {
            if !ROLE_REFUSAL_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    backend = BACKEND,
                    error = %e,
                    "near cache: Redis refused ROLE; a cluster store's near cache does not serve until it is allowed"
                );
            }
            false
        }
        _ => false,
    }
}
