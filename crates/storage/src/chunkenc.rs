//! Columnar chunk codecs. A chunk holds up to [`MAX_CHUNK_SAMPLES`] samples of one
//! series as two independent bit streams: a timestamp column (delta-of-delta
//! with bucketed widths, so a regular scrape interval costs one bit a sample) and
//! a value column, which is either
//! - `Int`: values that are all integers (counters, histogram buckets), coded as
//!   bucketed delta-of-delta of the integers, or
//! - `Decimal(k)`: values that are all exactly `m / 10^k`, coded as the integers `m`,
//! - `Float`: Gorilla-style XOR against the previous value.
//!
//! A chunk starts in `Int` mode and is re-coded to the smallest decimal scale
//! that holds every value, or to `Float`, when a value does not fit. Every value, NaN payloads and the
//! stale marker included, round-trips bit-exactly. The byte layout is specified
//! in `docs/format/chunks.md`.

use std::sync::{Arc, OnceLock};

use sextant_model::Sample;

use crate::bits::{put_uvarint, put_varint, BitReader, BitWriter, ByteReader};
use crate::headchunks::{ChunkFile, Segment};

/// Samples per chunk before a new one is cut.
pub const MAX_CHUNK_SAMPLES: usize = 240;

/// Encoding of a value column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Exact integers.
    Int,
    /// Exact decimals `m / 10^k` stored as the integers `m` (k in 1..=9).
    Decimal(u8),
    /// Anything else, XOR-coded.
    Float,
    /// Exact integers coded with parameters fitted to the chunk: written by
    /// [`encode`] for blocks, never by the head's appender.
    FittedInt,
    /// Exact decimals `m / 10^k`, the integers `m` coded as in `FittedInt`.
    FittedDecimal(u8),
    /// Exact integers packed in codes of one width (the integers less their
    /// least, or each delta less the least delta): any value is found
    /// without decoding those before it. Written by [`encode_block`] only.
    PackedInt,
    /// Exact decimals `m / 10^k`, the integers `m` packed as in `PackedInt`.
    PackedDecimal(u8),
}

/// Largest decimal scale tried.
pub const MAX_DECIMAL_SCALE: u8 = 9;

const POW10: [f64; 10] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

impl ValueKind {
    /// Every kind, in the order of their index bytes but for the packed ones.
    /// The packed ones come last, so that the kinds before them keep the
    /// places they had (fuzzing inputs pick a kind by its place).
    pub const ALL: [ValueKind; 31] = {
        let mut all = [ValueKind::Int; 31];
        all[1] = ValueKind::Float;
        all[2] = ValueKind::FittedInt;
        all[21] = ValueKind::PackedInt;
        let mut k = 1;
        while k <= MAX_DECIMAL_SCALE {
            all[2 + k as usize] = ValueKind::Decimal(k);
            all[11 + k as usize] = ValueKind::FittedDecimal(k);
            all[21 + k as usize] = ValueKind::PackedDecimal(k);
            k += 1;
        }
        all
    };

    /// The kind's byte in the index: 1 Int, 2 Float, 3 FittedInt, 4
    /// PackedInt, 16 + k for Decimal(k), 32 + k for FittedDecimal(k), 48 + k
    /// for PackedDecimal(k).
    pub fn to_byte(self) -> u8 {
        match self {
            ValueKind::Int => 1,
            ValueKind::Float => 2,
            ValueKind::FittedInt => 3,
            ValueKind::PackedInt => 4,
            ValueKind::Decimal(k) => 16 + k,
            ValueKind::FittedDecimal(k) => 32 + k,
            ValueKind::PackedDecimal(k) => 48 + k,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(ValueKind::Int),
            2 => Some(ValueKind::Float),
            3 => Some(ValueKind::FittedInt),
            4 => Some(ValueKind::PackedInt),
            17..=25 => Some(ValueKind::Decimal(b - 16)),
            33..=41 => Some(ValueKind::FittedDecimal(b - 32)),
            49..=57 => Some(ValueKind::PackedDecimal(b - 48)),
            _ => None,
        }
    }

    /// Whether the kind is packed (its values found without decoding those
    /// before them).
    pub fn is_packed(self) -> bool {
        matches!(self, ValueKind::PackedInt | ValueKind::PackedDecimal(_))
    }
}

/// The mantissa `m` with `m / 10^k == v` bit for bit, if there is one.
#[inline]
pub fn decimal_mantissa(v: f64, k: u8) -> Option<i64> {
    if !v.is_finite() {
        return None;
    }
    let p = POW10[k as usize];
    let m = (v * p).round();
    if m.abs() >= 9_007_199_254_740_992.0 {
        return None;
    }
    let mi = m as i64;
    ((mi as f64 / p).to_bits() == v.to_bits()).then_some(mi)
}

/// The smallest decimal scale at which `v` is exact.
fn min_scale(v: f64) -> Option<u8> {
    (1..=MAX_DECIMAL_SCALE).find(|k| decimal_mantissa(v, *k).is_some())
}

/// Integers of magnitude below 2^53 are exact in f64; -0.0 is not an integer here
/// because its sign would be lost.
#[inline]
pub fn as_exact_int(v: f64) -> Option<i64> {
    // Below 2^53 the cast truncates exactly, so it round-trips only for
    // integers (a cast and a compare, where `fract` is a library call).
    if v.is_nan() || v.abs() >= 9_007_199_254_740_992.0 {
        return None;
    }
    let i = v as i64;
    (i as f64 == v && !(i == 0 && v.is_sign_negative())).then_some(i)
}

// Bucketed signed integer codes: a unary prefix selects the width.
const TS_WIDTHS: [u8; 4] = [14, 17, 20, 64];
const INT_WIDTHS: [u8; 4] = [5, 12, 24, 64];

/// A fitted column's second width is its first plus one of these.
const FIT_STEPS: [u8; 4] = [2, 4, 7, 10];

/// Bits a bucketed code of `v` needs as a two's-complement field: 0 for zero
/// (which has its own one-bit code), else the smallest `b` with `fits(v, b)`.
#[inline]
fn field_bits(v: i64) -> usize {
    if v == 0 {
        0
    } else {
        65 - (v ^ (v >> 63)).leading_zeros() as usize
    }
}

/// Field-width histogram of a column's codes: `h[b]` codes need `b` bits.
struct WidthHistogram {
    h: [u32; 65],
}

impl WidthHistogram {
    fn of(codes: impl Iterator<Item = i64>) -> Self {
        let mut h = [0u32; 65];
        for c in codes {
            h[field_bits(c)] += 1;
        }
        WidthHistogram { h }
    }

    /// Bits the codes take with the widths `[w1, w1 + FIT_STEPS[s], 24, 64]`,
    /// and `(w1, s)`, for the cheapest `w1` in 1..=8 and step index `s`.
    fn best(&self) -> (u64, (u8, usize)) {
        // le[b]: codes whose field needs at most b bits, zero codes excluded.
        let mut le = [0u64; 65];
        for b in 1..65 {
            le[b] = le[b - 1] + self.h[b] as u64;
        }
        let zeros = self.h[0] as u64;
        let mut best = (u64::MAX, (5, 0));
        for w1 in 1..=8u8 {
            for (s, step) in FIT_STEPS.into_iter().enumerate() {
                let (a, b) = (w1 as usize, (w1 + step) as usize);
                let bits = zeros
                    + (2 + a as u64) * le[a]
                    + (3 + b as u64) * (le[b] - le[a])
                    + 28 * (le[24] - le[b])
                    + 68 * (le[64] - le[24]);
                if bits < best.0 {
                    best = (bits, (w1, s));
                }
            }
        }
        best
    }
}

/// Codes integers as a fitted column: the first value in 64 bits; then a
/// header (one bit for the mode, three for `w1 - 1`, two for the index of the
/// step in [`FIT_STEPS`]); then, for every later value, a bucketed code with
/// the widths `[w1, w1 + step, 24, 64]`. Mode 0 codes the first delta and
/// then each change of the delta, as the head's columns do; mode 1 codes a
/// base (bucketed with the `Int` widths) and then each delta minus the base,
/// which suits counters whose increments vary around a level. Mode, widths
/// and base are the ones that make the column shortest. The bit offset of
/// the code of every sample `i` in `points` (sorted, each above zero) goes
/// to `marks`. Returns the column and whether it took mode 1.
fn fit_ints(ints: &[i64], points: &[usize], marks: &mut Vec<usize>) -> (Vec<u8>, bool) {
    let mut w = BitWriter::new();
    let Some(&first) = ints.first() else {
        return (Vec::new(), false);
    };
    w.write_bits(first as u64, 64);
    if ints.len() == 1 {
        return (w.into_bytes(), false);
    }
    let mut next = 0;
    let mut mark = |i: usize, w: &BitWriter| {
        if points.get(next) == Some(&i) {
            marks.push(w.bit_len());
            next += 1;
        }
    };
    let deltas: Vec<i64> = ints.windows(2).map(|p| p[1].wrapping_sub(p[0])).collect();
    let dods = || std::iter::once(deltas[0]).chain(deltas.windows(2).map(|p| p[1].wrapping_sub(p[0])));
    let (dod_bits, mut fit) = WidthHistogram::of(dods()).best();
    // Codes of one bit each (a steady counter, a constant) cannot be beaten.
    let (mut by_delta, mut base) = (false, 0);
    if dod_bits > deltas.len() as u64 {
        let mut sorted = deltas.clone();
        let mid = sorted.len() / 2;
        base = *sorted.select_nth_unstable(mid).1;
        let (delta_bits, delta_fit) = WidthHistogram::of(deltas.iter().map(|d| d.wrapping_sub(base))).best();
        by_delta = delta_bits + bucketed_bits(base, &INT_WIDTHS) < dod_bits;
        if by_delta {
            fit = delta_fit;
        }
    }
    let (w1, step) = fit;
    let widths = [w1, w1 + FIT_STEPS[step], 24, 64];
    w.write_bit(by_delta);
    w.write_bits((w1 - 1) as u64, 3);
    w.write_bits(step as u64, 2);
    if by_delta {
        write_bucketed(&mut w, base, &INT_WIDTHS);
        for (k, d) in deltas.iter().enumerate() {
            mark(k + 1, &w);
            write_bucketed(&mut w, d.wrapping_sub(base), &widths);
        }
    } else {
        for (k, c) in dods().enumerate() {
            mark(k + 1, &w);
            write_bucketed(&mut w, c, &widths);
        }
    }
    (w.into_bytes(), by_delta)
}

/// Packs integers (`docs/format/chunks.md`, the packed kinds): a header
/// byte (bit 7 the mode, bits 0-5 the width `w`); in mode 0, the least
/// integer as a zigzag varint and then every integer less it in `w` bits;
/// in mode 1, the first integer and the least delta as zigzag varints and
/// then every later delta less the least in `w` bits. The codes follow the
/// header, most significant bit first. The mode whose codes take fewer
/// bits is chosen (mode 0 on a tie: it needs no sums to find a value).
/// Returns the column and, for the restart points `points` (sorted, each
/// above zero) of a column in mode 1, its restart table: for each point
/// `i`, the sum of the codes from the previous point's (the first: from
/// code 0) up to code `i - 1`, as a uvarint. A column in mode 0 has none.
fn pack_ints(ints: &[i64], points: &[usize]) -> (Vec<u8>, Vec<u8>) {
    let width = |lo: i64, hi: i64| 64 - (hi.wrapping_sub(lo) as u64).leading_zeros();
    let (lo, hi) = ints
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let (dlo, dhi) = ints
        .windows(2)
        .map(|p| p[1].wrapping_sub(p[0]))
        .fold((i64::MAX, i64::MIN), |(lo, hi), d| (lo.min(d), hi.max(d)));
    let w0 = if ints.is_empty() { 0 } else { width(lo, hi) };
    let w1 = if ints.len() < 2 { 0 } else { width(dlo, dhi) };
    let n = ints.len() as u64;
    let by_delta = ints.len() >= 2 && (n - 1) * w1 as u64 + 64 < n * w0 as u64;
    let mut out = Vec::with_capacity(24 + (ints.len() * w0 as usize).div_ceil(8));
    let mut table = Vec::new();
    let mut w = BitWriter::new();
    if by_delta {
        out.push(0x80 | w1 as u8);
        put_varint(&mut out, ints[0]);
        put_varint(&mut out, dlo);
        let (mut sum, mut next) = (0u64, points.iter().peekable());
        for (j, p) in ints.windows(2).enumerate() {
            // Code `j` is delta `j + 1`'s; a point `i` sums codes up to `i - 1`.
            while next.peek().is_some_and(|&&i| i <= j + 1) {
                next.next();
                put_uvarint(&mut table, sum);
                sum = 0;
            }
            let code = p[1].wrapping_sub(p[0]).wrapping_sub(dlo) as u64;
            sum = sum.wrapping_add(code);
            put_code(&mut w, code, w1);
        }
        for _ in next {
            put_uvarint(&mut table, sum);
            sum = 0;
        }
    } else {
        out.push(w0 as u8);
        put_varint(&mut out, if ints.is_empty() { 0 } else { lo });
        for &v in ints {
            put_code(&mut w, v.wrapping_sub(lo) as u64, w0);
        }
    }
    out.extend_from_slice(&w.into_bytes());
    (out, table)
}

/// Writes the low `w` bits of `code` (`w` at most 64; none when 0).
fn put_code(wr: &mut BitWriter, code: u64, w: u32) {
    if w > 0 {
        wr.write_bits(code, w as u8);
    }
}

/// Bits [`write_bucketed`] takes for `v`.
fn bucketed_bits(v: i64, widths: &[u8; 4]) -> u64 {
    if v == 0 {
        return 1;
    }
    match widths[..3].iter().position(|&b| fits(v, b)) {
        Some(i) => (i + 2) as u64 + widths[i] as u64,
        None => 4 + widths[3] as u64,
    }
}

#[inline]
fn fits(v: i64, bits: u8) -> bool {
    if bits >= 64 {
        return true;
    }
    let lim = 1i64 << (bits - 1);
    v >= -lim && v < lim
}

#[inline]
fn write_bucketed(w: &mut BitWriter, v: i64, widths: &[u8; 4]) {
    if v == 0 {
        w.write_bit(false);
        return;
    }
    for (i, &bits) in widths[..3].iter().enumerate() {
        if fits(v, bits) {
            // Prefix: i+1 ones and a zero; with the field at most 4 + 24
            // bits, written at once.
            let prefix = ((1u64 << (i + 1)) - 1) << 1;
            let field = v as u64 & ((1u64 << bits) - 1);
            w.write_bits(prefix << bits | field, i as u8 + 2 + bits);
            return;
        }
    }
    // The last bucket: four ones, then all 64 bits.
    w.write_bits(0b1111, 4);
    w.write_bits(v as u64, widths[3]);
}

#[inline(always)]
fn read_bucketed(r: &mut BitReader<'_>, widths: &[u8; 4]) -> Option<i64> {
    // Fast path for the two commonest codes, `0` and `10` + first width.
    let w0 = widths[0] as u32;
    if let Some(top) = r.peek(2 + w0) {
        if top >> (w0 + 1) == 0 {
            r.skip(1);
            return Some(0);
        }
        if top >> w0 == 0b10 {
            r.skip(2 + w0);
            let raw = top & ((1u64 << w0) - 1);
            let shift = 64 - w0;
            return Some(((raw << shift) as i64) >> shift);
        }
    }
    let ones = r.read_unary(widths.len() as u8)?;
    if ones == 0 {
        return Some(0);
    }
    let bits = widths[(ones - 1) as usize];
    let raw = r.read_bits(bits)?;
    if bits == 64 {
        return Some(raw as i64);
    }
    // Sign-extend.
    let shift = 64 - bits as u32;
    Some(((raw << shift) as i64) >> shift)
}

/// Appends samples to a chunk, keeping the state needed to continue the streams.
#[derive(Debug, Clone)]
pub struct ChunkAppender {
    n: u16,
    kind: ValueKind,
    ts: BitWriter,
    vals: BitWriter,
    mint: i64,
    last_t: i64,
    last_dt: i64,
    // Int state.
    last_iv: i64,
    last_idv: i64,
    // Float state.
    last_bits: u64,
    leading: u8,
    trailing: u8,
    /// Where a decode of the chunk's second half starts.
    mark: Mark,
}

/// Samples before a chunk's restart point: a read of only its newest samples
/// (an instant query, a dashboard's newest steps) decodes from there.
const MARK_AT: usize = MAX_CHUNK_SAMPLES / 2;

/// The state of both streams after the first [`MARK_AT`] samples of an open
/// chunk, from which decoding can resume. It lives only in memory: a sealed
/// chunk has none.
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    /// Bit offsets of sample `MARK_AT` in the two columns; 0 while there is
    /// no mark (the first sample alone takes 64 bits). At most about 9,300
    /// bits precede sample 120 in either column.
    ts_bit: u16,
    val_bit: u16,
    /// Timestamp of sample `MARK_AT - 1` and the delta that led to it.
    t: i64,
    dt: i64,
    /// Int and decimal columns: the integer of sample `MARK_AT - 1` and its
    /// delta. Float columns: its bits and, in `dv`, the leading and trailing
    /// zero counts of the XOR window (`leading << 8 | trailing`).
    v: i64,
    dv: i64,
}

