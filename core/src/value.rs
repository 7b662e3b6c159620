//! Value types every layer shares, so no file converts them by hand: a point in time
//! ([`UnixTime`], seconds since the Unix epoch) and bytes as lower-case hex ([`hex`], for token
//! digests and ETags).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, in seconds since the Unix epoch; always finite.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct UnixTime(f64);

impl UnixTime {
    /// The current time, or `None` when the clock cannot be read (before 1970): callers
    /// refuse rather than treat every expiry as in the future.
    pub fn now() -> Option<Self> {
        Self::from_system(SystemTime::now())
    }

    /// The current time for audit records (when a row was written), the epoch when the clock
    /// cannot be read. Never for a decision: those use [`UnixTime::now`] and refuse.
    pub fn now_or_epoch() -> Self {
        Self::now().unwrap_or(UnixTime(0.0))
    }

    /// A system time, or `None` before 1970.
    pub fn from_system(t: SystemTime) -> Option<Self> {
        t.duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| UnixTime(d.as_secs_f64()))
    }

    /// The system time it names (to format it); `None` before 1970 or out of range.
    pub fn to_system(self) -> Option<SystemTime> {
        UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(self.0).ok()?)
    }

    pub fn from_secs(secs: i64) -> Self {
        UnixTime(secs as f64)
    }

    /// A JWT NumericDate, which may be fractional; `None` unless finite.
    pub fn from_secs_f64(secs: f64) -> Option<Self> {
        secs.is_finite().then_some(UnixTime(secs))
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0
    }

    /// Whole seconds, rounded down.
    pub fn as_secs(self) -> i64 {
        self.0.floor() as i64
    }

    pub fn plus(self, d: Duration) -> Self {
        UnixTime(self.0 + d.as_secs_f64())
    }

    /// How long from `self` until `later`; zero when `later` is not after `self`.
    pub fn until(self, later: UnixTime) -> Duration {
        let left = later.0 - self.0;
        if left > 0.0 {
            Duration::try_from_secs_f64(left).unwrap_or(Duration::MAX)
        } else {
            Duration::ZERO
        }
    }
}

/// `bytes` as lower-case hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}

/// A SHA-256 digest (a token's, as stored and in the bundle) back from its 64 hex digits;
/// `None` for anything else.
pub fn digest_from_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    ::hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Lower-case or upper-case hex back to bytes; `None` for an odd length or a non-hex digit.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    ::hex::decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_system_time() {
        let t = UnixTime::from_secs(1_800_000_000);
        let back = UnixTime::from_system(t.to_system().unwrap_or(UNIX_EPOCH));
        assert_eq!(back.map(UnixTime::as_secs), Some(1_800_000_000));
        assert_eq!(UnixTime::from_secs(-1).to_system(), None);
        assert_eq!(
            UnixTime::from_system(UNIX_EPOCH - Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn hex_is_two_lower_case_digits_a_byte_and_decodes_back() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(from_hex("000fA5ff"), Some(vec![0x00, 0x0f, 0xa5, 0xff]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        let digest = [7u8; 32];
        assert_eq!(digest_from_hex(&hex(&digest)), Some(digest));
        assert_eq!(digest_from_hex(&hex(&[7u8; 31])), None);
        assert_eq!(digest_from_hex(&"g".repeat(64)), None);
    }
}
