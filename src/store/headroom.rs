//! Keeps SQLite's write-ahead log small, and a spare file's worth of room to checkpoint it, so that a small or full volume cannot wedge the store.
//!
//! A checkpoint copies the log's pages into the database file, which first has to grow.
//! With SQLite's default (a checkpoint once the log holds 1000 pages, 4 MiB) the log of a
//! store on a small volume took the whole disk before its first checkpoint, and from then
//! on no checkpoint had room to run: writes failed until a restart, and the restart failed
//! too. Here the log is checkpointed every `AUTOCHECKPOINT_PAGES` pages and cut back to
//! `JOURNAL_SIZE_LIMIT_BYTES` afterwards; a log that still grew past `WAL_TRUNCATE_AT`
//! is checkpointed in full and truncated before the next write. And a spare file of
//! `SPARE_BYTES` is kept beside the database: when a checkpoint fails for lack of room,
//! the spare is deleted so that the checkpoint can run, then made again. It is also
//! deleted before the database is opened, so a restart on a full disk has room to open
//! it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::{AnyConnection, Row};

use super::sqlite_files::private_file;
use super::SessionError;

const PAGE_BYTES: u64 = 4096;
/// A commit that leaves more pages than this in the log checkpoints it (passively: pages
/// a reader still needs wait for the next commit).
const AUTOCHECKPOINT_PAGES: u64 = 64;
/// Once checkpointed, the log file is cut back to this size.
const JOURNAL_SIZE_LIMIT_BYTES: u64 = AUTOCHECKPOINT_PAGES * PAGE_BYTES;
/// A log file past this has outgrown its checkpoints (readers held them off, a large
/// batch, or a database file that could not grow): the next write first checkpoints it in
/// full and truncates it.
const WAL_TRUNCATE_AT: u64 = 2 * JOURNAL_SIZE_LIMIT_BYTES;
/// The spare: room to checkpoint a log of `WAL_TRUNCATE_AT` on an otherwise full disk.
const SPARE_BYTES: u64 = WAL_TRUNCATE_AT;
/// How often a spare that could not be made is tried again (on the next write after).
const SPARE_RETRY: Duration = Duration::from_secs(10);
/// After a checkpoint of an outgrown log failed, the next try waits this long, so that a
/// reader holding the log cannot make every write wait out the busy timeout.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(1);

/// The PRAGMAs that keep the log small, for every SQLite connection.
pub fn pragmas() -> [String; 2] {
    [
        format!("PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}"),
        format!("PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}"),
    ]
}

/// The log's size bound and the spare file of one SQLite data dir.
pub struct Headroom {
    wal: PathBuf,
    spare: PathBuf,
    spare_present: AtomicBool,
    /// A spare that could not be made is logged once, until one is made again.
    spare_missing_logged: AtomicBool,
    /// When making a missing spare was last tried.
    spare_tried: Mutex<Option<Instant>>,
    /// When a checkpoint of the outgrown log last failed.
    checkpoint_failed: Mutex<Option<Instant>>,
}

