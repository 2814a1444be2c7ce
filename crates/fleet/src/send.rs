//! A small blocking HTTP/1.1 client for remote-write POSTs over one
//! keep-alive connection, reconnecting when the peer closes it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Where to send: parsed from `http://host:port/path`.
#[derive(Debug, Clone)]
pub struct Target {
    pub host_port: String,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let (host_port, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if host_port.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let host_port = if host_port.contains(':') {
            host_port.to_string()
        } else {
            format!("{host_port}:80")
        };
        Ok(Target {
            host_port,
            path: path.to_string(),
        })
    }
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One keep-alive connection.
pub struct Client {
    target: Target,
    conn: Option<BufReader<TcpStream>>,
    /// Extra request headers, e.g. authorization.
    pub headers: Vec<(String, String)>,
}

impl Client {
    pub fn new(target: Target) -> Client {
        Client {
            target,
            conn: None,
            headers: Vec::new(),
        }
    }

    /// POSTs a snappy-compressed remote-write 1.0 body.
    pub fn post_remote_write(&mut self, body: &[u8]) -> std::io::Result<Response> {
        let headers = [
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "snappy"),
            ("X-Prometheus-Remote-Write-Version", "0.1.0"),
        ];
        self.post(&headers, body)
    }

    /// POSTs `body`; retries once on a fresh connection if a kept-alive one
    /// turned out to be closed.
    pub fn post(&mut self, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Response> {
        let reused = self.conn.is_some();
        match self.try_post(headers, body) {
            Ok(r) => Ok(r),
            Err(_) if reused => {
                self.conn = None;
                self.try_post(headers, body)
            }
            Err(e) => Err(e),
        }
    }

    fn try_post(&mut self, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Response> {
        if self.conn.is_none() {
            let s = TcpStream::connect(&self.target.host_port)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            self.conn = Some(BufReader::new(s));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(std::io::Error::other("no connection"));
        };
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nUser-Agent: sextant-demo\r\n",
            self.target.path,
            self.target.host_port,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let r = (|| {
            let s = conn.get_mut();
            s.write_all(head.as_bytes())?;
            s.write_all(body)?;
            read_response(conn)
        })();
        match r {
            Ok((resp, keep)) => {
                if !keep {
                    self.conn = None;
                }
                Ok(resp)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads one response; the flag says whether the connection stays open.
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(Response, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut len: Option<usize> = None;
    let mut chunked = false;
    let mut keep = true;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("truncated headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "content-length" => len = v.parse().ok(),
                "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                "connection" => keep = !v.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if n == 0 {
                line.clear();
                r.read_line(&mut line)?;
                break;
            }
            let at = body.len();
            body.resize(at + n, 0);
            r.read_exact(&mut body[at..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = len {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if status != 204 && status != 304 && status >= 200 {
        r.read_to_end(&mut body)?;
        keep = false;
    }
    Ok((Response { status, body }, keep))
}
