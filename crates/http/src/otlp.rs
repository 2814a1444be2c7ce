//! OTLP/HTTP metrics receiver (`POST /v1/metrics`, `POST /api/v1/otlp/v1/metrics`),
//! protobuf or JSON, optionally gzip-compressed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sextant_ingest::otlp;
use sextant_ingest::DecodeError;

use crate::api::now_ms;
use crate::AppState;

fn reply(json: bool, status: StatusCode, body: Vec<u8>) -> Response {
    let ct = if json {
        "application/json"
    } else {
        "application/x-protobuf"
    };
    (status, [("content-type", ct)], body).into_response()
}

fn failure(json: bool, status: StatusCode, msg: String) -> Response {
    // OTLP errors carry a google.rpc.Status; its message is what clients log.
    if json {
        let body = serde_json::json!({"code": 3, "message": msg}).to_string().into_bytes();
        return reply(true, status, body);
    }
    let mut b = Vec::new();
    // google.rpc.Status { int32 code = 1; string message = 2; }
    b.push(0x08);
    b.push(3);
    b.push(0x12);
    let m = msg.as_bytes();
    let mut n = m.len();
    while n >= 0x80 {
        b.push((n as u8) | 0x80);
        n >>= 7;
    }
    b.push(n as u8);
    b.extend_from_slice(m);
    reply(false, status, b)
}

pub async fn otlp_metrics(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-protobuf");
    let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let json = match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => false,
        "application/json" => true,
        _ => {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content type {ct:?}: expected application/x-protobuf or application/json"),
            )
                .into_response()
        }
    };
    let limit = st.cfg.ingest.max_body_bytes;
    let raw = match headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_ascii_lowercase())
    {
        None => body.to_vec(),
        Some(e) if e.is_empty() || e == "identity" => body.to_vec(),
        Some(e) if e == "gzip" => match otlp::gunzip(&body, limit) {
            Ok(b) => b,
            Err(e @ DecodeError::TooLarge { .. }) => {
                return failure(json, StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            Err(e) => return failure(json, StatusCode::BAD_REQUEST, e.to_string()),
        },
        Some(e) => {
            return failure(
                json,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content encoding {e:?}: expected gzip"),
            )
        }
    };
    let decoded = if json {
        otlp::json::decode(&raw)
    } else {
        otlp::decode_protobuf(&raw)
    };
    let req = match decoded {
        Ok(r) => r,
        Err(e) => {
            st.metrics.write_decode_errors.fetch_add(1, Ordering::Relaxed);
            return failure(
                json,
                StatusCode::BAD_REQUEST,
                format!("cannot decode OTLP metrics request: {e}"),
            );
        }
    };
    match ingest(&st, req).await {
        Ok((rejected, msg)) => {
            let body = if json {
                otlp::json::response(rejected, &msg)
            } else {
                otlp::response(rejected, &msg)
            };
            reply(json, StatusCode::OK, body)
        }
        Err(e) => failure(json, StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// Translates one request, commits its series and returns how many data points
/// were rejected and why; `Err` is a storage failure the client should retry.
pub(crate) async fn ingest(
    st: &Arc<AppState>,
    req: otlp::pb::ExportMetricsServiceRequest,
) -> Result<(usize, String), String> {
    let batch = {
        let mut delta = st.otlp_delta.lock();
        otlp::translate(&req, &st.cfg.otlp, &mut delta, &st.cfg.ingest, now_ms())
    };
    st.metrics
        .write_samples
        .fetch_add(batch.samples as u64, Ordering::Relaxed);
    st.record_metadata(batch.metadata.clone());
    let mut rejected = batch.samples_rejected;
    let mut problems: Vec<String> = batch
        .invalid
        .iter()
        .take(5)
        .map(|e| format!("{}: {}", e.series, e.reason))
        .collect();
    let series = batch.series;
    let st2 = st.clone();
    let committed = tokio::task::spawn_blocking(move || {
        if series.is_empty() {
            return Ok(sextant_storage::CommitReport::default());
        }
        let mut app = st2.db.appender();
        for (l, s) in series {
            app.append_series(l, s);
        }
        app.commit()
    })
    .await;
    match committed {
        Ok(Ok(rep)) => {
            rejected += rep.rejected_count;
            problems.extend(
                rep.rejected
                    .iter()
                    .take(5)
                    .map(|r| format!("{} at {}: {:?}", r.labels, r.t, r.reason)),
            );
        }
        Ok(Err(e)) => return Err(format!("storage error: {e}")),
        Err(e) => return Err(format!("write task failed: {e}")),
    }
    Ok((rejected, problems.join("; ")))
}