impl Mark {
    fn is_set(&self) -> bool {
        self.ts_bit != 0
    }
}

impl Default for ChunkAppender {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkAppender {
    pub fn new() -> Self {
        ChunkAppender {
            n: 0,
            kind: ValueKind::Int,
            ts: BitWriter::new(),
            vals: BitWriter::new(),
            mint: 0,
            last_t: 0,
            last_dt: 0,
            last_iv: 0,
            last_idv: 0,
            last_bits: 0,
            leading: 0xff,
            trailing: 0,
            mark: Mark::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn is_full(&self) -> bool {
        self.n as usize >= MAX_CHUNK_SAMPLES
    }

    pub fn mint(&self) -> i64 {
        self.mint
    }

    pub fn maxt(&self) -> i64 {
        self.last_t
    }

    pub fn kind(&self) -> ValueKind {
        self.kind
    }

    /// Appends a sample; the caller guarantees `t` is greater than the last one.
    pub fn append(&mut self, t: i64, v: f64) {
        if self.n as usize == MARK_AT {
            self.mark = Mark {
                ts_bit: self.ts.bit_len() as u16,
                t: self.last_t,
                dt: self.last_dt,
                ..Mark::default()
            };
            self.mark_values();
        }
        self.append_ts(t);
        match self.kind {
            ValueKind::Int => match as_exact_int(v) {
                Some(iv) => self.append_int(iv),
                None => self.widen_and_append(v),
            },
            ValueKind::Decimal(k) => match decimal_mantissa(v, k) {
                Some(m) => self.append_int(m),
                None => self.widen_and_append(v),
            },
            // The appender holds only the three head kinds; the fitted and
            // packed ones come from `encode` and `encode_block`, which code
            // their values themselves.
            ValueKind::Float
            | ValueKind::FittedInt
            | ValueKind::FittedDecimal(_)
            | ValueKind::PackedInt
            | ValueKind::PackedDecimal(_) => self.append_float(v),
        }
        self.n += 1;
    }

    /// Records the value column's state in the mark, which is at the current
    /// sample.
    fn mark_values(&mut self) {
        self.mark.val_bit = self.vals.bit_len() as u16;
        (self.mark.v, self.mark.dv) = match self.kind {
            ValueKind::Float => (self.last_bits as i64, (self.leading as i64) << 8 | self.trailing as i64),
            _ => (self.last_iv, self.last_idv),
        };
    }

    /// `v` does not fit the current kind: re-code the chunk at the smallest
    /// decimal scale that holds every value, or as floats.
    fn widen_and_append(&mut self, v: f64) {
        let n = self.n as usize;
        let cur = match self.kind {
            ValueKind::Decimal(k) => k,
            _ => 0,
        };
        // The column is this appender's own, so it decodes.
        let mut ints = vec![Sample { t: 0, v: 0.0 }; n];
        let _ = decode_dod(self.vals.bytes(), &INT_WIDTHS, n, &mut Ints::ints(&mut ints));
        let mut old: Vec<f64> = ints.iter().map(|s| s.v / POW10[cur as usize]).collect();
        old.push(v);
        let start = min_scale(v).map(|k| k.max(cur.max(1)));
        let scale = start
            .and_then(|s| (s..=MAX_DECIMAL_SCALE).find(|k| old.iter().all(|x| decimal_mantissa(*x, *k).is_some())));
        self.vals = BitWriter::new();
        self.leading = 0xff;
        self.trailing = 0;
        match scale {
            Some(k) => {
                self.kind = ValueKind::Decimal(k);
                for (i, x) in old.iter().enumerate() {
                    self.n = i as u16;
                    if self.mark.is_set() && i == MARK_AT {
                        self.mark_values();
                    }
                    self.append_int(decimal_mantissa(*x, k).unwrap_or(0));
                }
            }
            None => {
                self.kind = ValueKind::Float;
                for (i, x) in old.iter().enumerate() {
                    self.n = i as u16;
                    if self.mark.is_set() && i == MARK_AT {
                        self.mark_values();
                    }
                    self.append_float(*x);
                }
            }
        }
        self.n = n as u16;
    }

    fn append_ts(&mut self, t: i64) {
        match self.n {
            0 => {
                self.ts.write_bits(t as u64, 64);
                self.mint = t;
            }
            1 => {
                let dt = t.wrapping_sub(self.last_t);
                write_bucketed(&mut self.ts, dt, &TS_WIDTHS);
                self.last_dt = dt;
            }
            _ => {
                let dt = t.wrapping_sub(self.last_t);
                write_bucketed(&mut self.ts, dt.wrapping_sub(self.last_dt), &TS_WIDTHS);
                self.last_dt = dt;
            }
        }
        self.last_t = t;
    }

    fn append_int(&mut self, iv: i64) {
        match self.n {
            0 => self.vals.write_bits(iv as u64, 64),
            1 => {
                let d = iv.wrapping_sub(self.last_iv);
                write_bucketed(&mut self.vals, d, &INT_WIDTHS);
                self.last_idv = d;
            }
            _ => {
                let d = iv.wrapping_sub(self.last_iv);
                write_bucketed(&mut self.vals, d.wrapping_sub(self.last_idv), &INT_WIDTHS);
                self.last_idv = d;
            }
        }
        self.last_iv = iv;
    }

    fn append_float(&mut self, v: f64) {
        let bits = v.to_bits();
        if self.n == 0 {
            self.vals.write_bits(bits, 64);
            self.last_bits = bits;
            return;
        }
        let x = bits ^ self.last_bits;
        self.last_bits = bits;
        if x == 0 {
            self.vals.write_bit(false);
            return;
        }
        self.vals.write_bit(true);
        let mut leading = x.leading_zeros() as u8;
        let trailing = x.trailing_zeros() as u8;
        if leading >= 32 {
            leading = 31;
        }
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            self.vals.write_bit(false);
            let sig = 64 - self.leading - self.trailing;
            self.vals.write_bits(x >> self.trailing, sig);
        } else {
            self.leading = leading;
            self.trailing = trailing;
            self.vals.write_bit(true);
            self.vals.write_bits(leading as u64, 5);
            let sig = 64 - leading - trailing;
            // sig is 1..=64; 64 is stored as 0 in six bits.
            self.vals.write_bits((sig & 63) as u64, 6);
            self.vals.write_bits(x >> trailing, sig);
        }
    }

    /// The timestamp column's bytes.
    pub fn ts_bytes(&self) -> &[u8] {
        self.ts.bytes()
    }

    /// The value column's bytes.
    pub fn value_bytes(&self) -> &[u8] {
        self.vals.bytes()
    }

    /// Heap bytes held, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.ts.heap_bytes() + self.vals.heap_bytes()
    }

    /// Freezes the chunk into its compact, immutable form.
    pub fn seal(&self) -> SealedChunk {
        SealedChunk::new(
            self.n,
            self.kind,
            self.mint,
            self.last_t,
            self.ts.bytes(),
            self.vals.bytes(),
        )
    }

    /// Decodes every sample into `out`.
    pub fn decode_into(&self, out: &mut Vec<Sample>) -> Result<(), CorruptChunk> {
        decode_columns(self.ts.bytes(), self.kind, self.vals.bytes(), self.n as usize, out)
    }

    /// Appends the samples in `[mint, maxt]` to `out`. When all of them come
    /// after the restart point, only the samples after it are decoded.
    pub fn decode_range(&self, mint: i64, maxt: i64, out: &mut Vec<Sample>) -> Result<(), CorruptChunk> {
        if self.mark.is_set() && mint > self.mark.t {
            let start = out.len();
            return match self.decode_after_mark((mint, maxt), out) {
                Some(()) => Ok(()),
                None => {
                    out.truncate(start);
                    Err(CorruptChunk)
                }
            };
        }
        decode_range(
            self.ts.bytes(),
            self.kind,
            self.vals.bytes(),
            self.n as usize,
            (mint, maxt),
            out,
        )
    }

    /// Appends those in `range` of the samples after the mark to `out`.
    fn decode_after_mark(&self, range: (i64, i64), out: &mut Vec<Sample>) -> Option<()> {
        let m = &self.mark;
        let at = Resume {
            at: MARK_AT,
            ts_bit: m.ts_bit as usize,
            t: m.t,
            dt: m.dt,
            val_bit: m.val_bit as usize,
            v: m.v,
            dv: m.dv,
        };
        decode_from(
            self.ts.bytes(),
            self.kind,
            self.vals.bytes(),
            &at,
            self.n as usize - MARK_AT,
            range,
            out,
        )
    }
}

/// Where decoding of both columns resumes at sample `at`: the bit offsets of
/// its codes, and the state after sample `at - 1` (its timestamp and the delta
/// that led to it; for integer columns its integer and delta, for float
/// columns its bits and, in `dv`, the XOR window as `leading << 8 | trailing`).
#[derive(Debug, Clone, Copy, Default)]
struct Resume {
    at: usize,
    ts_bit: usize,
    t: i64,
    dt: i64,
    val_bit: usize,
    v: i64,
    dv: i64,
}

/// Appends those in `range` of `count` samples decoded from the restart
/// point `at` to `out`, their timestamps checked to increase; on `None`,
/// `out` may hold a partial tail that the caller cuts off.
fn decode_from(
    ts: &[u8],
    kind: ValueKind,
    vals: &[u8],
    at: &Resume,
    count: usize,
    range: (i64, i64),
    out: &mut Vec<Sample>,
) -> Option<()> {
    let start = out.len();
    let cut = times_from(ts, at, count, range, out)?;
    let slots = &mut out[start..];
    let r = BitReader::at(vals, at.val_bit)?;
    match kind {
        ValueKind::Int => {
            code_loop::<false, false>(r, &INT_WIDTHS, at.v, at.dv, &mut Ints::ints_cut(slots, count, cut))
        }
        ValueKind::Decimal(k) => {
            code_loop::<false, false>(r, &INT_WIDTHS, at.v, at.dv, &mut Scaled::new(slots, count, cut, k))
        }
        ValueKind::FittedInt => resume_fitted(vals, r, at, &mut Ints::ints_cut(slots, count, cut)),
        ValueKind::FittedDecimal(k) => resume_fitted(vals, r, at, &mut Scaled::new(slots, count, cut, k)),
        ValueKind::PackedInt => unpack::<false>(vals, at.at + count, known(at), at.at + cut, slots, 1.0),
        ValueKind::PackedDecimal(k) => {
            unpack::<true>(vals, at.at + count, known(at), at.at + cut, slots, POW10[k as usize])
        }
        ValueKind::Float => {
            let fd = FloatDecoder {
                r,
                first: false,
                bits: at.v as u64,
                leading: (at.dv >> 8) as u8,
                trailing: at.dv as u8,
            };
            floats_into(fd, count, cut, slots)
        }
    }
}

/// Appends to `out` the timestamps in `range` of `count` samples decoded
/// from restart point `at` (from the column's start when `at.at` is 0),
/// checked to increase; returns how many came before the range (see
/// [`Times`]).
fn times_from(ts: &[u8], at: &Resume, count: usize, range: (i64, i64), out: &mut Vec<Sample>) -> Option<usize> {
    out.reserve(count);
    let mut times = Times::new(out, count, range);
    if at.at == 0 {
        decode_dod(ts, &TS_WIDTHS, count, &mut times)?;
    } else {
        code_loop::<false, false>(BitReader::at(ts, at.ts_bit)?, &TS_WIDTHS, at.t, at.dt, &mut times)?;
    }
    times.increasing.then_some(times.cut)
}

/// Splits a column of an indexed block chunk into its restart table and its
/// body.
fn split_indexed(col: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut r = ByteReader::new(col);
    let len = r.uvarint().ok()?;
    let p = r.pos();
    let end = p.checked_add(usize::try_from(len).ok()?)?;
    Some((col.get(p..end)?, col.get(end..)?))
}

/// Decodes the samples in `range` (inclusive) of a block chunk of `n`
/// samples into `out`. A chunk with restart points (see [`encode_block`]) is
/// decoded only from the last restart point before `range` to the first one
/// after it.
pub fn decode_block_range(
    ts: &[u8],
    kind: ValueKind,
    vals: &[u8],
    n: usize,
    restarts: Restarts,
    range: (i64, i64),
    out: &mut Vec<Sample>,
) -> Result<(), CorruptChunk> {
    // A packed chunk's values need nothing from its timestamp column but
    // the range's place in it: the path a block's reader shares.
    if kind.is_packed() {
        return decode_packed_values(&range_times(ts, n, restarts, range)?, kind, vals, n, restarts, out);
    }
    if restarts == Restarts::None {
        return decode_range(ts, kind, vals, n, range, out);
    }
    let start = out.len();
    let fail = |out: &mut Vec<Sample>| {
        out.truncate(start);
        CorruptChunk
    };
    let ((tt, tb), (vt, vb)) = split_indexed(ts).zip(split_indexed(vals)).ok_or(CorruptChunk)?;
    if !column_can_hold(tb, n) || !column_can_hold(vb, n) {
        return Err(CorruptChunk);
    }
    let (mut from, nfrom, end) = read_from_and_end(tt, first_raw(tb), n, restarts, range)?;
    let fitted = match kind {
        ValueKind::FittedInt | ValueKind::FittedDecimal(_) => {
            let mut h = BitReader::new(vb);
            Some(
                h.read_bits(64)
                    .and_then(|_| fitted_header(&mut h))
                    .ok_or(CorruptChunk)?,
            )
        }
        _ => None,
    };
    let by_delta = fitted.is_some_and(|f| f.0);
    // A fitted column without a run table (a noisy gauge's) is decoded in
    // two lanes, split at the regular restart point nearest the middle of
    // what is read, when each lane has enough codes.
    let split = match fitted {
        Some((by_delta, widths)) if RunTable::of(&widths, by_delta).is_none() && from.at <= end => {
            let mid = (from.at + end) / 2;
            (1..=n.saturating_sub(1) / RESTART_EVERY)
                .map(|j| j * RESTART_EVERY)
                .filter(|&p| p >= from.at + MIN_LANE && p + MIN_LANE <= end)
                .min_by_key(|&p| p.abs_diff(mid))
        }
        _ => None,
    };
    if nfrom == 0 && split.is_none() {
        return decode_columns_in(tb, kind, vb, end, range, out);
    }
    // The value table up to that restart point (and the split point).
    let first_v = first_raw(vb);
    let mut vr = ByteReader::new(vt);
    let mut vbit = 0usize;
    let mut at_split = Resume::default();
    let entries = nfrom.max(split.map_or(0, |p| p / RESTART_EVERY));
    for j in 0..entries {
        let e = (|| {
            vbit = vbit.checked_add(usize::try_from(vr.uvarint().ok()?).ok()?)?;
            Some(match kind {
                ValueKind::Float => (vr.u64_le().ok()? as i64, vr.uvarint().ok()? as i64),
                _ => {
                    let v = first_v.wrapping_add(vr.varint().ok()?);
                    (v, if by_delta { 0 } else { vr.varint().ok()? })
                }
            })
        })()
        .ok_or(CorruptChunk)?;
        if j < nfrom {
            (from.v, from.dv, from.val_bit) = (e.0, e.1, vbit);
        }
        if split.is_some_and(|p| j + 1 == p / RESTART_EVERY) {
            (at_split.v, at_split.dv, at_split.val_bit) = (e.0, e.1, vbit);
        }
    }
    if from.at > end {
        return Err(fail(out));
    }
    let done = match (split, fitted) {
        (Some(p), Some((_, widths))) => {
            at_split.at = p;
            decode_in_lanes(tb, kind, vb, &from, &at_split, &widths, end - from.at, range, out)
        }
        _ => decode_from(tb, kind, vb, &from, end - from.at, range, out),
    };
    if done.is_none() {
        return Err(fail(out));
    }
    Ok(())
}

/// What a read of a block chunk's range takes from its timestamp column
/// alone: where the read starts (a restart point, or the first sample) and
/// stops, how many samples it decodes before the range, and the timestamps
/// it keeps. Series scraped together share one timestamp column in a block,
/// so a reader works this out once for all of them ([`range_times`]) and
/// decodes only each one's values ([`decode_packed_values`]).
#[derive(Debug, Clone)]
pub struct RangeTimes {
    from: Resume,
    /// Restart points up to `from` (their value table entries to read).
    nfrom: usize,
    end: usize,
    cut: usize,
    times: Vec<i64>,
}

impl RangeTimes {
    /// The timestamps kept.
    pub fn times(&self) -> &[i64] {
        &self.times
    }

