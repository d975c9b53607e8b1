//! The command line: `sessionctl copy --from STORE --to STORE [options]`.

use std::path::PathBuf;

use session_backup::CopyMode;

/// Usage text.
pub(crate) const USAGE: &str = "\
usage: sessionctl copy --from STORE --to STORE [options]

Copies every live session, with its deadline and version, from one store to another.

STORE is one of:
  redis://[user:password@]host:port[/db]   rediss://…   redis-cluster://…   redis-sentinel://…
  postgres://user:password@host:port/db    sqlite://path/to/file.db
  snapshot:path/to/file                    (a snapshot file; see session-backup)

options:
  --key-prefix PREFIX   the key prefix of both stores (default session:)
  --table NAME          the SQL table of a postgres:// or sqlite:// store (default session_store)
  --mode MODE           overwrite (default: the target's copy is replaced) or keep-newer
                        (a newer session or a tombstone in the target stays)
  --page-size N         sessions per page (default 1000)
  --resume-file PATH    save the position after each page there, and start from it if it exists;
                        removed once the copy is complete
  --quiet               no progress lines
";

/// A parsed `copy` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Copy {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) key_prefix: String,
    pub(crate) table: Option<String>,
    pub(crate) mode: CopyMode,
    pub(crate) page_size: usize,
    pub(crate) resume_file: Option<PathBuf>,
    pub(crate) quiet: bool,
}

/// Parses the arguments after the program name.
pub(crate) fn parse(args: &[String]) -> Result<Copy, String> {
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("copy") => {}
        Some("-h" | "--help" | "help") | None => return Err(String::new()),
        Some(other) => return Err(format!("unknown command {other:?}")),
    }
    let mut copy = Copy {
        from: String::new(),
        to: String::new(),
        key_prefix: session_core::DEFAULT_KEY_PREFIX.to_owned(),
        table: None,
        mode: CopyMode::Overwrite,
        page_size: 1000,
        resume_file: None,
        quiet: false,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--from" => copy.from = value()?,
            "--to" => copy.to = value()?,
            "--key-prefix" => copy.key_prefix = value()?,
            "--table" => copy.table = Some(value()?),
            "--mode" => {
                copy.mode = match value()?.as_str() {
                    "overwrite" => CopyMode::Overwrite,
                    "keep-newer" => CopyMode::KeepNewer,
                    other => return Err(format!("--mode is overwrite or keep-newer, not {other:?}")),
                }
            }
            "--page-size" => {
                copy.page_size = value()?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("--page-size needs a positive number")?;
            }
            "--resume-file" => copy.resume_file = Some(PathBuf::from(value()?)),
            "--quiet" => copy.quiet = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if copy.from.is_empty() || copy.to.is_empty() {
        return Err("copy needs --from and --to".to_owned());
    }
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_a_copy() {
        let c = parse(&args(&[
            "copy",
            "--from",
            "snapshot:a.bin",
            "--to",
            "redis://h:1",
            "--mode",
            "keep-newer",
            "--page-size",
            "50",
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.from.as_str(), c.to.as_str()),
            ("snapshot:a.bin", "redis://h:1")
        );
        assert_eq!((c.mode, c.page_size), (CopyMode::KeepNewer, 50));
    }

    #[test]
    fn refuses_what_is_wrong() {
        for bad in [
            &["copy", "--from", "x"][..],
            &["copy", "--from", "a", "--to", "b", "--mode", "merge"],
            &["copy", "--from", "a", "--to", "b", "--page-size", "0"],
            &["copy", "--from"],
            &["move"],
            &["copy", "--from", "a", "--to", "b", "--what"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
