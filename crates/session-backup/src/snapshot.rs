//! Snapshot files: every live session of a store written to one file (a memory store at
//! graceful shutdown), and read back into any store by the next process, so switching or
//! restarting an in-process store logs no one out.
//!
//! The format (all integers big-endian):
//!
//! ```text
//! "SESSNAP" 0x01                       magic and format version (8 bytes)
//! repeated:  u8 namespace length (1..=32), namespace, u8 id length, id,
//!            u32 envelope length, envelope (docs/format.md: metadata with the deadline)
//! end:       u8 0, u64 number of sessions
//! ```
//!
//! A file is written beside its final path and renamed into place once complete, so a reader
//! never sees half a snapshot; one that is truncated or altered is refused as `Corrupt`.

use std::path::{Path, PathBuf};

use session_core::backend::{decode_entry, now_ms, parse_stored_id, Entry, Record};
use session_core::{Error, Namespace, Result, ScanCursor, SessionKey, SessionStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};

use crate::copy::{keep_newer, CopyMode, CopyProgress};

const MAGIC: &[u8; 8] = b"SESSNAP\x01";
/// The name errors give as backend.
const BACKEND: &str = "snapshot";
/// Largest envelope a snapshot may hold (a store's own limit is smaller).
const MAX_ENVELOPE: u32 = 64 << 20;
/// Sessions written per `save_many` when reading.
const PAGE: usize = 1000;

/// What [`write_snapshot`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotReport {
    /// Sessions in the file.
    pub sessions: u64,
    /// The file's size in bytes.
    pub bytes: u64,
}

/// Writes every live session of `store` to `path` (replacing it atomically).
///
/// # Errors
/// The store's errors; [`Error::Backend`] for a file that cannot be written.
pub async fn write_snapshot(store: &dyn SessionStore, path: &Path) -> Result<SnapshotReport> {
    let partial = partial_path(path);
    let written = write_partial(store, &partial).await;
    match written {
        Ok(report) => {
            tokio::fs::rename(&partial, path)
                .await
                .map_err(|e| io_error("rename", path, e))?;
            Ok(report)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            Err(e)
        }
    }
}

