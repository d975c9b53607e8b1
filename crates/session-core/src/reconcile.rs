//! Reconciliation: how a write or delete made elsewhere (a fallback's outage
//! journal, replayed later) is applied to a store that others kept writing.
//!
//! The rule gives the same final state whatever order several instances
//! replay in, and whatever their clocks say about deletes:
//!
//! 1. The change applies if the store still holds what it was based on: the
//!    `base` version — a session's, or a tombstone's when the change was made
//!    knowing of that delete (a session created again after its own logout) —
//!    or nothing (no session, no tombstone) for a change based on
//!    [`Version::NONE`]. A base that is gone (expired, or removed without a
//!    tombstone) counts as nothing.
//! 2. Otherwise it is a conflict:
//!    * a **delete wins** over any session it meets (a logout is never undone
//!      by a write it could not have seen), and a **tombstone wins** over any
//!      write not based on it;
//!    * between two writes the greater `(updated_at, version)` wins — the
//!      same answer whichever is stored first. Clock skew between hosts can
//!      only decide which of two concurrent *writes* wins, never a delete.
//!
//! A delete leaves a tombstone: a header-only envelope flagged
//! [`FLAG_TOMBSTONE`](crate::backend::FLAG_TOMBSTONE), carrying the delete's
//! own version, with the deleted session's own deadline (or, for a session
//! the store never held, the store's tombstone lifetime). A delete that meets
//! a tombstone replaces it with its own (the later deadline of the two): the
//! stored tombstone's version names the last delete, so a write based on an
//! earlier one still loses. Every live call treats a tombstone as absent;
//! `create` may replace one, `update` and `save_if` may not.

use crate::envelope::Meta;
use crate::version::Version;

/// What a replayed change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// Store this record (its own version and deadline, as given).
    Write(&'a crate::envelope::Record),
    /// Delete, leaving a tombstone.
    Delete(Tombstone),
    /// The session's last write here has expired since: it is gone if the
    /// store still holds the change's base (nobody wrote it since), and
    /// nothing changes otherwise. No tombstone: nothing was deleted.
    Expire,
}

/// A delete as it is replayed: its token, when it happened, and how long the
/// tombstone must last if the store holds no session to take a deadline from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tombstone {
    /// The delete's own token (a fresh one: a tombstone is a write).
    pub version: Version,
    /// When the delete was made, ms since the Unix epoch.
    pub deleted_at: u64,
    /// The tombstone's deadline when the store holds no session, ms.
    pub until: u64,
}

impl Tombstone {
    /// A tombstone made now with a fresh token, lasting until `until` (ms) when
    /// there is no session to take a deadline from.
    pub fn new(deleted_at: u64, until: u64) -> Tombstone {
        Tombstone {
            version: Version::NONE.or_generate(),
            deleted_at,
            until,
        }
    }

    /// The metadata the tombstone is stored with, given the deadline it gets.
    pub fn meta(&self, deadline: u64) -> Meta {
        Meta {
            version: self.version,
            created_at: self.deleted_at,
            updated_at: self.deleted_at,
            expires_at: deadline,
            max_expires_at: 0,
        }
    }
}

/// What a store holds under a key, as reconciliation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Nothing, or only something past its deadline.
    Absent,
    /// A tombstone, with its metadata.
    Tombstone(Meta),
    /// A live session, with its metadata.
    Live(Meta),
}

/// The outcome of [`SessionStore::reconcile`](crate::SessionStore::reconcile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reconciled {
    /// The store held the change's base: the change is stored.
    Applied,
    /// A conflict the change won: it replaced another state.
    Won,
    /// A conflict the stored state won: nothing changed.
    Kept,
    /// The change was a write already past its deadline: nothing changed.
    Expired,
}

impl Reconciled {
    /// Whether the store holds the change now.
    pub fn stored(self) -> bool {
        matches!(self, Reconciled::Applied | Reconciled::Won)
    }

    /// Whether it was a conflict.
    pub fn conflicted(self) -> bool {
        matches!(self, Reconciled::Won | Reconciled::Kept)
    }
}

/// What a store must do to reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Store the write's record.
    Write,
    /// Store the change's tombstone with this deadline (ms).
    Tombstone(u64),
    /// Keep the stored tombstone, moving its deadline to this (ms).
    Extend(u64),
    /// Remove what the key holds (an expired session's older state), leaving nothing.
    Remove,
    /// Leave the key as it is.
    Keep,
}

