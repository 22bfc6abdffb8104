//! TLS on the listeners: the `[server.tls]` certificate and key, checked as a pair,
//! served with ALPN h2/http1.1 over TLS 1.2-1.3, and swapped atomically on SIGHUP.
//!
//! Also the PEM reading that upstream TLS (`upstream/tls.rs`) shares. Errors name the
//! file and the reason; private keys never reach a log line or a `Debug` output.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;

/// `[server.tls]`: where the listener's certificate chain and key are (paths only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM: the server certificate first, then any intermediates.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the first certificate.
    pub key_file: PathBuf,
}

/// A certificate or key file that cannot be used. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {}: {reason}", path.display())]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

/// The one crypto provider (ring), as everywhere else in gatewayd.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Every CERTIFICATE block of a PEM file; at least one.
pub fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let invalid = |reason: String| TlsError::Invalid {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not valid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(invalid("no PEM CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// A certificate chain and its private key, checked to belong together.
pub fn read_pair(
    cert_what: &'static str,
    cert_file: &Path,
    key_what: &'static str,
    key_file: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(cert_what, cert_file)?;
    let pem = read(key_what, key_file)?;
    let invalid_key = |reason: &str| TlsError::Invalid {
        what: key_what,
        path: key_file.to_path_buf(),
        reason: reason.into(),
    };
    // The parse error could quote key bytes: only its kind is reported.
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| invalid_key("no PEM private key (PKCS#8, PKCS#1 or SEC1) found"))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|_| invalid_key("unsupported or malformed private key"))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().map_err(|_| TlsError::Invalid {
        what: key_what,
        path: key_file.to_path_buf(),
        reason: format!(
            "this key does not belong to the first certificate in {}",
            cert_file.display()
        ),
    })?;
    Ok(pair)
}

/// The listeners' TLS: one acceptor for the process, its certificate swappable.
pub struct ListenerTls {
    files: TlsFiles,
    current: Arc<CurrentCert>,
    acceptor: TlsAcceptor,
}

/// Hands every new handshake the certificate in force; a swap never touches
/// connections already established.
struct CurrentCert(ArcSwap<CertifiedKey>);

impl std::fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentCert")
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl ListenerTls {
    /// Reads and checks the pair; used by the verdict, so `serve` and `check-config`
    /// refuse the same files.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let pair = read_listener_pair(files)?;
        let current = Arc::new(CurrentCert(ArcSwap::from_pointee(pair)));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ListenerTls {
            files: files.clone(),
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Re-reads both files (blocking: call off the async workers). A good pair takes
    /// over for new handshakes; a bad one is refused and the old pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = read_listener_pair(&self.files)?;
        self.current.0.store(Arc::new(pair));
        Ok(())
    }
}

fn read_listener_pair(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    read_pair(
        "[server.tls] cert_file",
        &files.cert_file,
        "[server.tls] key_file",
        &files.key_file,
    )
}
