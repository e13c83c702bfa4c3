//! The raw log: conditional appends and reads, no domain decisions.

use std::sync::OnceLock;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use crm_domain::{CustomerId, Event};
use futures::{Stream, TryStreamExt};
use uuid::Uuid;

use crate::connect::NatsConfig;
use crate::envelope::{DecodeError, Envelope};
use crate::error::LogError;
use crate::stream::{StreamSettings, ensure_stream, existing_stream};
use crate::subject::{customer_subject, is_customer_subject};
use crate::wire::Dialer;

/// Header carrying the event type.
pub const HEADER_EVENT_TYPE: &str = "Crm-Event-Type";
/// Header carrying the event id.
pub const HEADER_EVENT_ID: &str = "Crm-Event-Id";
// Only these two: every header is stored with every message and parsed again by every
// reader (async-nats builds a map of owned strings per message), and the envelope carries
// everything else. With two more (version, schema version) an ordered consume of the log
// ran at 38-40 % of the headerless rate; without them at 50-52 % (docs/benchmarks.md).

/// An event read back from the log, with its stream sequence.
///
/// The envelope and the decoded event live on the heap: a read moves each event through
/// several buffers on its way to a projection (the stream, its chunks, a batch), and a few
/// dozen bytes move much faster than the hundreds of an envelope and an event inline
/// (those copies were 6-10 % of a combined projector's CPU).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub sequence: u64,
    pub envelope: Box<Envelope>,
    /// The domain event, decoded on first use: several projections applying the same
    /// batch decode (and upcast) each event once between them.
    event: OnceLock<Box<Event>>,
    /// Events the subscription still had waiting on the server after this one.
    behind: u64,
}

impl StoredEvent {
    /// The event at `sequence`.
    pub fn new(sequence: u64, envelope: Envelope) -> Self {
        Self {
            sequence,
            envelope: Box::new(envelope),
            event: OnceLock::new(),
            behind: 0,
        }
    }

    /// How many more events the log held for the consumer that read this one, when the
    /// server delivered it ([`EventLog::subscribe`] and [`EventLog::read`]; 0 for an event
    /// read on its own, by direct get): 0 means the reader had caught up with the log's
    /// head.
    pub fn behind(&self) -> u64 {
        self.behind
    }

    pub(crate) fn set_behind(&mut self, behind: u64) {
        self.behind = behind;
    }

    /// The domain event of the envelope (upcast to the current schema), decoded once.
    pub fn event(&self) -> Result<&Event, DecodeError> {
        if let Some(event) = self.event.get() {
            return Ok(event);
        }
        let event = Box::new(self.envelope.event()?);
        Ok(self.event.get_or_init(|| event))
    }
}

/// Equal when sequence and envelope are (the decoded event is derived from the envelope).
impl PartialEq for StoredEvent {
    fn eq(&self, other: &Self) -> bool {
        self.sequence == other.sequence && self.envelope == other.envelope
    }
}

impl Eq for StoredEvent {}

/// What the server said about an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub sequence: u64,
    /// The server had already stored a message with this `Nats-Msg-Id`.
    pub duplicate: bool,
}

/// The JetStream log.
#[derive(Clone)]
pub struct EventLog {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    name: String,
    partitions: u32,
    /// Opens lean connections for range reads ([`crate::wire`]); `None` reads through the
    /// client.
    dialer: Option<Dialer>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("stream", &self.name)
            .field("partitions", &self.partitions)
            .field("lean_reads", &self.dialer.is_some())
            .finish()
    }
}

/// Whether a replicated stream refused a publish without storing it because another
/// write to the same subject (10164, "wrong last sequence" without a number) or with the
/// same message id (10158) is still in flight. Nothing was stored: like a conflict, it is
/// answered by catching up and deciding again (async-nats gives these the kind `Other`).
fn in_flight_refusal(e: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|je| {
            matches!(
                je.error_code(),
                jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
                    | jetstream::ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT
            )
        })
}

/// Decodes the envelope stored at `sequence` on `subject`. An envelope stored anywhere but
/// on its customer's subject (another customer's, another partition's, the id written
/// otherwise) is undecodable there: a customer's history is its subject, whatever the
/// envelope's links say.
pub(crate) fn decode_stored(
    sequence: u64,
    subject: &str,
    payload: &[u8],
    partitions: u32,
) -> Result<Envelope, LogError> {
    let envelope = Envelope::from_bytes(payload).map_err(|e| LogError::Decode {
        sequence,
        reason: e.to_string(),
    })?;
    if !is_customer_subject(subject, &envelope.customer_id, partitions) {
        return Err(LogError::Decode {
            sequence,
            reason: format!(
                "an event of customer {} stored on subject {subject}",
                envelope.customer_id
            ),
        });
    }
    Ok(envelope)
}

