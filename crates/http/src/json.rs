//! The Prometheus API's JSON shapes, written directly into a buffer (query
//! results can be large; no intermediate tree is built).

use std::fmt::Write as _;

use sextant_model::Labels;
use sextant_promql::{Annotations, QueryStats, Value};

/// Appends `s` as a JSON string.
pub fn string(out: &mut String, s: &str) {
    out.push('"');
    // Label names and values rarely need escaping: copy them whole then.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A timestamp in seconds with millisecond fraction, as Prometheus writes it.
pub fn timestamp(out: &mut String, t: i64) {
    let (neg, t) = if t < 0 {
        (true, t.unsigned_abs())
    } else {
        (false, t as u64)
    };
    if neg {
        out.push('-');
    }
    let _ = write!(out, "{}", t / 1000);
    let frac = t % 1000;
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
}

/// A sample value as a JSON string: `'f'` formatting except for very small or
/// very large magnitudes, `NaN`, `+Inf`, `-Inf`.
pub fn value(out: &mut String, v: f64) {
    out.push('"');
    let a = v.abs();
    if a == 0.0 || (1e-6..1e21).contains(&a) {
        // The common case, written in place: shortest round-trip digits
        // without an exponent, as `format_value` gives.
        let _ = write!(out, "{v}");
    } else {
        out.push_str(&format_value(v));
    }
    out.push('"');
}

pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let a = v.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        // Go's 'e' format: at least two exponent digits.
        let s = format!("{v:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        let sign = if e < 0 { '-' } else { '+' };
        return format!("{m}e{sign}{:02}", e.abs());
    }
    sextant_promql::format_float_plain(v)
}

pub fn labels(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, lb) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, &lb.name);
        out.push(':');
        string(out, &lb.value);
    }
    out.push('}');
}

/// `{"resultType":...,"result":...}`.
pub fn query_data(out: &mut String, v: &Value) {
    out.push_str("{\"resultType\":\"");
    out.push_str(v.type_name());
    out.push_str("\",\"result\":");
    match v {
        Value::Scalar { t, v } => {
            out.push('[');
            timestamp(out, *t);
            out.push(',');
            value(out, *v);
            out.push(']');
        }
        Value::String { t, v } => {
            out.push('[');
            timestamp(out, *t);
            out.push(',');
            string(out, v);
            out.push(']');
        }
        Value::Vector(samples) => {
            out.push('[');
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                labels(out, &s.labels);
                out.push_str(",\"value\":[");
                timestamp(out, s.t);
                out.push(',');
                value(out, s.v);
                out.push_str("]}");
            }
            out.push(']');
        }
        Value::Matrix(series) => {
            out.push('[');
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                labels(out, &s.labels);
                out.push_str(",\"values\":[");
                for (j, p) in s.points.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    out.push('[');
                    timestamp(out, p.t);
                    out.push(',');
                    value(out, p.v);
                    out.push(']');
                }
                out.push_str("]}");
            }
            out.push(']');
        }
    }
    out.push('}');
}

/// Wraps pre-rendered `data` in the success envelope with annotations.
pub fn success(data: &str, annos: &Annotations, stats: Option<(&QueryStats, bool)>) -> String {
    let mut out = String::with_capacity(data.len() + 64);
    out.push_str("{\"status\":\"success\",\"data\":");
    if let Some((st, _)) = stats {
        // Insert stats inside the data object.
        let trimmed = data.trim_end();
        if let Some(body) = trimmed.strip_suffix('}') {
            out.push_str(body);
            out.push_str(&format!(
                ",\"stats\":{{\"timings\":{{\"evalTotalTime\":{},\"resultSortTime\":0,\"queryPreparationTime\":0,\"innerEvalTime\":{},\"execQueueTime\":0,\"execTotalTime\":{}}},\"samples\":{{\"totalQueryableSamples\":{},\"peakSamples\":{}}}}}}}",
                st.eval_micros as f64 / 1e6,
                st.eval_micros as f64 / 1e6,
                st.eval_micros as f64 / 1e6,
                st.samples_loaded,
                st.peak_samples
            ));
        } else {
            out.push_str(data);
        }
    } else {
        out.push_str(data);
    }
    for (key, list) in [("warnings", &annos.warnings), ("infos", &annos.infos)] {
        if !list.is_empty() {
            out.push_str(",\"");
            out.push_str(key);
            out.push_str("\":[");
            for (i, w) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(&mut out, w);
            }
            out.push(']');
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_timestamps_match_prometheus() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1e21), "1e+21");
        assert_eq!(format_value(1e-7), "1e-07");
        assert_eq!(format_value(123456789.0), "123456789");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        let mut s = String::new();
        timestamp(&mut s, 1_435_781_451_781);
        s.push(' ');
        timestamp(&mut s, 1_500);
        s.push(' ');
        timestamp(&mut s, 2_000);
        s.push(' ');
        timestamp(&mut s, -1_005);
        assert_eq!(s, "1435781451.781 1.500 2 -1.005");
    }

    #[test]
    fn values_written_in_place_equal_format_value() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut values = vec![
            0.0,
            -0.0,
            1e-6,
            -1e-6,
            9.99e-7,
            1e21,
            9.9e20,
            f64::NAN,
            f64::INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
            0.1 + 0.2,
        ];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x);
            values.push(v);
            values.push((x % 1_000_000) as f64 / 1000.0);
        }
        for v in values {
            let mut s = String::new();
            value(&mut s, v);
            assert_eq!(s, format!("\"{}\"", format_value(v)), "{v:e}");
        }
    }

    #[test]
    fn strings_are_escaped_where_json_needs_it_and_copied_elsewhere() {
        let cases = [
            ("plain", "\"plain\""),
            ("µs ✓", "\"µs ✓\""),
            ("a\"b\\c", "\"a\\\"b\\\\c\""),
            ("line\nnext\ttab\r", "\"line\\nnext\\ttab\\r\""),
            ("bell\u{7}", "\"bell\\u0007\""),
        ];
        for (input, want) in cases {
            let mut s = String::new();
            string(&mut s, input);
            assert_eq!(s, want);
            let back: String = serde_json::from_str(&s).expect("valid JSON");
            assert_eq!(back, input);
        }
    }
}
