//! TLS on the listeners: the `[server.tls]` certificate and key, checked as a pair,
//! served with ALPN h2/http1.1 over TLS 1.2-1.3, and swapped atomically on SIGHUP.
//!
//! The PEM reading it shares with upstream TLS is in `config/tls.rs`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::tls::{provider, read_pair, TlsError, TlsFiles};

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
        self.install(self.read_fresh()?);
        Ok(())
    }

    /// The first half of [`ListenerTls::reload`]: reads and checks the pair, swaps nothing
    /// (so a reload that missed its deadline can never install what it read late).
    pub fn read_fresh(&self) -> Result<CertifiedKey, TlsError> {
        read_listener_pair(&self.files)
    }

    /// The second half: new handshakes get `pair`.
    pub fn install(&self, pair: CertifiedKey) {
        self.current.0.store(Arc::new(pair));
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
