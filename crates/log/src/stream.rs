//! The `CRM_EVENTS` stream: created with the settings the log's guarantees rest on, or
//! verified, refusing to run against a stream that could lose or alter events.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use serde::Deserialize;

use crate::error::LogError;
use crate::subject::{DEFAULT_PARTITIONS, EVENTS_PREFIX};

/// Stream metadata key recording the partition count.
pub const PARTITIONS_KEY: &str = "crm.partitions";

/// Settings for creating the stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSettings {
    pub name: String,
    /// Partition count; only used when the stream is created.
    pub partitions: u32,
    pub replicas: usize,
    /// JetStream's de-duplication window. Idempotency does not depend on it.
    #[serde(with = "secs")]
    pub duplicate_window: Duration,
}

mod secs {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs_f64(f64::deserialize(d)?))
    }
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            name: "CRM_EVENTS".into(),
            partitions: DEFAULT_PARTITIONS,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// The subject filter the stream captures.
pub fn stream_subjects() -> String {
    format!("{EVENTS_PREFIX}.*.*")
}

/// Creates the stream if missing, verifies it otherwise. Returns it with its partition count.
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<(stream::Stream, u32), LogError> {
    open_stream(js, settings, true).await
}

/// Verifies the stream and returns it with its partition count; a missing stream is
/// [`LogError::StreamMissing`] (for tools that only read the log, which must not create
/// one on whatever server they were pointed at).
pub async fn existing_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<(stream::Stream, u32), LogError> {
    open_stream(js, settings, false).await
}

async fn open_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
    create: bool,
) -> Result<(stream::Stream, u32), LogError> {
    if !(1..=100).contains(&settings.partitions) {
        return Err(LogError::StreamMisconfigured {
            stream: settings.name.clone(),
            reason: "partitions must be between 1 and 100 (two digits in the subject)".into(),
        });
    }
    match js.get_stream(&settings.name).await {
        Ok(mut existing) => {
            let info = existing.info().await.map_err(LogError::nats)?.clone();
            let partitions = verify(&info.config)?;
            Ok((existing, partitions))
        }
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref je)
                    if je.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            if !create {
                return Err(LogError::StreamMissing {
                    stream: settings.name.clone(),
                });
            }
            let config = stream::Config {
                name: settings.name.clone(),
                subjects: vec![stream_subjects()],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                num_replicas: settings.replicas,
                duplicate_window: settings.duplicate_window,
                deny_delete: true,
                deny_purge: true,
                allow_direct: true,
                allow_rollup: false,
                description: Some("Customer lifecycle events: the immutable log".into()),
                metadata: HashMap::from([(
                    PARTITIONS_KEY.to_owned(),
                    settings.partitions.to_string(),
                )]),
                ..Default::default()
            };
            let created = js
                .get_or_create_stream(config)
                .await
                .map_err(LogError::nats)?;
            let partitions = {
                let mut c = created.clone();
                verify(&c.info().await.map_err(LogError::nats)?.config)?
            };
            Ok((created, partitions))
        }
        Err(e) => Err(LogError::nats(e)),
    }
}

/// Checks an existing stream's configuration; returns its partition count.
pub fn verify(config: &stream::Config) -> Result<u32, LogError> {
    let bad = |reason: &str| LogError::StreamMisconfigured {
        stream: config.name.clone(),
        reason: reason.to_owned(),
    };
    if !config.deny_delete || !config.deny_purge {
        return Err(bad(
            "deny_delete and deny_purge must be set: the log is immutable",
        ));
    }
    if config.allow_rollup {
        return Err(bad("allow_rollup must be off: a rollup purges history"));
    }
    if config.storage != stream::StorageType::File {
        return Err(bad("storage must be file"));
    }
    if config.retention != stream::RetentionPolicy::Limits {
        return Err(bad("retention must be limits"));
    }
    if !config.max_age.is_zero()
        || config.max_messages > 0
        || config.max_bytes > 0
        || config.max_messages_per_subject > 0
    {
        return Err(bad(
            "no max age, size or message limits are allowed: events would be dropped",
        ));
    }
    if !config.allow_direct {
        return Err(bad(
            "allow_direct must be on: customers are loaded with direct gets",
        ));
    }
    if !config.subjects.iter().any(|s| s == &stream_subjects()) {
        return Err(bad(&format!("subjects must include {}", stream_subjects())));
    }
    config
        .metadata
        .get(PARTITIONS_KEY)
        .and_then(|p| p.parse::<u32>().ok())
        .filter(|p| (1..=100).contains(p))
        .ok_or_else(|| bad(&format!("metadata {PARTITIONS_KEY} is missing or invalid")))
}
