//! The bundle: everything the in-process filter decides from, as the sidecar serves it. The
//! compiled policy's inputs (permissions with their activities and hosts, roles), the subjects
//! (users, accounts, API tokens by digest, deleted users, revoked JWT ids), the public
//! verification keys as JWKs and the settings the decision reads. Never a secret: a shared
//! HMAC key cannot be shipped, so a configuration with one has no bundle. A bundle is
//! accepted whole or not at all: `Bundle::parse` then `Bundle::compile` either give a ready
//! `Decider` or an error, never a half-built one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};

use super::answer::{CredentialForwarding, ForwardCredentialConfig};
use super::{Authorizer, PermissionSource, SubjectClaim};
use crate::identity::jwk::{parse_jwks, JwkSetError};
use crate::identity::{ApiTokenSettings, ClaimRules, Identifier, JwtSettings, KeyError, KeySet};
use crate::policy::document::PermissionSpec;
use crate::policy::{
    DigestError, PolicyDocument, PolicyError, PolicySnapshot, Subjects, SubjectsWire,
};

/// The bundle format this build reads and writes; another is refused.
pub const BUNDLE_FORMAT: u32 = 1;

/// How long the filter remembers a verified JWT or a resolved API token (within one bundle).
const FILTER_CACHE_TTL: Duration = Duration::from_secs(60);
/// Entries in each of the filter's caches.
const FILTER_CACHE_CAPACITY: u64 = 10_000;

/// How JWTs are verified and matched to the store, as the sidecar is configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleJwt {
    /// Public keys only (`{"keys": [...]}`, a JWKS document); a symmetric key is refused.
    pub jwks: serde_json::Value,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub leeway_seconds: u64,
    pub cookie_name: String,
    pub permissions_from: PermissionSource,
    pub subject_claim: SubjectClaim,
}

/// One version of everything the in-process filter decides from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: u32,
    /// The store's policy version the subjects and rules come from.
    pub policy_version: i64,
    pub permissions: BTreeMap<String, PermissionSpec>,
    pub roles: BTreeMap<String, Vec<String>>,
    pub subjects: SubjectsWire,
    pub jwt: BundleJwt,
    pub api_token_header: String,
    pub forward_credential: ForwardCredentialConfig,
}

