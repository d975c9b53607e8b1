//! The curve's report: one row per size, and the flatness verdict across sizes.

use super::{OpCurve, ScalePoint, ScaleReport, FLAT};

fn fmt_int(v: f64) -> String {
    crate::report::fmt_ops(v)
}

pub(super) fn point_line(p: &ScalePoint) -> String {
    format!(
        "  {:>10} sessions  load {:>9} ops/s p99 {:>6.0} µs  save {:>9} ops/s p99 {:>6.0} µs  {:.0} bytes/session per node",
        fmt_int(p.sessions as f64),
        fmt_int(p.load.ops_median()),
        p.load.p99_median(),
        fmt_int(p.save.ops_median()),
        p.save.p99_median(),
        p.per_session()
    )
}

/// The smallest over the largest of `values` (NaN for none).
fn min_over_max(values: &[f64]) -> f64 {
    let v: Vec<f64> = values
        .iter()
        .copied()
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    if v.is_empty() {
        return f64::NAN;
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    min / max
}

/// A row of the flatness verdict: label, the figures per size, min/max, whether it has a target.
struct Flatness {
    label: &'static str,
    values: Vec<f64>,
    target: bool,
}

impl ScaleReport {
    fn flatness(&self) -> Vec<Flatness> {
        let col = |f: &dyn Fn(&ScalePoint) -> f64| self.points.iter().map(f).collect::<Vec<f64>>();
        let mut rows = vec![
            Flatness {
                label: "load ops/s",
                values: col(&|p| p.load.ops_median()),
                target: true,
            },
            Flatness {
                label: "save ops/s",
                values: col(&|p| p.save.ops_median()),
                target: true,
            },
            Flatness {
                label: "load p99",
                values: col(&|p| p.load.p99_median()),
                target: true,
            },
            Flatness {
                label: "save p99",
                values: col(&|p| p.save.p99_median()),
                target: true,
            },
            Flatness {
                label: "bytes per session per node (mean of the masters)",
                values: col(&|p| p.per_session()),
                target: true,
            },
        ];
        if self.control.is_some() {
            rows.push(Flatness {
                label: "load ops/s ÷ control's (paired slices)",
                values: col(&|p| p.load.vs_control()),
                target: false,
            });
            rows.push(Flatness {
                label: "save ops/s ÷ control's (paired slices)",
                values: col(&|p| p.save.vs_control()),
                target: false,
            });
        }
        rows
    }

    /// `met` / `missed` of the whole curve (every row with a target), for the ratio table.
    pub(crate) fn verdict(&self) -> (f64, bool) {
        let worst = self
            .flatness()
            .iter()
            .filter(|r| r.target)
            .map(|r| min_over_max(&r.values))
            .fold(f64::INFINITY, f64::min);
        (worst, worst >= FLAT && self.points.len() >= 2)
    }

    fn status(value: f64) -> String {
        if !value.is_finite() {
            "not measured".to_owned()
        } else if value >= FLAT {
            "met".to_owned()
        } else {
            let short = (FLAT - value) / FLAT * 100.0;
            if short < 1.0 {
                format!("**missed** by {short:.1} %")
            } else {
                format!("**missed** by {short:.0} %")
            }
        }
    }

    /// The console or Markdown tables: one row per size, then the flatness verdict.
    pub(crate) fn table(&self, markdown: bool) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let control = self.control.is_some();
        if markdown {
            out.push_str(
                "| sessions | filled in | load ops/s | load p99 µs | load ÷ control | save ops/s | save p99 µs | save ÷ control | bytes per session per master | keys per master (DBSIZE) |\n",
            );
            out.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---|---|\n");
        }
        for p in &self.points {
            let per_node: Vec<String> = p
                .nodes
                .iter()
                .map(|n| format!("{:.0}", n.per_session()))
                .collect();
            let keys: Vec<String> = p.nodes.iter().map(|n| fmt_int(n.dbsize as f64)).collect();
            let vs = |c: &OpCurve| {
                if control {
                    format!("{:.2}", c.vs_control())
                } else {
                    "–".to_owned()
                }
            };
            let errors = |c: &OpCurve| {
                if c.errors > 0 {
                    format!(" ({} errors)", c.errors)
                } else {
                    String::new()
                }
            };
            let fill = format!(
                "{:.1} s ({} /s)",
                p.fill_secs,
                fmt_int(p.filled as f64 / p.fill_secs.max(1e-9))
            );
            if markdown {
                let _ = writeln!(
                    out,
                    "| {} | {fill} | {}{} | {:.0} | {} | {}{} | {:.0} | {} | {:.0} ({}) | {} |",
                    fmt_int(p.sessions as f64),
                    fmt_int(p.load.ops_median()),
                    errors(&p.load),
                    p.load.p99_median(),
                    vs(&p.load),
                    fmt_int(p.save.ops_median()),
                    errors(&p.save),
                    p.save.p99_median(),
                    vs(&p.save),
                    p.per_session(),
                    per_node.join(" / "),
                    keys.join(" / ")
                );
            } else {
                let _ = writeln!(
                    out,
                    "  {:>10} filled in {fill:<20} load {:>8}{} p99 {:>5.0} µs ({} × control)  save {:>8}{} p99 {:>5.0} µs ({} × control)  {:.0} B/session [{}]  keys [{}]",
                    fmt_int(p.sessions as f64),
                    fmt_int(p.load.ops_median()),
                    errors(&p.load),
                    p.load.p99_median(),
                    vs(&p.load),
                    fmt_int(p.save.ops_median()),
                    errors(&p.save),
                    p.save.p99_median(),
                    vs(&p.save),
                    p.per_session(),
                    per_node.join(" "),
                    keys.join(" ")
                );
            }
        }
        if markdown {
            out.push_str(
                "\n| flat within 10 % across sizes | per size | smallest / largest | target | status |\n|---|---|---:|---:|---|\n",
            );
        } else {
            out.push_str("  flatness across sizes (smallest / largest):\n");
        }
        for row in self.flatness() {
            let value = min_over_max(&row.values);
            let per_size: Vec<String> = row
                .values
                .iter()
                .map(|v| {
                    if *v >= 100.0 {
                        fmt_int(*v)
                    } else {
                        format!("{v:.2}")
                    }
                })
                .collect();
            let (target, status) = if row.target {
                (format!("≥ {FLAT:.2}"), Self::status(value))
            } else {
                (String::new(), String::new())
            };
            if markdown {
                let _ = writeln!(
                    out,
                    "| {} | {} | {value:.2} | {target} | {status} |",
                    row.label,
                    per_size.join(" / ")
                );
            } else {
                let _ = writeln!(
                    out,
                    "    {:<52} {value:>5.2}  [{}] {target} {}",
                    row.label,
                    per_size.join(" / "),
                    status.replace("**", "")
                );
            }
        }
        if let Some(reason) = &self.stopped {
            let _ = writeln!(
                out,
                "{}the curve stopped early: {reason}",
                if markdown { "\n" } else { "  " }
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::min_over_max;

    #[test]
    fn flatness_is_smallest_over_largest() {
        assert!((min_over_max(&[90.0, 100.0, 95.0]) - 0.9).abs() < 1e-9);
        assert!(min_over_max(&[]).is_nan());
    }
}
