//! Query limits: the sample limit, the timeout and cancellation each stop a
//! query with an error that says which limit was hit.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use sextant_model::{Labels, Sample};
use sextant_promql::{parse, Engine, EngineOptions, ErrorKind, MemStore};

fn store() -> MemStore {
    let s = MemStore::new();
    for i in 0..50 {
        let samples: Vec<Sample> = (0..100).map(|k| Sample::new(k * 15_000, k as f64)).collect();
        s.add(Labels::from_pairs([("__name__", "m"), ("i", &i.to_string())]), &samples);
    }
    s
}

#[test]
fn the_sample_limit_names_itself() {
    let s = store();
    let e = Engine::new(EngineOptions {
        max_samples: 1000,
        ..EngineOptions::default()
    });
    let err = e
        .range(&s, "sum(rate(m[5m]))", 0, 1_500_000, 15_000)
        .expect_err("over the limit");
    assert_eq!(err.kind, ErrorKind::Limit);
    assert!(err.msg.contains("too many samples"), "{}", err.msg);
    let ok = Engine::new(EngineOptions {
        max_samples: 10_000,
        ..EngineOptions::default()
    });
    assert!(ok.range(&s, "sum(rate(m[5m]))", 0, 1_500_000, 15_000).is_ok());
}

#[test]
fn the_timeout_names_itself() {
    let s = store();
    let e = Engine::new(EngineOptions {
        timeout: Some(Duration::ZERO),
        ..EngineOptions::default()
    });
    std::thread::sleep(Duration::from_millis(2));
    let err = e.instant(&s, "sum(m)", 1_000_000).expect_err("timed out");
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(err.msg.contains("timed out"), "{}", err.msg);
}

#[test]
fn cancellation_stops_a_query() {
    let s = store();
    let e = Engine::default();
    let expr = parse("sum(m)").expect("parse");
    let cancel = Arc::new(AtomicBool::new(true));
    let err = e
        .instant_expr(&s, &expr, "sum(m)", 1_000_000, Some(cancel))
        .expect_err("canceled");
    assert_eq!(err.kind, ErrorKind::Canceled);
    assert!(err.msg.contains("canceled"), "{}", err.msg);
}
