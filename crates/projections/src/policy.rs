//! Loading the scoring policy file, and the record of the policy each projection's rows
//! were folded under.

use std::path::Path;

use crm_domain::policy::{DEFAULT_POLICY_TOML, Policy};
use sqlx::AnyConnection;

use crate::error::ProjectionError;
use crate::projector::Projection;

/// Why a policy file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid policy {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
}

/// The shipped default policy.
pub fn default_policy() -> Policy {
    // The shipped file is checked by a test; it always parses.
    toml::from_str(DEFAULT_POLICY_TOML).unwrap_or_else(|e| panic!("shipped policy is invalid: {e}"))
}

/// The fingerprint of projection `name` when it prices or scores with `policy`: its name,
/// the code's version and the whole policy (not only its version label, which an operator
/// may leave unchanged when editing a rule).
pub fn fingerprint(name: &str, policy: &Policy) -> String {
    // A policy is plain data: it always serialises.
    let rules = serde_json::to_string(policy).unwrap_or_default();
    format!("{name} {} policy {rules}", env!("CARGO_PKG_VERSION"))
}

/// The policy a projection's rows are folded under, as the store records it
/// (`projection_policies`): a digest of the whole policy (an edited rule under an unchanged
/// version label still differs), the policy itself, and its label for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    pub projection: &'static str,
    pub digest: String,
    pub version: String,
    /// The policy as JSON.
    pub policy: String,
}

impl PolicyRecord {
    /// The record of `projection`'s policy; `None` for a projection without one.
    pub fn of<P: Projection>(projection: &P) -> Option<Self> {
        projection
            .policy()
            .map(|policy| Self::new(projection.name(), policy))
    }

    fn new(projection: &'static str, policy: &Policy) -> Self {
        // A policy is plain data: it always serialises.
        let value = serde_json::to_value(policy).unwrap_or_default();
        Self {
            projection,
            digest: crm_log::envelope::hash_canonical(&value),
            version: policy.version.clone(),
            policy: value.to_string(),
        }
    }

    /// Whether `stored` (a policy recorded as JSON, perhaps by an older build) has this
    /// record's rules as this build reads it: a field added to the policy since then takes
    /// its default, which changes the digest but not the rules.
    fn same_rules_as(&self, stored: &str) -> bool {
        serde_json::from_str::<Policy>(stored)
            .is_ok_and(|p| Self::new(self.projection, &p).digest == self.digest)
    }
}

/// Inside a projector's write transaction: each projection's rows must have been folded
/// under the projector's own policy. A projection the store has no record of (a new
/// store, or one from before records were kept) is recorded as folded under it.
pub(crate) async fn check_or_record(
    tx: &mut AnyConnection,
    records: &[PolicyRecord],
) -> Result<(), ProjectionError> {
    if records.is_empty() {
        return Ok(());
    }
    let stored: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT name, policy_digest, policy_version, policy FROM projection_policies",
    )
    .fetch_all(&mut *tx)
    .await?;
    for record in records {
        let found = stored
            .iter()
            .find(|(name, ..)| name == record.projection)
            .map(|(_, digest, version, policy)| (digest.clone(), version.clone(), policy.clone()));
        let found = match found {
            Some(found) => found,
            None => {
                // Two processes of a partitioned group may both find no record: the first
                // insert wins, and the other compares with what it wrote.
                if write_record(tx, "", record, Conflict::Keep).await? {
                    continue;
                }
                sqlx::query_as(
                    "SELECT policy_digest, policy_version, policy FROM projection_policies \
                     WHERE name = $1",
                )
                .bind(record.projection)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        let (digest, version, policy) = found;
        if digest == record.digest {
            continue;
        }
        if record.same_rules_as(&policy) {
            // Written by a build that knew fewer policy fields: the same rules.
            write_record(tx, "", record, Conflict::Replace).await?;
            continue;
        }
        return Err(ProjectionError::PolicyMismatch {
            projection: record.projection.to_owned(),
            views: version,
            projector: record.version.clone(),
        });
    }
    Ok(())
}

/// What [`write_record`] does with a record already there.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Conflict {
    Keep,
    Replace,
}

