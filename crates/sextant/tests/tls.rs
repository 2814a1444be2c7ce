//! TLS: HTTPS with the test certificates in `testdata/tls`, plain HTTP and
//! broken handshakes refused without harm, HTTP/2 from a real client (curl),
//! certificates replaced on disk picked up without a restart, and the binary
//! serving HTTPS with authentication while its demo fleet writes into it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{enc, get, request, series, tls_connect, tls_dir, write_v1, KillOnDrop};
use sextant::tls::TlsFiles;
use sextant_ingest::remote_write::v1;

fn files(dir: &std::path::Path, name: &str) -> TlsFiles {
    TlsFiles {
        cert_file: dir.join(format!("{name}.pem")),
        key_file: dir.join(format!("{name}.key")),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn value(base: &str, q: &str) -> Option<f64> {
    let r = get(base, &format!("/api/v1/query?query={}", enc(q)));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
}

/// The DER of the certificate the server at `host` presents.
fn presented_cert(host: &str) -> Vec<u8> {
    let mut s = tls_connect(host);
    s.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(out.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&out));
    s.conn.peer_certificates().expect("peer certificate")[0].to_vec()
}

fn pem_der(path: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::from_pem_file(path)
        .expect("certificate")
        .to_vec()
}

#[test]
fn https_serves_writes_and_queries_and_refuses_plain_http_and_broken_handshakes() {
    let s = sextant::TestServer::start_tls(Default::default(), files(&tls_dir(), "server")).expect("server");
    let base = s.url().to_string();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let host = base.trim_start_matches("https://").to_string();
    let t = now_ms();
    let r = write_v1(
        &base,
        &v1::WriteRequest {
            timeseries: vec![series(&[("__name__", "tls_written"), ("az", "a")], &[(t, 7.0)])],
            metadata: vec![],
        },
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(value(&base, "tls_written"), Some(7.0));

    // Plain HTTP to the TLS port gets no HTTP answer and stores nothing.
    let mut plain = TcpStream::connect(&host).expect("connect");
    plain.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    plain
        .write_all(b"GET /api/v1/query?query=tls_written HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/"), "plain HTTP was answered: {got:?}");

    // Garbage, a handshake cut short, and a client that connects and says
    // nothing: the server keeps serving everyone else meanwhile.
    let mut garbage = TcpStream::connect(&host).expect("connect");
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3])
        .expect("write");
    drop(garbage);
    let idle = TcpStream::connect(&host).expect("connect");
    {
        let mut half = TcpStream::connect(&host).expect("connect");
        // The first bytes of a ClientHello record, then gone.
        half.write_all(&[0x16, 0x03, 0x01, 0x00, 0x40, 0x01]).expect("write");
    }
    for _ in 0..5 {
        assert_eq!(value(&base, "tls_written"), Some(7.0));
    }
    drop(idle);
    assert_eq!(get(&base, "/-/ready").status, 200);
}

#[test]
fn curl_speaks_http2_over_tls() {
    if Command::new("curl").arg("--version").output().is_err() {
        if std::env::var_os("CI").is_some() {
            panic!("curl is not installed; .ci/run must install it");
        }
        println!("SKIPPED: no curl");
        return;
    }
    let s = sextant::TestServer::start_tls(Default::default(), files(&tls_dir(), "server")).expect("server");
    let out = Command::new("curl")
        .args(["-sS", "--http2", "--cacert"])
        .arg(tls_dir().join("ca.pem"))
        .args(["-w", "\n%{http_version} %{http_code}"])
        .arg(format!("{}/api/v1/query?query=vector(42)", s.url()))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let (body, tail) = text.rsplit_once('\n').expect("status line");
    assert_eq!(tail, "2 200", "{text}");
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    assert_eq!(v["data"]["result"][0]["value"][1], "42");
    // Without the CA, curl refuses the certificate: it is not a public one.
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null"])
        .arg(format!("{}/-/healthy", s.url()))
        .output()
        .expect("curl");
    assert!(!out.status.success());
}

