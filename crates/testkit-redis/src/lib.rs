//! Real `redis-server` and PostgreSQL processes for tests and for `cargo xtask`, without
//! docker.
//!
//! Everything binds `127.0.0.1` on free ports, lives in its own scratch
//! directory, and is stopped by pid when its guard is dropped. Four
//! topologies are provided — [`Standalone`], [`Cluster`] (3 masters + 3
//! replicas), [`Sentinel`] (master + replica + 3 sentinels) and [`Tls`]
//! (TLS-only port, an ACL user, certificates made with the `openssl` CLI) —
//! each built from [`RedisServer`]s that expose fault injection:
//! [`RedisServer::sigstop`], [`RedisServer::sigcont`], [`RedisServer::kill9`]
//! and [`RedisServer::restart`].
//!
//! [`Postgres`] is one PostgreSQL server: `initdb` into a scratch directory,
//! then `postgres` on a free port (TCP only, `fsync` off, no acknowledged
//! commit lost on a kill), run as the `postgres` (or `nobody`) user when this
//! process is root, with the same faults: [`Postgres::sigstop`],
//! [`Postgres::sigcont`], [`Postgres::kill9`] and [`Postgres::restart`]. Its
//! programs are Debian's (the newest `/usr/lib/postgresql/<N>/bin`), or those
//! on `PATH`, or in [`PG_BINDIR_ENV`] (see [`find_postgres_bindir`]).
//!
//! Every exit path cleans up: drop stops the servers (SIGTERM, then SIGKILL;
//! PostgreSQL's fast shutdown, SIGINT, then SIGKILL) and removes their
//! directories; a signal handler can call
//! [`kill_registered`]; and each server has a small `sh` watchdog that kills
//! it, within about a second, if the process that started it dies without
//! doing either (SIGKILL, abort, a harness timeout). Only servers started
//! with [`TopologyOptions::daemonize`] and then detached outlive their
//! starter; [`stop_pidfiles`] stops those.
//!
//! Faults between a client and a server, not only in the server, come from
//! [`FaultProxy`]: a TCP proxy on `127.0.0.1` in front of any server whose
//! connections can each be held ([`Mode::Hold`]: bytes are buffered and
//! delivered later, in order — a request still runs after its client timed
//! out), black-holed ([`Mode::Drop`]), reset, or refused, in either
//! [`Direction`] or both.
//!
//! Linux only: liveness is read from `/proc`, signals are sent with the
//! shell's `kill` builtin, and `redis-server`, `redis-cli` (and for TLS
//! `openssl`) must be on `PATH`; PostgreSQL needs `initdb` and `postgres`
//! (and `psql` for [`Postgres::psql`]).
//!
//! # How tests find their server
//!
//! Tests of the other crates do not start the four topologies themselves;
//! `cargo xtask test` starts one at a time and runs the test targets whose
//! names start with `redis` with these variables set (see [`mod@env`]):
//!
//! | variable | value |
//! |---|---|
//! | [`TOPOLOGY_ENV`] | `standalone`, `cluster`, `sentinel` or `tls`: the topology under test |
//! | [`REDIS_URL_ENV`] | `redis://127.0.0.1:P` |
//! | [`CLUSTER_URL_ENV`] | `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&…` (all six nodes) |
//! | [`SENTINEL_URL_ENV`] | `redis-sentinel://127.0.0.1:S1?node=127.0.0.1:S2&node=127.0.0.1:S3&sentinelServiceName=mymaster` |
//! | [`TLS_URL_ENV`], [`TLS_CA_ENV`] | `rediss://app:PASSWORD@127.0.0.1:P` and the CA's PEM path |
//! | [`REQUIRE_REDIS_ENV`] | `1`: a test whose server is missing fails instead of skipping |
//!
//! Test targets whose names start with `sql` run in the `sql` cell, against
//! one [`Postgres`] that `cargo xtask test` starts, with these set:
//!
//! | variable | value |
//! |---|---|
//! | [`POSTGRES_URL_ENV`] | `postgres://session@127.0.0.1:P/postgres` (see [`postgres_url`]) |
//! | [`REQUIRE_POSTGRES_ENV`] | `1`: a test whose server is missing fails instead of skipping (see [`require_postgres`]) |
//!
//! Only the variables of the current topology are set, so a test asks
//! [`topology_url`] for the one topology it targets and skips when it gets
//! `None`:
//!
//! ```no_run
//! use testkit_redis::{topology_url, Topology};
//!
//! #[test]
//! fn saves_on_a_cluster() {
//!     let Some(target) = topology_url(Topology::Cluster) else { return };
//!     // Connect to `target.url`, using a random key prefix for isolation.
//!     # let _ = target;
//! }
//! ```
//!
//! Fault scenarios live in test targets named `faults*`; they start their own
//! servers and run only when [`faults_enabled`] says so (the `faults` cell of
//! `cargo xtask test` sets [`FAULTS_ENV`], and [`REQUIRE_POSTGRES_ENV`], so a
//! scenario that starts a [`Postgres`] after [`can_start_postgres`] fails
//! rather than skips when PostgreSQL is missing).
//!
//! ```no_run
//! use testkit_redis::{faults_enabled, Cluster};
//! use std::time::Duration;
//!
//! # fn main() -> std::io::Result<()> {
//! if !faults_enabled() {
//!     return Ok(());
//! }
//! let mut cluster = Cluster::start()?;
//! let master = cluster.masters()?[0];
//! let replica = cluster.replica_of(master)?;
//! cluster.node_mut(master).map(|node| node.kill9()).transpose()?;
//! let promoted = cluster.wait_for_failover(master, Duration::from_secs(10))?;
//! assert_eq!(promoted, replica);
//! # Ok(())
//! # }
//! ```

mod cluster;
pub mod env;
mod options;
mod port;
mod postgres;
mod process;
mod proxy;
pub mod resp;
mod scratch;
mod sentinel;
mod server;
mod standalone;
pub mod stats;
mod tls;
mod topology;

pub use cluster::{Cluster, Role};
pub use env::{
    can_start_postgres, can_start_servers, current_topology, faults_enabled, postgres_url, require_postgres,
    require_redis, topology_url, TestTarget, Topology, CLUSTER_URL_ENV, FAULTS_ENV, PG_BINDIR_ENV,
    POSTGRES_URL_ENV, REDIS_URL_ENV, REQUIRE_POSTGRES_ENV, REQUIRE_REDIS_ENV, SENTINEL_SERVICE_NAME,
    SENTINEL_URL_ENV, TLS_CA_ENV, TLS_CLIENT_CERT_ENV, TLS_CLIENT_KEY_ENV, TLS_URL_ENV, TOPOLOGY_ENV,
};
pub use options::{ServerOptions, TlsFiles, TopologyOptions};
pub use port::{find_free_cluster_port, find_free_port};
pub use postgres::{find_postgres_bindir, Postgres};
pub use process::{find_program, kill_registered, registered_pids, stop_pidfiles};
pub use proxy::{ConnInfo, Direction, FaultProxy, Mode, Traffic};
pub use sentinel::Sentinel;
pub use server::RedisServer;
pub use standalone::Standalone;
pub use tls::{Tls, TlsCerts};
pub use topology::{start, RedisTopology};
