//! Upstream TLS: which servers are trusted (built-in roots, the OS store, a per-upstream
//! `ca_file`) and which client certificate is shown (mutual TLS), reloadable on SIGHUP.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

use crate::config::tls::{provider, read_certs, read_pair, TlsError};
use crate::config::UpstreamConfig;

/// The roots every upstream trusts: the compiled-in webpki roots and the operating
/// system's store (read once per process).
fn base_roots() -> RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            // Unreadable entries in the OS store are skipped; the rest still count.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            roots
        })
        .clone()
}

/// TLS 1.2 and 1.3 only.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn versions() -> &'static [&'static rustls::SupportedProtocolVersion] {
    VERSIONS
}

/// The client config of every upstream without TLS settings of its own.
pub fn default_config() -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions())
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(base_roots())
        .with_no_client_auth())
}

/// One upstream's trust and client certificate as just read, not yet in force.
pub struct FreshTls {
    verifier: Arc<WebPkiServerVerifier>,
    client_cert: Option<Arc<CertifiedKey>>,
}

/// One upstream's `ca_file` and client certificate, as loaded now.
pub struct UpstreamTls {
    name: Arc<str>,
    ca_file: Option<PathBuf>,
    client_files: Option<(PathBuf, PathBuf)>,
    verifier: Arc<Verifier>,
    client_cert: Arc<ClientCert>,
}

impl UpstreamTls {
    /// `None` when the upstream sets none of `ca_file`, `client_cert_file`, `client_key_file`.
    pub fn load(config: &UpstreamConfig) -> Result<Option<Arc<Self>>, TlsError> {
        let client_files = match (&config.client_cert_file, &config.client_key_file) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => {
                return Err(TlsError::Setup(format!(
                    "upstream {:?}: set both client_cert_file and client_key_file, or neither",
                    config.name
                )))
            }
        };
        if config.ca_file.is_none() && client_files.is_none() {
            return Ok(None);
        }
        let tls = UpstreamTls {
            name: config.name.as_str().into(),
            ca_file: config.ca_file.clone(),
            client_files,
            verifier: Arc::new(Verifier(ArcSwap::new(verifier_for(&config.ca_file)?))),
            client_cert: Arc::new(ClientCert(ArcSwapOption::empty())),
        };
        tls.client_cert.0.store(tls.read_client_cert()?);
        Ok(Some(Arc::new(tls)))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client config whose trust and certificate follow [`UpstreamTls::reload`].
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        Ok(ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions())
            .map_err(|e| TlsError::Setup(e.to_string()))?
            // Not a weaker check: `Verifier` is the standard webpki verifier, whose
            // roots can be swapped on SIGHUP.
            .dangerous()
            .with_custom_certificate_verifier(self.verifier.clone())
            .with_client_cert_resolver(self.client_cert.clone()))
    }

    /// Re-reads `ca_file` and the client pair (blocking). All or nothing: on any error
    /// the previous trust and certificate stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.install(self.read_fresh()?);
        Ok(())
    }

    /// The first half of [`UpstreamTls::reload`]: reads and checks every file, swaps
    /// nothing (so a reload that missed its deadline never installs what it read late).
    pub fn read_fresh(&self) -> Result<FreshTls, TlsError> {
        Ok(FreshTls {
            verifier: verifier_for(&self.ca_file)?,
            client_cert: self.read_client_cert()?,
        })
    }

    /// The second half: new handshakes use what `fresh` holds.
    pub fn install(&self, fresh: FreshTls) {
        self.verifier.0.store(fresh.verifier);
        self.client_cert.0.store(fresh.client_cert);
    }

    fn read_client_cert(&self) -> Result<Option<Arc<CertifiedKey>>, TlsError> {
        let Some((cert, key)) = &self.client_files else {
            return Ok(None);
        };
        let pair = read_pair(
            "upstream client_cert_file",
            cert,
            "upstream client_key_file",
            key,
        )?;
        Ok(Some(Arc::new(pair)))
    }
}

fn verifier_for(ca_file: &Option<PathBuf>) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let mut roots = base_roots();
    if let Some(path) = ca_file {
        for cert in read_certs("upstream ca_file", path)? {
            roots.add(cert).map_err(|e| TlsError::Invalid {
                what: "upstream ca_file",
                path: path.clone(),
                reason: format!("not a usable CA certificate ({e})"),
            })?;
        }
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Setup(e.to_string()))
}

/// The standard webpki verifier, behind a swap.
struct Verifier(ArcSwap<WebPkiServerVerifier>);

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier")
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.0
            .load()
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.load().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.load().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.load().supported_verify_schemes()
    }
}

/// The client certificate in force (none without mutual TLS). `Debug` shows no key.
struct ClientCert(ArcSwapOption<CertifiedKey>);

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientCert")
    }
}

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.load_full()
    }

    fn has_certs(&self) -> bool {
        self.0.load().is_some()
    }
}
