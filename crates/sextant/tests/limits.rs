//! Cardinality limits: a series explosion past the global or the per-metric
//! limit is refused with a 400 that names the limit, while known series keep
//! being written and the server keeps answering.

mod common;

use common::{enc, get, request, series, write_v1, Resp};
use prost::Message;
use sextant_ingest::remote_write::v1;

fn write(base: &str, ids: &[(String, String)], t: i64) -> Resp {
    let timeseries = ids
        .iter()
        .map(|(name, id)| series(&[("__name__", name), ("id", id)], &[(t, 1.0)]))
        .collect();
    write_v1(
        base,
        &v1::WriteRequest {
            timeseries,
            metadata: vec![],
        },
    )
}

/// The wall clock in whole seconds, as milliseconds.
fn now_ms() -> i64 {
    1000 * std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A server on an unsynced store with these HTTP settings.
fn server_with(cfg: sextant_http::ServerConfig) -> sextant::TestServer {
    sextant::TestServer::start_with(
        sextant_storage::Options {
            fsync: sextant_storage::FsyncPolicy::Never,
            ..Default::default()
        },
        cfg,
    )
    .expect("server")
}

fn count(base: &str, q: &str, t_ms: i64) -> usize {
    let j = get(
        base,
        &format!(
            "/api/v1/query?query={}&time={}",
            enc(&format!("count({q})")),
            t_ms / 1000
        ),
    )
    .json();
    j["data"]["result"][0]["value"][1]
        .as_str()
        .map_or(0, |v| v.parse().unwrap_or(0))
}

#[test]
fn series_explosions_stop_at_the_limits() {
    let s = sextant::TestServer::start_with(
        sextant_storage::Options {
            fsync: sextant_storage::FsyncPolicy::Never,
            max_series: Some(50),
            max_series_per_metric: Some(20),
            ..Default::default()
        },
        sextant_http::ServerConfig::default(),
    )
    .expect("server");
    let base = s.url();
    let t0 = now_ms() - 600_000;
    let ids = |name: &str, r: std::ops::Range<usize>| -> Vec<(String, String)> {
        r.map(|i| (name.to_string(), i.to_string())).collect()
    };
    // One metric explodes: the first 20 series are taken, the rest refused.
    let r = write(base, &ids("exploding", 0..100), t0);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("--max-series-per-metric") && r.text().contains("exploding"),
        "{}",
        r.text()
    );
    assert_eq!(count(base, "exploding", t0), 20);
    // Known series still take samples, in a mixed batch too.
    let mut mixed = ids("exploding", 0..20);
    mixed.extend(ids("exploding", 500..510));
    let r = write(base, &mixed, t0 + 15_000);
    assert_eq!(r.status, 400);
    let j = get(
        base,
        &format!(
            "/api/v1/query?query={}&time={}",
            enc("count(exploding)"),
            t0 / 1000 + 15
        ),
    )
    .json();
    assert_eq!(j["data"]["result"][0]["value"][1], "20", "{j}");
    // The global limit: 50 series in all.
    for (k, name) in ["a", "b", "c"].iter().enumerate() {
        let r = write(base, &ids(name, 0..20), t0 + k as i64);
        if k < 1 {
            assert_eq!(r.status, 204, "{}", r.text());
        } else {
            assert_eq!(r.status, 400, "{name}: {}", r.text());
            assert!(r.text().contains("--max-series)"), "{}", r.text());
        }
    }
    assert_eq!(count(base, "{__name__=~\"exploding|a|b|c\"}", t0 + 15_000), 50);
    // Self-monitoring counts the refusals; the server still answers.
    let m = get(base, "/metrics").text();
    let refused: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("sextant_samples_rejected_total{reason=\"series_limit\"} "))
        .and_then(|v| v.parse().ok())
        .expect("metric");
    assert!(refused >= 80.0 + 10.0 + 30.0, "{refused}");
    assert_eq!(get(base, "/-/ready").status, 200);
}

/// One series with one sample; values are owned so tests can build long ones.
fn ts(labels: &[(&str, String)], t: i64, v: f64) -> v1::TimeSeries {
    let pairs: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (*n, v.as_str())).collect();
    series(&pairs, &[(t, v)])
}

