//! Slot exhaustion from many addresses: silent connections from ten addresses, each under the per-address cap and reopened whenever closed, do not starve a keyed client; a request head still arriving and an idle keep-alive connection that passed auth are not cut.
//!
//! Scaled for a debug build on a busy 2-core machine: 50 slots, 100 silent connections
//! (10 from each of 127.0.1.1–10). Before connections that never passed auth gave way
//! first, the keyed client waited for `unauthenticated_idle_secs` (seconds) per request;
//! now it waits for the gateway to cycle through the backlog (milliseconds).
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{binary, sha256_hex, start, KEY_A};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const SLOTS: usize = 50;
const ADDRESSES: u8 = 10;
const PER_ADDRESS: usize = 10;
const LEGIT_REQUESTS: usize = 100;
/// Far above the fixed gateway's wait (tens of ms), far below the unfixed one's (the
/// 5 s unauthenticated timeout, or longer).
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

async fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(to).await
}

/// Flood connections that have connected once, and closes the gateway made.
#[derive(Default)]
struct Flood {
    connected: AtomicUsize,
    closed: AtomicUsize,
    changed: Notify,
}

/// `PER_ADDRESS` silent connections from each of 127.0.1.1–10; each one closed is
/// reopened at once, until `stop`.
fn flood(addr: SocketAddr, stop: CancellationToken) -> Arc<Flood> {
    let flood = Arc::new(Flood::default());
    for address in 1..=ADDRESSES {
        for _ in 0..PER_ADDRESS {
            let (flood, stop) = (flood.clone(), stop.clone());
            let source = format!("127.0.1.{address}");
            tokio::spawn(async move {
                let mut first = true;
                while !stop.is_cancelled() {
                    let Ok(mut stream) = connect_from(&source, addr).await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    if first {
                        first = false;
                        flood.connected.fetch_add(1, Ordering::AcqRel);
                        flood.changed.notify_waiters();
                    }
                    let mut sink = [0u8; 64];
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = stream.read(&mut sink) => {}
                    }
                    flood.closed.fetch_add(1, Ordering::AcqRel);
                }
            });
        }
    }
    flood
}

async fn all_connected(flood: &Flood) {
    let total = ADDRESSES as usize * PER_ADDRESS;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let notified = flood.changed.notified();
        if flood.connected.load(Ordering::Acquire) >= total {
            return;
        }
        assert!(
            tokio::time::timeout_at(deadline, notified).await.is_ok(),
            "the flood never connected"
        );
    }
}

fn keyed_request(path: &str, close: bool) -> String {
    let connection = if close { "close" } else { "keep-alive" };
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY_A}\r\n\
         Connection: {connection}\r\n\r\n"
    )
}

/// Reads one response (head and `Content-Length` body); returns the status line and body.
async fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while received.len() < end + 4 + length {
                let read = stream.read(&mut buffer).await.unwrap();
                assert!(read > 0, "the connection closed mid-body: {head}");
                received.extend_from_slice(&buffer[..read]);
            }
            let body = String::from_utf8_lossy(&received[end + 4..end + 4 + length]);
            let status = head.lines().next().unwrap_or_default().to_string();
            return (status, body.to_string());
        }
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "the connection closed before a response");
        received.extend_from_slice(&buffer[..read]);
    }
}

/// `LEGIT_REQUESTS` keyed requests from 127.0.0.2, each on a new connection; all must
/// be answered 200 within `ANSWER_WITHIN`. Returns the sorted times.
async fn legit_client(addr: SocketAddr) -> Vec<Duration> {
    let mut took = Vec::with_capacity(LEGIT_REQUESTS);
    for i in 0..LEGIT_REQUESTS {
        let started = Instant::now();
        let (status, body) = tokio::time::timeout(ANSWER_WITHIN, async {
            let mut stream = connect_from("127.0.0.2", addr).await.unwrap();
            let request = keyed_request("/v1/models", true);
            stream.write_all(request.as_bytes()).await.unwrap();
            read_response(&mut stream).await
        })
        .await
        .unwrap_or_else(|_| {
            panic!("legitimate request {i} got no answer in {ANSWER_WITHIN:?} (earlier: {took:?})")
        });
        assert_eq!(status, "HTTP/1.1 200 OK", "request {i}: {body}");
        took.push(started.elapsed());
    }
    took.sort();
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_from_many_addresses_give_way_to_a_keyed_client() {
    let dir = common::temp_dir("slots");
    let config = dir.join("gatewayd.toml");
    // Only the global limit is low: 10 per address is far under the per-address cap
    // (256). The header timeout is long so only slot relief could cut the slow head.
    std::fs::write(
        &config,
        format!(
            "[limits]\nmax_connections = {SLOTS}\nheader_read_timeout_secs = 60\n\n\
             [[keys]]\nname = \"alice\"\nsha256 = \"{}\"\n",
            sha256_hex(KEY_A)
        ),
    )
    .unwrap();
    let mut command = binary();
    command
        .args(["--port", "0", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn,gatewayd=info");
    let process = start(command);
    let addr = SocketAddr::from(([127, 0, 0, 1], process.addr.port()));

    // A keep-alive connection that passed auth, then sits idle through the flood.
    let mut keepalive = connect_from("127.0.0.3", addr).await.unwrap();
    let request = keyed_request("/v1/models", false);
    keepalive.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut keepalive).await.0, "HTTP/1.1 200 OK");

    let stop = CancellationToken::new();
    let flood = flood(addr, stop.clone());
    all_connected(&flood).await;

    // A client whose request head is still arriving: half now, the rest after the
    // legitimate client's run (seconds, past the shortened timeout of 1 s).
    let mut slow = connect_from("127.0.0.4", addr).await.unwrap();
    let request = keyed_request("/v1/models", true);
    let (first_half, second_half) = request.split_at(request.find("Authorization").unwrap());
    slow.write_all(first_half.as_bytes()).await.unwrap();

    let took = legit_client(addr).await;
    let p50 = took[took.len() / 2];
    let p99 = took[(took.len() * 99).div_ceil(100) - 1];
    println!(
        "keyed client from 127.0.0.2 against {} silent connections from {ADDRESSES} \
         addresses for {SLOTS} slots: {LEGIT_REQUESTS}/{LEGIT_REQUESTS} answered 200, \
         p50 {p50:?}, p99 {p99:?}, max {:?}; the gateway closed {} flood connections",
        ADDRESSES as usize * PER_ADDRESS,
        took[took.len() - 1],
        flood.closed.load(Ordering::Acquire),
    );
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");

    // The head that was still arriving was never cut: it completes and is answered.
    slow.write_all(second_half.as_bytes()).await.unwrap();
    let (status, body) = tokio::time::timeout(ANSWER_WITHIN, read_response(&mut slow))
        .await
        .expect("the slow request head got no answer");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");

    // The idle keep-alive connection was not closed while unauthenticated ones were
    // there to close; the closes are counted by reason.
    let request = keyed_request("/metrics", false);
    keepalive.write_all(request.as_bytes()).await.unwrap();
    let (status, metrics) = read_response(&mut keepalive).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{metrics}");
    let relieved = metrics
        .lines()
        .find(|line| {
            line.starts_with("gatewayd_connections_closed_for_slots_total{reason=\"unauthenticated")
        })
        .unwrap_or_else(|| panic!("no slot relief counted:\n{metrics}"));
    assert!(!metrics.contains("reason=\"idle_keepalive\""), "{metrics}");
    println!("{relieved}");
    stop.cancel();
}
