//! TLS on the listeners with a CA made in the test: HTTPS over HTTP/1.1 and HTTP/2,
//! wrong-host and expired certificates refused by the client, a SIGHUP that swaps the
//! certificate under an open stream, bad files refused at start (78), and the warning
//! about keys in clear text.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pki;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use common::{
    binary, config_from_toml, mock_upstream, open_store, start, state_for, temp_dir, two_keys_toml,
    Gateway, KEY_A,
};
use gatewayd::tls::ListenerTls;
use pki::{client_trusting, Ca, Pair};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const HOST: &str = "gateway.test";

fn tls_toml(cert: &std::path::Path, key: &std::path::Path) -> String {
    format!("[server.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n")
}

async fn tls_gateway(pair: &Pair) -> Gateway {
    tls_gateway_with(pair, "").await
}

/// [`tls_gateway`] with more config (e.g. a `[limits]` table) appended.
async fn tls_gateway_with(pair: &Pair, extra_toml: &str) -> Gateway {
    let (cert, key) = pair.write(&temp_dir("tls"));
    let config = config_from_toml(&format!(
        "{}{}{extra_toml}",
        tls_toml(&cert, &key),
        two_keys_toml()
    ));
    let tls = Arc::new(ListenerTls::load(config.tls.as_ref().unwrap()).unwrap());
    let store = open_store(&config, false).await;
    let state = state_for(config).with_sessions(store).with_tls(tls);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(gatewayd::run(
        state.clone(),
        vec![gatewayd::Listener::Tcp(listener)],
        shutdown.clone(),
    ));
    Gateway {
        addr,
        state,
        shutdown,
        handle,
    }
}

fn https(gw_port: u16, path: &str) -> String {
    format!("https://{HOST}:{gw_port}{path}")
}

#[tokio::test]
async fn https_serves_http1_and_http2_and_still_needs_the_key() {
    let ca = Ca::new("test CA");
    let gw = tls_gateway(&ca.server(&[HOST])).await;
    let url = https(gw.addr.port(), "/v1/models");

    let h1 = client_trusting(&ca.pem(), HOST, gw.addr)
        .http1_only()
        .build()
        .unwrap();
    let response = h1.get(&url).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);

    // ALPN offers h2 first: the gateway picks it.
    let h2 = client_trusting(&ca.pem(), HOST, gw.addr).build().unwrap();
    let response = h2.get(&url).bearer_auth(KEY_A).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);

    // TLS does not replace the key.
    let response = h2.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = common::client()
        .get(format!("http://{}/v1/models", gw.addr))
        .bearer_auth(KEY_A)
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
}

#[tokio::test]
async fn a_wrong_host_or_an_expired_certificate_is_refused_by_the_client() {
    let ca = Ca::new("test CA");
    let wrong_host = tls_gateway(&ca.server(&["elsewhere.test"])).await;
    let expired = tls_gateway(&ca.expired_server(&[HOST])).await;
    for gw in [&wrong_host, &expired] {
        let client = client_trusting(&ca.pem(), HOST, gw.addr).build().unwrap();
        let refused = client
            .get(https(gw.addr.port(), "/health"))
            .send()
            .await
            .unwrap_err();
        assert!(refused.is_connect(), "{refused:?}");
    }
    // The same CA and host with a valid certificate works: the refusals were the cert's.
    let good = tls_gateway(&ca.server(&[HOST])).await;
    let client = client_trusting(&ca.pem(), HOST, good.addr).build().unwrap();
    let ok = client.get(https(good.addr.port(), "/health")).send().await;
    assert_eq!(ok.unwrap().status(), 200);
}

