//! A hasher for maps keyed by integers the process chooses itself (block
//! serials, file offsets, addresses): a rotate, an exclusive or and a
//! multiply a word. Clients cannot choose such keys, so a keyed hash would
//! be wasted work.

/// Hashes each 64-bit word with a rotate, an exclusive or and a multiply.
#[derive(Default)]
pub struct IntHasher(u64);

impl std::hash::Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, b: &[u8]) {
        let mut words = b.chunks_exact(8);
        for w in &mut words {
            self.write_u64(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
        for x in words.remainder() {
            self.write_u64(*x as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// A `HashMap` hashed by [`IntHasher`].
pub type IntHashMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<IntHasher>>;
