//! Handlers of the Prometheus HTTP API.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use promql_parser::parser::Expr;
use sextant_model::{Labels, Matcher};
use sextant_promql::{Engine, QueryResult};

use crate::error::{ApiError, ErrorType};
use crate::json;
use crate::params::{Params, MAX_TIME, MIN_TIME};
use crate::AppState;

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "application/json")], body).into_response()
}

fn ok_data(data: serde_json::Value) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::json!({"status": "success", "data": data}).to_string(),
    )
}

fn ok_data_warn(data: serde_json::Value, warnings: Vec<String>) -> Response {
    let mut v = serde_json::json!({"status": "success", "data": data});
    if !warnings.is_empty() {
        v["warnings"] = serde_json::json!(warnings);
    }
    json_response(StatusCode::OK, v.to_string())
}

/// Sets the flag when dropped unless disarmed: a request whose client went away
/// cancels its query.
struct CancelOnDrop(Arc<AtomicBool>, bool);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.1 {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// Where a request's work runs: reads on the query worker threads, which
/// then take a share of their own parts; writes (deletes, flushes,
/// compaction, snapshots), which wait on the disk, on tokio's blocking
/// threads, so that they never hold a worker that queries need.
#[derive(Clone, Copy)]
enum Runs {
    Read,
    Write,
}

/// Runs a read on the query worker threads within the query concurrency
/// limit. A request waits for a free slot at most `wait` (its timeout: the
/// wait counts toward it, as in Prometheus); `f` is told how long it waited.
async fn run_query<T: Send + 'static>(
    st: &Arc<AppState>,
    wait: Option<std::time::Duration>,
    f: impl FnOnce(&AppState, Arc<AtomicBool>, std::time::Duration) -> T + Send + 'static,
) -> Result<T, ApiError> {
    run_in_slot(st, wait, Runs::Read, f).await
}

/// Like [`run_query`] for work that writes, on the blocking threads.
async fn run_write<T: Send + 'static>(
    st: &Arc<AppState>,
    wait: Option<std::time::Duration>,
    f: impl FnOnce(&AppState, Arc<AtomicBool>, std::time::Duration) -> T + Send + 'static,
) -> Result<T, ApiError> {
    run_in_slot(st, wait, Runs::Write, f).await
}

async fn run_in_slot<T: Send + 'static>(
    st: &Arc<AppState>,
    wait: Option<std::time::Duration>,
    runs: Runs,
    f: impl FnOnce(&AppState, Arc<AtomicBool>, std::time::Duration) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let queued = Instant::now();
    let acquire = st.query_slots.clone().acquire_owned();
    let permit = match wait {
        Some(w) => tokio::time::timeout(w, acquire).await.map_err(|_| {
            st.metrics.queries_timed_out_in_queue.fetch_add(1, Ordering::Relaxed);
            ApiError::new(
                ErrorType::Timeout,
                format!(
                    "query timed out in query queue: all {} query slots were busy for {:?} (--query-max-concurrency)",
                    st.cfg.max_concurrent_queries.max(1),
                    w
                ),
            )
        })?,
        None => acquire.await,
    }
    .map_err(|_| ApiError::new(ErrorType::Unavailable, "the server is shutting down"))?;
    let waited = queued.elapsed();
    let cancel = Arc::new(AtomicBool::new(false));
    let mut guard = CancelOnDrop(cancel.clone(), true);
    let st2 = st.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = move || {
        let _permit = permit;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&st2, cancel, waited)));
        let _ = tx.send(r);
    };
    match runs {
        Runs::Read => sextant_model::parallel::spawn(job),
        Runs::Write => drop(tokio::task::spawn_blocking(job)),
    }
    let r = rx.await;
    guard.1 = false;
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(p)) => Err(ApiError::internal(format!(
            "query evaluation failed: {}",
            panic_text(&*p)
        ))),
        Err(_) => Err(ApiError::internal(
            "query evaluation failed: its thread ended without an answer",
        )),
    }
}

