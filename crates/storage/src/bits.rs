//! Bit streams (most significant bit first) and byte varints used by the codecs.

/// Appends bits to a byte buffer.
#[derive(Debug, Clone, Default)]
pub struct BitWriter {
    buf: Vec<u8>,
    /// Number of bits of `buf.last()` still free (0 means a new byte is needed).
    free: u8,
}

impl BitWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_parts(buf: Vec<u8>, free: u8) -> Self {
        BitWriter { buf, free }
    }

    /// Grows in small steps: head chunks are many and small, so doubling
    /// would waste a third of their memory on average.
    #[inline]
    fn new_byte(&mut self) {
        if self.buf.len() == self.buf.capacity() {
            self.buf.reserve_exact(16.max(self.buf.len() / 8));
        }
        self.buf.push(0);
        self.free = 8;
    }

    #[inline]
    pub fn write_bit(&mut self, bit: bool) {
        if self.free == 0 {
            self.new_byte();
        }
        self.free -= 1;
        if bit {
            let last = self.buf.len() - 1;
            self.buf[last] |= 1 << self.free;
        }
    }

    /// Writes the low `n` bits of `v`, most significant first (`n <= 64`):
    /// the free bits of the last byte, then whole bytes, then the rest.
    #[inline]
    pub fn write_bits(&mut self, v: u64, mut n: u8) {
        if n == 0 {
            return;
        }
        let v = if n >= 64 { v } else { v & ((1u64 << n) - 1) };
        if self.free > 0 {
            let take = n.min(self.free);
            n -= take;
            self.free -= take;
            let chunk = ((v >> n) as u8) & (((1u16 << take) - 1) as u8);
            let last = self.buf.len() - 1;
            self.buf[last] |= chunk << self.free;
        }
        while n >= 8 {
            n -= 8;
            self.new_byte();
            let last = self.buf.len() - 1;
            self.buf[last] = (v >> n) as u8;
            self.free = 0;
        }
        if n > 0 {
            self.new_byte();
            self.free = 8 - n;
            let last = self.buf.len() - 1;
            self.buf[last] = ((v as u8) & ((1u8 << n) - 1)) << self.free;
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn free_bits(&self) -> u8 {
        self.free
    }

    /// Bits written so far.
    pub fn bit_len(&self) -> usize {
        self.buf.len() * 8 - self.free as usize
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn shrink(&mut self) {
        self.buf.shrink_to_fit();
    }

    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }
}

/// Reads bits written by [`BitWriter`]. Reading past the end yields `None`.
///
/// Bits are kept most-significant-first in a 64-bit accumulator refilled eight
/// bytes at a time, so most reads are a shift and a mask.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    buf: &'a [u8],
    /// Next byte to load into the accumulator.
    pos: usize,
    acc: u64,
    /// Valid bits at the top of `acc`.
    nbits: u32,
}

impl<'a> BitReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BitReader {
            buf,
            pos: 0,
            acc: 0,
            nbits: 0,
        }
    }

    /// A reader that starts `bit` bits into `buf`, or `None` when `buf` is
    /// shorter.
    pub fn at(buf: &'a [u8], bit: usize) -> Option<Self> {
        let mut r = BitReader::new(buf.get(bit / 8..)?);
        r.read_bits((bit % 8) as u8)?;
        Some(r)
    }

    #[inline(always)]
    fn refill(&mut self) {
        if self.pos + 8 <= self.buf.len() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&self.buf[self.pos..self.pos + 8]);
            let word = u64::from_be_bytes(w);
            // Whole bytes that fit; the bits of a partial byte are loaded again,
            // at the same place, by the next refill.
            let take = (64 - self.nbits) / 8;
            if take > 0 {
                self.acc |= word >> self.nbits;
                self.pos += take as usize;
                self.nbits += take * 8;
            }
        } else {
            while self.nbits <= 56 && self.pos < self.buf.len() {
                self.acc |= (self.buf[self.pos] as u64) << (56 - self.nbits);
                self.pos += 1;
                self.nbits += 8;
            }
        }
    }

    #[inline(always)]
    pub fn read_bit(&mut self) -> Option<bool> {
        if self.nbits == 0 {
            self.refill();
            if self.nbits == 0 {
                return None;
            }
        }
        let b = self.acc >> 63;
        self.acc <<= 1;
        self.nbits -= 1;
        Some(b == 1)
    }

    /// Reads `n <= 64` bits as an unsigned integer.
    #[inline(always)]
    pub fn read_bits(&mut self, n: u8) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        if n > 56 {
            let hi = self.read_short(n as u32 - 32)?;
            let lo = self.read_short(32)?;
            return Some((hi << 32) | lo);
        }
        self.read_short(n as u32)
    }

    /// Reads `1 <= n <= 56` bits.
    #[inline(always)]
    fn read_short(&mut self, n: u32) -> Option<u64> {
        if self.nbits < n {
            self.refill();
            if self.nbits < n {
                return None;
            }
        }
        let v = self.acc >> (64 - n);
        self.acc <<= n;
        self.nbits -= n;
        Some(v)
    }

    /// Refills when fewer than 32 bits are buffered; returns the buffer (valid
    /// bits at the top) and how many bits are valid.
    #[inline(always)]
    pub fn window(&mut self) -> (u64, u32) {
        if self.nbits < 32 {
            self.refill();
        }
        (self.acc, self.nbits)
    }

    /// The next `n` (1..=32) bits without consuming them, if that many remain.
    #[inline(always)]
    pub fn peek(&mut self, n: u32) -> Option<u64> {
        if self.nbits < n {
            self.refill();
            if self.nbits < n {
                return None;
            }
        }
        Some(self.acc >> (64 - n))
    }

    /// Drops `n` bits that [`BitReader::peek`] showed.
    #[inline(always)]
    pub fn skip(&mut self, n: u32) {
        // A whole buffer of zero codes can be skipped at once: shifting a u64
        // by 64 is not defined, so clear it instead.
        self.acc = if n >= 64 { 0 } else { self.acc << n };
        self.nbits -= n;
    }

    /// Drops `n < 64` bits that [`BitReader::peek`] or
    /// [`BitReader::window`] showed.
    #[inline(always)]
    pub fn skip_short(&mut self, n: u32) {
        debug_assert!(n < 64 && n <= self.nbits);
        self.acc <<= n & 63;
        self.nbits -= n;
    }

    /// Counts leading one bits up to `max` and consumes them, plus the zero
    /// that ends them when fewer than `max` (the unary prefix of a bucket code).
    #[inline(always)]
    pub fn read_unary(&mut self, max: u8) -> Option<u8> {
        let max = max as u32;
        if self.nbits <= max {
            self.refill();
        }
        let ones = (!self.acc).leading_zeros().min(max);
        let used = if ones < max { ones + 1 } else { ones };
        if used > self.nbits {
            return None;
        }
        self.acc <<= used;
        self.nbits -= used;
        Some(ones as u8)
    }
}

