//! HTTPS and client certificates (docs/DESIGN.md §6.4).
//!
//! With `[tls]` configured, `conn` (the one accept loop and connection builder, for plain HTTP
//! and TLS alike) runs each connection's handshake with the [`acceptor`] built here before
//! serving HTTP/1.1 on it; the handshake counts toward the first request's
//! `server.header_read_timeout`. With `client_ca_file`, rustls's `WebPkiClientVerifier` checks
//! client certificates against that CA at the handshake (an expired, not-yet-valid or
//! unknown-CA certificate is refused there, and so is a missing one when
//! `require_client_cert = true`).
//!
//! For a connection with a verified client certificate, the earliest `notAfter` of the presented
//! chain ([`sessiond::cert::chain_expiry`]) is that connection's certificate deadline:
//! - every request on it carries a [`ClientCertificate`] extension, which
//!   `POST /v1/sessions/validate` folds into the `deadline` it returns;
//! - the SSE streams on it end at that deadline by themselves: the per-session stream with its
//!   `expired` event (`reason` `certificate_expired`), the per-user stream without one;
//! - when the deadline passes, the connection stops reading requests and gets [`EXPIRY_GRACE`]
//!   to finish the response in flight (so the `expired` event that ends a stream reaches the
//!   client before the close); then the connection is **dropped**: the hyper connection future
//!   and with it the TLS stream and socket, so a response that has not ended by then is cut off
//!   rather than allowed to outlive the credential. No `close_notify` is sent; the peer sees the
//!   TCP connection close.
//!
//! The timer re-reads the service's clock at least every [`RECHECK`] instead of trusting one long
//! sleep, so a wall-clock jump is noticed (docs/DESIGN.md §2.2); the boundary is
//! [`sessiond::clock::is_expired`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sessiond::{SessionService, Timestamp};
use tokio_rustls::TlsAcceptor;

use crate::config::{self, ClientCerts};

/// Longest sleep before the certificate timer re-reads the clock.
const RECHECK: Duration = Duration::from_secs(5);
/// How long a connection whose client certificate expired may take to finish the response in
/// flight (an SSE stream writing its terminal `expired` event) before it is dropped.
pub(crate) const EXPIRY_GRACE: Duration = Duration::from_secs(1);

/// A verified client certificate on the request's connection: its chain's earliest `notAfter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientCertificate {
    /// The earliest `notAfter` of the presented chain; the connection closes then.
    pub not_after: Timestamp,
}

/// `[tls]` that cannot be loaded. Messages name files, never their contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("tls.{key}: cannot read {path}")]
    Pem {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate file holds no certificate.
    #[error("tls.{key}: no certificate in {path}")]
    NoCertificate {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A client CA certificate was rejected as a trust anchor.
    #[error("tls.client_ca_file: {path} holds a certificate that is not a usable trust anchor")]
    TrustAnchor {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built.
    #[error("tls.client_ca_file: cannot build the client-certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// The certificate and key do not make a server configuration (e.g. they do not match).
    #[error("tls.cert_file / tls.key_file: unusable certificate or key")]
    ServerConfig(#[source] rustls::Error),
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        key,
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            key,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Builds the acceptor for `[tls]`; the second value says whether client certificates are
/// verified.
///
/// # Errors
/// [`TlsError`] naming the file or key at fault.
pub(crate) fn acceptor(tls: &config::Tls) -> Result<(TlsAcceptor, bool), TlsError> {
    let chain = certificates("cert_file", &tls.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|source| TlsError::Pem {
        key: "key_file",
        path: tls.key_file.clone(),
        source,
    })?;
    let builder = rustls::ServerConfig::builder();
    let builder = match tls.client_certs.ca_file() {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates("client_ca_file", path)? {
                roots.add(ca).map_err(|source| TlsError::TrustAnchor {
                    path: path.to_owned(),
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots));
            let verifier = match tls.client_certs {
                ClientCerts::Required { .. } => verifier,
                _ => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(verifier.build().map_err(TlsError::Verifier)?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::ServerConfig)?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((
        TlsAcceptor::from(Arc::new(server)),
        tls.client_certs.ca_file().is_some(),
    ))
}

/// Resolves once `deadline` has passed on the service's clock, re-reading it at least every
/// [`RECHECK`].
pub(crate) async fn until(service: &SessionService, deadline: Timestamp) {
    loop {
        let now = service.now();
        if sessiond::clock::is_expired(deadline, now) {
            return;
        }
        let left = deadline.duration_since(now).min(RECHECK);
        tokio::time::sleep(left.max(Duration::from_millis(1))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_err(tls: &config::Tls) -> TlsError {
        match acceptor(tls) {
            Ok(_) => panic!("loaded"),
            Err(e) => e,
        }
    }

    fn tls(dir: &Path, client_ca: bool) -> config::Tls {
        let client_certs = if client_ca {
            ClientCerts::Required {
                ca_file: dir.join("ca.pem"),
            }
        } else {
            ClientCerts::None
        };
        config::Tls {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
            client_certs,
        }
    }

    #[test]
    fn acceptor_loads_and_names_the_file_at_fault() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (d, key_pem) = (dir.path(), key.serialize_pem());
        let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();

        // Nothing written yet: the certificate file is missing.
        let err = load_err(&tls(d, false));
        assert!(
            matches!(
                err,
                TlsError::Pem {
                    key: "cert_file",
                    ..
                }
            ),
            "{err:?}"
        );
        write("cert.pem", &key_pem);
        let err = load_err(&tls(d, false));
        assert!(
            matches!(
                err,
                TlsError::NoCertificate {
                    key: "cert_file",
                    ..
                }
            ),
            "{err:?}"
        );
        write("cert.pem", &cert.pem());
        let err = load_err(&tls(d, false));
        assert!(
            matches!(
                err,
                TlsError::Pem {
                    key: "key_file",
                    ..
                }
            ),
            "{err:?}"
        );
        write("key.pem", &key_pem);
        assert!(!acceptor(&tls(d, false)).map(|a| a.1).unwrap_or(true));
        let err = load_err(&tls(d, true));
        assert!(
            matches!(
                err,
                TlsError::Pem {
                    key: "client_ca_file",
                    ..
                }
            ),
            "{err:?}"
        );
        write("ca.pem", &cert.pem());
        assert!(acceptor(&tls(d, true)).map(|a| a.1).unwrap_or(false));
        // The key never appears in an error message.
        write(
            "key.pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        let err = load_err(&tls(d, false));
        assert!(!format!("{err:?} {err}").contains("AAAA"), "{err:?}");
    }
}
