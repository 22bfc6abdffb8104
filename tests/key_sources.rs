//! Key sources fail closed, on the real binary: dangling, missing or unreadable credentials, FIFOs, devices, oversized and world-readable key files, and a SIGHUP that meets a FIFO.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{binary, client, output_within, start, KEY_A, KEY_B};

fn refused(env: &[(&str, &Path)], expect: &[&str]) {
    for args in [&["--port", "0"][..], &["check-config", "--port", "0"][..]] {
        let mut command = binary();
        command.args(args);
        for (name, value) in env {
            command.env(name, value);
        }
        let output = output_within(command, Duration::from_secs(30));
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{args:?}: {err}");
        for needle in expect {
            assert!(
                err.contains(needle),
                "{args:?}: expected {needle:?} in: {err}"
            );
        }
        assert!(!err.contains("listening"), "{err}");
    }
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

#[test]
fn a_dangling_credential_symlink_is_refused_not_keyless() {
    let dir = common::temp_dir("cred-dangling");
    let link = dir.join("api_server_key");
    std::os::unix::fs::symlink(dir.join("gone"), &link).unwrap();
    refused(
        &[("CREDENTIALS_DIRECTORY", &dir)],
        &[link.to_str().unwrap(), "symbolic link"],
    );
}

#[test]
fn a_credentials_directory_that_does_not_exist_is_refused_not_keyless() {
    // systemd creates $CREDENTIALS_DIRECTORY before it starts the service: a missing one
    // is a typo or a stale path, never "no credential" (which would mean keyless mode).
    let gone = common::temp_dir("cred-gone").join("never-created");
    refused(
        &[("CREDENTIALS_DIRECTORY", &gone)],
        &[
            gone.to_str().unwrap(),
            "CREDENTIALS_DIRECTORY",
            "does not exist",
        ],
    );
    refused(
        &[("CREDENTIALS_DIRECTORY", Path::new("/nonexistent"))],
        &["/nonexistent", "does not exist"],
    );
}

#[test]
fn an_unreadable_credentials_directory_is_refused_not_keyless() {
    // A 0000 directory: EACCES for anyone without CAP_DAC_OVERRIDE. Running as root,
    // the binary runs under setpriv with those capabilities dropped.
    let dir = common::temp_dir("cred-eacces");
    let creds = dir.join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("api_server_key"), KEY_A).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o000)).unwrap();
    let privileged = std::fs::read(creds.join("api_server_key")).is_ok();
    for args in [&["--port", "0"][..], &["check-config"][..]] {
        let plain = binary();
        let mut command = if privileged {
            let mut wrapped = Command::new("setpriv");
            wrapped
                .args([
                    "--inh-caps=-dac_override,-dac_read_search",
                    "--bounding-set=-dac_override,-dac_read_search",
                    "--",
                ])
                .arg(plain.get_program());
            for (key, value) in plain.get_envs() {
                match value {
                    Some(value) => wrapped.env(key, value),
                    None => wrapped.env_remove(key),
                };
            }
            wrapped
        } else {
            plain
        };
        command.args(args).env("CREDENTIALS_DIRECTORY", &creds);
        let output = output_within(command, Duration::from_secs(30));
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{args:?}: {err}");
        assert!(err.contains("permission denied"), "{err}");
        assert!(err.contains(creds.to_str().unwrap()), "{err}");
    }
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn a_fifo_key_file_at_startup_is_refused_at_once() {
    let dir = common::temp_dir("fifo-start");
    let fifo = dir.join("key");
    mkfifo(&fifo);
    let started = Instant::now();
    refused(
        &[("API_SERVER_KEY_FILE", &fifo)],
        &["FIFO", fifo.to_str().unwrap()],
    );
    let creds = common::temp_dir("fifo-cred");
    mkfifo(&creds.join("api_server_key"));
    refused(&[("CREDENTIALS_DIRECTORY", &creds)], &["FIFO"]);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn dev_zero_and_oversized_key_files_are_refused() {
    refused(
        &[("API_SERVER_KEY_FILE", Path::new("/dev/zero"))],
        &["character device", "/dev/zero"],
    );
    let dir = common::temp_dir("big-key");
    let big = dir.join("key");
    std::fs::write(&big, "a".repeat(5000)).unwrap();
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(
        &[("API_SERVER_KEY_FILE", &big)],
        &["larger than 4096 bytes"],
    );
    refused(&[("API_SERVER_KEY_FILE", &dir)], &["a directory"]);
}

const WARNING: &str = "readable by group or others";

#[test]
fn a_world_readable_key_file_warns_in_check_config() {
    let dir = common::temp_dir("mode");
    let file = dir.join("key");
    std::fs::write(&file, format!("{KEY_A}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut command = binary();
    command
        .arg("check-config")
        .env("API_SERVER_KEY_FILE", &file);
    let output = output_within(command, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert_eq!(err.matches(WARNING).count(), 1, "{err}");
    assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
    assert!(!err.contains(&KEY_A[4..12]), "{err}");

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut command = binary();
    command
        .arg("check-config")
        .env("API_SERVER_KEY_FILE", &file);
    let output = output_within(command, Duration::from_secs(30));
    assert!(!String::from_utf8_lossy(&output.stderr).contains(WARNING));
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (event-driven: the stderr reader collects lines as they come) until `needle`
/// has appeared `count` times in the process's log.
async fn log_count(process: &common::Process, needle: &str, count: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = process.stderr();
        if log.matches(needle).count() >= count {
            return log;
        }
        assert!(Instant::now() < deadline, "never logged {needle:?}: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_meeting_a_fifo_keeps_serving_and_sigterm_still_works() {
    let dir = common::temp_dir("fifo-hup");
    let key_file = dir.join("key");
    std::fs::write(&key_file, format!("{KEY_A}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut command = binary();
    command
        .args(["--port", "0"])
        .env("API_SERVER_KEY_FILE", &key_file);
    let mut process = start(command);
    let pid = process.child.id();
    log_count(&process, WARNING, 1).await;

    // A reload of the same (still world-readable) file warns again.
    signal(pid, "HUP");
    log_count(&process, "keys reloaded", 1).await;
    let log = log_count(&process, WARNING, 2).await;
    assert!(!log.contains(&KEY_A[4..12]));

    std::fs::remove_file(&key_file).unwrap();
    mkfifo(&key_file);
    signal(pid, "HUP");
    let log = log_count(&process, "key reload rejected", 1).await;
    assert!(log.contains("FIFO"), "{log}");
    let http = client();
    let health = http.get(process.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let old_key = http
        .get(process.url("/v1/models"))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(old_key.status(), 200, "the old key set stays in force");
    let other = http
        .get(process.url("/v1/models"))
        .bearer_auth(KEY_B)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 401);

    signal(pid, "TERM");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut child = std::mem::replace(&mut process.child, Command::new("true").spawn().unwrap());
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("SIGTERM was not obeyed within 30 s")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
