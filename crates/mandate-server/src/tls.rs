//! Native TLS on both listeners (`[tls]`, docs/OPERATIONS.md "TLS"): rustls with the ring
//! provider, a certificate chain and key from PEM files, reloaded on SIGHUP like the signing
//! keys. A reload that fails keeps the certificate in force; new connections get the new one,
//! open connections keep theirs.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing, unreadable or holds no PEM certificate.
    #[error("{path}: no PEM certificate could be read ({reason})")]
    Certificate {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key file is missing, unreadable or holds no PEM private key of a supported type.
    #[error("{path}: no usable PEM private key ({reason})")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("the private key does not belong to the certificate")]
    Mismatch,
}

/// The certificate in force, swapped whole on reload.
#[derive(Debug)]
struct Reloadable(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// The listeners' TLS: one configuration whose certificate can be replaced while serving.
#[derive(Debug, Clone)]
pub struct Tls {
    config: Arc<ServerConfig>,
    current: Arc<Reloadable>,
}

impl Tls {
    /// Loads `cert_file` (the chain, leaf first) and `key_file` (PKCS#8, PKCS#1 or SEC1).
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let current = Arc::new(Reloadable(RwLock::new(Arc::new(certified_key(
            cert_file, key_file,
        )?))));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Certificate {
                path: cert_file.display().to_string(),
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            current,
        })
    }

    /// Puts the certificate of these files in force for new connections; on failure the one in
    /// force stays.
    pub fn reload(&self, cert_file: &Path, key_file: &Path) -> Result<(), TlsError> {
        let loaded = Arc::new(certified_key(cert_file, key_file)?);
        *self
            .current
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = loaded;
        Ok(())
    }

    /// An acceptor for a listener.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
    }
}

fn certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::Certificate {
        path: cert_file.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("the file holds no certificate".into()));
    }
    let key_error = |reason: String| TlsError::Key {
        path: key_file.display().to_string(),
        reason,
    };
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| key_error(e.to_string()))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| key_error(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch),
        // The key's public half cannot be compared (not an error of the files): serve it.
        Err(_) => Ok(certified),
    }
}

/// A connection of a listener: plain, or TLS over the same bounded stream.
pub(crate) enum Connection<S> {
    /// No `[tls]`.
    Plain(S),
    /// After the TLS handshake.
    Tls(Box<tokio_rustls::server::TlsStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Connection<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Connection<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl crate::state::AppState {
    /// Re-reads the certificate and key files `[tls]` names (what SIGHUP does, after the signing
    /// keys): new connections get the new certificate. Whether TLS is on; a failure is logged and
    /// keeps the certificate in force. The paths are those the node started with (replace the
    /// files in place); other `[tls]` changes need a restart.
    pub fn reload_tls(&self) -> Result<bool, TlsError> {
        let (Some(tls), Some(cert), Some(key)) = (
            &self.tls,
            &self.settings.tls.cert_file,
            &self.settings.tls.key_file,
        ) else {
            return Ok(false);
        };
        match tls.reload(cert, key) {
            Ok(()) => {
                tracing::info!(cert_file = %cert.display(), "TLS certificate reloaded");
                Ok(true)
            }
            Err(error) => {
                tracing::error!(%error, "TLS certificate NOT reloaded; the one in force stays");
                Err(error)
            }
        }
    }
}
