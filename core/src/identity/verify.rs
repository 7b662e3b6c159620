//! Verifying a compact JWS against the configured keys, then its claims. The key is chosen by
//! `kid` from the in-memory map and the algorithm comes from the key, never from the token:
//! `alg: none`, HS/RS confusion, critical extensions and embedded `jwk`/`jku`/`x5u`/`x5c`
//! headers are refused before any signature check. Claims of the wrong type refuse the token.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer};

use super::key_error::algorithm_name;
use super::keys::{IssuerBinding, KeyRef, KeySet};
use crate::value::UnixTime;

/// Longest token accepted; longer ones are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token was refused. All of these are a 401 `invalid_token` to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a compact JWS")]
    Malformed,
    #[error("token header is malformed")]
    MalformedHeader,
    #[error("token algorithm is none")]
    AlgNone,
    #[error("token header embeds key material ({0})")]
    EmbeddedKey(&'static str),
    #[error("token header has critical extensions")]
    CriticalHeader,
    #[error("token has no kid and several keys are configured")]
    MissingKid,
    #[error("token kid is not a configured key")]
    UnknownKid,
    #[error("token algorithm does not match its key")]
    AlgorithmMismatch,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token claims are malformed")]
    MalformedClaims,
    #[error("token has no exp")]
    MissingExp,
    /// The system clock cannot be read, so no expiry can be checked: refused, never passed.
    #[error("the system clock cannot be read")]
    ClockUnavailable,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued in the future")]
    IssuedInFuture,
    #[error("token has no or a wrong issuer")]
    WrongIssuer,
    #[error("token has no or a wrong audience")]
    WrongAudience,
    #[error("token has no subject")]
    MissingSubject,
    #[error("api token is malformed: {0}")]
    MalformedApiToken(super::api_token::FormatError),
    #[error("api token is not known")]
    UnknownApiToken,
    #[error("api token has been revoked")]
    RevokedApiToken,
    #[error("api token has expired")]
    ExpiredApiToken,
    #[error("the token's owner is disabled")]
    DisabledOwner,
}

impl KeySet {
    /// Checks a compact JWS and returns its verified, decoded payload.
    pub fn verify_signature(&self, token: &str) -> Result<(Vec<u8>, KeyRef<'_>), TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| TokenError::MalformedHeader)?;
        // Strict base64url for every part: no padding, whitespace or stray bits.
        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| TokenError::Malformed)?;
        let header: RawHeader =
            serde_json::from_slice(&header_json).map_err(|_| TokenError::MalformedHeader)?;
        for (present, name) in [
            (header.jwk.is_some(), "jwk"),
            (header.jku.is_some(), "jku"),
            (header.x5u.is_some(), "x5u"),
            (header.x5c.is_some(), "x5c"),
        ] {
            if present {
                return Err(TokenError::EmbeddedKey(name));
            }
        }
        if header.crit.is_some() {
            return Err(TokenError::CriticalHeader);
        }
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(TokenError::AlgNone);
        }
        let key = match header.kid.as_deref() {
            Some(kid) => self.find(kid).ok_or(TokenError::UnknownKid)?,
            None => KeyRef::Local(self.only().ok_or(TokenError::MissingKid)?),
        };
        if header.alg != algorithm_name(key.algorithm) {
            return Err(TokenError::AlgorithmMismatch);
        }
        let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
        match jsonwebtoken::crypto::verify(
            signature_b64,
            signed.as_bytes(),
            &key.key,
            key.algorithm,
        ) {
            Ok(true) => {
                let binding = match &key {
                    KeyRef::Remote(_, binding) => Some(*binding),
                    KeyRef::Local(_) => self.local_binding(),
                };
                if let Some(binding) = binding {
                    check_binding(&payload, binding)?;
                }
                Ok((payload, key))
            }
            _ => Err(TokenError::BadSignature),
        }
    }
}

