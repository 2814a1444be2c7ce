//! The remote-write receiver (`POST /api/v1/write`), versions 1.0 and 2.0.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sextant_ingest::remote_write::{self, Protocol};
use sextant_ingest::rw_scan;
use sextant_ingest::{DecodeError, WriteBatch};
use sextant_model::Sample;
use sextant_storage::{CommitReport, SampleRejection, SeriesHandle};

use crate::api::now_ms;
use crate::AppState;

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, [("content-type", "text/plain; charset=utf-8")], msg.into()).into_response()
}

fn rejection_text(r: &sextant_storage::Rejected) -> String {
    match &r.reason {
        SampleRejection::OutOfOrder { newest } => {
            format!(
                "out of order sample for series {} at timestamp {} (newest sample is at {newest})",
                r.labels, r.t
            )
        }
        SampleRejection::TooOld { min_valid } => {
            format!(
                "sample too old for series {} at timestamp {} (data before {min_valid} is already persisted)",
                r.labels, r.t
            )
        }
        SampleRejection::DuplicateTimestamp { existing } => format!(
            "duplicate sample for series {} at timestamp {} with a different value (stored value {existing})",
            r.labels, r.t
        ),
        SampleRejection::SeriesLimit { limit, per_metric: true } => format!(
            "series limit reached: new series {} rejected, metric {:?} already has {limit} series (--max-series-per-metric)",
            r.labels,
            r.labels.metric_name()
        ),
        SampleRejection::SeriesLimit { limit, per_metric: false } => format!(
            "series limit reached: new series {} rejected, the store already holds {limit} series (--max-series)",
            r.labels
        ),
    }
}

/// Turns a storage failure into a status a sender retries: 503 for an
/// unwritable store (full disk, failed fsync), 500 otherwise.
fn storage_failure(e: &sextant_storage::Error) -> Response {
    let full = matches!(e, sextant_storage::Error::Io(io) if io.raw_os_error() == Some(28) || io.kind() == std::io::ErrorKind::StorageFull);
    match e {
        _ if full => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("storage is full, write rejected: {e}"),
        ),
        sextant_storage::Error::Poisoned(_) | sextant_storage::Error::Closed => {
            text(StatusCode::SERVICE_UNAVAILABLE, format!("storage unavailable: {e}"))
        }
        _ => text(StatusCode::INTERNAL_SERVER_ERROR, format!("storage error: {e}")),
    }
}

/// A request ready to append: series known by reference, and the rest
/// decoded in full.
#[derive(Default)]
struct Prepared {
    batch: WriteBatch,
    /// Per series of `batch`: its label key and keyed check hash, when it
    /// should be cached.
    keys: Vec<Option<(u64, u64)>>,
    /// Known series and their samples' range in `samples`, which is the
    /// scan's whole sample list.
    known: Vec<(SeriesHandle, std::ops::Range<usize>)>,
    samples: Vec<Sample>,
}

/// Scans a 1.0 request; series whose encoded labels are in the cache skip
/// decoding, the others are decoded and validated in full.
fn prepare_v1(st: &AppState, raw: &[u8], limits: &sextant_ingest::Limits, now: i64) -> Result<Prepared, DecodeError> {
    let Ok(scan) = rw_scan::scan_v1(raw) else {
        // The scan knows only the wire types remote-write senders use; the
        // full decoder also skips deprecated group fields, and gives the error.
        let batch = remote_write::decode_v1(raw, limits, now)?;
        return Ok(Prepared {
            keys: vec![None; batch.series.len()],
            batch,
            ..Default::default()
        });
    };
    let mut p = Prepared::default();
    for s in &scan.series {
        let samples = &scan.samples[s.samples.clone()];
        if s.plain && !samples.is_empty() {
            let key = rw_scan::label_key(s.labels);
            let check = st.series_cache.check(s.labels);
            if let Some(r) = st.series_cache.get(key, check) {
                if remote_write::check_samples(samples, limits, now).is_ok() {
                    // Its samples stay where the scan put them.
                    p.known.push((r, s.samples.clone()));
                    continue;
                }
            }
            let before = p.batch.series.len();
            remote_write::decode_v1_series_bytes(s.whole, limits, now, &mut p.batch)?;
            p.keys
                .extend((before..p.batch.series.len()).map(|_| Some((key, check))));
        } else {
            let before = p.batch.series.len();
            remote_write::decode_v1_series_bytes(s.whole, limits, now, &mut p.batch)?;
            p.keys.extend((before..p.batch.series.len()).map(|_| None));
        }
    }
    for m in &scan.metadata {
        remote_write::decode_v1_metadata_bytes(m, &mut p.batch)?;
    }
    if !p.known.is_empty() {
        p.samples = scan.samples;
    }
    Ok(p)
}