    /// The same read cut to its last sample alone (none when it keeps
    /// none): what an instant selector takes from a chunk, whose values
    /// before the last are then not decoded.
    pub fn last_alone(mut self) -> Self {
        if let Some(&t) = self.times.last() {
            self.cut += self.times.len() - 1;
            self.times = vec![t];
        }
        self
    }
}

/// The [`RangeTimes`] of a read of `range` from a block chunk's timestamp
/// column `ts` of `n` samples with restart points `restarts`.
pub fn range_times(ts: &[u8], n: usize, restarts: Restarts, range: (i64, i64)) -> Result<RangeTimes, CorruptChunk> {
    let (tt, tb) = if restarts == Restarts::None {
        (&[][..], ts)
    } else {
        split_indexed(ts).ok_or(CorruptChunk)?
    };
    if !column_can_hold(tb, n) {
        return Err(CorruptChunk);
    }
    let (from, nfrom, end) = if restarts == Restarts::None {
        (Resume::default(), 0, n)
    } else {
        read_from_and_end(tt, first_raw(tb), n, restarts, range)?
    };
    if from.at > end {
        return Err(CorruptChunk);
    }
    let mut out = Vec::with_capacity(end - from.at);
    let cut = times_from(tb, &from, end - from.at, range, &mut out).ok_or(CorruptChunk)?;
    Ok(RangeTimes {
        from,
        nfrom,
        end,
        cut,
        times: out.iter().map(|s| s.t).collect(),
    })
}

/// One pass over a timestamp restart table: the last restart point whose
/// previous sample is before the range (and how many points lead to it),
/// and the first whose previous sample is at or after its end (every later
/// sample is past the range), or `n`.
fn read_from_and_end(
    tt: &[u8],
    mint: i64,
    n: usize,
    restarts: Restarts,
    range: (i64, i64),
) -> Result<(Resume, usize, usize), CorruptChunk> {
    let mut from = Resume::default();
    let mut end = n;
    let mut tr = ByteReader::new(tt);
    let (mut bit, mut nfrom) = (0usize, 0usize);
    let late = match restarts {
        Restarts::EveryAndTail => late_point(n),
        _ => None,
    };
    for (j, at) in restart_points(n, restarts).enumerate() {
        if Some(at) == late && tr.remaining() == 0 {
            // Written before late points.
            break;
        }
        let e = (|| {
            bit = bit.checked_add(usize::try_from(tr.uvarint().ok()?).ok()?)?;
            let t = mint.wrapping_add(tr.uvarint().ok()? as i64);
            Some((bit, t, tr.varint().ok()?))
        })()
        .ok_or(CorruptChunk)?;
        if e.1 < range.0 {
            (from.ts_bit, from.t, from.dt, from.at) = (e.0, e.1, e.2, at);
            nfrom = j + 1;
        } else if e.1 >= range.1 {
            end = at;
            break;
        }
    }
    Ok((from, nfrom, end))
}

/// Appends to `out` the samples of a packed block chunk (`kind` packed, its
/// value column `vals` of `n` values) that `rt`, worked out from its
/// timestamp column, keeps.
pub fn decode_packed_values(
    rt: &RangeTimes,
    kind: ValueKind,
    vals: &[u8],
    n: usize,
    restarts: Restarts,
    out: &mut Vec<Sample>,
) -> Result<(), CorruptChunk> {
    let (table, vb) = if restarts == Restarts::None {
        (&[][..], vals)
    } else {
        split_indexed(vals).ok_or(CorruptChunk)?
    };
    let mut at = rt.from;
    if vb.first().is_some_and(|h| h & 0x80 != 0) {
        let mut r = ByteReader::new(table);
        let mut sum = 0u64;
        for _ in 0..rt.nfrom {
            sum = sum.wrapping_add(r.uvarint().map_err(|_| CorruptChunk)?);
        }
        at.v = sum as i64;
    }
    if rt.end > n {
        return Err(CorruptChunk);
    }
    let start = out.len();
    out.extend(rt.times.iter().map(|&t| Sample { t, v: 0.0 }));
    let slots = &mut out[start..];
    let (first, known) = (at.at + rt.cut, known(&at));
    let done = match kind {
        ValueKind::PackedInt => unpack::<false>(vb, rt.end, known, first, slots, 1.0),
        ValueKind::PackedDecimal(k) => unpack::<true>(vb, rt.end, known, first, slots, POW10[k as usize]),
        _ => None,
    };
    if done.is_none() {
        out.truncate(start);
        return Err(CorruptChunk);
    }
    Ok(())
}

/// Widest code of a packed column: integers below 2^53 in magnitude differ
/// by less than 2^54, and deltas less the least by less than 2^55. A code
/// of at most 57 bits lies in the eight bytes from the byte it starts in.
const MAX_PACKED_WIDTH: u32 = 55;

/// A packed column's header: its mode, the width of its codes, the first
/// integer (mode 1) or the least (mode 0), the least delta (mode 1), and
/// the codes.
struct Packed<'a> {
    by_delta: bool,
    w: u32,
    first: i64,
    base: i64,
    codes: &'a [u8],
}

impl<'a> Packed<'a> {
    fn parse(col: &'a [u8]) -> Option<Self> {
        let mut r = ByteReader::new(col);
        let h = r.u8().ok()?;
        let (by_delta, w) = (h & 0x80 != 0, (h & 0x3f) as u32);
        if h & 0x40 != 0 || w > MAX_PACKED_WIDTH {
            return None;
        }
        let first = r.varint().ok()?;
        let base = if by_delta { r.varint().ok()? } else { first };
        Some(Packed {
            by_delta,
            w,
            first,
            base,
            codes: col.get(r.pos()..)?,
        })
    }

    /// Whether the codes hold `count` codes.
    fn holds(&self, count: usize) -> bool {
        (count as u128 * self.w as u128).div_ceil(8) <= self.codes.len() as u128
    }

    /// Code `i`, which [`Packed::holds`] has vouched for.
    #[inline(always)]
    fn code(&self, i: usize) -> u64 {
        let p = i * self.w as usize;
        let b = p >> 3;
        let word = match self.codes.get(b..b + 8) {
            Some(s) => u64::from_be_bytes(s.try_into().unwrap_or_default()),
            // The column's last bytes (where an instant read's last value
            // is): shifted in one by one, as a copy of a variable length
            // into a buffer would be a call.
            None => self
                .codes
                .get(b..)
                .unwrap_or_default()
                .iter()
                .enumerate()
                .fold(0u64, |w, (k, &x)| w | (x as u64) << (56 - 8 * k)),
        };
        // `w` is at least 1 here: a shift of 64 does not occur.
        (word << (p & 7)) >> (64 - self.w)
    }
}

/// What a packed column's restart point `at` tells: the number `k` of codes
/// before it that its table sums (those of deltas `1..at`), and their sum.
fn known(at: &Resume) -> (usize, u64) {
    (at.at.saturating_sub(1), if at.at > 0 { at.v as u64 } else { 0 })
}

/// Values `first..first + slots.len()` of a packed column of `n` values into
/// `slots` (divided by `scale` when `SCALED`), given, for a column in mode 1,
/// the sum of its first `known.0` codes (at most `first`).
#[inline(always)]
fn unpack<const SCALED: bool>(
    col: &[u8],
    n: usize,
    known: (usize, u64),
    first: usize,
    slots: &mut [Sample],
    scale: f64,
) -> Option<()> {
    let p = Packed::parse(col)?;
    let end = first.checked_add(slots.len())?;
    if end > n || known.0 > first || !p.holds(if p.by_delta { n.saturating_sub(1) } else { n }) {
        return None;
    }
    if p.w == 0 {
        let mut v = p.first;
        if p.by_delta {
            v = v.wrapping_add(p.base.wrapping_mul(first as i64));
        }
        let step = if p.by_delta { p.base } else { 0 };
        fill::<SCALED>(slots, scale, |_| {
            let x = v;
            v = v.wrapping_add(step);
            x
        });
    } else if !p.by_delta {
        fill::<SCALED>(slots, scale, |k| p.base.wrapping_add(p.code(first + k) as i64));
    } else {
        // Mode 1: value `i` is the first plus `i` least deltas plus codes
        // `0..i` (code `j` is delta `j + 1`'s), the first `known.0` of them
        // summed by the restart table.
        let mut v = p.first.wrapping_add(p.base.wrapping_mul(first as i64));
        v = v.wrapping_add(known.1 as i64);
        for j in known.0..first {
            v = v.wrapping_add(p.code(j) as i64);
        }
        fill::<SCALED>(slots, scale, |k| {
            if k > 0 {
                v = v.wrapping_add(p.base.wrapping_add(p.code(first + k - 1) as i64));
            }
            v
        });
    }
    Some(())
}

/// Sets the value of each slot `k` to `int(k)` (called in order), divided
/// by `scale` when `SCALED`. The divisions are made eight at a time over a
/// buffer, which the compiler turns into packed divisions (of the same
/// result): one at a time, they would bound the whole read.
#[inline(always)]
fn fill<const SCALED: bool>(slots: &mut [Sample], scale: f64, mut int: impl FnMut(usize) -> i64) {
    let value = |x: i64| if SCALED { x as f64 / scale } else { x as f64 };
    let mut parts = slots.chunks_exact_mut(8);
    let mut at = 0;
    for part in &mut parts {
        let mut buf = [0f64; 8];
        for (k, b) in buf.iter_mut().enumerate() {
            *b = int(at + k) as f64;
        }
        if SCALED {
            for b in &mut buf {
                *b /= scale;
            }
        }
        for (s, b) in part.iter_mut().zip(buf) {
            s.v = b;
        }
        at += 8;
    }
    for (k, s) in parts.into_remainder().iter_mut().enumerate() {
        s.v = value(int(at + k));
    }
}

/// The fewest codes a lane of [`decode_in_lanes`] takes.
const MIN_LANE: usize = 64;

/// [`decode_from`] for a fitted column without a run table, from restart
/// point `from` (sample 0 when its `at` is 0) for `count` samples, whose
/// values are decoded in two lanes: from `from` to `split`, a later restart
/// point, and from `split` on, one code of each in turn. A code's length
/// depends on the code before it, so one column is a chain of dependent
/// steps (load the bits, tell the bucket, shift by the length); two chains
/// interleaved let the processor work on both at once.
#[allow(clippy::too_many_arguments)]
fn decode_in_lanes(
    ts: &[u8],
    kind: ValueKind,
    vals: &[u8],
    from: &Resume,
    split: &Resume,
    widths: &[u8; 4],
    count: usize,
    range: (i64, i64),
    out: &mut Vec<Sample>,
) -> Option<()> {
    let start = out.len();
    let cut = times_from(ts, from, count, range, out)?;
    let slots = &mut out[start..];
    match kind {
        ValueKind::FittedInt => fitted_lanes(vals, from, split, widths, count, &mut Ints::ints_cut(slots, count, cut)),
        ValueKind::FittedDecimal(k) => {
            fitted_lanes(vals, from, split, widths, count, &mut Scaled::new(slots, count, cut, k))
        }
        _ => None,
    }
}

/// The values of [`decode_in_lanes`], value `i` (from `from`) to `out`'s
/// slot `i`.
#[inline(always)]
fn fitted_lanes(
    vals: &[u8],
    from: &Resume,
    split: &Resume,
    widths: &[u8; 4],
    count: usize,
    out: &mut impl DodSink,
) -> Option<()> {
    let mut h = BitReader::new(vals);
    let v0 = h.read_bits(64)? as i64;
    let (by_delta, _) = fitted_header(&mut h)?;
    if by_delta {
        let base = read_bucketed(&mut h, &INT_WIDTHS)?;
        lanes::<true>(h, v0, base, vals, from, split, widths, count, out)
    } else {
        lanes::<false>(h, v0, 0, vals, from, split, widths, count, out)
    }
}

/// One lane of [`lanes`]: its reader, the value (and, unless `BY_DELTA`,
/// the delta) reached, the index of its next value and the one it stops
/// before.
struct Lane<'a> {
    r: BitReader<'a>,
    v: i64,
    d: i64,
    i: usize,
    end: usize,
}

impl Lane<'_> {
    /// Decodes the lane's next code into `out`: as the loop without a run
    /// table does (the first three buckets told apart from the top four
    /// bits), the widest bucket and the end of the input by the general
    /// path.
    #[inline(always)]
    fn code<const BY_DELTA: bool>(&mut self, packed: u32, widths: &[u8; 4], out: &mut impl DodSink) -> Option<()> {
        let (acc, nbits) = self.r.window();
        let top = (acc >> 60) as u32;
        let k = (top >= 8) as u32 + (top >= 12) as u32 + (top >= 14) as u32;
        let w = (packed >> (8 * k)) & 0xff;
        let len = k + 1 + w;
        let code = if top != 15 && len <= nbits {
            self.r.skip_short(len);
            let field = ((acc << (k + 1)) as i64) >> ((64 - w) & 63);
            field & -((k != 0) as i64)
        } else {
            read_bucketed(&mut self.r, widths)?
        };
        if BY_DELTA {
            self.v = self.v.wrapping_add(self.d.wrapping_add(code));
        } else {
            self.d = self.d.wrapping_add(code);
            self.v = self.v.wrapping_add(self.d);
        }
        out.put(self.i, self.v);
        self.i += 1;
        Some(())
    }
}

/// [`fitted_lanes`] of one mode; `h` is the reader after the column's
/// header (and base), `v0` its first value.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn lanes<const BY_DELTA: bool>(
    mut h: BitReader<'_>,
    v0: i64,
    base: i64,
    vals: &[u8],
    from: &Resume,
    split: &Resume,
    widths: &[u8; 4],
    count: usize,
    out: &mut impl DodSink,
) -> Option<()> {
    let mid = split.at.checked_sub(from.at).filter(|&m| m >= 2 && m <= count)?;
    // The first lane: from a restart point, or after the column's first
    // value (and, by change of delta, its first delta).
    let (r, v, d, i) = if from.at > 0 {
        let d = if BY_DELTA { base } else { from.dv };
        (BitReader::at(vals, from.val_bit)?, from.v, d, 0)
    } else if BY_DELTA {
        out.put(0, v0);
        (h, v0, base, 1)
    } else {
        out.put(0, v0);
        let d = read_bucketed(&mut h, widths)?;
        out.put(1, v0.wrapping_add(d));
        (h, v0.wrapping_add(d), d, 2)
    };
    let mut a = Lane { r, v, d, i, end: mid };
    let mut b = Lane {
        r: BitReader::at(vals, split.val_bit)?,
        v: split.v,
        d: if BY_DELTA { base } else { split.dv },
        i: mid,
        end: count,
    };
    let packed = (widths[0] as u32) << 8 | (widths[1] as u32) << 16 | (widths[2] as u32) << 24;
    while a.i < a.end && b.i < b.end {
        a.code::<BY_DELTA>(packed, widths, out)?;
        b.code::<BY_DELTA>(packed, widths, out)?;
    }
    // The longer lane's rest, by the loop of one lane.
    for l in [a, b] {
        if l.i < l.end {
            let n = l.end - l.i;
            code_loop::<BY_DELTA, true>(
                l.r,
                widths,
                l.v,
                l.d,
                &mut Offset {
                    out: &mut *out,
                    at: l.i,
                    n,
                },
            )?;
        }
    }
    Some(())
}

/// The `n` slots of another sink from its slot `at` on.
struct Offset<'a, S> {
    out: &'a mut S,
    at: usize,
    n: usize,
}

impl<S: DodSink> DodSink for Offset<'_, S> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.n
    }
    #[inline(always)]
    fn put(&mut self, i: usize, v: i64) {
        self.out.put(self.at + i, v);
    }
    #[inline(always)]
    fn run(&mut self, i: usize, z: usize, v: i64, d: i64) -> i64 {
        self.out.run(self.at + i, z, v, d)
    }
}

/// An immutable chunk: its two columns (in one allocation, on the heap or in
/// a head chunk segment) and its time range.
#[derive(Debug, Clone)]
pub struct SealedChunk {
    pub n: u16,
    pub kind: ValueKind,
    pub mint: i64,
    pub maxt: i64,
    /// Timestamp column then value column.
    data: ChunkBytes,
    split: u32,
}

#[derive(Debug, Clone)]
enum ChunkBytes {
    Heap(Box<[u8]>),
    Mapped { seg: Arc<Segment>, off: u32, len: u32 },
}

impl SealedChunk {
    pub fn new(n: u16, kind: ValueKind, mint: i64, maxt: i64, ts: &[u8], vals: &[u8]) -> Self {
        let mut data = Vec::with_capacity(ts.len() + vals.len());
        data.extend_from_slice(ts);
        data.extend_from_slice(vals);
        SealedChunk {
            n,
            kind,
            mint,
            maxt,
            data: ChunkBytes::Heap(data.into_boxed_slice()),
            split: ts.len() as u32,
        }
    }

    fn data(&self) -> &[u8] {
        match &self.data {
            ChunkBytes::Heap(b) => b,
            ChunkBytes::Mapped { seg, off, len } => seg.bytes(*off, *len),
        }
    }

    /// The timestamp column.
    pub fn ts(&self) -> &[u8] {
        &self.data()[..self.split as usize]
    }

