//! Reads what test binaries print: the lines forwarded from fault and browser tests, and the
//! conformance suites' counts.

use crate::exec::Counts;

/// A `SCENARIO …` or `FIGURES …` line a fault test printed. With
/// `--nocapture` the first line a test prints follows libtest's
/// `test name ... ` on the same line, so that prefix is dropped.
pub(super) fn figure_line(line: &str) -> Option<&str> {
    let text = match line.strip_prefix("test ") {
        Some(rest) => rest.split_once(" ... ").map_or(line, |(_, after)| after),
        None => line,
    };
    (text.starts_with("SCENARIO") || text.starts_with("FIGURES")).then_some(text)
}

/// `conformance: memory_conformance 56 passed, …` for every test target whose
/// name holds `conformance`, from cargo's `Running tests/…` and `test result:` lines.
pub(super) fn conformance_note(lines: &[String]) -> String {
    let parts: Vec<String> = Counts::per_binary(lines)
        .into_iter()
        .filter(|(name, counts)| name.contains("conformance") && counts.passed + counts.failed > 0)
        .map(|(name, counts)| format!("{name} {} passed, {} failed", counts.passed, counts.failed))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("conformance: {}", parts.join("; "))
    }
}