pub async fn remote_write(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    st.metrics.write_requests.fetch_add(1, Ordering::Relaxed);
    let resp = write_inner(&st, &headers, body).await;
    st.metrics.write_latency.observe(started.elapsed().as_secs_f64());
    resp
}

async fn write_inner(st: &Arc<AppState>, headers: &HeaderMap, body: Bytes) -> Response {
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok());
    let Some(proto) = remote_write::protocol_for(ct) else {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported content type {:?}: expected application/x-protobuf with proto=prometheus.WriteRequest or proto=io.prometheus.write.v2.Request",
                ct.unwrap_or("")
            ),
        );
    };
    if let Some(enc) = headers.get("content-encoding").and_then(|v| v.to_str().ok()) {
        if !enc.eq_ignore_ascii_case("snappy") {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content encoding {enc:?}: expected snappy"),
            );
        }
    }
    let limits = st.cfg.ingest.clone();
    // The decompressed body is the request's largest buffer: requests are
    // decoded only as far as the budget has room, so that many writers at
    // once cannot hold more than that. A declared length over the limit is
    // refused below, before any room is taken.
    let declared = remote_write::snappy_len(&body).unwrap_or(0);
    let room = if declared <= limits.max_body_bytes {
        Some(st.decode_room(declared).await)
    } else {
        None
    };
    let decoded: Result<Prepared, DecodeError> =
        remote_write::snappy_decode(&body, limits.max_body_bytes).and_then(|raw| {
            let now = now_ms();
            match proto {
                Protocol::V1 => prepare_v1(st, &raw, &limits, now),
                Protocol::V2 => remote_write::decode_v2(&raw, &limits, now).map(|batch| Prepared {
                    keys: vec![None; batch.series.len()],
                    batch,
                    ..Default::default()
                }),
            }
        });
    let prepared = match decoded {
        Ok(b) => b,
        Err(e) => {
            st.metrics.write_decode_errors.fetch_add(1, Ordering::Relaxed);
            let status = if matches!(e, DecodeError::TooLarge { .. }) {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return text(status, format!("cannot decode remote-write request: {e}"));
        }
    };
    // What the commit holds is a fraction of the body, which is freed now.
    drop(room);
    let Prepared {
        batch,
        known,
        samples: known_samples,
        keys,
    } = prepared;
    st.metrics.write_samples.fetch_add(
        (batch.samples + known.iter().map(|(_, r)| r.len()).sum::<usize>()) as u64,
        Ordering::Relaxed,
    );
    st.metrics
        .write_invalid_series
        .fetch_add(batch.invalid.len() as u64, Ordering::Relaxed);
    st.metrics
        .write_histograms_rejected
        .fetch_add(batch.histograms_rejected as u64, Ordering::Relaxed);
    let WriteBatch {
        series,
        metadata,
        invalid,
        exemplars,
        histograms_rejected,
        ..
    } = batch;
    st.record_metadata(metadata);
    let st2 = st.clone();
    let committed = tokio::task::spawn_blocking(move || -> Result<CommitReport, sextant_storage::Error> {
        if series.is_empty() && known.is_empty() {
            return Ok(CommitReport::default());
        }
        let mut app = st2.db.appender();
        app.append_handle_ranges(known_samples, &known);
        for ((l, samples), key) in series.into_iter().zip(keys) {
            // A new series of a v1 sender: remember its reference.
            if let Some((k, check)) = key {
                if let Ok(h) = st2.db.series_handle(&l) {
                    app.append_series(l, samples);
                    st2.series_cache.insert(k, check, h);
                    continue;
                }
            }
            app.append_series(l, samples);
        }
        app.commit()
    })
    .await;
    let report = match committed {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return storage_failure(&e),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("write task failed: {e}")),
    };
    let mut problems: Vec<String> = invalid
        .iter()
        .take(10)
        .map(|e| format!("invalid series {}: {}", e.series, e.reason))
        .collect();
    if invalid.len() > 10 {
        problems.push(format!("and {} more invalid series", invalid.len() - 10));
    }
    problems.extend(report.rejected.iter().take(10).map(rejection_text));
    if report.rejected_count > 10 {
        problems.push(format!("and {} more rejected samples", report.rejected_count - 10));
    }
    let mut resp = if problems.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        text(StatusCode::BAD_REQUEST, problems.join("\n"))
    };
    if proto == Protocol::V2 {
        let h = resp.headers_mut();
        let written = (report.appended + report.duplicates) as u64;
        h.insert("X-Prometheus-Remote-Write-Samples-Written", HeaderValue::from(written));
        h.insert("X-Prometheus-Remote-Write-Histograms-Written", HeaderValue::from(0u64));
        h.insert("X-Prometheus-Remote-Write-Exemplars-Written", HeaderValue::from(0u64));
        let _ = (exemplars, histograms_rejected);
    }
    resp
}
