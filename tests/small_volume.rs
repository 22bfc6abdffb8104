//! SQLite on a small volume: a disk filled and freed while turns run never wedges the store (the write-ahead log stays small, writes and readiness come back with no restart, nothing acknowledged is lost, a restart on a full disk works), and sessions.db is private in a data dir others can read.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::sessions::{contents, post_session, say};
use common::upstream::chat_upstream;
use common::{binary, client, start, Process, KEY_A};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const VOLUME_BYTES: u64 = 2 * 1024 * 1024;
/// Fill-and-free rounds. Before the fix the write-ahead log never checkpointed below 4 MiB,
/// so it took the whole 2 MiB volume within the first few rounds and stayed there.
const ROUNDS: usize = 8;
/// Turns that must succeed after each free before the disk is filled again.
const TURNS_PER_ROUND: usize = 25;
/// Turns per session before a runner starts a new one (keeps each history short).
const TURNS_PER_SESSION: usize = 10;
/// How long any one awaited event may take on a slow, loaded machine.
const EVENT_DEADLINE: Duration = Duration::from_secs(90);

/// A tmpfs of `size` bytes, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// `None` when not root (mounting needs it); the caller then skips, saying so.
    fn mount(tag: &str, size: u64) -> Option<SmallDisk> {
        if !is_root() {
            eprintln!("not root: cannot mount a small tmpfs; the small-volume test needs root");
            return None;
        }
        let mount_point = common::temp_dir(tag);
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount_point)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount tmpfs failed");
        Some(SmallDisk(mount_point))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Grows `ballast` until the file system has not one byte left.
fn fill(ballast: &Path) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ballast)
        .unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::StorageFull => break,
            Err(err) => panic!("filling the disk: {err}"),
        }
    }
}

/// The size of a file, 0 when it does not exist.
fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The gatewayd binary over the mock upstream, keys "alice" (KEY_A) and "bob", its
/// sessions in `data_dir`, run with umask 022 (so a file SQLite creates with its
/// default mode comes out 0644).
fn gateway(upstream: &str, data_dir: &Path) -> Process {
    let config = common::temp_dir("smallvol-cfg").join("gatewayd.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[[upstreams]]\nname = \"mock\"\nbase_url = \"{upstream}\"\nmodels = [\"*\"]\n",
            common::two_keys_toml()
        ),
    )
    .unwrap();
    let template = binary();
    let mut command = Command::new("sh");
    command
        .args(["-c", "umask 022 && exec \"$0\" \"$@\""])
        .arg(template.get_program())
        .args(["--port", "0", "--config"])
        .arg(&config);
    for (name, value) in template.get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command.env("GATEWAYD_DATA_DIR", data_dir);
    start(command)
}

/// What the turn runners saw: per session, the turns answered 200 and the turns refused.
#[derive(Default)]
struct Tally {
    acknowledged: BTreeMap<String, Vec<String>>,
    refused: BTreeMap<String, Vec<String>>,
    /// The largest write-ahead log seen, sampled after every turn.
    largest_wal: u64,
}

/// Successes and failures so far, for waiting on either.
#[derive(Clone, Copy, Default, PartialEq, Debug)]
struct Counts {
    ok: usize,
    failed: usize,
}