    /// The value column.
    pub fn vals(&self) -> &[u8] {
        &self.data()[self.split as usize..]
    }

    /// Whether its bytes are on the heap.
    pub fn on_heap(&self) -> bool {
        matches!(self.data, ChunkBytes::Heap(_))
    }

    /// Moves its bytes from the heap to a segment of `file`; false when they
    /// stay where they are.
    pub fn move_to(&mut self, file: &ChunkFile) -> bool {
        let ChunkBytes::Heap(b) = &self.data else {
            return false;
        };
        match file.store(b) {
            Some((seg, off)) => {
                let len = b.len() as u32;
                self.data = ChunkBytes::Mapped { seg, off, len };
                true
            }
            None => false,
        }
    }

    pub fn decode_into(&self, out: &mut Vec<Sample>) -> Result<(), CorruptChunk> {
        decode_columns(self.ts(), self.kind, self.vals(), self.n as usize, out)
    }

    /// Appends the samples in `[mint, maxt]` to `out`.
    pub fn decode_range(&self, mint: i64, maxt: i64, out: &mut Vec<Sample>) -> Result<(), CorruptChunk> {
        decode_range(self.ts(), self.kind, self.vals(), self.n as usize, (mint, maxt), out)
    }

    /// Bytes of the columns on the heap (none once in a segment).
    pub fn heap_bytes(&self) -> usize {
        match &self.data {
            ChunkBytes::Heap(b) => b.len(),
            ChunkBytes::Mapped { .. } => 0,
        }
    }
}

/// A chunk's bytes ended early or held an impossible code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("corrupt chunk")]
pub struct CorruptChunk;

/// Whether a column of `bytes` can hold `n` samples: the first takes 64
/// bits and every later one at least one. Checked before allocating, so that
/// a damaged sample count cannot ask for more memory than the column implies.
fn column_can_hold(bytes: &[u8], n: usize) -> bool {
    n == 0 || (bytes.len() as u64).saturating_mul(8) >= (n as u64).saturating_add(63)
}

/// Decodes a chunk straight into `out`, keeping only the samples in `range`
/// (inclusive).
pub fn decode_range(
    ts: &[u8],
    kind: ValueKind,
    vals: &[u8],
    n: usize,
    range: (i64, i64),
    out: &mut Vec<Sample>,
) -> Result<(), CorruptChunk> {
    decode_columns_in(ts, kind, vals, n, range, out)
}

/// Decodes both columns into samples, appending to `out`; timestamps that
/// do not increase make the chunk damaged.
pub fn decode_columns(
    ts: &[u8],
    kind: ValueKind,
    vals: &[u8],
    n: usize,
    out: &mut Vec<Sample>,
) -> Result<(), CorruptChunk> {
    decode_columns_in(ts, kind, vals, n, ALL_TIME, out)
}

/// Every sample: the range of [`decode_columns`].
const ALL_TIME: (i64, i64) = (i64::MIN, i64::MAX);

/// [`decode_columns`], appending only the samples in `range` (inclusive):
/// the others are decoded (a column can only be read in order) but never
/// written, so no kept sample is moved and no slot is filled twice.
fn decode_columns_in(
    ts: &[u8],
    kind: ValueKind,
    vals: &[u8],
    n: usize,
    range: (i64, i64),
    out: &mut Vec<Sample>,
) -> Result<(), CorruptChunk> {
    if !column_can_hold(ts, n) || !(kind.is_packed() || column_can_hold(vals, n)) {
        return Err(CorruptChunk);
    }
    let start = out.len();
    out.reserve(n);
    let mut times = Times::new(out, n, range);
    if decode_dod(ts, &TS_WIDTHS, n, &mut times).is_none() || !times.increasing {
        out.truncate(start);
        return Err(CorruptChunk);
    }
    let cut = times.cut;
    let slots = &mut out[start..];
    let done = match kind {
        ValueKind::Int => decode_dod(vals, &INT_WIDTHS, n, &mut Ints::ints_cut(slots, n, cut)),
        ValueKind::Decimal(k) => decode_dod(vals, &INT_WIDTHS, n, &mut Scaled::new(slots, n, cut, k)),
        ValueKind::FittedInt => decode_fitted(vals, n, &mut Ints::ints_cut(slots, n, cut)),
        ValueKind::FittedDecimal(k) => decode_fitted(vals, n, &mut Scaled::new(slots, n, cut, k)),
        ValueKind::PackedInt => unpack::<false>(vals, n, (0, 0), cut, slots, 1.0),
        ValueKind::PackedDecimal(k) => unpack::<true>(vals, n, (0, 0), cut, slots, POW10[k as usize]),
        ValueKind::Float => floats_into(FloatDecoder::new(vals), n, cut, slots),
    };
    if done.is_none() {
        out.truncate(start);
        return Err(CorruptChunk);
    }
    Ok(())
}

/// `n` values of a float column into `slots`, value `i` to slot `i - cut`.
fn floats_into(mut fd: FloatDecoder<'_>, n: usize, cut: usize, slots: &mut [Sample]) -> Option<()> {
    for i in 0..n {
        let v = fd.next_value()?;
        if let Some(s) = slots.get_mut(i.wrapping_sub(cut)) {
            s.v = v;
        }
    }
    Some(())
}

/// Resumes a fitted column (the header read again from the start of its
/// bytes `vals`) at restart point `at`, with `r` at its codes.
#[inline(always)]
fn resume_fitted(vals: &[u8], r: BitReader<'_>, at: &Resume, out: &mut impl DodSink) -> Option<()> {
    let mut h = BitReader::new(vals);
    h.read_bits(64)?;
    let (by_delta, widths) = fitted_header(&mut h)?;
    if by_delta {
        let base = read_bucketed(&mut h, &INT_WIDTHS)?;
        code_loop::<true, true>(r, &widths, at.v, base, out)
    } else {
        code_loop::<false, true>(r, &widths, at.v, at.dv, out)
    }
}

/// Where [`decode_dod`] puts the values it decodes.
trait DodSink {
    /// Slots to fill.
    fn len(&self) -> usize;
    /// Value `i` is `v`.
    fn put(&mut self, i: usize, v: i64);
    /// Values `i..i + z` go on from `v` by `d` each; returns the last.
    fn run(&mut self, i: usize, z: usize, v: i64, d: i64) -> i64;
}

/// Timestamps of samples, and whether each one decoded so far is later
/// than the one before it (timestamps a writer stored always increase;
/// bytes that decode to any other order are damaged). A sample is appended
/// to `out` (its value to be set by the value column's sink) only when its
/// timestamp is in `range`: those before it are counted in `cut`, so that
/// the value sink leaves them out too, and none is ever moved.
struct Times<'a> {
    out: &'a mut Vec<Sample>,
    n: usize,
    range: (i64, i64),
    cut: usize,
    prev: i64,
    increasing: bool,
}

impl<'a> Times<'a> {
    /// Timestamps of `n` samples appended to `out`, which has room for them.
    fn new(out: &'a mut Vec<Sample>, n: usize, range: (i64, i64)) -> Self {
        Times {
            out,
            n,
            range,
            cut: 0,
            prev: i64::MIN,
            increasing: true,
        }
    }
}

impl DodSink for Times<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.n
    }
    #[inline(always)]
    fn put(&mut self, i: usize, v: i64) {
        self.increasing &= (v > self.prev) | (i == 0);
        self.prev = v;
        if v < self.range.0 {
            self.cut += 1;
        } else if v <= self.range.1 {
            self.out.push(Sample { t: v, v: 0.0 });
        }
    }
    #[inline(always)]
    fn run(&mut self, i: usize, z: usize, mut v: i64, d: i64) -> i64 {
        if z == 0 {
            return v;
        }
        let first = v.wrapping_add(d);
        // The run goes up by `d` each, without wrapping around.
        let last = first as i128 + d as i128 * (z as i128 - 1);
        self.increasing &= ((first > self.prev) | (i == 0)) & (z == 1 || d > 0) & (last <= i64::MAX as i128);
        // Those before the range, then those up to its end; a run that does
        // not increase has failed the check above, and is kept whole.
        let mut before = 0;
        while before < z && v.wrapping_add(d) < self.range.0 {
            v = v.wrapping_add(d);
            before += 1;
        }
        self.cut += before;
        let rest = z - before;
        let keep = if d > 0 && last > self.range.1 as i128 {
            ((self.range.1 as i128 - v as i128).max(0) / d as i128).min(rest as i128) as usize
        } else {
            rest
        };
        self.out.extend((0..keep).map(|_| {
            v = v.wrapping_add(d);
            Sample { t: v, v: 0.0 }
        }));
        v = v.wrapping_add(d.wrapping_mul((rest - keep) as i64));
        self.prev = v;
        v
    }
}

/// Values of samples of an integer column, or of a decimal one (`SCALED`).
/// Value `i` of the column goes to slot `i - cut`; the values of samples
/// outside the slots (cut off by [`Times`]) are decoded and left out.
struct Values<'a, const SCALED: bool> {
    slots: &'a mut [Sample],
    /// Values in the column.
    n: usize,
    cut: usize,
    /// `10^k` of a decimal column (unused for integers).
    scale: f64,
}

/// Values of samples of an integer column.
type Ints<'a> = Values<'a, false>;

/// Values of samples of a decimal column: each integer divided by `10^k` as
/// it is written. The integer was exact in f64, so one division restores
/// the value bit for bit; made here, off the decoder's chain of steps that
/// wait on one another, it overlaps with them instead of taking a pass of
/// its own.
type Scaled<'a> = Values<'a, true>;

impl<'a> Ints<'a> {
    /// Every value of a column of `slots.len()` into `slots`.
    fn ints(slots: &'a mut [Sample]) -> Self {
        Self::ints_cut(slots, 0, 0)
    }

    /// `n` values, of which the first `cut` are left out.
    fn ints_cut(slots: &'a mut [Sample], n: usize, cut: usize) -> Self {
        let n = n.max(slots.len());
        Values {
            slots,
            n,
            cut,
            scale: 1.0,
        }
    }
}

impl<'a> Scaled<'a> {
    fn new(slots: &'a mut [Sample], n: usize, cut: usize, k: u8) -> Self {
        Values {
            slots,
            n,
            cut,
            scale: POW10[k as usize],
        }
    }
}

impl<const SCALED: bool> Values<'_, SCALED> {
    #[inline(always)]
    fn value(v: i64, scale: f64) -> f64 {
        if SCALED {
            v as f64 / scale
        } else {
            v as f64
        }
    }
}

impl<const SCALED: bool> DodSink for Values<'_, SCALED> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.n
    }
    #[inline(always)]
    fn put(&mut self, i: usize, v: i64) {
        if let Some(s) = self.slots.get_mut(i.wrapping_sub(self.cut)) {
            s.v = Self::value(v, self.scale);
        }
    }
    #[inline(always)]
    fn run(&mut self, i: usize, z: usize, mut v: i64, d: i64) -> i64 {
        let (scale, cut) = (self.scale, self.cut);
        // The run's part within the slots.
        let (lo, hi) = (i.max(cut), (i + z).min(cut + self.slots.len()));
        if lo >= hi {
            return v.wrapping_add(d.wrapping_mul(z as i64));
        }
        v = v.wrapping_add(d.wrapping_mul((lo - i) as i64));
        for s in &mut self.slots[lo - cut..hi - cut] {
            v = v.wrapping_add(d);
            s.v = Self::value(v, scale);
        }
        v.wrapping_add(d.wrapping_mul((i + z - hi) as i64))
    }
}

/// The slots of another sink after its first `SKIP`, `n` of them.
struct Skip<'a, S, const SKIP: usize>(&'a mut S, usize);

impl<S: DodSink, const SKIP: usize> DodSink for Skip<'_, S, SKIP> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.1
    }
    #[inline(always)]
    fn put(&mut self, i: usize, v: i64) {
        self.0.put(i + SKIP, v);
    }
    #[inline(always)]
    fn run(&mut self, i: usize, z: usize, v: i64, d: i64) -> i64 {
        self.0.run(i + SKIP, z, v, d)
    }
}

/// Reads the raw first value of a column of `n` values into slot 0; then the
/// reader after it and the value, or `None` when there are no more values.
#[inline(always)]
fn first_value<'a>(col: &'a [u8], n: usize, out: &mut impl DodSink) -> Option<Option<(BitReader<'a>, i64)>> {
    if n == 0 {
        return Some(None);
    }
    let mut r = BitReader::new(col);
    let v = r.read_bits(64)? as i64;
    out.put(0, v);
    Some((n > 1).then_some((r, v)))
}

/// Decodes a delta-of-delta column (a raw first value, a bucket-coded delta,
/// then bucket-coded changes of the delta) of `n` values into `out`.
///
/// A run of zero codes is taken in one step, and codes that lie wholly in
/// the reader's buffer are decoded from it; the widest code and the end of
/// the input take the general path.
#[inline(always)]
fn decode_dod(col: &[u8], widths: &[u8; 4], n: usize, out: &mut impl DodSink) -> Option<()> {
    let Some((mut r, mut v)) = first_value(col, n, out)? else {
        return Some(());
    };
    let d = read_bucketed(&mut r, widths)?;
    v = v.wrapping_add(d);
    out.put(1, v);
    code_loop::<false, false>(r, widths, v, d, &mut Skip::<_, 2>(out, n - 2))
}

/// Decodes a fitted integer column (`FittedInt`, `FittedDecimal`) of `n`
/// values into `out`: a raw first value, the parameter header, then one code
/// per later value (see [`fit_ints`]).
#[inline(always)]
fn decode_fitted(col: &[u8], n: usize, out: &mut impl DodSink) -> Option<()> {
    let Some((mut r, mut v)) = first_value(col, n, out)? else {
        return Some(());
    };
    let (by_delta, widths) = fitted_header(&mut r)?;
    if by_delta {
        let base = read_bucketed(&mut r, &INT_WIDTHS)?;
        return code_loop::<true, true>(r, &widths, v, base, &mut Skip::<_, 1>(out, n - 1));
    }
    let d = read_bucketed(&mut r, &widths)?;
    v = v.wrapping_add(d);
    out.put(1, v);
    code_loop::<false, true>(r, &widths, v, d, &mut Skip::<_, 2>(out, n - 2))
}

/// Reads a fitted column's parameter header (after its first value): the
/// mode (true for deltas from a base) and the code widths.
#[inline(always)]
fn fitted_header(r: &mut BitReader<'_>) -> Option<(bool, [u8; 4])> {
    let by_delta = r.read_bit()?;
    let w1 = r.read_bits(3)? as u8 + 1;
    Some((by_delta, [w1, w1 + FIT_STEPS[r.read_bits(2)? as usize], 24, 64]))
}

/// Decodes codes from `r` into every slot of `out`, going on from value `v`.
/// With `BY_DELTA` false a code is a change of the delta, and `d` is the
/// delta that reached `v`: the body of [`decode_dod`], also used to resume a
/// column at a chunk's restart point. With `BY_DELTA` true a code is the
/// difference between the delta and the fixed `d` (a fitted column's base).
/// `SHORT_CODES` picks the fast path for a fitted column's widths, where
/// codes of the first two buckets are about equally common.
#[inline(always)]
fn code_loop<const BY_DELTA: bool, const SHORT_CODES: bool>(
    r: BitReader<'_>,
    widths: &[u8; 4],
    v: i64,
    d: i64,
    out: &mut impl DodSink,
) -> Option<()> {
    // Several short codes of a fitted column at a time, where its widths
    // have a table (see [`RunTable`]); a loop of its own, so that columns
    // without one run the code-at-a-time loop as it is.
    if SHORT_CODES {
        if let Some(t) = RunTable::of(widths, BY_DELTA) {
            return codes::<BY_DELTA, SHORT_CODES, true>(r, widths, v, d, out, t);
        }
    }
    codes::<BY_DELTA, SHORT_CODES, false>(r, widths, v, d, out, RunTable::NONE)
}

