//! A counter-based random number generator (Philox 4x32-10).
//!
//! Element `i` of a random tensor is a pure function of (key, counter + i),
//! so the numbers do not depend on how many threads produce them, the CUDA
//! backend can generate the very same stream, and the whole state is two
//! integers that a checkpoint can store and restore exactly.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rng {
    pub key: u64,
    pub counter: u64,
}

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Four independent 32-bit random words for one counter value.
pub fn philox4x32(key: u64, counter: u64) -> [u32; 4] {
    let mut c = [counter as u32, (counter >> 32) as u32, 0, 0];
    let mut k = [key as u32, (key >> 32) as u32];
    for _ in 0..10 {
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        c = [
            ((p1 >> 32) as u32) ^ c[1] ^ k[0],
            p1 as u32,
            ((p0 >> 32) as u32) ^ c[3] ^ k[1],
            p0 as u32,
        ];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// Uniform in (0, 1], never exactly zero so that `ln` stays finite.
#[inline]
pub fn to_unit(word: u32) -> f64 {
    (word as f64 + 1.0) / 4_294_967_296.0
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { key: seed, counter: 0 }
    }

    /// Reserves `n` counter values and returns the first one.
    pub fn reserve(&mut self, n: u64) -> u64 {
        let start = self.counter;
        self.counter = self.counter.wrapping_add(n);
        start
    }

    /// A fresh generator whose stream does not overlap this one's, for
    /// handing to another component (e.g. the data loader).
    pub fn fork(&mut self) -> Rng {
        let words = philox4x32(self.key, self.reserve(1));
        Rng { key: (words[0] as u64) << 32 | words[1] as u64, counter: 0 }
    }

    pub fn next_u32(&mut self) -> u32 {
        philox4x32(self.key, self.reserve(1))[0]
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        to_unit(self.next_u32()) - 1.0 / 4_294_967_296.0
    }

    /// Uniform integer in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        let w = philox4x32(self.key, self.reserve(1));
        let wide = ((w[0] as u64) << 32) | w[1] as u64;
        ((wide as u128 * n as u128) >> 64) as u64
    }
}

/// The word threshold of a Bernoulli(`keep`) draw: `uniform_at(.., 0, 1)`
/// is `w / 2^32` for the Philox word w, and for an integer w,
/// `w / 2^32 < keep  <=>  w < ceil(keep * 2^32)` (scaling by 2^32 is exact),
/// so the draw can be decided on w alone. Dropout masks on both backends
/// use this.
pub fn keep_threshold(keep: f64) -> u64 {
    (keep * 4_294_967_296.0).ceil() as u64
}

/// The `i`-th value of a uniform [lo, hi) stream starting at `start`.
pub fn uniform_at(key: u64, start: u64, i: u64, lo: f64, hi: f64) -> f64 {
    let u = to_unit(philox4x32(key, start.wrapping_add(i))[0]) - 1.0 / 4_294_967_296.0;
    lo + (hi - lo) * u
}

/// The `i`-th value of a standard normal stream (Box-Muller on one counter).
pub fn normal_at(key: u64, start: u64, i: u64) -> f64 {
    let w = philox4x32(key, start.wrapping_add(i));
    let u1 = to_unit(w[0]);
    let u2 = to_unit(w[1]);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_known_answer() {
        // Random123's published test vector for philox4x32-10 with zero key and counter.
        let r = philox4x32(0, 0);
        assert_eq!(r, [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    }

    #[test]
    fn normals_have_unit_moments() {
        let n = 200_000;
        let (mut s, mut s2) = (0.0, 0.0);
        for i in 0..n {
            let v = normal_at(7, 0, i);
            s += v;
            s2 += v * v;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::new(3);
        for _ in 0..1000 {
            assert!(r.below(7) < 7);
        }
    }
}