/// Writes one projection's policy record in `schema.` (empty for the connection's own);
/// whether a row was written.
async fn write_record(
    conn: &mut AnyConnection,
    schema: &str,
    record: &PolicyRecord,
    conflict: Conflict,
) -> Result<bool, ProjectionError> {
    let on_conflict = match conflict {
        Conflict::Keep => "DO NOTHING",
        Conflict::Replace => {
            "DO UPDATE SET policy_digest = excluded.policy_digest, \
             policy_version = excluded.policy_version, policy = excluded.policy"
        }
    };
    let written = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}projection_policies (name, policy_digest, policy_version, policy) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (name) {on_conflict}"
    )))
    .bind(record.projection)
    .bind(&record.digest)
    .bind(&record.version)
    .bind(&record.policy)
    .execute(&mut *conn)
    .await?;
    Ok(written.rows_affected() > 0)
}

/// Records `records` as the policies of the rows just swapped into `schema` (`main` for
/// SQLite, the live schema for PostgreSQL), in the swap's transaction.
pub(crate) async fn record_swapped(
    conn: &mut AnyConnection,
    schema: &str,
    records: &[PolicyRecord],
) -> Result<(), ProjectionError> {
    for record in records {
        write_record(conn, &format!("{schema}."), record, Conflict::Replace).await?;
    }
    Ok(())
}

