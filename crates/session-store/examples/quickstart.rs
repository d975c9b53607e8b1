//! The library quick start of the workspace README, compiled with every `cargo clippy
//! --all-targets` (so the README's code cannot drift from the API) and runnable as
//! `cargo run -p session-store --example quickstart [-- sessions.toml]`.
//!
//! Without a file it uses the memory backend; with one (say `backend = "redis"`), that backend,
//! if the build has its feature: `cargo run -p session-store --features redis,fallback
//! --example quickstart -- sessions.toml`. An error is printed as its message.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example prints what it did"
)]

use std::process::ExitCode;

use session_store::{build, Settings};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct TaskSession {
    task_id: String,
    state: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let file = std::env::args().nth(1);
    let settings = Settings::load(file.as_deref().map(std::path::Path::new))?;
    let built = build(&settings).await?;
    let tasks = built.sessions::<TaskSession>("task")?;

    let mut session = tasks
        .create(TaskSession {
            task_id: "t1".into(),
            state: "new".into(),
        })
        .await?;
    // Compare-and-set: Error::Conflict if another request wrote in between.
    session.value.state = "done".into();
    tasks.save_if(&mut session).await?;
    let loaded = tasks.load(&session.id).await?; // Option<Session<TaskSession>>
    println!("loaded: {:?}", loaded.map(|s| s.value));
    let new_id = tasks.rotate(&session.id).await?; // after login: fixation defence
    tasks.delete(&new_id).await?; // logout
    println!("rotated, then deleted");
    Ok(())
}