/// The rule of this module, for a store that reads `stored` and then writes
/// atomically with that read (under its lock, or in one script). `now` is the
/// store's clock, which judges deadlines.
pub fn decide(stored: Stored, base: Version, change: &Change<'_>, now: u64) -> (Decision, Reconciled) {
    if let Change::Write(record) = change {
        if record.meta.deadline() <= now {
            return (Decision::Keep, Reconciled::Expired);
        }
    }
    if let Change::Expire = change {
        return match stored {
            Stored::Live(meta) if meta.version == base => (Decision::Remove, Reconciled::Applied),
            _ => (Decision::Keep, Reconciled::Expired),
        };
    }
    let based = match stored {
        Stored::Absent => true,
        Stored::Tombstone(meta) | Stored::Live(meta) => meta.version == base,
    };
    let outcome = if based {
        Reconciled::Applied
    } else {
        Reconciled::Won
    };
    match (change, stored) {
        (Change::Delete(t), Stored::Absent) => (Decision::Tombstone(t.until.max(now + 1)), outcome),
        (Change::Delete(_), Stored::Live(meta)) => (Decision::Tombstone(meta.deadline()), outcome),
        // A tombstone meets a tombstone: one deleted state, named by the later delete (so a
        // write based on the earlier one still loses), lasting the longer of the two.
        (Change::Delete(t), Stored::Tombstone(meta)) => (
            Decision::Tombstone(t.until.max(meta.expires_at).max(now + 1)),
            Reconciled::Applied,
        ),
        (Change::Write(_), Stored::Absent) => (Decision::Write, Reconciled::Applied),
        // Written knowing of that very delete (a session created again after it): stored.
        (Change::Write(_), Stored::Tombstone(_)) if based => (Decision::Write, Reconciled::Applied),
        // The tombstone wins, and lasts as long as the write it blocked would have.
        (Change::Write(record), Stored::Tombstone(meta)) => {
            (extend(meta, record.meta.deadline()), Reconciled::Kept)
        }
        (Change::Write(_), Stored::Live(_)) if based => (Decision::Write, Reconciled::Applied),
        (Change::Write(record), Stored::Live(meta)) => {
            let ours = (record.meta.updated_at, record.meta.version.as_u64());
            let theirs = (meta.updated_at, meta.version.as_u64());
            if ours > theirs {
                (Decision::Write, Reconciled::Won)
            } else {
                (Decision::Keep, Reconciled::Kept)
            }
        }
        (Change::Expire, _) => (Decision::Keep, Reconciled::Expired),
    }
}

