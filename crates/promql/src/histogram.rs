//! Classic (`le`-labelled) histogram buckets: quantiles and fractions.

/// One cumulative bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    pub upper: f64,
    pub count: f64,
}

const SMALL_DELTA: f64 = 1e-12;

fn sort_and_coalesce(b: &mut Vec<Bucket>) {
    b.sort_by(|x, y| x.upper.partial_cmp(&y.upper).unwrap_or(std::cmp::Ordering::Equal));
    let mut out: Vec<Bucket> = Vec::with_capacity(b.len());
    for x in b.drain(..) {
        match out.last_mut() {
            Some(l) if l.upper == x.upper => l.count += x.count,
            _ => out.push(x),
        }
    }
    *b = out;
}

/// Forces cumulative counts to be monotonic; the flags say whether a real
/// decrease was fixed and whether only rounding noise was smoothed.
fn ensure_monotonic(b: &mut [Bucket]) -> (bool, bool) {
    let (mut forced, mut fixed) = (false, false);
    let mut prev = b[0].count;
    for x in b.iter_mut().skip(1) {
        let cur = x.count;
        if cur == prev {
            continue;
        }
        if crate::promqltest::almost_equal(prev, cur, SMALL_DELTA) {
            x.count = prev;
            fixed = true;
            continue;
        }
        if cur < prev {
            x.count = prev;
            forced = true;
            continue;
        }
        prev = cur;
    }
    (forced, fixed)
}

/// The φ-quantile of a classic histogram, interpolating linearly within a bucket.
pub(crate) fn bucket_quantile(q: f64, b: &mut Vec<Bucket>) -> (f64, bool, bool) {
    if q.is_nan() {
        return (f64::NAN, false, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false, false);
    }
    sort_and_coalesce(b);
    if b.last().is_none_or(|l| l.upper != f64::INFINITY) {
        return (f64::NAN, false, false);
    }
    let (forced, fixed) = ensure_monotonic(b);
    if b.len() < 2 {
        return (f64::NAN, false, false);
    }
    let observations = b[b.len() - 1].count;
    if observations == 0.0 || observations.is_nan() {
        return (f64::NAN, false, false);
    }
    let mut rank = q * observations;
    let idx = b[..b.len() - 1]
        .iter()
        .position(|x| x.count >= rank)
        .unwrap_or(b.len() - 1);
    if idx == b.len() - 1 {
        return (b[b.len() - 2].upper, forced, fixed);
    }
    if idx == 0 && b[0].upper <= 0.0 {
        return (b[0].upper, forced, fixed);
    }
    let mut start = 0.0;
    let end = b[idx].upper;
    let mut count = b[idx].count;
    if idx > 0 {
        start = b[idx - 1].upper;
        count -= b[idx - 1].count;
        rank -= b[idx - 1].count;
    }
    (start + (end - start) * (rank / count), forced, fixed)
}

/// The fraction of observations between `lower` and `upper`, interpolating
/// linearly within buckets (the first bucket starts at 0 when its bound is positive).
pub(crate) fn bucket_fraction(lower: f64, upper: f64, b: &mut Vec<Bucket>) -> f64 {
    sort_and_coalesce(b);
    if b.last().is_none_or(|l| l.upper != f64::INFINITY) {
        return f64::NAN;
    }
    ensure_monotonic(b);
    let total = b[b.len() - 1].count;
    if total == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let rank_at = |x: f64| -> f64 {
        let mut prev_upper = f64::NEG_INFINITY;
        let mut prev_count = 0.0;
        for (i, bk) in b.iter().enumerate() {
            let lo = if i == 0 {
                if bk.upper > 0.0 {
                    0.0
                } else {
                    f64::NEG_INFINITY
                }
            } else {
                prev_upper
            };
            if x <= lo {
                return prev_count;
            }
            if x < bk.upper {
                if lo.is_infinite() || bk.upper.is_infinite() {
                    return if bk.upper.is_infinite() { prev_count } else { bk.count };
                }
                return prev_count + (bk.count - prev_count) * (x - lo) / (bk.upper - lo);
            }
            prev_upper = bk.upper;
            prev_count = bk.count;
        }
        total
    };
    (rank_at(upper) - rank_at(lower)) / total
}
