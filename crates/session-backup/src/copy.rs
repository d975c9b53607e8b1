//! Copying every live session from one store to another, page by page, each with its own
//! deadline; resumable from the cursor of the last page written.

use std::time::{Duration, Instant};

use session_core::backend::{now_ms, Change, Record};
use session_core::{Result, ScanCursor, SessionKey, SessionStore, Version};

/// How a copied session meets what the target already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CopyMode {
    /// Write it (`save_many`, last writer wins): for moving into a new, empty store.
    #[default]
    Overwrite,
    /// Apply it by the reconciliation rule (`reconcile`): a newer session or a tombstone in
    /// the target stays. For restoring into a store that is in use.
    KeepNewer,
}

/// Options of [`copy_sessions`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CopyOptions {
    /// How a session meets the target's.
    pub mode: CopyMode,
    /// Sessions per page (a hint to the source's `scan`). Default 1000.
    pub page_size: usize,
    /// Where to resume: the `cursor` of the last progress report of an earlier run.
    pub resume: Option<ScanCursor>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            mode: CopyMode::Overwrite,
            page_size: 1000,
            resume: None,
        }
    }
}

impl CopyOptions {
    /// Sets [`mode`](Self::mode).
    pub fn with_mode(mut self, mode: CopyMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets [`page_size`](Self::page_size) (at least 1).
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// Sets [`resume`](Self::resume).
    pub fn resuming(mut self, cursor: Option<ScanCursor>) -> Self {
        self.resume = cursor;
        self
    }
}

/// Where a copy stands, after each page and at the end.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CopyProgress {
    /// Pages written.
    pub pages: u64,
    /// Sessions written into the target.
    pub copied: u64,
    /// Sessions the target kept its own of ([`CopyMode::KeepNewer`]).
    pub kept: u64,
    /// Sessions whose deadline passed before they were written.
    pub expired: u64,
    /// Entries the source passed over (not a session).
    pub skipped: u64,
    /// Where the next page starts: save it to resume; `None` once the copy is complete.
    pub cursor: Option<ScanCursor>,
    /// Time since the copy started.
    pub elapsed: Duration,
}

/// Copies every live session of `from` into `to`, with its deadline and version, a page at a
/// time; `on_page` sees the progress after each page (save its `cursor` to resume a long copy
/// with [`CopyOptions::resuming`]). A session written to `from` during the copy may or may not
/// be copied; copy again (or write to both) to catch up.
///
/// # Errors
/// The first error of either store; the progress up to the last complete page was reported.
pub async fn copy_sessions(
    from: &dyn SessionStore,
    to: &dyn SessionStore,
    options: &CopyOptions,
    mut on_page: impl FnMut(&CopyProgress) + Send,
) -> Result<CopyProgress> {
    let started = Instant::now();
    let mut progress = CopyProgress {
        cursor: options.resume.clone(),
        ..CopyProgress::default()
    };
    loop {
        let page = from.scan(progress.cursor.as_ref(), options.page_size).await?;
        progress.skipped += page.skipped;
        let now = now_ms();
        let (live, expired): (Vec<(SessionKey, Record)>, Vec<_>) = page
            .sessions
            .into_iter()
            .partition(|(_, record)| !record.meta.is_expired(now));
        progress.expired += expired.len() as u64;
        match options.mode {
            CopyMode::Overwrite => {
                if !live.is_empty() {
                    to.save_many(&live).await?;
                }
                progress.copied += live.len() as u64;
            }
            CopyMode::KeepNewer => {
                for (key, record) in &live {
                    keep_newer(to, key, record, &mut progress).await?;
                }
            }
        }
        progress.pages += 1;
        progress.cursor = page.next;
        progress.elapsed = started.elapsed();
        on_page(&progress);
        if progress.cursor.is_none() {
            return Ok(progress);
        }
    }
}

/// Applies `record` to `to` by the reconciliation rule (a newer session or a tombstone there
/// stays) and counts the outcome.
pub(crate) async fn keep_newer(
    to: &dyn SessionStore,
    key: &SessionKey,
    record: &Record,
    progress: &mut CopyProgress,
) -> Result<()> {
    let outcome = to.reconcile(key, Version::NONE, Change::Write(record)).await?;
    if outcome.stored() {
        progress.copied += 1;
    } else if outcome.conflicted() {
        progress.kept += 1;
    } else {
        progress.expired += 1;
    }
    Ok(())
}
