//! splitmix64: small, fast and good enough to make generated packages and
//! metadata look varied, the same on every run for the same seed.

#![allow(dead_code)] // each bench uses the part it needs

/// The generator state.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    /// An element of `v`, skewed toward the front: low-numbered packages are the
    /// "core" (glibc, openssl...) most packages depend on, which keeps a
    /// closure to thousands of packages rather than the whole repository.
    pub fn core<T: Copy>(&mut self, v: &[T]) -> T {
        v[((v.len() as f64) * self.unit().powi(4)) as usize]
    }
}
