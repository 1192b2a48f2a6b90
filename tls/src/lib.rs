//! Server TLS for OmniSQL's listeners (the data plane's Flight SQL, the control plane's gRPC service).
//!
//! Certificates come from PEM files, as Kubernetes mounts a `kubernetes.io/tls` Secret, and are re-read
//! when the files change, so a rotated certificate (cert-manager renews before expiry) is served to new
//! connections without a restart; files that fail to load keep the previous certificate in place. A
//! listener does each handshake in its own task under a deadline, so a client that connects and sends
//! nothing cannot stall other connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are checked for a new version (on the next handshake after this).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} has no PEM certificate (expected `-----BEGIN CERTIFICATE-----`)")]
    NoCertificate { what: String },
    #[error("{what} has no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { what: String },
    #[error("the private key in {what} does not belong to its certificate, or is of an unsupported kind: {reason}")]
    KeyMismatch { what: String, reason: String },
    #[error("cannot configure TLS: {0}")]
    Config(String),
}

/// Where a server's certificate chain and private key come from.
#[derive(Debug, Clone)]
enum Source {
    Files { cert: PathBuf, key: PathBuf },
    Pem,
}

/// A server identity: the certificate chain and key served to clients, re-read from its files when they
/// change. Cheap to clone; clones share the current certificate.
#[derive(Debug, Clone)]
pub struct ServerTls {
    resolver: Arc<Resolver>,
}

impl ServerTls {
    /// Loads a PEM certificate chain and private key from files (as mounted from a `kubernetes.io/tls`
    /// Secret: `tls.crt`, `tls.key`); fails now if they do not load.
    pub fn from_files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, TlsError> {
        let (cert, key) = (cert.into(), key.into());
        let (cert_pem, key_pem) = read_pair(&cert, &key)?;
        let current = certified_key(&cert_pem, &key_pem, &cert.display().to_string())?;
        Ok(Self::new(Source::Files { cert, key }, current, (cert_pem, key_pem)))
    }

    /// A fixed identity from PEM bytes (tests, and identities that are not files).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let current = certified_key(cert_pem, key_pem, "the certificate")?;
        Ok(Self::new(Source::Pem, current, (cert_pem.to_vec(), key_pem.to_vec())))
    }

    fn new(source: Source, current: Arc<CertifiedKey>, pem: (Vec<u8>, Vec<u8>)) -> Self {
        let state = State { current, pem, checked: Instant::now(), every: RELOAD_INTERVAL };
        Self { resolver: Arc::new(Resolver { source, state: Mutex::new(state) }) }
    }

    /// Checks the files for a new certificate at most this often (default [`RELOAD_INTERVAL`]).
    pub fn reload_every(self, interval: Duration) -> Self {
        self.resolver.state.lock().unwrap_or_else(|e| e.into_inner()).every = interval;
        self
    }

    /// A rustls server configuration offering `alpn` protocols (gRPC needs `h2`).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// Accepts TCP connections on `listener` and yields those that completed a TLS handshake offering
    /// `alpn`; failed or slow handshakes are logged and dropped. Sets `TCP_NODELAY` (small
    /// request/response pairs would otherwise wait ~40 ms on Nagle and delayed ACKs).
    pub fn incoming(
        &self,
        listener: TcpListener,
        alpn: &[&[u8]],
    ) -> Result<impl Stream<Item = std::io::Result<TlsStream<TcpStream>>> + Send + 'static, TlsError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server_config(alpn)?);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    // The server stopped listening (its stream was dropped).
                    _ = tx.closed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            // Out of file descriptors and the like: wait instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(tokio_stream_from(rx))
    }

    /// The certificate chain served now (DER), for tests and diagnostics.
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.resolver.current().cert.clone()
    }
}

/// Accepts plain TCP connections (no TLS) with `TCP_NODELAY` set, for listeners without a certificate.
pub fn plain_incoming(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> + Send + 'static {
    futures::stream::poll_fn(move |cx| {
        listener.poll_accept(cx).map(|accepted| {
            Some(accepted.map(|(tcp, _)| {
                let _ = tcp.set_nodelay(true);
                tcp
            }))
        })
    })
}

fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[derive(Debug)]
struct Resolver {
    source: Source,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    current: Arc<CertifiedKey>,
    /// The PEM bytes `current` was built from, to notice a change by content (mtimes are coarse, and a
    /// Secret volume swaps a symlink).
    pem: (Vec<u8>, Vec<u8>),
    checked: Instant,
    every: Duration,
}

impl Resolver {
    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Source::Files { cert, key } = &self.source
            && state.checked.elapsed() >= state.every
        {
            state.checked = Instant::now();
            match read_pair(cert, key) {
                Ok(pem) if pem != state.pem => match certified_key(&pem.0, &pem.1, &cert.display().to_string()) {
                    Ok(next) => {
                        tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
                        state.current = next;
                        state.pem = pem;
                    }
                    // Mid-rotation (certificate written, key not yet) or broken: keep serving the old one.
                    Err(e) => tracing::warn!(error = %e, "new TLS certificate files do not load; serving the previous one"),
                },
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "TLS certificate files unreadable; serving the previous one"),
            }
        }
        state.current.clone()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.display().to_string(), source });
    Ok((read(cert)?, read(key)?))
}

fn certified_key(cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { what: what.into() });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey { what: what.into() })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(|e| TlsError::KeyMismatch { what: what.into(), reason: e.to_string() })
}
