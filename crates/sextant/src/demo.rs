//! The demo fleet inside the server (`sextant serve --demo`) and the HTTP
//! endpoints that inject incidents into it on command.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sextant_fleet::demo::Demo;
use sextant_fleet::{Incident, IncidentKind};

/// `/api/v1/demo` (what is running) and `/api/v1/demo/incidents`
/// (GET lists, POST injects, DELETE ends every active one).
pub fn router(demo: Arc<Demo>) -> Router {
    Router::new()
        .route("/api/v1/demo", get(info))
        .route("/api/v1/demo/incidents", get(list).post(inject).delete(end_all))
        .with_state(demo)
}

fn incident_json(demo: &Demo, x: &Incident) -> Value {
    let now = sextant_fleet::demo::now_ms();
    json!({
        "kind": x.kind.name(),
        "target": x.target,
        "start": x.start_ms as f64 / 1000.0,
        "end": x.end_ms.map(|e| e as f64 / 1000.0),
        "active": x.active(now),
        "description": demo.fleet.describe(x),
    })
}

async fn info(State(demo): State<Arc<Demo>>) -> Response {
    let s = &demo.stats;
    let last_error = s.last_error.read().ok().and_then(|g| g.clone());
    Json(json!({
        "status": "success",
        "data": {
            "series": demo.fleet.series.len(),
            "replicas": demo.fleet.replicas.len(),
            "interval_seconds": demo.config.interval_ms as f64 / 1000.0,
            "backfill_seconds": demo.config.backfill_ms as f64 / 1000.0,
            "backfilled": demo.backfilled(),
            "samples_sent": s.samples.load(Ordering::Relaxed),
            "requests_sent": s.requests.load(Ordering::Relaxed),
            "requests_failed": s.failed_requests.load(Ordering::Relaxed),
            "newest": s.newest_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            "last_error": last_error,
            "incident_kinds": IncidentKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>(),
        }
    }))
    .into_response()
}

async fn list(State(demo): State<Arc<Demo>>) -> Response {
    let xs: Vec<Value> = demo.incidents().iter().map(|x| incident_json(&demo, x)).collect();
    Json(json!({"status": "success", "data": xs})).into_response()
}

#[derive(Deserialize)]
struct InjectParams {
    kind: String,
    #[serde(default)]
    target: Option<usize>,
    #[serde(default)]
    duration: Option<String>,
}

fn bad_request(msg: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"status": "error", "errorType": "bad_data", "error": msg})),
    )
        .into_response()
}

async fn inject(State(demo): State<Arc<Demo>>, Query(p): Query<InjectParams>) -> Response {
    let Some(kind) = IncidentKind::parse(&p.kind) else {
        let names: Vec<&str> = IncidentKind::ALL.iter().map(|k| k.name()).collect();
        return bad_request(format!(
            "unknown incident kind {:?}; known: {}",
            p.kind,
            names.join(", ")
        ));
    };
    let duration = match p.duration.as_deref().filter(|d| !d.is_empty()) {
        None => None,
        Some(d) => match sextant_promql::promqltest::parse_duration(d) {
            Some(ms) if ms > 0 => Some(ms),
            _ => return bad_request(format!("duration {d:?} is not a positive duration such as 10m")),
        },
    };
    let x = demo.inject(kind, p.target.unwrap_or(0), duration);
    tracing::info!(target: "sextant", "demo incident: {}", demo.fleet.describe(&x));
    Json(json!({"status": "success", "data": incident_json(&demo, &x)})).into_response()
}

async fn end_all(State(demo): State<Arc<Demo>>) -> Response {
    let n = demo.end_all();
    Json(json!({"status": "success", "data": {"ended": n}})).into_response()
}
