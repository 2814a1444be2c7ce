//! A minimal HTTP/1.1 client for tests, over a plain TCP stream, or over TLS
//! (trusting the test CA in `testdata/tls`) for `https://` bases.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use prost::Message;
use sextant_ingest::remote_write::v1;

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The directory of the test certificates.
pub fn tls_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tls")
}

/// A TLS client configuration that trusts only the test CA.
pub fn tls_client() -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(tls_dir().join("ca.pem")).expect("ca.pem") {
        roots.add(c.expect("CA certificate")).expect("add CA");
    }
    let cfg =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    std::sync::Arc::new(cfg)
}

/// A TLS stream to `host` (`127.0.0.1:port`), verified against the test CA.
pub fn tls_connect(host: &str) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(host).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let ip = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    let name = rustls::pki_types::ServerName::try_from(ip.to_string()).expect("server name");
    let conn = rustls::ClientConnection::new(tls_client(), name).expect("client connection");
    rustls::StreamOwned::new(conn, tcp)
}

/// Sends one request to `base` (`http://host:port` or `https://host:port`)
/// and reads the whole answer.
pub fn request(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let (host, tls) = match base.strip_prefix("https://") {
        Some(h) => (h, true),
        None => (base.trim_start_matches("http://"), false),
    };
    let mut s: Box<dyn ReadWrite> = if tls {
        Box::new(tls_connect(host))
    } else {
        let s = TcpStream::connect(host).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        Box::new(s)
    };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(body).expect("write body");
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        // A TLS peer that closes without close_notify after a complete answer.
        Err(e) if tls && e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => panic!("read: {e}"),
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp { status, headers, body }
}

pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[nl + 2 + size + 2..];
    }
    out
}

pub fn get(base: &str, path: &str) -> Resp {
    request(base, "GET", path, &[], b"")
}

pub fn post_form(base: &str, path: &str, form: &str) -> Resp {
    request(
        base,
        "POST",
        path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
}

pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// POSTs a remote-write 1.0 request, snappy-compressed.
pub fn write_v1(base: &str, req: &v1::WriteRequest) -> Resp {
    write_v1_raw(base, &req.encode_to_vec())
}

/// POSTs already-encoded remote-write 1.0 protobuf bytes, snappy-compressed.
pub fn write_v1_raw(base: &str, protobuf: &[u8]) -> Resp {
    let body = snap::raw::Encoder::new().compress_vec(protobuf).expect("snappy");
    request(
        base,
        "POST",
        "/api/v1/write",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "snappy"),
            ("X-Prometheus-Remote-Write-Version", "0.1.0"),
        ],
        &body,
    )
}

/// One remote-write 1.0 series.
pub fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> v1::TimeSeries {
    v1::TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| v1::Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|(t, v)| v1::Sample {
                timestamp: *t,
                value: *v,
            })
            .collect(),
        ..Default::default()
    }
}

/// A port free on 127.0.0.1 at the time of asking, and never handed to
/// another test of this process: tests run in parallel, and a server that is
/// restarted on its port must not find another test's server there.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        if !given.contains(&p) {
            given.push(p);
            return p;
        }
    }
}

/// A child process killed and reaped when dropped, so a failing test leaves
/// no server behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
