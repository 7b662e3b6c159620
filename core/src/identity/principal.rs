//! Who a request is from, once identified: one variant per credential, so each carries only
//! what that credential means (a JWT's claims, an API token's owner and limit), and times as
//! `UnixTime`, never a bare float. A JWT principal always has a non-empty subject.

pub use crate::value::UnixTime;
use std::borrow::Cow;

use super::api_token::{TokenOwner, TokenRecord};
use super::verify::{Claims, TokenError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectType {
    User,
    ServiceAccount,
}

impl SubjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectType::User => "user",
            SubjectType::ServiceAccount => "service-account",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    Jwt,
    ApiToken,
    /// No credential: `portcullis check --permissions`.
    Assumed,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Jwt => "jwt",
            CredentialKind::ApiToken => "api-token",
            CredentialKind::Assumed => "assumed",
        }
    }
}

/// What kind of credential a request presented, whether or not it was accepted: the decision
/// log and the sidecar's log tell "refused" from "none" by it. Never the credential itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresentedKind {
    Jwt,
    ApiToken,
    /// Refused before it could be read: more than one credential, a non-Bearer scheme, a
    /// malformed header or cookie.
    Unreadable,
}

impl PresentedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PresentedKind::Jwt => "jwt",
            PresentedKind::ApiToken => "api-token",
            PresentedKind::Unreadable => "unreadable",
        }
    }
}

/// A caller identified by a verified JWT.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtCaller {
    /// The `sub` claim: never empty.
    pub subject: String,
    pub email: Option<String>,
    /// Whether the token says its `email` was verified by the issuer (`email_verified: true`).
    pub email_verified: bool,
    pub name: Option<String>,
    /// The `roles` and `permissions` claims as issued.
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub expires_at: UnixTime,
    pub issued_at: Option<UnixTime>,
    pub jti: Option<String>,
    /// The `sid` claim: the login session, revoked as a whole at logout.
    pub sid: Option<String>,
}

/// Whom an API token acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSubject {
    User {
        id: i64,
        email: String,
        name: Option<String>,
    },
    ServiceAccount {
        name: String,
    },
}

/// A caller identified by a stored API token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenCaller {
    pub token_id: String,
    pub owner: TokenSubject,
    /// The owner's roles as stored when the token was resolved.
    pub roles: Vec<String>,
    /// When set, the caller holds at most these of its owner's permissions.
    pub limit: Option<Vec<String>>,
    /// `None`: the token does not expire.
    pub expires_at: Option<UnixTime>,
}

/// An identified caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    Jwt(JwtCaller),
    ApiToken(TokenCaller),
    /// Taken to be identified and to hold `permissions`, with no credential behind it: for
    /// `portcullis check --permissions`, never for a request.
    Assumed {
        permissions: Vec<String>,
    },
}

impl Principal {
    /// The principal of a verified token's claims; a missing subject or expiry is refused.
    pub fn from_claims(claims: Claims) -> Result<Self, TokenError> {
        let subject = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(TokenError::MissingSubject)?;
        let exp = claims.exp.ok_or(TokenError::MissingExp)?;
        Ok(Principal::Jwt(JwtCaller {
            subject,
            email: claims.email,
            email_verified: claims.email_verified == Some(true),
            name: claims.name,
            roles: claims.roles,
            permissions: claims.permissions,
            expires_at: exp.time(),
            issued_at: claims.iat.map(|i| i.time()),
            jti: claims.jti,
            sid: claims.sid,
        }))
    }

    /// The principal of a stored token (whose revocation, expiry and owner were checked).
    pub fn from_token(record: TokenRecord) -> Self {
        let (owner, roles) = match record.owner {
            TokenOwner::User {
                id,
                email,
                name,
                roles,
                ..
            } => (TokenSubject::User { id, email, name }, roles),
            TokenOwner::ServiceAccount { name, roles, .. } => {
                (TokenSubject::ServiceAccount { name }, roles)
            }
        };
        Principal::ApiToken(TokenCaller {
            token_id: record.id,
            owner,
            roles,
            limit: record.permissions,
            expires_at: record.expires_at.map(UnixTime::from_secs),
        })
    }

