//! Running child commands with their output in a log file, and Ctrl-C.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Once};
use std::thread;

/// The pid of the command [`run_logged`] is running, 0 when none.
static CURRENT_CHILD: AtomicU32 = AtomicU32::new(0);

/// What a logged command did.
pub(crate) struct Outcome {
    /// Its exit status.
    pub(crate) status: ExitStatus,
    /// Every line it printed, stdout and stderr interleaved as they arrived.
    pub(crate) lines: Vec<String>,
}

/// Test counts summed over cargo's `test result:` lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
    pub(crate) ignored: u64,
}

impl Counts {
    /// Sums every `test result: ok. 3 passed; 1 failed; 2 ignored; …` line, also where a
    /// test's own output (printed without a line end) precedes it on the same line.
    pub(crate) fn parse<S: AsRef<str>>(lines: &[S]) -> Self {
        let mut counts = Counts::default();
        for line in lines {
            let Some(rest) = result_part(line.as_ref()) else {
                continue;
            };
            for part in rest.split([';', '.']) {
                let mut words = part.split_whitespace();
                let (Some(n), Some(what)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(n) = n.parse::<u64>() else { continue };
                match what {
                    "passed" => counts.passed += n,
                    "failed" => counts.failed += n,
                    "ignored" => counts.ignored += n,
                    _ => {}
                }
            }
        }
        counts
    }

    /// The counts of each test binary, in order: a binary starts at cargo's
    /// `Running <path> (<binary>)` line and ends at its `test result:` line.
    pub(crate) fn per_binary<S: AsRef<str>>(lines: &[S]) -> Vec<(String, Counts)> {
        let mut current: Option<String> = None;
        let mut out = Vec::new();
        for line in lines {
            let line = line.as_ref();
            if let Some(rest) = line.trim().strip_prefix("Running ") {
                current = rest
                    .split_whitespace()
                    .next()
                    .and_then(|path| path.rsplit('/').next())
                    .map(|file| file.strip_suffix(".rs").unwrap_or(file).to_owned());
            } else if result_part(line).is_some() {
                let name = current.take().unwrap_or_else(|| "(unknown)".to_owned());
                out.push((name, Counts::parse(std::slice::from_ref(&line))));
            }
        }
        out
    }

    pub(crate) fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

/// What follows `test result:` in a line, wherever in the line it starts.
fn result_part(line: &str) -> Option<&str> {
    line.find("test result:")
        .map(|at| &line[at + "test result:".len()..])
}

/// Runs `command`, appending everything it prints to `log` (after a header
/// line with the command), and calls `on_line` for each line as it arrives.
pub(crate) fn run_logged(
    command: &mut Command,
    log: &Path,
    mut on_line: impl FnMut(&str),
) -> io::Result<Outcome> {
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut file = File::options().create(true).append(true).open(log)?;
    writeln!(file, "$ {}", display(command))?;
    // One pipe for stdout and stderr: lines arrive in the order they were written (cargo's
    // `Running …` on stderr before the test binary's results on stdout), which two pipes read
    // by two threads do not keep under load.
    let (reader, writer) = io::pipe()?;
    let spawned = command
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .spawn();
    // The command keeps its copies of the pipe's write end; drop them, or the read never ends.
    command.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = spawned.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run {}: {e}", command.get_program().to_string_lossy()),
        )
    })?;
    CURRENT_CHILD.store(child.id(), Ordering::SeqCst);
    let (sender, receiver) = mpsc::channel();
    let readers = vec![forward_lines(reader, sender)];
    let mut lines = Vec::new();
    for line in receiver {
        writeln!(file, "{line}")?;
        on_line(&line);
        lines.push(line);
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child.wait()?;
    CURRENT_CHILD.store(0, Ordering::SeqCst);
    writeln!(file, "# exit: {status}")?;
    Ok(Outcome { status, lines })
}

fn forward_lines(
    pipe: impl io::Read + Send + 'static,
    sender: mpsc::Sender<String>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(pipe).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line);
            if sender.send(text.trim_end_matches('\r').to_owned()).is_err() {
                break;
            }
        }
    })
}

/// The command as a shell line: the environment it sets, the program, the
/// arguments; passwords in URLs are replaced by `<redacted>`.
pub(crate) fn display(command: &Command) -> String {
    let quote = |s: OsString| {
        let s = s.to_string_lossy().into_owned();
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
        {
            s
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    let mut parts = Vec::new();
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            let value = testkit_redis::env::redact_url(&value.to_string_lossy());
            parts.push(format!("{}={}", key.to_string_lossy(), quote(value.into())));
        }
    }
    parts.push(quote(command.get_program().to_owned()));
    parts.extend(command.get_args().map(|a| quote(a.to_owned())));
    parts.join(" ")
}

/// On Ctrl-C or SIGTERM: stop the running command and every server
/// (redis-server, PostgreSQL) this process started, then exit with 130.
/// Installed once.
pub(crate) fn install_interrupt_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let installed = ctrlc::set_handler(|| {
            let child = CURRENT_CHILD.load(Ordering::SeqCst);
            if child != 0 {
                let _ = Command::new("sh")
                    .args(["-c", "kill -s TERM \"$1\"", "sh"])
                    .arg(child.to_string())
                    .status();
            }
            let stopped = testkit_redis::kill_registered();
            eprintln!("\nxtask: interrupted; stopped {stopped} server process(es)");
            std::process::exit(130);
        });
        if let Err(e) = installed {
            eprintln!("xtask: cannot install the Ctrl-C handler ({e}); servers may outlive an interrupt");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_cargo_test_results() {
        let lines = [
            "running 3 tests",
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 5 filtered out; finished in 1.20s",
            "   Doc-tests x",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        ];
        assert_eq!(
            Counts::parse(&lines),
            Counts {
                passed: 5,
                failed: 1,
                ignored: 1
            }
        );
    }

    #[test]
    fn shows_commands_without_passwords() {
        let mut command = Command::new("cargo");
        command
            .env("SESSION_TEST_REDIS_TLS_URL", "rediss://app:s3cret@127.0.0.1:5")
            .args(["test", "--", "--test-threads=1", "a b"]);
        let shown = display(&command);
        assert_eq!(
            shown,
            "SESSION_TEST_REDIS_TLS_URL='rediss://app:<redacted>@127.0.0.1:5' cargo test -- --test-threads=1 'a b'"
        );
    }
}