/// Writes the snapshot to `partial`, synced.
async fn write_partial(store: &dyn SessionStore, partial: &Path) -> Result<SnapshotReport> {
    let file = tokio::fs::File::create(partial)
        .await
        .map_err(|e| io_error("create", partial, e))?;
    let mut out = BufWriter::new(file);
    let mut report = SnapshotReport::default();
    let mut written = 8u64;
    out.write_all(MAGIC)
        .await
        .map_err(|e| io_error("write", partial, e))?;
    let mut cursor: Option<ScanCursor> = None;
    loop {
        let page = store.scan(cursor.as_ref(), PAGE).await?;
        for (key, record) in &page.sessions {
            let envelope = record.encode();
            let (ns, id) = (key.ns().as_bytes(), key.id.as_str().as_bytes());
            let len = u32::try_from(envelope.len())
                .ok()
                .filter(|len| *len <= MAX_ENVELOPE)
                .ok_or_else(|| too_large(key, envelope.len()))?;
            let mut entry = Vec::with_capacity(2 + ns.len() + id.len() + 4 + envelope.len());
            entry.push(u8::try_from(ns.len()).map_err(|_| too_large(key, ns.len()))?);
            entry.extend_from_slice(ns);
            entry.push(u8::try_from(id.len()).map_err(|_| too_large(key, id.len()))?);
            entry.extend_from_slice(id);
            entry.extend_from_slice(&len.to_be_bytes());
            entry.extend_from_slice(&envelope);
            out.write_all(&entry)
                .await
                .map_err(|e| io_error("write", partial, e))?;
            written += entry.len() as u64;
            report.sessions += 1;
        }
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    out.write_all(&[0])
        .await
        .map_err(|e| io_error("write", partial, e))?;
    out.write_all(&report.sessions.to_be_bytes())
        .await
        .map_err(|e| io_error("write", partial, e))?;
    out.flush().await.map_err(|e| io_error("write", partial, e))?;
    let file = out.into_inner();
    file.sync_all().await.map_err(|e| io_error("sync", partial, e))?;
    report.bytes = written + 9;
    Ok(report)
}

/// Reads a snapshot into `into`: every session still live, with its deadline and version
/// ([`CopyMode::Overwrite`] writes it; [`CopyMode::KeepNewer`] keeps a newer session or a
/// tombstone the store holds).
///
/// # Errors
/// [`Error::Corrupt`] for a file that is not a complete snapshot (then nothing is written); [`Error::Backend`] when it cannot be read; the store's errors.
pub async fn read_snapshot(path: &Path, into: &dyn SessionStore, mode: CopyMode) -> Result<CopyProgress> {
    let started = std::time::Instant::now();
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| io_error("open", path, e))?;
    let mut input = BufReader::new(file);
    let mut magic = [0u8; 8];
    read_exact(&mut input, &mut magic, path).await?;
    if &magic != MAGIC {
        return Err(corrupt("not a session snapshot (bad magic or format version)"));
    }
    // The whole file is read and checked before anything is written: a damaged snapshot
    // changes nothing.
    let mut progress = CopyProgress::default();
    let mut sessions: Vec<(SessionKey, Record)> = Vec::new();
    let mut seen = 0u64;
    loop {
        let ns_len = read_u8(&mut input, path).await?;
        if ns_len == 0 {
            let mut count = [0u8; 8];
            read_exact(&mut input, &mut count, path).await?;
            if u64::from_be_bytes(count) != seen {
                return Err(corrupt("the session count at the end does not match the file"));
            }
            break;
        }
        let namespace = read_text(&mut input, usize::from(ns_len), path).await?;
        let id_len = read_u8(&mut input, path).await?;
        let id = read_text(&mut input, usize::from(id_len), path).await?;
        let mut len = [0u8; 4];
        read_exact(&mut input, &mut len, path).await?;
        let len = u32::from_be_bytes(len);
        if len > MAX_ENVELOPE {
            return Err(corrupt("an entry is larger than any session"));
        }
        let mut envelope = vec![0u8; len as usize];
        read_exact(&mut input, &mut envelope, path).await?;
        seen += 1;
        let key = SessionKey::new(
            Namespace::new(&namespace).map_err(|_| corrupt("an entry's namespace is not valid"))?,
            parse_stored_id(&id).ok_or_else(|| corrupt("an entry's id is not valid"))?,
        );
        match decode_entry(&envelope.into(), key.ns())? {
            Entry::Live(record) => sessions.push((key, record)),
            Entry::Tombstone(_) => progress.skipped += 1,
        }
    }
    let mut extra = [0u8; 1];
    if input
        .read(&mut extra)
        .await
        .map_err(|e| io_error("read", path, e))?
        != 0
    {
        return Err(corrupt("bytes follow the end of the snapshot"));
    }
    for chunk in sessions.chunks(PAGE) {
        let now = now_ms();
        let mut page: Vec<(SessionKey, Record)> = chunk
            .iter()
            .filter(|(_, r)| !r.meta.is_expired(now))
            .cloned()
            .collect();
        progress.expired += (chunk.len() - page.len()) as u64;
        write_page(into, &mut page, mode, &mut progress).await?;
    }
    progress.elapsed = started.elapsed();
    Ok(progress)
}

async fn write_page(
    into: &dyn SessionStore,
    page: &mut Vec<(SessionKey, Record)>,
    mode: CopyMode,
    progress: &mut CopyProgress,
) -> Result<()> {
    if page.is_empty() {
        return Ok(());
    }
    match mode {
        CopyMode::Overwrite => {
            into.save_many(page).await?;
            progress.copied += page.len() as u64;
        }
        CopyMode::KeepNewer => {
            for (key, record) in page.iter() {
                keep_newer(into, key, record, progress).await?;
            }
        }
    }
    progress.pages += 1;
    page.clear();
    Ok(())
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

async fn read_exact(input: &mut BufReader<tokio::fs::File>, buf: &mut [u8], path: &Path) -> Result<()> {
    match input.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(corrupt("the file ends early (an incomplete snapshot)"))
        }
        Err(e) => Err(io_error("read", path, e)),
    }
}

async fn read_u8(input: &mut BufReader<tokio::fs::File>, path: &Path) -> Result<u8> {
    let mut b = [0u8; 1];
    read_exact(input, &mut b, path).await?;
    Ok(b[0])
}

async fn read_text(input: &mut BufReader<tokio::fs::File>, len: usize, path: &Path) -> Result<String> {
    let mut buf = vec![0u8; len];
    read_exact(input, &mut buf, path).await?;
    String::from_utf8(buf).map_err(|_| corrupt("an entry's key is not text"))
}

fn corrupt(reason: &str) -> Error {
    Error::Corrupt {
        namespace: String::new(),
        reason: format!("snapshot: {reason}"),
    }
}

fn too_large(key: &SessionKey, size: usize) -> Error {
    Error::TooLarge {
        namespace: key.ns().to_owned(),
        size,
        limit: MAX_ENVELOPE as usize,
    }
}

fn io_error(action: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Backend {
        backend: BACKEND,
        message: format!("cannot {action} {}: {}", path.display(), e.kind()),
        source: Some(Box::new(e)),
    }
}
