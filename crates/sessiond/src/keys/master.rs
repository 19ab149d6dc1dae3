use std::fmt;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;

use crate::random::{self, RandomSource};
use crate::secret::Secret;

/// The key that seals every signing key at rest: 32 bytes, given as base64.
#[derive(Clone)]
pub struct MasterKey(Secret<[u8; 32]>);

/// Why a master key was refused. The message never contains the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MasterKeyError {
    /// The text is not base64 (standard or URL-safe, padded or not).
    #[error("master key is not base64")]
    Encoding,
    /// The key does not decode to exactly 32 bytes.
    #[error("master key must decode to 32 bytes, got {0}")]
    Length(usize),
}

impl MasterKey {
    /// A fresh random master key.
    pub fn generate(rng: &dyn RandomSource) -> Self {
        MasterKey(Secret::new(random::bytes(rng)))
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(Secret::new(bytes))
    }

    /// Parses base64 text (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`MasterKeyError`] when the text is not base64 of 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, MasterKeyError> {
        let text = text.trim();
        let decoded = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or(MasterKeyError::Encoding)?;
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| MasterKeyError::Length(decoded.len()))?;
        Ok(MasterKey::from_bytes(bytes))
    }

    /// The key as standard base64, for writing the key file. Handle the result as a secret.
    pub fn to_base64(&self) -> Secret<String> {
        Secret::new(STANDARD.encode(self.0.expose()))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        self.0.expose()
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;

    #[test]
    fn round_trip_and_errors() {
        let k = MasterKey::generate(&OsRandom);
        let text = k.to_base64();
        let back = MasterKey::from_base64(&format!("  {}\n", text.expose())).unwrap();
        assert_eq!(back.bytes(), k.bytes());
        assert_eq!(
            MasterKey::from_base64("!!!").unwrap_err(),
            MasterKeyError::Encoding
        );
        assert_eq!(
            MasterKey::from_base64("AAAA").unwrap_err(),
            MasterKeyError::Length(3)
        );
        assert_eq!(format!("{k:?}"), "MasterKey([redacted])");
    }
}
