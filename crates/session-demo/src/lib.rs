//! The demo API server: task and orchestrator sessions over HTTP, stored in
//! whatever backend the configuration picks (memory, Redis, fallback).
//!
//! | method and path | does | answers |
//! |---|---|---|
//! | `POST /api/sessions/{kind}` | create; body is the session JSON | 201 `{"id": "..."}` |
//! | `GET /api/sessions/{kind}/{id}` | load | 200 session JSON, 404 |
//! | `PUT /api/sessions/{kind}/{id}` | replace; `If-Match: <version>` makes it compare-and-set | 204, 404, 412 |
//! | `DELETE /api/sessions/{kind}/{id}` | delete | 204, 404 |
//! | `PUT /api/sessions/{kind}/{id}/principal` | bind to a principal (a login); body `{"principal": "..."}` | 204, 404, 400 |
//! | `GET /api/principals/{principal}/sessions/{kind}` | the principal's live sessions: `id_hash` (never the id), times | 200 `{"sessions": [...]}` |
//! | `DELETE /api/principals/{principal}/sessions/{kind}` | log out everywhere | 200 `{"ended": n, "pending": false}`; 202 with `"pending": true` when kept for replay (a fallback during an outage) |
//! | `GET /health` | backend, primary up/down, fallback state, journal length | 200 JSON; 503, same body, when the store can serve no session |
//! | `GET /metrics` | Prometheus text ([`metrics::install_prometheus`]) | 200 |
//!
//! `kind` is `task` or `orchestrator`. Responses to session requests carry
//! `ETag: "<version>"`, the session's opaque version token as 16 lowercase
//! hex digits; it changes with every write and has no order. `If-Match`
//! takes it back quoted (`"00ab…"`), weak (`W/"00ab…"`) or bare, or `*`
//! (any version); anything else is a 400. A `PUT` keeps the session's
//! creation time and lifetime cap, and answers 404 once it is gone.
//!
//! A bad id, body or `If-Match` is a 400 with a JSON error, a body over the
//! size limit a 413, a store that is unavailable or refuses the write (out
//! of memory, read-only, no permission) a 503.
//!
//! `/health` is a readiness probe: 503 when the store's health is `down` —
//! memory never; Redis when it does not answer; a fallback store only when
//! neither the primary nor the secondary answers (during a Redis outage it
//! serves from memory, `degraded`, and answers 200).

pub mod app;
pub mod metrics;
pub mod model;
pub mod simulator;

pub use app::{router, AppState, MetricsRender};

/// The workspace README's Rust code, compiled as doc tests (here, in a crate that is not
/// published, whose package would not hold the README).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
