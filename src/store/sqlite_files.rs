//! The SQLite data dir and its files: the dir made private (or warned about), the one-process lock, and sessions.db created 0600.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::SessionError;

/// Makes the data dir ready and returns the database file's path. The dir is created
/// 0700 when missing; an existing one that other users can enter or read is warned
/// about (it holds people's conversations). `sessions.db` is created 0600 before SQLite
/// opens it: SQLite would create it 0644 (less the umask), and its `-wal` and `-shm`
/// files take the database file's mode.
pub fn prepare(data_dir: &Path) -> Result<PathBuf, SessionError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| {
            SessionError::Setup(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
    warn_if_open_to_others(data_dir, "data dir");
    let database = data_dir.join("sessions.db");
    private_file(&database)?;
    warn_if_open_to_others(&database, "session database");
    Ok(database)
}

/// Opens `path` for writing, creating it 0600 if missing (an existing file keeps its
/// contents and mode).
pub fn private_file(path: &Path) -> Result<File, SessionError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| SessionError::Setup(format!("cannot open {}: {e}", path.display())))
}

/// One gatewayd per SQLite file: a second process would share leases it cannot see
/// being renewed. Several instances share sessions through PostgreSQL instead.
pub fn lock(data_dir: &Path) -> Result<File, SessionError> {
    let file = private_file(&data_dir.join("sessions.lock"))?;
    file.try_lock()
        .map_err(|_| SessionError::InUse(data_dir.display().to_string()))?;
    Ok(file)
}

/// Logs a warning when users other than the owner have any access to `path`.
fn warn_if_open_to_others(path: &Path, what: &'static str) {
    let Ok(metadata) = std::fs::metadata(path) else {
        return;
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:o}"),
            "the {what} is open to other users, and it holds people's conversations: \
             make it private (chmod go-rwx)"
        );
    }
}
