//! What a backend implements a [`SessionStore`](crate::SessionStore) with:
//! the record it stores, the envelope's byte layout (for scripts that read
//! or compare header fields in place), the rules every store shares, and the
//! [`Partition`] a store made of independent parts names each key's part with, and
//! [`redact_url`], which hides the passwords of connection strings before they are shown.
//!
//! Applications rarely need this module; [`Sessions`](crate::Sessions) and the
//! crate root are their API.

pub use crate::codec::{decode_payload, CodecId};
pub use crate::envelope::{
    cap_deadline, decode_entry, decode_header, encode_tombstone, Entry, Record, CODEC_OFFSET,
    CREATED_AT_OFFSET, EXPIRES_AT_OFFSET, FLAGS_OFFSET, FLAG_TOMBSTONE, FORMAT_OFFSET, FORMAT_VERSION,
    HEADER_LEN, MAGIC, MAX_EXPIRES_AT_OFFSET, PAYLOAD_LEN_OFFSET, UPDATED_AT_OFFSET, VERSION_OFFSET,
};
pub use crate::error::{clip, clip_to};
pub use crate::expiry::now_ms;
pub use crate::partition::Partition;
pub use crate::principals::{is_principal_index, parse_stored_id, principal_index_id};
pub use crate::reconcile::{decide, Change, Decision, Reconciled, Stored, Tombstone};
pub use crate::redact::{redact_url, REDACTED};
pub use crate::scan::parse_backend_key;
pub use crate::store::{check_size, stamp};
