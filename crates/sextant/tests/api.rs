//! The HTTP API end to end over real sockets, against the in-process server.

mod common;

use common::{enc, get, post_form, request, series, write_v1};
use prost::Message;
use sextant_ingest::remote_write::{v1, v2};
use sextant_model::Labels;

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn load_demo(base: &str, t0: i64) {
    let mut ts = Vec::new();
    for (model, rate) in [("llama", 10.0), ("mistral", 20.0)] {
        for replica in ["0", "1"] {
            let samples: Vec<(i64, f64)> = (0..40)
                .map(|k| ((t0 + k * 15) * 1000, (k as f64) * rate * 15.0))
                .collect();
            ts.push(series(
                &[
                    ("__name__", "vllm:generation_tokens_total"),
                    ("model_name", model),
                    ("replica", replica),
                ],
                &samples,
            ));
        }
    }
    let req = v1::WriteRequest {
        timeseries: ts,
        metadata: vec![v1::MetricMetadata {
            r#type: 1,
            metric_family_name: "vllm:generation_tokens_total".into(),
            help: "Generated tokens.".into(),
            unit: "".into(),
        }],
    };
    let r = write_v1(base, &req);
    assert_eq!(r.status, 204, "{}", r.text());
}

#[test]
fn grafana_call_sequence_works() {
    let s = sextant::TestServer::start().expect("server");
    let base = s.url();
    let t0 = now_s() - 600;
    load_demo(base, t0);
    // 1. Grafana's health check.
    let r = get(base, &format!("/api/v1/query?query={}&time={}", enc("1+1"), now_s()));
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["data"]["resultType"], "scalar");
    assert_eq!(j["data"]["result"][1], "2");
    // 2. buildinfo with a Prometheus version.
    let j = get(base, "/api/v1/status/buildinfo").json();
    assert!(j["data"]["version"].as_str().expect("version").starts_with('3'));
    // 3. label names, 4. metric names.
    let j = get(base, "/api/v1/labels").json();
    assert_eq!(j["data"], serde_json::json!(["__name__", "model_name", "replica"]));
    let j = get(base, "/api/v1/label/__name__/values").json();
    assert_eq!(j["data"], serde_json::json!(["vllm:generation_tokens_total"]));
    // 5. series with match[].
    let j = get(
        base,
        &format!(
            "/api/v1/series?match[]={}&start={}&end={}",
            enc("{model_name=\"llama\"}"),
            t0,
            now_s()
        ),
    )
    .json();
    assert_eq!(j["data"].as_array().expect("array").len(), 2);
    // 6. POST form query_range with a float step.
    let q = "sum by (model_name) (rate(vllm:generation_tokens_total[1m]))";
    let r = post_form(
        base,
        "/api/v1/query_range",
        &format!("query={}&start={}&end={}&step=15.5", enc(q), t0 + 120, t0 + 500),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["data"]["resultType"], "matrix");
    let res = j["data"]["result"].as_array().expect("result");
    assert_eq!(res.len(), 2);
    let llama = res
        .iter()
        .find(|s| s["metric"]["model_name"] == "llama")
        .expect("llama");
    for p in llama["values"].as_array().expect("values") {
        let v: f64 = p[1].as_str().expect("string value").parse().expect("float");
        assert!((v - 20.0).abs() < 1e-9, "two replicas at 10 tokens/s, got {v}");
    }
    // Metadata came with the write.
    let j = get(base, "/api/v1/metadata").json();
    assert_eq!(j["data"]["vllm:generation_tokens_total"][0]["type"], "counter");
}

