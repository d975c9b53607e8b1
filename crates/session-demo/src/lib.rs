//! The demo API server: task and orchestrator sessions over HTTP, stored in
//! whatever backend the configuration picks (memory, Redis, fallback).
//!
//! | method and path | does | answers |
//! |---|---|---|
//! | `POST /api/sessions/{kind}` | create; body is the session JSON | 201 `{"id": "..."}` |
//! | `GET /api/sessions/{kind}/{id}` | load | 200 session JSON, 404 |
//! | `PUT /api/sessions/{kind}/{id}` | replace; `If-Match: <version>` makes it compare-and-set | 204, 404, 412 |
//! | `DELETE /api/sessions/{kind}/{id}` | delete | 204, 404 |
//! | `GET /health` | backend, primary up/down, fallback state, journal length | 200 JSON |
//! | `GET /metrics` | Prometheus text | 200 |
//!
//! `kind` is `task` or `orchestrator`. Responses to session requests carry
//! `ETag: "<version>"`. A bad id or body is a 400 with a JSON error, a body
//! over the size limit a 413, an unavailable store a 503.

pub mod app;
pub mod model;
pub mod simulator;

pub use app::{router, AppState, MetricsRender};
