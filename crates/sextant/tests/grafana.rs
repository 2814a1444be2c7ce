//! Every PromQL query of the shipped Grafana dashboards (`docs/grafana/`),
//! with their template variables resolved and substituted the way Grafana
//! does, runs against a server holding the demo fleet and returns data.
//! Also: the demo's incident endpoints.

mod common;

use std::time::{Duration, Instant};

use common::{enc, get, request};
use serde_json::Value;
use sextant::config::DemoSettings;

fn demo_server() -> sextant::TestServer {
    let s = sextant::TestServer::start_demo(DemoSettings {
        series: 2_000,
        backfill_ms: 70 * 60_000,
        interval_ms: 15_000,
        seed: 7,
        schedule: "gpu-xid@-20m:1".into(),
    })
    .expect("server");
    let t = Instant::now();
    while !s.demo().expect("demo").backfilled() {
        assert!(t.elapsed() < Duration::from_secs(120), "demo backfill took too long");
        std::thread::sleep(Duration::from_millis(100));
    }
    s
}

fn api(base: &str, path: &str) -> Value {
    let r = get(base, path);
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(v["status"], "success", "{path}: {v}");
    v["data"].clone()
}

/// Escapes a value for a regex, as Grafana does for multi-value variables.
fn regex_escape(v: &str) -> String {
    let mut s = String::new();
    for c in v.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

fn substitute(expr: &str, vars: &[(String, String)]) -> String {
    let mut e = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h");
    // Longest names first, so `$model_name` is not cut by a shorter one.
    let mut vs: Vec<&(String, String)> = vars.iter().collect();
    vs.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    for (n, v) in vs {
        e = e.replace(&format!("${{{n}}}"), v).replace(&format!("${n}"), v);
    }
    assert!(!e.contains('$'), "unresolved variable in {e}");
    e
}

/// `label_values(selector, label)` resolved through the label-values API.
fn resolve(base: &str, query: &str, vars: &[(String, String)]) -> Vec<String> {
    let q = substitute(query, vars);
    let inner = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unsupported variable query {q}"));
    let (sel, label) = inner.rsplit_once(',').expect("label_values(selector, label)");
    let path = format!("/api/v1/label/{}/values?match[]={}", label.trim(), enc(sel.trim()));
    api(base, &path)
        .as_array()
        .expect("values")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn panels(v: &Value, out: &mut Vec<(String, String)>) {
    for p in v["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((p["title"].as_str().unwrap_or("").to_string(), e.to_string()));
            }
        }
        panels(p, out);
    }
}

#[test]
fn every_grafana_dashboard_query_returns_data() {
    let s = demo_server();
    let base = s.url().to_string();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/grafana");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("docs/grafana")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        3,
        "fleet overview, per model and GPU dashboards: {files:?}"
    );
    let end = sextant_fleet::demo::now_ms() as f64 / 1000.0;
    let mut checked = 0;
    for f in &files {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(f).expect("read")).expect("dashboard JSON");
        let mut queries = Vec::new();
        panels(&d, &mut queries);
        assert!(queries.len() >= 8, "{}: {} queries", f.display(), queries.len());
        // Two passes: every variable at All (or its first value when it has
        // no All), then every variable at one value.
        for pass in 0..2 {
            let mut vars: Vec<(String, String)> = Vec::new();
            for v in d["templating"]["list"].as_array().expect("templating") {
                let name = v["name"].as_str().expect("name").to_string();
                if v["type"] == "datasource" {
                    vars.push((name, "sextant".into()));
                    continue;
                }
                let q = v["query"]["query"]
                    .as_str()
                    .or(v["query"].as_str())
                    .expect("variable query");
                let values = resolve(&base, q, &vars);
                assert!(!values.is_empty(), "{}: variable {name} has no values", f.display());
                let all = v["includeAll"].as_bool().unwrap_or(false);
                let value = if all && pass == 0 {
                    v["allValue"].as_str().unwrap_or(".*").to_string()
                } else if all {
                    regex_escape(&values[values.len() / 2])
                } else {
                    values[values.len() / 2].clone()
                };
                vars.push((name, value));
            }
            for (title, expr) in &queries {
                let e = substitute(expr, &vars);
                let r = api(
                    &base,
                    &format!(
                        "/api/v1/query_range?query={}&start={}&end={end}&step=60",
                        enc(&e),
                        end - 3600.0
                    ),
                );
                let n = r["result"].as_array().map_or(0, |a| a.len());
                assert!(n > 0, "{} / {title}: no data for {e} (vars {vars:?})", f.display());
                let i = api(&base, &format!("/api/v1/query?query={}&time={end}", enc(&e)));
                assert!(i["result"].is_array(), "{title}: {i}");
                checked += 1;
            }
        }
    }
    eprintln!("{checked} dashboard queries returned data");
    assert!(checked >= 60, "{checked}");
}

#[test]
fn demo_incidents_are_injected_listed_and_ended_on_command() {
    let s = demo_server();
    let base = s.url().to_string();
    let info = api(&base, "/api/v1/demo");
    assert!(info["series"].as_u64().expect("series") > 1_000, "{info}");
    assert_eq!(info["backfilled"], true);
    // The scheduled XID is in the past and visible.
    let x = api(
        &base,
        &format!(
            "/api/v1/query?query={}",
            enc("max_over_time(DCGM_FI_DEV_XID_ERRORS[1h]) > 0")
        ),
    );
    assert_eq!(x["result"].as_array().map_or(0, |a| a.len()), 1, "{x}");

    let bad = request(&base, "POST", "/api/v1/demo/incidents?kind=meltdown", &[], b"");
    assert_eq!(bad.status, 400);
    let body = String::from_utf8_lossy(&bad.body);
    assert!(body.contains("meltdown") && body.contains("replica-down"), "{body}");
    let bad = request(
        &base,
        "POST",
        "/api/v1/demo/incidents?kind=zone-skew&duration=soon",
        &[],
        b"",
    );
    assert_eq!(bad.status, 400);

    let r = request(
        &base,
        "POST",
        "/api/v1/demo/incidents?kind=replica-down&target=2",
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v: Value = serde_json::from_slice(&r.body).expect("json");
    let desc = v["data"]["description"].as_str().expect("description").to_string();
    let instance = desc.split_whitespace().nth(1).expect("instance").to_string();
    let list = api(&base, "/api/v1/demo/incidents");
    assert_eq!(list.as_array().map_or(0, |a| a.len()), 2, "{list}");
    // The next scrape writes up == 0 for the replica that went down.
    let q = format!("up{{instance=\"{instance}\"}} == 0");
    let t = Instant::now();
    loop {
        let d = api(&base, &format!("/api/v1/query?query={}", enc(&q)));
        if d["result"].as_array().is_some_and(|a| a.len() == 1) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "replica {instance} never went down"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let ended = request(&base, "DELETE", "/api/v1/demo/incidents", &[], b"");
    let v: Value = serde_json::from_slice(&ended.body).expect("json");
    assert_eq!(v["data"]["ended"], 2, "{v}");
    let list = api(&base, "/api/v1/demo/incidents");
    assert!(
        list.as_array().expect("list").iter().all(|x| x["active"] == false),
        "{list}"
    );
}
