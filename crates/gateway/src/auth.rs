//! Bearer API keys with roles. Keys are configured as SHA-256 hashes and compared in
//! constant time; the plain key never needs to be stored.

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Send commands.
    Publisher,
    /// Read views.
    Reader,
    /// Rebuild projections, see status.
    Ops,
    /// Read the event log and verify it.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Publisher, Role::Reader, Role::Ops, Role::Auditor];

    /// Wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Reader => "reader",
            Role::Ops => "ops",
            Role::Auditor => "auditor",
        }
    }
}

/// One configured key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Principal name, recorded as the actor of the events it writes.
    pub name: String,
    /// Lowercase hex SHA-256 of the key.
    pub key_sha256: String,
    pub roles: Vec<Role>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub roles: Vec<Role>,
}

/// The key table.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    keys: Vec<([u8; 32], Principal)>,
}

/// SHA-256 hex of a key, as written in config.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Auth {
    /// Builds the table; refuses malformed hashes.
    pub fn new(keys: &[ApiKeyConfig]) -> Result<Self, String> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let bytes = hex::decode(k.key_sha256.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| format!("api key {:?}: key_sha256 must be 64 hex digits", k.name))?;
            out.push((
                bytes,
                Principal {
                    name: k.name.clone(),
                    roles: k.roles.clone(),
                },
            ));
        }
        Ok(Self { keys: out })
    }

    /// Authenticates the `Authorization: Bearer` header and checks the role.
    pub fn authorize(&self, headers: &HeaderMap, needed: Role) -> Result<Principal, ApiError> {
        let value = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.authorize_value(value, needed)
    }

    /// Authenticates an `Authorization` value (`Bearer <key>`) from any door and checks
    /// the role.
    pub fn authorize_value(
        &self,
        value: Option<&str>,
        needed: Role,
    ) -> Result<Principal, ApiError> {
        let token = value
            .and_then(|v| v.trim_start().split_once(' '))
            // The scheme is case-insensitive (RFC 9110, section 11.1).
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            tracing::warn!(needed = needed.as_str(), "refused: no bearer token");
            return Err(ApiError::Unauthenticated);
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare against every key so timing does not reveal which one matched.
        let mut found: Option<&Principal> = None;
        for (hash, principal) in &self.keys {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(principal);
            }
        }
        let Some(principal) = found else {
            tracing::warn!(needed = needed.as_str(), "refused: unknown API key");
            return Err(ApiError::Unauthenticated);
        };
        if !principal.roles.contains(&needed) {
            tracing::warn!(principal = %principal.name, needed = needed.as_str(), "refused: role missing");
            return Err(ApiError::Forbidden {
                needed: needed.as_str(),
            });
        }
        Ok(principal.clone())
    }
}
