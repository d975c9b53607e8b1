//! Scratch directories.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Scratch directories that will be removed on drop, for [`remove_registered`].
static REGISTRY: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A directory that is removed on drop when this process created it and
/// nobody called [`Scratch::keep`].
#[derive(Debug)]
pub(crate) struct Scratch {
    path: PathBuf,
    remove: bool,
}

impl Scratch {
    /// `given` (created if missing, kept on drop), or a fresh unique
    /// directory under the system temp dir whose name ends in `label`.
    pub(crate) fn new(given: Option<&Path>, label: &str) -> io::Result<Self> {
        if let Some(path) = given {
            fs::create_dir_all(path)?;
            return Ok(Self {
                path: absolute(path)?,
                remove: false,
            });
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("testkit-redis-{}-{nanos:x}-{n}-{label}", std::process::id());
            let path = std::env::temp_dir().join(name);
            match fs::create_dir(&path) {
                Ok(()) => {
                    registry().push(path.clone());
                    return Ok(Self { path, remove: true });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether drop removes the directory.
    pub(crate) fn removes(&self) -> bool {
        self.remove
    }

    /// Leaves the directory in place on drop.
    pub(crate) fn keep(&mut self) {
        self.remove = false;
        registry().retain(|p| p != &self.path);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.remove {
            let _ = fs::remove_dir_all(&self.path);
            registry().retain(|p| p != &self.path);
        }
    }
}

fn absolute(path: &Path) -> io::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

/// The scratch directories that will be removed on drop.
pub(crate) fn registered() -> Vec<PathBuf> {
    registry().clone()
}

/// Removes every scratch directory still registered (for a signal handler,
/// after the servers in them were killed).
pub(crate) fn remove_registered() {
    for path in registry().drain(..) {
        let _ = fs::remove_dir_all(path);
    }
}

fn registry() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}