fn engine_for(st: &AppState, timeout_ms: Option<i64>) -> Engine {
    let mut opts = st.engine.options().clone();
    if let Some(t) = timeout_ms.filter(|t| *t > 0) {
        let t = std::time::Duration::from_millis(t as u64);
        opts.timeout = Some(opts.timeout.map_or(t, |d| d.min(t)));
    }
    Engine::new(opts)
}

/// `engine` with `waited` (time spent queued) taken off its timeout.
fn after_wait(engine: &Engine, waited: std::time::Duration) -> Engine {
    let mut opts = engine.options().clone();
    opts.timeout = opts.timeout.map(|t| t.saturating_sub(waited));
    Engine::new(opts)
}

fn parse_query(q: &str) -> Result<Expr, ApiError> {
    sextant_promql::parse(q).map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {}", e.msg)))
}

/// The JSON body of a query's answer, cut to `limit` series; the answer is
/// taken, not copied.
fn render(res: QueryResult, stats: bool, limit: Option<usize>) -> String {
    let QueryResult {
        mut value,
        annotations: mut annos,
        stats: query_stats,
    } = res;
    if let Some(l) = limit {
        let truncated = match &mut value {
            sextant_promql::Value::Vector(v) if v.len() > l => {
                v.truncate(l);
                true
            }
            sextant_promql::Value::Matrix(m) if m.len() > l => {
                m.truncate(l);
                true
            }
            _ => false,
        };
        if truncated {
            annos.warnings.push("results truncated due to limit".into());
        }
    }
    let mut data = String::new();
    json::query_data(&mut data, &value);
    json::success(&data, &annos, stats.then_some((&query_stats, true)))
}

pub async fn query(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::parse(q.as_deref(), &body);
    let started = Instant::now();
    let r = query_inner(&st, &p).await;
    st.metrics.instant_queries.observe(started.elapsed().as_secs_f64());
    r.unwrap_or_else(|e| {
        st.metrics.query_errors.fetch_add(1, Ordering::Relaxed);
        e.into_response()
    })
}

async fn query_inner(st: &Arc<AppState>, p: &Params) -> Result<Response, ApiError> {
    let q = p
        .get("query")
        .ok_or_else(|| {
            ApiError::bad_data(
                "invalid parameter \"query\": unknown position: parse error: no expression found in input",
            )
        })?
        .to_string();
    let t = p.time("time")?.unwrap_or_else(now_ms);
    let engine = engine_for(st, p.duration("timeout")?);
    let stats = p.get("stats").is_some();
    let limit = p.limit()?;
    let expr = parse_query(&q)?;
    let wait = engine.options().timeout;
    let res = run_query(st, wait, move |st, cancel, waited| {
        after_wait(&engine, waited)
            .instant_expr(&*st.db, &expr, &q, t, Some(cancel))
            .map_err(ApiError::from)
    })
    .await??;
    Ok(json_response(StatusCode::OK, render(res, stats, limit)))
}

pub async fn query_range(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::parse(q.as_deref(), &body);
    let started = Instant::now();
    let r = query_range_inner(&st, &p).await;
    st.metrics.range_queries.observe(started.elapsed().as_secs_f64());
    r.unwrap_or_else(|e| {
        st.metrics.query_errors.fetch_add(1, Ordering::Relaxed);
        e.into_response()
    })
}

