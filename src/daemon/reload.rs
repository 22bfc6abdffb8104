//! SIGHUP: re-read the whole config (keys and upstreams included) and then every TLS file on a detached thread under a deadline, and install what is good; a stuck read never holds up a later reload.
//!
//! Reads happen off the async workers, on a thread of their own: an `open()` that blocks
//! cannot be cancelled. The thread hands over the config first (prepared and checked by
//! `swap.rs`, installed all at once or not at all) and the TLS files second, and each
//! part is installed as it arrives, so a certificate that fails (or hangs) never holds
//! back a key revocation. At [`RELOAD_DEADLINE`] the attempt ends whatever the
//! thread does: a thread still running is left behind (logged, and counted in
//! `gatewayd_reload_stuck_threads`), anything it reads later is thrown away, and the
//! next SIGHUP starts a fresh reload at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use tokio::sync::Notify;

use super::report::{Outcome, Report, ReportFiles};
use super::swap::{self, Prepared, Rejection, Running};
use crate::api::state::AppState;
use crate::config::keys::ProcessEnv;
use crate::config::left_behind::{self, Watch};
use crate::config::tls::TlsError;
use crate::upstream::tls::{FreshTls, UpstreamTls};

/// How long one reload may take before it is abandoned (what it has not installed by
/// then stays as it was).
pub const RELOAD_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the reload did not finish within {} s (a file on a hung filesystem?); its thread is left behind and the next SIGHUP starts a fresh reload", RELOAD_DEADLINE.as_secs())]
    TimedOut,
    #[error("the reload thread could not start: {0}")]
    Thread(String),
}

/// The listener's certificate and every upstream's TLS files, read but not in force.
pub struct TlsReadout {
    listener: Option<Result<CertifiedKey, TlsError>>,
    upstreams: Vec<(Arc<UpstreamTls>, Result<FreshTls, TlsError>)>,
}

/// Reads the listener's certificate and key and every upstream's `ca_file` and client
/// certificate (blocking; installs nothing).
pub fn read_tls(state: &AppState) -> TlsReadout {
    TlsReadout {
        listener: state.tls.as_ref().map(|tls| tls.read_fresh()),
        upstreams: state
            .upstreams
            .tls_settings()
            .iter()
            .map(|tls| (tls.clone(), tls.read_fresh()))
            .collect(),
    }
}

/// One part of a reload, handed from the reading thread to the installer.
enum Part {
    /// The config file with every key source and the upstreams: all of it or none.
    Config(Result<Box<Prepared>, Rejection>),
    /// The TLS files, after the config: a certificate that hangs never holds back a
    /// key revocation.
    Tls(TlsReadout),
}

fn install(running: &Running, part: Part, report: &mut Report) {
    match part {
        Part::Config(Ok(prepared)) => {
            report.outcome = Outcome::Applied;
            report.changed = prepared
                .changes
                .live
                .iter()
                .map(|s| s.to_string())
                .collect();
            report.restart = prepared
                .changes
                .restart
                .iter()
                .map(|s| s.to_string())
                .collect();
            swap::install(running, *prepared);
            let (changed, restart) = (report.changed.join(", "), report.restart.join(", "));
            if !restart.is_empty() {
                tracing::warn!(
                    settings = %restart,
                    "these settings changed but need a restart to take effect; the rest of the reload is applied"
                );
            }
            tracing::info!(changed = %changed, restart_needed = %restart, "config reloaded");
        }
        Part::Config(Err(rejection)) => {
            let what = match rejection {
                Rejection::Config(_) => "config reload rejected",
                Rejection::Keys(_) => "key reload rejected",
            };
            tracing::error!(
                error = %rejection,
                "{what}; the previous configuration and keys all stay in force"
            );
            report.outcome = Outcome::Rejected;
            report.reason = Some(rejection.to_string());
        }
        Part::Tls(readout) => install_tls(&running.state(), readout, report),
    }
}

