//! Runs Prometheus's PromQL test scripts (from `SEXTANT_PROMQL_TESTDATA`, by
//! default `../shared/conformance/promql` beside the checkout) and our own in
//! `testdata/promql/`. Every eval that fails must be listed, with a reason, in
//! `testdata/promql/known-failures.txt`; an unlisted failure fails the test, and
//! so does a listed eval that now passes, so the list only shrinks.
//! `SEXTANT_PROMQL_WRITE_KNOWN=1` rewrites the list from the current results.

use std::collections::BTreeMap;

use sextant_promql::promqltest::{repo_root, script_files, Script};
use sextant_promql::EngineOptions;

fn reason_for(file: &str, err: &str) -> String {
    let class = if err.contains("native histogram") || file.starts_with("native_histograms") {
        "native histograms are not supported yet"
    } else if [
        "duration_expression",
        "extended_vectors",
        "fill-modifier",
        "info",
        "limit",
        "start_timestamps",
        "type_and_unit",
    ]
    .iter()
    .any(|f| file.starts_with(f))
    {
        "experimental feature not implemented"
    } else {
        "mismatch"
    };
    let one_line: String = err.replace('\n', " ").chars().take(160).collect();
    format!("{class}: {one_line}")
}

#[test]
fn promql_conformance() {
    let ours = repo_root().join("testdata/promql");
    let known_path = ours.join("known-failures.txt");
    let known_text = std::fs::read_to_string(&known_path).unwrap_or_default();
    let mut known: BTreeMap<String, String> = BTreeMap::new();
    for l in known_text.lines() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (k, r) = l.split_once(' ').unwrap_or((l, ""));
        known.insert(k.to_string(), r.to_string());
    }
    let opts = EngineOptions::default();
    let mut passed = 0usize;
    let mut failed = 0usize;
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    for (prefix, path) in &script_files() {
        let name = format!(
            "{prefix}{}",
            path.file_name().and_then(|s| s.to_str()).unwrap_or_default()
        );
        let text = std::fs::read_to_string(path).expect("read script");
        let script = match Script::parse(&text) {
            Ok(s) => s,
            Err(e) => panic!("{name}: cannot parse script: {e}"),
        };
        let (mut p, mut f) = (0, 0);
        for o in script.run(&opts) {
            match o.error {
                None => p += 1,
                Some(e) => {
                    f += 1;
                    failures.insert(format!("{name}:{}", o.line), reason_for(&name, &e));
                }
            }
        }
        println!("{name}: {p} passed, {f} failed");
        passed += p;
        failed += f;
    }
    if std::env::var_os("SEXTANT_PROMQL_WRITE_KNOWN").is_some() {
        let mut out = String::from(
            "# PromQL evals that do not pass yet, as <file>:<line of the eval> <reason>.\n# The conformance test fails when an eval not listed here fails, or a listed one passes.\n",
        );
        for (k, r) in &failures {
            out.push_str(&format!("{k} {r}\n"));
        }
        std::fs::write(&known_path, out).expect("write known failures");
        known = failures.clone();
    }
    let unexpected: Vec<(&String, &String)> = failures.iter().filter(|(k, _)| !known.contains_key(*k)).collect();
    let fixed: Vec<&String> = known.keys().filter(|k| !failures.contains_key(*k)).collect();
    for (k, e) in &unexpected {
        println!("UNEXPECTED FAILURE {k}: {e}");
    }
    for k in &fixed {
        println!("NOW PASSING (remove from known-failures.txt): {k}");
    }
    println!(
        "{} known failures listed in testdata/promql/known-failures.txt",
        known.len()
    );
    println!("{passed} passed, {failed} failed");
    assert!(
        unexpected.is_empty() && fixed.is_empty(),
        "{} unexpected failures, {} listed evals now pass",
        unexpected.len(),
        fixed.len()
    );
}