/// A stored tombstone's deadline moved to `deadline` if that is later.
fn extend(meta: Meta, deadline: u64) -> Decision {
    if deadline > meta.expires_at {
        Decision::Extend(deadline)
    } else {
        Decision::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CodecId;
    use crate::envelope::Record;

    const NOW: u64 = 1_000_000;

    fn record(version: u64, updated_at: u64) -> Record {
        let mut r = Record::new(CodecId::RAW, vec![1u8], NOW + 60_000);
        r.meta.version = Version::from_u64(version);
        r.meta.updated_at = updated_at;
        r
    }

    fn live(r: &Record) -> Stored {
        Stored::Live(r.meta)
    }

    /// Applies a change to a model store the way a backend would.
    fn apply(stored: Stored, base: Version, change: &Change<'_>) -> Stored {
        match decide(stored, base, change, NOW).0 {
            Decision::Write => match change {
                Change::Write(r) => Stored::Live(r.meta),
                _ => unreachable!("only a write writes a record"),
            },
            Decision::Tombstone(deadline) => match change {
                Change::Delete(t) => Stored::Tombstone(t.meta(deadline)),
                _ => unreachable!("only a delete writes a tombstone"),
            },
            Decision::Remove => Stored::Absent,
            Decision::Extend(deadline) => match stored {
                Stored::Tombstone(mut meta) => {
                    meta.expires_at = deadline;
                    Stored::Tombstone(meta)
                }
                _ => unreachable!("only a tombstone is extended"),
            },
            Decision::Keep => stored,
        }
    }

    #[test]
    fn any_replay_order_gives_one_final_state() {
        let b0 = record(1, NOW - 500);
        let a = record(2, NOW - 300);
        let b = record(3, NOW - 100);
        let del = Tombstone {
            version: Version::from_u64(4),
            deleted_at: NOW - 200,
            until: NOW + 90_000,
        };
        let changes = [Change::Write(&a), Change::Write(&b), Change::Delete(del)];
        let base = b0.meta.version;
        // Every order of every subset, from the common base.
        let mut finals = Vec::new();
        for order in [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            let mut s = live(&b0);
            for i in order {
                s = apply(s, base, &changes[i]);
            }
            finals.push(s);
        }
        assert!(
            finals.iter().all(|f| matches!(f, Stored::Tombstone(_))),
            "{finals:?}"
        );
        // Writes alone: the greater (updated_at, version) wins in both orders.
        let ab = apply(apply(live(&b0), base, &changes[0]), base, &changes[1]);
        let ba = apply(apply(live(&b0), base, &changes[1]), base, &changes[0]);
        assert_eq!(ab, ba);
        assert_eq!(ab, live(&b));
    }

    #[test]
    fn a_delete_wins_whatever_the_clocks_say() {
        // The write's host clock is 2 s ahead: its updated_at is later than the delete's.
        let b0 = record(1, NOW - 5_000);
        let skewed = record(2, NOW + 2_000);
        let del = Tombstone::new(NOW - 50, NOW + 60_000);
        let base = b0.meta.version;
        let w_then_d = apply(
            apply(live(&b0), base, &Change::Write(&skewed)),
            base,
            &Change::Delete(del),
        );
        let d_then_w = apply(
            apply(live(&b0), base, &Change::Delete(del)),
            base,
            &Change::Write(&skewed),
        );
        assert!(matches!(w_then_d, Stored::Tombstone(_)));
        assert_eq!(w_then_d, d_then_w);
    }

    #[test]
    fn tombstones_take_the_sessions_deadline_or_their_own() {
        let b0 = record(1, NOW - 5_000);
        let del = Tombstone::new(NOW, NOW + 90_000);
        assert_eq!(
            decide(live(&b0), b0.meta.version, &Change::Delete(del), NOW).0,
            Decision::Tombstone(b0.meta.deadline())
        );
        assert_eq!(
            decide(Stored::Absent, Version::NONE, &Change::Delete(del), NOW).0,
            Decision::Tombstone(NOW + 90_000)
        );
    }

    #[test]
    fn expired_writes_change_nothing() {
        let mut old = record(2, NOW - 100);
        old.meta.expires_at = NOW - 1;
        assert_eq!(
            decide(Stored::Absent, Version::NONE, &Change::Write(&old), NOW),
            (Decision::Keep, Reconciled::Expired)
        );
    }

    #[test]
    fn a_write_based_on_what_is_stored_applies() {
        let b0 = record(1, NOW - 5_000);
        let next = record(2, NOW - 6_000); // even with an older clock
        assert_eq!(
            decide(live(&b0), b0.meta.version, &Change::Write(&next), NOW),
            (Decision::Write, Reconciled::Applied)
        );
        // A tombstone is never overwritten by a replayed write made without knowing of it.
        let t = Tombstone::new(NOW, NOW + 1).meta(NOW + 1);
        assert_eq!(
            decide(Stored::Tombstone(t), Version::NONE, &Change::Write(&next), NOW),
            (Decision::Extend(next.meta.deadline()), Reconciled::Kept),
            "the tombstone stays, as long as the write it blocked"
        );
        let other = Tombstone::new(NOW, NOW + 1).meta(NOW + 1);
        assert_eq!(
            decide(Stored::Tombstone(other), t.version, &Change::Write(&next), NOW).1,
            Reconciled::Kept,
            "based on another delete"
        );
    }

    #[test]
    fn a_write_made_after_the_stored_delete_applies() {
        // The session was deleted (this tombstone), then created again by someone who saw it.
        let t = Tombstone::new(NOW - 1_000, NOW + 60_000).meta(NOW + 60_000);
        let again = record(7, NOW - 10);
        assert_eq!(
            decide(Stored::Tombstone(t), t.version, &Change::Write(&again), NOW),
            (Decision::Write, Reconciled::Applied)
        );
    }

    #[test]
    fn a_delete_meeting_a_tombstone_names_itself() {
        let t = Tombstone::new(NOW - 1_000, NOW + 60_000).meta(NOW + 60_000);
        let del = Tombstone::new(NOW, NOW + 5_000);
        let after = apply(Stored::Tombstone(t), Version::NONE, &Change::Delete(del));
        assert_eq!(
            after,
            Stored::Tombstone(del.meta(NOW + 60_000)),
            "the longer deadline"
        );
        // A write that knew only of the first delete now loses to the second.
        let again = record(7, NOW - 10);
        assert_eq!(
            decide(after, t.version, &Change::Write(&again), NOW).1,
            Reconciled::Kept
        );
    }

    /// What a model store ends with, as compared across orders: deleted, or the version stored.
    fn outcome(s: Stored) -> Option<Version> {
        match s {
            Stored::Live(meta) => Some(meta.version),
            Stored::Tombstone(_) | Stored::Absent => None,
        }
    }

    /// One record per generated change `(kind, age, ttl)`: a distinct token, updated `age` ms ago.
    fn records_of(spec: &[(u8, u64, u64)]) -> Vec<Record> {
        spec.iter()
            .enumerate()
            .map(|(i, &(_, at, _))| record(100 + i as u64, NOW - at))
            .collect()
    }

    /// The generated changes: kind 0 writes its record, 1 deletes (a tombstone lasting `ttl`),
    /// anything else is an expiry.
    fn changes_of<'a>(spec: &[(u8, u64, u64)], records: &'a [Record]) -> Vec<Change<'a>> {
        spec.iter()
            .zip(records)
            .map(|(&(kind, at, ttl), r)| match kind {
                0 => Change::Write(r),
                1 => Change::Delete(Tombstone {
                    version: Version::from_u64(900 + r.meta.version.as_u64()),
                    deleted_at: NOW - at,
                    until: NOW + ttl,
                }),
                _ => Change::Expire,
            })
            .collect()
    }

    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![Vec::new()];
        }
        let mut out = Vec::new();
        for p in permutations(n - 1) {
            for at in 0..=p.len() {
                let mut q = p.clone();
                q.insert(at, n - 1);
                out.push(q);
            }
        }
        out
    }

    proptest::proptest! {
        /// Up to four instances replay changes made from one common state, in every order:
        /// one final state, and it is deleted whenever any of them deleted.
        #[test]
        fn every_replay_order_agrees(
            initial in 0u8..3,
            changes in proptest::collection::vec((0u8..3, 0u64..4_000, 10u64..1_000), 1..=4),
        ) {
            let b0 = record(1, NOW - 10_000);
            let start = match initial {
                0 => Stored::Absent,
                1 => Stored::Live(b0.meta),
                _ => Stored::Tombstone(Tombstone::new(NOW - 20_000, NOW + 5_000).meta(NOW + 5_000)),
            };
            let base = match start {
                Stored::Live(meta) => meta.version,
                _ => Version::NONE,
            };
            let records = records_of(&changes);
            let changes = changes_of(&changes, &records);
            let any_delete = changes.iter().any(|c| matches!(c, Change::Delete(_)));
            let mut finals = Vec::new();
            for order in permutations(changes.len()) {
                let mut s = start;
                for i in order {
                    s = apply(s, base, &changes[i]);
                }
                finals.push(outcome(s));
            }
            proptest::prop_assert!(finals.windows(2).all(|w| w[0] == w[1]), "{finals:?}");
            if any_delete || matches!(start, Stored::Tombstone(_)) {
                proptest::prop_assert_eq!(finals[0], None);
            }
        }

        /// A session deleted and then written again by instances that saw the delete (their
        /// changes based on its tombstone), replayed in every order: one final state — deleted
        /// if any of them deleted again, else the greatest write.
        #[test]
        fn writes_after_a_delete_agree_in_every_order(
            changes in proptest::collection::vec((0u8..2, 0u64..4_000, 10u64..1_000), 1..=4),
        ) {
            let t = Tombstone::new(NOW - 20_000, NOW + 5_000).meta(NOW + 5_000);
            let start = Stored::Tombstone(t);
            let records = records_of(&changes);
            let changes = changes_of(&changes, &records);
            let any_delete = changes.iter().any(|c| matches!(c, Change::Delete(_)));
            let greatest = records
                .iter()
                .zip(&changes)
                .filter(|(_, c)| matches!(c, Change::Write(_)))
                .map(|(r, _)| (r.meta.updated_at, r.meta.version.as_u64()))
                .max()
                .map(|(_, v)| Version::from_u64(v));
            for order in permutations(changes.len()) {
                let mut s = start;
                for i in order {
                    s = apply(s, t.version, &changes[i]);
                }
                if any_delete {
                    proptest::prop_assert_eq!(outcome(s), None);
                } else {
                    proptest::prop_assert_eq!(outcome(s), greatest);
                }
            }
        }
    }
}
