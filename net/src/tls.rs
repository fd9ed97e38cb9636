//! TLS for SSL and SASL_SSL listeners: rustls server configs built from PEM files, reloaded
//! when the files change, and the handshake of one accepted connection.
//!
//! Contract: each shard holds its own [`TlsReloader`] per TLS listener (no sharing, no locks)
//! and runs the handshakes of the connections it accepted. At most once per
//! `TLS_RELOAD_CHECK_MS`, when it accepts a TLS connection, a shard compares the files'
//! modification times with those it loaded; on a change it builds a new config for the next
//! handshakes (connections already open keep theirs). A change that does not load (a key that
//! does not match, a file half written) is logged and the previous config stays in use.
//! Handshakes are bounded by `SECURITY_HANDSHAKE_TIMEOUT_MS`; garbage or a plaintext client
//! fails the handshake and the connection is closed, nothing else.
//! rustls is driven over glommio's `TcpStream` by futures-rustls (the stream implements the
//! futures-io traits; no tokio runtime is involved).

use futures::future::{select, Either};
use futures::FutureExt;
use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;
use glommio::net::TcpStream;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sluice_core::limits::{MAX_PEM_FILE_BYTES, SECURITY_HANDSHAKE_TIMEOUT_MS, TLS_RELOAD_CHECK_MS};
use sluice_core::listeners::{ClientAuth, TlsConfig};
use std::cell::{Cell, RefCell};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Why a TLS config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is larger than {MAX_PEM_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path} holds no {what} in PEM")]
    Empty { path: PathBuf, what: &'static str },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls.ca_file: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("tls: cert_file and key_file must be set")]
    NotConfigured,
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read = |source| TlsError::Read { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(read)?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(TlsError::TooLarge { path: path.to_path_buf() });
    }
    Ok(bytes)
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?;
    if certs.is_empty() {
        return Err(TlsError::Empty { path: path.to_path_buf(), what: "certificate" });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?
        .ok_or_else(|| TlsError::Empty { path: path.to_path_buf(), what: "private key" })
}

/// Builds a server config from the files named in `tls`.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let (Some(cert), Some(key_file)) = (&tls.cert_file, &tls.key_file) else { return Err(TlsError::NotConfigured) };
    // ring's provider has no post-quantum key exchange (X25519MLKEM768), hence rustls's
    // deprecation note; aws-lc-rs has it but needs cmake and a long C build. Clients negotiate
    // X25519 or P-256 instead.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match (tls.client_auth, &tls.ca_file) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match auth {
                ClientAuth::Requested => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            builder.with_client_cert_verifier(verifier.build()?)
        }
    };
    Ok(Arc::new(builder.with_single_cert(certs(cert)?, key(key_file)?)?))
}

/// The modification times of the files a config was built from.
fn mtimes(tls: &TlsConfig) -> Vec<Option<SystemTime>> {
    [&tls.cert_file, &tls.key_file, &tls.ca_file]
        .into_iter()
        .map(|p| p.as_ref().and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()))
        .collect()
}

/// One shard's TLS config for one listener, reloaded when its files change.
pub struct TlsReloader {
    files: TlsConfig,
    current: RefCell<(Arc<ServerConfig>, Vec<Option<SystemTime>>)>,
    checked: Cell<Instant>,
}

impl TlsReloader {
    pub fn new(files: TlsConfig) -> Result<TlsReloader, TlsError> {
        let stamps = mtimes(&files);
        let config = server_config(&files)?;
        Ok(TlsReloader { files, current: RefCell::new((config, stamps)), checked: Cell::new(Instant::now()) })
    }

    /// The acceptor for the next handshake (reloading the files first if they changed).
    pub fn acceptor(&self) -> TlsAcceptor {
        if self.checked.get().elapsed() >= Duration::from_millis(TLS_RELOAD_CHECK_MS) {
            self.checked.set(Instant::now());
            self.reload_if_changed();
        }
        TlsAcceptor::from(self.current.borrow().0.clone())
    }

    fn reload_if_changed(&self) {
        let stamps = mtimes(&self.files);
        if stamps == self.current.borrow().1 {
            return;
        }
        match server_config(&self.files) {
            Ok(config) => {
                tracing::info!(cert = ?self.files.cert_file, "TLS certificate files changed: reloaded");
                *self.current.borrow_mut() = (config, stamps);
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate files changed but do not load; keeping the previous ones");
                // Retried at the next check only if the files change again.
                self.current.borrow_mut().1 = stamps;
            }
        }
    }
}

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
    #[error("TLS handshake did not finish within {SECURITY_HANDSHAKE_TIMEOUT_MS} ms")]
    Timeout,
}

/// Runs the server side of a TLS handshake on `stream`, bounded in time.
pub async fn handshake(acceptor: TlsAcceptor, stream: TcpStream) -> Result<TlsStream<TcpStream>, HandshakeError> {
    let timeout = glommio::timer::sleep(Duration::from_millis(SECURITY_HANDSHAKE_TIMEOUT_MS));
    match select(acceptor.accept(stream).boxed_local(), timeout.boxed_local()).await {
        Either::Left((Ok(s), _)) => Ok(s),
        Either::Left((Err(e), _)) => Err(HandshakeError::Failed(e)),
        Either::Right(_) => Err(HandshakeError::Timeout),
    }
}