/// Loads a policy file, or the default when `path` is `None`.
pub fn load(path: Option<&Path>) -> Result<Policy, PolicyError> {
    let Some(path) = path else {
        return Ok(default_policy());
    };
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| PolicyError::Parse {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored policy is compared by its rules: a record written by another build (here:
    /// another digest of the same rules) is brought up to date, another rule is refused,
    /// and a projection without a record is recorded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stored_policy_is_compared_by_its_rules() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = crate::ReadStore::open_file(&dir.path().join("p.sqlite")).await?;
        let mut conn = store.pool().acquire().await?;
        let ours = PolicyRecord::new("trust", &default_policy());
        let stored_as = |digest: &str, policy: &str| {
            let (digest, policy) = (digest.to_owned(), policy.to_owned());
            let pool = store.pool().clone();
            async move {
                sqlx::query(
                    "INSERT INTO projection_policies (name, policy_digest, policy_version, policy) \
                     VALUES ('trust', $1, '2026-11-default', $2) ON CONFLICT (name) DO UPDATE \
                     SET policy_digest = excluded.policy_digest, policy = excluded.policy",
                )
                .bind(digest)
                .bind(policy)
                .execute(&pool)
                .await
                .map(|_| ())
            }
        };
        let read = || async {
            sqlx::query_as::<_, (String,)>(
                "SELECT policy_digest FROM projection_policies WHERE name = 'trust'",
            )
            .fetch_optional(store.pool())
            .await
        };

        check_or_record(&mut conn, std::slice::from_ref(&ours)).await?;
        assert_eq!(read().await?, Some((ours.digest.clone(),)));

        // The same rules, recorded under another digest (as an older build would have).
        let reordered: serde_json::Value = serde_json::from_str(&ours.policy)?;
        stored_as("written-by-another-build", &reordered.to_string()).await?;
        check_or_record(&mut conn, std::slice::from_ref(&ours)).await?;
        assert_eq!(read().await?, Some((ours.digest.clone(),)));

        // Another rule, or a policy this build cannot read: refused.
        let mut generous = default_policy();
        generous.trust.care_touch = 50;
        let theirs = PolicyRecord::new("trust", &generous);
        for (digest, policy) in [
            (theirs.digest.as_str(), theirs.policy.as_str()),
            ("unknown", "{\"version\": \"2030\", \"rules\": []}"),
        ] {
            stored_as(digest, policy).await?;
            let Err(err) = check_or_record(&mut conn, std::slice::from_ref(&ours)).await else {
                anyhow::bail!("a policy with other rules was accepted: {policy}");
            };
            assert!(
                matches!(&err, ProjectionError::PolicyMismatch { projection, .. } if projection == "trust"),
                "{err}"
            );
        }
        Ok(())
    }

    #[test]
    fn shipped_policy_parses() {
        let p = load(None).expect("default");
        assert_eq!(p.trust.on_time_delivery, 10);
        assert_eq!(p.health.green_min, 70);
    }

    #[test]
    fn the_health_rules_take_the_largest_amounts_without_wrapping() {
        use crm_domain::health::{Health, Tier};
        use time::macros::{date, datetime};
        // Any positive i64 is a valid amount; a few of them overflowed the sums (a panic in
        // a debug build, a negative revenue and tier C in a release build).
        let big = i64::MAX / 2;
        let h = Health {
            as_of: Some(datetime!(2025-06-15 12:00 UTC)),
            purchases: vec![
                (date!(2025 - 02 - 01), big),
                (date!(2025 - 03 - 01), big),
                (date!(2025 - 03 - 02), big),
                (date!(2025 - 05 - 01), big),
                (date!(2025 - 06 - 01), big),
            ],
            contract_revenue: vec![(date!(2025 - 01 - 10), big), (date!(2025 - 04 - 10), big)],
            ..Health::default()
        };
        let assessment = h.assess(&default_policy());
        assert_eq!(assessment.tier, Tier::A, "{assessment:?}");
    }

    /// "An inactivity_flagged event with 30 or more days, not followed by an
    /// activity_recorded": a later, shorter flag does not lift it; activity does.
    #[test]
    fn a_shorter_flag_does_not_lift_a_standing_inactivity() {
        use crm_domain::event::{ActivityRecorded, Event, InactivityFlagged};
        use time::macros::{date, datetime};
        let policy = default_policy();
        let flag = |days| {
            Event::InactivityFlagged(InactivityFlagged {
                days_inactive: days,
                last_activity_on: None,
            })
        };
        let inactive = |h: &crm_domain::health::Health| {
            h.assess(&policy)
                .reasons
                .iter()
                .any(|r| r.code == "no_activity_30_days")
        };
        let mut h = crm_domain::health::Health::default();
        let at = datetime!(2025-06-01 00:00 UTC);
        h.apply(&flag(45), at, 1, &policy);
        assert!(inactive(&h));
        h.apply(&flag(10), at, 2, &policy);
        assert!(inactive(&h), "a 10-day flag lifted the 45-day one");
        let active = Event::ActivityRecorded(ActivityRecorded {
            day: date!(2025 - 06 - 02),
            logins: 1,
            active_users: None,
        });
        h.apply(&active, at, 3, &policy);
        assert!(!inactive(&h));
    }

    /// A customer who signs long after registering is not "inactive" for the months before
    /// the contract: inactivity counts from the start of the relationship at the earliest.
    #[test]
    fn inactivity_counts_from_the_first_contract_not_from_registration() {
        use crm_domain::event::{ActivityRecorded, ContractSigned, CustomerRegistered, Event};
        use time::macros::{date, datetime};
        let policy = default_policy();
        let mut h = crm_domain::health::Health::default();
        let registered = Event::CustomerRegistered(CustomerRegistered {
            name: "Late".into(),
            segment: None,
            region: None,
            account_manager: None,
            acquisition_channel: None,
        });
        h.apply(&registered, datetime!(2024-01-01 09:00 UTC), 1, &policy);
        assert_eq!(h.activity_reference(), Some(date!(2024 - 01 - 01)));
        let signed = Event::ContractSigned(ContractSigned {
            contract_id: "c1".into(),
            value_minor: 100,
            currency: "EUR".into(),
            starts_on: date!(2025 - 06 - 01),
            ends_on: date!(2026 - 05 - 31),
            notice_days: 90,
            win_back: false,
        });
        h.apply(&signed, datetime!(2025-06-01 09:00 UTC), 2, &policy);
        assert_eq!(h.activity_reference(), Some(date!(2025 - 06 - 01)));
        let active = Event::ActivityRecorded(ActivityRecorded {
            day: date!(2025 - 07 - 01),
            logins: 1,
            active_users: None,
        });
        h.apply(&active, datetime!(2025-07-01 09:00 UTC), 3, &policy);
        assert_eq!(h.activity_reference(), Some(date!(2025 - 07 - 01)));
    }

    #[test]
    fn a_fingerprint_changes_with_any_rule_not_only_the_version_label() {
        let before = default_policy();
        let mut edited = before.clone();
        edited.trust.care_touch += 1;
        assert_eq!(edited.version, before.version);
        assert_eq!(
            fingerprint("trust", &before),
            fingerprint("trust", &before.clone())
        );
        assert_ne!(fingerprint("trust", &before), fingerprint("trust", &edited));
        assert_ne!(
            fingerprint("trust", &before),
            fingerprint("health", &before)
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let bad = format!("{DEFAULT_POLICY_TOML}\nsurprise = 1\n");
        assert!(toml::from_str::<Policy>(&bad).is_err());
    }
}