#[test]
fn hostile_series_are_refused_one_by_one_and_nothing_else_is_lost() {
    let s = sextant::TestServer::start().expect("server");
    let base = s.url();
    let now = now_ms();
    let name = |n: &str| ("__name__", n.to_string());
    let r = write_v1(
        base,
        &v1::WriteRequest {
            timeseries: vec![ts(&[name("kept")], now, 1.0)],
            metadata: vec![],
        },
    );
    assert_eq!(r.status, 204);
    let many: Vec<(&str, String)> = std::iter::once(name("many"))
        .chain((0..200).map(|i| (Box::leak(format!("l{i:03}").into_boxed_str()) as &str, "v".to_string())))
        .collect();
    let cases: Vec<(v1::TimeSeries, &str)> = vec![
        (ts(&many, now, 1.0), "more than the limit"),
        (
            ts(&[name("longname"), ("a", "v".repeat(20_000))], now, 1.0),
            "longer than the limit",
        ),
        (
            ts(
                &[
                    name("longlabel"),
                    (Box::leak("n".repeat(2_000).into_boxed_str()), "v".into()),
                ],
                now,
                1.0,
            ),
            "longer than the limit",
        ),
        (ts(&[name("future")], now + 3 * 3_600_000, 1.0), "in the future"),
        (ts(&[name("empty"), ("", "x".into())], now, 1.0), "empty name"),
    ];
    for (series, want) in cases {
        let r = write_v1(
            base,
            &v1::WriteRequest {
                timeseries: vec![series, ts(&[name("kept")], now + 1000, 2.0)],
                metadata: vec![],
            },
        );
        assert_eq!(r.status, 400, "{want}: {}", r.text());
        assert!(r.text().contains(want), "{want}: {}", r.text());
    }
    // NaN and the infinities are values like any other, stored bit-exactly.
    for (i, v) in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY].into_iter().enumerate() {
        let r = write_v1(
            base,
            &v1::WriteRequest {
                timeseries: vec![ts(&[name("odd"), ("i", i.to_string())], now, v)],
                metadata: vec![],
            },
        );
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let j = get(base, &format!("/api/v1/query?query=odd&time={}", now / 1000)).json();
    let mut vals: Vec<String> = j["data"]["result"]
        .as_array()
        .expect("result")
        .iter()
        .map(|x| x["value"][1].as_str().unwrap_or("").to_string())
        .collect();
    vals.sort();
    assert_eq!(vals, vec!["+Inf", "-Inf", "NaN"]);
    // Invalid UTF-8 in a label value: the request is malformed protobuf.
    let mut body = v1::WriteRequest {
        timeseries: vec![ts(&[name("utf"), ("a", "xx".into())], now, 1.0)],
        metadata: vec![],
    }
    .encode_to_vec();
    let at = body.windows(2).position(|w| w == b"xx").expect("value");
    body[at] = 0xff;
    let r = request(
        base,
        "POST",
        "/api/v1/write",
        &[("Content-Type", "application/x-protobuf")],
        &snap::raw::Encoder::new().compress_vec(&body).expect("snappy"),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().to_lowercase().contains("utf-8") || r.text().contains("protobuf"),
        "{}",
        r.text()
    );
    // A body over the limit is refused from its declared length, before it is read.
    {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(s.addr()).expect("connect");
        c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        let head = format!(
            "POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            40u64 << 20
        );
        c.write_all(head.as_bytes()).expect("head");
        let _ = c.write_all(&[0u8; 4096]);
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).expect("answer");
        let line = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(line.starts_with("HTTP/1.1 413"), "{line}");
    }
    // Everything valid in those batches was kept, and the server answers.
    let j = get(base, &format!("/api/v1/query?query=kept&time={}", now / 1000 + 1)).json();
    assert_eq!(j["data"]["result"][0]["value"][1], "2", "{j}");
    assert_eq!(get(base, "/-/ready").status, 200);
}

#[test]
fn a_query_finding_every_slot_busy_times_out_in_the_queue() {
    // One query slot. A query that would run for ever holds it until its own
    // 4 s timeout; a query arriving meanwhile with a 1 s timeout waits for the
    // slot that long and gets 503 `timeout` naming the limit; after the slot
    // frees, queries run again.
    let s = server_with(sextant_http::ServerConfig {
        max_concurrent_queries: 1,
        ..Default::default()
    });
    let base = s.url().to_string();
    let slow = {
        let base = base.clone();
        std::thread::spawn(move || {
            let t = std::time::Instant::now();
            let r = get(
                &base,
                &format!(
                    "/api/v1/query?query={}&time=200000&timeout=4s",
                    enc("max_over_time(max_over_time(vector(1)[1d:1s])[1d:1s])")
                ),
            );
            (r.status, r.text(), t.elapsed())
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let t = std::time::Instant::now();
    let r = get(&base, "/api/v1/query?query=1%2B1&timeout=1s");
    let waited = t.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["errorType"], "timeout", "{}", r.text());
    assert!(
        r.text().contains("query queue") && r.text().contains("--query-max-concurrency"),
        "{}",
        r.text()
    );
    assert!(
        waited >= std::time::Duration::from_millis(900),
        "gave up after {waited:?}"
    );
    let (status, text, took) = slow.join().expect("slow query");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("timeout"), "{text}");
    // Its own 4 s timeout stops it soon after, even inside one series'
    // windows (the inner subquery's windows hold 86,400 points each).
    assert!(took < std::time::Duration::from_secs(10), "the slow query ran {took:?}");
    let r = get(&base, "/api/v1/query?query=1%2B1");
    assert_eq!(r.status, 200, "{}", r.text());
    let m = get(&base, "/metrics").text();
    assert!(m.contains("sextant_queries_timed_out_in_queue_total 1"), "{m}");
}

#[test]
fn writers_beyond_the_decode_budget_wait_their_turn_and_lose_nothing() {
    // A budget smaller than one request: each is decoded alone.
    let s = server_with(sextant_http::ServerConfig {
        write_decode_bytes: 1024,
        ..Default::default()
    });
    let base = s.url().to_string();
    let t0 = now_ms() - 600_000;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let base = base.clone();
            std::thread::spawn(move || {
                for round in 0..5 {
                    let ids: Vec<(String, String)> = (0..200)
                        .map(|i| ("budget_test".to_string(), format!("{w}-{i}")))
                        .collect();
                    let r = write(&base, &ids, t0 + round * 1000);
                    assert_eq!(
                        r.status,
                        204,
                        "writer {w} round {round}: {}",
                        String::from_utf8_lossy(&r.body)
                    );
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    assert_eq!(count(&base, "budget_test", t0 + 4000), 1600);
    let m = String::from_utf8_lossy(&get(&base, "/metrics").body).into_owned();
    let waits = m
        .lines()
        .find_map(|l| l.strip_prefix("sextant_remote_write_decode_waits_total "))
        .expect("the waits counter is exposed");
    waits.trim().parse::<u64>().expect("a count");
}
