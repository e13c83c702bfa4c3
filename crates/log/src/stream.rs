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
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(|_| {
            serde::de::Error::custom(format!(
                "{secs} is not a duration in seconds (a finite number, 0 or more)"
            ))
        })
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
            let config = config_for(settings);
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

/// The configuration the stream is created with.
fn config_for(settings: &StreamSettings) -> stream::Config {
    stream::Config {
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
        metadata: HashMap::from([(PARTITIONS_KEY.to_owned(), settings.partitions.to_string())]),
        ..Default::default()
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
    if config.allow_message_ttl || config.subject_delete_marker_ttl.is_some() {
        return Err(bad(
            "per-message TTLs must be off: events would expire from the log",
        ));
    }
    if config.sealed || config.no_ack {
        return Err(bad(
            "the stream must take acknowledged appends (not sealed, no_ack off)",
        ));
    }
    if config.mirror.is_some() || config.sources.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(bad(
            "the stream must not mirror or source other streams: every event is appended by the command path",
        ));
    }
    if config.allow_message_counter || config.allow_message_schedules {
        return Err(bad(
            "counters and message schedules must be off: the server would write events itself",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The stream as created passes; every setting under which the server could drop,
    /// expire or write events itself, or refuse appends, is refused.
    #[test]
    fn verify_refuses_every_setting_that_could_lose_events() {
        let good = config_for(&StreamSettings::default());
        assert_eq!(
            verify(&good).expect("the stream as created"),
            DEFAULT_PARTITIONS
        );
        let source = stream::Source {
            name: "ELSEWHERE".into(),
            ..Default::default()
        };
        type Change = Box<dyn Fn(&mut stream::Config)>;
        let bad: Vec<(&str, Change)> = vec![
            ("deny_delete", Box::new(|c| c.deny_delete = false)),
            ("rollup", Box::new(|c| c.allow_rollup = true)),
            ("max_age", Box::new(|c| c.max_age = Duration::from_secs(60))),
            ("ttl", Box::new(|c| c.allow_message_ttl = true)),
            (
                "marker",
                Box::new(|c| c.subject_delete_marker_ttl = Some(Duration::from_secs(60))),
            ),
            ("sealed", Box::new(|c| c.sealed = true)),
            ("no_ack", Box::new(|c| c.no_ack = true)),
            ("mirror", Box::new(move |c| c.mirror = Some(source.clone()))),
            (
                "sources",
                Box::new(|c| {
                    c.sources = Some(vec![stream::Source {
                        name: "OTHER".into(),
                        ..Default::default()
                    }])
                }),
            ),
            ("counter", Box::new(|c| c.allow_message_counter = true)),
            ("schedules", Box::new(|c| c.allow_message_schedules = true)),
            ("direct", Box::new(|c| c.allow_direct = false)),
        ];
        for (what, change) in bad {
            let mut c = good.clone();
            change(&mut c);
            assert!(
                matches!(verify(&c), Err(LogError::StreamMisconfigured { .. })),
                "{what} accepted"
            );
        }
    }

    #[test]
    fn a_negative_or_infinite_duplicate_window_is_a_config_error() {
        #[derive(Debug, Deserialize)]
        struct W {
            #[serde(with = "secs")]
            #[allow(dead_code)]
            w: Duration,
        }
        assert!(serde_json::from_str::<W>(r#"{"w": 1.5}"#).is_ok());
        let err = serde_json::from_str::<W>(r#"{"w": -1}"#).expect_err("negative");
        assert!(err.to_string().contains("not a duration"), "{err}");
    }
}
