//! Opaque API tokens for third-party integrations and service accounts.
//!
//! Format: `pcs_` + 43 random base62 characters (256 bits) + a 6-character base62 CRC-32 of
//! everything before it, 53 characters in all, e.g. `pcs_3kTq…Zr0aB1`. The prefix tells a
//! token from a JWT and lets secret scanners find leaked ones; the checksum rejects a mistyped
//! or made-up token without a store lookup. At rest only the SHA-256 digest is kept.

use rand::distr::{Alphanumeric, SampleString};
use subtle::ConstantTimeEq;

use super::TokenDigest;

pub const PREFIX: &str = "pcs_";
const SECRET_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
/// Length of every well-formed token.
pub const TOKEN_LEN: usize = PREFIX.len() + SECRET_LEN + CHECKSUM_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("api token does not start with {PREFIX}")]
    Prefix,
    #[error("api token has the wrong length")]
    Length,
    #[error("api token has a character outside base62")]
    Character,
    #[error("api token checksum does not match")]
    Checksum,
}

fn checksum(body: &str) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// A new random token. Shown once; only its digest is stored.
pub fn generate() -> String {
    let mut token = String::with_capacity(TOKEN_LEN);
    token.push_str(PREFIX);
    token.push_str(&Alphanumeric.sample_string(&mut rand::rng(), SECRET_LEN));
    let sum = checksum(&token);
    token.extend(sum.iter().map(|b| *b as char));
    token
}

/// A public, non-secret token id (`tok_` + 16 base62), used in headers, lists and `revoke`.
pub fn generate_id() -> String {
    format!("tok_{}", Alphanumeric.sample_string(&mut rand::rng(), 16))
}

/// True when `s` claims to be an API token (so it is never tried as a JWT).
pub fn has_prefix(s: &str) -> bool {
    s.starts_with(PREFIX)
}

/// Checks the format and checksum; no store involved.
pub fn check_format(token: &str) -> Result<(), FormatError> {
    let body = token.strip_prefix(PREFIX).ok_or(FormatError::Prefix)?;
    if token.len() != TOKEN_LEN {
        return Err(FormatError::Length);
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(FormatError::Character);
    }
    let (head, sum) = token.split_at(TOKEN_LEN - CHECKSUM_LEN);
    if checksum(head).as_slice() != sum.as_bytes() {
        return Err(FormatError::Checksum);
    }
    Ok(())
}

/// Who a token acts for, as stored now (roles are the owner's current roles).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOwner {
    User {
        id: i64,
        email: String,
        name: Option<String>,
        disabled: bool,
        roles: Vec<String>,
    },
    ServiceAccount {
        name: String,
        disabled: bool,
        roles: Vec<String>,
    },
}

/// A stored token, found by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub digest: TokenDigest,
    pub owner: TokenOwner,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The subset of the owner's permissions the token is limited to, if any.
    pub permissions: Option<Vec<String>>,
}

impl TokenRecord {
    /// Constant-time comparison of the stored digest with the presented token's.
    pub fn digest_matches(&self, digest: &TokenDigest) -> bool {
        self.digest.ct_eq(digest).into()
    }
}

/// Checks a stored token's record: revoked, expired (at `now`, unix seconds) or a disabled
/// owner is refused; otherwise the record becomes a principal.
pub fn resolve_record(
    record: TokenRecord,
    now: i64,
) -> Result<super::Principal, super::TokenError> {
    use super::TokenError;
    let disabled = match &record.owner {
        TokenOwner::User { disabled, .. } | TokenOwner::ServiceAccount { disabled, .. } => {
            *disabled
        }
    };
    if record.revoked_at.is_some() {
        Err(TokenError::RevokedApiToken)
    } else if record.expires_at.is_some_and(|e| e <= now) {
        Err(TokenError::ExpiredApiToken)
    } else if disabled {
        Err(TokenError::DisabledOwner)
    } else {
        Ok(super::Principal::from_token(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        for t in [&a, &b] {
            assert_eq!(t.len(), TOKEN_LEN);
            assert!(t.starts_with("pcs_"));
            assert_eq!(check_format(t), Ok(()));
        }
        assert!(generate_id().starts_with("tok_"));
    }

    #[test]
    fn format_table() {
        let good = generate();
        let set = |i: usize, c: u8| {
            let mut bytes = good.clone().into_bytes();
            bytes[i] = c;
            String::from_utf8(bytes).expect("ascii")
        };
        let flip = |i: usize| {
            set(
                i,
                if good.as_bytes()[i] == b'a' {
                    b'b'
                } else {
                    b'a'
                },
            )
        };
        let cases: Vec<(String, Result<(), FormatError>)> = vec![
            (good.clone(), Ok(())),
            (good.replacen("pcs_", "pcx_", 1), Err(FormatError::Prefix)),
            (good[4..].to_owned(), Err(FormatError::Prefix)),
            (good[..TOKEN_LEN - 1].to_owned(), Err(FormatError::Length)),
            (format!("{good}a"), Err(FormatError::Length)),
            (
                format!("pcs_{}", "-".repeat(TOKEN_LEN - 4)),
                Err(FormatError::Character),
            ),
            (set(10, b'+'), Err(FormatError::Character)),
            // A single mistyped character anywhere is caught by the checksum.
            (flip(4), Err(FormatError::Checksum)),
            (flip(30), Err(FormatError::Checksum)),
            (flip(TOKEN_LEN - 1), Err(FormatError::Checksum)),
        ];
        for (token, expected) in cases {
            assert_eq!(check_format(&token), expected, "{token}");
        }
    }

    #[test]
    fn digest_comparison_is_exact() {
        let token = generate();
        let record = TokenRecord {
            id: "tok_x".to_owned(),
            digest: super::super::digest(&token),
            owner: TokenOwner::ServiceAccount {
                name: "bot".to_owned(),
                disabled: false,
                roles: vec![],
            },
            expires_at: None,
            revoked_at: None,
            permissions: None,
        };
        assert!(record.digest_matches(&super::super::digest(&token)));
        assert!(!record.digest_matches(&super::super::digest(&generate())));
    }
}
