//! The built-in dashboard in a real browser: starts the real binary with the
//! demo fleet and runs `tests/ui/dashboard.mjs` (Playwright driving headless
//! Chromium). Screenshots are kept under the target directory; with
//! `SEXTANT_WRITE_SCREENSHOTS=1` they also replace the pictures in `docs/img/`.
//!
//! Needs node, Chromium (`/usr/bin/chromium` or `SEXTANT_CHROMIUM`) and
//! `npm ci --prefix tests/ui`; `.ci/run` installs all three. Elsewhere the
//! test says what is missing and stops; under CI a missing piece fails it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::get;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn missing_prerequisite() -> Option<String> {
    let chromium = std::env::var("SEXTANT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!("no Chromium at {chromium} (apt-get install chromium)"));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("no node on PATH".into());
    }
    if !repo().join("tests/ui/node_modules/playwright-core").exists() {
        return Some("playwright-core is not installed (npm ci --prefix tests/ui)".into());
    }
    None
}

#[test]
fn dashboard_views_filters_incidents_and_explore_work_in_chromium() {
    if let Some(why) = missing_prerequisite() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser test, but {why}"
        );
        eprintln!("SKIPPED: the browser test needs {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let log = dir.path().join("server.log");
    let child = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args([
            "serve",
            "--demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .args([
            "--otlp-grpc-listen",
            "off",
            "--wal-fsync",
            "never",
            "--demo-series",
            "3000",
            "--demo-interval",
            "5s",
            "--demo-backfill",
            "70m",
            "--demo-incidents",
            "ttft-regression@-30m:1,gpu-xid@-20m:5",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn sextant");
    let _server = Server(child);
    let base = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    loop {
        let ready = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && String::from_utf8_lossy(&get(&base, "/api/v1/demo").body).contains("\"backfilled\":true");
        if ready {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "demo server not ready; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    let mut node = Command::new("node")
        .arg(repo().join("tests/ui/dashboard.mjs"))
        .arg(&base)
        .arg(&artifacts)
        .current_dir(repo().join("tests/ui"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = node.try_wait().expect("wait") {
            break s;
        }
        if t.elapsed() > Duration::from_secs(300) {
            let _ = node.kill();
            panic!("the browser test took over 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = node.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("screenshots in {}", artifacts.display());
    assert!(status.success(), "the browser test failed (see above)");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    for shot in ["performance", "capacity", "capacity-incident", "reliability", "explore"] {
        let p = artifacts.join(format!("{shot}.png"));
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "{} is missing or empty", p.display());
        if std::env::var_os("SEXTANT_WRITE_SCREENSHOTS").is_some() {
            let dst = repo().join("docs/img");
            std::fs::create_dir_all(&dst).expect("docs/img");
            std::fs::copy(&p, dst.join(format!("insights-{shot}.png"))).expect("copy");
        }
    }
}