#[test]
fn query_errors_use_prometheus_types_and_codes() {
    let s = sextant::TestServer::start().expect("server");
    let base = s.url();
    let r = get(base, &format!("/api/v1/query?query={}", enc("sum(")));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errorType"], "bad_data");
    assert_eq!(r.json()["status"], "error");
    let r = get(base, "/api/v1/query");
    assert_eq!(r.status, 400);
    let r = get(base, "/api/v1/query_range?query=up&start=0&end=100000&step=1");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().expect("msg").contains("11,000 points"));
    let r = get(base, "/api/v1/query_range?query=up&start=10&end=5&step=1");
    assert_eq!(r.status, 400);
    let r = get(base, "/api/v1/query?query=up&time=yesterday");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().expect("msg").contains("time"));
    let r = get(base, "/api/v1/series");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().expect("msg").contains("match[]"));
    // Many-to-many matching is an execution error (422).
    let t = now_s();
    let req = v1::WriteRequest {
        timeseries: vec![
            series(&[("__name__", "a"), ("x", "1")], &[(t * 1000, 1.0)]),
            series(&[("__name__", "a"), ("x", "2")], &[(t * 1000, 1.0)]),
            series(&[("__name__", "b")], &[(t * 1000, 1.0)]),
        ],
        metadata: vec![],
    };
    assert_eq!(write_v1(base, &req).status, 204);
    let r = get(base, &format!("/api/v1/query?query={}&time={t}", enc("b + on() a")));
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["errorType"], "execution");
}

#[test]
fn remote_write_validates_per_series_and_keeps_the_valid_ones() {
    let s = sextant::TestServer::start().expect("server");
    let base = s.url();
    let t = now_s() * 1000;
    let req = v1::WriteRequest {
        timeseries: vec![
            series(&[("__name__", "good"), ("a", "1")], &[(t, 1.0)]),
            series(&[("a", "1"), ("__name__", "unsorted")], &[(t, 1.0)]),
            series(&[("__name__", "empty"), ("a", "")], &[(t, 1.0)]),
        ],
        metadata: vec![],
    };
    let r = write_v1(base, &req);
    assert_eq!(r.status, 400);
    let msg = r.text();
    assert!(msg.contains("unsorted") && msg.contains("not sorted"), "{msg}");
    assert!(msg.contains("empty value"), "{msg}");
    let j = get(base, &format!("/api/v1/query?query=good&time={}", t / 1000)).json();
    assert_eq!(j["data"]["result"].as_array().expect("result").len(), 1);
    // Out of order: 400 naming the series and the timestamps.
    let r = write_v1(
        base,
        &v1::WriteRequest {
            timeseries: vec![series(&[("__name__", "good"), ("a", "1")], &[(t - 60_000, 2.0)])],
            metadata: vec![],
        },
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("out of order") && r.text().contains("good"),
        "{}",
        r.text()
    );
    // Unknown content type: 415.
    let r = request(
        base,
        "POST",
        "/api/v1/write",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 415);
    // Bad snappy and bad protobuf: 400; a snappy bomb: 413 before allocation.
    let r = request(
        base,
        "POST",
        "/api/v1/write",
        &[("Content-Type", "application/x-protobuf")],
        b"\x05not snappy",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let garbage = snap::raw::Encoder::new()
        .compress_vec(b"\x0a\xff\xff\xff\xff")
        .expect("snappy");
    let r = request(
        base,
        "POST",
        "/api/v1/write",
        &[("Content-Type", "application/x-protobuf")],
        &garbage,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("protobuf"), "{}", r.text());
    let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
    let r = request(
        base,
        "POST",
        "/api/v1/write",
        &[("Content-Type", "application/x-protobuf")],
        &bomb,
    );
    assert_eq!(r.status, 413, "{}", r.text());
    // Nothing stored before is lost, and the server still answers.
    let j = get(base, &format!("/api/v1/query?query=good&time={}", t / 1000)).json();
    assert_eq!(j["data"]["result"][0]["value"][1], "1");
}

#[test]
fn remote_write_v2_reports_written_counts() {
    let s = sextant::TestServer::start().expect("server");
    let base = s.url();
    let t = now_s() * 1000;
    let req = v2::Request {
        symbols: vec![
            "".into(),
            "__name__".into(),
            "dcgm_gpu_utilization".into(),
            "gpu".into(),
            "0".into(),
            "GPU utilization.".into(),
        ],
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 2, 3, 4],
            samples: vec![
                v2::Sample {
                    value: 87.5,
                    timestamp: t,
                    start_timestamp: 0,
                },
                v2::Sample {
                    value: 90.0,
                    timestamp: t + 15_000,
                    start_timestamp: 0,
                },
            ],
            metadata: Some(v2::Metadata {
                r#type: 2,
                help_ref: 5,
                unit_ref: 0,
            }),
            ..Default::default()
        }],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy");
    let r = request(
        base,
        "POST",
        "/api/v1/write",
        &[
            (
                "Content-Type",
                "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            ),
            ("Content-Encoding", "snappy"),
            ("X-Prometheus-Remote-Write-Version", "2.0.0"),
        ],
        &body,
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("X-Prometheus-Remote-Write-Samples-Written"), Some("2"));
    assert_eq!(r.header("X-Prometheus-Remote-Write-Histograms-Written"), Some("0"));
    assert_eq!(r.header("X-Prometheus-Remote-Write-Exemplars-Written"), Some("0"));
    let j = get(
        base,
        &format!("/api/v1/query?query=dcgm_gpu_utilization&time={}", t / 1000 + 15),
    )
    .json();
    assert_eq!(j["data"]["result"][0]["value"][1], "90");
    let j = get(base, "/api/v1/metadata?metric=dcgm_gpu_utilization").json();
    assert_eq!(j["data"]["dcgm_gpu_utilization"][0]["help"], "GPU utilization.");
}