async fn query_range_inner(st: &Arc<AppState>, p: &Params) -> Result<Response, ApiError> {
    let q = p
        .get("query")
        .ok_or_else(|| {
            ApiError::bad_data(
                "invalid parameter \"query\": unknown position: parse error: no expression found in input",
            )
        })?
        .to_string();
    let start = p
        .time("start")?
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"start\": cannot parse \"\" to a valid timestamp"))?;
    let end = p
        .time("end")?
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"end\": cannot parse \"\" to a valid timestamp"))?;
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = p
        .duration("step")?
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"step\": cannot parse \"\" to a valid duration"))?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step >= st.cfg.max_points_per_series {
        return Err(ApiError::bad_data(format!(
            "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
            group_thousands(st.cfg.max_points_per_series)
        )));
    }
    let engine = engine_for(st, p.duration("timeout")?);
    let stats = p.get("stats").is_some();
    let limit = p.limit()?;
    let expr = parse_query(&q)?;
    // Steps old enough to be frozen come from the range cache; only the rest
    // is evaluated.
    let cache = &st.range_cache;
    let use_cache = !stats && cache.cacheable(&q);
    let generation = st.db.old_data_changes();
    let cached = if use_cache {
        cache.get(&q, start, end, step, generation)
    } else {
        None
    };
    let eval_start = cached.as_ref().map_or(start, |c| c.upto + step);
    let mut res = if eval_start > end {
        sextant_promql::QueryResult {
            value: sextant_promql::Value::Matrix(Vec::new()),
            annotations: Default::default(),
            stats: Default::default(),
        }
    } else {
        let q2 = q.clone();
        let wait = engine.options().timeout;
        run_query(st, wait, move |st, cancel, waited| {
            after_wait(&engine, waited)
                .range_expr(&*st.db, &expr, &q2, eval_start, end, step, Some(cancel))
                .map_err(ApiError::from)
        })
        .await??
    };
    if let Some(c) = cached {
        if let sextant_promql::Value::Matrix(m) =
            std::mem::replace(&mut res.value, sextant_promql::Value::Matrix(Vec::new()))
        {
            res.value = sextant_promql::Value::Matrix(crate::range_cache::merge(c.series, m));
        }
        for w in c.annotations.warnings {
            if !res.annotations.warnings.contains(&w) {
                res.annotations.warnings.push(w);
            }
        }
        for i in c.annotations.infos {
            if !res.annotations.infos.contains(&i) {
                res.annotations.infos.push(i);
            }
        }
    }
    if use_cache {
        if let sextant_promql::Value::Matrix(m) = &res.value {
            cache.put(&q, start, end, step, now_ms(), generation, m, &res.annotations);
        }
    }
    Ok(json_response(StatusCode::OK, render(res, stats, limit)))
}

fn group_thousands(n: i64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn matchers_of(p: &Params, required: bool) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let raw = p.all("match[]");
    if raw.is_empty() && required {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    raw.iter()
        .map(|m| {
            sextant_promql::parse_selector(m)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter \"match[]\": {}", e.msg)))
        })
        .collect()
}

fn time_range(p: &Params) -> Result<(i64, i64), ApiError> {
    let start = p.time("start")?.unwrap_or(MIN_TIME);
    let end = p.time("end")?.unwrap_or(MAX_TIME);
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    Ok((start, end))
}

fn labels_json(l: &Labels) -> serde_json::Value {
    serde_json::Value::Object(
        l.iter()
            .map(|x| (x.name.to_string(), serde_json::Value::String(x.value.to_string())))
            .collect(),
    )
}

pub async fn series(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::parse(q.as_deref(), &body);
    let r: Result<Response, ApiError> = async {
        let sets = matchers_of(&p, true)?;
        let (start, end) = time_range(&p)?;
        let limit = p.limit()?;
        let found = run_query(
            &st,
            st.engine.options().timeout,
            move |st, _, _| -> Result<Vec<Labels>, ApiError> {
                let mut all = BTreeSet::new();
                for ms in &sets {
                    all.extend(st.db.series(ms, start, end)?);
                }
                Ok(all.into_iter().collect())
            },
        )
        .await??;
        let mut warnings = Vec::new();
        let mut found = found;
        if let Some(l) = limit {
            if found.len() > l {
                found.truncate(l);
                warnings.push("results truncated due to limit".to_string());
            }
        }
        Ok(ok_data_warn(
            serde_json::Value::Array(found.iter().map(labels_json).collect()),
            warnings,
        ))
    }
    .await;
    r.unwrap_or_else(|e| e.into_response())
}

pub async fn labels(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::parse(q.as_deref(), &body);
    let r: Result<Response, ApiError> = async {
        let sets = matchers_of(&p, false)?;
        let (start, end) = time_range(&p)?;
        let limit = p.limit()?;
        let names = run_query(
            &st,
            st.engine.options().timeout,
            move |st, _, _| -> Result<Vec<String>, ApiError> {
                let mut all = BTreeSet::new();
                if sets.is_empty() {
                    all.extend(st.db.label_names(&[], start, end)?);
                }
                for ms in &sets {
                    all.extend(st.db.label_names(ms, start, end)?);
                }
                Ok(all.into_iter().collect())
            },
        )
        .await??;
        Ok(truncated_list(names, limit))
    }
    .await;
    r.unwrap_or_else(|e| e.into_response())
}

