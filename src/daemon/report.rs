//! The pid file and the reload report beside it: written by the daemon, read by `gatewayd reload`.
//!
//! The pid file holds the pid and the process's start time (from `/proc`), so a pid that
//! the kernel has since given to another process is recognised as stale. The report is
//! the outcome of the last reload, with the pid and start time of the daemon that wrote
//! it and that daemon's count of reloads: `gatewayd reload` waits for a higher count from
//! the daemon it signalled.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where the pid file goes when `--pid-file` does not say.
pub const PID_FILE_NAME: &str = "gatewayd.pid";

/// The daemon's pid file and its reload report (the pid file's name with `.reload`).
#[derive(Debug, Clone)]
pub struct ReportFiles {
    pub pid: PathBuf,
    pub report: PathBuf,
}

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Still running (never written).
    Pending,
    /// The new config is in force (`changed` may be empty: nothing changed).
    Applied,
    /// Nothing changed; `reason` says why.
    Rejected,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The process that wrote it, and that process's start time (`/proc/PID/stat`), so a
    /// report left by an earlier daemon is never taken for this one's.
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub process_start: Option<u64>,
    /// Counts the reloads of this process, from 1.
    pub generation: u64,
    /// When the reload started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    pub outcome: Outcome,
    /// Settings in force for new requests.
    #[serde(default)]
    pub changed: Vec<String>,
    /// Settings that changed in the file but need a restart.
    #[serde(default)]
    pub restart: Vec<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Parts that failed after the config was applied (TLS files).
    #[serde(default)]
    pub problems: Vec<String>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

impl Report {
    pub fn begin(generation: u64) -> Report {
        let pid = std::process::id();
        Report {
            pid,
            process_start: start_time(pid),
            generation,
            started_ms: now_ms(),
            outcome: Outcome::Pending,
            changed: Vec::new(),
            restart: Vec::new(),
            reason: None,
            problems: Vec::new(),
        }
    }
}

/// The start time of process `pid` (clock ticks since boot, field 22 of
/// `/proc/PID/stat`); `None` when there is no such process or it cannot be read.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The pid file's contents: the pid, and its start time when known.
#[derive(Debug, PartialEq, Eq)]
pub struct PidRecord {
    pub pid: u32,
    pub start_time: Option<u64>,
}

impl PidRecord {
    pub fn parse(text: &str) -> Option<PidRecord> {
        let mut lines = text.lines();
        let pid = lines.next()?.trim().parse().ok().filter(|&pid| pid > 0)?;
        let start_time = lines
            .next()
            .and_then(|line| line.trim().strip_prefix("start_time=")?.parse().ok());
        Some(PidRecord { pid, start_time })
    }
}

impl ReportFiles {
    /// `--pid-file`, or `gatewayd.pid` in the data dir.
    pub fn new(pid_file: Option<&Path>, data_dir: &Path) -> ReportFiles {
        let pid = match pid_file {
            Some(path) => path.to_path_buf(),
            None => data_dir.join(PID_FILE_NAME),
        };
        let report = pid.with_extension("reload");
        ReportFiles { pid, report }
    }

    /// Writes this process's pid file, and removes a report left by an earlier run.
    pub fn write_pid(&self) -> std::io::Result<()> {
        let _ = std::fs::remove_file(&self.report);
        let pid = std::process::id();
        let mut text = format!("{pid}\n");
        if let Some(start) = start_time(pid) {
            text.push_str(&format!("start_time={start}\n"));
        }
        write_atomically(&self.pid, text.as_bytes())
    }

    /// Removes the pid file if it is still this process's (and the report with it).
    pub fn remove_pid(&self) {
        let ours = std::fs::read_to_string(&self.pid)
            .ok()
            .and_then(|text| PidRecord::parse(&text))
            .is_some_and(|record| record.pid == std::process::id());
        if ours {
            let _ = std::fs::remove_file(&self.pid);
            let _ = std::fs::remove_file(&self.report);
        }
    }

    /// Replaces the report (a failure is logged: the reload itself has happened).
    pub fn write_report(&self, report: &Report) {
        let written = serde_json::to_vec(report)
            .map_err(std::io::Error::other)
            .and_then(|json| write_atomically(&self.report, &json));
        if let Err(error) = written {
            tracing::warn!(
                path = %self.report.display(),
                %error,
                "cannot write the reload report; `gatewayd reload` will not see this reload's outcome"
            );
        }
    }

    /// The last report, if there is one that parses.
    pub fn read_report(&self) -> Option<Report> {
        let text = std::fs::read(&self.report).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// Writes `path` whole or not at all: a reader never sees half a file. The temporary
/// file is created afresh (never through a symlink or over a file someone left there),
/// readable and writable by its owner only (like everything gatewayd keeps in the data dir).
fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    // One left by an earlier process with this pid (or planted): removing a symlink
    // removes the link, not what it points to.
    match std::fs::remove_file(&temporary) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_parses_with_or_without_its_start_time() {
        assert_eq!(
            PidRecord::parse("42\nstart_time=7\n"),
            Some(PidRecord {
                pid: 42,
                start_time: Some(7)
            })
        );
        assert_eq!(PidRecord::parse("42").map(|r| r.start_time), Some(None));
        assert_eq!(PidRecord::parse("0\n"), None);
        assert_eq!(PidRecord::parse("gatewayd\n"), None);
    }

    #[test]
    fn a_planted_symlink_at_the_temporary_name_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("gatewayd-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let pid_file = dir.join(PID_FILE_NAME);
        let temporary = dir.join(format!(".{PID_FILE_NAME}.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &temporary).unwrap();

        write_atomically(&pid_file, b"42\n").unwrap();

        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let written = std::fs::symlink_metadata(&pid_file).unwrap();
        assert!(
            written.file_type().is_file(),
            "the pid file is a plain file"
        );
        assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), "42\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn this_process_has_a_start_time() {
        assert!(start_time(std::process::id()).is_some());
    }
}
