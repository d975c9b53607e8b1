//! `cargo xtask bench`: side-by-side benchmarks of the stores and their anchors (SPEC §9). Not built yet.

use std::process::ExitCode;

pub(crate) fn run(_args: &[String]) -> crate::Result<ExitCode> {
    println!("xtask bench: not built yet");
    Ok(ExitCode::from(2))
}
