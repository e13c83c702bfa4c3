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
    fn unknown_keys_are_refused() {
        let bad = format!("{DEFAULT_POLICY_TOML}\nsurprise = 1\n");
        assert!(toml::from_str::<Policy>(&bad).is_err());
    }
}