/// A handshake that stalls after its first bytes is closed within `unauthenticated_idle_secs`
/// (default 5 s), not the longer `header_read_timeout_secs` (default 10 s) its first byte
/// used to start. The two are set far apart so the bound is unmistakable on a slow run.
#[tokio::test]
async fn a_stalled_handshake_is_closed_at_the_unauthenticated_bound() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("test CA");
    let limits = "[limits]\nheader_read_timeout_secs = 60\nunauthenticated_idle_secs = 2\n";
    let gw = tls_gateway_with(&ca.server(&[HOST]), limits).await;
    // A TLS record header announcing a 512-byte ClientHello, and then nothing.
    let partial_hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
    for first_bytes in [&partial_hello[..], &[][..]] {
        let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let started = Instant::now();
        stream.write_all(first_bytes).await.unwrap();
        let mut buf = [0u8; 1024];
        loop {
            let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue,
                Err(_) => panic!("a handshake stalled after {first_bytes:?} was held past 30 s"),
            }
        }
        let held = started.elapsed();
        assert!(
            held >= Duration::from_millis(1500) && held < Duration::from_secs(20),
            "a handshake stalled after {first_bytes:?} was held {held:?}, not about 2 s"
        );
    }
}

fn signal(process: &common::Process, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until the process has logged `needle` `count` times.
fn wait_for_log(process: &common::Process, needle: &str, count: usize) {
    let started = Instant::now();
    while process.stderr().matches(needle).count() < count {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no {needle:?} in {}",
            process.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Chat streams send one event, then wait for `finish` before `[DONE]`.
async fn held_stream_upstream(finish: Arc<Notify>) -> String {
    let router = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let finish = finish.clone();
            async move {
                let events = futures_util::stream::unfold(0, move |step| {
                    let finish = finish.clone();
                    async move {
                        let event = match step {
                            0 => "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
                            1 => {
                                finish.notified().await;
                                "data: [DONE]\n\n"
                            }
                            _ => return None,
                        };
                        Some((Ok::<_, std::io::Error>(event), step + 1))
                    }
                });
                ([("content-type", "text/event-stream")], Body::from_stream(events))
                    .into_response()
            }
        }),
    );
    mock_upstream(router).await
}

