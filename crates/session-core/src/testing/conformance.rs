//! The conformance suite: one `pub async fn` per behaviour of the
//! [`SessionStore`] contract. [`conformance_tests!`](crate::conformance_tests)
//! expands them into named tests for a backend.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{random_prefix, Harness, TestStore};
use crate::codec::{CodecId, CodecKind};
use crate::envelope::Record;
use crate::expiry::now_ms;
use crate::id::SessionId;
use crate::key::{Namespace, SessionKey};
use crate::store::SessionStore;
use crate::typed::Sessions;

mod bad_input;
mod batches;
mod codecs;
mod compare_and_set;
mod count_stats_health;
mod create_update;
mod evolution;
mod expiry;
mod isolation;
mod listing;
mod load_save_delete;
mod principals;
mod rotate;
mod round_trips;
mod tombstones;
pub use bad_input::*;
pub use batches::*;
pub use codecs::*;
pub use compare_and_set::*;
pub use count_stats_health::*;
pub use create_update::*;
pub use evolution::*;
pub use expiry::*;
pub use isolation::*;
pub use listing::*;
pub use load_save_delete::*;
pub use principals::*;
pub use rotate::*;
pub use round_trips::*;
pub use tombstones::*;

/// The session type the suite stores: shaped like the demo's task session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestSession {
    /// A task id.
    pub task_id: String,
    /// A state name.
    pub state: String,
    /// Chat messages as (role, content).
    pub messages: Vec<(String, String)>,
    /// String variables.
    pub variables: BTreeMap<String, String>,
    /// A counter.
    pub n: u64,
}

impl TestSession {
    /// A session with `n` as its counter and a few fields filled in.
    pub fn sample(n: u64) -> Self {
        TestSession {
            task_id: format!("task-{n}"),
            state: "running".into(),
            messages: vec![
                ("user".into(), "hello".into()),
                ("assistant".into(), "hi, how can I help? ✓".into()),
            ],
            variables: [("lang".to_string(), "en".to_string())].into(),
            n,
        }
    }
}

const HOUR_MS: u64 = 3_600_000;

fn ns(name: &str) -> Namespace {
    Namespace::new(name).unwrap()
}

fn new_key(namespace: &str) -> SessionKey {
    SessionKey::new(ns(namespace), SessionId::generate().unwrap())
}

/// A record with `payload`, expiring `ttl_ms` from now.
fn rec(payload: &[u8], ttl_ms: u64) -> Record {
    Record::new(CodecId::RAW, payload.to_vec(), now_ms() + ttl_ms)
}

async fn open(h: &dyn Harness) -> TestStore {
    h.open(random_prefix()).await
}

fn typed(store: &Arc<dyn SessionStore>, codec: CodecKind) -> Sessions<TestSession> {
    Sessions::new(Arc::clone(store), ns("task")).with_codec(codec)
}

async fn payload_of(store: &Arc<dyn SessionStore>, key: &SessionKey) -> Option<Bytes> {
    store.load(key).await.unwrap().map(|r| r.payload)
}

/// Expands the conformance suite into one `#[tokio::test]` per behaviour.
///
/// `$make` is an `async fn() -> Option<H>` where `H:`[`Harness`]; `None`
/// skips (for a server that is not configured — make it panic instead when
/// the run requires the server). The calling crate needs `tokio` with the
/// `macros` and `rt-multi-thread` features as a dev-dependency.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@expand $make;
            round_trip_json, round_trip_bincode, raw_record_round_trips_exactly, empty_payload_is_stored,
            load_missing_is_none, save_creates_when_absent, save_overwrites, every_write_stores_a_new_version,
            a_records_own_version_is_kept, envelopes_from_before_tokens_still_work,
            created_at_is_carried_by_the_writer, delete_removes,
            delete_missing_is_false, create_assigns_a_version, create_on_existing_fails,
            concurrent_create_has_one_winner,
            update_existing_writes, update_missing_is_not_found, update_after_delete_leaves_nothing,
            save_if_matching_version_writes, save_if_stale_version_conflicts, save_if_missing_is_not_found,
            save_if_after_delete_is_not_found, concurrent_cas_increments_lose_nothing,
            no_aba_after_delete_and_recreate, versions_from_two_stores_never_match,
            rotate_moves_the_session, rotate_missing_is_not_found, rotate_onto_existing_id_fails_and_keeps_both,
            update_of_rotated_id_is_not_found, rotate_finishes_an_interrupted_move,
            rotate_to_its_own_id_changes_nothing, load_many_answers_a_repeated_key_each_time,
            absolute_expiry, save_resets_absolute_deadline, expired_is_missing_in_load_many,
            write_with_past_deadline_is_not_visible, past_deadline_write_over_a_live_session_removes_it,
            sliding_expiry_extends_on_load,
            sliding_expiry_stops_at_max_lifetime, touch_extends_the_deadline, touch_missing_is_false,
            deadline_never_passes_max_lifetime,
            namespaces_are_isolated, key_prefixes_are_isolated, nested_key_prefixes_are_isolated,
            invalid_ids_are_rejected_before_io, too_large_is_rejected_by_every_write,
            record_at_the_limit_is_accepted, typed_handle_enforces_its_limit,
            corrupt_plain_text, corrupt_truncated_envelope, corrupt_unknown_format_version, corrupt_unknown_codec,
            corrupt_value_in_load_many_is_per_key, corrupt_value_can_be_overwritten_and_deleted,
            cross_codec_reads, wrong_type_is_a_miss_or_a_codec_error,
            default_codec_is_json, added_field_keeps_old_sessions_loadable, untagged_enum_round_trips,
            internally_tagged_enum_round_trips, flattened_fields_round_trip, map_of_json_values_round_trips,
            bincode_sessions_load_under_the_default_codec, undecodable_session_is_a_counted_miss,
            load_many_keeps_order, empty_batches, save_many_then_load_many, typed_batches,
            count_counts_live_sessions, stats_report, health_is_up, partitions_answer_when_healthy,
            delete_leaves_a_tombstone_live_calls_see_as_absent, load_entry_tells_a_tombstone_from_nothing,
            delete_of_an_unknown_session_leaves_a_bounded_tombstone, save_replaces_a_tombstone,
            reconcile_applies_on_its_base, reconcile_delete_wins_over_a_newer_write,
            reconcile_writes_converge_in_either_order, reconcile_is_idempotent,
            reconcile_skips_an_expired_write, reconcile_refuses_bad_input,
            reconcile_expire_removes_only_its_base,
            delete_leaving_names_its_tombstone, a_delete_over_a_tombstone_replaces_it,
            rotate_leaves_a_tombstone_under_the_old_id,
            scan_lists_every_live_session_once, scan_of_an_empty_store_ends,
            revoke_all_ends_every_session_of_a_principal, a_binding_survives_writes_and_moves_with_rotate,
            a_login_after_a_revoke_survives_it, a_principal_index_is_one_key_that_scans_list,
        );
    };
    (@expand $make:path; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(harness) = $make().await else {
                    eprintln!("skipped: backend not configured");
                    return;
                };
                $crate::testing::conformance::$name(&harness).await;
            }
        )*
    };
}
