//! Our own tokens (docs/DESIGN.md §3.2): the access JWT (`typ: at+jwt`) and the refresh JWT
//! (`typ: refresh+jwt`), issued and verified over the key ring.
//!
//! The policy is ours, the signature math is jsonwebtoken's (through [`crate::jose`]): a token is
//! accepted only with the `typ` of its kind, a `kid` naming a usable key *of the purpose of its
//! kind* (access keys never verify refresh tokens and vice versa), the `alg` that key is pinned
//! to, our issuer, the audience of its kind, and `exp`/`nbf` within the leeway. Access and
//! refresh tokens therefore can never stand in for each other: `typ`, key purpose and audience
//! each differ.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::clock::Timestamp;
use crate::id::{KeyId, SessionId};
use crate::jose::{self, JwsError};
use crate::keys::{Key, KeyError, KeyPurpose, KeyRefusal, KeyRing};
use crate::secret::Secret;
use crate::session::Session;

/// Lifetimes and names of token sessions; `Default` is docs/DESIGN.md §10.3's.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TokenPolicy {
    /// Lifetime of an access token (default 10 min).
    pub access_ttl: Duration,
    /// Inactivity (no refresh) after which a token session ends (default 14 d).
    pub refresh_idle_ttl: Duration,
    /// Lifetime of a token session however often it refreshes (default 30 d).
    pub refresh_absolute_ttl: Duration,
    /// How long after a rotation the previous refresh token still yields the same successor
    /// (concurrent tabs, retries) instead of counting as reuse (default 10 s).
    pub refresh_grace: Duration,
    /// How long after a rotation a refresh token whose successor pair was never used (a lost
    /// response) is answered with a fresh successor instead of counting as reuse (default 3 d;
    /// zero: strict, every rotated-out token outside the grace window is reuse).
    pub lost_response_window: Duration,
    /// `iss` of every token we issue and require (default `sessiond`).
    pub issuer: String,
    /// `aud` of access tokens (default `sessiond`).
    pub access_audience: String,
    /// `aud` of refresh tokens (default `sessiond:refresh`); only sessiond reads them.
    pub refresh_audience: String,
    /// Clock skew tolerated on `exp` and `nbf` (default 30 s).
    pub leeway: Duration,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            access_ttl: Duration::from_secs(600),
            refresh_idle_ttl: Duration::from_secs(14 * 24 * 3600),
            refresh_absolute_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_grace: Duration::from_secs(10),
            lost_response_window: Duration::from_secs(3 * 24 * 3600),
            issuer: String::from("sessiond"),
            access_audience: String::from("sessiond"),
            refresh_audience: String::from("sessiond:refresh"),
            leeway: Duration::from_secs(30),
        }
    }
}

/// The two token kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenKind {
    /// Short-lived bearer token for resource servers.
    Access,
    /// Long-lived token that only sessiond accepts, to get a new pair.
    Refresh,
}

impl TokenKind {
    /// The JOSE `typ` we write.
    pub fn typ(self) -> &'static str {
        match self {
            TokenKind::Access => "at+jwt",
            TokenKind::Refresh => "refresh+jwt",
        }
    }

    fn purpose(self) -> KeyPurpose {
        match self {
            TokenKind::Access => KeyPurpose::Access,
            TokenKind::Refresh => KeyPurpose::Refresh,
        }
    }

    fn audience(self, policy: &TokenPolicy) -> &str {
        match self {
            TokenKind::Access => &policy.access_audience,
            TokenKind::Refresh => &policy.refresh_audience,
        }
    }

    /// `typ` is a media type, compared case-insensitively, with or without `application/`
    /// (RFC 9068 §2.1).
    fn accepts_typ(self, typ: &str) -> bool {
        let typ = typ.strip_prefix("application/").unwrap_or(typ);
        typ.eq_ignore_ascii_case(self.typ())
    }
}

