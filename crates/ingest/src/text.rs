//! The Prometheus text exposition format (0.0.4), for importing scrapes.

use sextant_model::{Label, Labels, Sample, METRIC_NAME};

use crate::{DecodeError, Metadata, MetricKind, WriteBatch};

fn err(line: usize, msg: impl Into<String>) -> DecodeError {
    DecodeError::Text(format!("line {line}: {}", msg.into()))
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// Parses one exposition; samples without a timestamp get `default_ts` (ms).
pub fn parse(input: &str, default_ts: i64) -> Result<WriteBatch, DecodeError> {
    let mut out = WriteBatch::default();
    let mut kinds: Vec<Metadata> = Vec::new();
    for (i, raw) in input.lines().enumerate() {
        let ln = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let c = c.trim_start();
            let mut parts = c.splitn(3, ' ');
            let kw = parts.next().unwrap_or("");
            let name = parts.next().unwrap_or("").to_string();
            let rest = parts.next().unwrap_or("").to_string();
            let entry = |kinds: &mut Vec<Metadata>| -> usize {
                if let Some(p) = kinds.iter().position(|m| m.metric == name) {
                    return p;
                }
                kinds.push(Metadata {
                    metric: name.clone(),
                    kind: MetricKind::Unknown,
                    help: String::new(),
                    unit: String::new(),
                });
                kinds.len() - 1
            };
            match kw {
                "HELP" => {
                    let p = entry(&mut kinds);
                    kinds[p].help = rest.replace("\\n", "\n").replace("\\\\", "\\");
                }
                "TYPE" => {
                    let p = entry(&mut kinds);
                    kinds[p].kind = match rest.trim() {
                        "counter" => MetricKind::Counter,
                        "gauge" => MetricKind::Gauge,
                        "histogram" => MetricKind::Histogram,
                        "summary" => MetricKind::Summary,
                        "untyped" => MetricKind::Unknown,
                        other => return Err(err(ln, format!("unknown metric type {other:?}"))),
                    };
                }
                _ => {}
            }
            continue;
        }
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        let name = &line[..name_end];
        if name.is_empty() {
            return Err(err(ln, "sample without a metric name"));
        }
        let mut labels = vec![Label::new(METRIC_NAME, name)];
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut r = r;
            loop {
                r = r.trim_start_matches([' ', ',']);
                if let Some(after) = r.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let eq = r.find('=').ok_or_else(|| err(ln, "expected = in label"))?;
                let lname = r[..eq].trim().to_string();
                let after = r[eq + 1..].trim_start();
                let body = after
                    .strip_prefix('"')
                    .ok_or_else(|| err(ln, format!("value of label {lname:?} must be quoted")))?;
                let mut val = String::new();
                let mut chars = body.char_indices();
                let mut end = None;
                while let Some((j, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, 'n')) => val.push('\n'),
                            Some((_, '"')) => val.push('"'),
                            Some((_, '\\')) => val.push('\\'),
                            Some((_, o)) => {
                                val.push('\\');
                                val.push(o);
                            }
                            None => break,
                        },
                        '"' => {
                            end = Some(j);
                            break;
                        }
                        c => val.push(c),
                    }
                }
                let end = end.ok_or_else(|| err(ln, "unterminated label value"))?;
                if labels.iter().any(|l| l.name == lname) {
                    return Err(err(ln, format!("duplicate label {lname:?}")));
                }
                labels.push(Label::new(lname, val));
                r = &body[end + 1..];
            }
        }
        let mut fields = rest.split_whitespace();
        let v = fields.next().ok_or_else(|| err(ln, "sample without a value"))?;
        let v = parse_value(v).ok_or_else(|| err(ln, format!("bad value {v:?}")))?;
        let t = match fields.next() {
            Some(t) => t.parse::<i64>().map_err(|_| err(ln, format!("bad timestamp {t:?}")))?,
            None => default_ts,
        };
        out.samples += 1;
        let l = Labels::from_vec(labels);
        match out.series.last_mut() {
            Some((last, s)) if *last == l => s.push(Sample::new(t, v)),
            _ => out.series.push((l, vec![Sample::new(t, v)])),
        }
    }
    out.metadata = kinds;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_types_labels_escapes_and_special_values() {
        let b = parse(
            "# HELP up Whether up.\n# TYPE up gauge\nup{job=\"a\\\"b\",instance=\"x\"} 1 1000\nrequests_total NaN\nlat_bucket{le=\"+Inf\"} +Inf\n",
            5,
        )
        .expect("parses");
        assert_eq!(b.series.len(), 3);
        assert_eq!(b.series[0].0.get("job"), "a\"b");
        assert_eq!(b.series[0].1[0], Sample::new(1000, 1.0));
        assert!(b.series[1].1[0].v.is_nan());
        assert_eq!(b.series[1].1[0].t, 5);
        assert_eq!(b.metadata[0].kind, MetricKind::Gauge);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("ok 1\nbad{a=1} 2\n", 0).expect_err("fails");
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