/// [`code_loop`], with the table `t` when `TABLED`.
#[inline(always)]
fn codes<const BY_DELTA: bool, const SHORT_CODES: bool, const TABLED: bool>(
    mut r: BitReader<'_>,
    widths: &[u8; 4],
    mut v: i64,
    mut d: i64,
    out: &mut impl DodSink,
    t: &RunTable,
) -> Option<()> {
    let n = out.len();
    let w0 = widths[0] as u32;
    // The field widths after `0`, `10`, `110` and `1110`, a byte each.
    let packed = w0 << 8 | (widths[1] as u32) << 16 | (widths[2] as u32) << 24;
    let mut i = 0;
    while i < n {
        let (acc, nbits) = r.window();
        // A long run of zero codes (regular timestamps, steady values) in
        // one step.
        if acc >> 48 == 0 && nbits >= 16 {
            let z = (acc.leading_zeros().min(nbits) as usize).min(n - i);
            r.skip(z as u32);
            v = out.run(i, z, v, d);
            i += z;
            continue;
        }
        if TABLED && i + RUN_CODES <= n && nbits >= RUN_BITS {
            let e = t.0[(acc >> (64 - RUN_BITS)) as usize];
            let k = (e & 7) as usize;
            if k != 0 {
                r.skip_short((e >> 3 & 15) as u32);
                // All four slots take the values the codes would give;
                // those past the `k` decoded are written again later.
                for j in 0..RUN_CODES {
                    let step = d.wrapping_mul(j as i64 + 1).wrapping_add(RunTable::sum(e, j));
                    out.put(i + j, v.wrapping_add(step));
                }
                let last = RunTable::sum(e, k - 1);
                v = v.wrapping_add(d.wrapping_mul(k as i64).wrapping_add(last));
                if !BY_DELTA {
                    // The last sum less the one before it is the sum of
                    // the codes: the change of the delta.
                    d = d.wrapping_add(last.wrapping_sub(RunTable::before(e, k)));
                }
                i += k;
                continue;
            }
        }
        let code = if SHORT_CODES {
            // `0`, `10` + the first width, `110` + the second and (without
            // a run table) `1110` + the third, told apart by the top bits
            // without a branch (and without a leading-zero count, which
            // costs a `bsr` and a test on the baseline target): a fitted
            // column's widths make neighbouring buckets about equally
            // common, in no predictable order, and a column of noisy gauges
            // (GPU power) may need the third for most of its codes. A
            // column with a table has short first widths; the codes the
            // table leaves are mostly of the second bucket, and a third
            // one told apart costs them more than it saves.
            let (top, k) = if TABLED {
                let top = (acc >> 61) as u32;
                (top | 8, (top >= 4) as u32 + (top >= 6) as u32)
            } else {
                let top = (acc >> 60) as u32;
                (top, (top >= 8) as u32 + (top >= 12) as u32 + (top >= 14) as u32)
            };
            let w = (packed >> (8 * k)) & 0xff;
            let len = k + 1 + w;
            // With a table, `top` is `0b1111` for `111`.
            if top != 15 && len <= nbits {
                r.skip_short(len);
                let field = ((acc << (k + 1)) as i64) >> ((64 - w) & 63);
                field & -((k != 0) as i64)
            } else {
                // A code of the third bucket from the buffer (with a
                // table). A code of the widest bucket, or any code within
                // 28 bits of the end of the input, takes the general path.
                let w = widths[2] as u32;
                if TABLED && acc >> 60 == 0b1110 && 4 + w <= nbits {
                    r.skip_short(4 + w);
                    ((acc << 4) as i64) >> (64 - w)
                } else {
                    read_bucketed(&mut r, widths)?
                }
            }
        } else if acc >> 62 != 0b11 && nbits >= 2 + w0 {
            // `0`, or `10` and the first bucket's field, told apart by the
            // top bit without a branch: with the head's fixed widths, in
            // counter data they follow one another unpredictably (and the
            // second bucket is rare), and this is the loop's critical path.
            let top = acc >> 63;
            let len = 1 + top as u32 * (1 + w0);
            let field = ((acc << 2) as i64) >> (64 - w0);
            r.skip_short(len);
            field & (top as i64).wrapping_neg()
        } else {
            // A code of the second or third bucket from the buffer. A code
            // of the widest bucket, or any code within seven bits of the
            // end of the input (`k` wraps for a `0`), takes the general path.
            let k = (!acc).leading_zeros().wrapping_sub(1);
            match widths[..3].get(k as usize) {
                Some(&w) if k + 2 + w as u32 <= nbits => {
                    r.skip_short(k + 2 + w as u32);
                    ((acc << (k + 2)) as i64) >> (64 - w as u32)
                }
                _ => read_bucketed(&mut r, widths)?,
            }
        };
        if BY_DELTA {
            v = v.wrapping_add(d.wrapping_add(code));
        } else {
            d = d.wrapping_add(code);
            v = v.wrapping_add(d);
        }
        out.put(i, v);
        i += 1;
    }
    Some(())
}

/// Bits of a fitted column's codes that one [`RunTable`] lookup reads.
const RUN_BITS: u32 = 11;
/// Most codes one [`RunTable`] lookup decodes.
const RUN_CODES: usize = 4;
/// Bits of each sum in a [`RunTable`] entry.
const SUM_BITS: u32 = 12;

/// For a fitted column's first two widths and mode, what the next
/// [`RUN_BITS`] bits hold: the short codes (`0`, `10` and `110` with their
/// fields) that lie wholly within them, up to [`RUN_CODES`]. An entry is the
/// number of codes `k` in bits 0-2 (0 when the first code is longer or of a
/// wider bucket), the bits they take in bits 3-6, and from bit 7, twelve
/// bits each, signed, the growth of the value after 1, 2, 3 and 4 codes
/// beyond what the delta before them adds. In a by-delta column a code `c`
/// adds `base + c` to the value, so the growth after `j` codes is the sum of
/// their fields. Otherwise a code changes the delta, and the growth after
/// `j` codes is the sum of the first `j` running sums of the fields; the
/// delta changes by the last growth less the one before it. No field is
/// wider than 8 bits (a code takes at most [`RUN_BITS`]), so no growth
/// after four codes overflows twelve bits.
struct RunTable([u64; 1 << RUN_BITS]);

impl RunTable {
    /// A table that decodes no codes, for loops that take none.
    const NONE: &'static RunTable = &RunTable([0; 1 << RUN_BITS]);

    /// The table for `widths` and the mode, built once per process for
    /// each; `None` when codes of the first bucket are too long for two to
    /// fit in one lookup, where the code-at-a-time path is as fast.
    fn of(widths: &[u8; 4], by_delta: bool) -> Option<&'static RunTable> {
        const FIRST: usize = 8;
        const SECOND: usize = 8 + 10 + 1;
        static TABLES: [OnceLock<Box<RunTable>>; 2 * FIRST * SECOND] = [const { OnceLock::new() }; 2 * FIRST * SECOND];
        let (w1, w2) = (widths[0] as usize, widths[1] as usize);
        if !(1..=FIRST).contains(&w1) || 2 * (2 + w1) > RUN_BITS as usize || w2 >= SECOND {
            return None;
        }
        let at = (by_delta as usize * FIRST + w1 - 1) * SECOND + w2;
        Some(TABLES[at].get_or_init(|| RunTable::build(w1 as u32, w2 as u32, by_delta)))
    }

    fn build(w1: u32, w2: u32, by_delta: bool) -> Box<RunTable> {
        let mut t = Box::new(RunTable([0; 1 << RUN_BITS]));
        for (x, e) in t.0.iter_mut().enumerate() {
            let bits = (x as u64) << (64 - RUN_BITS);
            let (mut pos, mut k, mut fields, mut growth) = (0u32, 0u64, 0i64, 0i64);
            while (k as usize) < RUN_CODES {
                let rest = bits << pos;
                let (prefix, w) = match rest.leading_ones() {
                    0 => (1, 0),
                    1 => (2, w1),
                    2 => (3, w2),
                    _ => break,
                };
                if pos + prefix + w > RUN_BITS {
                    break;
                }
                if w > 0 {
                    fields += ((rest << prefix) as i64) >> (64 - w);
                }
                growth = if by_delta { fields } else { growth + fields };
                pos += prefix + w;
                *e |= ((growth as u64) & ((1 << SUM_BITS) - 1)) << (7 + SUM_BITS as u64 * k);
                k += 1;
            }
            *e |= k | (pos as u64) << 3;
        }
        t
    }

    /// The growth after the first `j + 1` codes of entry `e`.
    #[inline(always)]
    fn sum(e: u64, j: usize) -> i64 {
        ((e << (64 - SUM_BITS - (7 + SUM_BITS * j as u32))) as i64) >> (64 - SUM_BITS)
    }

    /// The growth after the first `k - 1` codes of entry `e`, for `k` in
    /// 1..=[`RUN_CODES`]: zero for `k` 1.
    #[inline(always)]
    fn before(e: u64, k: usize) -> i64 {
        // Clearing the count and length makes the growth after no codes
        // read as zero.
        Self::sum((e & !0x7f) << SUM_BITS, k - 1)
    }
}

struct FloatDecoder<'a> {
    r: BitReader<'a>,
    first: bool,
    bits: u64,
    leading: u8,
    trailing: u8,
}

impl<'a> FloatDecoder<'a> {
    fn new(b: &'a [u8]) -> Self {
        FloatDecoder {
            r: BitReader::new(b),
            first: true,
            bits: 0,
            leading: 0,
            trailing: 0,
        }
    }

    #[inline(always)]
    fn next_value(&mut self) -> Option<f64> {
        // The common codes from the buffer in one step: `0` (the same value)
        // and `10` with the meaningful bits of the current window.
        let (acc, nbits) = self.r.window();
        if !self.first && nbits >= 1 && acc >> 63 == 0 {
            self.r.skip_short(1);
            return Some(f64::from_bits(self.bits));
        }
        // No window yet (`leading` 255 at a restart point before any) makes
        // `lt` at least 64.
        let lt = self.leading as u32 + self.trailing as u32;
        let sig = 64u32.saturating_sub(lt);
        if !self.first && acc >> 62 == 0b10 && (1..62).contains(&sig) && 2 + sig <= nbits {
            self.r.skip_short(2 + sig);
            self.bits ^= ((acc << 2) >> (64 - sig)) << self.trailing;
            return Some(f64::from_bits(self.bits));
        }
        self.next_value_slow()
    }

    #[inline(never)]
    fn next_value_slow(&mut self) -> Option<f64> {
        if self.first {
            self.first = false;
            self.bits = self.r.read_bits(64)?;
            return Some(f64::from_bits(self.bits));
        }
        if self.r.read_bit()? {
            if self.r.read_bit()? {
                self.leading = self.r.read_bits(5)? as u8;
                let mut sig = self.r.read_bits(6)? as u8;
                if sig == 0 {
                    sig = 64;
                }
                if self.leading + sig > 64 {
                    return None;
                }
                self.trailing = 64 - self.leading - sig;
            }
            // A window reused before any was set (`leading` 255 at a
            // restart point) is damage, and so is a window of no bits (the
            // encoder's windows hold a nonzero XOR), which a damaged restart
            // point can name.
            let sig = 64u8
                .checked_sub(self.leading)?
                .checked_sub(self.trailing)
                .filter(|&s| s > 0)?;
            let x = self.r.read_bits(sig)?;
            self.bits ^= x << self.trailing;
        }
        Some(f64::from_bits(self.bits))
    }
}

/// Encodes a whole run of samples (at most [`MAX_CHUNK_SAMPLES`] is not required
/// here; blocks may use longer runs) into a sealed chunk. Integer and decimal
/// values take the fitted kinds, whose coding parameters are chosen for the
/// whole run.
pub fn encode(samples: &[Sample]) -> SealedChunk {
    encode_parts(samples, &[]).0
}

/// Samples between the restart points of a block chunk: decoding can start
/// at every sample `i` with `i % RESTART_EVERY == 0`.
pub const RESTART_EVERY: usize = 160;

/// Samples after a block chunk's tail restart point ([`Restarts::EveryAndTail`]):
/// a read of the chunk's last minutes, an instant query's, decodes this many
/// samples instead of up to [`RESTART_EVERY`] more.
pub const RESTART_TAIL: usize = 40;

/// Samples after a block chunk's late restart point, which follows its tail
/// point: the last five minutes of a 15 s scrape and a few samples more, so
/// that a 5 m window or the lookback of an instant near a chunk's end
/// decodes this many samples instead of [`RESTART_TAIL`].
pub const RESTART_LATE: usize = 24;

/// Where the restart points of a block chunk are (`docs/format/chunks.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restarts {
    /// None: the columns are those of [`encode`].
    None,
    /// Every [`RESTART_EVERY`] samples.
    Every,
    /// Those of `Every`, then one [`RESTART_TAIL`] samples before the end
    /// and, in chunks written since late points exist, one
    /// [`RESTART_LATE`] samples before it (a reader finds the late entry by
    /// the bytes left in the timestamp table after the tail entry).
    EveryAndTail,
}

/// The tail restart point of a chunk of `n` samples: [`RESTART_TAIL`]
/// samples before its end, when that is at least as far after its last
/// regular restart point.
fn tail_point(n: usize) -> Option<usize> {
    if n <= RESTART_EVERY {
        return None;
    }
    let last = (n - 1) / RESTART_EVERY * RESTART_EVERY;
    let p = n - RESTART_TAIL;
    (p >= last + RESTART_TAIL).then_some(p)
}

/// The late restart point of a chunk of `n` samples, [`RESTART_LATE`]
/// samples before its end: a chunk has one when it has a tail point.
fn late_point(n: usize) -> Option<usize> {
    tail_point(n).map(|_| n - RESTART_LATE)
}

/// The restart points of a chunk of `n` samples, in order (the late point
/// last, which chunks written before late points lack).
pub fn restart_points(n: usize, layout: Restarts) -> impl Iterator<Item = usize> {
    let regular = match layout {
        Restarts::None => 0,
        _ => n.saturating_sub(1) / RESTART_EVERY,
    };
    let (tail, late) = match layout {
        Restarts::EveryAndTail => (tail_point(n), late_point(n)),
        _ => (None, None),
    };
    (1..=regular).map(|j| j * RESTART_EVERY).chain(tail).chain(late)
}

/// A chunk as the block writer stores it. Unless `restarts` is
/// [`Restarts::None`], each column starts with its restart table
/// (`docs/format/chunks.md`); a run of at most [`RESTART_EVERY`] samples has
/// none, and its columns are those of [`encode`].
#[derive(Debug, Clone)]
pub struct BlockChunk {
    pub kind: ValueKind,
    pub mint: i64,
    pub maxt: i64,
    pub restarts: Restarts,
    pub ts: Vec<u8>,
    pub vals: Vec<u8>,
}

/// Encodes a run of samples for a block: the columns of [`encode`], each
/// preceded by a table of the decoder's state at every restart point.
pub fn encode_block(samples: &[Sample]) -> BlockChunk {
    encode_block_as(samples, layout_of(samples.len()), true, true)
}

/// The restart points a block chunk of `n` samples is written with.
fn layout_of(n: usize) -> Restarts {
    if n <= RESTART_EVERY {
        Restarts::None
    } else if tail_point(n).is_some() {
        Restarts::EveryAndTail
    } else {
        Restarts::Every
    }
}

/// [`encode_block`] with the given restart points (`Every` is what blocks
/// written before tail points have, `EveryAndTail` without `late` what
/// blocks written before late points have), and packed value columns only
/// when `pack` (blocks written before packed columns have none).
fn encode_block_as(samples: &[Sample], layout: Restarts, late: bool, pack: bool) -> BlockChunk {
    let points: Vec<usize> = restart_points(samples.len(), layout)
        .filter(|&p| late || Some(p) != late_point(samples.len()))
        .collect();
    let (c, restarts, by_delta, ints) = encode_parts(samples, &points);
    if restarts.is_empty() {
        let chunk = BlockChunk {
            kind: c.kind,
            mint: c.mint,
            maxt: c.maxt,
            restarts: Restarts::None,
            ts: c.ts().to_vec(),
            vals: c.vals().to_vec(),
        };
        return packed_if_worth_it(chunk, ints.as_deref().filter(|_| pack), None);
    }
    let first_v = match c.kind {
        ValueKind::Float => 0,
        _ => first_raw(c.vals()),
    };
    let (mut tt, mut vt) = (Vec::new(), Vec::new());
    let (mut tbit, mut vbit) = (0, 0);
    for r in &restarts {
        put_uvarint(&mut tt, (r.ts_bit - tbit) as u64);
        put_uvarint(&mut tt, r.t.wrapping_sub(c.mint) as u64);
        put_varint(&mut tt, r.dt);
        put_uvarint(&mut vt, (r.val_bit - vbit) as u64);
        match c.kind {
            ValueKind::Float => {
                vt.extend_from_slice(&(r.v as u64).to_le_bytes());
                put_uvarint(&mut vt, r.dv as u64);
            }
            _ => {
                put_varint(&mut vt, r.v.wrapping_sub(first_v));
                if !by_delta {
                    put_varint(&mut vt, r.dv);
                }
            }
        }
        (tbit, vbit) = (r.ts_bit, r.val_bit);
    }
    let column = |table: &[u8], body: &[u8]| {
        let mut col = Vec::with_capacity(table.len() + body.len() + 2);
        put_uvarint(&mut col, table.len() as u64);
        col.extend_from_slice(table);
        col.extend_from_slice(body);
        col
    };
    let chunk = BlockChunk {
        kind: c.kind,
        mint: c.mint,
        maxt: c.maxt,
        restarts: layout,
        ts: column(&tt, c.ts()),
        vals: column(&vt, c.vals()),
    };
    packed_if_worth_it(chunk, ints.as_deref().filter(|_| pack), Some(&points))
}

