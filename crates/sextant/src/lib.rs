//! Sextant as a library: run the full server over a data directory, or start
//! an in-process [`TestServer`] for integration tests.
//!
//! ```no_run
//! let server = sextant::TestServer::start().expect("server");
//! // Point a Prometheus client, remote-write sender or HTTP client at it:
//! println!("{}/api/v1/query?query=up", server.url());
//! ```

pub mod config;
pub mod demo;
pub mod memory;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use sextant_http::{AppState, ServerConfig};
use sextant_storage::{Db, Options};

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: String,
    /// OTLP gRPC listener; `None` disables it.
    pub otlp_grpc_listen: Option<String>,
    pub data_dir: PathBuf,
    pub storage: Options,
    pub server: ServerConfig,
    /// Run the demo fleet into this server.
    pub demo: Option<config::DemoSettings>,
    /// Serve HTTPS (and gRPC over TLS) with this certificate.
    pub tls: Option<tls::TlsFiles>,
}

/// Opens the store, logging what recovery did.
pub fn open_store(data_dir: &std::path::Path, storage: Options) -> anyhow::Result<Arc<Db>> {
    tracing::info!(target: "sextant", "opening store in {}", data_dir.display());
    let (db, rep) = Db::open_with_report(data_dir, storage)
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    for q in &rep.quarantined {
        tracing::error!(target: "sextant", "{q}");
    }
    for r in &rep.wal.repairs {
        tracing::warn!(target: "sextant", "WAL repair: {r}");
    }
    tracing::info!(
        target: "sextant",
        blocks = rep.blocks,
        wal_segments = rep.wal.segments,
        wal_bytes = rep.wal.bytes,
        wal_records = rep.wal.records,
        replayed_series = rep.replayed_series,
        replayed_samples = rep.replayed_samples,
        checkpoint = ?rep.wal.checkpoint,
        elapsed_ms = rep.elapsed.as_millis() as u64,
        "store open"
    );
    Ok(Arc::new(db))
}

/// Serves on an already-bound listener until `shutdown` completes, then
/// closes the store (WAL synced; the head is replayable).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    grpc: Option<tokio::net::TcpListener>,
    db: Arc<Db>,
    server: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(listener, grpc, db, server, axum::Router::new(), shutdown).await
}

/// Like [`serve_on`], with extra routes merged into the HTTP router.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    grpc: Option<tokio::net::TcpListener>,
    db: Arc<Db>,
    server: ServerConfig,
    extra: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_full(listener, grpc, db, server, extra, None, shutdown).await
}

/// Like [`serve_with`], over TLS when `tls` is given (both listeners).
pub async fn serve_full(
    listener: tokio::net::TcpListener,
    grpc: Option<tokio::net::TcpListener>,
    db: Arc<Db>,
    server: ServerConfig,
    extra: axum::Router,
    tls: Option<tls::TlsFiles>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_inner(listener, grpc, None, db, server, extra, tls, shutdown).await
}

