//! The one way gatewayd reads a file: regular files only, opened non-blocking, a size cap per kind, under a deadline.
//!
//! Every file gatewayd reads goes through [`read`] (or [`read_stdin`] for `--config -`):
//! the config file, client key files, TLS certificates, keys and CA bundles, an upstream's
//! `api_key_file` and `file:` header values. A FIFO, a device, a directory or a dangling
//! symlink is refused with the path and what it is, never opened for a blocking read; a
//! file larger than its kind's cap is refused after reading one byte past the cap; and a
//! read that hangs (a stuck network filesystem) is abandoned at [`READ_DEADLINE`], its
//! thread counted in [`super::left_behind`]. Error texts never quote the file.

use std::fs::Metadata;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use super::left_behind::Watch;

/// How long one read may take (stat, open, read) before it is given up as hung.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);

/// What a file holds, which decides how much of it gatewayd will read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// One secret: a client key file, an upstream's `api_key_file`, a `file:` header value.
    Secret,
    /// PEM: a certificate chain, a private key or a CA bundle.
    Pem,
    /// The TOML config file (`--config`).
    Config,
}

impl FileKind {
    /// The most bytes a file of this kind may hold.
    pub const fn max_bytes(self) -> u64 {
        match self {
            FileKind::Secret => 4 * 1024,
            FileKind::Pem => 1024 * 1024,
            FileKind::Config => 4 * 1024 * 1024,
        }
    }

    fn what(self) -> &'static str {
        match self {
            FileKind::Secret => "a key or header file",
            FileKind::Pem => "a certificate, key or CA file",
            FileKind::Config => "a config file",
        }
    }
}

/// Why a file cannot be used. Names the path and the reason; never any of the content.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    pub reason: String,
}

/// A regular file's content and its permission bits.
pub struct Content {
    pub bytes: Vec<u8>,
    pub mode: u32,
}

/// Is there an entry at `path` in any form (a dangling symlink counts)? `Ok(false)` only
/// when nothing exists there; any other failure to look (EACCES, ENOTDIR) is an error.
pub fn present(path: &Path) -> Result<bool, FileError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
        Err(err) => Err(refuse(path, io_reason(&err))),
    }
}

/// Reads the regular file at `path`, at most `kind.max_bytes()`, on a helper thread,
/// waiting at most [`READ_DEADLINE`]; a read that hangs is abandoned and refused.
pub fn read(path: &Path, kind: FileKind) -> Result<Content, FileError> {
    let owned = path.to_path_buf();
    within_deadline(path, move || read_now(&owned, kind))
}

/// [`read`], as UTF-8 text.
pub fn read_text(path: &Path, kind: FileKind) -> Result<String, FileError> {
    let content = read(path, kind)?;
    String::from_utf8(content.bytes).map_err(|_| refuse(path, "it is not UTF-8 text".into()))
}

/// Standard input (`--config -`) as UTF-8 text, with `kind`'s cap and [`READ_DEADLINE`]
/// for the whole read: a pipe nobody closes is refused, never waited on for ever.
pub fn read_stdin(kind: FileKind) -> Result<String, FileError> {
    let path = Path::new("- (standard input)");
    let bytes = within_deadline(path, move || {
        read_bounded(path, std::io::stdin().lock(), kind)
    })?;
    String::from_utf8(bytes).map_err(|_| refuse(path, "it is not UTF-8 text".into()))
}

fn within_deadline<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, FileError> {
    let (tx, rx) = mpsc::channel();
    let watch = Watch::new();
    let end = watch.worker();
    std::thread::Builder::new()
        .name("file-read".into())
        .spawn(move || {
            let _end = end;
            let _ = tx.send(work());
        })
        .map_err(|err| refuse(path, format!("cannot start the reader thread: {err}")))?;
    match rx.recv_timeout(READ_DEADLINE) {
        Ok(result) => result,
        Err(_) => {
            watch.abandon();
            Err(refuse(
                path,
                format!(
                    "reading it did not finish within {} s (a hung network filesystem?); the \
                     reading thread is left behind ({} such threads now)",
                    READ_DEADLINE.as_secs(),
                    super::left_behind::count()
                ),
            ))
        }
    }
}

fn read_now(path: &Path, kind: FileKind) -> Result<Content, FileError> {
    // Judge the target before opening it: opening a FIFO blocks, a device can have
    // side effects.
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
    let bytes = read_bounded(path, file, kind)?;
    Ok(Content {
        bytes,
        mode: opened.mode() & 0o777,
    })
}

fn read_bounded(path: &Path, source: impl Read, kind: FileKind) -> Result<Vec<u8>, FileError> {
    let cap = kind.max_bytes();
    let mut bytes = Vec::new();
    source
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| refuse(path, io_reason(&err)))?;
    if bytes.len() as u64 > cap {
        return Err(refuse(
            path,
            format!(
                "it is larger than {cap} bytes, the most gatewayd reads for {}",
                kind.what()
            ),
        ));
    }
    Ok(bytes)
}

fn require_regular(path: &Path, metadata: &Metadata) -> Result<(), FileError> {
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
        format!("it is {what}; gatewayd reads only regular files"),
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

fn refuse(path: &Path, reason: String) -> FileError {
    FileError {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gwd-read-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn each_kind_has_its_cap_and_one_byte_more_is_refused() {
        let dir = dir("cap");
        for (kind, cap) in [
            (FileKind::Secret, 4096),
            (FileKind::Pem, 1 << 20),
            (FileKind::Config, 4 << 20),
        ] {
            let path = dir.join(format!("{kind:?}"));
            std::fs::write(&path, vec![b'a'; cap]).unwrap();
            assert_eq!(read(&path, kind).unwrap().bytes.len(), cap);
            std::fs::write(&path, vec![b'a'; cap + 1]).unwrap();
            let err = read(&path, kind).err().unwrap().to_string();
            assert!(err.contains(&format!("larger than {cap} bytes")), "{err}");
        }
    }

    #[test]
    fn devices_directories_and_dangling_links_are_refused_by_name() {
        let dir = dir("kinds");
        let dangling = dir.join("dangling");
        let _ = std::os::unix::fs::symlink(dir.join("gone"), &dangling);
        for (path, expect) in [
            (Path::new("/dev/zero"), "a character device"),
            (dir.as_path(), "a directory"),
            (
                dangling.as_path(),
                "symbolic link whose target does not exist",
            ),
        ] {
            let err = read(path, FileKind::Pem).err().unwrap().to_string();
            assert!(err.contains(expect), "{err}");
            assert!(err.contains(path.to_str().unwrap()), "{err}");
        }
    }
}
