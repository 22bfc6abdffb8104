//! Reading one key file through the shared reader (`config/file_read.rs`): at most 4 KiB, with a warning when its mode is too open.
//!
//! A key source that exists in any form but cannot be read is a refusal, never "no key":
//! a dangling symlink, EACCES, a FIFO, a device or a directory all stop gatewayd with the
//! path and the reason. Only an entry that does not exist at all is absent.

use std::path::Path;

use super::secret::Secret;
use crate::config::file_read::{self, FileKind};

pub use crate::config::file_read::{present, READ_DEADLINE};

/// A key is under 100 bytes; anything past this is not a key file.
pub const MAX_KEY_FILE_BYTES: u64 = FileKind::Secret.max_bytes();

/// Why a key file cannot be used. The text never contains any part of the file.
pub type KeyFileError = file_read::FileError;

/// What one read produced: the key, and a warning when the file's mode is too open.
pub struct KeyFile {
    pub secret: Secret,
    pub warning: Option<String>,
}

/// Reads the key at `path` (exactly one trailing newline stripped), regular files only,
/// bounded and under the shared reader's deadline.
pub fn read(path: &Path) -> Result<KeyFile, KeyFileError> {
    let content = file_read::read(path, FileKind::Secret)?;
    let mode = content.mode;
    let text = String::from_utf8(content.bytes).map_err(|_| KeyFileError {
        path: path.to_path_buf(),
        reason: "it is not UTF-8 text".into(),
    })?;
    let warning = (mode & 0o044 != 0).then(|| {
        format!(
            "key file {} is readable by group or others (mode {mode:04o}); anyone who can \
             read it can call this gatewayd. Run: chmod 600 {}",
            path.display(),
            path.display()
        )
    });
    let key = text.strip_suffix('\n').unwrap_or(&text);
    Ok(KeyFile {
        secret: Secret::new(key.to_string()),
        warning,
    })
}
