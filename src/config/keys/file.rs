//! Reading one key file safely: regular files only, opened non-blocking, at most 4 KiB, under a deadline.
//!
//! A key source that exists in any form but cannot be read is a refusal, never "no key":
//! a dangling symlink, EACCES, a FIFO, a device or a directory all stop gatewayd with the
//! path and the reason. Only an entry that does not exist at all is absent.

use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use super::secret::Secret;

/// A key is under 100 bytes; anything past this is not a key file.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// How long one read may take (open, stat, read) before it is given up as hung.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);

/// Why a key file cannot be used. The text never contains any part of the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot use key file {path}: {reason}")]
pub struct KeyFileError {
    pub path: PathBuf,
    pub reason: String,
}

/// What one read produced: the key, and a warning when the file's mode is too open.
pub struct KeyFile {
    pub secret: Secret,
    pub warning: Option<String>,
}

/// Is there an entry at `path` in any form (a dangling symlink counts)? `Ok(false)` only
/// when nothing exists there; any other failure to look (EACCES, ENOTDIR) is an error.
pub fn present(path: &Path) -> Result<bool, KeyFileError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
        Err(err) => Err(refuse(path, io_reason(&err))),
    }
}

/// Reads the key at `path` (exactly one trailing newline stripped) on a helper thread,
/// waiting at most [`READ_DEADLINE`]; a read that hangs is abandoned and refused.
pub fn read(path: &Path) -> Result<KeyFile, KeyFileError> {
    let (tx, rx) = mpsc::channel();
    let owned = path.to_path_buf();
    std::thread::Builder::new()
        .name("key-file".into())
        .spawn(move || {
            let _ = tx.send(read_now(&owned));
        })
        .map_err(|err| refuse(path, format!("cannot start the reader thread: {err}")))?;
    match rx.recv_timeout(READ_DEADLINE) {
        Ok(result) => result,
        Err(_) => Err(refuse(
            path,
            format!(
                "reading it did not finish within {} s (a hung network filesystem?)",
                READ_DEADLINE.as_secs()
            ),
        )),
    }
}

fn read_now(path: &Path) -> Result<KeyFile, KeyFileError> {
    // Judge the target before opening it: opening a device can have side effects.
    let before = std::fs::metadata(path).map_err(|err| {
        let dangling = err.kind() == ErrorKind::NotFound
            && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if dangling {
            refuse(
                path,
                "it is a symbolic link whose target does not exist".into(),
            )
        } else {
            refuse(path, io_reason(&err))
        }
    })?;
    require_regular(path, &before)?;
    // O_NONBLOCK: should the entry be swapped for a FIFO after the check, open() still
    // returns at once; the fstat below then refuses it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|err| refuse(path, io_reason(&err)))?;
    let opened = file
        .metadata()
        .map_err(|err| refuse(path, io_reason(&err)))?;
    require_regular(path, &opened)?;
    let content = read_bounded(path, file)?;
    let mode = opened.mode() & 0o777;
    let warning = (mode & 0o044 != 0).then(|| {
        format!(
            "key file {} is readable by group or others (mode {mode:04o}); anyone who can \
             read it can call this gatewayd. Run: chmod 600 {}",
            path.display(),
            path.display()
        )
    });
    let key = content.strip_suffix('\n').unwrap_or(&content);
    Ok(KeyFile {
        secret: Secret::new(key.to_string()),
        warning,
    })
}

fn read_bounded(path: &Path, file: File) -> Result<String, KeyFileError> {
    let mut bytes = Vec::with_capacity(128);
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| refuse(path, io_reason(&err)))?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(refuse(
            path,
            format!("it is larger than {MAX_KEY_FILE_BYTES} bytes; a key file holds one key"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| refuse(path, "it is not UTF-8 text".into()))
}

fn require_regular(path: &Path, metadata: &Metadata) -> Result<(), KeyFileError> {
    let kind = metadata.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(refuse(
        path,
        format!("it is {what}; a key file must be a regular file"),
    ))
}

fn io_reason(err: &std::io::Error) -> String {
    match err.kind() {
        ErrorKind::PermissionDenied => format!(
            "permission denied ({err}): the user gatewayd runs as cannot read it or a \
             directory above it"
        ),
        ErrorKind::NotFound => "it does not exist".into(),
        _ => err.to_string(),
    }
}

fn refuse(path: &Path, reason: String) -> KeyFileError {
    KeyFileError {
        path: path.to_path_buf(),
        reason,
    }
}