    /// The id upstreams see in `x-auth-user-id`: the JWT `sub`, the stored user id, or
    /// `sa:<name>` for a service account.
    pub fn subject_id(&self) -> Cow<'_, str> {
        match self {
            Principal::Jwt(j) => Cow::Borrowed(&j.subject),
            Principal::ApiToken(t) => match &t.owner {
                TokenSubject::User { id, .. } => Cow::Owned(id.to_string()),
                TokenSubject::ServiceAccount { name } => Cow::Owned(format!("sa:{name}")),
            },
            Principal::Assumed { .. } => Cow::Borrowed("cli"),
        }
    }

    pub fn subject_type(&self) -> SubjectType {
        match self {
            Principal::ApiToken(TokenCaller {
                owner: TokenSubject::ServiceAccount { .. },
                ..
            }) => SubjectType::ServiceAccount,
            _ => SubjectType::User,
        }
    }

    pub fn credential(&self) -> CredentialKind {
        match self {
            Principal::Jwt(_) => CredentialKind::Jwt,
            Principal::ApiToken(_) => CredentialKind::ApiToken,
            Principal::Assumed { .. } => CredentialKind::Assumed,
        }
    }

    pub fn email(&self) -> Option<&str> {
        match self {
            Principal::Jwt(j) => j.email.as_deref(),
            Principal::ApiToken(TokenCaller {
                owner: TokenSubject::User { email, .. },
                ..
            }) => Some(email),
            _ => None,
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            Principal::Jwt(j) => j.name.as_deref(),
            Principal::ApiToken(t) => match &t.owner {
                TokenSubject::User { name, .. } => name.as_deref(),
                TokenSubject::ServiceAccount { name } => Some(name),
            },
            Principal::Assumed { .. } => None,
        }
    }

    /// The JWT `jti` or the API token id.
    pub fn token_id(&self) -> Option<&str> {
        match self {
            Principal::Jwt(j) => j.jti.as_deref(),
            Principal::ApiToken(t) => Some(&t.token_id),
            Principal::Assumed { .. } => None,
        }
    }

    /// When the credential stops being valid (before leeway); `None`: never.
    pub fn expires_at(&self) -> Option<UnixTime> {
        match self {
            Principal::Jwt(j) => Some(j.expires_at),
            Principal::ApiToken(t) => t.expires_at,
            Principal::Assumed { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn claims(json: &str) -> Claims {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_jwt_principal_needs_a_subject_and_an_expiry() {
        let ok = Principal::from_claims(claims(r#"{"sub":"7","exp":10.5,"iat":3}"#)).unwrap();
        assert_eq!(ok.subject_id(), "7");
        assert_eq!(ok.expires_at(), UnixTime::from_secs_f64(10.5));
        assert_eq!(ok.credential(), CredentialKind::Jwt);
        for bad in [r#"{"exp":10}"#, r#"{"sub":"","exp":10}"#] {
            assert_eq!(
                Principal::from_claims(claims(bad)),
                Err(TokenError::MissingSubject),
                "{bad}"
            );
        }
        assert_eq!(
            Principal::from_claims(claims(r#"{"sub":"7"}"#)),
            Err(TokenError::MissingExp)
        );
    }

    #[test]
    fn service_account_tokens_name_the_account() {
        let p = Principal::from_token(TokenRecord {
            id: "tok_1".to_owned(),
            digest: [0; 32],
            owner: TokenOwner::ServiceAccount {
                name: "bot".to_owned(),
                disabled: false,
                roles: vec!["viewer".to_owned()],
            },
            expires_at: None,
            revoked_at: None,
            permissions: None,
        });
        assert_eq!(p.subject_id(), "sa:bot");
        assert_eq!(p.subject_type(), SubjectType::ServiceAccount);
        assert_eq!(p.name(), Some("bot"));
        assert_eq!(p.email(), None);
        assert_eq!(p.token_id(), Some("tok_1"));
        assert_eq!(p.expires_at(), None);
    }

    #[test]
    fn times_are_finite_and_durations_never_negative() {
        assert_eq!(UnixTime::from_secs_f64(f64::NAN), None);
        assert_eq!(UnixTime::from_secs_f64(f64::INFINITY), None);
        let t = UnixTime::from_secs(100);
        assert_eq!(t.until(UnixTime::from_secs(90)), Duration::ZERO);
        assert_eq!(
            t.until(t.plus(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert!(!t.until(UnixTime::from_secs(i64::MAX)).is_zero());
        assert!(UnixTime::now().is_some());
    }
}