impl EventLog {
    /// Connects with `config` ([`crate::connect()`]) and opens the log, creating or verifying
    /// the stream. Range reads ([`EventLog::read`]) then read on lean connections of their
    /// own where the configuration allows ([`crate::wire`]).
    pub async fn connect(config: &NatsConfig, settings: &StreamSettings) -> Result<Self, LogError> {
        let client = crate::connect::connect(config).await?;
        let mut log = Self::open(client, settings).await?;
        log.dialer = Dialer::new(config);
        Ok(log)
    }

    /// Like [`EventLog::connect`], but a missing stream is [`LogError::StreamMissing`]
    /// instead of being created (for tools that only read or verify the log).
    pub async fn connect_existing(
        config: &NatsConfig,
        settings: &StreamSettings,
    ) -> Result<Self, LogError> {
        let client = crate::connect::connect(config).await?;
        let mut log = Self::open_with(client, settings, false).await?;
        log.dialer = Dialer::new(config);
        Ok(log)
    }

    /// Whether range reads run on lean connections of their own ([`EventLog::connect`] with
    /// a configuration [`crate::wire::Dialer`] can speak).
    pub fn lean_reads(&self) -> bool {
        self.dialer.is_some()
    }

    /// Opens the log on a connected client, creating or verifying the stream. Every read
    /// goes through `client`.
    pub async fn open(
        client: async_nats::Client,
        settings: &StreamSettings,
    ) -> Result<Self, LogError> {
        Self::open_with(client, settings, true).await
    }

    /// Opens the log on `client`: the stream made if missing and `create`, else required.
    async fn open_with(
        client: async_nats::Client,
        settings: &StreamSettings,
        create: bool,
    ) -> Result<Self, LogError> {
        let js = jetstream::new(client.clone());
        let (stream, partitions) = if create {
            ensure_stream(&js, settings).await?
        } else {
            existing_stream(&js, settings).await?
        };
        Ok(Self {
            client,
            js,
            stream,
            name: settings.name.clone(),
            partitions,
            dialer: None,
        })
    }

    /// The NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The stream name.
    pub fn stream_name(&self) -> &str {
        &self.name
    }

    /// The partition count recorded in the stream.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The subject of one customer.
    pub fn subject(&self, customer: &CustomerId) -> String {
        customer_subject(customer, self.partitions)
    }

    /// Appends one envelope if the customer's last stream sequence is still
    /// `expected_last_sequence` (0: the customer has no events yet).
    pub async fn append(
        &self,
        envelope: &Envelope,
        expected_last_sequence: u64,
        msg_id: Option<&str>,
    ) -> Result<Appended, LogError> {
        self.append_encoded(
            envelope,
            envelope.to_bytes(),
            expected_last_sequence,
            msg_id,
        )
        .await
    }

