//! The log as `eventually`'s [`EventStore`]: the library's contract (stream a source,
//! append with an expected version) is the project's contract.
//!
//! Appends go through the same conditional-append path as the gateway, so optimistic
//! concurrency holds whichever door a caller uses. `remove` is refused: the log is immutable.
//!
//! A batch of several events is appended one conditional append at a time, so it is not
//! atomic: a writer that slips in after its first event ends it with
//! [`LogError::PartialAppend`] (which is not a conflict), naming how many were written.
//! The command path never writes batches (one command, one event).

use std::sync::Arc;

use crm_domain::{CustomerId, Event};
use eventually_core::store::{AppendError, EventStore, EventStream, Expected, Persisted, Select};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::envelope::{Envelope, GENESIS_HASH, Metadata};
use crate::error::LogError;
use crate::log::StoredEvent;
use crate::repository::Customers;

impl AppendError for LogError {
    fn is_conflict_error(&self) -> bool {
        matches!(self, LogError::Conflict { .. })
    }
}

/// `EventStore` over the JetStream log.
#[derive(Debug, Clone)]
pub struct JetStreamEventStore {
    customers: Arc<Customers>,
    actor: String,
}

impl JetStreamEventStore {
    /// A store that records `actor` on the events it appends.
    pub fn new(customers: Arc<Customers>, actor: impl Into<String>) -> Self {
        Self {
            customers,
            actor: actor.into(),
        }
    }
}

fn persisted(stored: StoredEvent) -> Result<Persisted<CustomerId, Event>, LogError> {
    let sequence = stored.sequence;
    let decode = |reason: String| LogError::Decode { sequence, reason };
    let event = stored.envelope.event().map_err(|e| decode(e.to_string()))?;
    let version = u32::try_from(stored.envelope.version).map_err(|e| decode(e.to_string()))?;
    let seq = u32::try_from(sequence).map_err(|e| decode(e.to_string()))?;
    Ok(Persisted::from(stored.envelope.customer_id, event)
        .version(version)
        .sequence_number(seq))
}

impl EventStore for JetStreamEventStore {
    type SourceId = CustomerId;
    type Event = Event;
    type Error = LogError;

    fn append(
        &mut self,
        id: CustomerId,
        version: Expected,
        events: Vec<Event>,
    ) -> BoxFuture<'_, Result<u32, LogError>> {
        Box::pin(async move {
            let log = self.customers.log();
            let mut stored = log.read_customer(&id, 0).await?;
            let (mut current, mut last_seq, mut last_hash) = match stored.pop() {
                Some(s) => (s.envelope.version, s.sequence, s.envelope.hash),
                None => (0, 0, GENESIS_HASH.to_owned()),
            };
            if let Expected::Exact(v) = version
                && u64::from(v) != current
            {
                return Err(LogError::Conflict { expected: last_seq });
            }
            let meta = Metadata {
                actor: self.actor.clone(),
                ..Metadata::default()
            };
            let of = u32::try_from(events.len()).unwrap_or(u32::MAX);
            for (written, event) in (0u32..).zip(events) {
                let now = OffsetDateTime::now_utc();
                let appended = async {
                    let env = Envelope::seal(
                        Uuid::now_v7(),
                        id,
                        current + 1,
                        &event,
                        now,
                        now,
                        &meta,
                        None,
                        &last_hash,
                    )?;
                    let appended = log.append(&env, last_seq, None).await?;
                    Ok::<_, LogError>((appended, env.hash))
                }
                .await;
                let (appended, hash) = match appended {
                    Ok(done) => done,
                    // Each event is its own conditional append: a writer that slips in
                    // after the first leaves the batch half written, which must not read as
                    // a conflict (a caller would retry the whole batch).
                    Err(e) if written > 0 => {
                        return Err(LogError::PartialAppend {
                            written,
                            of,
                            cause: e.to_string(),
                        });
                    }
                    Err(e) => return Err(e),
                };
                current += 1;
                last_seq = appended.sequence;
                last_hash = hash;
            }
            u32::try_from(current).map_err(|e| LogError::Nats(e.to_string()))
        })
    }

    fn stream(
        &self,
        id: CustomerId,
        select: Select,
    ) -> BoxFuture<'_, Result<EventStream<'_, Self>, LogError>> {
        Box::pin(async move {
            let from = match select {
                Select::All => 0,
                Select::From(v) => u64::from(v),
            };
            let events = self.customers.log().read_customer(&id, 0).await?;
            let items: Vec<_> = events
                .into_iter()
                .filter(|s| s.envelope.version >= from)
                .map(persisted)
                .collect();
            Ok(futures::stream::iter(items).boxed())
        })
    }

    fn stream_all(&self, select: Select) -> BoxFuture<'_, Result<EventStream<'_, Self>, LogError>> {
        Box::pin(async move {
            let log = self.customers.log();
            let head = log.head().await?;
            let after = match select {
                Select::All => 0,
                Select::From(seq) => u64::from(seq).saturating_sub(1),
            };
            if head <= after {
                return Ok(futures::stream::empty().boxed());
            }
            let bounded = log.read(after, head);
            Ok(bounded
                .and_then(|s| futures::future::ready(persisted(s)))
                .boxed())
        })
    }

    fn remove(&mut self, _id: CustomerId) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(futures::future::ready(Err(LogError::Immutable(
            "events are never removed",
        ))))
    }
}
