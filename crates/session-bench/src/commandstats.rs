//! Server-side cost per call: `CONFIG RESETSTAT`, one cell, then `INFO commandstats`.
//!
//! Each round, after the cases (as `redis-benchmark`), the cells of [`PROBES`] run once more
//! between a reset of the server's statistics and a read of them. `usec_per_call` of a
//! probe's command is the time Redis spent executing it, without reading, parsing and
//! replying: what the command costs the server, whichever client sent it. These extra cells
//! are not counted in the throughput figures.
//!
//! Commands a script calls are counted under their own `cmdstat_…` too, and the script's
//! `usec` includes them: for `save_if`, `cmdstat_evalsha` is the whole compare-and-set
//! (`GETRANGE`, `STRLEN`, the comparison, the inner `SET`), while `cmdstat_set` of that cell
//! would mix in the inner `SET`s; so that cell is read under `evalsha` only.
//!
//! `redis-benchmark` is not run on the script: its command line cannot carry the envelope
//! (binary, with NUL bytes — the payload length and the timestamps have zero high bytes), and
//! `-x`, which reads an argument from stdin, supplies only the last one, while the envelope is
//! the script's first argument of three.

use session_redis::fred::clients::Client;
use session_redis::fred::interfaces::ClientLike;
use session_redis::fred::types::CustomCommand;

use crate::cases::Case;
use crate::harness::{Cell, Plan};

/// One figure of the table: a cell and the command whose statistics it is read under.
pub(crate) struct Probe {
    /// The row's name.
    pub(crate) label: &'static str,
    /// The case id of the cell.
    pub(crate) case: &'static str,
    /// The command, as `INFO commandstats` names it (`cmdstat_{command}`).
    pub(crate) command: &'static str,
}

/// The raw SET anchor, the store's save (one `SET`) and the store's `save_if` (one `EVALSHA`),
/// all at 64 tasks on a pool of 2.
pub(crate) const PROBES: &[Probe] = &[
    Probe {
        label: "SET (raw fred SET PXAT, pool 2)",
        case: "raw fred SET PXAT (pool 2) save @64",
        command: "set",
    },
    Probe {
        label: "SET (RedisStore (pool 2) save)",
        case: "RedisStore (pool 2) save @64",
        command: "set",
    },
    Probe {
        label: "EVALSHA (RedisStore (pool 2) save_if)",
        case: "RedisStore (pool 2) save_if @64",
        command: "evalsha",
    },
];

/// Ratios of two probes' µs per call: `(label, numerator, denominator)` by probe label.
pub(crate) const PROBE_RATIOS: &[(&str, &str, &str)] = &[
    (
        "EVALSHA save_if / SET (raw)",
        "EVALSHA (RedisStore (pool 2) save_if)",
        "SET (raw fred SET PXAT, pool 2)",
    ),
    (
        "EVALSHA save_if / SET (RedisStore save)",
        "EVALSHA (RedisStore (pool 2) save_if)",
        "SET (RedisStore (pool 2) save)",
    ),
];

/// One command's statistics over one cell.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CmdStat {
    /// Calls of the command.
    pub(crate) calls: u64,
    /// Microseconds of execution per call (`usec / calls`; NaN without calls).
    pub(crate) usec_per_call: f64,
}

/// The connection that resets and reads the server's statistics (none of the subjects').
pub(crate) struct ServerStats {
    client: Client,
}

impl ServerStats {
    pub(crate) fn new(client: Client) -> Self {
        ServerStats { client }
    }

    /// Runs `case`'s cell between `CONFIG RESETSTAT` and `INFO commandstats`; the cell (for its
    /// error count) and the statistics of `command`.
    pub(crate) async fn measure(
        &self,
        case: &Case,
        plan: Plan,
        command: &str,
    ) -> Result<(Cell, CmdStat), String> {
        let reset: Result<String, _> = self
            .client
            .custom(
                CustomCommand::new_static("CONFIG", None, false),
                vec!["RESETSTAT"],
            )
            .await;
        reset.map_err(|e| format!("CONFIG RESETSTAT: {e}"))?;
        let cell = case.run(plan).await;
        let info: Result<String, _> = self
            .client
            .custom(
                CustomCommand::new_static("INFO", None, false),
                vec!["commandstats"],
            )
            .await;
        let info = info.map_err(|e| format!("INFO commandstats: {e}"))?;
        Ok((cell, parse(&info, command)))
    }
}

/// `command`'s figures in `INFO commandstats` text, e.g.
/// `cmdstat_set:calls=3,usec=12,usec_per_call=4.00,rejected_calls=0,failed_calls=0`.
fn parse(info: &str, command: &str) -> CmdStat {
    let prefix = format!("cmdstat_{command}:");
    let Some(fields) = info.lines().find_map(|l| l.trim().strip_prefix(prefix.as_str())) else {
        return CmdStat {
            calls: 0,
            usec_per_call: f64::NAN,
        };
    };
    let field = |name: &str| {
        fields
            .split(',')
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
    };
    let calls: u64 = field("calls").and_then(|v| v.parse().ok()).unwrap_or(0);
    let usec: Option<f64> = field("usec").and_then(|v| v.parse().ok());
    let usec_per_call = match usec {
        // More digits than the two decimals of `usec_per_call`.
        Some(usec) if calls > 0 => usec / calls as f64,
        _ => field("usec_per_call")
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN),
    };
    CmdStat { calls, usec_per_call }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_a_command_line() {
        let info = "# Commandstats\r\ncmdstat_set:calls=4,usec=10,usec_per_call=2.50,rejected_calls=0,failed_calls=0\r\n\
                    cmdstat_evalsha:calls=2,usec=9,usec_per_call=4.50,rejected_calls=0,failed_calls=0\r\n";
        let set = parse(info, "set");
        assert_eq!(set.calls, 4);
        assert!((set.usec_per_call - 2.5).abs() < 1e-9);
        let evalsha = parse(info, "evalsha");
        assert_eq!(evalsha.calls, 2);
        assert!((evalsha.usec_per_call - 4.5).abs() < 1e-9);
        let get = parse(info, "get");
        assert_eq!(get.calls, 0);
        assert!(get.usec_per_call.is_nan());
    }
}