impl Headroom {
    pub fn new(database: &Path) -> Self {
        let file = |suffix: &str| {
            let mut name = database.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        let spare = file(".spare");
        Headroom {
            wal: file("-wal"),
            spare_present: AtomicBool::new(spare.exists()),
            spare_missing_logged: AtomicBool::new(false),
            spare,
            spare_tried: Mutex::new(None),
            checkpoint_failed: Mutex::new(None),
        }
    }

    /// Deletes the spare, giving its room back to the disk. True when there was one.
    pub fn release_spare(&self) -> bool {
        self.spare_present.store(false, Ordering::Relaxed);
        std::fs::remove_file(&self.spare).is_ok()
    }

    /// Makes the spare. `lent_back`: it was just released for a checkpoint or an open,
    /// so it is put back if it fits at all. Otherwise it is made only where twice its size
    /// is free, so that making it never fills the disk itself.
    pub async fn make_spare(&self, lent_back: bool) {
        if let Ok(mut tried) = self.spare_tried.lock() {
            *tried = Some(Instant::now());
        }
        let path = self.spare.clone();
        let made = tokio::task::spawn_blocking(move || write_spare(&path, lent_back)).await;
        match made {
            Ok(Ok(())) => {
                self.spare_present.store(true, Ordering::Relaxed);
                self.spare_missing_logged.store(false, Ordering::Relaxed);
            }
            Ok(Err(err)) if !self.spare_missing_logged.swap(true, Ordering::Relaxed) => {
                tracing::warn!(
                    path = %self.spare.display(),
                    error = %err,
                    "no room for the spare file that lets a full disk's write-ahead log be \
                     checkpointed; tried again every {}s while writes come",
                    SPARE_RETRY.as_secs()
                )
            }
            Ok(Err(_)) => {}
            Err(err) => tracing::warn!(error = %err, "making the spare file failed"),
        }
    }

    /// Before a write on the writer connection: a log that outgrew its checkpoints is
    /// checkpointed and truncated, and a missing spare is made again when it is due.
    pub async fn before_write(&self, conn: &mut AnyConnection) {
        let wal_bytes = std::fs::metadata(&self.wal).map_or(0, |m| m.len());
        if wal_bytes > WAL_TRUNCATE_AT && due(&self.checkpoint_failed, CHECKPOINT_RETRY) {
            if let Err(err) = self.checkpoint(conn).await {
                tracing::warn!(wal_bytes, error = %err, "write-ahead log checkpoint failed");
                if let Ok(mut failed) = self.checkpoint_failed.lock() {
                    *failed = Some(Instant::now());
                }
            }
        }
        if !self.spare_present.load(Ordering::Relaxed) && due(&self.spare_tried, SPARE_RETRY) {
            self.make_spare(false).await;
        }
    }

    /// Copies the whole log into the database file and truncates it. When that fails for
    /// lack of room, the spare's room is lent to it, and the spare made again after.
    pub async fn checkpoint(&self, conn: &mut AnyConnection) -> Result<(), SessionError> {
        match truncate_wal(conn).await {
            Err(err) if is_out_of_space(&err) && self.release_spare() => {
                tracing::warn!(
                    "the disk is full: the spare file's room goes to a checkpoint of the \
                     write-ahead log"
                );
                let checkpointed = truncate_wal(conn).await;
                self.make_spare(true).await;
                checkpointed
            }
            other => other,
        }
    }
}

/// True when `last` is unset or at least `interval` ago.
fn due(last: &Mutex<Option<Instant>>, interval: Duration) -> bool {
    last.lock()
        .is_ok_and(|last| last.is_none_or(|at| at.elapsed() >= interval))
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`; waits (the busy timeout) for readers of the log.
async fn truncate_wal(conn: &mut AnyConnection) -> Result<(), SessionError> {
    let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut *conn)
        .await?;
    let busy: i64 = row.try_get(0)?;
    if busy != 0 {
        return Err(SessionError::Setup(
            "readers kept the write-ahead log from being checkpointed".into(),
        ));
    }
    Ok(())
}

/// Writes the spare (`SPARE_BYTES` of zeros, real blocks rather than a sparse file). With
/// a margin, twice that is written first and half given back. A spare that did not fit
/// is deleted.
fn write_spare(path: &Path, lent_back: bool) -> std::io::Result<()> {
    let bytes = if lent_back {
        SPARE_BYTES
    } else {
        2 * SPARE_BYTES
    };
    let written = (|| {
        let mut file = private_file(path).map_err(std::io::Error::other)?;
        file.set_len(0)?;
        let chunk = vec![0u8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        file.set_len(SPARE_BYTES)?;
        file.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// True for SQLite's "database or disk is full" (SQLITE_FULL) and for ENOSPC.
fn is_out_of_space(err: &SessionError) -> bool {
    match err {
        SessionError::Storage(sqlx::Error::Database(db)) => {
            db.code().is_some_and(|code| code == "13") || db.message().contains("disk is full")
        }
        SessionError::Storage(sqlx::Error::Io(io)) => io.kind() == std::io::ErrorKind::StorageFull,
        _ => false,
    }
}