fn truncated_list(mut v: Vec<String>, limit: Option<usize>) -> Response {
    let mut warnings = Vec::new();
    if let Some(l) = limit {
        if v.len() > l {
            v.truncate(l);
            warnings.push("results truncated due to limit".to_string());
        }
    }
    ok_data_warn(serde_json::json!(v), warnings)
}

pub async fn label_values(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let p = Params::parse(q.as_deref(), &[]);
    let r: Result<Response, ApiError> = async {
        // Prometheus 3 accepts UTF-8 names escaped as `U__...`; plain names pass through.
        let name = unescape_label_name(&name);
        if name.is_empty() {
            return Err(ApiError::bad_data("invalid label name: \"\""));
        }
        let sets = matchers_of(&p, false)?;
        let (start, end) = time_range(&p)?;
        let limit = p.limit()?;
        let vals = run_query(
            &st,
            st.engine.options().timeout,
            move |st, _, _| -> Result<Vec<String>, ApiError> {
                let mut all = BTreeSet::new();
                if sets.is_empty() {
                    all.extend(st.db.label_values(&name, &[], start, end)?);
                }
                for ms in &sets {
                    all.extend(st.db.label_values(&name, ms, start, end)?);
                }
                Ok(all.into_iter().collect())
            },
        )
        .await??;
        Ok(truncated_list(vals, limit))
    }
    .await;
    r.unwrap_or_else(|e| e.into_response())
}

/// Decodes Prometheus's `U__` escaping of UTF-8 label names in URL paths.
fn unescape_label_name(n: &str) -> String {
    let Some(rest) = n.strip_prefix("U__") else {
        return n.to_string();
    };
    let mut out = String::new();
    let mut it = rest.chars().peekable();
    while let Some(c) = it.next() {
        if c == '_' {
            if it.peek() == Some(&'_') {
                it.next();
                out.push('_');
                continue;
            }
            let hex: String = it.by_ref().take_while(|c| *c != '_').collect();
            match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                Some(ch) => out.push(ch),
                None => return n.to_string(),
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub async fn metadata(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref(), &[]);
    let limit = p
        .get("limit")
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .map(|n| n as usize);
    let per_metric = p
        .get("limit_per_metric")
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .map(|n| n as usize);
    let metric = p.get("metric").map(str::to_string);
    let md = st.metadata.read();
    let mut names: Vec<&String> = md.keys().filter(|k| metric.as_ref().is_none_or(|m| *k == m)).collect();
    names.sort();
    if let Some(l) = limit {
        names.truncate(l);
    }
    let mut out = serde_json::Map::new();
    for n in names {
        let mut entries: Vec<serde_json::Value> = md[n]
            .iter()
            .map(|m| serde_json::json!({"type": m.kind.as_str(), "help": m.help, "unit": m.unit}))
            .collect();
        if let Some(l) = per_metric {
            entries.truncate(l);
        }
        out.insert(n.clone(), serde_json::Value::Array(entries));
    }
    ok_data(serde_json::Value::Object(out))
}

pub async fn exemplars(RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::parse(q.as_deref(), &body);
    if let Some(qs) = p.get("query") {
        if let Err(e) = parse_query(qs) {
            return e.into_response();
        }
    }
    ok_data(serde_json::json!([]))
}

pub async fn format_query(RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::parse(q.as_deref(), &body);
    let r = (|| -> Result<Response, ApiError> {
        let qs = p
            .get("query")
            .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": no expression found in input"))?;
        let e = parse_query(qs)?;
        Ok(ok_data(serde_json::Value::String(e.prettify())))
    })();
    r.unwrap_or_else(|e| e.into_response())
}

