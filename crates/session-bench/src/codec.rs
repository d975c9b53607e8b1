//! Codec cost: encoding and decoding the benchmark session with bincode and with JSON.

use std::time::{Duration, Instant};

use session_core::backend::decode_payload;
use session_core::CodecKind;

use crate::payload::{self, TaskSession};

/// One codec's figures from one round.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CodecCell {
    /// Nanoseconds per encode.
    pub(crate) encode_ns: f64,
    /// Nanoseconds per decode.
    pub(crate) decode_ns: f64,
    /// Encoded size in bytes.
    pub(crate) size: usize,
}

/// The codecs compared, by name.
pub(crate) const CODECS: [(&str, CodecKind); 2] =
    [("bincode", CodecKind::Bincode), ("json", CodecKind::Json)];

/// Measures one codec for about `time` (half encoding, half decoding) on this thread.
pub(crate) fn measure(kind: CodecKind, time: Duration) -> CodecCell {
    let value = payload::session();
    let encoded = match kind.encode(&value, "bench") {
        Ok(bytes) => bytes,
        Err(e) => panic!("encoding with {kind}: {e}"),
    };
    let encode_ns = per_op(time / 2, || {
        let bytes = kind.encode(std::hint::black_box(&value), "bench");
        std::hint::black_box(bytes.map(|b| b.len()).unwrap_or(0));
    });
    let decode_ns = per_op(time / 2, || {
        let decoded: Result<TaskSession, _> =
            decode_payload(kind.id(), std::hint::black_box(&encoded), "bench");
        std::hint::black_box(decoded.is_ok());
    });
    CodecCell {
        encode_ns,
        decode_ns,
        size: encoded.len(),
    }
}

/// Nanoseconds per call of `f`, over batches until `time` has passed.
fn per_op(time: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < time {
        for _ in 0..64 {
            f();
        }
        n += 64;
    }
    start.elapsed().as_nanos() as f64 / n.max(1) as f64
}
