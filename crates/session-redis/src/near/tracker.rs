//! The invalidation stream of one Redis primary, kept whole or declared broken.
//!
//! A tracker owns two RESP2 connections to its primary. The *listener* runs `CLIENT ID` and
//! `SUBSCRIBE __redis__:invalidate`; the *reader* runs `CLIENT TRACKING ON REDIRECT <listener
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
//! Then both connections are dropped together (Redis forgets the reader's keys with it) and a
//! new pair is made; the cache serves only while every tracker of the store is ready and its
//! lease runs (see [`NearCache`]).
//!
//! A `PONG` on the listener follows every invalidation Redis queued on it before (Redis writes
//! an invalidation to the listener while it runs the write, before the write's reply), and
//! fred hands both over in order, so "ping, then drain what arrived" confirms that every write
//! acknowledged before the ping was sent has been applied ([`Syncer::sync`]).

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
    /// The store's per-command timeout, for the reader's `GET`s.
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
    /// The reader while the tracker is ready: `GET`s whose replies the cache may keep.
    reader: std::sync::RwLock<Option<Client>>,
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

    /// Every invalidation sent before the cache clock read `sent_at` has been applied.
    fn confirmed(&self, sent_at: u64) {
        let flags = self.flags.lock().unwrap_or_else(PoisonError::into_inner);
        if flags.ready && !flags.removed {
            self.cache.renew(self.id, sent_at.saturating_add(self.lease));
        }
    }
}

/// The background task keeping one primary's invalidations flowing into the cache.
pub(crate) struct Tracker {
    task: JoinHandle<()>,
    shared: Arc<Shared>,
    syncs: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
        for handle in self
            .shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            handle.abort();
        }
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
            reader: std::sync::RwLock::new(None),
        });
        let (syncs, requests) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(Arc::clone(&shared), settings, target, requests));
        Tracker { task, shared, syncs }
    }

    /// The reader, while the tracker is ready: a `GET` sent on it is tracked, so its reply may
    /// be kept (until Redis says the key changed).
    pub(crate) fn reader(&self) -> Option<Client> {
        self.shared
            .reader
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A handle to [`Syncer::sync`] with this tracker, usable without holding it.
    pub(crate) fn syncer(&self) -> Syncer {
        Syncer(self.syncs.clone())
    }
}

/// Asks a tracker to confirm its stream ([`Tracker::syncer`]).
pub(crate) struct Syncer(mpsc::UnboundedSender<oneshot::Sender<()>>);

impl Syncer {
    /// Waits until every invalidation Redis sent the tracker before now has been applied (at
    /// most `max_stale`; a tracker that is not ready, or does not answer, has dropped the cache).
    pub(crate) async fn sync(&self) {
        let (tx, rx) = oneshot::channel();
        if self.0.send(tx).is_ok() {
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
    mut requests: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let mut pause = settings.heartbeat;
    loop {
        shared.set_ready(false, 0, "reconnecting");
        let Some(server) = target.server() else {
            answer_all(&mut requests);
            tokio::time::sleep(settings.heartbeat).await;
            continue;
        };
        let listener = connection_to(&settings, &server, settings.max_stale);
        let reader = connection_to(&settings, &server, settings.timeout);
        {
            let mut tasks = shared.connections.lock().unwrap_or_else(PoisonError::into_inner);
            tasks.push(listener.connect());
            tasks.push(reader.connect());
        }
        let mut stream = listener.invalidation_rx();
        let mut errors = listener.error_rx();
        let mut reader_errors = reader.error_rx();
        let began = shared.cache.clock();
        match tokio::time::timeout(
            settings.connection.connection_timeout + settings.max_stale,
            set_up(&listener, &reader),
        )
        .await
        {
            Ok(Ok(())) if target.still_primary(&server).await => {
                shared.set_ready(true, began, "");
                *shared.reader.write().unwrap_or_else(PoisonError::into_inner) = Some(reader.clone());
                pause = settings.heartbeat;
                let why = serve(
                    &shared,
                    &settings,
                    &target,
                    &server,
                    &listener,
                    &mut stream,
                    [&mut errors, &mut reader_errors],
                    &mut requests,
                )
                .await;
                *shared.reader.write().unwrap_or_else(PoisonError::into_inner) = None;
                shared.set_ready(false, 0, why);
            }
            Ok(Ok(())) => tracing::debug!(backend = BACKEND, "near cache: the server is not the primary"),
            Ok(Err(e)) => tracing::debug!(backend = BACKEND, error = %e, "near cache: tracking not set up"),
            Err(_) => tracing::debug!(backend = BACKEND, "near cache: tracking set-up timed out"),
        }
        let _ = tokio::time::timeout(settings.max_stale, async {
            let _ = futures::future::join(listener.quit(), reader.quit()).await;
        })
        .await;
        for handle in shared
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            handle.abort();
        }
        answer_all(&mut requests);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// The ready state: applies invalidations; confirms on every heartbeat and sync request.
/// Returns why it stopped being sure.
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
    stream: &mut Receiver<Invalidation>,
    errors: [&mut Receiver<(fred::error::Error, Option<Server>)>; 2],
    requests: &mut mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) -> &'static str {
    let [errors, reader_errors] = errors;
    let mut tick = tokio::time::interval(settings.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = stream.recv() => match received {
                Ok(invalidation) => apply(&shared.cache, &invalidation),
                Err(RecvError::Lagged(_)) => return "fell behind the invalidation stream",
                Err(RecvError::Closed) => return "the invalidation stream closed",
            },
            _ = errors.recv() => return "the listening connection failed",
            _ = reader_errors.recv() => return "the tracked reading connection failed",
            request = requests.recv() => {
                let why = confirm(shared, settings, target, server, client, stream).await;
                if let Some(reply) = request {
                    let _ = reply.send(());
                }
                if let Err(why) = why {
                    return why;
                }
            }
            _ = tick.tick() => {
                if let Err(why) = confirm(shared, settings, target, server, client, stream).await {
                    return why;
                }
            }
        }
    }
}