pub async fn parse_query_tree(RawQuery(q): RawQuery, body: Bytes) -> Response {
    parse_query_handler(q, body)
}

fn parse_query_handler(q: Option<String>, body: Bytes) -> Response {
    let p = Params::parse(q.as_deref(), &body);
    let r = (|| -> Result<Response, ApiError> {
        let qs = p
            .get("query")
            .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": no expression found in input"))?;
        let e = parse_query(qs)?;
        Ok(ok_data(crate::api::ast::to_json(&e)))
    })();
    r.unwrap_or_else(|e| e.into_response())
}

pub async fn buildinfo() -> Response {
    ok_data(serde_json::json!({
        "version": "3.0.0",
        "revision": env!("CARGO_PKG_VERSION"),
        "branch": "sextant",
        "buildUser": "sextant",
        "buildDate": "",
        "goVersion": "rust",
        "sextantVersion": env!("CARGO_PKG_VERSION"),
    }))
}

pub async fn tsdb_status(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref(), &[]);
    let limit = match p.get("limit") {
        None => 10,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => return ApiError::bad_data(format!("limit must be a positive number, got {s:?}")).into_response(),
        },
    };
    let s = st.db.stats(limit);
    let pairs = |v: &[(String, u64)]| {
        serde_json::Value::Array(
            v.iter()
                .map(|(n, c)| serde_json::json!({"name": n, "value": c}))
                .collect(),
        )
    };
    let min = if s.head_max_time == i64::MIN {
        0
    } else {
        s.head_min_time
    };
    let max = if s.head_max_time == i64::MIN {
        0
    } else {
        s.head_max_time
    };
    ok_data(serde_json::json!({
        "headStats": {
            "numSeries": s.head_series,
            "numLabelPairs": s.series_count_by_label_value_pair.len(),
            "chunkCount": 0,
            "minTime": min,
            "maxTime": max,
            "memoryBytes": s.head_bytes,
            "blocks": s.num_blocks,
            "blocksBytes": s.blocks_bytes,
            "walBytes": s.wal_bytes,
        },
        "seriesCountByMetricName": pairs(&s.series_count_by_metric_name),
        "labelValueCountByLabelName": pairs(&s.label_value_count_by_label_name),
        "memoryInBytesByLabelName": pairs(&s.memory_in_bytes_by_label_name),
        "seriesCountByLabelValuePair": pairs(&s.series_count_by_label_value_pair),
    }))
}

pub async fn flags(State(st): State<Arc<AppState>>) -> Response {
    let m: serde_json::Map<String, serde_json::Value> = st
        .cfg
        .flags
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    ok_data(serde_json::Value::Object(m))
}

pub async fn runtimeinfo(State(st): State<Arc<AppState>>) -> Response {
    let started =
        chrono::DateTime::<chrono::Utc>::from(st.started).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    ok_data(serde_json::json!({
        "startTime": started,
        "CWD": std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default(),
        "reloadConfigSuccess": true,
        "lastConfigTime": started,
        "corruptionCount": 0,
        "goroutineCount": 0,
        "GOMAXPROCS": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "GOMEMLIMIT": 0,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": st.cfg.retention,
    }))
}

pub async fn config() -> Response {
    ok_data(serde_json::json!({"yaml": ""}))
}

pub async fn rules() -> Response {
    ok_data(serde_json::json!({"groups": []}))
}

pub async fn alerts() -> Response {
    ok_data(serde_json::json!({"alerts": []}))
}

pub async fn targets() -> Response {
    ok_data(serde_json::json!({"activeTargets": [], "droppedTargets": [], "droppedTargetCounts": {}}))
}

pub async fn alertmanagers() -> Response {
    ok_data(serde_json::json!({"activeAlertmanagers": [], "droppedAlertmanagers": []}))
}

pub async fn not_allowed() -> Response {
    ApiError::new(ErrorType::BadData, "method not allowed").into_response()
}

