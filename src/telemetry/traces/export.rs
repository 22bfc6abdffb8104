//! The exporter: finished spans queue here without ever blocking a request, and one
//! background task POSTs them in batches to the OTLP/HTTP collector. A collector that
//! is down or slow costs spans, never requests, and is logged at most once a minute.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::proto;
use super::record::Record;

/// Spans waiting to be sent; past this, new spans are dropped (and counted).
const QUEUE: usize = 8192;
/// The most spans in one request to the collector.
const MAX_BATCH: usize = 512;
/// How long one export may take, connect included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a failing collector is logged, at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Where spans go and how they are labelled; built by the daemon from the config.
pub struct Settings {
    pub url: Uri,
    pub service_name: String,
    /// How long a span waits for others to be sent with it.
    pub delay: Duration,
    /// For an `https://` collector: the same roots as the upstreams trust.
    pub tls: rustls::ClientConfig,
}

struct Exporter {
    queue: mpsc::Sender<Record>,
    /// Spans dropped because the queue was full, since the last log line.
    dropped: AtomicU64,
    stop: CancellationToken,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Are traces on? One atomic load: everything else is skipped when they are not.
#[inline]
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// Queues a finished span; drops it (counted) if the queue is full.
pub fn submit(record: Record) {
    if let Some(exporter) = EXPORTER.get() {
        if exporter.queue.try_send(record).is_err() {
            exporter.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Turns traces on for this process and starts the export task. Must be called inside
/// a runtime, once (later calls change nothing).
pub fn start(settings: Settings) {
    let (queue, receiver) = mpsc::channel(QUEUE);
    let (done, stopped) = oneshot::channel();
    let stop = CancellationToken::new();
    let exporter = Exporter {
        queue,
        dropped: AtomicU64::new(0),
        stop: stop.clone(),
        stopped: Mutex::new(Some(stopped)),
    };
    if EXPORTER.set(exporter).is_err() {
        return;
    }
    let authority = settings
        .url
        .authority()
        .map_or_else(String::new, ToString::to_string);
    tracing::info!(collector = %authority, service = %settings.service_name, "exporting traces over OTLP/HTTP");
    let sender = Sender::new(settings, authority);
    tokio::spawn(async move {
        run(receiver, sender, stop).await;
        let _ = done.send(());
    });
}

/// Sends what is still queued, waiting at most `deadline` (called once serving has
/// stopped, so the last requests' spans are not lost).
pub async fn shutdown(deadline: Duration) {
    let Some(exporter) = EXPORTER.get() else {
        return;
    };
    exporter.stop.cancel();
    let stopped = exporter.stopped.lock().ok().and_then(|mut s| s.take());
    if let Some(stopped) = stopped {
        if tokio::time::timeout(deadline, stopped).await.is_err() {
            tracing::warn!("the last traces could not be sent before shutdown");
        }
    }
}

async fn run(mut queue: mpsc::Receiver<Record>, mut sender: Sender, stop: CancellationToken) {
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        // Wait for the first span, then take what arrives until the delay is over or
        // the batch is full; every wake takes all the spans queued by then.
        let mut batch = Vec::with_capacity(64);
        let received = tokio::select! {
            n = queue.recv_many(&mut batch, MAX_BATCH) => n,
            () = &mut stopped => 0,
        };
        if received == 0 {
            break;
        }
        let delay = sleep_until(Instant::now() + sender.delay);
        tokio::pin!(delay);
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            tokio::select! {
                n = queue.recv_many(&mut batch, room) => if n == 0 { break },
                () = &mut delay => break,
                () = &mut stopped => break,
            }
        }
        sender.send(batch).await;
        if stop.is_cancelled() {
            break;
        }
    }
    let mut rest = Vec::new();
    while let Ok(record) = queue.try_recv() {
        rest.push(record);
        if rest.len() == MAX_BATCH {
            sender.send(std::mem::take(&mut rest)).await;
        }
    }
    if !rest.is_empty() {
        sender.send(rest).await;
    }
}

type ExportClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The export task's side: the client, the collector, and the rare failure log.
struct Sender {
    client: ExportClient,
    url: Uri,
    service_name: String,
    delay: Duration,
    /// `host:port` of the collector, for log lines (never the whole URL).
    authority: String,
    lost: u64,
    last_logged: Option<Instant>,
}

impl Sender {
    fn new(settings: Settings, authority: String) -> Sender {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(EXPORT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(settings.tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Sender {
            client: Client::builder(TokioExecutor::new()).build(https),
            url: settings.url,
            service_name: settings.service_name,
            delay: settings.delay,
            authority,
            lost: 0,
            last_logged: None,
        }
    }

    async fn send(&mut self, batch: Vec<Record>) {
        let count = batch.len() as u64;
        let body = proto::encode(batch, &self.service_name);
        let result = tokio::time::timeout(EXPORT_TIMEOUT, self.post(body)).await;
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(_) => Some("the collector did not answer in time".to_string()),
        };
        let dropped = EXPORTER
            .get()
            .map_or(0, |e| e.dropped.swap(0, Ordering::Relaxed));
        self.lost += dropped;
        if let Some(why) = &failure {
            self.lost += count;
            self.log(why);
        } else if dropped > 0 {
            self.log("the span queue was full");
        }
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), String> {
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.url.clone();
        request.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| match e.is_connect() {
                true => "could not connect to the collector".to_string(),
                false => "the request to the collector failed".to_string(),
            })?;
        let status = response.status();
        // Read (a bounded part of) the answer so the connection can be used again.
        let _ = Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await;
        match status.is_success() {
            true => Ok(()),
            false => Err(format!("the collector answered {status}")),
        }
    }

    /// At most one line a minute, with how many spans were lost since the last one.
    fn log(&mut self, why: &str) {
        if self.last_logged.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return;
        }
        tracing::warn!(
            collector = %self.authority,
            lost_spans = self.lost,
            "traces could not be exported: {why}; requests are not affected (logged at most once a minute)"
        );
        self.lost = 0;
        self.last_logged = Some(Instant::now());
    }
}