/// `PING` answered within `max_stale`, every invalidation that came before the `PONG`
/// applied, and the server still the primary.
async fn confirm(
    shared: &Shared,
    settings: &Settings,
    target: &Target,
    server: &Server,
    client: &Client,
    stream: &mut Receiver<Invalidation>,
) -> Result<(), &'static str> {
    let sent_at = shared.cache.clock();
    match tokio::time::timeout(settings.max_stale, client.ping::<Value>(None)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Err("the heartbeat failed"),
        Err(_) => return Err("the heartbeat went unanswered"),
    }
    loop {
        match stream.try_recv() {
            Ok(invalidation) => apply(&shared.cache, &invalidation),
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Lagged(_)) => return Err("fell behind the invalidation stream"),
            Err(TryRecvError::Closed) => return Err("the invalidation stream closed"),
        }
    }
    if !target.still_primary(server).await {
        return Err("the server is no longer the primary");
    }
    shared.confirmed(sent_at);
    Ok(())
}

fn apply(cache: &NearCache, invalidation: &Invalidation) {
    if invalidation.keys.is_empty() {
        // FLUSHALL / FLUSHDB.
        cache.drop_all();
        return;
    }
    let keys: Option<Vec<&str>> = invalidation.keys.iter().map(|k| k.as_str()).collect();
    match keys {
        Some(keys) => cache.invalidate_all(&keys),
        // Not a key this store writes (its keys are UTF-8): drop all to be safe.
        None => cache.drop_all(),
    }
}

/// Answers waiting sync requests at once (the tracker is not ready: the cache is not serving).
fn answer_all(requests: &mut mpsc::UnboundedReceiver<oneshot::Sender<()>>) {
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

/// The listener: `CLIENT ID`, `CLIENT SETNAME`, `SUBSCRIBE`; then the reader: `CLIENT
/// SETNAME`, `CLIENT TRACKING ON REDIRECT <listener id>` (default mode: only the keys it reads).
async fn set_up(listener: &Client, reader: &Client) -> Result<(), fred::error::Error> {
    listener.wait_for_connect().await?;
    reader.wait_for_connect().await?;
    let id: i64 = listener.client_id().await?;
    set_name(listener, LISTENER_NAME).await?;
    listener.subscribe(INVALIDATE_CHANNEL).await?;
    set_name(reader, READER_NAME).await?;
    let _: Value = reader
        .client_tracking("ON", Some(id), Vec::<String>::new(), false, false, false, false)
        .await?;
    Ok(())
}

/// `CLIENT SETNAME`, so an operator sees the tracker's connections in `CLIENT LIST`.
async fn set_name(client: &Client, name: &'static str) -> Result<(), fred::error::Error> {
    let _: Value = client
        .custom(
            CustomCommand::new_static("CLIENT", None, false),
            vec![Value::from("SETNAME"), Value::from(name)],
        )
        .await?;
    Ok(())
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
            } => is_master(control).await,
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

/// `ROLE` says `master` (a reply that cannot be read, or a refusal, counts as no).
async fn is_master(control: &Client) -> bool {
    let role: Result<Value, _> = control
        .custom(
            CustomCommand::new_static("ROLE", None, false),
            Vec::<Value>::new(),
        )
        .await;
    match role {
        Ok(Value::Array(parts)) => parts.first().and_then(Value::as_str).as_deref() == Some("master"),
        _ => false,
    }
}