/// `internal`, if given, serves the same router in plain HTTP (a loopback
/// listener for the in-process demo writer when the public one is TLS).
#[allow(clippy::too_many_arguments)]
async fn serve_inner(
    listener: tokio::net::TcpListener,
    grpc: Option<tokio::net::TcpListener>,
    internal: Option<tokio::net::TcpListener>,
    db: Arc<Db>,
    server: ServerConfig,
    extra: axum::Router,
    tls: Option<tls::TlsFiles>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let acceptors = match &tls {
        Some(f) => Some((tls::acceptor(f, true)?, tls::acceptor(f, false)?)),
        None => None,
    };
    let state = AppState::new(db.clone(), server);
    let app = sextant_http::router_with(state.clone(), extra);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Every listener stops when `stop_tx` says so.
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let grpc_task = grpc.map(|l| {
        let stop = until_stopped(stop_rx.clone());
        let router = sextant_http::grpc::router(state.clone());
        let acceptor = acceptors.as_ref().map(|a| a.1.clone());
        tokio::spawn(async move {
            match acceptor {
                Some(a) => tls::serve(l, a, router, stop).await,
                None => {
                    if let Err(e) = axum::serve(l, router).with_graceful_shutdown(stop).await {
                        tracing::error!(target: "sextant", "OTLP gRPC listener failed: {e}");
                    }
                }
            }
        })
    });
    let internal_task = internal.map(|l| {
        let stop = until_stopped(stop_rx.clone());
        let svc = app.clone().into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, svc).with_graceful_shutdown(stop).await {
                tracing::error!(target: "sextant", "the demo's loopback listener failed: {e}");
            }
        })
    });
    let stop = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    match acceptors {
        Some((a, _)) => tls::serve(listener, a, app, stop).await,
        None => axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(stop)
            .await
            .context("serving HTTP")?,
    }
    for t in grpc_task.into_iter().chain(internal_task) {
        let _ = t.await;
    }
    tracing::info!(target: "sextant", "shutting down: syncing the WAL and stopping background work");
    db.close().context("closing the store")?;
    Ok(())
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(mut opts: ServeOptions) -> anyhow::Result<()> {
    if let Some(f) = &opts.tls {
        // Fail before opening the store when the certificate is unusable.
        tls::load_certified_key(f)?;
    }
    let db = open_store(&opts.data_dir, opts.storage.clone())?;
    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    tracing::info!(target: "sextant", "listening on {scheme}://{}", listener.local_addr()?);
    let grpc = match &opts.otlp_grpc_listen {
        Some(a) => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("listening for OTLP gRPC on {a}"))?;
            tracing::info!(target: "sextant", "OTLP gRPC on {}", l.local_addr()?);
            Some(l)
        }
        None => None,
    };
    let mut extra = axum::Router::new();
    let mut running_demo = None;
    let mut internal = None;
    if let Some(d) = &opts.demo {
        // The demo writes through the public ingest path. With TLS it uses a
        // plain-HTTP listener on a loopback port of its own (same router, same
        // authentication); with write authentication, a random token made at
        // start that only this process knows.
        let mut headers = Vec::new();
        if !opts.server.auth.write.is_empty() {
            let token = random_token()?;
            opts.server.auth.write.bearer_tokens.push(token.clone());
            headers.push(("Authorization".to_string(), format!("Bearer {token}")));
        }
        let port = if opts.tls.is_some() {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding the demo's loopback listener")?;
            let port = l.local_addr()?.port();
            internal = Some(l);
            port
        } else {
            listener.local_addr()?.port()
        };
        let demo = Arc::new(start_demo(
            d,
            format!("http://127.0.0.1:{port}/api/v1/write"),
            2,
            headers,
            &db,
        )?);
        extra = demo::router(demo.clone());
        running_demo = Some(demo);
    }
    let r = serve_inner(
        listener,
        grpc,
        internal,
        db,
        opts.server,
        extra,
        opts.tls,
        shutdown_signal(),
    )
    .await;
    drop(running_demo);
    r
}

fn random_token() -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut b = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom for the demo's write token")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Starts the demo fleet writing to `url`, resuming after what `db` already
/// holds so that a restarted demo never writes out of order.
pub fn start_demo(
    d: &config::DemoSettings,
    url: String,
    connections: usize,
    headers: Vec<(String, String)>,
    db: &Db,
) -> anyhow::Result<sextant_fleet::demo::Demo> {
    let now = sextant_fleet::demo::now_ms();
    let schedule = sextant_fleet::incident::parse_schedule(&d.schedule, now).map_err(|e| anyhow::anyhow!(e))?;
    let newest = db.max_time();
    let cfg = sextant_fleet::demo::DemoConfig {
        url,
        spec: sextant_fleet::FleetSpec {
            seed: d.seed,
            ..sextant_fleet::FleetSpec::demo(d.series)
        },
        backfill_ms: d.backfill_ms,
        interval_ms: d.interval_ms,
        connections,
        resume_after_ms: (newest > i64::MIN && newest < i64::MAX).then_some(newest),
        headers,
        ..Default::default()
    };
    let demo = sextant_fleet::demo::Demo::start(cfg, schedule).map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!(
        target: "sextant",
        series = demo.fleet.series.len(),
        replicas = demo.fleet.replicas.len(),
        backfill = ?std::time::Duration::from_millis(d.backfill_ms as u64),
        interval_ms = d.interval_ms,
        "demo fleet started"
    );
    for x in demo.incidents() {
        tracing::info!(target: "sextant", "demo incident scheduled: {} ({})", demo.fleet.describe(&x), x.kind.name());
    }
    Ok(demo)
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!(target: "sextant", "received SIGINT"),
        _ = term => tracing::info!(target: "sextant", "received SIGTERM"),
    }
}