/// Why a bundle was refused (the last good one stays).
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a bundle")]
    Parse(#[source] serde_json::Error),
    #[error("bundle format {found}, this build reads {BUNDLE_FORMAT}")]
    Format { found: u32 },
    #[error("the bundle's key set is refused")]
    Keys(#[source] JwkSetError),
    #[error("the bundle's keys do not make a key set")]
    KeySet(#[source] KeyError),
    #[error("the bundle's policy does not compile")]
    Policy(#[source] PolicyError),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// A compiled bundle: decides requests and knows what to strip from allowed ones.
#[derive(Debug)]
pub struct Decider {
    pub authorizer: Authorizer,
    pub forwarding: CredentialForwarding,
    pub policy_version: i64,
    /// The header API tokens may come in (besides `Authorization`): the decision reads it.
    pub api_token_header: String,
}

impl Bundle {
    /// The bundle of a serving snapshot, with the sidecar's verification settings.
    pub fn of_snapshot(
        snapshot: &PolicySnapshot,
        jwt: BundleJwt,
        api_token_header: &str,
        forward_credential: ForwardCredentialConfig,
    ) -> Self {
        let (permissions, roles) = snapshot.rules_source();
        Bundle {
            format: BUNDLE_FORMAT,
            policy_version: snapshot.version(),
            permissions: permissions.clone(),
            roles: roles.clone(),
            subjects: snapshot.subjects().to_wire(),
            jwt,
            api_token_header: api_token_header.to_owned(),
            forward_credential,
        }
    }

    /// Reads a bundle; unknown fields and other formats are refused.
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        let bundle: Bundle = serde_json::from_slice(bytes).map_err(BundleError::Parse)?;
        if bundle.format != BUNDLE_FORMAT {
            return Err(BundleError::Format {
                found: bundle.format,
            });
        }
        Ok(bundle)
    }

    /// Compiles the bundle into a decider: the snapshot, the key set, the identifier.
    pub fn compile(self) -> Result<Decider, BundleError> {
        let keys = parse_jwks(&self.jwt.jwks.to_string()).map_err(BundleError::Keys)?;
        let keys = KeySet::new(keys, None).map_err(BundleError::KeySet)?;
        let document = PolicyDocument {
            permissions: self.permissions,
            roles: self.roles,
            users: Vec::new(),
            service_accounts: Vec::new(),
        };
        let snapshot = PolicySnapshot::compile(&document, self.policy_version)
            .map_err(BundleError::Policy)?
            .with_subjects(Subjects::from_wire(self.subjects)?);
        let settings = JwtSettings {
            rules: ClaimRules {
                issuer: self.jwt.issuer,
                audience: self.jwt.audience,
                leeway: Duration::from_secs(self.jwt.leeway_seconds),
            },
            cookie_name: self.jwt.cookie_name.clone(),
            cache_ttl: FILTER_CACHE_TTL,
            cache_capacity: FILTER_CACHE_CAPACITY,
        };
        let api = ApiTokenSettings {
            header: self.api_token_header.clone(),
            cache_ttl: FILTER_CACHE_TTL,
        };
        let identifier = Identifier::with_api_tokens(keys, settings, api);
        let handle = Arc::new(ArcSwapOption::from_pointee(snapshot));
        let authorizer = Authorizer::new(handle, Arc::new(identifier))
            .with_permission_source(self.jwt.permissions_from)
            .with_subject_claim(self.jwt.subject_claim);
        Ok(Decider {
            authorizer,
            forwarding: CredentialForwarding::new(
                self.forward_credential,
                &self.jwt.cookie_name,
                &self.api_token_header,
            ),
            policy_version: self.policy_version,
            api_token_header: self.api_token_header,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::authz::{AccessRequest, Decision, Reason};
    use crate::identity::api_token;
    use crate::policy::{TokenHolder, TokenState};

    const POLICY: &str = "permissions:\n  read:\n    activities: [GET /r]\n  public:\n    \
                          activities: [GET /open]\nroles:\n  viewer: [read]\n\
                          service_accounts:\n  - {name: bot, roles: [viewer]}\n";

    fn jwt() -> BundleJwt {
        BundleJwt {
            jwks: serde_json::json!({"keys": []}),
            issuer: Some("iss".to_owned()),
            audience: vec!["aud".to_owned()],
            leeway_seconds: 30,
            cookie_name: "jwt-token".to_owned(),
            permissions_from: PermissionSource::Token,
            subject_claim: SubjectClaim::Sub,
        }
    }

    /// A snapshot of `POLICY` with one API token of the account `bot`; the token.
    fn snapshot() -> (PolicySnapshot, String) {
        let doc = PolicyDocument::from_yaml("test", POLICY).expect("policy");
        let mut subjects = Subjects::default();
        subjects.insert_account("bot".to_owned(), Default::default());
        if let Some(a) = subjects.account_mut("bot") {
            a.roles = vec!["viewer".to_owned()];
        }
        let token = api_token::generate();
        let state = TokenState {
            id: "tok_1".to_owned(),
            holder: TokenHolder::ServiceAccount("bot".to_owned()),
            limit: None,
            expires_at: None,
            revoked: false,
        };
        subjects.insert_token(crate::identity::digest(&token), state);
        let snapshot = PolicySnapshot::compile(&doc, 7)
            .expect("compiles")
            .with_subjects(subjects);
        (snapshot, token)
    }

    fn bytes(bundle: &Bundle) -> Vec<u8> {
        serde_json::to_vec(bundle).expect("encodes")
    }

    fn decide(decider: &Decider, path: &str, token: Option<&str>) -> Decision {
        let headers = token
            .map(|t| vec![("x-api-token", Cow::Borrowed(t))])
            .unwrap_or_default();
        decider.authorizer.decide_now(&AccessRequest {
            method: "GET",
            path,
            headers,
            ..Default::default()
        })
    }

    #[test]
    fn a_bundle_decides_as_its_snapshot_and_carries_no_token() {
        let (snapshot, token) = snapshot();
        let bundle = Bundle::of_snapshot(&snapshot, jwt(), "x-api-token", Default::default());
        let encoded = bytes(&bundle);
        let text = String::from_utf8(encoded.clone()).expect("utf-8");
        assert!(!text.contains(&token), "the raw token travels");
        let decider = Bundle::parse(&encoded)
            .and_then(Bundle::compile)
            .expect("compiles");
        assert_eq!(decider.policy_version, 7);
        assert!(matches!(
            decide(&decider, "/r", Some(&token)),
            Decision::Allow(_)
        ));
        assert!(matches!(
            decide(&decider, "/open", None),
            Decision::Allow(_)
        ));
        let Decision::Deny(d) = decide(&decider, "/r", None) else {
            panic!("anonymous allowed")
        };
        assert_eq!(d.reason, Reason::MissingCredential);
        let Decision::Deny(d) = decide(&decider, "/r", Some(&api_token::generate())) else {
            panic!("an unknown token allowed")
        };
        assert_eq!(d.reason, Reason::InvalidToken);
    }

    #[test]
    fn a_malformed_bundle_is_refused_whole() {
        let (snapshot, _) = snapshot();
        let good = Bundle::of_snapshot(&snapshot, jwt(), "x-api-token", Default::default());
        let mut other_format = good.clone();
        other_format.format = BUNDLE_FORMAT + 1;
        let mut bad_digest = good.clone();
        if let Some((_, t)) = bad_digest.subjects.tokens.pop_first() {
            bad_digest.subjects.tokens.insert("not-hex".to_owned(), t);
        }
        let mut secret_key = good.clone();
        secret_key.jwt.jwks =
            serde_json::json!({"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]});
        let mut unknown_permission = good.clone();
        unknown_permission
            .roles
            .insert("admin".to_owned(), vec!["nope".to_owned()]);
        let mut unknown_field = serde_json::to_value(&good).expect("value");
        unknown_field["extra"] = true.into();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("not json", b"{".to_vec()),
            ("other format", bytes(&other_format)),
            ("bad digest", bytes(&bad_digest)),
            ("a secret key", bytes(&secret_key)),
            ("a role naming no permission", bytes(&unknown_permission)),
            ("an unknown field", unknown_field.to_string().into_bytes()),
        ];
        for (what, body) in cases {
            let outcome = Bundle::parse(&body).and_then(Bundle::compile);
            assert!(outcome.is_err(), "{what}: accepted");
        }
    }
}