pub async fn delete_series(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::parse(q.as_deref(), &body);
    let r: Result<Response, ApiError> = async {
        let sets = matchers_of(&p, true)?;
        let (start, end) = time_range(&p)?;
        run_write(
            &st,
            st.engine.options().timeout,
            move |st, _, _| -> Result<(), ApiError> {
                for ms in &sets {
                    st.db.delete(ms, start, end)?;
                }
                Ok(())
            },
        )
        .await??;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    r.unwrap_or_else(|e| e.into_response())
}

pub async fn clean_tombstones(State(st): State<Arc<AppState>>) -> Response {
    match run_write(&st, None, |st, _, _| st.db.run_maintenance().map_err(ApiError::from)).await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) | Err(e) => e.into_response(),
    }
}

pub async fn flush(State(st): State<Arc<AppState>>) -> Response {
    match run_write(&st, None, |st, _, _| st.db.flush().map_err(ApiError::from)).await {
        Ok(Ok(metas)) => ok_data(serde_json::json!({
            "blocks": metas.iter().map(|m| serde_json::json!({"id": m.id, "minTime": m.min_time, "maxTime": m.max_time, "numSeries": m.stats.num_series, "numSamples": m.stats.num_samples})).collect::<Vec<_>>()
        })),
        Ok(Err(e)) | Err(e) => e.into_response(),
    }
}

pub async fn snapshot(State(st): State<Arc<AppState>>) -> Response {
    let name = format!(
        "{}-{:08x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        (now_ms() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32
    );
    let n2 = name.clone();
    match run_write(&st, st.engine.options().timeout, move |st, _, _| {
        let dir = st.db.dir().join("snapshots").join(&n2);
        st.db.snapshot(&dir).map_err(ApiError::from)
    })
    .await
    {
        Ok(Ok(_)) => ok_data(serde_json::json!({"name": name})),
        Ok(Err(e)) | Err(e) => e.into_response(),
    }
}

pub async fn healthy() -> Response {
    (StatusCode::OK, "Sextant is Healthy.\n").into_response()
}

pub async fn ready(State(st): State<Arc<AppState>>) -> Response {
    if st.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "Sextant is Ready.\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n").into_response()
    }
}

pub async fn self_metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut body = crate::metrics::render(&st.metrics, &st.db);
    body.push_str(&format!(
        "# HELP sextant_remote_write_series_cache_entries Remote-write series known by their encoded labels.\n# TYPE sextant_remote_write_series_cache_entries gauge\nsextant_remote_write_series_cache_entries {}\n# HELP sextant_remote_write_series_cache_hits_total Remote-write series appended by handle.\n# TYPE sextant_remote_write_series_cache_hits_total counter\nsextant_remote_write_series_cache_hits_total {}\n",
        st.series_cache.len(),
        st.series_cache.hits.load(Ordering::Relaxed)
    ));
    body.push_str(&format!(
        "# HELP sextant_range_cache_requests_total Range queries that found frozen steps in the cache, or not.\n# TYPE sextant_range_cache_requests_total counter\nsextant_range_cache_requests_total{{result=\"hit\"}} {}\nsextant_range_cache_requests_total{{result=\"miss\"}} {}\n",
        st.range_cache.hits.load(Ordering::Relaxed),
        st.range_cache.misses.load(Ordering::Relaxed)
    ));
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

pub(crate) mod ast {
    //! A JSON view of the parsed expression tree, in the shape of Prometheus's
    //! `parse_query` answers.

    use promql_parser::label::MatchOp;
    use promql_parser::parser::{Expr, LabelModifier, Offset};
    use serde_json::{json, Value};

    fn ms(d: &std::time::Duration) -> i64 {
        d.as_millis() as i64
    }

    fn matchers(vs: &promql_parser::parser::VectorSelector) -> Value {
        let mut out = Vec::new();
        if let Some(n) = &vs.name {
            out.push(json!({"type": "=", "name": "__name__", "value": n}));
        }
        for m in &vs.matchers.matchers {
            let op = match m.op {
                MatchOp::Equal => "=",
                MatchOp::NotEqual => "!=",
                MatchOp::Re(_) => "=~",
                MatchOp::NotRe(_) => "!~",
            };
            out.push(json!({"type": op, "name": m.name, "value": m.value}));
        }
        Value::Array(out)
    }

