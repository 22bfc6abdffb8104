//! Upstream TLS with a private CA made in the test: refused without `ca_file`, accepted
//! with it; mutual TLS required by the upstream and satisfied by `client_cert_file`;
//! a SIGHUP-style reload picks up a new `ca_file`.
// Tests fail by panicking; unwrap/expect here are assertions, not error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pki;

use std::path::Path;
use std::sync::Arc;

use axum::routing::post;
use axum::Router;
use common::{client, config_from_toml, spawn_gateway, temp_dir, two_keys_toml, Gateway, KEY_A};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use pki::{Ca, Pair};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const REPLY: &str = "from the TLS upstream";

/// An HTTPS upstream on 127.0.0.1 with `pair`; with `client_ca`, it requires a client
/// certificate that CA signed. Returns its base URL.
async fn tls_upstream(pair: &Pair, client_ca: Option<&Ca>) -> String {
    let chain = CertificateDer::pem_slice_iter(pair.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
                .unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let router = Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            axum::Json(json!({
                "id": "chatcmpl-tls", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": REPLY}}]
            }))
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                // A refused handshake is what some tests expect: nothing to serve.
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = TowerToHyperService::new(router);
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    format!("https://127.0.0.1:{}/v1", addr.port())
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    pki::replace(&path, text);
    format!("{path:?}")
}

async fn gateway(upstream: &str, tls_lines: &str) -> Gateway {
    let toml = format!(
        "{}[[upstreams]]\nname = \"private\"\nbase_url = \"{upstream}\"\nmodels = [\"m\"]\n{tls_lines}\n",
        two_keys_toml()
    );
    spawn_gateway(config_from_toml(&toml)).await
}

async fn chat(gw: &Gateway) -> (u16, Value) {
    let response = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY_A)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_private_ca_upstream_is_refused_without_ca_file_and_reached_with_it() {
    let ca = Ca::new("private CA");
    let upstream = tls_upstream(&ca.server(&["127.0.0.1"]), None).await;
    let dir = temp_dir("up-ca");

    let (status, body) = chat(&gateway(&upstream, "").await).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "upstream_error");

    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let (status, body) = chat(&gateway(&upstream, &format!("ca_file = {ca_file}")).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], REPLY);
}

#[tokio::test]
async fn mutual_tls_is_required_by_the_upstream_and_satisfied() {
    let ca = Ca::new("private CA");
    let upstream = tls_upstream(&ca.server(&["127.0.0.1"]), Some(&ca)).await;
    let dir = temp_dir("up-mtls");
    let ca_file = write(&dir, "ca.pem", &ca.pem());

    let (status, _) = chat(&gateway(&upstream, &format!("ca_file = {ca_file}")).await).await;
    assert_eq!(status, 502, "no client certificate: the upstream refuses");

    let client_pair = ca.client("gatewayd");
    let cert = write(&dir, "client.pem", &client_pair.cert);
    let key = write(&dir, "client-key.pem", &client_pair.key);
    let lines = format!("ca_file = {ca_file}\nclient_cert_file = {cert}\nclient_key_file = {key}");
    let (status, body) = chat(&gateway(&upstream, &lines).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], REPLY);
}

#[tokio::test]
async fn a_reload_picks_up_a_new_ca_file_and_keeps_the_old_one_when_bad() {
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let upstream = tls_upstream(&new_ca.server(&["127.0.0.1"]), None).await;
    let dir = temp_dir("up-reload");
    let ca_file = write(&dir, "ca.pem", &old_ca.pem());
    let gw = gateway(&upstream, &format!("ca_file = {ca_file}")).await;
    assert_eq!(chat(&gw).await.0, 502);

    write(&dir, "ca.pem", "not a certificate\n");
    let outcomes = gw.state.upstreams.reload_tls();
    assert_eq!(outcomes.len(), 1);
    assert!(outcomes[0].1.is_err());

    write(&dir, "ca.pem", &new_ca.pem());
    let outcomes = gw.state.upstreams.reload_tls();
    assert!(outcomes[0].1.is_ok(), "{:?}", outcomes[0].1);
    // Pooled connections never completed a handshake, so the next request dials anew.
    let (status, body) = chat(&gw).await;
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_client_certificate_without_its_key_is_refused_at_start() {
    let dir = temp_dir("up-half");
    let cert = write(&dir, "client.pem", &Ca::new("ca").client("x").cert);
    let toml = format!(
        "[[upstreams]]\nname = \"half\"\nbase_url = \"https://127.0.0.1:1/v1\"\nmodels = [\"m\"]\nclient_cert_file = {cert}\n"
    );
    let config = config_from_toml(&toml);
    let refused = gatewayd::upstream::Registry::from_config(&config.upstreams)
        .err()
        .expect("refused");
    assert!(refused.to_string().contains("client_key_file"), "{refused}");
}
