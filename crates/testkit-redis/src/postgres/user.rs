//! The unprivileged user the server runs as when this process is root.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The unprivileged user the server runs as when this process is root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RunAs {
    pub(super) name: String,
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// The uid of this process (the owner of `/proc/self`).
pub(super) fn current_uid() -> io::Result<u32> {
    Ok(fs::metadata("/proc/self")?.uid())
}

/// The user a root process runs the server as: `postgres`, else `nobody`, from `/etc/passwd`.
pub(super) fn unprivileged_user() -> io::Result<RunAs> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    ["postgres", "nobody"]
        .into_iter()
        .find_map(|name| passwd_entry(&passwd, name))
        .ok_or_else(|| {
            io::Error::other(
                "running as root, and /etc/passwd has neither a `postgres` nor a `nobody` user to run \
                 PostgreSQL as (initdb and postgres refuse to run as root)",
            )
        })
}

/// The uid and gid of `name` in the text of `/etc/passwd` (`name:x:uid:gid:…`); never root.
pub(super) fn passwd_entry(passwd: &str, name: &str) -> Option<RunAs> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        (uid != 0).then(|| RunAs {
            name: name.to_owned(),
            uid,
            gid,
        })
    })
}

/// Fails, saying what to do, when `user` cannot enter every directory above `dir` (say a
/// `TMPDIR` under `/root`).
pub(super) fn check_reachable(dir: &Path, user: &RunAs) -> io::Result<()> {
    for ancestor in dir.ancestors().skip(1) {
        let meta = fs::metadata(ancestor)?;
        let mode = meta.mode();
        let may_enter = if meta.uid() == user.uid {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !may_enter {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "PostgreSQL runs as user {} (this process is root), which cannot enter {}; \
                     set TMPDIR to a directory it can reach, such as /tmp",
                    user.name,
                    ancestor.display()
                ),
            ));
        }
    }
    Ok(())
}
