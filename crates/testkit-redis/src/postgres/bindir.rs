//! Finding PostgreSQL's programs: `initdb` and `postgres`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::env::{non_empty_var, PG_BINDIR_ENV};
use crate::process;

/// Where Debian installs each major version: `/usr/lib/postgresql/<N>/bin`.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// The directory of PostgreSQL's `initdb` and `postgres`: [`PG_BINDIR_ENV`] when set, else
/// the newest Debian `/usr/lib/postgresql/<N>/bin` holding both, else the directory of
/// `postgres` on `PATH` when `initdb` is there too.
///
/// # Errors
///
/// [`io::ErrorKind::NotFound`], saying where it looked and how to install PostgreSQL, when
/// none is found or [`PG_BINDIR_ENV`] names a directory without them.
pub fn find_postgres_bindir() -> io::Result<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "postgres"]
            .iter()
            .all(|p| process::is_executable(&dir.join(p)))
    };
    if let Some(dir) = non_empty_var(PG_BINDIR_ENV).map(PathBuf::from) {
        return if complete(&dir) {
            Ok(dir)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{PG_BINDIR_ENV}={} holds no executable initdb and postgres",
                    dir.display()
                ),
            ))
        };
    }
    if let Ok(entries) = fs::read_dir(DEBIAN_ROOT) {
        let newest = entries
            .flatten()
            .filter_map(|entry| {
                let version = parse_version(entry.file_name().to_str()?)?;
                let bin = entry.path().join("bin");
                complete(&bin).then_some((version, bin))
            })
            .max();
        if let Some((_, bin)) = newest {
            return Ok(bin);
        }
    }
    if let Some(dir) = process::find_program("postgres")
        .as_deref()
        .and_then(Path::parent)
        .filter(|dir| complete(dir))
    {
        return Ok(dir.to_path_buf());
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "PostgreSQL's initdb and postgres not found ({PG_BINDIR_ENV} unset, nothing in \
             {DEBIAN_ROOT}/<N>/bin, none on PATH); install as root with \
             `apt-get update && apt-get install -y postgresql` (first write \
             `create_main_cluster = false` to /etc/postgresql-common/createcluster.conf so that \
             Debian starts no cluster of its own)"
        ),
    ))
}

/// `15` → `[15]`, `9.6` → `[9, 6]`; `None` for anything else.
pub(super) fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}
