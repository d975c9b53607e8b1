//! [`FallbackStore<P, S>`]: serve sessions from a primary store (Redis, say)
//! and, while it is down, from a secondary (memory, say) — then put what
//! happened during the outage back into the primary.
//!
//! It wraps any two [`SessionStore`](session_core::SessionStore)s and knows
//! nothing of Redis or memory. Unlike a naive "check Redis at start-up, else
//! use memory" fallback, it keeps checking the primary after start-up, makes
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
//!      partition_health() answers |                      |     |
//!                                 v                      |     |
//!                              Replaying -- primary -----+     |
//!                                 |         fails again        |
//!                                 |                            |
//!                                 +-- nothing left to replay --+
//! ```
//!
//! **One circuit per partition.** The machine above runs once per partition of the primary
//! ([`SessionStore::partition`](session_core::SessionStore::partition)): a part that fails
//! and recovers as a unit. A store that is one unit — standalone Redis, sentinel, memory, any
//! store that keeps the trait's defaults — has one partition, and then this is one circuit
//! exactly as described. A Redis Cluster store has one per node: a failing node opens the
//! circuit of its own keys only, and sessions on the other nodes go on being served by Redis
//! (see *Partitions* below).
//!
//! * **Closed** — every call goes to the primary, under the fallback's own
//!   deadline (`primary_timeout_ms`). A temporary error
//!   ([`Error::is_temporary`](session_core::Error::is_temporary):
//!   `Unavailable`, `Timeout`) or that deadline fails *the call itself* over to
//!   the secondary, so the caller sees success, and counts toward opening the
//!   circuit of the key's partition. Permanent errors (`Corrupt`, `Conflict`, `NotFound`,
//!   `AlreadyExists`, `InvalidId`, `TooLarge`, `Backend`, ...) are returned as
//!   they are: a failover would hide a bug or a data problem.
//! * **Open** / **Probing** — calls on the partition's keys go straight to the secondary, with
//!   no wait on the primary. A background task probes the partition
//!   ([`SessionStore::partition_health`](session_core::SessionStore::partition_health); for a
//!   store of one partition, its `health()`) with exponential backoff and jitter
//!   (`probe_min_ms` to `probe_max_ms`), each open partition on its own schedule. It holds
//!   only a weak reference and ends when the store is dropped.
//! * **Replaying** — the partition answered a probe. Each journaled session whose partition
//!   answers is replayed under its key's lock (`replay_concurrency` at a time); all other
//!   sessions of the partition are served by the primary again. When no journaled session
//!   belongs to it any more the circuit closes. If the primary fails during replay, the
//!   circuit opens again and replay resumes later where it stopped.
//!
//! # Partitions
//!
//! A key's partition is asked of the primary whenever the fallback routes or replays it, so a
//! key may change partition (a cluster failover promotes a replica: another node). What that
//! means:
//!
//! * **Healthy path.** While every circuit is closed and the journal is empty, a call costs
//!   what it cost with one circuit: two atomic loads (the aggregate state and the journal
//!   length), and no partition is looked up. Only while some circuit is open is the key's
//!   partition looked up, to route it.
//! * **Replay follows the current partition.** A journaled session is replayed when its
//!   partition *now* answers; while that partition is open it waits, served by the secondary
//!   (read-your-writes). A partition no key maps to any more (a failed-over node) answers its
//!   probe as up, by the trait's contract, so its circuit ends and the sessions journaled
//!   under it are replayed under their new partition.
//! * **Failures are blamed on a partition** when the call had one: a keyed call on its key's,
//!   `count` and `stats` on [`Partition::WHOLE`](session_core::backend::Partition::WHOLE) (the
//!   store as a whole). A `rotate` whose two ids are on different partitions fails over
//!   without opening either (the error does not say which failed). A batch (`load_many`,
//!   `save_many`) spanning partitions that fails is sent again per partition, so only the
//!   failing partitions' keys are failed over.
//! * `save_many` with a key of an open partition (or a journaled key) goes wholly to the
//!   secondary, as with one circuit (a record over the size limit is refused before anything
//!   is written); its other keys are journaled and replayed at once.
//! * [`FallbackStore::state`] is the aggregate (open if any partition is open, ...; see
//!   [`CircuitState`]); [`FallbackStore::open_partitions`] and
//!   [`FallbackStore::partition_state`] say which.
//!
//! # The journal
//!
//! Every write or delete served by the secondary — in any state, including
//! the failed-over call that opened the circuit — records its key in the
//! journal: key → latest pending operation (`Write` or `Tombstone`), its time,
//! and its **base**: the primary's version the first change was made on (from
//! the warm copy below), or none. Repeated operations on one key coalesce. The
//! value to replay is read from the secondary at replay time, so it is always
//! the last acknowledged state.
//!
//! A session is in the journal exactly when the secondary holds its
//! authoritative state. So, while its partition's circuit is open:
//!
//! * a session written or deleted during the outage reads as the secondary
//!   has it (read-your-writes), also during replay;
//! * a session this instance served while healthy is in the **warm copy**
//!   (`warm_entries`, `warm_bytes`): it stays readable, and a change copies it
//!   into the secondary and journals it against the copy's version;
//! * a session this instance holds no copy of cannot be told apart from one
//!   that does not exist: loads, updates, `save_if`, `touch` and `rotate` of it
//!   are a temporary [`Error::Unavailable`](session_core::Error::Unavailable)
//!   ("can't tell": an application answers 503 and keeps the user's cookie),
//!   never a miss; a delete of it answers `true` and is journaled, so the
//!   logout is applied on recovery. When the call tried the primary and *that*
//!   failed, its outcome there is unknown, and the primary's own error is
//!   returned instead;
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
//! Replay of one session, under its key lock, is one atomic
//! [`SessionStore::reconcile`](session_core::SessionStore::reconcile)`(key, base, change)`
//! on the primary — never a read followed by a blind write — by one rule
//! ([`session_core::backend::decide`]):
//!
//! * the change applies if the primary still holds its base (or nothing, for a
//!   change based on none);
//! * otherwise it is a *conflict* (counted): a **delete wins** over any session,
//!   a **tombstone wins** over any write not based on it, and of two writes the
//!   greater `(updated_at, version)` wins;
//! * a `Write` whose record expired during the outage becomes `Expire`: the
//!   primary's older state goes too, unless another instance wrote it since.
//!
//! Deletes leave tombstones in the primary ([`FallbackStore::new`] refuses a
//! primary that does not keep them), so several instances, each replaying its
//! own journal, in any order, end in one state, and a logout acknowledged
//! anywhere stays a logout.
//!
//! Replay is idempotent: an entry leaves the journal only after the primary
//! answered, and replaying a change twice changes nothing more, so a timed-out
//! write that lands later, or a replay interrupted by another outage, ends in
//! the same state. Live calls on a session still in the journal take the same
//! key lock and are served by the secondary (and re-journaled), so replay never
//! overwrites a live write with an older value; once its entry is replayed, the
//! session's calls go to the primary.
//!
//! # Revoking during an outage
//!
//! A principal's session index (see [`Sessions::bind`](session_core::Sessions::bind)) is
//! the primary's alone: while its partition is open, `bind` and `list` answer a temporary
//! error rather than miss sessions. [`Sessions::revoke_all`](session_core::Sessions::revoke_all)
//! instead is *kept* ([`SessionStore::revoke_principal`](session_core::SessionStore::revoke_principal)):
//! journaled under the index's key and answered [`Revoked::pending`](session_core::Revoked::pending).
//! What this instance holds of the principal's sessions — outage writes in the secondary, warm
//! copies — ends at once (an outage write journaled as a logout, a warm copy marked gone).
//! Replay applies the revocation to the primary: every session first bound by the time it was
//! asked for (plus [`REVOKE_SKEW_MS`](session_core::REVOKE_SKEW_MS), for clock skew) ends
//! there, rotated or bound again since or not, by the delete-wins rule, so an outage write of
//! one of them replayed by another instance, before or after, loses to its tombstone; a
//! session bound later (a new login through an instance that reaches the primary) is not
//! touched. The sessions are ended through this store's routing: one on a partition still
//! open is journaled as a logout and ends when that partition answers. Until this instance
//! has replayed, other instances — which cannot know — go on serving the sessions they read
//! from the primary. While it waits, `bind` and `list` of that principal answer a temporary
//! error on this instance. A later revoke of the same principal replaces the kept one.
//!
//! # Versions across the switch
//!
//! Versions are opaque tokens unique across stores and processes
//! ([`Version`](session_core::Version)), carried by the record: a session
//! written to the secondary during an outage keeps its token when replay
//! copies it into the primary, so a client holding it can go on with
//! `save_if` after recovery. A `save_if` with a token read from the primary
//! before the outage works on a session in the warm copy, is `Conflict` when
//! the session changed since, and `Unavailable` when this instance holds no
//! copy — never a silent overwrite.
//!
//! # Other calls while open
//!
//! `rotate` is performed on the secondary when either id's partition is open: a
//! tombstone is journaled for the old id and a write for the new one. `count` and
//! `stats` come from the secondary while [`Partition::WHOLE`](session_core::backend::Partition::WHOLE)
//! is open (so they count only sessions written during the outage) and from the primary
//! otherwise. `health()` is `Up` when every circuit is closed with an empty journal and the
//! primary is up, `Degraded` otherwise while either store answers, with `primary` and
//! `secondary` as components and extras `journal`, `state` ([`CircuitState::code`] of the
//! aggregate) and `open_partitions`. While the whole primary's circuit is open it reports the
//! last probe instead of waiting on the primary.
//!
//! # Observability
//!
//! [`FallbackStore::state`], [`FallbackStore::open_partitions`],
//! [`FallbackStore::partition_state`], [`FallbackStore::journal_len`] and
//! [`FallbackStore::counters`] ([`FallbackCounters`]: failovers, replayed,
//! conflicts, journal_rejected, transitions, probes, open_partitions, ...), and the
//! metrics in [`metric`] (among them the gauge `session_fallback_open_partitions`).
//! Every series carries the label `store`: [`FallbackConfig::name`], `"fallback"` unless
//! set with [`FallbackConfig::with_name`] — give each fallback store of a process its own
//! name. The handles are registered by [`FallbackStore::new`]: install the `metrics`
//! recorder before it.
//! Failovers, circuit changes and recovery are logged with `tracing::warn!` with the
//! error category (`err.kind().as_str()`) and the partition, never a full session id.
//!
//! # Requirements and limits
//!
//! * **The secondary must not evict.** Configure a memory secondary to reject
//!   writes at its bound instead of evicting; an evicted session would be an
//!   acknowledged outage write lost by the secondary itself. `new` refuses an
//!   evicting one.
//! * **The primary must keep tombstones** (`keeps_tombstones()`); `new` refuses
//!   one that does not.
//! * The journal lives in the process: outage writes not yet replayed are lost
//!   if the process dies (as they would be with any in-memory secondary).
//! * Several processes, each with its own secondary, settle on one state by the
//!   replay rule above: conditional on each change's base, delete wins, and
//!   only two concurrent *writes* are ordered by `(updated_at, version)` —
//!   where clock skew between hosts decides which write wins, never whether a
//!   logout holds.
//! * "The primary is back" is not "the primary still has its sessions": a
//!   primary restarted without persistence comes back empty. Replay restores
//!   what was written during the outage, not what was lost before it.

mod batch;
mod circuits;
mod config;
mod grace;
mod journal;
mod ops;
mod outage;
mod primary;
mod recovery;
mod revoke;
mod route;
mod state;
mod store;
mod warm;
mod whole;

pub use config::FallbackConfig;
pub use state::metric;
pub use state::{CircuitState, FallbackCounters};
pub use store::{FallbackStore, BACKEND};
