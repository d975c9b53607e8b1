//! The invalidation stream of one Redis primary, kept whole or declared broken.
//!
//! One RESP2 fred client tracks for itself: `CLIENT ID`, then `CLIENT TRACKING ON REDIRECT
//! <own id> BCAST PREFIX <key prefix>`, then `SUBSCRIBE __redis__:invalidate`. Every write,
//! delete, expiry or eviction of a key under the prefix, by any client, arrives as that key;
//! `FLUSHALL`/`FLUSHDB` as an empty key list. fred's RESP3 push path drops that flush message,
//! hence RESP2.
//!
//! The cache serves only while the stream is known to be whole: from the moment tracking is set
//! up until the connection is lost, a heartbeat `PING` goes unanswered for longer than
//! `max_stale`, or the subscriber lags. A reconnect gives a connection that neither tracks nor
//! listens, so every reconnect drops the cache and sets tracking up again.

use std::sync::Arc;
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientInterface, ClientLike, EventInterface, PubsubInterface, TrackingInterface};
use fred::types::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::cache::NearCache;

/// The channel Redis sends invalidations on in RESP2.
const INVALIDATE_CHANNEL: &str = "__redis__:invalidate";

/// The background task keeping one primary's invalidations flowing into the cache.
pub(crate) struct Tracker {
    task: JoinHandle<()>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tracker {
    /// Starts tracking `prefix` on `client` (RESP2, with a reconnect policy, not yet
    /// connected) for `cache`, with a heartbeat every `heartbeat` that must be answered within
    /// `max_stale` for the cache to keep serving.
    pub(crate) fn start(
        client: Client,
        prefix: String,
        cache: Arc<NearCache>,
        heartbeat: Duration,
        max_stale: Duration,
    ) -> Self {
        let task = tokio::spawn(run(client, prefix, cache, heartbeat, max_stale));
        Tracker { task }
    }
}

async fn run(
    client: Client,
    prefix: String,
    cache: Arc<NearCache>,
    heartbeat: Duration,
    max_stale: Duration,
) {
    let _connection = client.connect();
    loop {
        cache.set_serving(false);
        // Subscribe to the events before setting up, so none is missed.
        let mut invalidations = client.invalidation_rx();
        let mut reconnects = client.reconnect_rx();
        if let Err(e) = set_up(&client, &prefix).await {
            tracing::debug!(error = %e, "near cache: tracking not set up yet; retrying");
            tokio::time::sleep(heartbeat).await;
            continue;
        }
        cache.set_serving(true);
        let mut tick = tokio::time::interval(heartbeat);
        loop {
            tokio::select! {
                received = invalidations.recv() => match received {
                    Ok(invalidation) if invalidation.keys.is_empty() => cache.drop_all(),
                    Ok(invalidation) => {
                        for key in &invalidation.keys {
                            match key.as_str() {
                                Some(k) => cache.invalidate(k),
                                // Not one of ours (keys are ASCII): drop all to be safe.
                                None => cache.drop_all(),
                            }
                        }
                    }
                    // Invalidations were lost: nothing cached can be trusted.
                    Err(RecvError::Lagged(_)) => cache.drop_all(),
                    Err(RecvError::Closed) => return,
                },
                _ = reconnects.recv() => break,
                _ = tick.tick() => {
                    let pong = tokio::time::timeout(max_stale, client.ping::<Value>(None)).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        // Invalidations may be held up as long as the PONG is: stop serving
                        // until the connection is replaced and tracking set up again.
                        cache.set_serving(false);
                    }
                }
            }
        }
    }
}

