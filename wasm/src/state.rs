//! What one worker VM knows: the compiled bundle it decides with, the bundle's `ETag`, and
//! when the sidecar last confirmed it current. Fail closed: no bundle, or one not confirmed
//! within `max_age`, decides nothing (503). A bundle is swapped in only once it has compiled
//! whole; a malformed one leaves the last good one (and its age) as they were.

use std::rc::Rc;
use std::time::{Duration, SystemTime};

use portcullis_core::authz::{Bundle, BundleError, Decider};

/// The serving bundle of one VM.
pub struct Current {
    decider: Option<Rc<Decider>>,
    etag: Option<String>,
    /// When the sidecar last answered with the serving bundle (200 or 304).
    confirmed_at: Option<SystemTime>,
    max_age: Duration,
}

/// What a poll answer did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The serving bundle is still current.
    Confirmed,
    /// A new bundle was compiled and now serves (its policy version).
    Swapped(i64),
}

impl Current {
    pub fn new(max_age: Duration) -> Self {
        Current {
            decider: None,
            etag: None,
            confirmed_at: None,
            max_age,
        }
    }

    /// The decider, when there is one confirmed within the maximum age at `now`.
    pub fn decider(&self, now: SystemTime) -> Option<Rc<Decider>> {
        let confirmed = self.confirmed_at?;
        let age = now.duration_since(confirmed).unwrap_or(Duration::ZERO);
        if age > self.max_age {
            return None;
        }
        self.decider.clone()
    }

    /// The `ETag` to send as `If-None-Match`.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// The sidecar answered 304 for our `ETag`.
    pub fn not_modified(&mut self, now: SystemTime) -> Outcome {
        if self.decider.is_some() {
            self.confirmed_at = Some(now);
        }
        Outcome::Confirmed
    }

    /// The sidecar sent a bundle: compiled and swapped in unless it is the one serving (same
    /// `ETag`: nothing is compiled again).
    pub fn received(
        &mut self,
        etag: Option<String>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Outcome, BundleError> {
        if self.decider.is_some() && etag.is_some() && etag == self.etag {
            self.confirmed_at = Some(now);
            return Ok(Outcome::Confirmed);
        }
        let decider = Bundle::parse(body)?.compile()?;
        let version = decider.policy_version;
        self.decider = Some(Rc::new(decider));
        self.etag = etag;
        self.confirmed_at = Some(now);
        Ok(Outcome::Swapped(version))
    }
}
