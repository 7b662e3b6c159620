//! Why a request was denied: the closed `Reason` clients see (a code and a status), and the
//! typed `DenyCause` behind it, kept for the log and formatted only when logged. The reason
//! follows from the cause, so the two cannot disagree.

use std::sync::Arc;

use crate::identity::{CredentialError, PresentedKind, Principal, TokenError};
use crate::policy::path::PathError;
use crate::policy::Grants;

/// Why a request was denied. The wire code is what clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    MissingCredential,
    InvalidToken,
    AmbiguousCredential,
    InvalidPath,
    NoMatchingActivity,
    PolicyUnavailable,
    InvalidHeader,
    /// A cookie-authenticated unsafe request from an origin that is not ours.
    Csrf,
}

impl Reason {
    /// Every reason, for those who list them all (metrics export each from the start).
    pub const ALL: [Reason; 8] = [
        Reason::MissingCredential,
        Reason::InvalidToken,
        Reason::AmbiguousCredential,
        Reason::InvalidPath,
        Reason::NoMatchingActivity,
        Reason::PolicyUnavailable,
        Reason::InvalidHeader,
        Reason::Csrf,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::MissingCredential => "missing_credential",
            Reason::InvalidToken => "invalid_token",
            Reason::AmbiguousCredential => "ambiguous_credential",
            Reason::InvalidPath => "invalid_path",
            Reason::NoMatchingActivity => "no_matching_activity",
            Reason::PolicyUnavailable => "policy_unavailable",
            Reason::InvalidHeader => "invalid_header",
            Reason::Csrf => "csrf",
        }
    }

    pub fn status(self) -> DenyStatus {
        match self {
            Reason::MissingCredential | Reason::InvalidToken | Reason::AmbiguousCredential => {
                DenyStatus::Unauthenticated
            }
            Reason::InvalidPath | Reason::NoMatchingActivity | Reason::Csrf => {
                DenyStatus::Forbidden
            }
            Reason::PolicyUnavailable => DenyStatus::Unavailable,
            Reason::InvalidHeader => DenyStatus::BadRequest,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyStatus {
    /// 400
    BadRequest,
    /// 401
    Unauthenticated,
    /// 403
    Forbidden,
    /// 503
    Unavailable,
}

impl DenyStatus {
    pub fn http_code(self) -> u16 {
        match self {
            DenyStatus::BadRequest => 400,
            DenyStatus::Unauthenticated => 401,
            DenyStatus::Forbidden => 403,
            DenyStatus::Unavailable => 503,
        }
    }
    pub fn error(self) -> &'static str {
        match self {
            DenyStatus::BadRequest => "bad_request",
            DenyStatus::Unauthenticated => "unauthenticated",
            DenyStatus::Forbidden => "forbidden",
            DenyStatus::Unavailable => "unavailable",
        }
    }
}

/// Why a JWT was refused by the store's current state (as carried in the snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Revocation {
    #[error("token revoked")]
    TokenRevoked,
    #[error("user disabled")]
    UserDisabled,
    #[error("the user's tokens were revoked")]
    UserTokensRevoked,
    #[error("user deleted")]
    UserDeleted,
    #[error("no such user in the store")]
    NotInStore,
    /// `jwt.subject_claim: email`, and the token has no email its issuer verified.
    #[error("the token's email is missing or not verified")]
    EmailNotVerified,
}

/// Why a cookie-authenticated unsafe request was refused (logged, never sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    #[error("a cookie-authenticated unsafe request without Origin or Referer")]
    MissingOrigin,
    #[error("more than one Origin or Referer header")]
    AmbiguousOrigin,
    #[error("the request's Origin or Referer is not one of ours")]
    ForeignOrigin,
}

/// What made a deny, for the log; never sent to the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DenyCause {
    #[error("no policy snapshot loaded")]
    NoSnapshot,
    /// A header the decision reads (Envoy sends only those) is not UTF-8: never decoded
    /// lossily and then parsed.
    #[error("the value of header {name:?} is not UTF-8")]
    HeaderNotUtf8 { name: String },
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Revoked(#[from] Revocation),
    #[error(transparent)]
    Csrf(#[from] CsrfError),
    /// None of the caller's permissions grants a matching activity.
    #[error("no activity granted by the caller's {} permission(s) matches", .held.ids().count())]
    NoActivity { held: Grants },
}

#[derive(Debug, Clone)]
pub struct Deny {
    pub reason: Reason,
    pub principal: Option<Arc<Principal>>,
    pub cause: DenyCause,
    /// The version of the policy in force when it was decided; `None` only when no policy
    /// was loaded (503 `policy_unavailable`) or the deny was made outside a decision.
    pub policy_version: Option<i64>,
    /// The kind of credential the request presented when it was refused before anyone was
    /// identified (`principal` is then `None`); `None` when it presented none, or when
    /// `principal` says who it was.
    pub refused: Option<PresentedKind>,
}

impl Deny {
    pub fn new(principal: Option<Arc<Principal>>, cause: DenyCause) -> Self {
        let reason = match &cause {
            DenyCause::NoSnapshot => Reason::PolicyUnavailable,
            DenyCause::HeaderNotUtf8 { .. } => Reason::InvalidHeader,
            DenyCause::Path(_) => Reason::InvalidPath,
            DenyCause::Credential(e) if e.is_ambiguous() => Reason::AmbiguousCredential,
            DenyCause::Credential(_) | DenyCause::Token(_) | DenyCause::Revoked(_) => {
                Reason::InvalidToken
            }
            DenyCause::Csrf(_) => Reason::Csrf,
            DenyCause::NoActivity { .. } if principal.is_none() => Reason::MissingCredential,
            DenyCause::NoActivity { .. } => Reason::NoMatchingActivity,
        };
        Deny {
            reason,
            principal,
            cause,
            policy_version: None,
            refused: None,
        }
    }

    /// This deny, decided under the policy at `version`.
    pub fn at_version(mut self, version: i64) -> Self {
        self.policy_version = Some(version);
        self
    }

    /// This deny, for a request whose credential of `kind` was refused.
    pub fn refusing(mut self, kind: PresentedKind) -> Self {
        self.refused = Some(kind);
        self
    }

    /// The kind of credential the request presented, accepted or not (`jwt`, `api-token`,
    /// `unreadable`, `assumed`); `None` when it presented none.
    pub fn credential(&self) -> Option<&'static str> {
        match (&self.principal, self.refused) {
            (Some(p), _) => Some(p.credential().as_str()),
            (None, Some(kind)) => Some(kind.as_str()),
            (None, None) => None,
        }
    }
}