/// Installs each good TLS part; each outcome is logged, a bad part leaves its old one.
fn install_tls(state: &AppState, readout: TlsReadout, report: &mut Report) {
    match (&state.tls, readout.listener) {
        (Some(tls), Some(Ok(pair))) => {
            tls.install(pair);
            tracing::info!("TLS certificate reloaded");
        }
        (_, Some(Err(err))) => {
            tracing::error!(
                error = %err,
                "TLS certificate reload rejected; the previous certificate and key stay in force"
            );
            report
                .problems
                .push(format!("the TLS certificate was not reloaded: {err}"));
        }
        _ => {}
    }
    for (upstream, outcome) in readout.upstreams {
        let name = upstream.name();
        match outcome {
            Ok(fresh) => {
                upstream.install(fresh);
                tracing::info!(upstream = %name, "upstream TLS files reloaded");
            }
            Err(err) => {
                tracing::error!(
                    upstream = %name,
                    error = %err,
                    "upstream TLS reload rejected; its previous TLS settings stay in force"
                );
                report.problems.push(format!(
                    "upstream {name:?}: its TLS files were not reloaded: {err}"
                ));
            }
        }
    }
}

/// Runs `read` on a detached thread (not tokio's blocking pool, whose threads would
/// hold up shutdown), handing each part it sends to `install` as it arrives, until the
/// thread ends or `deadline` passes. A thread still running then is left behind:
/// counted, and whatever it sends later is dropped, never installed.
async fn run_detached<P: Send + 'static>(
    deadline: Duration,
    read: impl FnOnce(&dyn Fn(P)) + Send + 'static,
    mut install: impl FnMut(P),
) -> Result<(), ReloadError> {
    let (parts, mut arriving) = tokio::sync::mpsc::unbounded_channel();
    let watch = Watch::new();
    let end = watch.worker();
    std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            let _end = end;
            read(&|part| {
                let _ = parts.send(part);
            });
        })
        .map_err(|err| ReloadError::Thread(err.to_string()))?;
    let until = tokio::time::Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(until, arriving.recv()).await {
            Ok(Some(part)) => install(part),
            Ok(None) => return Ok(()),
            Err(_) if watch.abandon() => return Err(ReloadError::TimedOut),
            // It ended just now: what it sent is complete and in time.
            Err(_) => {
                while let Ok(part) = arriving.try_recv() {
                    install(part);
                }
                return Ok(());
            }
        }
    }
}

/// One reload: the whole config (with keys and upstreams), then the TLS files, each
/// installed if good and in time; what happened goes to the log and to `report_to`.
async fn reload_once(
    running: Arc<Running>,
    deadline: Duration,
    generation: u64,
    report_to: Option<&ReportFiles>,
) {
    let mut report = Report::begin(generation);
    let reader = running.clone();
    let outcome = run_detached(
        deadline,
        move |send: &dyn Fn(Part)| {
            send(Part::Config(
                swap::prepare(&reader, &ProcessEnv).map(Box::new),
            ));
            send(Part::Tls(read_tls(&reader.state())));
        },
        |part| install(&running, part, &mut report),
    )
    .await;
    if let Err(err) = outcome {
        tracing::error!(
            error = %err,
            threads_left_behind = left_behind::count(),
            "reload abandoned; what it had not installed stays as it was"
        );
        if report.outcome == Outcome::Pending {
            report.outcome = Outcome::Rejected;
            report.reason = Some(err.to_string());
        } else {
            report.problems.push(err.to_string());
        }
    }
    if let Some(files) = report_to {
        files.write_report(&report);
    }
}

/// Logs and publishes the number of threads left behind by hung file reads.
fn report_left_behind(now: usize, grew: bool) {
    crate::telemetry::set_reload_stuck_threads(now);
    if grew {
        tracing::warn!(
            threads_left_behind = now,
            "a thread stuck reading a file was left behind at its deadline"
        );
    } else {
        tracing::info!(
            threads_left_behind = now,
            "a thread left behind by a hung file read has ended"
        );
    }
}

/// Where SIGHUPs go. One task runs the reloads, one at a time: a SIGHUP that arrives
/// during a reload is answered by one fresh reload as soon as that one has finished or
/// passed its deadline, so the latest files are always read after the latest SIGHUP.
#[derive(Clone)]
pub struct Reloads {
    wanted: Arc<Notify>,
}

