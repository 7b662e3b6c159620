//! Housekeeping: which stored rows can no longer matter to any decision, and what one round of
//! removing them did. The tables are a closed list, so their names are bounded metric labels.
//! A row is removed only when keeping it could change no answer: a revoked or expired API
//! token, a revoked JWT id past its token's `exp`, an ended session and its refresh-token
//! family, a spent or expired handoff code — each [`REVOCATION_GRACE_SECS`] after the moment it
//! stopped mattering, the longest leeway a sidecar may apply. An absent row is refused exactly
//! like a revoked one, so removing it never lets a credential back in, and nothing is announced:
//! the policy version does not change (see `SqlStore::collect_garbage`).
//!
//! [`REVOCATION_GRACE_SECS`]: super::REVOCATION_GRACE_SECS

/// The tables housekeeping removes rows from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GcTable {
    HandoffCodes,
    RefreshTokens,
    Sessions,
    RevokedJtis,
    ApiTokens,
}

impl GcTable {
    /// Every table, in the order a round removes from them (codes and refresh tokens before
    /// the sessions they belong to).
    pub const ALL: [GcTable; 5] = [
        GcTable::HandoffCodes,
        GcTable::RefreshTokens,
        GcTable::Sessions,
        GcTable::RevokedJtis,
        GcTable::ApiTokens,
    ];

    /// The table's name, as in the schema (and the `table` label of the metrics).
    pub fn name(self) -> &'static str {
        match self {
            GcTable::HandoffCodes => "handoff_codes",
            GcTable::RefreshTokens => "refresh_tokens",
            GcTable::Sessions => "sessions",
            GcTable::RevokedJtis => "revoked_jtis",
            GcTable::ApiTokens => "api_tokens",
        }
    }

    fn index(self) -> usize {
        match self {
            GcTable::HandoffCodes => 0,
            GcTable::RefreshTokens => 1,
            GcTable::Sessions => 2,
            GcTable::RevokedJtis => 3,
            GcTable::ApiTokens => 4,
        }
    }
}

/// Rows one round removed, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed([u64; GcTable::ALL.len()]);

impl Removed {
    pub fn get(&self, table: GcTable) -> u64 {
        self.0[table.index()]
    }

    pub fn add(&mut self, table: GcTable, rows: u64) {
        self.0[table.index()] += rows;
    }

    /// Every table with its count, in `GcTable::ALL` order.
    pub fn iter(&self) -> impl Iterator<Item = (GcTable, u64)> + '_ {
        GcTable::ALL.iter().map(|t| (*t, self.get(*t)))
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// What a housekeeping round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcOutcome {
    /// This caller was the leader and removed these rows (possibly none).
    Done(Removed),
    /// Another portcullis holds the housekeeping lock (PostgreSQL): nothing was done.
    Skipped,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_its_own_slot_and_schema_name() {
        let mut removed = Removed::default();
        for (i, table) in GcTable::ALL.iter().enumerate() {
            assert_eq!(table.index(), i);
            removed.add(*table, i as u64 + 1);
        }
        assert_eq!(removed.total(), 15);
        assert_eq!(removed.get(GcTable::ApiTokens), 5);
        let names: Vec<_> = removed.iter().map(|(t, _)| t.name()).collect();
        assert_eq!(
            names,
            [
                "handoff_codes",
                "refresh_tokens",
                "sessions",
                "revoked_jtis",
                "api_tokens"
            ]
        );
    }
}