/// A full Sextant server running in this process on an ephemeral loopback
/// port over a temporary directory; stopped and removed when dropped.
pub struct TestServer {
    url: String,
    addr: SocketAddr,
    grpc_addr: SocketAddr,
    db: Arc<Db>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    demo: Option<Arc<sextant_fleet::demo::Demo>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server with default settings.
    pub fn start() -> anyhow::Result<TestServer> {
        Self::start_with(
            Options {
                fsync: sextant_storage::FsyncPolicy::Never,
                ..Options::default()
            },
            ServerConfig::default(),
        )
    }

    /// Starts a server with the given store and server settings.
    pub fn start_with(storage: Options, server: ServerConfig) -> anyhow::Result<TestServer> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let mut s = Self::start_in(dir.path().to_path_buf(), storage, server)?;
        s._dir = Some(dir);
        Ok(s)
    }

    /// Starts a server with default settings that runs the demo fleet, with
    /// its incident endpoints, as `sextant serve --demo` does.
    pub fn start_demo(demo: config::DemoSettings) -> anyhow::Result<TestServer> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let storage = Options {
            fsync: sextant_storage::FsyncPolicy::Never,
            ..Options::default()
        };
        let mut s = Self::launch(
            dir.path().to_path_buf(),
            storage,
            ServerConfig::default(),
            Some(demo),
            None,
        )?;
        s._dir = Some(dir);
        Ok(s)
    }

    /// Starts a server over an existing directory (kept when dropped).
    pub fn start_in(data_dir: PathBuf, storage: Options, server: ServerConfig) -> anyhow::Result<TestServer> {
        Self::launch(data_dir, storage, server, None, None)
    }

    /// Starts a server that speaks only HTTPS (and gRPC over TLS) with the
    /// given certificate; [`TestServer::url`] is then `https://127.0.0.1:…`.
    pub fn start_tls(server: ServerConfig, tls: tls::TlsFiles) -> anyhow::Result<TestServer> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let storage = Options {
            fsync: sextant_storage::FsyncPolicy::Never,
            ..Options::default()
        };
        let mut s = Self::launch(dir.path().to_path_buf(), storage, server, None, Some(tls))?;
        s._dir = Some(dir);
        Ok(s)
    }

    fn launch(
        data_dir: PathBuf,
        storage: Options,
        server: ServerConfig,
        demo: Option<config::DemoSettings>,
        tls: Option<tls::TlsFiles>,
    ) -> anyhow::Result<TestServer> {
        if let Some(f) = &tls {
            tls::load_certified_key(f)?;
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let db = open_store(&data_dir, storage)?;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let demo = match demo {
            Some(d) => Some(Arc::new(start_demo(
                &d,
                format!("http://{addr}/api/v1/write"),
                2,
                Vec::new(),
                &db,
            )?)),
            None => None,
        };
        let extra = demo.clone().map(demo::router).unwrap_or_default();
        let std_grpc = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        std_grpc.set_nonblocking(true)?;
        let grpc_addr = std_grpc.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let db2 = db.clone();
        let thread = std::thread::Builder::new()
            .name("sextant-test-server".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("test server runtime: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("test server listener: {e}");
                            return;
                        }
                    };
                    let grpc = tokio::net::TcpListener::from_std(std_grpc).ok();
                    if let Err(e) = serve_full(listener, grpc, db2, server, extra, tls, async {
                        let _ = rx.await;
                    })
                    .await
                    {
                        eprintln!("test server: {e:#}");
                    }
                });
            })?;
        Ok(TestServer {
            url: format!("{scheme}://{addr}"),
            addr,
            grpc_addr,
            db,
            stop: Some(tx),
            thread: Some(thread),
            demo,
            _dir: None,
        })
    }

    /// The demo fleet, when started with [`TestServer::start_demo`].
    pub fn demo(&self) -> Option<&Arc<sextant_fleet::demo::Demo>> {
        self.demo.as_ref()
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (`https://` with TLS).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Address of the OTLP gRPC listener.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The embedded store, for direct appends and reads in tests.
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // The demo stops writing before the server stops taking writes.
        if let Some(d) = self.demo.take() {
            d.halt();
        }
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
