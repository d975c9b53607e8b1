//! Trace output of the instrumented store holds no session id, only short
//! hashes. A test binary of its own: tracing caches each callsite's interest
//! process-wide, and a test running on another thread without a subscriber
//! can race the scoped subscriber installed here.

// Every test here builds or configures the memory backend (the default one).
#![cfg(feature = "memory")]
#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use std::io::Write;
use std::sync::{Arc, Mutex};

use session_store::instrument::Instrumented;
use session_store::memory::MemoryStore;
use session_store::{Namespace, Session, SessionId, SessionStore, Sessions};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Cart {
    items: Vec<String>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn trace_output_holds_no_session_id() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let mut ids: Vec<SessionId> = Vec::new();
    tracing::subscriber::with_default(subscriber, || {
        runtime().block_on(async {
            let store: Arc<dyn SessionStore> = Arc::new(Instrumented::new(MemoryStore::new_default()));
            let carts: Sessions<Cart> = Sessions::new(store, Namespace::new("cart").unwrap());
            let mut session = carts
                .create(Cart {
                    items: vec!["a".into()],
                })
                .await
                .unwrap();
            let id = session.id.clone();
            ids.push(id.clone());
            carts.load(&id).await.unwrap();
            let mut stale = session.clone();
            session.value.items.clear();
            carts.save_if(&mut session).await.unwrap();
            let _ = carts.save_if(&mut stale).await;
            let new_id = carts.rotate(&id).await.unwrap();
            ids.push(new_id.clone());
            let chosen = SessionId::parse("caller-chosen-id-0123456789").unwrap();
            carts
                .create_with_id(&chosen, Cart { items: vec![] })
                .await
                .unwrap();
            let _ = carts.create_with_id(&chosen, Cart { items: vec![] }).await;
            ids.push(chosen);
            carts.delete(&new_id).await.unwrap();
            let mut gone = Session::new(new_id.clone(), Cart { items: vec![] });
            let _ = carts.update(&mut gone).await;
        });
    });
    let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(
        out.contains("op=\"load\"") || out.contains("op=load"),
        "spans were not recorded:\n{out}"
    );
    assert!(out.contains("sid="), "spans carry the short hash:\n{out}");
    for id in &ids {
        assert!(
            !out.contains(id.as_str()),
            "session id found in trace output:\n{out}"
        );
        assert!(out.contains(&id.short_hash()));
    }
}