#[tokio::test]
async fn sighup_swaps_the_certificate_without_dropping_an_open_stream() {
    let first_ca = Ca::new("first CA");
    let second_ca = Ca::new("second CA");
    let dir = temp_dir("tls-hup");
    let (cert, key) = first_ca.server(&[HOST]).write(&dir);
    let finish = Arc::new(Notify::new());
    let upstream = held_stream_upstream(finish.clone()).await;
    let config = dir.join("gatewayd.toml");
    std::fs::write(
        &config,
        format!(
            "{}{}[[upstreams]]\nname = \"held\"\nbase_url = \"{upstream}\"\nmodels = [\"m\"]\n",
            tls_toml(&cert, &key),
            two_keys_toml()
        ),
    )
    .unwrap();
    let mut command = binary();
    command.args(["--port", "0", "--config"]).arg(&config);
    let process = start(command);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], process.addr.port()));
    let trusting_first = client_trusting(&first_ca.pem(), HOST, addr)
        .build()
        .unwrap();
    let trusting_second = client_trusting(&second_ca.pem(), HOST, addr)
        .build()
        .unwrap();

    let mut stream = trusting_first
        .post(https(addr.port(), "/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(String::from_utf8_lossy(&stream.chunk().await.unwrap().unwrap()).contains("hi"));

    second_ca.server(&[HOST]).write(&dir);
    signal(&process, "HUP");
    wait_for_log(&process, "TLS certificate reloaded", 1);
    let models = https(addr.port(), "/v1/models");
    let swapped = trusting_second.get(&models).bearer_auth(KEY_A).send().await;
    assert_eq!(swapped.unwrap().status(), 200);
    // A fresh connection trusting only the old CA now fails the handshake (the open
    // stream's connection is reused for nothing else: a new client is used).
    let fresh_first = client_trusting(&first_ca.pem(), HOST, addr)
        .build()
        .unwrap();
    assert!(fresh_first.get(&models).send().await.is_err());

    // An invalid pair is rejected and logged; the second certificate stays.
    let mismatched = Pair {
        cert: first_ca.server(&[HOST]).cert,
        key: second_ca.server(&[HOST]).key,
    };
    mismatched.write(&dir);
    signal(&process, "HUP");
    wait_for_log(&process, "TLS certificate reload rejected", 1);
    let fresh_second = client_trusting(&second_ca.pem(), HOST, addr)
        .build()
        .unwrap();
    let still = fresh_second.get(&models).bearer_auth(KEY_A).send().await;
    assert_eq!(still.unwrap().status(), 200);
    let log = process.stderr();
    assert!(log.contains("does not belong"), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "{log}");

    // The stream opened before both reloads completes.
    finish.notify_one();
    let mut rest = String::new();
    while let Some(chunk) = stream.chunk().await.unwrap() {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(rest.contains("[DONE]"), "{rest}");
}

/// Runs the binary (`serve` or `check-config`) against a config with `[server.tls]`.
fn run_with_tls(
    subcommand: &[&str],
    cert: &std::path::Path,
    key: &std::path::Path,
) -> (i32, String) {
    let dir = temp_dir("tls-bad");
    let config = dir.join("gatewayd.toml");
    std::fs::write(
        &config,
        format!("{}{}", tls_toml(cert, key), two_keys_toml()),
    )
    .unwrap();
    let output = binary()
        .args(subcommand)
        .args(["--port", "0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_certificate_or_key_at_start_exits_78_naming_the_file() {
    let ca = Ca::new("test CA");
    let dir = temp_dir("tls-files");
    let (cert, key) = ca.server(&[HOST]).write(&dir);
    let missing = dir.join("missing.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, ca.server(&[HOST]).key).unwrap();
    let cases = [
        (&missing, &key, "missing.pem"),
        (&garbage, &key, "no PEM CERTIFICATE"),
        (&cert, &garbage, "no PEM private key"),
        (&cert, &other_key, "does not belong"),
    ];
    for (cert, key, expected) in cases {
        for subcommand in [&["serve"][..], &["check-config"][..]] {
            let (code, stderr) = run_with_tls(subcommand, cert, key);
            assert_eq!(code, 78, "{subcommand:?} {expected}: {stderr}");
            assert!(stderr.contains(expected), "{subcommand:?}: {stderr}");
            assert!(stderr.contains("[server.tls]"), "{stderr}");
        }
    }
    let (code, stdout_err) = run_with_tls(&["check-config"], &cert, &key);
    assert_eq!(code, 0, "{stdout_err}");
}

const PLAINTEXT: &str = "API keys and prompts travel in clear text";

fn check_config(extra_toml: &str, host: &str) -> String {
    let dir = temp_dir("plain");
    let config = dir.join("gatewayd.toml");
    std::fs::write(&config, format!("{extra_toml}\n{}", two_keys_toml())).unwrap();
    let output = binary()
        .args(["check-config", "--host", host, "--port", "0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn plaintext_on_a_network_address_is_warned_about_unless_tls_or_allowed() {
    assert!(check_config("", "0.0.0.0").contains(PLAINTEXT));
    assert!(!check_config("", "127.0.0.1").contains(PLAINTEXT));
    assert!(!check_config("[server]\nallow_plaintext = true", "0.0.0.0").contains(PLAINTEXT));
    let ca = Ca::new("test CA");
    let (cert, key) = ca.server(&[HOST]).write(&temp_dir("plain-tls"));
    assert!(!check_config(&tls_toml(&cert, &key), "0.0.0.0").contains(PLAINTEXT));
    // serve says it once, at start.
    let dir = temp_dir("plain-serve");
    let config = dir.join("gatewayd.toml");
    std::fs::write(&config, two_keys_toml()).unwrap();
    let mut command = binary();
    command
        .args(["--host", "0.0.0.0", "--port", "0", "--config"])
        .arg(&config);
    let process = start(command);
    let log = process.stderr();
    assert_eq!(log.matches(PLAINTEXT).count(), 1, "{log}");
    assert!(log.contains("[server.tls]"), "{log}");
}
