//! [`FallbackStore<P, S>`]: serve sessions from a primary store (Redis, say)
//! and, while it is down, from a secondary (memory, say) — then put what
//! happened during the outage back into the primary.
//!
//! It wraps any two [`SessionStore`](session_core::SessionStore)s and knows
//! nothing of Redis or memory. Unlike the fallback of the .NET guide this
//! workspace replaces, it keeps checking the primary after start-up, makes
//! outage writes visible once the primary is back, never undoes a delete made
//! during an outage, and does not make every call wait for a primary timeout.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use session_core::SessionStore;
//! use session_fallback::{FallbackConfig, FallbackStore};
//!
//! async fn build<P: SessionStore, S: SessionStore>(
//!     redis: P,
//!     memory: S,
//! ) -> session_core::Result<Arc<dyn SessionStore>> {
//!     // Works with the primary down: the store then starts open and probes it.
//!     let store = FallbackStore::new(redis, memory, FallbackConfig::default()).await?;
//!     Ok(Arc::new(store))
//! }
//! ```
//!
//! # The state machine
//!
//! ```text
//!  new() --+-- primary up ----> Closed <-----------------------+
//!          |                      |                            |
//!          |                      | temporary error or timeout |
//!          |                      | (failure_threshold in a    |
//!          |                      | row; the failing call      |
//!          |                      | itself is served by the    |
//!          |                      | secondary)                 |
//!          |                      v                            |
//!          +-- primary down --> Open <-------------------+     |
//!                                 | ^                    |     |
//!                backoff + jitter | | still down         |     |
//!                                 v |                    |     |
//!                               Probing                  |     |
//!                                 |                      |     |
//!                health() answers |                      |     |
//!                                 v                      |     |
//!                              Replaying -- primary -----+     |
//!                                 |         fails again        |
//!                                 |                            |
//!                                 +------ journal drained -----+
//! ```
//!
//! * **Closed** — every call goes to the primary, under the fallback's own
//!   deadline (`primary_timeout_ms`). A temporary error
//!   ([`Error::is_temporary`](session_core::Error::is_temporary):
//!   `Unavailable`, `Timeout`) or that deadline fails *the call itself* over to
//!   the secondary, so the caller sees success, and counts toward opening the
//!   circuit. Permanent errors (`Corrupt`, `Conflict`, `NotFound`,
//!   `AlreadyExists`, `InvalidId`, `TooLarge`, `Backend`, ...) are returned as
//!   they are: a failover would hide a bug or a data problem.
//! * **Open** / **Probing** — calls go straight to the secondary, with no wait
//!   on the primary. A background task probes the primary's `health()` with
//!   exponential backoff and jitter (`probe_min_ms` to `probe_max_ms`). It holds
//!   only a weak reference and ends when the store is dropped.
//! * **Replaying** — the primary answered a probe. Each journaled session is
//!   replayed under its key's lock (`replay_concurrency` at a time); all other
//!   sessions are served by the primary again. When the journal is empty the
//!   circuit closes. If the primary fails during replay, the circuit opens
//!   again and replay resumes later where it stopped.
//!
//! # The journal
//!
//! Every write or delete served by the secondary — in any state, including
//! the failed-over call that opened the circuit — records its key in the
//! journal: key → latest pending operation (`Write` or `Tombstone`) and its
//! time (the record's `updated_at`, or the time of the delete). Repeated
//! operations on one key coalesce. The value to replay is read from the
//! secondary at replay time, so it is always the last acknowledged state.
//!
//! A session is in the journal exactly when the secondary holds its
//! authoritative state. So, while the circuit is open:
//!
//! * a session written or deleted during the outage reads as the secondary
//!   has it (read-your-writes), also during replay;
//! * a session *not* touched during the outage lives only in the primary,
//!   which is down: `load` misses, `update` / `save_if` / `rotate` are
//!   `NotFound`, `touch` is `false`, and `delete` journals a tombstone
//!   (returning `false`, since the secondary did not hold it) so the session is
//!   deleted from the primary on replay. The one exception: when a call tried
//!   the primary and *that* failed, its outcome there is unknown (a timed-out
//!   write may have landed), so a conditional write the
//!   secondary cannot perform returns the primary's error rather than a false
//!   `NotFound`;
//! * before a session enters the journal its key is cleared in the secondary,
//!   and after replay it is removed from the secondary: the secondary never
//!   serves a stale copy in a later outage, and stays small.
//!
//! **Bound.** The journal holds at most `max_journal_keys` sessions. At the
//! bound, a write or delete of a session *not* already in the journal is
//! refused with [`Error::Unavailable`](session_core::Error::Unavailable)
//! ("fallback journal full: …") before anything is stored — never acknowledged
//! and then dropped. Sessions already journaled keep being accepted. Each
//! refusal is counted (`journal_rejected`) and logged with `tracing::warn!`
//! (namespace and a short hash of the id, never the id).
//!
//! # Replay
//!
//! For each journaled session, under its key lock:
//!
//! * `Write` — read the secondary's record. If it is live, compare with the
//!   primary's: a primary value with a newer `updated_at` is kept (a conflict,
//!   counted; last writer wins); otherwise the record is written into the
//!   primary by compare-and-set on the version just read (`create` if absent),
//!   with its own absolute deadline, so a replay write that lands late cannot
//!   overwrite a newer value. If the record has expired (or is gone), it is not
//!   replayed, and an older primary value is deleted as for a tombstone — the
//!   last acknowledged state is "expired".
//! * `Tombstone` — delete in the primary, unless the primary holds a value
//!   updated after the delete (a conflict, counted, kept).
//!
//! Replay is idempotent: an entry leaves the journal only after the primary
//! acknowledged it, and each step starts from the primary's current value, so
//! a timed-out write that lands later, or a replay interrupted by another
//! outage, ends in the same state. Live calls on a session still in the
//! journal take the same key lock and are served by the secondary (and
//! re-journaled), so replay never overwrites a live write with an older
//! value; once its entry is replayed, the session's calls go to the primary.
//!
//! # Versions across the switch
//!
//! Versions are opaque tokens unique across stores and processes
//! ([`Version`](session_core::Version)), carried by the record: a session
//! written to the secondary during an outage keeps its token when replay
//! copies it into the primary, so a client holding it can go on with
//! `save_if` after recovery. A `save_if` with a token the secondary never
//! stored — read from the primary before the outage, say — matches nothing
//! there: `Conflict` or `NotFound`, never a silent overwrite.
//!
//! # Other calls while open
//!
//! `rotate` is performed on the secondary: a tombstone is journaled for the
//! old id and a write for the new one. `count` and `stats` come from the
//! secondary while the circuit is open (so they count only sessions written
//! during the outage) and from the primary otherwise. `health()` is `Up` when
//! the circuit is closed with an empty journal and the primary is up,
//! `Degraded` otherwise while either store answers, with `primary` and
//! `secondary` as components and extras `journal` and `state`
//! ([`CircuitState::code`]). While open it reports the last probe instead of
//! waiting on the primary.
//!
//! # Observability
//!
//! [`FallbackStore::state`], [`FallbackStore::journal_len`] and
//! [`FallbackStore::counters`] ([`FallbackCounters`]: failovers, replayed,
//! conflicts, journal_rejected, transitions, probes, ...). Failovers, circuit
//! changes and recovery are logged with `tracing::warn!` with the error
//! category (`err.kind().as_str()`), never a full session id.
//!
//! # Requirements and limits
//!
//! * **The secondary must not evict.** Configure a memory secondary to reject
//!   writes at its bound instead of evicting; an evicted session would be an
//!   acknowledged outage write lost by the secondary itself.
//! * The journal lives in the process: outage writes not yet replayed are lost
//!   if the process dies (as they would be with any in-memory secondary).
//! * Several processes, each with its own secondary, reconcile by
//!   `updated_at` (last writer wins); clock skew between them decides ties.
//!   A replay delete is not conditional: a write by another process between
//!   replay's read and its delete can be lost.
//! * "The primary is back" is not "the primary still has its sessions": a
//!   primary restarted without persistence comes back empty. Replay restores
//!   what was written during the outage, not what was lost before it.

mod config;
mod journal;
mod recovery;
mod state;
mod store;
mod warm;

pub use config::FallbackConfig;
pub use state::metric;
pub use state::{CircuitState, FallbackCounters};
pub use store::{FallbackStore, BACKEND};
