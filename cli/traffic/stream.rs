//! The bytes the traffic tool sends, and the digest it keeps of them.

/// splitmix64: a tiny, fast, well-mixed generator (Steele et al. 2014).
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The bytes of one stream: byte `p` is byte `p % 8` of word `p / 8`.
#[derive(Debug, Clone, Copy)]
pub struct Keystream(pub u64);

impl Keystream {
    fn word(self, index: u64) -> [u8; 8] {
        splitmix64(self.0 ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93)).to_le_bytes()
    }

    /// Fills `out` with the stream's bytes starting at position `pos`.
    pub fn fill(self, pos: u64, out: &mut [u8]) {
        let mut p = pos;
        let mut i = 0;
        while i < out.len() {
            let w = self.word(p / 8);
            let off = (p % 8) as usize;
            let n = (8 - off).min(out.len() - i);
            out[i..i + n].copy_from_slice(&w[off..off + n]);
            i += n;
            p += n as u64;
        }
    }
}

/// FNV-1a, 64 bit.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystream_is_position_addressable() {
        let ks = Keystream(42);
        let mut whole = vec![0u8; 100];
        ks.fill(0, &mut whole);
        let mut part = vec![0u8; 37];
        ks.fill(13, &mut part);
        assert_eq!(&whole[13..50], &part[..]);
        assert_ne!(whole, vec![0u8; 100]);
    }

    #[test]
    fn fnv_known_value() {
        let mut f = Fnv::default();
        f.update(b"a");
        assert_eq!(f.0, 0xaf63dc4c8601ec8c);
    }
}