#[test]
fn admin_status_and_self_monitoring_endpoints() {
    let s = sextant::TestServer::start().expect("server");
    let base = s.url();
    let t0 = now_s() - 600;
    load_demo(base, t0);
    let j = get(base, "/api/v1/status/tsdb").json();
    assert_eq!(j["data"]["headStats"]["numSeries"], 4);
    assert_eq!(
        j["data"]["seriesCountByMetricName"][0]["name"],
        "vllm:generation_tokens_total"
    );
    assert_eq!(j["data"]["seriesCountByMetricName"][0]["value"], 4);
    // Flush cuts the head into a block; data reads the same afterwards.
    let before = get(
        base,
        &format!(
            "/api/v1/query?query={}&time={}",
            enc("sum(vllm:generation_tokens_total)"),
            t0 + 300
        ),
    )
    .json();
    let r = request(base, "POST", "/api/v1/admin/tsdb/flush", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!r.json()["data"]["blocks"].as_array().expect("blocks").is_empty());
    let after = get(
        base,
        &format!(
            "/api/v1/query?query={}&time={}",
            enc("sum(vllm:generation_tokens_total)"),
            t0 + 300
        ),
    )
    .json();
    assert_eq!(before["data"], after["data"]);
    // Snapshot.
    let r = request(base, "POST", "/api/v1/admin/tsdb/snapshot", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let name = r.json()["data"]["name"].as_str().expect("name").to_string();
    assert!(s.db().dir().join("snapshots").join(&name).join("blocks").exists());
    // Delete one model's series.
    let r = request(
        base,
        "POST",
        &format!(
            "/api/v1/admin/tsdb/delete_series?match[]={}",
            enc("{model_name=\"llama\"}")
        ),
        &[],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let j = get(
        base,
        &format!(
            "/api/v1/query?query={}&time={}",
            enc("count(vllm:generation_tokens_total)"),
            t0 + 300
        ),
    )
    .json();
    assert_eq!(j["data"]["result"][0]["value"][1], "2");
    // Health, readiness, rules, alerts, flags.
    assert_eq!(get(base, "/-/healthy").status, 200);
    assert_eq!(get(base, "/-/ready").status, 200);
    assert_eq!(
        get(base, "/api/v1/rules").json()["data"]["groups"],
        serde_json::json!([])
    );
    assert_eq!(
        get(base, "/api/v1/alerts").json()["data"]["alerts"],
        serde_json::json!([])
    );
    assert_eq!(get(base, "/api/v1/status/runtimeinfo").json()["status"], "success");
    assert_eq!(
        get(base, "/api/v1/query_exemplars?query=up").json()["data"],
        serde_json::json!([])
    );
    let j = get(
        base,
        &format!("/api/v1/format_query?query={}", enc("sum(rate(x[5m]))by(a)")),
    )
    .json();
    assert_eq!(j["data"], "sum by (a) (rate(x[5m]))");
    let j = get(base, &format!("/api/v1/parse_query?query={}", enc("rate(x[5m])"))).json();
    assert_eq!(j["data"]["type"], "call");
    // Self-monitoring in the text format.
    let m = get(base, "/metrics").text();
    assert!(m.contains("sextant_samples_appended_total 160"), "{m}");
    assert!(
        m.contains("sextant_http_requests_total{handler=\"/api/v1/write\",code=\"204\"}"),
        "{m}"
    );
    assert!(m.contains("sextant_query_seconds_count{type=\"instant\"}"), "{m}");
    let parsed = sextant_ingest::text::parse(&m, 0).expect("valid exposition");
    assert!(parsed.series.len() > 20);
}

#[test]
fn stats_limits_and_warnings_pass_through() {
    let s = sextant::TestServer::start().expect("server");
    let base = s.url();
    let t0 = now_s() - 600;
    load_demo(base, t0);
    let r = get(
        base,
        &format!(
            "/api/v1/query?query={}&time={}&stats=all",
            enc("vllm:generation_tokens_total"),
            t0 + 300
        ),
    );
    let j = r.json();
    assert!(
        j["data"]["stats"]["samples"]["totalQueryableSamples"]
            .as_u64()
            .expect("stats")
            > 0,
        "{j}"
    );
    let j = get(
        base,
        &format!(
            "/api/v1/query?query={}&time={}&limit=1",
            enc("vllm:generation_tokens_total"),
            t0 + 300
        ),
    )
    .json();
    assert_eq!(j["data"]["result"].as_array().expect("result").len(), 1);
    assert_eq!(j["warnings"][0], "results truncated due to limit");
    // An info annotation reaches the client.
    let t = now_s() * 1000;
    assert_eq!(
        write_v1(
            base,
            &v1::WriteRequest {
                timeseries: vec![series(&[("__name__", "kv_usage")], &[(t - 30_000, 1.0), (t, 2.0)])],
                metadata: vec![]
            }
        )
        .status,
        204
    );
    let j = get(
        base,
        &format!("/api/v1/query?query={}&time={}", enc("rate(kv_usage[5m])"), t / 1000),
    )
    .json();
    assert!(
        j["infos"][0].as_str().expect("info").contains("might not be a counter"),
        "{j}"
    );
    let _ = Labels::empty();
}

#[test]
fn otlp_http_json_gzip_and_errors() {
    let s = sextant::TestServer::start().expect("server");
    let base = s.url();
    let t_ns = (now_s() as u64) * 1_000_000_000;
    let body = format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"sglang"}}}}]}},
        "scopeMetrics":[{{"metrics":[{{"name":"queue.depth","unit":"{{request}}","gauge":{{"dataPoints":[{{"asInt":"4","timeUnixNano":"{t_ns}","attributes":[{{"key":"tp.rank","value":{{"intValue":"0"}}}}]}}]}}}},
        {{"name":"bad","exponentialHistogram":{{"dataPoints":[{{"timeUnixNano":"{t_ns}","count":"3"}}],"aggregationTemporality":2}}}}]}}]}}]}}"#
    );
    let r = request(
        base,
        "POST",
        "/v1/metrics",
        &[("Content-Type", "application/json; charset=utf-8")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["partialSuccess"]["rejectedDataPoints"], "1", "{j}");
    assert!(j["partialSuccess"]["errorMessage"]
        .as_str()
        .expect("msg")
        .contains("exponential"));
    let q = get(
        base,
        &format!(
            "/api/v1/query?query={}",
            enc("queue_depth{job=\"sglang\", tp_rank=\"0\"}")
        ),
    )
    .json();
    assert_eq!(q["data"]["result"][0]["value"][1], "4", "{q}");
    // gzip-compressed protobuf on the Prometheus-style path.
    let req = sextant_ingest::otlp::pb::ExportMetricsServiceRequest::default();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &req.encode_to_vec()).expect("gzip");
    let r = request(
        base,
        "POST",
        "/api/v1/otlp/v1/metrics",
        &[("Content-Type", "application/x-protobuf"), ("Content-Encoding", "gzip")],
        &gz.finish().expect("gzip"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Undecodable bodies are 400, unknown content types 415.
    assert_eq!(
        request(
            base,
            "POST",
            "/v1/metrics",
            &[("Content-Type", "application/json")],
            b"{not json"
        )
        .status,
        400
    );
    assert_eq!(
        request(
            base,
            "POST",
            "/v1/metrics",
            &[("Content-Type", "application/x-protobuf")],
            b"\x0a\xff\xff"
        )
        .status,
        400
    );
    assert_eq!(
        request(base, "POST", "/v1/metrics", &[("Content-Type", "text/plain")], b"x").status,
        415
    );
    assert_eq!(
        request(
            base,
            "POST",
            "/v1/metrics",
            &[("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
            b"not gzip"
        )
        .status,
        400
    );
}

#[test]
fn repeat_senders_take_the_cached_path_with_the_same_answers() {
    let s = sextant::TestServer::start().expect("server");
    let base = s.url();
    let t0 = (now_s() - 3600) * 1000;
    let labels = [("__name__", "tokens_total"), ("model", "m")];
    for k in 0..20 {
        let r = write_v1(
            base,
            &v1::WriteRequest {
                timeseries: vec![
                    series(&labels, &[(t0 + k * 15_000, k as f64)]),
                    series(
                        &[("__name__", "other"), ("x", &k.to_string())],
                        &[(t0 + k * 15_000, 1.0)],
                    ),
                ],
                metadata: vec![],
            },
        );
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let m = get(base, "/metrics").text();
    let cached: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("sextant_remote_write_series_cache_entries "))
        .and_then(|v| v.parse().ok())
        .expect("cache gauge");
    assert_eq!(cached, 21.0, "one series repeated, twenty new ones");
    let hits: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("sextant_remote_write_series_cache_hits_total "))
        .and_then(|v| v.parse().ok())
        .expect("hits");
    assert_eq!(
        hits, 19.0,
        "the repeated series took the cached path after its first write"
    );
    let q = format!(
        "/api/v1/query_range?query=tokens_total&start={}&end={}&step=15",
        t0 / 1000,
        t0 / 1000 + 19 * 15
    );
    let j = get(base, &q).json();
    let vals = j["data"]["result"][0]["values"].as_array().expect("values").clone();
    assert_eq!(vals.len(), 20);
    assert_eq!(vals[19][1], "19");
    // A known series still gets every check: a sample too far ahead, an
    // out-of-order one and a conflicting duplicate are each rejected by name.
    for (t, v, what) in [
        (now_s() * 1000 + 7_200_000, 1.0, "future"),
        (t0, 5.0, "out of order"),
        (t0 + 19 * 15_000, 7.0, "duplicate"),
    ] {
        let r = write_v1(
            base,
            &v1::WriteRequest {
                timeseries: vec![series(&labels, &[(t, v)])],
                metadata: vec![],
            },
        );
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert!(
            r.text().contains("tokens_total") && r.text().contains(what),
            "{what}: {}",
            r.text()
        );
    }
    // Its past deleted, the series takes new samples by the same path.
    let r = request(
        base,
        "POST",
        &format!(
            "/api/v1/admin/tsdb/delete_series?match[]=tokens_total&end={}",
            t0 / 1000 + 300
        ),
        &[],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let r = write_v1(
        base,
        &v1::WriteRequest {
            timeseries: vec![series(&labels, &[(t0 + 40 * 15_000, 40.0)])],
            metadata: vec![],
        },
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let j = get(
        base,
        &format!("/api/v1/query?query=tokens_total&time={}", t0 / 1000 + 40 * 15),
    )
    .json();
    assert_eq!(j["data"]["result"][0]["value"][1], "40", "{j}");
}

fn cache_hits(base: &str) -> f64 {
    get(base, "/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("sextant_range_cache_requests_total{result=\"hit\"} "))
        .and_then(|v| v.parse().ok())
        .expect("cache metric")
}

#[test]
fn range_queries_reuse_frozen_steps_and_see_late_writes() {
    let s = sextant::TestServer::start().expect("server");
    let base = s.url();
    let now = now_s();
    let t0 = now - 3600;
    // An hour of a counter, written in one late batch (all older than 10 min).
    let samples: Vec<(i64, f64)> = (0..240).map(|k| ((t0 + k * 15) * 1000, (k * 10) as f64)).collect();
    let r = write_v1(
        base,
        &v1::WriteRequest {
            timeseries: vec![series(&[("__name__", "c_total"), ("m", "a")], &samples)],
            metadata: vec![],
        },
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let q = |start: i64| {
        get(
            base,
            &format!(
                "/api/v1/query_range?query={}&start={start}&end={}&step=30",
                enc("sum by (m) (rate(c_total[5m]))"),
                now
            ),
        )
        .json()
    };
    let first = q(t0);
    let h0 = cache_hits(base);
    let second = q(t0);
    assert_eq!(cache_hits(base), h0 + 1.0, "the second query used the cache");
    assert_eq!(first, second, "the cached answer is the computed one");
    // A dashboard that moved on by two steps still lines up.
    let third = q(t0 + 60);
    assert_eq!(cache_hits(base), h0 + 2.0);
    let later: Vec<serde_json::Value> = first["data"]["result"][0]["values"]
        .as_array()
        .expect("values")
        .iter()
        .filter(|p| p[0].as_f64().unwrap_or(0.0) >= (t0 + 60) as f64)
        .cloned()
        .collect();
    assert_eq!(third["data"]["result"][0]["values"].as_array().expect("values"), &later);
    // A late write of another series over the same hour: the next answer has it.
    let r = write_v1(
        base,
        &v1::WriteRequest {
            timeseries: vec![series(&[("__name__", "c_total"), ("m", "b")], &samples)],
            metadata: vec![],
        },
    );
    assert_eq!(r.status, 204);
    let after = q(t0);
    assert_eq!(after["data"]["result"].as_array().map_or(0, |a| a.len()), 2, "{after}");
    // A delete is seen too.
    let r = request(
        base,
        "POST",
        &format!("/api/v1/admin/tsdb/delete_series?match[]={}", enc("c_total{m=\"b\"}")),
        &[],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let q1 = q(t0);
    let after_delete = q(t0);
    assert_eq!(q1, after_delete);
    assert_eq!(
        after_delete["data"]["result"].as_array().map_or(0, |a| a.len()),
        1,
        "{after_delete}"
    );
    assert_eq!(after_delete, first);
}

#[test]
fn remote_write_skips_unknown_fields_of_every_wire_type() {
    // A 1.0 request with an unknown field 15 as a (deprecated) group, which
    // any protobuf decoder must skip: the series in it is still stored.
    let s = sextant::TestServer::start().expect("server");
    let base = s.url();
    let t = now_s() * 1000;
    let req = v1::WriteRequest {
        timeseries: vec![series(&[("__name__", "with_group_field")], &[(t, 5.0)])],
        metadata: vec![],
    };
    let mut raw = req.encode_to_vec();
    raw.extend_from_slice(&[0x7b, 0x08, 0x01, 0x7c]);
    let r = common::write_v1_raw(base, &raw);
    assert_eq!(r.status, 204, "{}", r.text());
    let v = get(base, &format!("/api/v1/query?query=with_group_field&time={}", t / 1000)).json();
    assert_eq!(v["data"]["result"][0]["value"][1], "5", "{v}");
    // A group left open is malformed: 400, nothing stored.
    let mut bad = req.encode_to_vec();
    bad.extend_from_slice(&[0x7b, 0x08, 0x01]);
    let r = common::write_v1_raw(base, &bad);
    assert_eq!(r.status, 400, "{}", r.text());
}
