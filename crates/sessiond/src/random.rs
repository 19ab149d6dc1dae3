//! Randomness from one place.
//!
//! Every id, secret and key in sessiond is drawn from a [`RandomSource`]. Production uses the
//! operating system's CSPRNG ([`OsRandom`]); tests may inject [`SeededRandom`] to make runs
//! reproducible. Nothing else in the crate calls a random number generator directly.

use std::fmt;
use std::sync::Mutex;

use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

/// A source of cryptographically strong random bytes.
pub trait RandomSource: Send + Sync + fmt::Debug + 'static {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]);
}

/// Draws `N` random bytes from `rng`.
pub fn bytes<const N: usize>(rng: &dyn RandomSource) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill(&mut out);
    out
}

/// The operating system's CSPRNG (`getrandom`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&self, dest: &mut [u8]) {
        OsRng.fill_bytes(dest);
    }
}

/// A deterministic stream for tests: SHA-256 over a seed and a counter.
///
/// Not for production: anyone who knows the seed knows every value.
pub struct SeededRandom {
    state: Mutex<(u64, [u8; 32])>,
}

impl SeededRandom {
    /// A stream determined entirely by `seed`.
    pub fn new(seed: u64) -> Self {
        let digest: [u8; 32] = Sha256::digest(seed.to_le_bytes()).into();
        SeededRandom {
            state: Mutex::new((0, digest)),
        }
    }
}

impl fmt::Debug for SeededRandom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeededRandom(..)")
    }
}

impl RandomSource for SeededRandom {
    fn fill(&self, dest: &mut [u8]) {
        // A poisoned lock only means another test thread panicked mid-fill; the state is still
        // a valid counter and seed, so carry on with it.
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        for chunk in dest.chunks_mut(32) {
            let (counter, seed) = *guard;
            let block: [u8; 32] = Sha256::new()
                .chain_update(seed)
                .chain_update(counter.to_le_bytes())
                .finalize()
                .into();
            for (d, s) in chunk.iter_mut().zip(block.iter()) {
                *d = *s;
            }
            guard.0 = counter.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_random_is_not_constant() {
        let a: [u8; 16] = bytes(&OsRandom);
        let b: [u8; 16] = bytes(&OsRandom);
        assert_ne!(a, b);
    }

    #[test]
    fn seeded_random_is_reproducible_and_distinct_per_seed() {
        let a: [u8; 40] = bytes(&SeededRandom::new(7));
        let b: [u8; 40] = bytes(&SeededRandom::new(7));
        let c: [u8; 40] = bytes(&SeededRandom::new(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let r = SeededRandom::new(7);
        let first: [u8; 16] = bytes(&r);
        let second: [u8; 16] = bytes(&r);
        assert_ne!(first, second);
    }
}