    fn offset(o: &Option<Offset>) -> i64 {
        match o {
            Some(Offset::Pos(d)) => ms(d),
            Some(Offset::Neg(d)) => -ms(d),
            None => 0,
        }
    }

    fn grouping(m: &Option<LabelModifier>) -> (Value, bool) {
        match m {
            Some(LabelModifier::Include(l)) => (json!(l.labels), false),
            Some(LabelModifier::Exclude(l)) => (json!(l.labels), true),
            None => (json!([]), false),
        }
    }

    pub fn to_json(e: &Expr) -> Value {
        match e {
            Expr::NumberLiteral(n) => json!({"type": "numberLiteral", "val": sextant_promql::format_float(n.val)}),
            Expr::StringLiteral(s) => json!({"type": "stringLiteral", "val": s.val}),
            Expr::Paren(p) => json!({"type": "parenExpr", "expr": to_json(&p.expr)}),
            Expr::Unary(u) => json!({"type": "unaryExpr", "op": "-", "expr": to_json(&u.expr)}),
            Expr::VectorSelector(vs) => {
                json!({"type": "vectorSelector", "name": vs.name.clone().unwrap_or_default(), "matchers": matchers(vs), "offset": offset(&vs.offset)})
            }
            Expr::MatrixSelector(m) => {
                json!({"type": "matrixSelector", "range": ms(&m.range), "vectorSelector": to_json(&Expr::VectorSelector(m.vs.clone()))})
            }
            Expr::Subquery(s) => {
                json!({"type": "subquery", "expr": to_json(&s.expr), "range": ms(&s.range), "step": s.step.as_ref().map(ms).unwrap_or(0), "offset": offset(&s.offset)})
            }
            Expr::Aggregate(a) => {
                let (g, without) = grouping(&a.modifier);
                json!({"type": "aggregation", "op": a.op.to_string(), "expr": to_json(&a.expr), "param": a.param.as_ref().map(|p| to_json(p)), "grouping": g, "without": without})
            }
            Expr::Binary(b) => {
                json!({"type": "binaryExpr", "op": b.op.to_string(), "lhs": to_json(&b.lhs), "rhs": to_json(&b.rhs), "bool": b.return_bool()})
            }
            Expr::Call(c) => {
                json!({"type": "call", "func": {"name": c.func.name}, "args": c.args.args.iter().map(|a| to_json(a)).collect::<Vec<_>>()})
            }
            Expr::Extension(_) => json!({"type": "extension"}),
        }
    }
}

/// The message a panic carried, for the error a client gets.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (tempfile::TempDir, Arc<AppState>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sextant_storage::Db::open(dir.path(), Default::default()).expect("open");
        let st = AppState::new(Arc::new(db), crate::ServerConfig::default());
        (dir, st)
    }

    #[tokio::test]
    async fn reads_run_on_the_query_threads_and_writes_off_them() {
        let (_dir, st) = state();
        let name = |_: &AppState, _: Arc<AtomicBool>, _: std::time::Duration| {
            std::thread::current().name().unwrap_or("").to_string()
        };
        let read = run_query(&st, None, name).await.expect("read");
        assert!(read.starts_with("sextant-query-"), "a read ran on {read:?}");
        let write = run_write(&st, None, name).await.expect("write");
        assert!(!write.starts_with("sextant-query-"), "a write ran on {write:?}");
    }

    #[tokio::test]
    async fn a_panicking_query_is_an_internal_error_and_the_threads_go_on() {
        let (_dir, st) = state();
        for runs in [Runs::Read, Runs::Write] {
            let e = run_in_slot(&st, None, runs, |_, _, _| -> u32 { panic!("boom in a query") })
                .await
                .expect_err("a panic is an error");
            assert_eq!(e.kind, ErrorType::Internal);
            assert!(e.msg.contains("boom in a query"), "{}", e.msg);
        }
        // Every slot came back and the workers still answer.
        for _ in 0..3 * st.cfg.max_concurrent_queries {
            assert_eq!(run_query(&st, None, |_, _, _| 7).await.expect("after"), 7);
        }
    }
}
