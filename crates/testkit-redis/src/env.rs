//! The environment-variable contract between `cargo xtask test` and the tests.
//!
//! Tests read these variables at run time with [`std::env::var`] (never
//! `option_env!`), so one compiled test binary runs against every topology.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// URL of a standalone server: `redis://127.0.0.1:P`.
pub const REDIS_URL_ENV: &str = "SESSION_TEST_REDIS_URL";
/// URL of a 3+3 cluster: `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&…`.
pub const CLUSTER_URL_ENV: &str = "SESSION_TEST_REDIS_CLUSTER_URL";
/// URL of the sentinels:
/// `redis-sentinel://127.0.0.1:S1?node=127.0.0.1:S2&node=127.0.0.1:S3&sentinelServiceName=mymaster`.
pub const SENTINEL_URL_ENV: &str = "SESSION_TEST_REDIS_SENTINEL_URL";
/// URL of the TLS server with the ACL user: `rediss://app:PASSWORD@127.0.0.1:P`.
pub const TLS_URL_ENV: &str = "SESSION_TEST_REDIS_TLS_URL";
/// Path of the PEM file of the CA that signed the TLS server's certificate.
pub const TLS_CA_ENV: &str = "SESSION_TEST_REDIS_TLS_CA";
/// Path of a client certificate (PEM), set only when the TLS server requires mTLS.
pub const TLS_CLIENT_CERT_ENV: &str = "SESSION_TEST_REDIS_TLS_CLIENT_CERT";
/// Path of the client certificate's key (PEM), set only when the TLS server requires mTLS.
pub const TLS_CLIENT_KEY_ENV: &str = "SESSION_TEST_REDIS_TLS_CLIENT_KEY";
/// `1` makes a missing server a test failure instead of a skip (set by `cargo xtask test`).
pub const REQUIRE_REDIS_ENV: &str = "SESSION_TEST_REQUIRE_REDIS";
/// The topology under test: `standalone`, `cluster`, `sentinel` or `tls`.
pub const TOPOLOGY_ENV: &str = "SESSION_TEST_TOPOLOGY";
/// `1` enables the fault scenarios (test targets named `faults*`), which start their own servers.
pub const FAULTS_ENV: &str = "SESSION_TEST_FAULTS";
/// The service name the sentinels monitor.
pub const SENTINEL_SERVICE_NAME: &str = "mymaster";
/// URL of a PostgreSQL server: `postgres://session@127.0.0.1:P/postgres` (superuser
/// `session`, no password; set by the `sql` cell of `cargo xtask test`).
pub const POSTGRES_URL_ENV: &str = "SESSION_TEST_POSTGRES_URL";
/// `1` makes a missing PostgreSQL a test failure instead of a skip (set by the `sql` and
/// `faults` cells of `cargo xtask test`).
pub const REQUIRE_POSTGRES_ENV: &str = "SESSION_TEST_REQUIRE_POSTGRES";
/// The directory holding PostgreSQL's `initdb` and `postgres`, for [`crate::Postgres::start`];
/// when unset, Debian's newest `/usr/lib/postgresql/<N>/bin`, else the directory of
/// `postgres` on `PATH`. A machine setting: `cargo xtask test` passes it on to every test.
pub const PG_BINDIR_ENV: &str = "SESSION_TEST_PG_BINDIR";

/// A Redis deployment shape that the test matrix covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topology {
    /// One server.
    Standalone,
    /// Three masters, each with one replica.
    Cluster,
    /// One master, one replica and three sentinels.
    Sentinel,
    /// One server on a TLS-only port with an ACL user and no default user.
    Tls,
}

impl Topology {
    /// Every topology, in the order the matrix runs them.
    pub const ALL: [Topology; 4] = [
        Topology::Standalone,
        Topology::Cluster,
        Topology::Sentinel,
        Topology::Tls,
    ];

    /// The lower-case name used in [`TOPOLOGY_ENV`], on the xtask command line and in paths.
    pub fn name(self) -> &'static str {
        match self {
            Topology::Standalone => "standalone",
            Topology::Cluster => "cluster",
            Topology::Sentinel => "sentinel",
            Topology::Tls => "tls",
        }
    }

    /// The variable that carries this topology's URL.
    pub fn url_env(self) -> &'static str {
        match self {
            Topology::Standalone => REDIS_URL_ENV,
            Topology::Cluster => CLUSTER_URL_ENV,
            Topology::Sentinel => SENTINEL_URL_ENV,
            Topology::Tls => TLS_URL_ENV,
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Topology {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Topology::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown topology `{s}`; expected standalone, cluster, sentinel or tls"))
    }
}