#[test]
fn a_replaced_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let dir = tempfile::tempdir().expect("dir");
    for f in ["server.pem", "server.key"] {
        std::fs::copy(tls_dir().join(f), dir.path().join(f)).expect("copy");
    }
    let s = sextant::TestServer::start_tls(Default::default(), files(dir.path(), "server")).expect("server");
    let host = s.url().trim_start_matches("https://").to_string();
    assert_eq!(presented_cert(&host), pem_der(&tls_dir().join("server.pem")));

    let bump = |later: u64| {
        for f in ["server.pem", "server.key"] {
            let file = std::fs::File::options()
                .write(true)
                .open(dir.path().join(f))
                .expect("open");
            file.set_modified(std::time::SystemTime::now() + Duration::from_secs(later))
                .expect("mtime");
        }
    };
    // Renewal: both files replaced.
    std::fs::copy(tls_dir().join("server2.pem"), dir.path().join("server.pem")).expect("copy");
    std::fs::copy(tls_dir().join("server2.key"), dir.path().join("server.key")).expect("copy");
    bump(10);
    let want = pem_der(&tls_dir().join("server2.pem"));
    let t = Instant::now();
    while presented_cert(&host) != want {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the new certificate was not picked up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A half-finished renewal (the old key with the new certificate) is
    // refused: the server goes on presenting the last good certificate.
    std::fs::copy(tls_dir().join("server.pem"), dir.path().join("server.pem")).expect("copy");
    bump(20);
    std::thread::sleep(Duration::from_millis(1_300));
    for _ in 0..3 {
        assert_eq!(presented_cert(&host), want);
    }
}

#[test]
fn unusable_certificates_are_refused_at_start_with_the_file_named() {
    let dir = tempfile::tempdir().expect("dir");
    let cases = [
        (files(dir.path(), "missing"), "missing.pem"),
        (
            TlsFiles {
                cert_file: tls_dir().join("server.pem"),
                key_file: tls_dir().join("server2.key"),
            },
            "does not fit",
        ),
        (
            TlsFiles {
                cert_file: tls_dir().join("server.key"),
                key_file: tls_dir().join("server.key"),
            },
            "no PEM CERTIFICATE",
        ),
    ];
    for (f, want) in cases {
        let e = sextant::TestServer::start_tls(Default::default(), f)
            .err()
            .expect("refused");
        assert!(format!("{e:#}").contains(want), "{want}: {e:#}");
    }
    // The binary: a missing half of the pair is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert-file"])
        .arg(tls_dir().join("server.pem"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-key-file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_binary_serves_https_with_auth_while_its_demo_fleet_writes_into_it() {
    const TOKEN: &str = "tls-q-token-5a1f";
    let dir = tempfile::tempdir().expect("dir");
    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        format!("[write]\nbearer_tokens = [\"w-unused-1\"]\n[query]\nbearer_tokens = [\"{TOKEN}\"]\n"),
    )
    .expect("auth file");
    let port = common::free_port();
    let log = dir.path().join("log");
    let child = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--otlp-grpc-listen",
            "off",
            "--wal-fsync",
            "never",
            "--demo",
            "--demo-series",
            "400",
            "--demo-backfill",
            "10m",
            "--auth-config",
        ])
        .arg(&auth)
        .arg("--tls-cert-file")
        .arg(tls_dir().join("server.pem"))
        .arg("--tls-key-file")
        .arg(tls_dir().join("server.key"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let _child = KillOnDrop(child);
    let base = format!("https://127.0.0.1:{port}");
    let bearer = format!("Bearer {TOKEN}");
    let count = || {
        let r = request(
            &base,
            "GET",
            &format!("/api/v1/query?query={}", enc("count({__name__=~\"vllm:.+\"})")),
            &[("Authorization", &bearer)],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let t = Instant::now();
    loop {
        let up = TcpStream::connect(("127.0.0.1", port)).is_ok()
            && request(&base, "GET", "/-/ready", &[], b"").status == 200;
        if up && count() > 0.0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no demo data over HTTPS; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Queries still need their credentials; the flags name the files only.
    let r = request(&base, "GET", "/api/v1/query?query=up", &[], b"");
    assert_eq!(r.status, 401);
    let flags = request(&base, "GET", "/api/v1/status/flags", &[("Authorization", &bearer)], b"").text();
    assert!(flags.contains("server.pem") && flags.contains("server.key"), "{flags}");
    let key = std::fs::read_to_string(tls_dir().join("server.key")).expect("key");
    let key_body = key.lines().nth(1).expect("key line");
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    for text in [&flags, &logs] {
        assert!(!text.contains(key_body), "key material leaked");
        assert!(!text.contains(TOKEN), "token leaked");
    }
    assert!(logs.contains("listening on https://"), "{logs}");
    let stats = request(&base, "GET", "/api/v1/demo", &[("Authorization", &bearer)], b"");
    assert_eq!(stats.status, 200, "{}", stats.text());
    assert_eq!(stats.json()["data"]["requests_failed"], 0, "{}", stats.text());
}
