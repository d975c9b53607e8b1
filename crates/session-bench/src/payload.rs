//! The session every case stores: a chat-task session of about 1 KiB, as the demo's `TaskSession`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use session_core::backend::{now_ms, CodecId, Record};
use session_core::{Bytes, CodecKind, Meta, Version};

/// A chat message.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct Message {
    role: String,
    content: String,
}

/// The benchmark's session value (the demo's `TaskSession` shape).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TaskSession {
    task_id: String,
    state: String,
    messages: Vec<Message>,
    variables: BTreeMap<String, String>,
}

/// The session value: eight messages and four variables, about 1 KiB (bincode) to 1.3 KiB (JSON).
pub(crate) fn session() -> TaskSession {
    let lines = [
        "Plan the migration of the session storage from in-memory dictionaries to Redis, one namespace at a time.",
        "Namespaces task and orchestrator move first; keys keep the omnia:session: prefix and a one-hour TTL.",
        "A fallback to memory covers Redis outages; writes made there are journaled and replayed on recovery.",
        "Measure the load and save latency at p50 and p99 before and after, on the same payload and key space.",
        "Roll back by configuration only: switch the backend setting and restart, no data migration needed.",
        "Confirm that deleted sessions stay deleted through an outage and that no write acknowledged is lost.",
        "Then raise the pool size only if the client, not the server, is the bottleneck at the expected load.",
        "Done when the dashboards show hits, misses, fallback state and journal length for every instance.",
    ];
    TaskSession {
        task_id: "task-7f3a9c2e-1b4d-4e8f-a6b5-0c9d8e7f6a5b".to_owned(),
        state: "in_progress".to_owned(),
        messages: lines
            .iter()
            .enumerate()
            .map(|(i, line)| Message {
                role: if i % 2 == 0 { "user" } else { "assistant" }.to_owned(),
                content: (*line).to_owned(),
            })
            .collect(),
        variables: [
            ("locale", "en-GB"),
            ("model", "chat-large-2"),
            ("tenant", "acme-eu-west"),
            ("trace", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    }
}

/// The payload every record-level case stores: the session in the default codec (bincode).
pub(crate) fn payload() -> Bytes {
    match CodecKind::Bincode.encode(&session(), "bench") {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => panic!("encoding the benchmark session failed: {e}"),
    }
}

/// A record carrying `payload`, live for three hours.
pub(crate) fn record(payload: Bytes) -> Record {
    let now = now_ms();
    Record {
        meta: Meta {
            version: Version::NONE,
            created_at: now,
            updated_at: now,
            expires_at: now + 3 * 3_600_000,
            max_expires_at: 0,
        },
        codec: CodecId::BINCODE,
        payload,
    }
}

/// The session as tower-sessions holds it: one entry `"task"` in its data map.
pub(crate) fn tower_data() -> std::collections::HashMap<String, serde_json::Value> {
    let value = match serde_json::to_value(session()) {
        Ok(v) => v,
        Err(e) => panic!("the benchmark session is not JSON: {e}"),
    };
    std::iter::once(("task".to_owned(), value)).collect()
}
