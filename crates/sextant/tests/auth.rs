//! Authentication per endpoint class: without or with wrong credentials a
//! request gets 401 and changes nothing; with a bearer token or a basic-auth
//! user of its class it works; secrets never show in flags or logs.

mod common;

use common::{enc, request, Resp};
use prost::Message;
use sextant_http::auth::{AuthConfig, Credentials};
use sextant_http::ServerConfig;
use sextant_ingest::remote_write::v1;

const WRITE_TOKEN: &str = "w-token-4f1c9a";
const QUERY_TOKEN: &str = "q-token-77be02";
const ADMIN_PASSWORD: &str = "adm-pass-0d3e";

fn body(name: &str, t: i64) -> Vec<u8> {
    let req = v1::WriteRequest {
        timeseries: vec![v1::TimeSeries {
            labels: vec![v1::Label {
                name: "__name__".into(),
                value: name.into(),
            }],
            samples: vec![v1::Sample {
                value: 1.0,
                timestamp: t,
            }],
            ..Default::default()
        }],
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy")
}

fn write(base: &str, name: &str, t: i64, auth: Option<&str>) -> Resp {
    let mut h = vec![
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "snappy"),
    ];
    if let Some(a) = auth {
        h.push(("Authorization", a));
    }
    request(base, "POST", "/api/v1/write", &h, &body(name, t))
}

fn basic(user: &str, pass: &str) -> String {
    // Base64 by hand, to test against an independent encoder.
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{pass}").into_bytes();
    let mut s = String::new();
    for c in raw.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    format!("Basic {s}")
}

