//! Optional authentication, configured separately for three classes of
//! endpoint: writes (remote write, OTLP over HTTP and gRPC), queries (the
//! query API, metadata, status, `/metrics` and the dashboard) and admin
//! (`/api/v1/admin/*` and the demo's incident commands). Health checks stay
//! open. A class without credentials is open; a class with credentials accepts
//! any of its bearer tokens or basic-auth users. Secrets are compared in
//! constant time and never printed: `Debug` shows only how many there are.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Credentials of one endpoint class.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub bearer_tokens: Vec<String>,
    /// `(user, password)` pairs.
    pub basic: Vec<(String, String)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials({} bearer tokens, {} basic users)",
            self.bearer_tokens.len(),
            self.basic.len()
        )
    }
}

impl Credentials {
    pub fn is_empty(&self) -> bool {
        self.bearer_tokens.is_empty() && self.basic.is_empty()
    }
}

/// Credentials per endpoint class; an empty class is open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub write: Credentials,
    pub query: Credentials,
    pub admin: Credentials,
}

/// The class an endpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Open,
    Write,
    Query,
    Admin,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Open => "open",
            Class::Write => "write",
            Class::Query => "query",
            Class::Admin => "admin",
        }
    }
}

/// Which class a request is.
pub fn classify(method: &Method, path: &str) -> Class {
    match path {
        "/-/healthy" | "/-/ready" => Class::Open,
        "/api/v1/write" | "/v1/metrics" | "/api/v1/otlp/v1/metrics" => Class::Write,
        p if p.starts_with("/opentelemetry.proto.collector.") => Class::Write,
        p if p.starts_with("/api/v1/admin/") => Class::Admin,
        "/api/v1/demo/incidents" if method != Method::GET => Class::Admin,
        _ => Class::Query,
    }
}

/// Constant-time equality of two secrets (their lengths may leak).
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim().trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        match chunk.len() {
            4 => out.extend_from_slice(&bytes),
            3 => out.extend_from_slice(&bytes[..2]),
            2 => out.push(bytes[0]),
            _ => return None,
        }
    }
    Some(out)
}

/// Whether the request's `Authorization` header carries one of `creds`.
pub fn authorized(creds: &Credentials, headers: &HeaderMap) -> bool {
    let Some(h) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        let token = rest.trim().as_bytes();
        // Every token is compared, so timing does not tell which matched.
        return creds
            .bearer_tokens
            .iter()
            .fold(false, |ok, t| same(t.as_bytes(), token) | ok);
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let Some(raw) = base64_decode(rest) else { return false };
        let Some(i) = raw.iter().position(|b| *b == b':') else {
            return false;
        };
        let (user, pass) = (&raw[..i], &raw[i + 1..]);
        return creds.basic.iter().fold(false, |ok, (u, p)| {
            (same(u.as_bytes(), user) & same(p.as_bytes(), pass)) | ok
        });
    }
    false
}

/// The 401 answer: it names the class, never the credentials.
pub fn unauthorized(class: Class, grpc: bool) -> Response {
    let msg = format!(
        "authentication required for {} endpoints: send a valid Authorization header",
        class.name()
    );
    let mut r = if grpc {
        // gRPC: status 16 (UNAUTHENTICATED) in the headers of a 200.
        let mut r = StatusCode::OK.into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from_static("16"));
        if let Ok(v) = HeaderValue::from_str(&msg) {
            h.insert("grpc-message", v);
        }
        r
    } else {
        let body = serde_json::json!({"status": "error", "errorType": "unauthorized", "error": msg}).to_string();
        (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    };
    let h = r.headers_mut();
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"sextant\", charset=\"UTF-8\""),
    );
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"sextant\""),
    );
    r
}

/// Middleware: checks the request against its class's credentials.
pub async fn check(State(cfg): State<Arc<AuthConfig>>, req: Request, next: Next) -> Response {
    let class = classify(req.method(), req.uri().path());
    let creds = match class {
        Class::Open => None,
        Class::Write => Some(&cfg.write),
        Class::Query => Some(&cfg.query),
        Class::Admin => Some(&cfg.admin),
    };
    if let Some(c) = creds.filter(|c| !c.is_empty()) {
        if !authorized(c, req.headers()) {
            let grpc = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/grpc"));
            tracing::warn!(target: "sextant::auth", class = class.name(), path = req.uri().path(), "unauthenticated request refused");
            return unauthorized(class, grpc);
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn bearer_and_basic_credentials_are_checked() {
        let c = Credentials {
            bearer_tokens: vec!["s3cret".into()],
            basic: vec![("prom".into(), "pa:ss".into())],
        };
        assert!(authorized(&c, &headers("Bearer s3cret")));
        assert!(authorized(&c, &headers("bearer s3cret")));
        assert!(!authorized(&c, &headers("Bearer s3cre")));
        assert!(!authorized(&c, &headers("Bearer s3crett")));
        // "prom:pa:ss": the password may hold a colon.
        assert!(authorized(&c, &headers("Basic cHJvbTpwYTpzcw==")));
        assert!(!authorized(&c, &headers("Basic cHJvbTpwYXNz")));
        assert!(!authorized(&c, &headers("Basic !!!")));
        assert!(!authorized(&c, &HeaderMap::new()));
        assert_eq!(format!("{c:?}"), "Credentials(1 bearer tokens, 1 basic users)");
    }

    #[test]
    fn endpoints_fall_into_their_classes() {
        assert_eq!(classify(&Method::POST, "/api/v1/write"), Class::Write);
        assert_eq!(classify(&Method::POST, "/v1/metrics"), Class::Write);
        assert_eq!(
            classify(
                &Method::POST,
                "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
            ),
            Class::Write
        );
        assert_eq!(classify(&Method::GET, "/api/v1/query"), Class::Query);
        assert_eq!(classify(&Method::GET, "/"), Class::Query);
        assert_eq!(classify(&Method::POST, "/api/v1/admin/tsdb/flush"), Class::Admin);
        assert_eq!(classify(&Method::POST, "/api/v1/demo/incidents"), Class::Admin);
        assert_eq!(classify(&Method::GET, "/api/v1/demo/incidents"), Class::Query);
        assert_eq!(classify(&Method::GET, "/-/ready"), Class::Open);
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode("aGVsbG8h").as_deref(), Some(&b"hello!"[..]));
        assert_eq!(base64_decode("aA").as_deref(), Some(&b"h"[..]));
        assert!(base64_decode("a").is_none());
    }
}
