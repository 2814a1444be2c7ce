use crate::Timestamp;

/// Bit pattern of Prometheus's stale marker, a NaN that ends a series.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The stale marker as a float. Compare with [`is_stale_nan`], never with `==`.
pub const STALE_NAN: f64 = f64::from_bits(STALE_NAN_BITS);

/// Whether `v` is exactly the stale marker (other NaNs are ordinary values).
#[inline]
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One float sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub t: Timestamp,
    pub v: f64,
}

impl Sample {
    pub fn new(t: Timestamp, v: f64) -> Self {
        Sample { t, v }
    }
}

impl PartialEq for Sample {
    /// Bit-exact comparison so NaNs (and the stale marker) compare as stored.
    fn eq(&self, o: &Self) -> bool {
        self.t == o.t && self.v.to_bits() == o.v.to_bits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_marker_is_distinguished_from_nan() {
        assert!(is_stale_nan(STALE_NAN));
        assert!(STALE_NAN.is_nan());
        assert!(!is_stale_nan(f64::NAN));
    }
}
