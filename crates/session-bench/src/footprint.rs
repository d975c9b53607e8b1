//! Memory per session in-process, measured as `crates/session-memory/examples/footprint.rs` does:
//! resident set growth (`/proc/self/statm`) over inserting N sessions, divided by N. Run in a
//! child process (`session-bench footprint …`) so that nothing else the benchmark allocated
//! is counted.

use std::process::Command;

use bytes::Bytes;
use dashmap::DashMap;
use session_core::backend::{now_ms, CodecId, Record};
use session_core::{Meta, Namespace, SessionId, SessionKey, SessionStore, Version};
use session_memory::{MemoryConfig, MemoryStore};

/// What a footprint run reports.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Footprint {
    /// Sessions inserted.
    pub(crate) entries: usize,
    /// Resident bytes per session.
    pub(crate) per_entry: f64,
    /// The key's length as the method counts it (the store's prefix included).
    pub(crate) key_len: usize,
    /// The payload's length.
    pub(crate) payload_len: usize,
}

impl Footprint {
    /// Bytes per session beyond its key and payload.
    pub(crate) fn overhead(&self) -> f64 {
        self.per_entry - (self.key_len + self.payload_len) as f64
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// In the child: inserts `n` sessions of `payload_len` bytes into `subject` and prints the figures.
pub(crate) fn child(subject: &str, n: usize, payload_len: usize) -> Result<(), String> {
    let namespace = Namespace::new("bench").map_err(|e| e.to_string())?;
    let ids: Vec<SessionId> = (0..n)
        .map(|_| SessionId::generate().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let now = now_ms();
    let (before, after, key_len) = match subject {
        "memory" => {
            let store = MemoryStore::new(
                MemoryConfig::default()
                    .with_max_entries(u64::MAX)
                    .with_max_bytes(u64::MAX),
            )
            .map_err(|e| e.to_string())?;
            let key_len = store.key_prefix().as_str().len() + "bench:".len() + 22;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| e.to_string())?;
            let before = rss_bytes();
            runtime.block_on(async {
                for (i, id) in ids.iter().enumerate() {
                    let record = Record {
                        meta: Meta {
                            version: Version::NONE,
                            created_at: now,
                            updated_at: now,
                            expires_at: now + 3_600_000,
                            max_expires_at: 0,
                        },
                        codec: CodecId::BINCODE,
                        // A payload as a codec hands it over: its own exact-size buffer.
                        payload: Bytes::from(vec![i as u8; payload_len]),
                    };
                    let key = SessionKey::new(namespace.clone(), id.clone());
                    store.save(&key, &record).await.map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })?;
            let after = rss_bytes();
            std::hint::black_box(&store);
            (before, after, key_len)
        }
        "dashmap" => {
            let map: DashMap<String, Bytes> = DashMap::new();
            let before = rss_bytes();
            for (i, id) in ids.iter().enumerate() {
                map.insert(
                    format!("bench:{}", id.as_str()),
                    Bytes::from(vec![i as u8; payload_len]),
                );
            }
            let after = rss_bytes();
            std::hint::black_box(&map);
            (before, after, "bench:".len() + 22)
        }
        other => return Err(format!("unknown footprint subject `{other}`")),
    };
    let per_entry = after.saturating_sub(before) as f64 / n.max(1) as f64;
    println!("FOOTPRINT per_entry={per_entry:.1} key_len={key_len} payload_len={payload_len} entries={n}");
    Ok(())
}

/// Runs the child for `subject` and parses its line.
pub(crate) fn measure(subject: &str, n: usize, payload_len: usize) -> Result<Footprint, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .args(["footprint", subject, &n.to_string(), &payload_len.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "footprint {subject} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("FOOTPRINT"))
        .ok_or("footprint printed nothing")?;
    let field = |name: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Ok(Footprint {
        entries: field("entries").unwrap_or(0.0) as usize,
        per_entry: field("per_entry").unwrap_or(f64::NAN),
        key_len: field("key_len").unwrap_or(0.0) as usize,
        payload_len: field("payload_len").unwrap_or(0.0) as usize,
    })
}
