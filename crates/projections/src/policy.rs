//! Loading the scoring policy file.

use std::path::Path;

use crm_domain::policy::{DEFAULT_POLICY_TOML, Policy};

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
