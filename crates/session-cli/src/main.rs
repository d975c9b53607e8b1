//! `sessionctl`: copies every live session between stores. See `sessionctl --help`.

mod args;
mod stores;

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use session_backup::{copy_sessions, read_snapshot, write_snapshot, CopyOptions, CopyProgress};
use session_core::{Error, Result, ScanCursor};

use crate::stores::Side;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let copy = match args::parse(&args) {
        Ok(copy) => copy,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("sessionctl: {e}\n");
            }
            eprint!("{}", args::USAGE);
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    match run(&copy).await {
        Ok(progress) => {
            eprintln!(
                "sessionctl: done: {} copied, {} kept, {} expired, {} skipped in {:.1} s",
                progress.copied,
                progress.kept,
                progress.expired,
                progress.skipped,
                progress.elapsed.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sessionctl: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(copy: &args::Copy) -> Result<CopyProgress> {
    let from = stores::open(&copy.from, &copy.key_prefix, copy.table.as_deref()).await?;
    let to = stores::open(&copy.to, &copy.key_prefix, copy.table.as_deref()).await?;
    match (from, to) {
        (Side::Store(from), Side::Store(to)) => {
            let resume = match &copy.resume_file {
                Some(path) => read_resume(path).await?,
                None => None,
            };
            if resume.is_some() && !copy.quiet {
                eprintln!("sessionctl: resuming from the position saved in the resume file");
            }
            let options = CopyOptions::default()
                .with_mode(copy.mode)
                .with_page_size(copy.page_size)
                .resuming(resume);
            let mut last_line = Instant::now();
            let mut saves = Vec::new();
            let progress = copy_sessions(from.as_ref(), to.as_ref(), &options, |p| {
                if let (Some(path), Some(cursor)) = (&copy.resume_file, &p.cursor) {
                    saves.push(save_resume(path, cursor));
                }
                if !copy.quiet && (last_line.elapsed() >= Duration::from_secs(2) || p.cursor.is_none()) {
                    last_line = Instant::now();
                    eprintln!(
                        "sessionctl: {} pages, {} copied, {} kept, {} expired, {} skipped, {:.1} s",
                        p.pages,
                        p.copied,
                        p.kept,
                        p.expired,
                        p.skipped,
                        p.elapsed.as_secs_f64()
                    );
                }
            })
            .await?;
            // The positions were written as the pages went (synchronously); report a failure.
            if let Some(err) = saves.into_iter().find_map(std::result::Result::err) {
                return Err(err);
            }
            if let Some(path) = &copy.resume_file {
                let _ = tokio::fs::remove_file(path).await;
            }
            Ok(progress)
        }
        (Side::Store(from), Side::Snapshot(path)) => {
            let started = Instant::now();
            let report = write_snapshot(from.as_ref(), &path).await?;
            let mut progress = CopyProgress::default();
            progress.copied = report.sessions;
            progress.elapsed = started.elapsed();
            Ok(progress)
        }
        (Side::Snapshot(path), Side::Store(to)) => read_snapshot(&path, to.as_ref(), copy.mode).await,
        (Side::Snapshot(_), Side::Snapshot(_)) => Err(Error::config(
            "to",
            "both sides are snapshot files: copy the file instead",
        )),
    }
}

async fn read_resume(path: &Path) -> Result<Option<ScanCursor>> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) if !text.trim().is_empty() => Ok(Some(ScanCursor::new(text.trim_end_matches('\n')))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::config(
            "resume-file",
            format!("cannot read it: {}", e.kind()),
        )),
    }
}

/// Writes the position beside the file and renames it into place, so a crash leaves either
/// the old position or the new one.
fn save_resume(path: &Path, cursor: &ScanCursor) -> Result<()> {
    let partial = path.with_extension("partial");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&partial)?;
        file.write_all(cursor.as_str().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&partial, path)
    };
    write().map_err(|e| Error::config("resume-file", format!("cannot write it: {}", e.kind())))
}
