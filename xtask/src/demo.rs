//! `cargo xtask demo`: the demo server driven by the chat simulator (SPEC §2, §7). Not built yet.

use std::process::ExitCode;

pub(crate) fn run(_args: &[String]) -> crate::Result<ExitCode> {
    println!("xtask demo: not built yet");
    Ok(ExitCode::from(2))
}