/// Why one of our tokens was refused (before the session row is consulted).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The compact JWS is malformed, its signature does not verify, `alg` is not the key's,
    /// or the token is expired / not yet valid.
    #[error(transparent)]
    Jws(#[from] JwsError),
    /// `typ` is missing or belongs to another kind of token.
    #[error("wrong token type")]
    WrongType,
    /// The header has no `kid`.
    #[error("token has no kid")]
    MissingKid,
    /// The `kid` is not one of our key ids.
    #[error("token kid is not a key id")]
    MalformedKid,
    /// The key named by `kid` is unknown, retired past retention, or of another purpose.
    #[error("token key not usable: {0}")]
    Key(#[source] KeyRefusal),
    /// The payload is not a JSON object with unique member names.
    #[error("token claims are not a JSON object")]
    ClaimsNotObject,
    /// A required claim is absent or has the wrong JSON type.
    #[error("claim {0} is missing or malformed")]
    Claim(&'static str),
    /// `iss` is not ours.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not contain the audience of this token kind.
    #[error("wrong audience")]
    WrongAudience,
}

impl TokenError {
    /// A stable reason code for audit records and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Jws(e) => e.reason(),
            TokenError::WrongType => "token_wrong_type",
            TokenError::MissingKid | TokenError::MalformedKid => "token_kid",
            TokenError::Key(k) => k.reason(),
            TokenError::ClaimsNotObject | TokenError::Claim(_) => "token_claims",
            TokenError::WrongIssuer => "token_wrong_issuer",
            TokenError::WrongAudience => "token_wrong_audience",
        }
    }
}

/// A verified token's claims, typed where we rely on them.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedToken {
    pub(crate) key_id: KeyId,
    pub(crate) session_id: SessionId,
    pub(crate) subject: String,
    pub(crate) expires_at: Timestamp,
    pub(crate) jti: Secret<String>,
    /// `gen`: the refresh generation of the pair the token belongs to (absent in tokens issued
    /// before generations were named).
    pub(crate) generation: Option<u64>,
    /// `nbf`, if the token has one (checked again on every hit of the verified-token cache).
    pub(crate) not_before: Option<i64>,
}

impl VerifiedToken {
    /// An estimate of the bytes this value holds (for the verified-token cache's byte limit).
    pub(crate) fn size_estimate(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.key_id.as_str().len()
            + self.session_id.as_str().len()
            + self.subject.len()
            + self.jti.expose().len()
    }
}

/// Verifies one of our tokens of `kind` with the key its `kid` names, returning the key too
/// (refresh derives the successor with it). The outer result is the key ring's ability to answer
/// (an outage: 503), the inner one the verdict about the token.
pub(crate) async fn verify(
    keys: &KeyRing,
    policy: &TokenPolicy,
    kind: TokenKind,
    token: &str,
    now: Timestamp,
) -> Result<Result<(VerifiedToken, std::sync::Arc<Key>), TokenError>, KeyError> {
    let compact = match jose::parse_compact(token) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e.into())),
    };
    let key = match kid_of(&compact, kind) {
        Ok(kid) => match keys.verifier(&kid, kind.purpose()).await? {
            Ok(key) => key,
            Err(KeyRefusal::Retired) => {
                return Ok(Err(refused_by_ended_key(
                    keys, policy, kind, &compact, &kid, now,
                )
                .await))
            }
            Err(refusal) => return Ok(Err(TokenError::Key(refusal))),
        },
        Err(e) => return Ok(Err(e)),
    };
    Ok(check(policy, kind, &compact, key, now))
}

/// A token the verified-token cache holds, checked again for what can change since it was
/// verified: the key must still verify (a retired key's tokens fall back to [`verify`], which
/// tells `token_expired` from `key_retired`), and the time must still be within `exp`/`nbf`.
/// `None`: the key no longer verifies; verify the token from scratch.
pub(crate) async fn recheck(
    keys: &KeyRing,
    policy: &TokenPolicy,
    kind: TokenKind,
    cached: &VerifiedToken,
    now: Timestamp,
) -> Result<Option<Result<(VerifiedToken, std::sync::Arc<Key>), TokenError>>, KeyError> {
    let key = match keys.verifier(&cached.key_id, kind.purpose()).await? {
        Ok(key) => key,
        Err(_) => return Ok(None),
    };
    let exp = cached.expires_at.unix_seconds();
    Ok(Some(
        jose::check_time(Some(exp), cached.not_before, now, policy.leeway)
            .map(|()| (cached.clone(), key))
            .map_err(TokenError::from),
    ))
}

/// The refusal of a token whose key has stopped verifying: never an acceptance. A token that
/// the ended key's signature and the claims show to be past `exp + leeway` is `token_expired`,
/// as it was while the key verified, so a client refreshes instead of treating it as forged;
/// anything else is `key_retired`. Only while the snapshot still holds the key (until garbage
/// collection removes its row).
async fn refused_by_ended_key(
    keys: &KeyRing,
    policy: &TokenPolicy,
    kind: TokenKind,
    compact: &jose::Compact,
    kid: &KeyId,
    now: Timestamp,
) -> TokenError {
    if let Some(key) = keys.ended(kid, kind.purpose()).await {
        if let Err(e @ TokenError::Jws(jose::JwsError::Expired)) =
            check(policy, kind, compact, key, now)
        {
            return e;
        }
    }
    TokenError::Key(KeyRefusal::Retired)
}

