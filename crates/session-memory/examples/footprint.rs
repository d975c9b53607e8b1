//! Prints the memory a `MemoryStore` uses per session (Linux: resident set
//! size from `/proc/self/statm`). Not a test: the figure depends on the
//! allocator and the table's fill at the moment of measuring.
//!
//! ```text
//! cargo run --release -p session-memory --example footprint [sessions] [payload bytes]
//! ```

#![allow(clippy::print_stdout, reason = "an example that prints its figures")]
#![allow(clippy::unwrap_used, reason = "an example: a failure ends it")]

use session_core::{now_ms, Bytes, CodecId, Meta, Namespace, Record, SessionId, SessionKey, SessionStore};
use session_memory::{MemoryConfig, MemoryStore};

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500_000);
    let payload_len: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let namespace = Namespace::new("task").unwrap();
    // Ids made before measuring; each key below clones its id, as a caller would.
    let ids: Vec<SessionId> = (0..n).map(|_| SessionId::generate().unwrap()).collect();
    let store = MemoryStore::new(
        MemoryConfig::default()
            .with_max_entries(u64::MAX)
            .with_max_bytes(u64::MAX),
    )
    .unwrap();
    let key_len = store.key_prefix().as_str().len() + "task:".len() + 22;
    let now = now_ms();
    let before = rss_bytes().unwrap_or(0);
    runtime.block_on(async {
        for (i, id) in ids.iter().enumerate() {
            let record = Record {
                meta: Meta {
                    version: 0,
                    created_at: now,
                    updated_at: now,
                    expires_at: now + 3_600_000,
                    max_expires_at: 0,
                },
                codec: CodecId::JSON,
                // A payload as a codec hands it over: its own exact-size buffer.
                payload: Bytes::from(vec![i as u8; payload_len]),
            };
            let key = SessionKey::new(namespace.clone(), id.clone());
            store.save(&key, &record).await.unwrap();
        }
    });
    let after = rss_bytes().unwrap_or(0);
    let stats = runtime.block_on(store.stats()).unwrap();
    let per_entry = (after.saturating_sub(before)) as f64 / n as f64;
    println!("sessions:           {n}");
    println!("payload:            {payload_len} bytes; key {key_len} bytes (prefix included)");
    println!("resident per entry: {per_entry:.0} bytes");
    println!(
        "overhead per entry: {:.0} bytes beyond key and payload",
        per_entry - (key_len + payload_len) as f64
    );
    println!(
        "charged per entry:  {} bytes (stats.bytes / entries)",
        stats.bytes.unwrap_or(0) / stats.entries.unwrap_or(1).max(1)
    );
}
