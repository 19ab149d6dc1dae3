//! Identifiers: parsed once at the edge, then trusted by type.
//!
//! [`SessionId`] and [`KeyId`] are a fixed prefix (`ses-`, `sk-`) and base64url without padding of
//! 16 random bytes (128 bits), so they never contain `.` and can sit inside the cookie wire
//! format. [`UserId`] and [`Tenant`] come from the application and are only checked for length
//! and control characters.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::random::{self, RandomSource};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The identifier does not start with its type's prefix.
    #[error("identifier has the wrong prefix")]
    Prefix,
    /// The random part is not base64url of exactly 16 bytes in canonical form.
    #[error("identifier body is not canonical base64url of 16 bytes")]
    Body,
    /// The identifier is empty or longer than allowed.
    #[error("identifier must be 1 to {max} bytes")]
    Length {
        /// The largest accepted length in bytes.
        max: usize,
    },
    /// The identifier contains a control character.
    #[error("identifier contains a control character")]
    ControlCharacter,
}

const RANDOM_ID_BYTES: usize = 16;
/// Length of the base64url text of 16 bytes without padding.
const RANDOM_ID_TEXT: usize = 22;

fn parse_random_id(prefix: &str, text: &str) -> Result<(), IdError> {
    let body = text.strip_prefix(prefix).ok_or(IdError::Prefix)?;
    if body.len() != RANDOM_ID_TEXT {
        return Err(IdError::Body);
    }
    // The decoder rejects non-zero trailing bits, so each id has exactly one spelling.
    match URL_SAFE_NO_PAD.decode(body) {
        Ok(bytes) if bytes.len() == RANDOM_ID_BYTES => Ok(()),
        _ => Err(IdError::Body),
    }
}

fn new_random_id(prefix: &str, rng: &dyn RandomSource) -> String {
    let bytes: [u8; RANDOM_ID_BYTES] = random::bytes(rng);
    let mut text = String::with_capacity(prefix.len() + RANDOM_ID_TEXT);
    text.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut text);
    text
}

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The fixed prefix of this identifier type.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh identifier with 128 bits from `rng`.
            pub fn generate(rng: &dyn RandomSource) -> Self {
                $name(new_random_id(Self::PREFIX, rng))
            }

            /// Parses an identifier, accepting only the canonical spelling.
            ///
            /// # Errors
            /// [`IdError::Prefix`] or [`IdError::Body`].
            pub fn parse(text: &str) -> Result<Self, IdError> {
                parse_random_id(Self::PREFIX, text)?;
                Ok($name(text.to_owned()))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $name::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

random_id!(
    /// A session's identifier: `ses-` + base64url(16 random bytes). Not a secret on its own: a
    /// cookie is only valid with the MAC over it.
    SessionId,
    "ses-"
);

random_id!(
    /// A signing key's identifier: `sk-` + base64url(16 random bytes).
    KeyId,
    "sk-"
);

random_id!(
    /// An API key's public identifier: `ak-` + base64url(16 random bytes). Not the key itself.
    ApiKeyId,
    "ak-"
);

/// The longest application-supplied name ([`UserId`], [`Tenant`]), in bytes.
pub const MAX_NAME_BYTES: usize = 256;

fn check_name(text: &str) -> Result<(), IdError> {
    if text.is_empty() || text.len() > MAX_NAME_BYTES {
        return Err(IdError::Length {
            max: MAX_NAME_BYTES,
        });
    }
    if text.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter);
    }
    Ok(())
}

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Checks and wraps an application-supplied name (1 to 256 bytes, no control
            /// characters).
            ///
            /// # Errors
            /// [`IdError::Length`] or [`IdError::ControlCharacter`].
            pub fn new(text: impl Into<String>) -> Result<Self, IdError> {
                let text = text.into();
                check_name(&text)?;
                Ok($name(text))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $name::new(text).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_id!(
    /// The application's identifier for the person or client a session belongs to.
    UserId
);

name_id!(
    /// A tenant: sessions, listings and bulk revocations are scoped to one. Defaults to
    /// `default`.
    Tenant
);

impl Default for Tenant {
    fn default() -> Self {
        Tenant(String::from("default"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::{OsRandom, SeededRandom};

    #[test]
    fn generated_ids_parse_back() {
        let s = SessionId::generate(&OsRandom);
        assert!(s.as_str().starts_with("ses-"));
        assert_eq!(s.as_str().len(), 4 + 22);
        assert_eq!(SessionId::parse(s.as_str()).unwrap(), s);
        let k = KeyId::generate(&SeededRandom::new(1));
        assert!(k.as_str().starts_with("sk-"));
        assert_eq!(KeyId::parse(k.as_str()).unwrap(), k);
        assert!(!k.as_str().contains('.'));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        let good = SessionId::generate(&OsRandom);
        let body = &good.as_str()[4..];
        let cases: &[(&str, IdError)] = &[
            ("", IdError::Prefix),
            ("sk-AAAAAAAAAAAAAAAAAAAAAA", IdError::Prefix),
            ("ses-", IdError::Body),
            ("ses-AAAA", IdError::Body),
            ("ses-AAAAAAAAAAAAAAAAAAAAA.", IdError::Body),
            // 16 bytes end in 4 unused bits; a non-zero one is a second spelling of the same id.
            ("ses-AAAAAAAAAAAAAAAAAAAAAB", IdError::Body),
            ("ses-AAAAAAAAAAAAAAAAAAAA+A", IdError::Body),
        ];
        for (text, err) in cases {
            assert_eq!(SessionId::parse(text).unwrap_err(), *err, "{text}");
        }
        assert_eq!(
            KeyId::parse(&format!("sk-{body}")).unwrap().as_str().len(),
            25
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(UserId::new("alice").is_ok());
        assert_eq!(UserId::new("").unwrap_err(), IdError::Length { max: 256 });
        assert_eq!(
            UserId::new("a".repeat(257)).unwrap_err(),
            IdError::Length { max: 256 }
        );
        assert_eq!(UserId::new("a\nb").unwrap_err(), IdError::ControlCharacter);
        assert_eq!(Tenant::default().as_str(), "default");
    }
}
