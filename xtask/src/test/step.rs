//! The steps of the matrix, and which of them the command line selects.

use std::collections::BTreeSet;

use testkit_redis::Topology;

/// One step of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Step {
    Fmt,
    Clippy,
    Doc,
    Msrv,
    Unit,
    Features,
    Package,
    Redis(Topology),
    Sql,
    Browser,
    Faults,
}

impl Step {
    const ALL: [Step; 14] = [
        Step::Fmt,
        Step::Clippy,
        Step::Doc,
        Step::Msrv,
        Step::Unit,
        Step::Features,
        Step::Package,
        Step::Redis(Topology::Standalone),
        Step::Redis(Topology::Cluster),
        Step::Redis(Topology::Sentinel),
        Step::Redis(Topology::Tls),
        Step::Sql,
        Step::Browser,
        Step::Faults,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Step::Fmt => "fmt",
            Step::Clippy => "clippy",
            Step::Doc => "doc",
            Step::Msrv => "msrv",
            Step::Unit => "unit",
            Step::Features => "features",
            Step::Package => "package",
            Step::Redis(topology) => topology.name(),
            Step::Sql => "sql",
            Step::Browser => "browser",
            Step::Faults => "faults",
        }
    }

    /// Whether the step starts redis-server (or runs tests that may).
    pub(super) fn needs_redis(self) -> bool {
        !matches!(
            self,
            Step::Fmt | Step::Clippy | Step::Doc | Step::Msrv | Step::Features | Step::Package | Step::Sql
        )
    }

    /// Whether the step starts PostgreSQL (or runs tests that must).
    pub(super) fn needs_postgres(self) -> bool {
        matches!(self, Step::Sql | Step::Faults)
    }
}

/// The steps a `--only` name selects (`lint` is fmt, clippy, doc and msrv).
fn cell(name: &str) -> Option<Vec<Step>> {
    match name {
        "lint" => Some(vec![Step::Fmt, Step::Clippy, Step::Doc, Step::Msrv]),
        "redis" => Some(Topology::ALL.into_iter().map(Step::Redis).collect()),
        _ => Step::ALL.into_iter().find(|s| s.name() == name).map(|s| vec![s]),
    }
}

const CELLS: &str =
    "lint, fmt, clippy, doc, msrv, unit, features, package, standalone, cluster, sentinel, tls, sql, \
     browser, faults, redis";

pub(super) struct Options {
    pub(super) keep_going: bool,
    pub(super) steps: BTreeSet<Step>,
}

pub(super) fn parse(args: &[String]) -> crate::Result<Options> {
    let mut keep_going = false;
    let mut skip = BTreeSet::new();
    let mut only: Option<BTreeSet<Step>> = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--keep-going" => keep_going = true,
            "--skip-fmt" => {
                skip.insert(Step::Fmt);
            }
            "--skip-clippy" => {
                skip.insert(Step::Clippy);
            }
            "--only" => {
                let value = args
                    .next()
                    .ok_or_else(|| format!("--only needs a cell: {CELLS}"))?;
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let steps = cell(name).ok_or_else(|| format!("unknown cell `{name}`; cells: {CELLS}"))?;
                    only.get_or_insert_with(BTreeSet::new).extend(steps);
                }
            }
            "-h" | "--help" => {
                return Err(format!(
                    "usage: cargo xtask test [--keep-going] [--skip-fmt] [--skip-clippy] \
                     [--only <cell>[,<cell>…]]\ncells: {CELLS}"
                )
                .into())
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    let steps = only
        .unwrap_or_else(|| Step::ALL.into_iter().collect())
        .into_iter()
        .filter(|s| !skip.contains(s))
        .collect();
    Ok(Options { keep_going, steps })
}
