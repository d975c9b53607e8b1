//! The session-core conformance suite against `MemoryStore`.

use session_memory::MemoryHarness;

async fn harness() -> Option<MemoryHarness> {
    Some(MemoryHarness::default())
}

session_core::conformance_tests!(harness);