/// A fitted chunk's value column is packed instead ([`pack_ints`]) when the
/// packed one is at most [`PACKED_SLACK`] times as long: a value of a packed
/// column is found without decoding those before it, and packed columns
/// compress better in the zstd pages of a block than their length says
/// (the chunks file hardly grows). `points` are the chunk's restart points
/// when it is indexed.
fn packed_if_worth_it(mut chunk: BlockChunk, ints: Option<&[i64]>, points: Option<&[usize]>) -> BlockChunk {
    let kind = match chunk.kind {
        ValueKind::FittedInt => ValueKind::PackedInt,
        ValueKind::FittedDecimal(k) => ValueKind::PackedDecimal(k),
        _ => return chunk,
    };
    let Some(ints) = ints else {
        return chunk;
    };
    let (body, table) = pack_ints(ints, points.unwrap_or_default());
    let mut packed = Vec::with_capacity(body.len() + table.len() + 2);
    if points.is_some() {
        put_uvarint(&mut packed, table.len() as u64);
        packed.extend_from_slice(&table);
    }
    packed.extend_from_slice(&body);
    if packed.len() as f64 <= chunk.vals.len() as f64 * PACKED_SLACK {
        chunk.kind = kind;
        chunk.vals = packed;
    }
    chunk
}

/// How much longer than a fitted value column a packed one may be and still
/// be chosen. On the fleet of `crates/fleet` (`block_breakdown --series
/// 20000`), packing only columns no longer than the fitted ones packs 66 % of
/// the samples and the chunks file takes 0.446 bytes a sample; with a slack
/// of 1.5, 89 % and 0.446; of 2, 96 % and 0.449; of 2.5, every integer and
/// decimal run but four (98 %; the rest are floats) and 0.455. The steady
/// counters the last step packs (token totals) are short either way, and
/// their rates over 1.9 h got 11-14 % faster.
const PACKED_SLACK: f64 = 2.5;

/// The raw 64-bit first value of a column (zero if it is shorter).
fn first_raw(col: &[u8]) -> i64 {
    BitReader::new(col).read_bits(64).unwrap_or(0) as i64
}

