//! Sextant's HTTP server: the Prometheus HTTP API, the remote-write receiver,
//! admin endpoints and self-monitoring, as an axum router over a [`Db`].
//!
//! Architecture invariant: this crate owns every JSON wire shape; storage and
//! PromQL types are converted here, at the edge. It knows nothing of chunk or
//! block formats.

mod api;
pub mod auth;
mod error;
pub mod grpc;
pub mod json;
pub mod metrics;
pub(crate) mod otlp;
pub mod params;
pub mod range_cache;
mod series_cache;
mod ui;
mod write;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use parking_lot::RwLock;
use sextant_ingest::{Limits, Metadata};
use sextant_promql::{Engine, EngineOptions};
use sextant_storage::Db;
use tokio::sync::Semaphore;

pub use error::{ApiError, ErrorType};

/// Server settings beyond the store's own.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub engine: EngineOptions,
    /// Queries evaluated at once; more wait for a slot.
    pub max_concurrent_queries: usize,
    /// Limits for write requests.
    pub ingest: Limits,
    /// Largest compressed request body (bytes).
    pub max_request_bytes: usize,
    /// Decompressed remote-write bytes being decoded at once, across all
    /// requests; a request that finds no room waits for it. A request larger
    /// than the whole budget is decoded alone.
    pub write_decode_bytes: usize,
    /// Most points a range query may return per series.
    pub max_points_per_series: i64,
    /// Name/value pairs reported by `/api/v1/status/flags` (no secrets).
    pub flags: Vec<(String, String)>,
    /// Retention as reported by runtime info, e.g. `15d`.
    pub retention: String,
    /// How OTLP metrics are translated to Prometheus series.
    pub otlp: sextant_ingest::otlp::OtlpConfig,
    /// Credentials per endpoint class; empty classes are open.
    pub auth: auth::AuthConfig,
    /// Range-query steps at least this old are cached; `None` disables it.
    pub query_cache_freshness_ms: Option<i64>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            engine: EngineOptions::default(),
            max_concurrent_queries: 20,
            ingest: Limits::default(),
            max_request_bytes: 32 << 20,
            write_decode_bytes: 64 << 20,
            max_points_per_series: 11_000,
            flags: Vec::new(),
            retention: "15d".into(),
            otlp: sextant_ingest::otlp::OtlpConfig::default(),
            auth: auth::AuthConfig::default(),
            query_cache_freshness_ms: Some(10 * 60_000),
        }
    }
}

/// Shared state of the server.
pub struct AppState {
    pub db: Arc<Db>,
    pub cfg: ServerConfig,
    pub engine: Engine,
    pub metadata: RwLock<HashMap<String, Vec<Metadata>>>,
    pub query_slots: Arc<Semaphore>,
    /// Room for decompressed remote-write bodies, in KiB.
    pub(crate) write_decode: Semaphore,
    pub metrics: metrics::HttpMetrics,
    pub started: SystemTime,
    pub ready: AtomicBool,
    /// Running totals that turn OTLP delta sums and histograms into cumulative ones.
    pub otlp_delta: parking_lot::Mutex<sextant_ingest::otlp::DeltaState>,
    /// Series references of remote-write senders, by their encoded labels.
    pub(crate) series_cache: series_cache::SeriesCache,
    /// Frozen steps of recent range queries.
    pub range_cache: range_cache::RangeCache,
}

/// The decode budget in KiB permits: at least one, at most what a semaphore holds.
fn decode_permits(bytes: usize) -> usize {
    (bytes / 1024).clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize))
}

