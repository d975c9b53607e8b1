//! A store built from an application's own fred client: Redis described once, the store's
//! own connections made with the client's settings.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use session_core::backend::{now_ms, CodecId, Record};
use session_core::{Error, KeyPrefix, Namespace, SessionId, SessionKey, SessionStore, StoreOptions};
use session_redis::fred::interfaces::{ClientLike, KeysInterface};
use session_redis::fred::prelude::{Builder, Config};
use session_redis::{RedisConfig, RedisStore};
use testkit_redis::{topology_url, Topology};

/// The application's client, on the plaintext topology under test (`None`: skip).
async fn app_client() -> Option<session_redis::fred::clients::Client> {
    let target = [Topology::Standalone, Topology::Sentinel, Topology::Cluster]
        .into_iter()
        .find_map(topology_url)?;
    let config = Config::from_url(&target.url).expect("fred parses the test URL");
    let client = Builder::from_config(config).build().expect("client builds");
    client.init().await.expect("the application's client connects");
    Some(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_shares_the_applications_client_settings() {
    let Some(client) = app_client().await else {
        return;
    };
    let prefix = session_core::testing::random_prefix();
    let mut behaviour = RedisConfig::default();
    behaviour.timeout_ms = 2_000;
    let store = RedisStore::builder(behaviour)
        .options(StoreOptions::new(prefix.clone()))
        .fred_client(&client)
        .connect()
        .await
        .expect("the store connects with the client's settings");
    assert!(store.wait_connected(Duration::from_secs(5)).await);

    let key = SessionKey::new(Namespace::new("app").unwrap(), SessionId::generate().unwrap());
    let record = Record::new(CodecId::RAW, b"shared".to_vec(), now_ms() + 60_000);
    let meta = store.create(&key, &record).await.unwrap();
    assert_eq!(
        store.load(&key).await.unwrap().unwrap().meta.version,
        meta.version
    );
    // The application's client sees the store's key under the configured prefix.
    let full = prefix.render(&key);
    let exists: u64 = client.exists(full.as_str()).await.unwrap();
    assert_eq!(exists, 1);
    assert!(store.delete(&key).await.unwrap());
    client.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_keys_set_twice_are_refused() {
    let Some(client) = app_client().await else {
        return;
    };
    let mut with_password = RedisConfig::default();
    with_password.password = Some("x".into());
    let mut with_database = RedisConfig::default();
    with_database.database = Some(1);
    for (set, key) in [
        (RedisConfig::new("redis://127.0.0.1:1"), "redis.url"),
        (with_password, "redis.password"),
        (with_database, "redis.database"),
    ] {
        let e = RedisStore::builder(set)
            .options(StoreOptions::new(KeyPrefix::new("x:").unwrap()))
            .fred_client(&client)
            .connect()
            .await
            .unwrap_err();
        match e {
            Error::Config { key: k, message, .. } => {
                assert_eq!(k, key);
                assert!(message.contains("fred client"), "{message}");
            }
            other => panic!("expected a Config error for {key}, got {other}"),
        }
    }
    client.quit().await.unwrap();
}