/// `typ` and `kid` of a parsed token: the key id to look up.
fn kid_of(compact: &jose::Compact, kind: TokenKind) -> Result<KeyId, TokenError> {
    if !compact.typ().is_some_and(|t| kind.accepts_typ(t)) {
        return Err(TokenError::WrongType);
    }
    let kid = compact.kid().ok_or(TokenError::MissingKid)?;
    KeyId::parse(kid).map_err(|_| TokenError::MalformedKid)
}

/// Signature under `key`, then the claims.
fn check(
    policy: &TokenPolicy,
    kind: TokenKind,
    compact: &jose::Compact,
    key: std::sync::Arc<Key>,
    now: Timestamp,
) -> Result<(VerifiedToken, std::sync::Arc<Key>), TokenError> {
    jose::verify(&key, compact)?;

    let claims = match serde_json::from_slice::<jose::JsonObject>(compact.payload()) {
        Ok(jose::JsonObject::Object(map)) => map,
        _ => return Err(TokenError::ClaimsNotObject),
    };
    if string_claim(&claims, "iss")? != policy.issuer {
        return Err(TokenError::WrongIssuer);
    }
    let audience = kind.audience(policy);
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => return Err(TokenError::Claim("aud")),
    };
    if !aud_ok {
        return Err(TokenError::WrongAudience);
    }
    let exp = int_claim(&claims, "exp")?.ok_or(TokenError::Claim("exp"))?;
    let nbf = int_claim(&claims, "nbf")?;
    jose::check_time(Some(exp), nbf, now, policy.leeway)?;
    let sid =
        SessionId::parse(string_claim(&claims, "sid")?).map_err(|_| TokenError::Claim("sid"))?;
    let verified = VerifiedToken {
        key_id: key.id().clone(),
        session_id: sid,
        subject: string_claim(&claims, "sub")?.to_owned(),
        expires_at: Timestamp::from_unix_seconds(exp),
        jti: Secret::new(string_claim(&claims, "jti")?.to_owned()),
        generation: match claims.get("gen") {
            None => None,
            Some(v) => Some(v.as_u64().ok_or(TokenError::Claim("gen"))?),
        },
        not_before: nbf,
    };
    Ok((verified, key))
}

fn string_claim<'a>(
    claims: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, TokenError> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .ok_or(TokenError::Claim(name))
}

fn int_claim(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or(TokenError::Claim(name)),
    }
}

/// What a token says beyond its session: its id and the refresh generation of its pair.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Issue<'a> {
    /// `jti` (for refresh tokens: the refresh secret).
    pub(crate) jti: &'a str,
    /// `gen`: the refresh generation of the pair.
    pub(crate) generation: u64,
    /// `iat` (and `nbf` for access tokens).
    pub(crate) now: Timestamp,
    /// `exp`.
    pub(crate) exp: Timestamp,
}

/// Signs a token of `kind` for `session`.
pub(crate) fn issue(
    key: &Key,
    policy: &TokenPolicy,
    kind: TokenKind,
    session: &Session,
    what: Issue<'_>,
) -> Result<Secret<String>, JwsError> {
    let Issue {
        jti,
        generation,
        now,
        exp,
    } = what;
    let mut header = Map::new();
    header.insert("typ".into(), Value::String(kind.typ().into()));
    header.insert("kid".into(), Value::String(key.id().as_str().into()));
    let mut claims = Map::new();
    if kind == TokenKind::Access {
        // Custom claims first, so registered ones always win (creation refuses reserved names
        // anyway).
        for (k, v) in &session.claims {
            claims.insert(k.clone(), v.clone());
        }
        claims.insert(
            "tenant".into(),
            Value::String(session.tenant.as_str().into()),
        );
        claims.insert("nbf".into(), Value::from(now.unix_seconds()));
    }
    claims.insert("iss".into(), Value::String(policy.issuer.clone()));
    claims.insert("sub".into(), Value::String(session.user_id.as_str().into()));
    claims.insert("aud".into(), Value::String(kind.audience(policy).into()));
    claims.insert("exp".into(), Value::from(exp.unix_seconds()));
    claims.insert("iat".into(), Value::from(now.unix_seconds()));
    claims.insert("jti".into(), Value::String(jti.into()));
    claims.insert("sid".into(), Value::String(session.id.as_str().into()));
    claims.insert("gen".into(), Value::from(generation));
    let payload = serde_json::to_vec(&claims).map_err(|_| JwsError::KeyUnusable)?;
    jose::sign_compact(key, &header, &payload)
}
