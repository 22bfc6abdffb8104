//! `gatewayd reload`: find the daemon running with this config through its pid file, send it SIGHUP, and print its verdict from the reload report.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::reload::RELOAD_DEADLINE;
use super::report::{self, Outcome, PidRecord, Report, ReportFiles};
use crate::config::cli::ServeArgs;
use crate::config::{Config, STDIN_CONFIG};

/// How long `gatewayd reload` waits for the report: the reload's own deadline, and a
/// margin for the daemon to notice the signal and write the file.
const WAIT: Duration = Duration::from_secs(RELOAD_DEADLINE.as_secs() + 5);

/// Exit codes of `gatewayd reload` (3 and 4 as in the LSB's init-script actions).
pub mod exit {
    /// The reload was applied (maybe with settings that need a restart), or nothing changed.
    pub const APPLIED: u8 = 0;
    /// The daemon kept its configuration (rejected, or no verdict in time).
    pub const NOT_APPLIED: u8 = 1;
    /// No gatewayd runs with this config: no pid file, or a stale one.
    pub const NOT_RUNNING: u8 = 3;
    /// Not allowed to read the pid file or to signal the daemon.
    pub const NOT_PERMITTED: u8 = 4;
}

/// What `gatewayd reload` prints (stdout on success, stderr otherwise) and exits with.
pub struct Answer {
    pub code: u8,
    pub text: String,
}

fn answer(code: u8, text: impl Into<String>) -> Answer {
    Answer {
        code,
        text: text.into(),
    }
}

/// Where the daemon's pid file should be, and why that may be a guess.
pub struct Located {
    pub files: ReportFiles,
    /// Why the config could not be loaded (so its data dir came from elsewhere).
    pub config_problem: Option<String>,
}

/// The pid file of the daemon `args` would start. The config file may be the broken one
/// that is about to be rejected, so only its `[server] data_dir` is needed from it.
pub fn locate(args: &ServeArgs, env_cors: Option<String>) -> Located {
    if let Some(path) = &args.pid_file {
        return Located {
            files: ReportFiles::new(Some(path), Path::new("")),
            config_problem: None,
        };
    }
    let from_stdin = args.config.as_deref() == Some(Path::new(STDIN_CONFIG));
    let loaded = match from_stdin {
        // Standard input is the daemon's, not ours to read.
        true => Err("a config read from standard input cannot be read again".to_string()),
        false => Config::load(args, env_cors).map_err(|e| e.to_string()),
    };
    let (data_dir, config_problem) = match loaded {
        Ok(config) => (config.data_dir, None),
        Err(problem) => {
            let dir = args
                .data_dir
                .clone()
                .or_else(|| lenient_data_dir(args.config.as_deref()?))
                .unwrap_or_else(|| PathBuf::from("data"));
            (dir, Some(problem))
        }
    };
    Located {
        files: ReportFiles::new(None, &data_dir),
        config_problem,
    }
}

/// `[server] data_dir` from a file that may not pass every check.
fn lenient_data_dir(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = text.parse().ok()?;
    let dir = table.get("server")?.get("data_dir")?.as_str()?;
    Some(PathBuf::from(dir))
}

