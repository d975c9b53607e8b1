//! `cargo xtask load`: N demo instances on one Redis under load, cross-instance reads checked (SPEC §8). Not built yet.

use std::process::ExitCode;

pub(crate) fn run(_args: &[String]) -> crate::Result<ExitCode> {
    println!("xtask load: not built yet");
    Ok(ExitCode::from(2))
}
