//! Request parameters: query string and form bodies, Prometheus time and
//! duration formats.

use crate::error::ApiError;

/// Parameters from the URL query and, for POST, the form-encoded body.
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>, body: &[u8]) -> Params {
        let mut v: Vec<(String, String)> = Vec::new();
        if let Some(q) = query {
            v.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        if !body.is_empty() {
            v.extend(form_urlencoded::parse(body).into_owned());
        }
        Params(v)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(s) => parse_time(s)
                .map(Some)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter \"{name}\": {e}"))),
        }
    }

    pub fn duration(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(s) => parse_duration(s)
                .map(Some)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter \"{name}\": {e}"))),
        }
    }

    pub fn limit(&self) -> Result<Option<usize>, ApiError> {
        match self.get("limit") {
            None => Ok(None),
            Some(s) => match s.parse::<i64>() {
                Ok(0) => Ok(None),
                Ok(n) if n > 0 => Ok(Some(n as usize)),
                _ => Err(ApiError::bad_data(format!(
                    "invalid parameter \"limit\": cannot parse {s:?} to a valid limit"
                ))),
            },
        }
    }
}

/// The earliest and latest times the API accepts, as Prometheus's own bounds.
pub const MIN_TIME: i64 = -9_223_309_901_257_974;
pub const MAX_TIME: i64 = 9_223_309_901_257_974;

/// Parses Unix seconds (with fraction) or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(format!("cannot parse {s:?} to a valid timestamp"));
        }
        let ms = (f * 1000.0).round();
        if ms < MIN_TIME as f64 || ms > MAX_TIME as f64 {
            return Err(format!("cannot parse {s:?} to a valid timestamp"));
        }
        return Ok(ms as i64);
    }
    // Prometheus's own spellings of its minimum and maximum times.
    match s {
        "0001-01-01T00:00:00Z" | "-292273086-05-16T16:47:06Z" => return Ok(MIN_TIME),
        "292277025-08-18T07:12:54.999999999Z" => return Ok(MAX_TIME),
        _ => {}
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_millis())
        .map_err(|_| format!("cannot parse {s:?} to a valid timestamp"))
}

/// Parses a Prometheus duration (`1h30m`, `15s`, `100ms`) or float seconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() || f * 1000.0 > i64::MAX as f64 || f * 1000.0 < i64::MIN as f64 {
            return Err(format!("cannot parse {s:?} to a valid duration. It overflows int64"));
        }
        return Ok((f * 1000.0).round() as i64);
    }
    sextant_promql::promqltest::parse_duration(s).ok_or_else(|| format!("cannot parse {s:?} to a valid duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_form() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("1435781451"), Ok(1_435_781_451_000));
        assert_eq!(parse_time("2015-07-01T20:10:51.781Z"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("2015-07-01T22:10:51.781+02:00"), Ok(1_435_781_451_781));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("NaN").is_err());
    }

    #[test]
    fn durations_in_every_form() {
        assert_eq!(parse_duration("15s"), Ok(15_000));
        assert_eq!(parse_duration("1.5"), Ok(1_500));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn repeated_params_from_query_and_body() {
        let p = Params::parse(Some("match[]=up&match[]=down"), b"match%5B%5D=x&query=1%2B1");
        assert_eq!(p.all("match[]"), vec!["up", "down", "x"]);
        assert_eq!(p.get("query"), Some("1+1"));
    }
}
