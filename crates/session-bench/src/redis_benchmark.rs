//! `redis-benchmark` SET/GET at 50 clients, without and with `-P 16`: the server's ceiling.

use std::process::Command;

use crate::harness::Cell;

/// Clients, as asked for by the issue (and redis-benchmark's default).
const CLIENTS: u32 = 50;
/// The key space `-r`: as many random keys as the cases use.
const KEYSPACE: u32 = 100_000;

/// Where and what `redis-benchmark` runs against.
pub(crate) struct Target {
    host: String,
    port: String,
    value_len: usize,
}

/// Requests per run (`-n`), adapted after each round so that a run lasts about `secs`.
pub(crate) struct Sizes {
    plain: u64,
    pipelined: u64,
    secs: f64,
}

impl Sizes {
    pub(crate) fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                plain: 30_000,
                pipelined: 200_000,
                secs: 0.4,
            }
        } else {
            Sizes {
                plain: 100_000,
                pipelined: 800_000,
                secs: 1.5,
            }
        }
    }
}

impl Target {
    /// From `redis://HOST:PORT`; values of `value_len` bytes (the envelope's size).
    pub(crate) fn from_url(url: &str, value_len: usize) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| format!("redis-benchmark needs a redis://host:port URL, not {url}"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| format!("no port in {url}"))?;
        Ok(Target {
            host: host.to_owned(),
            port: port.to_owned(),
            value_len,
        })
    }

    /// The command line of one run, for the report.
    pub(crate) fn describe(pipeline: u32) -> String {
        let p = if pipeline > 1 {
            format!(" -P {pipeline}")
        } else {
            String::new()
        };
        format!(
            "redis-benchmark -c {CLIENTS}{p} -t set,get -d <envelope bytes> -r {KEYSPACE} -n <~1.5 s> --csv"
        )
    }

    /// Runs SET and GET without and with pipelining; names like `-c 50 -P 16 GET`.
    pub(crate) fn run(&self, sizes: &mut Sizes) -> Result<Vec<(String, Cell)>, String> {
        let mut out = Vec::new();
        for pipeline in [1u32, 16] {
            let n = if pipeline == 1 {
                sizes.plain
            } else {
                sizes.pipelined
            };
            let cells = self.once(pipeline, n)?;
            // Aim the next run at `secs` per command from this run's rate.
            let slowest = cells
                .iter()
                .map(|(_, c)| c.ops_per_sec)
                .fold(f64::INFINITY, f64::min);
            if slowest.is_finite() && slowest > 0.0 {
                let next = ((slowest * sizes.secs) as u64).clamp(10_000, 20_000_000);
                if pipeline == 1 {
                    sizes.plain = next;
                } else {
                    sizes.pipelined = next;
                }
            }
            let label = if pipeline > 1 {
                format!("-c {CLIENTS} -P {pipeline}")
            } else {
                format!("-c {CLIENTS}")
            };
            for (test, cell) in cells {
                out.push((format!("{label} {test}"), cell));
            }
        }
        Ok(out)
    }

    fn once(&self, pipeline: u32, n: u64) -> Result<Vec<(String, Cell)>, String> {
        let output = Command::new("redis-benchmark")
            .args(["-h", &self.host, "-p", &self.port])
            .args(["-c", &CLIENTS.to_string(), "-n", &n.to_string()])
            .args(["-P", &pipeline.to_string()])
            .args(["-d", &self.value_len.to_string(), "-r", &KEYSPACE.to_string()])
            .args(["-t", "set,get", "--csv"])
            .output()
            .map_err(|e| format!("cannot run redis-benchmark (package redis-tools): {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "redis-benchmark failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        parse_csv(&String::from_utf8_lossy(&output.stdout))
    }
}

/// Parses `"SET","116279.07","0.259","0.080","0.247","0.367","0.495","1.183"` lines.
fn parse_csv(text: &str) -> Result<Vec<(String, Cell)>, String> {
    let mut header: Vec<String> = Vec::new();
    let mut cells = Vec::new();
    for line in text.lines() {
        let fields: Vec<String> = line
            .split(',')
            .map(|f| f.trim().trim_matches('"').to_owned())
            .collect();
        if fields.first().is_some_and(|f| f == "test") {
            header = fields;
            continue;
        }
        let column = |name: &str| -> Option<f64> {
            let i = header.iter().position(|h| h == name)?;
            fields.get(i)?.parse().ok()
        };
        let (Some(test), Some(rps)) = (fields.first(), column("rps")) else {
            continue;
        };
        cells.push((
            test.clone(),
            Cell {
                ops_per_sec: rps,
                p50_us: column("p50_latency_ms").unwrap_or(f64::NAN) * 1000.0,
                p99_us: column("p99_latency_ms").unwrap_or(f64::NAN) * 1000.0,
                errors: 0,
            },
        ));
    }
    if cells.is_empty() {
        return Err(format!("no figures in redis-benchmark's output:\n{text}"));
    }
    Ok(cells)
}