fn count(base: &str, name: &str, auth: &str) -> usize {
    let r = request(
        base,
        "GET",
        &format!("/api/v1/query?query={}", enc(&format!("count({name})"))),
        &[("Authorization", auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"]["result"][0]["value"][1]
        .as_str()
        .map_or(0, |v| v.parse().unwrap_or(0))
}

#[test]
fn each_endpoint_class_needs_its_own_credentials() {
    each_endpoint_class(false);
}

#[test]
fn each_endpoint_class_needs_its_own_credentials_over_tls() {
    each_endpoint_class(true);
}

fn each_endpoint_class(tls: bool) {
    let cfg = ServerConfig {
        auth: AuthConfig {
            write: Credentials {
                bearer_tokens: vec![WRITE_TOKEN.into()],
                basic: vec![("agent".into(), "agent-pass".into())],
            },
            query: Credentials {
                bearer_tokens: vec![QUERY_TOKEN.into()],
                basic: vec![("grafana".into(), "graf-pass".into())],
            },
            admin: Credentials {
                bearer_tokens: vec![],
                basic: vec![("admin".into(), ADMIN_PASSWORD.into())],
            },
        },
        flags: vec![("web.auth-config".into(), "/etc/sextant/auth.toml".into())],
        ..ServerConfig::default()
    };
    let s = if tls {
        sextant::TestServer::start_tls(
            cfg,
            sextant::tls::TlsFiles {
                cert_file: common::tls_dir().join("server.pem"),
                key_file: common::tls_dir().join("server.key"),
            },
        )
    } else {
        sextant::TestServer::start_with(
            sextant_storage::Options {
                fsync: sextant_storage::FsyncPolicy::Never,
                ..Default::default()
            },
            cfg,
        )
    }
    .expect("server");
    let base = s.url();
    assert_eq!(base.starts_with("https://"), tls);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let q = format!("Bearer {QUERY_TOKEN}");

    // Writes.
    let wrong_class = format!("Bearer {QUERY_TOKEN}");
    for auth in [None, Some("Bearer nope"), Some(wrong_class.as_str()), Some("Basic !!")] {
        let r = write(base, "refused", now, auth);
        assert_eq!(r.status, 401, "{auth:?}: {}", r.text());
        assert!(r.header("www-authenticate").is_some());
        assert!(r.text().contains("write endpoints"), "{}", r.text());
    }
    assert_eq!(count(base, "refused", &q), 0, "a refused write stores nothing");
    let r = write(base, "accepted", now, Some(&format!("Bearer {WRITE_TOKEN}")));
    assert_eq!(r.status, 204, "{}", r.text());
    let r = write(base, "accepted_basic", now, Some(&basic("agent", "agent-pass")));
    assert_eq!(r.status, 204, "{}", r.text());
    let otlp = request(
        base,
        "POST",
        "/v1/metrics",
        &[("Content-Type", "application/x-protobuf")],
        b"",
    );
    assert_eq!(otlp.status, 401);

    // Queries, the dashboard and /metrics.
    for path in [
        "/api/v1/query?query=up",
        "/api/v1/labels",
        "/",
        "/metrics",
        "/api/v1/status/flags",
    ] {
        let r = request(base, "GET", path, &[], b"");
        assert_eq!(r.status, 401, "{path}");
        let r = request(
            base,
            "GET",
            path,
            &[("Authorization", &format!("Bearer {WRITE_TOKEN}"))],
            b"",
        );
        assert_eq!(r.status, 401, "{path} with a write token");
        let r = request(base, "GET", path, &[("Authorization", &q)], b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let r = request(
            base,
            "GET",
            path,
            &[("Authorization", &basic("grafana", "graf-pass"))],
            b"",
        );
        assert_eq!(r.status, 200, "{path} with basic auth");
    }
    assert_eq!(count(base, "accepted", &q), 1);
    assert_eq!(count(base, "accepted_basic", &q), 1);

    // Admin: a query token is not enough, and a refused delete deletes nothing.
    let del = "/api/v1/admin/tsdb/delete_series?match[]=accepted";
    for auth in ["", q.as_str(), &basic("admin", "wrong")] {
        let h: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("Authorization", auth)]
        };
        let r = request(base, "POST", del, &h, b"");
        assert_eq!(r.status, 401, "{auth}");
    }
    assert_eq!(count(base, "accepted", &q), 1, "a refused delete removes nothing");
    let r = request(
        base,
        "POST",
        del,
        &[("Authorization", &basic("admin", ADMIN_PASSWORD))],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(count(base, "accepted", &q), 0);

    // Health stays open; gRPC writes are refused with UNAUTHENTICATED.
    assert_eq!(request(base, "GET", "/-/healthy", &[], b"").status, 200);
    assert_eq!(request(base, "GET", "/-/ready", &[], b"").status, 200);
    let grpc = format!("{}://{}", if tls { "https" } else { "http" }, s.grpc_addr());
    let r = request(
        &grpc,
        "POST",
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        &[("Content-Type", "application/grpc")],
        b"\0\0\0\0\0",
    );
    assert_eq!(r.header("grpc-status"), Some("16"), "{:?}", r.headers);

    // No secret in the flags.
    let flags = request(base, "GET", "/api/v1/status/flags", &[("Authorization", &q)], b"").text();
    for secret in [WRITE_TOKEN, QUERY_TOKEN, ADMIN_PASSWORD, "agent-pass", "graf-pass"] {
        assert!(!flags.contains(secret), "flags show a secret: {flags}");
    }
    assert!(flags.contains("/etc/sextant/auth.toml"), "{flags}");
}

#[test]
fn the_binary_reads_credentials_from_a_file_and_never_logs_them() {
    let dir = tempfile::tempdir().expect("dir");
    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        format!(
            "[write]\nbearer_tokens = [\"{WRITE_TOKEN}\"]\n[admin]\nbasic_users = {{ admin = \"{ADMIN_PASSWORD}\" }}\n"
        ),
    )
    .expect("write");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, format!("[write]\nbearer_tokens = \"{WRITE_TOKEN}\"\n")).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--otlp-grpc-listen",
            "off",
            "--auth-config",
        ])
        .arg(&bad)
        .arg("--data-dir")
        .arg(dir.path().join("d0"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml"), "{err}");
    assert!(!err.contains(WRITE_TOKEN), "an error leaks the token: {err}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let log = dir.path().join("log");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--otlp-grpc-listen",
            "off",
        ])
        .args(["--log-level", "debug", "--auth-config"])
        .arg(&auth)
        .arg("--data-dir")
        .arg(dir.path().join("d1"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let mut child = Kill(child);
    let base = format!("http://127.0.0.1:{port}");
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        || request(&base, "GET", "/-/ready", &[], b"").status != 200
    {
        assert!(t.elapsed().as_secs() < 30, "not ready");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let now = 1_000
        * std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
    assert_eq!(write(&base, "x", now, None).status, 401);
    assert_eq!(
        write(&base, "x", now, Some(&format!("Bearer {WRITE_TOKEN}"))).status,
        204
    );
    assert_eq!(write(&base, "x", now + 1000, Some("Bearer guess")).status, 401);
    // Queries are open in this file.
    assert_eq!(request(&base, "GET", "/api/v1/query?query=x", &[], b"").status, 200);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    let _ = child.0.wait();
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("write endpoints need authentication"), "{text}");
    assert!(text.contains("query endpoints are open"), "{text}");
    for secret in [WRITE_TOKEN, ADMIN_PASSWORD, "guess"] {
        assert!(!text.contains(secret), "the log shows a secret: {text}");
    }
}
