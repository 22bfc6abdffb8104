//! `[server.tls]` as written, and the PEM reading listener TLS (`http/tls.rs`) and upstream
//! TLS (`upstream/tls.rs`) share. Errors name the file and the reason; private keys never
//! reach a log line or a `Debug` output.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use super::file_read::{self, FileError, FileKind};

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
    #[error("cannot read {what} {source}")]
    Read {
        what: &'static str,
        source: FileError,
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

/// A PEM file through the shared reader: a regular file of at most 1 MiB, under its deadline.
fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    file_read::read(path, FileKind::Pem)
        .map(|content| content.bytes)
        .map_err(|source| TlsError::Read { what, source })
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