/// [`encode`], also giving the decoder's state at every sample `i` in
/// `points` (sorted, each above zero) and whether a fitted value column
/// took mode 1.
fn encode_parts(samples: &[Sample], points: &[usize]) -> (SealedChunk, Vec<Resume>, bool, Option<Vec<i64>>) {
    let mut a = ChunkAppender::new();
    // Decide the kind up front so a long run is never re-coded: integers,
    // else the smallest decimal scale that holds every value, else floats.
    let fitted = match samples.iter().map(|s| as_exact_int(s.v)).collect::<Option<Vec<i64>>>() {
        Some(ints) => Some((ValueKind::FittedInt, ints)),
        None => samples
            .iter()
            .try_fold(1u8, |k, s| {
                let ks = if as_exact_int(s.v).is_some() {
                    1
                } else {
                    min_scale(s.v)?
                };
                Some(k.max(ks))
            })
            .and_then(|k0| {
                (k0..=MAX_DECIMAL_SCALE).find_map(|k| {
                    let ms = samples
                        .iter()
                        .map(|s| decimal_mantissa(s.v, k))
                        .collect::<Option<Vec<i64>>>()?;
                    Some((ValueKind::FittedDecimal(k), ms))
                })
            }),
    };
    if fitted.is_none() {
        a.kind = ValueKind::Float;
    }
    let mut restarts = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        if points.get(restarts.len()) == Some(&i) {
            let (v, dv) = (a.last_bits as i64, (a.leading as i64) << 8 | a.trailing as i64);
            restarts.push(Resume {
                at: i,
                ts_bit: a.ts.bit_len(),
                t: a.last_t,
                dt: a.last_dt,
                val_bit: a.vals.bit_len(),
                v,
                dv,
            });
        }
        a.append_ts(s.t);
        if fitted.is_none() {
            a.append_float(s.v);
        }
        a.n = a.n.wrapping_add(1);
    }
    let n = samples.len().min(u16::MAX as usize) as u16;
    match fitted {
        Some((kind, ints)) => {
            let mut marks = Vec::with_capacity(restarts.len());
            let (vals, by_delta) = fit_ints(&ints, points, &mut marks);
            for (r, bit) in restarts.iter_mut().zip(marks) {
                r.val_bit = bit;
                r.v = ints[r.at - 1];
                r.dv = if r.at >= 2 {
                    ints[r.at - 1].wrapping_sub(ints[r.at - 2])
                } else {
                    0
                };
            }
            (
                SealedChunk::new(n, kind, a.mint, a.last_t, a.ts_bytes(), &vals),
                restarts,
                by_delta,
                Some(ints),
            )
        }
        None => {
            let mut c = a.seal();
            c.n = n;
            (c, restarts, false, None)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use sextant_model::STALE_NAN;

    /// A fixed pseudo-random sequence (xorshift) from `seed` (not zero).
    pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn timestamps_that_do_not_increase_make_a_chunk_damaged() {
        let at = |ts: &[i64]| -> Vec<Sample> { ts.iter().map(|&t| Sample::new(t, 1.0)).collect() };
        let regular: Vec<i64> = (0..480).map(|k| k * 15_000).collect();
        let mut repeated = regular.clone();
        repeated[300] = repeated[299];
        let mut backwards = regular.clone();
        backwards[2] = -5;
        // Steady steps that wrap past the largest timestamp: a run of zero
        // codes in the decoder's fast path.
        let wrapping: Vec<i64> = (0..480)
            .map(|k| (i64::MAX - 3_000_000).wrapping_add(k * 15_000))
            .collect();
        // Each case, and where a read from a restart point on still meets
        // the damage.
        for (ts, after) in [(&repeated, Some(290)), (&backwards, None), (&wrapping, None)] {
            let samples = at(ts);
            let c = encode_block(&samples);
            let mut out = Vec::new();
            assert!(decode_columns(
                split_indexed(&c.ts).unwrap().1,
                c.kind,
                split_indexed(&c.vals).unwrap().1,
                480,
                &mut out
            )
            .is_err());
            assert!(out.is_empty());
            for from in after.map(|k| ts[k]).into_iter().chain([i64::MIN]) {
                let mut out = vec![Sample::new(1, 2.0)];
                let r = decode_block_range(&c.ts, c.kind, &c.vals, 480, c.restarts, (from, i64::MAX), &mut out);
                assert!(r.is_err(), "from {from}: {:?}", out.len());
                assert_eq!(out, vec![Sample::new(1, 2.0)], "what was there before is kept");
            }
        }
        // The same chunk with increasing timestamps reads whole.
        let c = encode_block(&at(&regular));
        let mut out = Vec::new();
        decode_block_range(&c.ts, c.kind, &c.vals, 480, c.restarts, (i64::MIN, i64::MAX), &mut out).expect("decodes");
        assert_eq!(out, at(&regular));
    }

    fn check(samples: &[Sample]) {
        let mut a = ChunkAppender::new();
        for s in samples {
            a.append(s.t, s.v);
        }
        let mut out = Vec::new();
        a.decode_into(&mut out).expect("decodes");
        assert_eq!(out, samples);
        let mut out2 = Vec::new();
        encode(samples).decode_into(&mut out2).expect("decodes");
        assert_eq!(out2, samples);
        check_block(samples);
    }

    /// A block chunk of `samples` gives, for ranges that begin and end on,
    /// just after and just before samples around its restart points, exactly
    /// the samples inside.
    fn check_block(samples: &[Sample]) {
        let c = encode_block(samples);
        let n = samples.len();
        assert_eq!(c.restarts != Restarts::None, n > RESTART_EVERY);
        assert_eq!(c.restarts == Restarts::EveryAndTail, tail_point(n).is_some());
        check_block_ranges(samples, &c);
        // Chunks written before packed columns, and those written before
        // late and tail restart points, read the same.
        let fitted = encode_block_fitted(samples);
        assert!(!fitted.kind.is_packed());
        assert_eq!(fitted.ts, c.ts);
        check_block_ranges(samples, &fitted);
        if c.restarts == Restarts::EveryAndTail {
            let before_late = encode_block_as(samples, Restarts::EveryAndTail, false, false);
            assert!(before_late.vals.len() < fitted.vals.len() && before_late.ts.len() < c.ts.len());
            check_block_ranges(samples, &before_late);
            let old = encode_block_as(samples, Restarts::Every, true, false);
            assert!(old.vals.len() < before_late.vals.len() && old.ts.len() < before_late.ts.len());
            check_block_ranges(samples, &old);
            // A packed column in mode 0 has no restart table, one in mode 1
            // an entry less without the late point.
            let packed_before_late = encode_block_as(samples, Restarts::EveryAndTail, false, true);
            if c.kind.is_packed() && packed_before_late.kind == c.kind {
                if packed_header_byte(&c) & 0x80 == 0 {
                    assert_eq!(packed_before_late.vals, c.vals);
                } else {
                    assert!(packed_before_late.vals.len() < c.vals.len());
                }
            }
            check_block_ranges(samples, &packed_before_late);
        }
    }

    /// [`encode_block`] without packed value columns.
    fn encode_block_fitted(samples: &[Sample]) -> BlockChunk {
        encode_block_as(samples, layout_of(samples.len()), true, false)
    }

    fn check_block_ranges(samples: &[Sample], c: &BlockChunk) {
        let n = samples.len();
        let mut cuts: Vec<usize> = vec![0, 1, n / 3, n / 2, n.saturating_sub(20), n.saturating_sub(1)];
        for at in restart_points(n, c.restarts) {
            cuts.extend([at - 1, at, at + 1]);
        }
        cuts.retain(|&i| i < n);
        let mut ranges = vec![(i64::MIN, i64::MAX), (5, 4)];
        for &i in &cuts {
            for &k in &cuts {
                let (a, b) = (samples[i].t, samples[k].t);
                ranges.extend([
                    (a, b),
                    (a.saturating_add(1), b),
                    (a, b.saturating_sub(1)),
                    (a, i64::MAX),
                ]);
            }
        }
        for (lo, hi) in ranges {
            let mut out = vec![Sample::new(-1, 0.0)];
            decode_block_range(&c.ts, c.kind, &c.vals, n, c.restarts, (lo, hi), &mut out).expect("decodes");
            let want: Vec<Sample> = std::iter::once(Sample::new(-1, 0.0))
                .chain(samples.iter().copied().filter(|x| x.t >= lo && x.t <= hi))
                .collect();
            assert_eq!(out, want, "range {lo}..={hi} of {n} samples, {:?}", c.kind);
            // A packed chunk's values read by the timestamps of the range
            // worked out once (as a block's reader shares them).
            if c.kind.is_packed() {
                let rt = range_times(&c.ts, n, c.restarts, (lo, hi)).expect("timestamps");
                let mut shared = vec![Sample::new(-1, 0.0)];
                decode_packed_values(&rt, c.kind, &c.vals, n, c.restarts, &mut shared).expect("values");
                assert_eq!(shared, want, "shared timestamps, range {lo}..={hi} of {n} samples");
            }
        }
    }

    #[test]
    fn a_block_chunk_is_read_from_the_restart_point_before_the_range() {
        let s: Vec<Sample> = (0..480i64)
            .map(|i| Sample::new(1_000 + i * 15_000, (i * 7 + i % 5) as f64))
            .collect();
        let c = encode_block_fitted(&s);
        assert_eq!(c.restarts, Restarts::EveryAndTail);
        assert_eq!(
            restart_points(480, c.restarts).collect::<Vec<_>>(),
            [160, 320, 440, 456]
        );
        let (table, body) = split_indexed(&c.vals).unwrap();
        let body_at = c.vals.len() - body.len();
        assert!(!table.is_empty());
        let read = |vals: &[u8], from: usize| {
            let mut out = Vec::new();
            decode_block_range(&c.ts, c.kind, vals, 480, c.restarts, (s[from].t, i64::MAX), &mut out).map(|_| out)
        };
        // Damage the value codes of the first restart interval: a read of
        // the last twenty samples does not reach them, a read of all does.
        let mut vals = c.vals.clone();
        for b in &mut vals[body_at + 10..body_at + 20] {
            *b = !*b;
        }
        assert_eq!(read(&vals, 460).unwrap(), s[460..]);
        let whole = read(&vals, 0);
        assert!(
            whole.is_err() || whole.unwrap() != s,
            "the damaged interval was not read"
        );
        // Damage the codes between the last regular restart point and the
        // tail one: a read of the last twenty samples starts at the tail
        // point and does not reach them, a read of the last hundred does.
        let (_, resumes, _, _) = encode_parts(&s, &[160, 320, 440]);
        let (a, b) = (resumes[1].val_bit / 8 + 1, resumes[2].val_bit / 8);
        assert!(b > a + 2, "{a}..{b}");
        let mut vals = c.vals.clone();
        for x in &mut vals[body_at + a..body_at + b] {
            *x = !*x;
        }
        assert_eq!(read(&vals, 460).unwrap(), s[460..]);
        assert_eq!(read(&vals, 441).unwrap(), s[441..]);
        let longer = read(&vals, 380);
        assert!(
            longer.is_err() || longer.unwrap() != s[380..],
            "the damaged interval was not read"
        );
        // Damage the codes between the tail point and the late one: a read
        // of the last twenty samples starts at the late point, one of the
        // last thirty-nine at the tail point.
        let (_, resumes, _, _) = encode_parts(&s, &[160, 320, 440, 456]);
        let (a, b) = (resumes[2].val_bit / 8 + 1, resumes[3].val_bit / 8);
        assert!(b > a, "{a}..{b}");
        let mut vals = c.vals.clone();
        for x in &mut vals[body_at + a..body_at + b] {
            *x = !*x;
        }
        assert_eq!(read(&vals, 460).unwrap(), s[460..]);
        assert_eq!(read(&vals, 457).unwrap(), s[457..]);
        let longer = read(&vals, 441);
        assert!(
            longer.is_err() || longer.unwrap() != s[441..],
            "the damaged interval was not read"
        );
        // Restart tables cost a few bytes a restart point.
        let plain = encode(&s);
        assert!(
            c.vals.len() - plain.vals().len() <= 2 + 4 * 6,
            "{} vs {}",
            c.vals.len(),
            plain.vals().len()
        );
    }

    #[test]
    fn block_chunks_of_every_length_around_their_restart_points_read_every_range() {
        // Where the tail point goes: 40 samples before the end, when that is
        // at least 40 after the last regular point.
        assert_eq!(tail_point(160), None);
        assert_eq!(tail_point(239), None);
        assert_eq!(tail_point(240), Some(200));
        assert_eq!(tail_point(360), None);
        assert_eq!(tail_point(400), Some(360));
        assert_eq!(tail_point(480), Some(440));
        assert_eq!(tail_point(481), None);
        assert_eq!(late_point(480), Some(456));
        assert_eq!(late_point(240), Some(216));
        assert_eq!(late_point(481), None);
        for n in [161, 200, 239, 240, 241, 320, 359, 360, 400, 479, 480, 481, 520, 1000] {
            let kinds: [&dyn Fn(i64) -> f64; 3] =
                [&|i| (i * 13 + i % 7) as f64, &|i| (i % 97) as f64 / 100.0 + 3.0, &|i| {
                    (i as f64 * 0.37).sin()
                }];
            for value in kinds {
                let s: Vec<Sample> = (0..n as i64)
                    .map(|i| Sample::new(1_000 + i * 15_000 + i % 3, value(i)))
                    .collect();
                check_block(&s);
            }
        }
    }

    /// Noisy fitted columns (no run table) of both modes are read in two
    /// lanes, split at a regular restart point; every range reads exactly
    /// the samples inside, as one lane does.
    /// The header byte of a block chunk's packed value column, whose restart
    /// table is checked: none in mode 0, a sum for each point in mode 1.
    fn packed_header_byte(c: &BlockChunk) -> u8 {
        if c.restarts == Restarts::None {
            return c.vals[0];
        }
        let numbers = |table: &[u8]| {
            let mut r = ByteReader::new(table);
            let mut k = 0;
            while r.remaining() > 0 {
                r.uvarint().unwrap();
                k += 1;
            }
            k
        };
        let (table, body) = split_indexed(&c.vals).unwrap();
        // A timestamp table's entries are three numbers each.
        let points = numbers(split_indexed(&c.ts).unwrap().0) / 3;
        let want = if body[0] & 0x80 == 0 { 0 } else { points };
        assert_eq!(
            numbers(table),
            want,
            "restart table of a packed column, header {:#x}",
            body[0]
        );
        body[0]
    }

    #[test]
    fn integer_and_decimal_runs_are_packed_in_the_mode_that_suits_them() {
        let mut x = xorshift(0x2545_f491_4f6c_dd1d);
        let mut next = move |m: u64| (x() % m) as i64;
        for n in [1usize, 2, 3, 100, 160, 161, 300, 479, 480] {
            for scale in [0usize, 4] {
                // (run, packed by delta, width 0) as for long runs.
                let mut counter = 1_000_000i64;
                let cases: Vec<(Vec<i64>, bool, bool)> = vec![
                    // A gauge jumping around a level (KV-cache usage).
                    ((0..n).map(|_| 4_700 + next(300)).collect(), false, false),
                    // A counter whose increments scatter (a histogram bucket).
                    (
                        (0..n)
                            .map(|_| {
                                counter += 50_000 + next(40);
                                counter
                            })
                            .collect(),
                        true,
                        false,
                    ),
                    // A constant, and a counter growing by a steady amount.
                    (vec![-42; n], false, true),
                    ((0..n as i64).map(|i| 7 + 3 * i).collect(), true, true),
                ];
                for (run, by_delta, flat) in cases {
                    let s: Vec<Sample> = run
                        .iter()
                        .enumerate()
                        .map(|(i, &m)| Sample::new(5_000 + i as i64 * 15_000, m as f64 / POW10[scale]))
                        .collect();
                    let c = encode_block(&s);
                    assert!(c.kind.is_packed(), "{n} samples at scale {scale}: {:?}", c.kind);
                    let h = packed_header_byte(&c);
                    if n >= 100 {
                        assert_eq!(h & 0x80 != 0, by_delta, "{n} samples: header {h:#x}");
                        assert_eq!(h & 0x3f == 0, flat, "{n} samples: header {h:#x}");
                    } else if n == 1 {
                        assert_eq!(h, 0, "one value is the header's");
                    }
                    check(&s);
                }
            }
        }
        // Rare large jumps in a flat run: the fitted column's one-bit codes
        // beat any width wide enough for the jump, and are kept.
        let s: Vec<Sample> = (0..480i64)
            .map(|i| Sample::new(i * 15_000, if i % 97 == 0 { (1u64 << 40) as f64 } else { 0.0 }))
            .collect();
        assert_eq!(encode_block(&s).kind, ValueKind::FittedInt);
        check(&s);
    }

    #[test]
    fn damaged_packed_columns_are_errors_that_add_nothing() {
        let mut x = xorshift(0x9e37_79b9_7f4a_7c15);
        let s: Vec<Sample> = (0..480i64)
            .map(|i| Sample::new(i * 15_000, (4_700 + x() % 300) as f64 / 100.0))
            .collect();
        let c = encode_block(&s);
        assert_eq!(c.kind, ValueKind::PackedDecimal(2));
        let (_, body) = split_indexed(&c.vals).unwrap();
        let at = c.vals.len() - body.len();
        let mut damaged = Vec::new();
        // A reserved header bit; each width past the widest.
        let mut reserved = c.vals.clone();
        reserved[at] |= 0x40;
        damaged.push(reserved);
        for w in MAX_PACKED_WIDTH + 1..64 {
            let mut wide = c.vals.clone();
            wide[at] = (wide[at] & 0x80) | w as u8;
            damaged.push(wide);
        }
        // Codes cut short, a header cut inside its varint, nothing at all.
        damaged.push(c.vals[..c.vals.len() - 1].to_vec());
        damaged.push(c.vals[..at + 2].to_vec());
        damaged.push(c.vals[..at].to_vec());
        for vals in &damaged {
            for range in [(i64::MIN, i64::MAX), (s[300].t, i64::MAX), (s[470].t, s[475].t)] {
                let mut out = vec![Sample::new(1, 2.0)];
                let got = decode_block_range(&c.ts, c.kind, vals, 480, c.restarts, range, &mut out);
                assert_eq!(got, Err(CorruptChunk), "{range:?}");
                let rt = range_times(&c.ts, 480, c.restarts, range).expect("the timestamps are whole");
                let got = decode_packed_values(&rt, c.kind, vals, 480, c.restarts, &mut out);
                assert_eq!(got, Err(CorruptChunk), "{range:?}, shared timestamps");
                assert_eq!(out, vec![Sample::new(1, 2.0)], "what was there before is kept");
            }
        }
        // A counter's column (mode 1) with an empty table: a read from a
        // restart point cannot find its sums.
        let mut counter = 0i64;
        let s1: Vec<Sample> = (0..480i64)
            .map(|i| {
                counter += 1_000 + (x() % 50) as i64;
                Sample::new(i * 15_000, counter as f64)
            })
            .collect();
        let c1 = encode_block(&s1);
        assert_eq!((c1.kind, packed_header_byte(&c1) & 0x80), (ValueKind::PackedInt, 0x80));
        let (_, body1) = split_indexed(&c1.vals).unwrap();
        let mut short = vec![0u8];
        short.extend_from_slice(body1);
        for range in [(s1[300].t, i64::MAX), (s1[470].t, i64::MAX)] {
            let mut out = vec![Sample::new(1, 2.0)];
            let got = decode_block_range(&c1.ts, c1.kind, &short, 480, c1.restarts, range, &mut out);
            assert_eq!(got, Err(CorruptChunk), "{range:?}");
            let rt = range_times(&c1.ts, 480, c1.restarts, range).expect("the timestamps are whole");
            let got = decode_packed_values(&rt, c1.kind, &short, 480, c1.restarts, &mut out);
            assert_eq!(got, Err(CorruptChunk), "{range:?}, shared timestamps");
            assert_eq!(out, vec![Sample::new(1, 2.0)], "what was there before is kept");
        }
        // Values past the column's codes are damage too, and values past
        // the count are never read.
        let mut slots = vec![Sample::new(0, 0.0); 481];
        assert_eq!(unpack::<true>(body, 481, (0, 0), 0, &mut slots, 100.0), None);
        assert_eq!(unpack::<true>(body, 480, (0, 0), 0, &mut slots, 100.0), None);
        assert_eq!(unpack::<true>(body, 480, (0, 0), 1, &mut slots[..479], 100.0), Some(()));
        assert!(slots[..479].iter().zip(&s[1..]).all(|(a, b)| a.v == b.v));
    }

    #[test]
    fn noisy_fitted_columns_read_in_two_lanes_keep_exactly_the_samples_inside() {
        let mut x = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut next = move |m: u64| (x() % m) as i64;
        let mut lanes = 0;
        for (by_delta_meant, scale) in [(true, 0usize), (true, 2), (false, 0), (false, 3)] {
            for n in [160usize, 223, 224, 300, 383, 384, 479, 480] {
                // By delta: a gauge jumping around a level (GPU power); by
                // change of delta: a delta that wanders widely.
                let (mut v, mut d) = (500_000i64, 0i64);
                let s: Vec<Sample> = (0..n)
                    .map(|i| {
                        if by_delta_meant {
                            v = 500_000 + next(400_000) - 200_000;
                        } else {
                            d += next(20_000) - 10_000;
                            v += d;
                        }
                        Sample::new(1_000 + i as i64 * 15_000, v as f64 / POW10[scale])
                    })
                    .collect();
                let c = encode_block_fitted(&s);
                assert!(
                    matches!(c.kind, ValueKind::FittedInt | ValueKind::FittedDecimal(_)),
                    "{:?}",
                    c.kind
                );
                let body = if n > RESTART_EVERY {
                    split_indexed(&c.vals).unwrap().1
                } else {
                    &c.vals[..]
                };
                let mut h = BitReader::new(body);
                h.read_bits(64).unwrap();
                let (by_delta, widths) = super::fitted_header(&mut h).unwrap();
                assert_eq!(by_delta, by_delta_meant, "{n} samples");
                assert!(RunTable::of(&widths, by_delta).is_none(), "{widths:?}");
                // Two lanes of at least MIN_LANE codes each fit around a
                // regular restart point from 224 samples on.
                lanes += usize::from(n >= RESTART_EVERY + MIN_LANE);
                check_block(&s);
            }
        }
        assert_eq!(lanes, 4 * 6);
    }

    #[test]
    fn ranges_that_cut_runs_of_zero_codes_keep_exactly_the_samples_inside() {
        // A regular interval and values that go on by a fixed step (or stay)
        // decode as runs: the range's ends fall inside them, in both
        // columns, in every value kind, at and away from restart points.
        let kinds: [&dyn Fn(i64) -> f64; 5] = [
            &|i| (i * 7) as f64,
            &|i| 12.5 + (i / 40 * 3) as f64 / 100.0,
            &|_| 0.75,
            &|i| if i < 200 { 1e300 } else { -1.5e-7 },
            &|i| (i * 3 + i / 100) as f64,
        ];
        for n in [100, 161, 240, 480] {
            for value in kinds {
                let s: Vec<Sample> = (0..n as i64)
                    .map(|i| Sample::new(1_764_547_200_000 + i * 15_000, value(i)))
                    .collect();
                check_block(&s);
                let c = encode(&s[..n.min(240)]);
                let mut out = Vec::new();
                for (lo, hi) in [(s[3].t, s[n / 2].t - 1), (s[1].t + 1, i64::MAX), (i64::MIN, s[n / 4].t)] {
                    out.clear();
                    c.decode_range(lo, hi, &mut out).expect("decodes");
                    let want: Vec<Sample> = s[..n.min(240)]
                        .iter()
                        .copied()
                        .filter(|x| x.t >= lo && x.t <= hi)
                        .collect();
                    assert_eq!(out, want, "range {lo}..={hi} of a head chunk of {} samples", n.min(240));
                }
            }
        }
    }

    #[test]
    fn special_values_round_trip_bit_exactly() {
        let vals = [
            0.0,
            -0.0,
            1.0,
            f64::NAN,
            STALE_NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
            -1e-300,
            42.0,
            f64::MIN_POSITIVE,
            9.007199254740993e15,
        ];
        let s: Vec<Sample> = vals
            .iter()
            .enumerate()
            .map(|(i, &v)| Sample::new(i as i64 * 15_000, v))
            .collect();
        check(&s);
    }

    #[test]
    fn float_columns_of_every_code_round_trip_bit_exactly() {
        // Long runs, so that most codes are read from the middle of a
        // column: repeats (`0`), small changes within a window (`10`), new
        // windows of every width up to 64 meaningful bits (`11`), NaN
        // payloads among them.
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for n in [161usize, 480, 1000] {
            let mut v = 1.5f64;
            let s: Vec<Sample> = (0..n as i64)
                .map(|i| {
                    let r = next();
                    v = match r % 5 {
                        0 => v,
                        1 => f64::from_bits(v.to_bits() ^ (r >> 59)),
                        2 => f64::from_bits(v.to_bits() ^ ((r >> 20) << (r % 20))),
                        3 => f64::from_bits(next()),
                        _ => v * 1.000_001 + 0.5,
                    };
                    Sample::new(i * 15_000, v)
                })
                .collect();
            let c = encode(&s);
            assert_eq!(c.kind, ValueKind::Float);
            let mut out = Vec::new();
            c.decode_into(&mut out).expect("decodes");
            assert_eq!(out.len(), n);
            for (a, b) in out.iter().zip(&s) {
                assert_eq!((a.t, a.v.to_bits()), (b.t, b.v.to_bits()));
            }
            check_block(&s);
        }
    }

    #[test]
    fn decimals_are_stored_as_scaled_integers_bit_exactly() {
        let vals = [0.4321, 0.5, 0.4329, 12.25, 7.0, 0.1 + 0.2, -3.5];
        let s: Vec<Sample> = vals
            .iter()
            .enumerate()
            .map(|(i, &v)| Sample::new(i as i64 * 15_000, v))
            .collect();
        check(&s[..5]);
        let mut a = ChunkAppender::new();
        for x in &s[..5] {
            a.append(x.t, x.v);
        }
        assert_eq!(a.kind(), ValueKind::Decimal(4));
        assert_eq!(encode(&s[..5]).kind, ValueKind::FittedDecimal(4));
        // 0.1 + 0.2 is not a short decimal: the chunk falls back to XOR floats.
        check(&s);
        assert_eq!(encode(&s).kind, ValueKind::Float);
        assert_eq!(decimal_mantissa(-0.0, 3), None);
        let mut bytes: Vec<u8> = ValueKind::ALL.iter().map(|k| k.to_byte()).collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), ValueKind::ALL.len(), "each kind has a byte of its own");
        for b in 0..=255u8 {
            assert_eq!(
                ValueKind::from_byte(b),
                ValueKind::ALL.iter().copied().find(|k| k.to_byte() == b)
            );
        }
    }

    /// The header of a fitted column: (by delta, w1, step index).
    fn fitted_header(vals: &[u8]) -> (bool, u64, u64) {
        let mut r = BitReader::new(vals);
        r.read_bits(64).expect("first value");
        let by_delta = r.read_bit().expect("mode");
        (by_delta, r.read_bits(3).expect("w1") + 1, r.read_bits(2).expect("step"))
    }

    /// A counter whose increments scatter around `level` by up to `spread`,
    /// from a fixed pseudo-random sequence.
    fn scattered_counter(n: usize, level: i64, spread: i64, seed: u64) -> Vec<Sample> {
        let mut x = xorshift(seed | 1);
        let mut v = 0i64;
        (0..n)
            .map(|i| {
                let r = x();
                let jitter = if spread == 0 {
                    0
                } else {
                    (r % (2 * spread as u64 + 1)) as i64 - spread
                };
                v += (level + jitter).max(0);
                Sample::new(1_764_547_200_000 + i as i64 * 15_000, v as f64)
            })
            .collect()
    }

    #[test]
    fn fitted_columns_choose_their_coding_and_round_trip() {
        let mut headers = std::collections::HashSet::new();
        for spread in [
            0i64, 1, 2, 3, 5, 9, 20, 60, 200, 1_000, 5_000, 40_000, 300_000, 3_000_000,
        ] {
            for level in [0i64, 3, 50, 10_000] {
                for n in [2usize, 3, 17, 240, 480] {
                    let s = scattered_counter(n, level, spread, 0x9e37_79b9 ^ spread as u64 ^ n as u64);
                    check(&s);
                    let c = encode(&s);
                    assert_eq!(c.kind, ValueKind::FittedInt);
                    if n == 480 {
                        headers.insert(fitted_header(c.vals()));
                        // Never longer than the head's coding of the same
                        // values, by more than the header's six bits.
                        let mut a = ChunkAppender::new();
                        for x in &s {
                            a.append(x.t, x.v);
                        }
                        assert!(
                            c.vals().len() <= a.value_bytes().len() + 1,
                            "spread {spread} level {level}: {} > {}",
                            c.vals().len(),
                            a.value_bytes().len()
                        );
                    }
                }
            }
        }
        // Both modes and many widths were chosen over these spreads.
        assert!(
            headers.iter().any(|h| h.0) && headers.iter().any(|h| !h.0),
            "{headers:?}"
        );
        assert!(headers.len() >= 8, "{headers:?}");
    }

    #[test]
    fn scattered_increments_are_coded_by_delta_and_steady_ones_by_change_of_delta() {
        // Poisson-like increments around 40: the deltas scatter less than
        // their changes, so the column codes deltas from a base.
        let noisy = scattered_counter(480, 40, 6, 7);
        let c = encode(&noisy);
        assert!(fitted_header(c.vals()).0, "noisy counter coded by change of delta");
        let mut a = ChunkAppender::new();
        for x in &noisy {
            a.append(x.t, x.v);
        }
        assert!(
            c.vals().len() * 10 <= a.value_bytes().len() * 9,
            "fitted {} bytes, head coding {}",
            c.vals().len(),
            a.value_bytes().len()
        );
        // A counter growing by the same amount: every change of delta is
        // zero, one bit each.
        let steady = scattered_counter(480, 40, 0, 7);
        let c = encode(&steady);
        assert!(!fitted_header(c.vals()).0);
        assert!(c.vals().len() <= 8 + 1 + 60 + 1, "{}", c.vals().len());
        check(&steady);
    }

    #[test]
    fn regression_long_runs_of_unchanged_deltas_decode() {
        // 64 or more zero codes in a row once shifted a full bit buffer by 64.
        for len in [63usize, 64, 65, 130, 240, 480] {
            let s: Vec<Sample> = (0..len)
                .map(|i| Sample::new(1_000 + i as i64 * 15_000, (7 * i) as f64))
                .collect();
            check(&s);
            let c: Vec<Sample> = (0..len).map(|i| Sample::new(1_000 + i as i64 * 15_000, 42.0)).collect();
            check(&c);
        }
    }

    #[test]
    fn int_chunk_switches_to_float() {
        let mut s: Vec<Sample> = (0..50).map(|i| Sample::new(i * 1000, (i * 7) as f64)).collect();
        s.push(Sample::new(50_000, 0.5));
        s.extend((51..100).map(|i| Sample::new(i * 1000, i as f64)));
        check(&s);
    }

    #[test]
    fn regular_counters_cost_about_two_bits_a_sample() {
        let mut a = ChunkAppender::new();
        for i in 0..240 {
            a.append(1_700_000_000_000 + i * 15_000, (i * 3) as f64);
        }
        // 64-bit headers, then one bit per timestamp and one per value.
        assert!(a.ts_bytes().len() <= 8 + 2 + 31, "{}", a.ts_bytes().len());
        assert!(a.value_bytes().len() <= 8 + 2 + 31, "{}", a.value_bytes().len());
    }

    /// Appends `samples` one by one and, past the restart point (at every
    /// length, or with `all` false at a few), reads the newest samples (which
    /// decodes from the mark) and compares them with the samples themselves.
    fn check_reads_after_the_mark(samples: &[Sample], all: bool) {
        let mut a = ChunkAppender::new();
        let last = samples.len().saturating_sub(1);
        for (i, s) in samples.iter().enumerate() {
            a.append(s.t, s.v);
            if i < MARK_AT || !(all || [MARK_AT, MARK_AT + 1, (MARK_AT + last) / 2, last].contains(&i)) {
                continue;
            }
            for j in [MARK_AT, MARK_AT + 1, (MARK_AT + i) / 2, i] {
                let Some(from) = samples.get(j) else { continue };
                for mint in [from.t, from.t.saturating_sub(1), from.t.saturating_add(1)] {
                    for maxt in [i64::MAX, s.t, s.t.saturating_sub(1)] {
                        let mut out = vec![Sample::new(-1, 0.5)];
                        a.decode_range(mint, maxt, &mut out).expect("decodes");
                        let want: Vec<Sample> = std::iter::once(Sample::new(-1, 0.5))
                            .chain(samples[..=i].iter().copied().filter(|x| x.t >= mint && x.t <= maxt))
                            .collect();
                        assert_eq!(out, want, "{} samples, range {mint}..={maxt}", i + 1);
                    }
                }
            }
        }
        assert_eq!(a.mark.is_set(), samples.len() > MARK_AT);
    }

    #[test]
    fn the_newest_samples_of_an_open_chunk_are_read_from_its_restart_point() {
        // Counters, then a switch to decimals after the mark, then to floats.
        let s: Vec<Sample> = (0..MAX_CHUNK_SAMPLES as i64)
            .map(|i| {
                let v = match i {
                    0..150 => (i * i) as f64,
                    150..200 => i as f64 / 4.0,
                    _ => (i as f64).sqrt(),
                };
                Sample::new(1_000 + i * 15_000 + (i % 3), v)
            })
            .collect();
        check_reads_after_the_mark(&s, true);
        let mut a = ChunkAppender::new();
        for x in &s {
            a.append(x.t, x.v);
        }
        assert!(a.mark.is_set());
        assert_eq!(a.kind(), ValueKind::Float);
    }

    proptest! {
        #[test]
        fn reads_from_the_restart_point_equal_reads_from_the_start(
            start in any::<i64>().prop_map(|t| t / 4),
            steps in proptest::collection::vec(1i64..100_000, 121..=240),
            ints_until in 0usize..240,
            tail in proptest::collection::vec(prop_oneof![
                (-10_000i64..10_000).prop_map(|m| m as f64 / 100.0),
                any::<f64>(),
                Just(STALE_NAN),
                any::<i32>().prop_map(|v| v as f64),
            ], 240),
            base in any::<i32>(),
        ) {
            let mut t = start;
            let mut s = Vec::new();
            for (i, d) in steps.iter().enumerate() {
                t = t.saturating_add(*d);
                let v = if i < ints_until { base as f64 + (i * i) as f64 } else { tail[i] };
                s.push(Sample::new(t, v));
            }
            s.dedup_by_key(|x| x.t);
            check_reads_after_the_mark(&s, false);
        }

        #[test]
        fn any_sequence_round_trips(
            start in any::<i64>().prop_map(|t| t / 4),
            steps in proptest::collection::vec(1i64..10_000_000, 0..300),
            vals in proptest::collection::vec(prop_oneof![
                any::<f64>(),
                any::<i32>().prop_map(|v| v as f64),
                Just(STALE_NAN),
                Just(f64::NAN),
                any::<u64>().prop_map(f64::from_bits),
            ], 300),
        ) {
            let mut t = start;
            let mut s = Vec::new();
            for (i, d) in steps.iter().enumerate() {
                t = t.saturating_add(*d);
                s.push(Sample::new(t, vals[i]));
            }
            s.dedup_by_key(|x| x.t);
            check(&s);
        }

        /// Counter-like data: small increments mixed with steady runs,
        /// resets and jumps, on jittered timestamps, so that every code
        /// length of both columns follows every other.
        #[test]
        fn counters_with_mixed_code_lengths_round_trip(
            steps in proptest::collection::vec(prop_oneof![
                8 => Just(15_000i64),
                2 => 14_000i64..16_000,
                1 => 1i64..10_000_000,
            ], 1..400),
            incs in proptest::collection::vec(prop_oneof![
                4 => Just(0i64),
                8 => 0i64..20,
                2 => 0i64..3_000,
                1 => 0i64..10_000_000,
                1 => Just(-1i64),
                1 => Just(i64::MIN / 4),
            ], 400),
        ) {
            let mut t = 1_764_547_200_000i64;
            let mut v = 1_000i64;
            let mut s = Vec::new();
            for (i, d) in steps.iter().enumerate() {
                t += d;
                v = match incs[i] {
                    -1 => 0,
                    x if x == i64::MIN / 4 => 1 << 52,
                    x => v.saturating_add(x).min(1 << 52),
                };
                s.push(Sample::new(t, v as f64));
            }
            check(&s);
        }

        /// Integers anywhere in the exact range, in long steady runs, small
        /// steps and jumps across the whole range: every code width and
        /// both modes of a fitted column.
        #[test]
        fn fitted_integer_columns_round_trip(
            first in -(1i64 << 53) + 1..(1i64 << 53),
            moves in proptest::collection::vec(prop_oneof![
                4 => Just(0i64),
                6 => -3i64..4,
                4 => 0i64..300,
                2 => -100_000i64..100_000,
                1 => -(1i64 << 53) + 1..(1i64 << 53),
            ], 0..500),
            decimal in 0u8..4,
        ) {
            let mut v = first;
            let mut s = vec![Sample::new(0, v as f64)];
            for (i, m) in moves.iter().enumerate() {
                v = if m.unsigned_abs() > 1 << 20 { *m } else { (v + m).clamp(-(1i64 << 53) + 1, (1i64 << 53) - 1) };
                s.push(Sample::new(15_000 * (i as i64 + 1), v as f64));
            }
            if decimal > 0 {
                // Small mantissas scaled to decimals stay exact.
                for x in &mut s {
                    x.v = ((x.v as i64) % 1_000_000) as f64 / POW10[decimal as usize];
                }
            }
            check(&s);
        }
    }

    /// Codes of a fitted column as [`code_loop`] decodes them, table or
    /// not, equal the values a code at a time gives: for both modes, every
    /// pair of widths, runs of zero codes short and long, codes of every
    /// bucket, and columns that end at any point of a lookup.
    #[test]
    fn run_tables_decode_what_one_code_at_a_time_does() {
        let mut x = xorshift(0x2545_f491_4f6c_dd1d);
        let mut next = move |m: u64| x() % m;
        let mut tabled = 0;
        for by_delta in [false, true] {
            for w1 in 1..=8u8 {
                for step in FIT_STEPS {
                    let widths = [w1, w1 + step, 24, 64];
                    tabled += RunTable::of(&widths, by_delta).is_some() as usize;
                    for _ in 0..60 {
                        let n = next(300) as usize;
                        let field = |w: u8, r: u64| (r % (1 << w)) as i64 - (1 << (w - 1));
                        let mut codes = Vec::with_capacity(n);
                        while codes.len() < n {
                            let c = match next(100) {
                                0..=29 => 0,
                                30..=64 => field(widths[0], next(1 << 20)),
                                65..=89 => field(widths[1], next(1 << 20)),
                                90..=94 => field(widths[2], next(1 << 30)),
                                95..=96 => next(1 << 40) as i64 - (1 << 39),
                                _ => {
                                    let z = next(40) as usize;
                                    codes.extend(std::iter::repeat_n(0, z.min(n - codes.len())));
                                    continue;
                                }
                            };
                            codes.push(c);
                        }
                        let mut w = BitWriter::new();
                        for &c in &codes {
                            write_bucketed(&mut w, c, &widths);
                        }
                        let bytes = w.into_bytes();
                        let (v0, d0) = (next(2_000_000) as i64 - 1_000_000, next(20_000) as i64 - 10_000);
                        let (mut v, mut d) = (v0, d0);
                        let want: Vec<i64> = codes
                            .iter()
                            .map(|&c| {
                                if by_delta {
                                    v += d + c;
                                } else {
                                    d += c;
                                    v += d;
                                }
                                v
                            })
                            .collect();
                        let mut slots = vec![Sample::new(0, f64::NAN); n];
                        let r = BitReader::new(&bytes);
                        let done = if by_delta {
                            code_loop::<true, true>(r, &widths, v0, d0, &mut Ints::ints(&mut slots))
                        } else {
                            code_loop::<false, true>(r, &widths, v0, d0, &mut Ints::ints(&mut slots))
                        };
                        assert!(done.is_some(), "mode {by_delta} widths {widths:?}");
                        let got: Vec<i64> = slots.iter().map(|s| s.v as i64).collect();
                        assert_eq!(got, want, "mode {by_delta} widths {widths:?} codes {codes:?}");
                        // Without its last byte the column is refused: no
                        // lookup reads bits past the end as zero codes.
                        if let Some(cut) = bytes.len().checked_sub(1) {
                            let r = BitReader::new(&bytes[..cut]);
                            let done = if by_delta {
                                code_loop::<true, true>(r, &widths, v0, d0, &mut Ints::ints(&mut slots))
                            } else {
                                code_loop::<false, true>(r, &widths, v0, d0, &mut Ints::ints(&mut slots))
                            };
                            assert!(done.is_none(), "mode {by_delta} widths {widths:?} cut to {cut} bytes");
                        }
                    }
                }
            }
        }
        // Both modes have tables for the short widths.
        assert_eq!(tabled, 2 * 3 * FIT_STEPS.len());
    }

    #[test]
    fn a_range_decode_keeps_exactly_the_samples_inside() {
        let s: Vec<Sample> = (0..240i64)
            .map(|i| Sample::new(1_000 + i * 15, (i * i) as f64))
            .collect();
        let c = encode(&s);
        for (lo, hi) in [
            (0, 10_000),
            (1_000, 4_585),
            (1_001, 4_584),
            (2_000, 2_000),
            (2_005, 2_010),
            (5_000, 9_000),
        ] {
            let mut out = vec![Sample::new(-1, 0.0)];
            c.decode_range(lo, hi, &mut out).unwrap();
            let want: Vec<Sample> = std::iter::once(Sample::new(-1, 0.0))
                .chain(s.iter().copied().filter(|x| x.t >= lo && x.t <= hi))
                .collect();
            assert_eq!(out, want, "range {lo}..={hi}");
        }
    }

    #[test]
    fn timestamps_out_of_order_are_refused_by_a_range_decode() {
        let a = encode(&[Sample::new(100, 1.0), Sample::new(200, 2.0), Sample::new(300, 3.0)]);
        let b = encode(&[Sample::new(100, 1.0), Sample::new(50, 2.0), Sample::new(300, 3.0)]);
        // Same values, the second timestamp column from a (damaged) backwards run.
        let mut out = vec![Sample::new(-1, 0.0)];
        assert_eq!(
            decode_range(b.ts(), a.kind, a.vals(), 3, (0, 250), &mut out),
            Err(CorruptChunk)
        );
        assert_eq!(out.len(), 1);
        decode_range(a.ts(), a.kind, a.vals(), 3, (0, 250), &mut out).unwrap();
        assert_eq!(out[1..], [Sample::new(100, 1.0), Sample::new(200, 2.0)]);
    }

    #[test]
    fn a_cut_column_is_refused_without_panicking() {
        let mut s = Vec::new();
        let mut v = 0i64;
        for i in 0..240i64 {
            v += [0, 3, 17, 900, 0, 0, 70_000, 1 << 40][(i % 8) as usize];
            s.push(Sample::new(i * 15_000 + (i % 3) * 1_000, v as f64));
        }
        let c = encode(&s);
        for cut in 0..c.ts().len() {
            let mut out = Vec::new();
            assert!(decode_columns(&c.ts()[..cut], c.kind, c.vals(), s.len(), &mut out).is_err());
            assert!(out.is_empty());
        }
        for cut in 0..c.vals().len() {
            let mut out = Vec::new();
            let r = decode_columns(c.ts(), c.kind, &c.vals()[..cut], s.len(), &mut out);
            assert!(r.is_err(), "cut at {cut} of {}", c.vals().len());
            assert!(out.is_empty());
        }
        let mut out = Vec::new();
        decode_columns(c.ts(), c.kind, c.vals(), s.len(), &mut out).unwrap();
        assert_eq!(out, s);
    }

    #[test]
    fn a_damaged_sample_count_is_refused_before_allocating() {
        let c = encode(&[Sample { t: 1, v: 2.0 }, Sample { t: 2, v: 3.0 }]);
        let mut out = Vec::new();
        assert_eq!(
            decode_columns(c.ts(), c.kind, c.vals(), 1 << 40, &mut out),
            Err(CorruptChunk)
        );
        assert!(out.capacity() < 1 << 20);
        let mut big = Vec::new();
        assert_eq!(
            decode_columns(c.ts(), c.kind, c.vals(), usize::MAX / 2, &mut big),
            Err(CorruptChunk)
        );
        assert_eq!(big.capacity(), 0);
        assert!(decode_columns(c.ts(), c.kind, c.vals(), 2, &mut out).is_ok());
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn a_block_chunk_of_no_samples_decodes_to_nothing_at_once() {
        // Damaged columns of a fitted chunk whose count says zero: the
        // search for a lane split once ran from 1 to the count minus one,
        // wrapped around to the largest index.
        let (n, kind, ts, vals, _) = fuzz_columns("timeout-8db07367ba25947a559352f61a7f40c5a464eed8");
        assert_eq!((n, kind), (0, ValueKind::FittedInt));
        for out in decode_damaged(&ts, kind, &vals, n, (0, i64::MAX)) {
            assert!(out.is_empty());
        }
    }

    #[test]
    fn a_float_window_reused_before_any_was_set_is_damage() {
        // Damaged columns of a float chunk with restart points, whose
        // decoding from a restart point met a code that reuses the previous
        // value's window before any window was read.
        let (n, kind, ts, vals, range) = fuzz_columns("crash-74e84861114df1630a398ee2f203b14f69dfa557");
        assert_eq!((n, kind), (432, ValueKind::Float));
        decode_damaged(&ts, kind, &vals, n, range);
    }

    #[test]
    fn a_restart_point_naming_a_window_of_no_bits_is_damage() {
        // A damaged restart point of a float column can carry any window;
        // one whose leading and trailing zeros fill all 64 bits has no bits
        // to read, and its trailing count may be 64, past any shift. The
        // code `10` (the previous window again) then follows.
        for (leading, trailing) in [(0u8, 64u8), (10, 54), (64, 0)] {
            let mut d = FloatDecoder {
                r: BitReader::new(&[0b1000_0000, 0, 0, 0, 0, 0, 0, 0]),
                first: false,
                bits: 1.5f64.to_bits(),
                leading,
                trailing,
            };
            assert_eq!(d.next_value(), None, "window {leading}/{trailing}");
        }
        // A window of one bit still decodes.
        let mut d = FloatDecoder {
            r: BitReader::new(&[0b1010_0000, 0, 0, 0, 0, 0, 0, 0]),
            first: false,
            bits: 0,
            leading: 0,
            trailing: 63,
        };
        assert_eq!(d.next_value().map(f64::to_bits), Some(1 << 63));
    }

    /// An input of the chunk fuzz target kept in `testdata/fuzz/chunk/`, split
    /// as the target splits it: the sample count, the kind, the timestamp
    /// and value columns, and the range it decodes.
    fn fuzz_columns(name: &str) -> (usize, ValueKind, Vec<u8>, Vec<u8>, (i64, i64)) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/fuzz/chunk")
            .join(name);
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let n = u16::from_le_bytes([data[0], data[1]]) as usize % 1_000;
        // These inputs were found when the fuzz target picked among the 21
        // kinds before the packed ones (which come after them in `ALL`).
        let kind = ValueKind::ALL[data[2] as usize % KINDS_BEFORE_PACKED];
        let split = (data[3] as usize).min(data.len() - 4);
        let (ts, vals) = data[4..].split_at(split);
        let lo = i64::from(data[2]) << 40;
        (n, kind, ts.to_vec(), vals.to_vec(), (lo, lo + (1 << 44)))
    }

    /// The number of kinds there were before the packed ones.
    const KINDS_BEFORE_PACKED: usize = 21;

    /// Decodes damaged columns with either kind of restart points: each
    /// decode succeeds or fails having added nothing; what each added.
    fn decode_damaged(ts: &[u8], kind: ValueKind, vals: &[u8], n: usize, range: (i64, i64)) -> Vec<Vec<Sample>> {
        [Restarts::Every, Restarts::EveryAndTail]
            .into_iter()
            .map(|restarts| {
                let mut out = Vec::new();
                let got = decode_block_range(ts, kind, vals, n, restarts, range, &mut out);
                assert!(
                    got.is_ok() || (got == Err(CorruptChunk) && out.is_empty()),
                    "{restarts:?}"
                );
                out
            })
            .collect()
    }
}
