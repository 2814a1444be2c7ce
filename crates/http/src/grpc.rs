//! OTLP over gRPC: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`
//! served on its own HTTP/2 (h2c) listener. gRPC framing is a flag byte
//! (compressed or not), a big-endian u32 length, then the message; the status
//! travels in trailers.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use http_body_util::StreamBody;
use sextant_ingest::otlp;

use crate::AppState;

const EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// gRPC status codes used here.
const OK: u32 = 0;
const INVALID_ARGUMENT: u32 = 3;
const RESOURCE_EXHAUSTED: u32 = 8;
const UNIMPLEMENTED: u32 = 12;
const UNAVAILABLE: u32 = 14;

fn percent_encode(msg: &str) -> String {
    msg.bytes()
        .map(|b| {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A trailers-only response carrying an error status.
fn status_only(code: u32, msg: &str) -> Response {
    let mut r = Response::new(Body::empty());
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(msg)) {
        h.insert("grpc-message", v);
    }
    r
}

fn ok_response(message: Vec<u8>) -> Response {
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(OK));
    let frames = vec![
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(framed))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    let body = Body::new(StreamBody::new(futures_lite_iter(frames)));
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    r
}

/// A stream over a vector of frames, without pulling in a futures crate.
fn futures_lite_iter<T: Unpin>(v: Vec<T>) -> impl futures_core_stream::Stream<Item = T> {
    futures_core_stream::IterStream(v.into_iter())
}

mod futures_core_stream {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub use futures_core::Stream;

    pub struct IterStream<I>(pub I);

    impl<I: Iterator + Unpin> Stream for IterStream<I> {
        type Item = I::Item;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<I::Item>> {
            Poll::Ready(self.0.next())
        }
    }
}

async fn export(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/grpc") {
        return status_only(UNIMPLEMENTED, &format!("unsupported content type {ct:?}"));
    }
    if body.len() < 5 {
        return status_only(INVALID_ARGUMENT, "truncated gRPC frame");
    }
    let compressed = body[0] == 1;
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() - 5 < len {
        return status_only(INVALID_ARGUMENT, "gRPC frame is shorter than its declared length");
    }
    let limit = st.cfg.ingest.max_body_bytes;
    let raw = &body[5..5 + len];
    let msg = if compressed {
        let enc = headers.get("grpc-encoding").and_then(|v| v.to_str().ok()).unwrap_or("");
        if enc != "gzip" {
            return status_only(UNIMPLEMENTED, &format!("unsupported grpc-encoding {enc:?}"));
        }
        match otlp::gunzip(raw, limit) {
            Ok(m) => m,
            Err(e) => return status_only(RESOURCE_EXHAUSTED, &e.to_string()),
        }
    } else {
        raw.to_vec()
    };
    let req = match otlp::decode_protobuf(&msg) {
        Ok(r) => r,
        Err(e) => return status_only(INVALID_ARGUMENT, &format!("cannot decode OTLP metrics request: {e}")),
    };
    match crate::otlp::ingest(&st, req).await {
        Ok((rejected, msg)) => ok_response(otlp::response(rejected, &msg)),
        Err(e) => status_only(UNAVAILABLE, &e),
    }
}

/// The router of the OTLP gRPC listener.
pub fn router(state: Arc<AppState>) -> Router {
    let auth = Arc::new(state.cfg.auth.clone());
    Router::new()
        .route(EXPORT, post(export))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(auth, crate::auth::check))
}
