//! One judgment, two commands: `serve` and `check-config` reach the same verdict and exit code over a table of environments.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{binary, KEY_A};

/// One environment: extra args, env vars, and an optional socket passed as fd 3.
struct Case {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
    socket: Option<(&'static str, &'static str)>,
    expect: i32,
}

fn case<S: AsRef<str>>(name: &'static str, args: &[S], env: &[(&str, &str)], expect: i32) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.as_ref().to_string()).collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        socket: None,
        expect,
    }
}

/// The binary for `case` with `subcommand`, under tests/support/activate.py when a
/// socket is passed (it keeps its pid across exec, so LISTEN_PID matches).
fn command(case: &Case, subcommand: &str) -> Command {
    let plain = binary();
    let mut command = match case.socket {
        Some((host, port)) => {
            let mut wrapped = Command::new("python3");
            wrapped
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/support/activate.py"
                ))
                .args(["tcp", host, port, "--"])
                .arg(plain.get_program());
            for (key, value) in plain.get_envs() {
                match value {
                    Some(value) => wrapped.env(key, value),
                    None => wrapped.env_remove(key),
                };
            }
            wrapped
        }
        None => plain,
    };
    command.arg(subcommand).args(&case.args);
    for (key, value) in &case.env {
        command.env(key, value);
    }
    command
}

/// serve's verdict: 0 once it logs "gatewayd listening" (then it is stopped), else its
/// exit code. Bounded: a serve that neither listens nor exits within 60 s fails.
fn serve_verdict(case: &Case) -> i32 {
    let mut child = command(case, "serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("gatewayd listening") {
                let _ = tx.send(());
            }
        }
    });
    let listening = rx.recv_timeout(Duration::from_secs(60)).is_ok();
    if listening {
        let _ = child.kill();
        let _ = child.wait();
        return 0;
    }
    let status = child.wait().unwrap();
    status.code().unwrap_or(-1)
}

fn check_config_verdict(case: &Case) -> (i32, String) {
    let output = command(case, "check-config").output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn file(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn serve_and_check_config_agree_over_every_environment() {
    let dir = common::temp_dir("verdict");
    let dangling = common::temp_dir("verdict-cred");
    std::os::unix::fs::symlink(dangling.join("gone"), dangling.join("api_server_key")).unwrap();
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let proxies = file(
        &dir,
        "proxies.toml",
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
    );
    let require = file(&dir, "require.toml", "[server]\nrequire_key = true\n");
    let (proxies, require) = (proxies.to_str().unwrap(), require.to_str().unwrap());
    let (fifo, dangling) = (fifo.to_str().unwrap(), dangling.to_str().unwrap());
    let port = ["--port", "0"];
    let with =
        |args: &[&str]| -> Vec<String> { port.iter().chain(args).map(|s| s.to_string()).collect() };

    let mut cases = vec![
        case("loopback, keyless", &port, &[], 0),
        case("wildcard, keyless", &with(&["--host", "0.0.0.0"]), &[], 78),
        case(
            "wildcard, key",
            &with(&["--host", "0.0.0.0"]),
            &[("API_SERVER_KEY", KEY_A)],
            0,
        ),
        // LISTEN_PID names another process: the fds are not ours, so serve binds
        // --host itself, and the guard judges that.
        case(
            "LISTEN_FDS for another pid, wildcard, keyless",
            &with(&["--host", "0.0.0.0"]),
            &[("LISTEN_FDS", "1"), ("LISTEN_PID", "1")],
            78,
        ),
        case(
            "LISTEN_FDS for another pid, loopback",
            &port,
            &[("LISTEN_FDS", "1"), ("LISTEN_PID", "1")],
            0,
        ),
        // LISTEN_FDS without LISTEN_PID, and no fd 3: the passed socket is unusable.
        case("LISTEN_FDS, no socket", &port, &[("LISTEN_FDS", "1")], 1),
        case(
            "credential: dangling link",
            &port,
            &[("CREDENTIALS_DIRECTORY", dangling)],
            78,
        ),
        case(
            "key file: FIFO",
            &port,
            &[("API_SERVER_KEY_FILE", fifo)],
            78,
        ),
        case(
            "trusted proxies, keyless",
            &with(&["--config", proxies]),
            &[],
            78,
        ),
        case(
            "trusted proxies, key",
            &with(&["--config", proxies]),
            &[("API_SERVER_KEY", KEY_A)],
            0,
        ),
        case(
            "require_key, keyless",
            &with(&["--config", require]),
            &[],
            78,
        ),
        case(
            "require_key, key",
            &with(&["--config", require]),
            &[("API_SERVER_KEY", KEY_A)],
            0,
        ),
    ];
    let mut passed = |name, host, expect| {
        let mut c = case::<&str>(name, &[], &[], expect);
        c.socket = Some((host, "0"));
        cases.push(c);
    };
    passed("passed wildcard socket, keyless", "0.0.0.0", 78);
    passed("passed loopback socket, keyless", "127.0.0.1", 0);

    let mut failures = Vec::new();
    for case in &cases {
        let (checked, stderr) = check_config_verdict(case);
        let served = serve_verdict(case);
        if checked != case.expect || served != case.expect {
            failures.push(format!(
                "{}: expected {}, check-config {checked}, serve {served} ({})",
                case.name,
                case.expect,
                stderr.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