/// A token verified by an issuer's key must name that issuer and one of its audiences.
fn check_binding(payload: &[u8], binding: &IssuerBinding) -> Result<(), TokenError> {
    #[derive(Deserialize)]
    struct Named {
        #[serde(default)]
        iss: Option<String>,
        #[serde(default)]
        aud: Option<Audience>,
    }
    let named: Named = serde_json::from_slice(payload).map_err(|_| TokenError::MalformedClaims)?;
    if named.iss.as_deref() != Some(binding.issuer.as_str()) {
        return Err(TokenError::WrongIssuer);
    }
    if !binding.audience.is_empty() {
        let ok = match &named.aud {
            Some(Audience::One(a)) => binding.audience.contains(a),
            Some(Audience::Many(list)) => list.iter().any(|a| binding.audience.contains(a)),
            None => false,
        };
        if !ok {
            return Err(TokenError::WrongAudience);
        }
    }
    Ok(())
}

/// The header fields we read; `deny_unknown_fields` is not used, extra fields are harmless.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    jwk: Option<serde_json::Value>,
    #[serde(default)]
    jku: Option<serde_json::Value>,
    #[serde(default)]
    x5u: Option<serde_json::Value>,
    #[serde(default)]
    x5c: Option<serde_json::Value>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// A JSON number of seconds; strings, booleans and nulls are refused rather than ignored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumericDate(UnixTime);

impl NumericDate {
    pub fn time(self) -> UnixTime {
        self.0
    }
}

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        n.as_f64()
            .and_then(UnixTime::from_secs_f64)
            .map(NumericDate)
            .ok_or_else(|| serde::de::Error::custom("not a finite number"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims portcullis reads. A claim of the wrong type makes the whole token invalid.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// OpenID Connect's `email_verified`: a JSON boolean (a string is a malformed claim).
    #[serde(default)]
    pub email_verified: Option<bool>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub exp: Option<NumericDate>,
    #[serde(default)]
    pub nbf: Option<NumericDate>,
    #[serde(default)]
    pub iat: Option<NumericDate>,
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub aud: Option<Audience>,
    #[serde(default)]
    pub jti: Option<String>,
    /// The session a token belongs to (portcullis's own tokens): revoking the session revokes
    /// every token carrying it.
    #[serde(default)]
    pub sid: Option<String>,
}

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub leeway: Duration,
}

impl ClaimRules {
    /// Parses and checks the claims of a verified payload at time `now`.
    pub fn check(&self, payload: &[u8], now: UnixTime) -> Result<Claims, TokenError> {
        let claims: Claims =
            serde_json::from_slice(payload).map_err(|_| TokenError::MalformedClaims)?;
        let exp = claims.exp.ok_or(TokenError::MissingExp)?;
        if now > exp.time().plus(self.leeway) {
            return Err(TokenError::Expired);
        }
        if let Some(iat) = claims.iat {
            // Issued in the future: clock trouble at the issuer, and it would outlive a
            // "revoke every token issued until now".
            if iat.time() > now.plus(self.leeway) {
                return Err(TokenError::IssuedInFuture);
            }
        }
        if let Some(nbf) = claims.nbf {
            if now.plus(self.leeway) < nbf.time() {
                return Err(TokenError::NotYetValid);
            }
        }
        if let Some(issuer) = &self.issuer {
            if claims.iss.as_deref() != Some(issuer.as_str()) {
                return Err(TokenError::WrongIssuer);
            }
        }
        if !self.audience.is_empty() {
            let ok = match &claims.aud {
                Some(Audience::One(a)) => self.audience.contains(a),
                Some(Audience::Many(list)) => list.iter().any(|a| self.audience.contains(a)),
                None => false,
            };
            if !ok {
                return Err(TokenError::WrongAudience);
            }
        }
        match &claims.sub {
            Some(s) if !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control) => {}
            _ => return Err(TokenError::MissingSubject),
        }
        Ok(claims)
    }
}