/// Runs session turns (a new session every `TURNS_PER_SESSION`) until `stop`: each 200
/// is recorded as acknowledged, each 503 `storage_unavailable` as refused.
async fn run_turns(
    base: String,
    runner: usize,
    wal: PathBuf,
    tally: Arc<Mutex<Tally>>,
    counts: watch::Sender<Counts>,
    stop: CancellationToken,
) {
    let padding = "x".repeat(1000);
    let mut session: Option<String> = None;
    let mut turns_in_session = 0;
    let mut turn = 0;
    while !stop.is_cancelled() {
        if session.is_none() || turns_in_session == TURNS_PER_SESSION {
            let created = post_session(&base, KEY_A, json!({})).await;
            if created.status() == 201 {
                let body: Value = created.json().await.unwrap();
                session = Some(body["id"].as_str().unwrap().to_string());
                turns_in_session = 0;
            } else {
                let status = created.status();
                let body: Value = created.json().await.unwrap_or(Value::Null);
                assert_eq!(status, 503, "{body}");
                assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
                counts.send_modify(|c| c.failed += 1);
                // A client honouring Retry-After, shortened: the test waits on events.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        let id = session.clone().unwrap();
        turn += 1;
        let text = format!("runner-{runner} turn-{turn} {padding}");
        let response = say(&base, KEY_A, &id, "m", &text, false).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let ok = status == 200;
        if ok {
            assert_eq!(
                body["choices"][0]["message"]["content"],
                format!("echo: {text}")
            );
            turns_in_session += 1;
        } else {
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
        }
        {
            let mut tally = tally.lock().unwrap();
            let record = if ok {
                &mut tally.acknowledged
            } else {
                &mut tally.refused
            };
            record.entry(id).or_default().push(text);
            tally.largest_wal = tally.largest_wal.max(size_of(&wal));
        }
        counts.send_modify(|c| match ok {
            true => c.ok += 1,
            false => c.failed += 1,
        });
        if !ok {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits until `done(counts)` holds, or panics with `what` and the WAL's size.
async fn wait_for(
    counts: &mut watch::Receiver<Counts>,
    done: impl Fn(Counts) -> bool,
    what: &str,
    wal: &Path,
) {
    let waited = tokio::time::timeout(EVENT_DEADLINE, counts.wait_for(|c| done(*c)))
        .await
        .is_ok();
    assert!(
        waited,
        "{what} within {EVENT_DEADLINE:?} (counts {:?}, write-ahead log {} bytes of a {VOLUME_BYTES}-byte volume)",
        *counts.borrow(),
        size_of(wal)
    );
}

/// Polls GET /health/ready until it answers `want`, or panics after the deadline.
async fn wait_ready(base: &str, want: u16, wal: &Path) {
    let deadline = Instant::now() + EVENT_DEADLINE;
    let mut status = 0;
    while Instant::now() < deadline {
        status = client()
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "/health/ready still {status} (want {want}) after {EVENT_DEADLINE:?}; write-ahead log {} bytes",
        size_of(wal)
    );
}

/// The case: a 2 MiB tmpfs as the data dir; two clients run session turns while
/// a ballast file takes every free byte and is deleted again, eight times. After every
/// free the turns succeed again, and after the last one /health/ready returns to 200,
/// all with no restart; the write-ahead log never takes more than a quarter of the
/// volume. Then gatewayd is stopped (SIGTERM), the disk filled to its last byte, and a
/// new gatewayd process started on it: it starts (opening the database needs room for
/// its log index, which the spare file gives), and reads back exactly the acknowledged
/// turns (none refused, none half-stored); once the ballast goes it takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_volume_filled_and_freed_while_turns_run_recovers_with_no_restart() {
    let Some(disk) = SmallDisk::mount("smallvol", VOLUME_BYTES) else {
        return;
    };
    let data_dir = disk.0.join("data");
    let wal = data_dir.join("sessions.db-wal");
    let ballast = disk.0.join("ballast");
    let (upstream, _) = chat_upstream().await;
    let mut process = gateway(&upstream, &data_dir);
    let base = process.url("");

    let tally = Arc::new(Mutex::new(Tally::default()));
    let (counts, mut seen) = watch::channel(Counts::default());
    let stop = CancellationToken::new();
    let runners: Vec<_> = (0..2)
        .map(|runner| {
            tokio::spawn(run_turns(
                base.clone(),
                runner,
                wal.clone(),
                tally.clone(),
                counts.clone(),
                stop.clone(),
            ))
        })
        .collect();

    for round in 0..ROUNDS {
        let start = *seen.borrow();
        wait_for(
            &mut seen,
            |c| c.ok >= start.ok + TURNS_PER_ROUND,
            &format!("round {round}: {TURNS_PER_ROUND} turns did not succeed on a freed disk"),
            &wal,
        )
        .await;
        fill(&ballast);
        let full = *seen.borrow();
        wait_for(
            &mut seen,
            |c| c.failed > full.failed,
            &format!("round {round}: no write failed on a full disk"),
            &wal,
        )
        .await;
        std::fs::remove_file(&ballast).unwrap();
    }
    // After the last free: writes come back, and so does readiness, with no restart.
    let freed = *seen.borrow();
    wait_for(
        &mut seen,
        |c| c.ok >= freed.ok + TURNS_PER_ROUND,
        "after the last free, turns did not succeed again",
        &wal,
    )
    .await;
    wait_ready(&base, 200, &wal).await;
    stop.cancel();
    for runner in runners {
        runner.await.unwrap();
    }
    let tally = Arc::try_unwrap(tally).ok().unwrap().into_inner().unwrap();
    let acknowledged: usize = tally.acknowledged.values().map(Vec::len).sum();
    let refused: usize = tally.refused.values().map(Vec::len).sum();
    println!(
        "{ROUNDS} rounds: {acknowledged} turns acknowledged, {refused} refused; largest write-ahead log {} bytes on a {VOLUME_BYTES}-byte volume",
        tally.largest_wal
    );
    assert!(
        tally.largest_wal <= VOLUME_BYTES / 4,
        "the write-ahead log reached {} bytes of a {VOLUME_BYTES}-byte volume",
        tally.largest_wal
    );

    // A clean stop (the database's log and its index are removed), then a restart on a
    // disk with not one byte free: opening the database needs room for its log index.
    let stopped = Command::new("kill")
        .args(["-TERM", &process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(process.child.wait().unwrap().success());
    fill(&ballast);
    let restarted = gateway(&upstream, &data_dir);
    let mut stored_sessions = 0;
    for (id, texts) in &tally.acknowledged {
        let stored = contents(&restarted, KEY_A, id).await;
        let expected: Vec<String> = texts
            .iter()
            .flat_map(|t| [t.clone(), format!("echo: {t}")])
            .collect();
        assert!(
            stored == expected,
            "session {id}: stored turns are not exactly the acknowledged ones ({} stored, {} expected)",
            stored.len(),
            expected.len()
        );
        stored_sessions += 1;
    }
    for (id, texts) in &tally.refused {
        if tally.acknowledged.contains_key(id) {
            continue; // checked above: only the acknowledged turns are stored
        }
        let stored = contents(&restarted, KEY_A, id).await;
        for text in texts {
            assert!(!stored.contains(text), "a refused turn was stored");
        }
    }
    assert!(stored_sessions > 0);
    std::fs::remove_file(&ballast).unwrap();
    let restarted_base = restarted.url("");
    wait_ready(&restarted_base, 200, &wal).await;
    let id = tally.acknowledged.keys().next().unwrap();
    let response = say(&restarted_base, KEY_A, id, "m", "after the restart", false).await;
    assert_eq!(response.status(), 200);
    drop(restarted);
    drop(disk);
}

/// The mode bits of a file other than the owner's.
fn others_bits(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o077
}

/// A data dir that already exists with mode 0755 (as a package or an operator makes it):
/// sessions.db and its -wal and -shm files are created 0600 all the same, as is every
/// other file gatewayd keeps there, and gatewayd warns at start that the dir is readable
/// by others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_db_is_private_in_a_data_dir_others_can_read() {
    let data_dir = common::temp_dir("opendir").join("data");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (upstream, _) = chat_upstream().await;
    let process = gateway(&upstream, &data_dir);
    // A turn, so the write-ahead log and its index exist.
    let id = common::sessions::create(&process, KEY_A, json!({})).await;
    assert_eq!(
        say(&process, KEY_A, &id, "m", "hello", false)
            .await
            .status(),
        200
    );

    let db = data_dir.join("sessions.db");
    assert!(db.exists());
    assert_eq!(others_bits(&db), 0, "sessions.db is readable by others");
    for name in ["sessions.db-wal", "sessions.db-shm"] {
        let path = data_dir.join(name);
        if path.exists() {
            assert_eq!(others_bits(&path), 0, "{name} is readable by others");
        }
    }
    for entry in std::fs::read_dir(&data_dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(
            others_bits(&path),
            0,
            "{} is readable by others",
            path.display()
        );
    }
    let stderr = process.stderr();
    let warned = stderr
        .lines()
        .any(|line| line.contains("WARN") && line.contains(data_dir.to_str().unwrap()));
    assert!(warned, "no warning about the open data dir:\n{stderr}");
}