/// Where a test should connect, as read from the environment by [`topology_url`].
#[derive(Clone, PartialEq, Eq)]
pub struct TestTarget {
    /// The topology this target belongs to.
    pub topology: Topology,
    /// The connection URL; for [`Topology::Tls`] it contains the user's password.
    pub url: String,
    /// The CA certificate to trust ([`Topology::Tls`] only).
    pub tls_ca: Option<PathBuf>,
    /// The client certificate, when the server requires mTLS.
    pub tls_client_cert: Option<PathBuf>,
    /// The client certificate's key, when the server requires mTLS.
    pub tls_client_key: Option<PathBuf>,
}

impl fmt::Debug for TestTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestTarget")
            .field("topology", &self.topology)
            .field("url", &redact_url(&self.url))
            .field("tls_ca", &self.tls_ca)
            .field("tls_client_cert", &self.tls_client_cert)
            .field("tls_client_key", &self.tls_client_key)
            .finish()
    }
}

/// The topology under test according to [`TOPOLOGY_ENV`], or `None` when it is unset.
///
/// # Panics
///
/// When the variable holds something other than a topology name: a typo there
/// would otherwise silently skip every Redis test.
pub fn current_topology() -> Option<Topology> {
    let value = non_empty_var(TOPOLOGY_ENV)?;
    match value.parse() {
        Ok(topology) => Some(topology),
        Err(message) => panic!("{TOPOLOGY_ENV}: {message}"),
    }
}

/// Whether [`REQUIRE_REDIS_ENV`] is `1`, i.e. a missing server must fail the test.
pub fn require_redis() -> bool {
    non_empty_var(REQUIRE_REDIS_ENV).as_deref() == Some("1")
}

/// The connection details for `topology`, or `None` when the test should skip.
///
/// Returns `None` when [`TOPOLOGY_ENV`] names another topology, or when the
/// topology's URL variable is unset and no server is required (a note goes
/// to stderr). Reads only `topology`'s own variables.
///
/// # Panics
///
/// When [`REQUIRE_REDIS_ENV`] is `1`, [`TOPOLOGY_ENV`] names `topology`, and
/// its URL (or, for TLS, its CA path) is missing: under `cargo xtask test`
/// that is a broken harness, not a reason to skip.
pub fn topology_url(topology: Topology) -> Option<TestTarget> {
    let current = current_topology();
    if current.is_some_and(|c| c != topology) {
        return None;
    }
    let url = non_empty_var(topology.url_env());
    let tls_ca = non_empty_var(TLS_CA_ENV).map(PathBuf::from);
    let missing = match (&url, topology) {
        (None, _) => Some(topology.url_env()),
        (Some(_), Topology::Tls) if tls_ca.is_none() => Some(TLS_CA_ENV),
        _ => None,
    };
    if let Some(var) = missing {
        if require_redis() && current == Some(topology) {
            panic!(
                "{REQUIRE_REDIS_ENV}=1 and {TOPOLOGY_ENV}={topology}, but {var} is not set; \
                 run the tests with `cargo xtask test`, or start a server with \
                 `cargo xtask redis up {topology}` and export what it prints"
            );
        }
        eprintln!("skipping {topology} Redis test: {var} is not set");
        return None;
    }
    let url = url?;
    let tls = topology == Topology::Tls;
    Some(TestTarget {
        topology,
        url,
        tls_ca: tls.then_some(tls_ca).flatten(),
        tls_client_cert: tls
            .then(|| non_empty_var(TLS_CLIENT_CERT_ENV).map(PathBuf::from))
            .flatten(),
        tls_client_key: tls
            .then(|| non_empty_var(TLS_CLIENT_KEY_ENV).map(PathBuf::from))
            .flatten(),
    })
}