#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends `v` as an LEB128 varint.
#[inline]
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v))
}

/// A cursor over bytes that reports truncation instead of panicking.
#[derive(Debug, Clone)]
pub struct ByteReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// The input ended early or held an impossible value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

impl<'a> ByteReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        ByteReader { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// An unsigned LEB128 integer. Most in the index are one or two bytes
    /// long: those take a path without a loop.
    #[inline(always)]
    pub fn uvarint(&mut self) -> Result<u64, Truncated> {
        match self.buf.get(self.pos..) {
            Some(&[b0, ..]) if b0 < 0x80 => {
                self.pos += 1;
                Ok(b0 as u64)
            }
            Some(&[b0, b1, ..]) if b1 < 0x80 => {
                self.pos += 2;
                Ok((b0 & 0x7f) as u64 | (b1 as u64) << 7)
            }
            _ => self.uvarint_long(),
        }
    }

    #[inline(never)]
    fn uvarint_long(&mut self) -> Result<u64, Truncated> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let b = *self.buf.get(self.pos).ok_or(Truncated)?;
            self.pos += 1;
            if shift >= 64 {
                return Err(Truncated);
            }
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    #[inline]
    pub fn varint(&mut self) -> Result<i64, Truncated> {
        Ok(unzigzag(self.uvarint()?))
    }

    pub fn u8(&mut self) -> Result<u8, Truncated> {
        let b = *self.buf.get(self.pos).ok_or(Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    pub fn u32_le(&mut self) -> Result<u32, Truncated> {
        let s = self.bytes(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    pub fn u64_le(&mut self) -> Result<u64, Truncated> {
        let s = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        let end = self.pos.checked_add(n).ok_or(Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(Truncated)?;
        self.pos = end;
        Ok(s)
    }

    /// A varint length followed by that many bytes.
    pub fn len_prefixed(&mut self) -> Result<&'a [u8], Truncated> {
        let n = self.uvarint()?;
        self.bytes(usize::try_from(n).map_err(|_| Truncated)?)
    }

    pub fn str(&mut self) -> Result<&'a str, Truncated> {
        std::str::from_utf8(self.len_prefixed()?).map_err(|_| Truncated)
    }
}

pub fn put_len_prefixed(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_any_widths() {
        let mut w = BitWriter::new();
        let items: Vec<(u64, u8)> = (0..200u64)
            .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (i % 64), (i % 64 + 1) as u8))
            .collect();
        for &(v, n) in &items {
            w.write_bits(v, n);
        }
        let bytes = w.into_bytes();
        let mut r = BitReader::new(&bytes);
        for &(v, n) in &items {
            let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
            assert_eq!(r.read_bits(n), Some(v & mask));
        }
    }

    #[test]
    fn varints_round_trip_and_detect_truncation() {
        let mut out = Vec::new();
        for v in [0i64, 1, -1, i64::MAX, i64::MIN, 300, -300] {
            put_varint(&mut out, v);
        }
        let mut r = ByteReader::new(&out);
        for v in [0i64, 1, -1, i64::MAX, i64::MIN, 300, -300] {
            assert_eq!(r.varint(), Ok(v));
        }
        assert_eq!(r.varint(), Err(Truncated));
        assert_eq!(ByteReader::new(&[0x80, 0x80]).uvarint(), Err(Truncated));
    }

    #[test]
    fn uvarints_of_every_length_round_trip_in_sequence() {
        // Each side of the one- and two-byte paths, and the longest.
        let vs = [
            0u64,
            1,
            127,
            128,
            255,
            16_383,
            16_384,
            (1 << 21) - 1,
            1 << 21,
            1 << 35,
            u64::MAX,
        ];
        let mut out = Vec::new();
        for v in vs {
            put_uvarint(&mut out, v);
        }
        let mut r = ByteReader::new(&out);
        for v in vs {
            assert_eq!(r.uvarint(), Ok(v));
        }
        assert_eq!(r.remaining(), 0);
        assert_eq!(r.uvarint(), Err(Truncated));
        for cut in [&[0x80u8][..], &[0xff], &[0xff, 0xff], &[0x81, 0x82, 0x83]] {
            assert_eq!(ByteReader::new(cut).uvarint(), Err(Truncated), "{cut:?}");
        }
        // Eleven bytes cannot be a u64.
        assert_eq!(ByteReader::new(&[0xff; 11]).uvarint(), Err(Truncated));
    }
}
