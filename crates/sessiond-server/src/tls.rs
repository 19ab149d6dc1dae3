//! HTTPS and client certificates (docs/DESIGN.md §6.4).
//!
//! With `[tls]` configured, [`serve`] replaces `axum::serve`: a tokio-rustls accept loop that
//! serves each connection with hyper's HTTP/1.1 server. With `client_ca_file`, rustls's
//! `WebPkiClientVerifier` checks client certificates against that CA at the handshake (an
//! expired, not-yet-valid or unknown-CA certificate is refused there, and so is a missing one
//! when `require_client_cert = true`).
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

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sessiond::{SessionService, Timestamp};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::config::{self, ClientCerts};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
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

/// Serves `router` over TLS until `shutdown` resolves, then stops accepting, asks every
/// connection to finish its in-flight request, and waits for them.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    service: SessionService,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    connections.spawn(connection(
                        tcp,
                        peer,
                        acceptor.clone(),
                        router.clone(),
                        service.clone(),
                        stopping.clone(),
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    service: SessionService,
    mut stopping: watch::Receiver<bool>,
) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let client = match stream.get_ref().1.peer_certificates() {
        None => None,
        Some(chain) => match sessiond::cert::chain_expiry(chain.iter().map(|c| c.as_ref())) {
            Ok(not_after) => Some(ClientCertificate { not_after }),
            Err(e) => {
                // rustls verified it, so this is not expected; without a deadline, refuse.
                tracing::warn!(%peer, error = %e, "client certificate has no readable notAfter; closing the connection");
                return;
            }
        },
    };
    if let Some(c) = client {
        tracing::debug!(%peer, not_after = %c.not_after, "client certificate verified");
    }
    let svc = router.map_request(move |mut req: axum::http::Request<Incoming>| {
        if let Some(c) = client {
            req.extensions_mut().insert(c);
        }
        // As `into_make_service_with_connect_info` does on the plain listener.
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        req
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
    tokio::pin!(conn);
    let expiry = async {
        match client {
            Some(c) => until(&service, c.not_after).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expiry);
    let mut draining = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut expiry => {
                tracing::info!(%peer, "client certificate expired; closing the connection");
                // No further request is read; the one in flight (a stream sending its
                // `expired` event) may finish within the grace. Then dropping `conn` drops the
                // TLS stream and closes the socket, whatever is still being written.
                conn.as_mut().graceful_shutdown();
                if tokio::time::timeout(EXPIRY_GRACE, conn.as_mut()).await.is_err() {
                    tracing::debug!(%peer, "response still open after the grace; dropping it");
                }
                return;
            }
            changed = stopping.changed(), if !draining => {
                draining = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
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
