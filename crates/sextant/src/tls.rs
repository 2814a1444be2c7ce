//! TLS for the HTTP and OTLP gRPC listeners (rustls), with certificates read
//! from PEM files and picked up again when the files change, so a renewed
//! certificate needs no restart.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often, at most, the certificate files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// A client has this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the certificate chain and its private key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Reads and checks a certificate chain and its key. Errors name the file and
/// the problem; key material never appears in them.
pub fn load_certified_key(files: &TlsFiles) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| anyhow::anyhow!("TLS certificate file {}: {e}", files.cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("TLS certificate file {}: {e}", files.cert_file.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "TLS certificate file {}: no PEM CERTIFICATE block found",
            files.cert_file.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| {
        anyhow::anyhow!(
            "TLS key file {}: no usable private key ({e}); PKCS#8, PKCS#1 and SEC1 PEM keys are accepted",
            files.key_file.display()
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let ck = CertifiedKey::from_der(certs, key, &provider).map_err(|e| {
        anyhow::anyhow!(
            "TLS: the key in {} does not fit the certificate in {} ({e})",
            files.key_file.display(),
            files.cert_file.display()
        )
    })?;
    Ok(ck)
}

fn mtimes(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(&files.cert_file), m(&files.key_file))
}

struct Current {
    key: Arc<CertifiedKey>,
    mtimes: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

/// Serves the certificate of [`TlsFiles`], reloading it when either file's
/// modification time changes; a reload that fails keeps the previous
/// certificate and logs why.
pub struct ReloadingCert {
    files: TlsFiles,
    current: Mutex<Current>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert").field("files", &self.files).finish()
    }
}

impl ReloadingCert {
    pub fn new(files: TlsFiles) -> anyhow::Result<ReloadingCert> {
        let mtimes = mtimes(&files);
        let key = Arc::new(load_certified_key(&files)?);
        Ok(ReloadingCert {
            files,
            current: Mutex::new(Current {
                key,
                mtimes,
                checked: Instant::now(),
            }),
        })
    }

    fn get(&self) -> Arc<CertifiedKey> {
        let mut cur = self.current.lock();
        if cur.checked.elapsed() >= RELOAD_CHECK {
            cur.checked = Instant::now();
            let now = mtimes(&self.files);
            if now != cur.mtimes {
                cur.mtimes = now;
                match load_certified_key(&self.files) {
                    Ok(k) => {
                        tracing::info!(target: "sextant", "TLS certificate reloaded from {}", self.files.cert_file.display());
                        cur.key = Arc::new(k);
                    }
                    Err(e) => {
                        tracing::warn!(target: "sextant", "TLS certificate not reloaded, the previous one stays: {e:#}")
                    }
                }
            }
        }
        cur.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// A TLS acceptor for the given files, offering HTTP/2 and HTTP/1.1 (or only
/// HTTP/2, for gRPC).
pub fn acceptor(files: &TlsFiles, http1: bool) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let resolver = Arc::new(ReloadingCert::new(files.clone())?);
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = if http1 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec()]
    };
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Serves `app` over TLS on `listener` until `shutdown` completes, then lets
/// open connections finish (at most 10 s).
pub async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tower_service::Service as _;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(target: "sextant", "accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(target: "sextant", "TLS handshake with {peer} failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(target: "sextant", "TLS handshake with {peer} timed out");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo::<SocketAddr>(peer));
                app.clone().call(req)
            });
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(target: "sextant", "connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!(target: "sextant", "closing connections still open after 10 s");
        }
    }
}