impl AppState {
    /// Waits for room to decode a body of `bytes` decompressed bytes; the
    /// room is given back when the permit drops. Counts the requests that
    /// had to wait.
    pub(crate) async fn decode_room(&self, bytes: usize) -> tokio::sync::SemaphorePermit<'_> {
        let total = decode_permits(self.cfg.write_decode_bytes);
        let want = bytes.div_ceil(1024).clamp(1, total) as u32;
        if let Ok(p) = self.write_decode.try_acquire_many(want) {
            return p;
        }
        self.metrics
            .write_decode_waits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.write_decode
            .acquire_many(want)
            .await
            .expect("the decode budget is never closed")
    }

    pub fn new(db: Arc<Db>, cfg: ServerConfig) -> Arc<Self> {
        let range_cache = range_cache::RangeCache::new(cfg.query_cache_freshness_ms, 5_000_000);
        Arc::new(AppState {
            engine: Engine::new(cfg.engine.clone()),
            query_slots: Arc::new(Semaphore::new(cfg.max_concurrent_queries.max(1))),
            write_decode: Semaphore::new(decode_permits(cfg.write_decode_bytes)),
            db,
            cfg,
            metadata: RwLock::new(HashMap::new()),
            metrics: metrics::HttpMetrics::default(),
            started: SystemTime::now(),
            ready: AtomicBool::new(true),
            otlp_delta: parking_lot::Mutex::new(Default::default()),
            series_cache: series_cache::SeriesCache::new(4 << 20),
            range_cache,
        })
    }

    /// Remembers metadata announced by writers (latest wins per metric and type).
    pub fn record_metadata(&self, md: Vec<Metadata>) {
        if md.is_empty() {
            return;
        }
        let mut m = self.metadata.write();
        for x in md {
            let e = m.entry(x.metric.clone()).or_default();
            if let Some(old) = e.iter_mut().find(|o| o.kind == x.kind && o.unit == x.unit) {
                *old = x;
            } else {
                e.push(x);
            }
        }
    }
}

/// Refuses a body whose declared length is over the limit before reading any
/// of it.
async fn declared_length(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit as u64) {
        return (
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            [(axum::http::header::CONNECTION, "close")],
            format!("request body of {n} bytes is over the limit of {limit} bytes (--max-request-bytes)"),
        )
            .into_response();
    }
    next.run(req).await
}

async fn track(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let handler = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let started = Instant::now();
    let resp = next.run(req).await;
    st.metrics.count_request(&handler, resp.status().as_u16());
    tracing::debug!(target: "sextant::http", handler, status = resp.status().as_u16(), micros = started.elapsed().as_micros() as u64);
    resp
}

/// The full router: API, remote write, admin, health and `/metrics`.
pub fn router(state: Arc<AppState>) -> Router {
    router_with(state, Router::new())
}

/// The full router with `extra` routes, which get the same authentication,
/// limits and request metrics as the built-in ones.
pub fn router_with(state: Arc<AppState>, extra: Router) -> Router {
    let limit = state.cfg.max_request_bytes;
    let auth = Arc::new(state.cfg.auth.clone());
    Router::new()
        .route("/api/v1/query", get(api::query).post(api::query))
        .route("/api/v1/query_range", get(api::query_range).post(api::query_range))
        .route(
            "/api/v1/series",
            get(api::series).post(api::series).delete(api::not_allowed),
        )
        .route("/api/v1/labels", get(api::labels).post(api::labels))
        .route("/api/v1/label/{name}/values", get(api::label_values))
        .route("/api/v1/metadata", get(api::metadata))
        .route("/api/v1/query_exemplars", get(api::exemplars).post(api::exemplars))
        .route("/api/v1/format_query", get(api::format_query).post(api::format_query))
        .route(
            "/api/v1/parse_query",
            get(api::parse_query_tree).post(api::parse_query_tree),
        )
        .route("/api/v1/status/buildinfo", get(api::buildinfo))
        .route("/api/v1/status/tsdb", get(api::tsdb_status))
        .route("/api/v1/status/flags", get(api::flags))
        .route("/api/v1/status/runtimeinfo", get(api::runtimeinfo))
        .route("/api/v1/status/config", get(api::config))
        .route("/api/v1/rules", get(api::rules))
        .route("/api/v1/alerts", get(api::alerts))
        .route("/api/v1/targets", get(api::targets))
        .route("/api/v1/alertmanagers", get(api::alertmanagers))
        .route(
            "/api/v1/admin/tsdb/delete_series",
            post(api::delete_series).put(api::delete_series),
        )
        .route(
            "/api/v1/admin/tsdb/clean_tombstones",
            post(api::clean_tombstones).put(api::clean_tombstones),
        )
        .route("/api/v1/admin/tsdb/flush", post(api::flush).put(api::flush))
        .route("/api/v1/admin/tsdb/snapshot", post(api::snapshot).put(api::snapshot))
        .route("/api/v1/write", post(write::remote_write))
        .route("/v1/metrics", post(otlp::otlp_metrics))
        .route("/api/v1/otlp/v1/metrics", post(otlp::otlp_metrics))
        .route("/-/healthy", get(api::healthy).head(api::healthy))
        .route("/-/ready", get(api::ready).head(api::ready))
        .route("/metrics", get(api::self_metrics))
        .merge(ui::router())
        .with_state(state.clone())
        .merge(extra)
        .layer(middleware::from_fn_with_state(limit, declared_length))
        .layer(middleware::from_fn_with_state(auth, auth::check))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(limit))
}