/// Whether this process can start its own servers (`redis-server` and `redis-cli` on `PATH`).
///
/// Returns `false` with a note on stderr when they are missing, so the
/// caller can skip.
///
/// # Panics
///
/// When they are missing and [`REQUIRE_REDIS_ENV`] is `1`.
pub fn can_start_servers() -> bool {
    let missing: Vec<&str> = ["redis-server", "redis-cli"]
        .into_iter()
        .filter(|program| crate::find_program(program).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "{} not found on PATH; install with `apt-get install -y redis-server redis-tools`",
        missing.join(" and ")
    );
    if require_redis() {
        panic!("{REQUIRE_REDIS_ENV}=1 but {message}");
    }
    eprintln!("skipping: {message}");
    false
}

/// Whether fault scenarios should run: [`FAULTS_ENV`] is `1` and servers can be started.
///
/// Fault scenarios are slow (seconds each), so a plain `cargo test` skips
/// them with a note on stderr; `cargo xtask test` runs them in its `faults`
/// cell.
///
/// # Panics
///
/// As [`can_start_servers`], when the scenarios are enabled and required but
/// `redis-server` is missing.
pub fn faults_enabled() -> bool {
    if non_empty_var(FAULTS_ENV).as_deref() != Some("1") {
        eprintln!("skipping fault scenario: {FAULTS_ENV} is not 1 (run `cargo xtask test --only faults`)");
        return false;
    }
    can_start_servers()
}

/// Whether [`REQUIRE_POSTGRES_ENV`] is `1`, i.e. a missing PostgreSQL must fail the test.
pub fn require_postgres() -> bool {
    non_empty_var(REQUIRE_POSTGRES_ENV).as_deref() == Some("1")
}

/// The PostgreSQL server to test against: [`POSTGRES_URL_ENV`], or `None` when it is unset
/// or empty (a note goes to stderr; the test skips).
///
/// `cargo xtask test` sets it, with [`REQUIRE_POSTGRES_ENV`], in its `sql` cell, which runs
/// the test targets whose names start with `sql`; elsewhere (e.g. the `unit` cell, or a plain
/// `cargo test`) those targets find it unset. Unlike [`topology_url`] this never panics; a
/// test that must not skip under `cargo xtask test` checks [`require_postgres`] itself:
///
/// ```no_run
/// use testkit_redis::{postgres_url, require_postgres, REQUIRE_POSTGRES_ENV};
///
/// #[test]
/// fn saves_on_postgres() {
///     let Some(url) = postgres_url() else {
///         assert!(!require_postgres(), "{REQUIRE_POSTGRES_ENV}=1 but no PostgreSQL URL is set");
///         return;
///     };
///     // Connect to `url`, in a schema or with a table prefix of the test's own.
///     # let _ = url;
/// }
/// ```
pub fn postgres_url() -> Option<String> {
    let url = non_empty_var(POSTGRES_URL_ENV);
    if url.is_none() {
        eprintln!("skipping PostgreSQL test: {POSTGRES_URL_ENV} is not set");
    }
    url
}

/// Whether this process can start its own PostgreSQL ([`crate::Postgres::start`]): `initdb`
/// and `postgres` were found (see [`crate::find_postgres_bindir`]).
///
/// Returns `false` with a note on stderr when they are missing, so the caller can skip.
///
/// # Panics
///
/// When they are missing and [`REQUIRE_POSTGRES_ENV`] is `1` (the `faults` and `sql` cells of
/// `cargo xtask test` set it).
pub fn can_start_postgres() -> bool {
    match crate::find_postgres_bindir() {
        Ok(_) => true,
        Err(e) if require_postgres() => panic!("{REQUIRE_POSTGRES_ENV}=1 but {e}"),
        Err(e) => {
            eprintln!("skipping: {e}");
            false
        }
    }
}

pub(crate) fn non_empty_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Hides the passwords of a connection URL (for printed commands and test output; xtask uses
/// it too): the rule every crate of the family shares.
pub use session_core::backend::redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in Topology::ALL {
            assert_eq!(t.name().parse::<Topology>(), Ok(t));
        }
        assert!("clusters".parse::<Topology>().is_err());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("rediss://app:secret@127.0.0.1:6380"),
            "rediss://app:<redacted>@127.0.0.1:6380"
        );
        assert_eq!(redact_url("redis://127.0.0.1:1"), "redis://127.0.0.1:1");
        let target = TestTarget {
            topology: Topology::Tls,
            url: "rediss://app:hunter2@127.0.0.1:1".into(),
            tls_ca: None,
            tls_client_cert: None,
            tls_client_key: None,
        };
        assert!(!format!("{target:?}").contains("hunter2"));
    }
}