impl Reloads {
    /// Starts the reload task for `running`; each reload's outcome is also written to
    /// `report_to`, for `gatewayd reload`. Must be called inside a runtime.
    pub fn start(running: Arc<Running>, report_to: Option<ReportFiles>) -> Reloads {
        left_behind::report_to(report_left_behind);
        crate::telemetry::set_reload_stuck_threads(left_behind::count());
        let report_to = Arc::new(report_to);
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        Reloads::start_with(RELOAD_DEADLINE, move |deadline| {
            let number = generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let (running, report_to) = (running.clone(), report_to.clone());
            async move { reload_once(running, deadline, number, report_to.as_ref().as_ref()).await }
        })
    }

    fn start_with<F, R>(deadline: Duration, run: R) -> Reloads
    where
        F: Future<Output = ()> + Send + 'static,
        R: Fn(Duration) -> F + Send + 'static,
    {
        let wanted = Arc::new(Notify::new());
        let waiting = wanted.clone();
        tokio::spawn(async move {
            loop {
                waiting.notified().await;
                run(deadline).await;
            }
        });
        Reloads { wanted }
    }

    /// Asks for a reload (a SIGHUP). Never waits.
    pub fn request(&self) {
        self.wanted.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const SHORT: Duration = Duration::from_millis(200);
    /// The deadline of a reload that must finish: a loaded box may take far more than
    /// SHORT to start its thread.
    const AMPLE: Duration = Duration::from_secs(60);

    /// The count of threads left behind is per process: these tests take turns.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test]
    async fn a_stuck_reload_is_left_behind_and_never_installs_late() {
        let _turn = SERIAL.lock().await;
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        let installed = Arc::new(Mutex::new(Vec::new()));
        let before = left_behind::count();
        let seen = installed.clone();
        let first = run_detached(
            SHORT,
            move |send: &dyn Fn(u32)| {
                let _ = stuck.recv();
                send(1);
            },
            move |part| seen.lock().unwrap().push(part),
        )
        .await;
        assert!(matches!(first, Err(ReloadError::TimedOut)));
        assert_eq!(left_behind::count(), before + 1);

        let seen = installed.clone();
        let second = run_detached(
            AMPLE,
            |send: &dyn Fn(u32)| send(2),
            move |part| seen.lock().unwrap().push(part),
        )
        .await;
        assert!(second.is_ok(), "a fresh reload runs beside the stuck one");

        release.send(()).unwrap();
        while left_behind::count() != before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(*installed.lock().unwrap(), vec![2]);
    }

    #[tokio::test]
    async fn a_sighup_during_a_stuck_reload_gets_a_fresh_one_after_the_deadline() {
        let _turn = SERIAL.lock().await;
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        let stuck = Arc::new(Mutex::new(stuck));
        let before = left_behind::count();
        let runs = Arc::new(Mutex::new(Vec::new()));
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let counted = runs.clone();
        let reloads = Reloads::start_with(SHORT, move |deadline| {
            let number = {
                let mut runs = counted.lock().unwrap();
                runs.push(tokio::time::Instant::now());
                runs.len()
            };
            let done = done.clone();
            let stuck = stuck.clone();
            // The first reload hangs for ever; later ones finish at once.
            let deadline = if number == 1 { deadline } else { AMPLE };
            async move {
                let outcome = run_detached(
                    deadline,
                    move |send: &dyn Fn(usize)| {
                        if number == 1 {
                            let _ = stuck.lock().unwrap().recv();
                        }
                        send(number);
                    },
                    |_| {},
                )
                .await;
                let _ = done.send((number, outcome.is_ok()));
            }
        });
        reloads.request();
        while runs.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        reloads.request();
        reloads.request();
        assert_eq!(finished.recv().await, Some((1, false)));
        assert_eq!(left_behind::count(), before + 1);
        assert_eq!(finished.recv().await, Some((2, true)));
        {
            let runs = runs.lock().unwrap();
            assert_eq!(
                runs.len(),
                2,
                "SIGHUPs during a reload are answered by one more"
            );
            assert!(runs[1] - runs[0] >= SHORT);
        }
        release.send(()).unwrap();
        while left_behind::count() != before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
