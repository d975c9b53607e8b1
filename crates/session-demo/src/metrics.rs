//! Prometheus for the session metrics: the recorder the demo installs, for a service to copy.
//!
//! A Prometheus exporter publishes a histogram as `_bucket` series only when it has buckets
//! for it; without, it publishes a summary (`quantile` series computed in each process),
//! which cannot be aggregated across instances and which the queries in
//! `docs/operations.md` do not read. [`prometheus_builder`] gives the latency histogram
//! ([`OPERATION_DURATION`]) the buckets [`LATENCY_BUCKETS`] (25 µs to 2.5 s);
//! [`install_prometheus`] installs that as the process's recorder.
//!
//! Install it **before** building the stores: they register their metric handles when built
//! (the fallback) or on their first call (`Instrumented`), with whatever recorder is
//! installed then.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let prometheus = session_demo::metrics::install_prometheus()?;
//! let settings = session_store::Settings::default();
//! let built = session_store::build(&settings).await?;
//! // ... serve the sessions, and `prometheus.render()` at GET /metrics.
//! # let _ = (built, prometheus.render());
//! # Ok(()) }
//! ```

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use session_store::instrument::{LATENCY_BUCKETS, OPERATION_DURATION};

/// A Prometheus exporter builder with [`LATENCY_BUCKETS`] for [`OPERATION_DURATION`], to
/// add more to (global labels, buckets for the service's own histograms) before
/// installing it.
///
/// # Errors
/// None in practice: [`BuildError::EmptyBucketsOrQuantiles`] for empty buckets.
pub fn prometheus_builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(OPERATION_DURATION.to_owned()), LATENCY_BUCKETS)
}

/// Installs [`prometheus_builder`]'s recorder as the process's `metrics` recorder; the
/// handle renders the exposition text for `GET /metrics`.
///
/// # Errors
/// [`BuildError::FailedToSetGlobalRecorder`] when a recorder is installed already.
pub fn install_prometheus() -> Result<PrometheusHandle, BuildError> {
    prometheus_builder()?.install_recorder()
}