    /// [`EventLog::append`] of an envelope already encoded as `bytes` (what
    /// [`Envelope::seal_encoded`] gives with it).
    pub async fn append_encoded(
        &self,
        envelope: &Envelope,
        bytes: Vec<u8>,
        expected_last_sequence: u64,
        msg_id: Option<&str>,
    ) -> Result<Appended, LogError> {
        const EXPECTED: HeaderName = HeaderName::from_static("Nats-Expected-Last-Subject-Sequence");
        const MSG_ID: HeaderName = HeaderName::from_static("Nats-Msg-Id");
        const EVENT_TYPE: HeaderName = HeaderName::from_static(HEADER_EVENT_TYPE);
        const EVENT_ID: HeaderName = HeaderName::from_static(HEADER_EVENT_ID);
        let mut headers = HeaderMap::new();
        headers.insert(EXPECTED, expected_last_sequence.to_string());
        if let Some(id) = msg_id {
            headers.insert(MSG_ID, msg_id_value(id).as_ref());
        }
        headers.insert(EVENT_TYPE, envelope.event_type.as_str());
        headers.insert(
            EVENT_ID,
            envelope
                .event_id
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer())
                .as_ref(),
        );
        let subject = self.subject(&envelope.customer_id);
        let map = |e: jetstream::context::PublishError| {
            if e.kind() == PublishErrorKind::WrongLastSequence || in_flight_refusal(&e) {
                LogError::Conflict {
                    expected: expected_last_sequence,
                }
            } else {
                LogError::nats(e)
            }
        };
        let ack = self
            .js
            .publish_with_headers(subject, headers, bytes.into())
            .await
            .map_err(map)?
            .await
            .map_err(map)?;
        Ok(Appended {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// Reads one customer's events with stream sequence greater than `after`, in order,
    /// with direct gets (no consumer is created).
    pub async fn read_customer(
        &self,
        customer: &CustomerId,
        after: u64,
    ) -> Result<Vec<StoredEvent>, LogError> {
        self.read_customer_raw(customer, after)
            .await?
            .into_iter()
            .collect()
    }

    /// Like [`EventLog::read_customer`], but an undecodable message is returned as a
    /// [`LogError::Decode`] item instead of ending the read (for verification).
    pub async fn read_customer_raw(
        &self,
        customer: &CustomerId,
        after: u64,
    ) -> Result<Vec<Result<StoredEvent, LogError>>, LogError> {
        let subject = self.subject(customer);
        let mut out = Vec::new();
        let mut next = after + 1;
        loop {
            match self
                .stream
                .direct_get_next_for_subject(subject.as_str(), Some(next))
                .await
            {
                Ok(msg) => {
                    next = msg.sequence + 1;
                    out.push(
                        decode_stored(msg.sequence, &msg.subject, &msg.payload, self.partitions)
                            .map(|envelope| StoredEvent::new(msg.sequence, envelope)),
                    );
                }
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(LogError::nats(e)),
            }
        }
    }

    /// One event by stream sequence (`None` if there is none).
    pub async fn get(&self, sequence: u64) -> Result<Option<StoredEvent>, LogError> {
        match self.stream.direct_get(sequence).await {
            Ok(msg) => {
                let envelope =
                    decode_stored(sequence, &msg.subject, &msg.payload, self.partitions)?;
                Ok(Some(StoredEvent::new(sequence, envelope)))
            }
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(LogError::nats(e)),
        }
    }

    /// [`EventLog::get`], confirmed with the stream's leader when a direct get finds
    /// nothing on a replicated stream: a follower that is behind answers "not found" for an
    /// event the leader holds.
    pub async fn get_confirmed(&self, sequence: u64) -> Result<Option<StoredEvent>, LogError> {
        if let Some(event) = self.get(sequence).await? {
            return Ok(Some(event));
        }
        if !self.replicated() {
            return Ok(None);
        }
        match self.stream.get_raw_message(sequence).await {
            Ok(msg) => {
                let envelope =
                    decode_stored(sequence, &msg.subject, &msg.payload, self.partitions)?;
                Ok(Some(StoredEvent::new(sequence, envelope)))
            }
            Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => {
                Ok(None)
            }
            Err(e) => Err(LogError::nats(e)),
        }
    }

    /// The stream's replica count (as the server reported it when the log was opened).
    pub fn replicas(&self) -> usize {
        self.stream.cached_info().config.num_replicas
    }

    /// Whether the stream has more than one replica: a direct get may then be answered by
    /// a follower that is behind the leader.
    pub fn replicated(&self) -> bool {
        self.stream.cached_info().config.num_replicas > 1
    }

    /// The customer's last stream sequence as the stream's leader knows it (0 without
    /// events): read through the stream's API, which only the leader answers, not with a
    /// direct get.
    pub async fn leader_last_sequence(&self, customer: &CustomerId) -> Result<u64, LogError> {
        match self
            .stream
            .get_last_raw_message_by_subject(&self.subject(customer))
            .await
        {
            Ok(msg) => Ok(msg.sequence),
            Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => Ok(0),
            Err(e) => Err(LogError::nats(e)),
        }
    }

    /// The customer's latest event, as the stream's leader holds it (`None` without events).
    pub async fn last_event(&self, customer: &CustomerId) -> Result<Option<StoredEvent>, LogError> {
        match self
            .stream
            .get_last_raw_message_by_subject(&self.subject(customer))
            .await
        {
            Ok(msg) => {
                let envelope =
                    decode_stored(msg.sequence, &msg.subject, &msg.payload, self.partitions)?;
                Ok(Some(StoredEvent::new(msg.sequence, envelope)))
            }
            Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => {
                Ok(None)
            }
            Err(e) => Err(LogError::nats(e)),
        }
    }

    /// The stream's last sequence (0 when empty).
    pub async fn head(&self) -> Result<u64, LogError> {
        let mut s = self.stream.clone();
        Ok(s.info().await.map_err(LogError::nats)?.state.last_sequence)
    }

    /// Every event with stream sequence greater than `after`, in log order, through an
    /// ordered (ephemeral, flow-controlled, unacknowledged) consumer. The stream does not
    /// end: it waits for new events.
    pub async fn subscribe(
        &self,
        after: u64,
    ) -> Result<impl Stream<Item = Result<StoredEvent, LogError>> + Send + use<>, LogError> {
        let deliver_policy = consumer::DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        };
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(LogError::nats)?;
        let messages = consumer.messages().await.map_err(LogError::nats)?;
        let partitions = self.partitions;
        Ok(messages
            .map_err(LogError::nats)
            .and_then(move |msg| async move {
                let info = msg.info().map_err(LogError::nats)?;
                let sequence = info.stream_sequence;
                let envelope = decode_stored(sequence, &msg.subject, &msg.payload, partitions)?;
                let mut stored = StoredEvent::new(sequence, envelope);
                stored.behind = info.pending;
                Ok(stored)
            }))
    }

    /// Every event with stream sequence in `after + 1 ..= until`, in log order, then the end:
    /// the read of a projector catching up, a rebuild or an audit. It reads in pulls of
    /// [`crate::read::PULL`] (two outstanding) from an ephemeral consumer without acks, where
    /// [`EventLog::subscribe`] asks for 500 at a time, and restarts itself after the last
    /// delivered event if a message goes missing. `until` should not be past the head: the
    /// read waits for events up to it.
    pub fn read(
        &self,
        after: u64,
        until: u64,
    ) -> impl Stream<Item = Result<StoredEvent, LogError>> + Send + use<> {
        self.read_in_pulls(after, until, crate::read::PULL)
    }

    /// [`EventLog::read`] with `pull` messages per pull request (for tests and tuning).
    pub fn read_in_pulls(
        &self,
        after: u64,
        until: u64,
        pull: usize,
    ) -> impl Stream<Item = Result<StoredEvent, LogError>> + Send + use<> {
        crate::read::range(
            self.stream.clone(),
            self.dialer.clone(),
            after,
            until,
            pull,
            self.partitions,
        )
    }

    /// Deletes one message. The stream denies it; this exists so tests and `crm status` can
    /// prove that it does.
    pub async fn try_delete(&self, sequence: u64) -> Result<(), LogError> {
        self.stream
            .delete_message(sequence)
            .await
            .map(|_| ())
            .map_err(LogError::nats)
    }

    /// Purges the stream. Denied by the stream's configuration, see [`EventLog::try_delete`].
    pub async fn try_purge(&self) -> Result<(), LogError> {
        self.stream
            .purge()
            .await
            .map(|_| ())
            .map_err(LogError::nats)
    }

    /// Waits up to `timeout` for the connection to be usable; for readiness probes.
    pub async fn ping(&self, timeout: Duration) -> Result<(), LogError> {
        tokio::time::timeout(timeout, self.client.flush())
            .await
            .map_err(|_| LogError::Nats("flush timed out".into()))?
            .map_err(LogError::nats)
    }
}

/// The `Nats-Msg-Id` value of `id`. A header value cannot hold a line break (async-nats
/// panics on one), so `%`, CR and LF are written as `%25`, `%0D` and `%0A`: one to one, so
/// distinct ids stay distinct. Ids without them are sent as they are.
fn msg_id_value(id: &str) -> std::borrow::Cow<'_, str> {
    if !id.contains(['%', '\r', '\n']) {
        return id.into();
    }
    let mut out = String::with_capacity(id.len() + 8);
    for c in id.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line break in an idempotency key (or a scheduler key built from an id stored
    /// before ids were checked) must not reach a header as it is: async-nats panics on it.
    #[test]
    fn message_ids_never_hold_a_line_break_and_stay_distinct() {
        assert_eq!(msg_id_value("c:k-1"), "c:k-1");
        assert_eq!(msg_id_value("c:a\r\nb"), "c:a%0D%0Ab");
        assert_eq!(msg_id_value("c:a%0Ab"), "c:a%250Ab");
        let ids = ["c:a\nb", "c:a%0Ab", "c:a%250Ab", "c:a\rb", "c:ab"];
        let values: std::collections::HashSet<_> =
            ids.iter().map(|id| msg_id_value(id).into_owned()).collect();
        assert_eq!(values.len(), ids.len());
        assert!(values.iter().all(|v| !v.contains(['\r', '\n'])));
    }

    fn refused(kind: PublishErrorKind, err_code: u64) -> jetstream::context::PublishError {
        let source: jetstream::Error = serde_json::from_value(serde_json::json!({
            "code": 400, "err_code": err_code, "description": "refused"
        }))
        .expect("a JetStream API error");
        jetstream::context::PublishError::with_source(kind, source)
    }

    /// A replicated stream's refusals of a write while another to the subject (or with the
    /// message id) is in flight store nothing, so they are conflicts to retry; any other
    /// refusal is not.
    #[test]
    fn in_flight_refusals_are_retried_like_conflicts() {
        assert!(in_flight_refusal(&refused(PublishErrorKind::Other, 10164)));
        assert!(in_flight_refusal(&refused(PublishErrorKind::Other, 10158)));
        assert!(!in_flight_refusal(&refused(PublishErrorKind::Other, 10077)));
        assert!(!in_flight_refusal(&jetstream::context::PublishError::new(
            PublishErrorKind::TimedOut
        )));
    }
}