/// `CLIENT ID`, `CLIENT TRACKING ON REDIRECT <id> BCAST PREFIX <prefix>`, `SUBSCRIBE`; from
/// any state (fred also reports the first connection as a reconnect, so this may run on a
/// connection already set up: it is unsubscribed and its tracking turned off first).
async fn set_up(client: &Client, prefix: &str) -> Result<(), fred::error::Error> {
    client.wait_for_connect().await?;
    let _ = client.unsubscribe(INVALIDATE_CHANNEL).await;
    let _: Result<Value, _> = client
        .client_tracking("OFF", None, Vec::<String>::new(), false, false, false, false)
        .await;
    let id: i64 = client.client_id().await?;
    let _: Value = client
        .client_tracking("ON", Some(id), vec![prefix.to_owned()], true, false, false, false)
        .await?;
    client.subscribe(INVALIDATE_CHANNEL).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use std::time::Instant;

    use fred::interfaces::ClientLike as _;
    use fred::interfaces::KeysInterface;
    use fred::prelude::{Builder, Config, ReconnectPolicy};
    use session_core::backend::{CodecId, Record};

    use super::super::cache::Lookup;
    use super::*;

    fn client(url: &str) -> Client {
        let config = Config::from_url(url).unwrap();
        Builder::from_config(config)
            .set_policy(ReconnectPolicy::new_constant(0, 50))
            .build()
            .unwrap()
    }

    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn fill(cache: &NearCache, key: &str) {
        let far = session_core::backend::now_ms() + 600_000;
        let t = cache.begin_read(key);
        cache.finish_read(t, key, Some(&Record::new(CodecId::RAW, b"v".to_vec(), far)));
    }

    fn cached(cache: &NearCache, key: &str) -> bool {
        matches!(cache.get(key, session_core::backend::now_ms()), Lookup::Hit(_))
    }

    /// Against a redis-server at `SESSION_TEST_NEAR_URL` (skipped without it): writes under the
    /// prefix invalidate, a flush drops all, a killed connection stops serving until tracking
    /// is set up again on the new one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn invalidations_flushes_and_reconnects() {
        let Ok(url) = std::env::var("SESSION_TEST_NEAR_URL") else {
            return;
        };
        let cache = Arc::new(NearCache::new(100, 1 << 20));
        let _tracker = Tracker::start(
            client(&url),
            "nc:".to_owned(),
            Arc::clone(&cache),
            Duration::from_millis(50),
            Duration::from_millis(200),
        );
        let writer = client(&url);
        let _conn = writer.connect();
        writer.wait_for_connect().await.unwrap();
        until("serving", || {
            fill(&cache, "nc:a");
            cached(&cache, "nc:a")
        })
        .await;
        // Heartbeats keep it serving (PING is answered in subscribed mode).
        tokio::time::sleep(Duration::from_millis(400)).await;
        fill(&cache, "nc:a");
        assert!(cached(&cache, "nc:a"), "still serving after several heartbeats");
        let _: () = writer.set("other:a", 1, None, None, false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            cached(&cache, "nc:a"),
            "a key outside the prefix invalidates nothing"
        );
        let _: () = writer.set("nc:a", 1, None, None, false).await.unwrap();
        until("the write's invalidation", || !cached(&cache, "nc:a")).await;

        fill(&cache, "nc:b");
        assert!(cached(&cache, "nc:b"));
        let _: () = writer.flushall(false).await.unwrap();
        until("the flush", || !cached(&cache, "nc:b")).await;

        // Kill the tracker's connection: after the reconnect, tracking is set up again.
        let list: String = writer
            .custom(
                fred::types::CustomCommand::new_static("CLIENT", None, false),
                vec![Value::from("LIST")],
            )
            .await
            .unwrap();
        let id = list
            .lines()
            .find(|l| l.contains("sub=1"))
            .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
            .expect("the tracker's connection")
            .to_owned();
        let _: Value = writer
            .custom(
                fred::types::CustomCommand::new_static("CLIENT", None, false),
                vec![Value::from("KILL"), Value::from("ID"), Value::from(id.as_str())],
            )
            .await
            .unwrap();
        until("serving again after the reconnect", || {
            fill(&cache, "nc:c");
            cached(&cache, "nc:c")
        })
        .await;
        let _: () = writer.set("nc:c", 1, None, None, false).await.unwrap();
        until("invalidations after the reconnect", || !cached(&cache, "nc:c")).await;
    }
}