/// Signals the daemon behind `located` and waits for its verdict.
pub fn reload(located: &Located) -> Answer {
    let files = &located.files;
    let pid_path = files.pid.display();
    if std::fs::symlink_metadata(&files.pid).is_ok_and(|meta| meta.file_type().is_symlink()) {
        return answer(exit::NOT_APPLIED, format!(
            "{pid_path} is a symbolic link, not a pid file gatewayd wrote; remove it if no gatewayd runs with this config"
        ));
    }
    let text = match std::fs::read_to_string(&files.pid) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let guess = match &located.config_problem {
                Some(problem) => format!(
                    ". The config could not be loaded ({problem}), so this may not be the daemon's data dir: pass --data-dir or --pid-file"
                ),
                None => String::new(),
            };
            return answer(exit::NOT_RUNNING, format!(
                "gatewayd is not running with this config: there is no pid file at {pid_path} (gatewayd writes it at start and removes it at exit; pass --pid-file if it was started with one){guess}"
            ));
        }
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
            return answer(exit::NOT_PERMITTED, format!(
                "cannot read the pid file {pid_path}: permission denied. Run `gatewayd reload` as the user gatewayd runs as (e.g. sudo -u gatewayd), or as root"
            ));
        }
        Err(err) => {
            return answer(
                exit::NOT_APPLIED,
                format!("cannot read the pid file {pid_path}: {err}"),
            )
        }
    };
    let Some(record) = PidRecord::parse(&text) else {
        return answer(exit::NOT_APPLIED, format!(
            "{pid_path} is not a gatewayd pid file (its first line must be a process id); remove it if no gatewayd runs with this config"
        ));
    };
    if !Path::new("/proc/self/stat").exists() {
        // Fail closed: without /proc nothing proves the pid is still gatewayd's.
        return answer(
            exit::NOT_APPLIED,
            format!(
                "cannot check that process {} is gatewayd (no /proc here), so no signal was sent; if it is, run: kill -HUP {}",
                record.pid, record.pid
            ),
        );
    }
    if let Some(stale) = stale(&record, &files.pid) {
        return answer(exit::NOT_RUNNING, stale);
    }
    // Reports are told apart by the daemon that wrote them and its own count, never by
    // the wall clock (which may step).
    let watched = report::start_time(record.pid);
    let ours =
        |report: &report::Report| report.pid == record.pid && report.process_start == watched;
    let before = files
        .read_report()
        .filter(|report| ours(report))
        .map_or(0, |report| report.generation);
    if let Err(err) = hangup(record.pid) {
        return match err.raw_os_error() {
            Some(libc::EPERM) => answer(exit::NOT_PERMITTED, format!(
                "not allowed to signal gatewayd (pid {}): run `gatewayd reload` as the user gatewayd runs as (e.g. sudo -u gatewayd), or as root", record.pid
            )),
            Some(libc::ESRCH) => answer(exit::NOT_RUNNING, format!(
                "gatewayd is not running: the pid file {pid_path} names process {}, which has exited", record.pid
            )),
            _ => answer(exit::NOT_APPLIED, format!("cannot signal gatewayd (pid {}): {err}", record.pid)),
        };
    }
    let until = Instant::now() + WAIT;
    loop {
        if let Some(report) = files.read_report() {
            if ours(&report) && report.generation > before {
                return verdict(record.pid, &report);
            }
        }
        if report::start_time(record.pid) != watched {
            return answer(
                exit::NOT_RUNNING,
                format!(
                    "gatewayd (pid {}) exited before it reported the reload; see its log",
                    record.pid
                ),
            );
        }
        if Instant::now() >= until {
            return answer(exit::NOT_APPLIED, format!(
                "gatewayd (pid {}) got the signal but reported no outcome within {} s (in {}); see its log",
                record.pid,
                WAIT.as_secs(),
                files.report.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Why the pid file names no running gatewayd, if it does not.
fn stale(record: &PidRecord, path: &Path) -> Option<String> {
    let path = path.display();
    match (report::start_time(record.pid), record.start_time) {
        (None, _) => Some(format!(
            "gatewayd is not running: the pid file {path} is stale (process {} has exited without removing it); remove the file",
            record.pid
        )),
        (Some(now), Some(then)) if now != then => Some(format!(
            "gatewayd is not running: the pid file {path} is stale (process {} is another program now); remove the file",
            record.pid
        )),
        // A matching start time rules out a reused pid, not a pid file written by hand
        // (or by whoever can write the data dir): the program must be gatewayd too.
        _ if !is_gatewayd(record.pid) => Some(format!(
            "gatewayd is not running: the pid file {path} names process {}, which is not gatewayd; remove the file",
            record.pid
        )),
        _ => None,
    }
}

/// Whether process `pid` runs a program named gatewayd, or named as this one is
/// (`/proc/PID/comm`).
fn is_gatewayd(pid: u32) -> bool {
    let name = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/comm"));
    let Ok(theirs) = name(&pid.to_string()) else {
        return false;
    };
    let theirs = theirs.trim_end();
    theirs == "gatewayd" || name("self").is_ok_and(|ours| ours.trim_end() == theirs)
}

/// Sends SIGHUP to `pid`.
#[allow(unsafe_code)]
fn hangup(pid: u32) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; `pid` is
    // positive (checked when the pid file was parsed), so it names one process and never
    // a process group.
    let sent = unsafe { libc::kill(pid, libc::SIGHUP) };
    match sent {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// The report, said for an operator.
fn verdict(pid: u32, report: &Report) -> Answer {
    let mut lines = Vec::new();
    let code = match report.outcome {
        Outcome::Applied => {
            if report.changed.is_empty() && report.restart.is_empty() {
                lines.push(format!(
                    "reloaded gatewayd (pid {pid}): nothing changed (the files are as they were)"
                ));
            } else if report.changed.is_empty() {
                lines.push(format!(
                    "reloaded gatewayd (pid {pid}): nothing changed live"
                ));
            } else {
                lines.push(format!(
                    "reloaded gatewayd (pid {pid}): changed for new requests: {}",
                    report.changed.join(", ")
                ));
            }
            if !report.restart.is_empty() {
                lines.push(format!(
                    "needs a restart to take effect (still running with the old value): {}",
                    report.restart.join(", ")
                ));
            }
            exit::APPLIED
        }
        Outcome::Rejected | Outcome::Pending => {
            lines.push(format!(
                "reload rejected; gatewayd (pid {pid}) keeps its whole previous configuration: {}",
                report.reason.as_deref().unwrap_or("no reason given")
            ));
            exit::NOT_APPLIED
        }
    };
    lines.extend(report.problems.iter().map(|p| format!("warning: {p}")));
    answer(code, lines.join("\n"))
}
