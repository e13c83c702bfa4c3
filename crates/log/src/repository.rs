//! Customers: load (through a bounded cache), decide, append conditionally, retry.
//!
//! The cache holds recently used customers' folded state and their last stream sequence.
//! It can be stale when another gateway process appended meanwhile, but it can never make
//! a stale decision stick: every append is conditional on the cached last sequence, and a
//! conflict (or a refusal) triggers an incremental catch-up from the log before deciding
//! again. Within one process, commands for the same customer are serialised by a
//! per-customer lock (the cache slot, never evicted while held), so they never conflict
//! with each other.
//!
//! Idempotency keys are recorded in the events themselves, so a retry returns the original
//! receipt days later, after a restart, and long after JetStream's duplicate window has
//! closed. A cached customer keeps the receipts of its latest [`RECENT_KEYS`] keys and only
//! a 64-bit digest of each older one with the sequence of its event, so its memory does
//! not grow with a receipt per event: a key whose digest matches is read back from that
//! event.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use crm_domain::{Command, CustomerId, CustomerState, DomainError, Event, decide};
use lru::LruCache;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::envelope::{Envelope, GENESIS_HASH, Metadata};
use crate::error::LogError;
use crate::log::{EventLog, StoredEvent};

/// What a client gets back for an accepted command; identical for idempotent replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Receipt {
    pub event_id: Uuid,
    pub customer_id: CustomerId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u64,
    pub stream_sequence: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
}

/// The outcome of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub receipt: Receipt,
    /// True when the idempotency key had been used before and no new event was written.
    pub replayed: bool,
}

/// How to submit a command.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    /// Business time; `now` when absent.
    pub occurred_at: Option<OffsetDateTime>,
    /// Recording time.
    pub now: OffsetDateTime,
    /// `If-Match`: the version the caller last saw. Refuse instead of retrying on conflict.
    pub expected_version: Option<u64>,
    pub meta: Metadata,
}

impl SubmitOptions {
    /// Options with the current time and the given actor.
    pub fn now(actor: impl Into<String>) -> Self {
        Self {
            occurred_at: None,
            now: OffsetDateTime::now_utc(),
            expected_version: None,
            meta: Metadata {
                actor: actor.into(),
                ..Metadata::default()
            },
        }
    }
}

/// Why a submission did not produce an event.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Rejected(#[from] DomainError),
    #[error("version conflict: expected version {expected}, the customer is at version {actual}")]
    VersionConflict { expected: u64, actual: u64 },
    #[error(
        "gave up after {attempts} attempts: concurrent writers kept appending to this customer"
    )]
    Contention { attempts: u32 },
    #[error(
        "idempotency key was already used for a different request (it became a {original_type} event)"
    )]
    IdempotencyKeyReused { original_type: String },
    #[error(transparent)]
    Log(#[from] LogError),
}

/// A customer as folded from the log.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub state: CustomerState,
    pub last_sequence: u64,
    pub last_hash: String,
    receipts: Receipts,
}

/// Keys whose use a cached customer keeps in full: a retry of one of them is answered from
/// memory. An older key is answered from its event, read back from the log.
pub const RECENT_KEYS: usize = 64;

/// The idempotency keys a cached customer has used. (A key is used by one event; should
/// the history hold it twice, the later event counts, as it always has.)
#[derive(Debug, Clone, Default)]
struct Receipts {
    /// The latest keys' uses, oldest first (at most [`RECENT_KEYS`]).
    recent: VecDeque<(String, KeyUse)>,
    /// Every older key's digest, with the stream sequence of the event that used it: no
    /// match means the key was never used before.
    older: HashMap<u64, u64>,
}

impl Receipts {
    fn digest(key: &str) -> u64 {
        // The same in every run of one build: only compared within this process.
        let mut h = std::hash::DefaultHasher::new();
        key.hash(&mut h);
        h.finish()
    }

    fn insert(&mut self, key: &str, used: KeyUse) {
        if let Some(at) = self.recent.iter().position(|(k, _)| k == key) {
            self.recent.remove(at);
        }
        self.recent.push_back((key.to_owned(), used));
        if self.recent.len() > RECENT_KEYS
            && let Some((old, used)) = self.recent.pop_front()
        {
            self.older
                .insert(Self::digest(&old), used.receipt.stream_sequence);
        }
    }

    /// The key's use if it is one of the latest keys.
    fn recent(&self, key: &str) -> Option<&KeyUse> {
        self.recent.iter().find(|(k, _)| k == key).map(|(_, u)| u)
    }

    /// The sequence of the event that may have used the key, if it may be an older one (its
    /// digest matches one).
    fn maybe_older(&self, key: &str) -> Option<u64> {
        if self.older.is_empty() {
            return None;
        }
        self.older.get(&Self::digest(key)).copied()
    }

    /// How many keys are kept in full, and as digests.
    fn kept(&self) -> (usize, usize) {
        (self.recent.len(), self.older.len())
    }
}

/// What an idempotency key was first used for.
#[derive(Debug, Clone)]
struct KeyUse {
    receipt: Receipt,
    /// `None` for events written before request hashes were recorded: those keys are
    /// matched by the command type alone.
    request_hash: Option<String>,
}

impl KeyUse {
    /// Whether a request with this type and hash is a retry of the key's first use.
    fn is_retry_of(&self, event_type: &str, request_hash: Option<&str>) -> bool {
        self.receipt.event_type == event_type
            && match (&self.request_hash, request_hash) {
                (Some(first), Some(now)) => first == now,
                _ => true,
            }
    }
}

/// SHA-256 of a request as its caller sent it: the command (type and fields, fields that are
/// absent or null left out, so a field added to a command later does not change the hash of
/// a request without it) and `occurred_at` when the caller gave one.
pub fn request_hash(command: &Command, occurred_at: Option<OffsetDateTime>) -> String {
    let mut value = serde_json::to_value(command).unwrap_or_default();
    strip_nulls(&mut value);
    if let (Some(at), Some(fields)) = (occurred_at, value.as_object_mut()) {
        // The instant, whatever offset the caller wrote it with.
        // (`submit` refuses an instant with no RFC 3339 form in UTC before it stores
        // anything; the hash of such a request only has to be defined, not pretty.)
        let at = match at.checked_to_offset(time::UtcOffset::UTC) {
            Some(utc) => utc
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| format!("{utc}")),
            None => format!("{at}"),
        };
        fields.insert("occurred_at".into(), at.into());
    }
    crate::envelope::hash_canonical(&value)
}

fn strip_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            fields.retain(|_, v| !v.is_null());
            fields.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

impl Loaded {
    /// Folds `stored`, the next event read from customer `id`'s subject.
    fn apply(&mut self, id: &CustomerId, stored: &StoredEvent) -> Result<(), LogError> {
        let event = stored.envelope.event().map_err(|e| LogError::Decode {
            sequence: stored.sequence,
            reason: e.to_string(),
        })?;
        self.fold(id, stored, &event)
    }

    /// Folds `stored` whose domain event is `event`: the decoded one when read from the
    /// log, the decided one right after appending it (what decoding the stored envelope
    /// gives, without decoding it again; debug builds check that it is).
    fn fold(
        &mut self,
        id: &CustomerId,
        stored: &StoredEvent,
        event: &Event,
    ) -> Result<(), LogError> {
        let env = &stored.envelope;
        let decode = |reason: String| LogError::Decode {
            sequence: stored.sequence,
            reason,
        };
        // The subject names the customer; an envelope naming another is not this
        // customer's history, whatever its links say.
        if env.customer_id != *id {
            return Err(decode(format!(
                "an event of customer {} on the subject of customer {id}",
                env.customer_id
            )));
        }
        if env.version != self.state.version + 1 {
            return Err(decode(format!(
                "version {} follows version {}",
                env.version, self.state.version
            )));
        }
        // A new event is chained onto the last one folded here: a history whose links do
        // not hold (an altered or foreign event) must not be built on.
        let expected_prev = if self.state.version == 0 {
            GENESIS_HASH
        } else {
            self.last_hash.as_str()
        };
        if env.prev_hash != expected_prev {
            return Err(decode(format!(
                "version {} does not link to the customer's previous event (prev_hash {})",
                env.version, env.prev_hash
            )));
        }
        self.state = std::mem::take(&mut self.state).apply(event);
        self.last_sequence = stored.sequence;
        self.last_hash = env.hash.clone();
        if let Some(key) = &env.idempotency_key {
            self.receipts.insert(key, key_use(stored));
        }
        Ok(())
    }

    /// How many idempotency keys this state keeps in full, and as digests.
    pub fn keys_kept(&self) -> (usize, usize) {
        self.receipts.kept()
    }
}

fn key_use(stored: &StoredEvent) -> KeyUse {
    KeyUse {
        receipt: receipt(stored),
        request_hash: stored.envelope.request_hash.clone(),
    }
}

fn receipt(stored: &StoredEvent) -> Receipt {
    let env = &stored.envelope;
    Receipt {
        event_id: env.event_id,
        customer_id: env.customer_id,
        event_type: env.event_type.clone(),
        version: env.version,
        stream_sequence: stored.sequence,
        recorded_at: env.recorded_at,
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Loaded>>>;

/// The bounded cache of customers, each in a slot that is also the customer's lock.
///
/// Only idle slots are evicted: a slot some task holds (a command in flight) stays, or a
/// second command for the same customer would get a fresh slot, and with it a second lock,
/// and the two would race in the log instead of queueing. When every slot is in use the
/// cache grows past its capacity for as long as that lasts (by at most the number of
/// commands in flight), and shrinks back as slots fall idle.
struct Slots {
    cache: Mutex<LruCache<CustomerId, Slot>>,
    capacity: NonZeroUsize,
}

impl Slots {
    fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            cache: Mutex::new(LruCache::new(capacity)),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<CustomerId, Slot>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The customer's slot, made (and an idle slot evicted) when it is not cached.
    fn get(&self, id: CustomerId) -> Slot {
        let mut cache = self.lock();
        if let Some(slot) = cache.get(&id) {
            return slot.clone();
        }
        // Evict idle slots from the least recently used end until there is room; put back
        // the busy ones met on the way (as most recently used: they are in use).
        let mut busy = Vec::new();
        while cache.len() >= self.capacity.get() {
            match cache.pop_lru() {
                Some((_, slot)) if Arc::strong_count(&slot) == 1 => {}
                Some(entry) => busy.push(entry),
                None => break,
            }
        }
        let len = cache.len() + busy.len() + 1;
        let cap = NonZeroUsize::new(len.max(self.capacity.get())).unwrap_or(self.capacity);
        if cap != cache.cap() {
            cache.resize(cap);
        }
        for (key, slot) in busy {
            cache.put(key, slot);
        }
        let slot = Slot::default();
        cache.put(id, slot.clone());
        slot
    }

    /// The customer's slot if it is cached.
    fn peek(&self, id: &CustomerId) -> Option<Slot> {
        self.lock().get(id).cloned()
    }

    /// Drops the customer's slot if nobody holds it.
    fn forget_idle(&self, id: &CustomerId) {
        let mut cache = self.lock();
        if cache
            .peek(id)
            .is_some_and(|slot| Arc::strong_count(slot) == 1)
        {
            cache.pop(id);
        }
    }
}

/// The customer repository over the log.
pub struct Customers {
    log: EventLog,
    slots: Slots,
    max_attempts: u32,
}

impl std::fmt::Debug for Customers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Customers").field("log", &self.log).finish()
    }
}

/// Default number of customers kept in the cache.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// Default attempts for a command without `If-Match` that meets concurrent writers.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

impl Customers {
    /// A repository with a cache of `capacity` customers.
    pub fn new(log: EventLog, capacity: usize, max_attempts: u32) -> Self {
        Self {
            log,
            slots: Slots::new(capacity),
            max_attempts: max_attempts.max(1),
        }
    }

    /// The underlying log.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    fn slot(&self, id: CustomerId) -> Slot {
        self.slots.get(id)
    }

    /// Brings a cached (or empty) customer up to date with the log.
    async fn catch_up(&self, id: &CustomerId, loaded: &mut Loaded) -> Result<(), LogError> {
        for stored in self.log.read_customer(id, loaded.last_sequence).await? {
            loaded.apply(id, &stored)?;
        }
        Ok(())
    }

    /// Whether the stream's leader holds events of the customer past `loaded` (never on a
    /// stream of one replica, whose direct gets the leader answers): a refusal is only
    /// given on state the leader confirms, since with replicas a direct get may be
    /// answered by a follower that is behind.
    async fn behind_leader(&self, id: &CustomerId, loaded: &Loaded) -> Result<bool, LogError> {
        if !self.log.replicated() {
            return Ok(false);
        }
        Ok(self.log.leader_last_sequence(id).await? > loaded.last_sequence)
    }

    /// The customer's current state, read through the cache and brought up to date.
    /// `None` when the customer has no events.
    pub async fn load(&self, id: CustomerId) -> Result<Option<Loaded>, LogError> {
        let slot = self.slot(id);
        let mut guard = slot.lock().await;
        let loaded = guard.get_or_insert_with(Loaded::default);
        if let Err(e) = self.catch_up(&id, loaded).await {
            *guard = None;
            return Err(e);
        }
        if loaded.state.version > 0 {
            // The state, not the idempotency receipts: a reader has no use for them, and a
            // long-lived customer's keys would be copied on every read.
            return Ok(Some(Loaded {
                state: loaded.state.clone(),
                last_sequence: loaded.last_sequence,
                last_hash: loaded.last_hash.clone(),
                receipts: Receipts::default(),
            }));
        }
        // A customer the log does not know (a reader's typo, a probe) takes no place in
        // the cache from the customers it holds.
        drop(guard);
        drop(slot);
        self.slots.forget_idle(&id);
        Ok(None)
    }

    /// How many idempotency keys the cache keeps for the customer: in full (the latest
    /// [`RECENT_KEYS`]) and as digests. `None` when the customer is not cached.
    pub async fn cached_keys(&self, id: &CustomerId) -> Option<(usize, usize)> {
        let slot = self.slots.peek(id)?;
        let guard = slot.lock().await;
        guard.as_ref().map(Loaded::keys_kept)
    }

    /// The last stream sequence this process knows for the customer, without I/O of its
    /// own: while a command of the customer is being decided or appended it waits for
    /// that one (so the answer includes it). `None` for a customer this process does not
    /// hold.
    pub async fn known_sequence(&self, id: &CustomerId) -> Option<u64> {
        let slot = self.slots.peek(id)?;
        let guard = slot.lock().await;
        guard.as_ref().map(|l| l.last_sequence)
    }

    /// What `key` was used for by the customer as far as `loaded` goes: from memory for one
    /// of its latest keys, from its event in the log for an older one.
    async fn first_use(
        &self,
        id: &CustomerId,
        loaded: &Loaded,
        key: &str,
    ) -> Result<Option<KeyUse>, LogError> {
        if let Some(used) = loaded.receipts.recent(key) {
            return Ok(Some(used.clone()));
        }
        let Some(sequence) = loaded.receipts.maybe_older(key) else {
            return Ok(None);
        };
        // A retry of an older key, or, rarely, another key with the same digest: the event
        // says which. It was folded into this state, so the log holds it (confirmed with
        // the leader: a follower that is behind would answer "not found").
        let Some(stored) = self.log.get_confirmed(sequence).await? else {
            return Err(LogError::Decode {
                sequence,
                reason: format!(
                    "the event that used an idempotency key of customer {id} is missing from the log"
                ),
            });
        };
        Ok((stored.envelope.customer_id == *id
            && stored.envelope.idempotency_key.as_deref() == Some(key))
        .then(|| key_use(&stored)))
    }

    /// Decides `command` against the customer and appends the one event it becomes.
    pub async fn submit(
        &self,
        id: CustomerId,
        command: &Command,
        opts: &SubmitOptions,
    ) -> Result<Submitted, SubmitError> {
        let slot = self.slot(id);
        let mut guard = slot.lock().await;
        let result = self.submit_locked(id, command, opts, &mut guard).await;
        if matches!(result, Err(SubmitError::Log(_))) {
            // The append's outcome is unknown: forget the state, the next call reloads it.
            *guard = None;
        }
        result
    }

    async fn submit_locked(
        &self,
        id: CustomerId,
        command: &Command,
        opts: &SubmitOptions,
        guard: &mut Option<Loaded>,
    ) -> Result<Submitted, SubmitError> {
        let fresh = guard.is_none();
        let loaded = guard.get_or_insert_with(Loaded::default);
        if fresh {
            self.catch_up(&id, loaded).await?;
        }
        // Business days are UTC days: every rule that takes a date of `occurred_at` (notice
        // windows, whether a termination came after the term, activity) must see the same
        // day for the same instant, whatever offset the sender wrote it with; the event is
        // stored in UTC too. (When the scheduler sends a lapse is its own matter.)
        let occurred_at = crm_domain::business_time(opts.occurred_at.unwrap_or(opts.now))?;
        let request_hash = opts
            .meta
            .idempotency_key
            .as_ref()
            .map(|_| request_hash(command, opts.occurred_at));
        let mut caught_up = fresh;
        let mut attempts = 0;
        loop {
            if let Some(key) = &opts.meta.idempotency_key
                && let Some(first) = self.first_use(&id, loaded, key).await?
            {
                if !first.is_retry_of(command.event_type(), request_hash.as_deref()) {
                    return Err(SubmitError::IdempotencyKeyReused {
                        original_type: first.receipt.event_type.clone(),
                    });
                }
                return Ok(Submitted {
                    receipt: first.receipt.clone(),
                    replayed: true,
                });
            }
            if let Some(expected) = opts.expected_version
                && loaded.state.version != expected
            {
                if !caught_up {
                    self.catch_up(&id, loaded).await?;
                    caught_up = true;
                    continue;
                }
                if attempts < self.max_attempts && self.behind_leader(&id, loaded).await? {
                    attempts += 1;
                    self.catch_up(&id, loaded).await?;
                    continue;
                }
                return Err(SubmitError::VersionConflict {
                    expected,
                    actual: loaded.state.version,
                });
            }
            let event = match decide(&loaded.state, command, occurred_at, opts.now) {
                Ok(event) => event,
                Err(refusal) if !caught_up => {
                    // The cache may be behind another process: refuse only on current state.
                    tracing::debug!(%id, code = refusal.code(), "refused on cached state; catching up");
                    self.catch_up(&id, loaded).await?;
                    caught_up = true;
                    continue;
                }
                Err(refusal) => {
                    if attempts < self.max_attempts && self.behind_leader(&id, loaded).await? {
                        // Read from a follower that was behind: decide again on what the
                        // leader holds.
                        attempts += 1;
                        self.catch_up(&id, loaded).await?;
                        continue;
                    }
                    return Err(refusal.into());
                }
            };
            let prev_hash = if loaded.state.version == 0 {
                GENESIS_HASH.to_owned()
            } else {
                loaded.last_hash.clone()
            };
            let (envelope, bytes) = Envelope::seal_encoded(
                Uuid::now_v7(),
                id,
                loaded.state.version + 1,
                &event,
                occurred_at,
                opts.now,
                &opts.meta,
                request_hash.clone(),
                &prev_hash,
            )?;
            let msg_id = opts
                .meta
                .idempotency_key
                .as_ref()
                .map(|key| format!("{id}:{key}"));
            attempts += 1;
            match self
                .log
                .append_encoded(&envelope, bytes, loaded.last_sequence, msg_id.as_deref())
                .await
            {
                Ok(appended) if !appended.duplicate => {
                    let stored = StoredEvent::new(appended.sequence, envelope);
                    debug_assert_eq!(
                        stored.envelope.event().ok().as_ref(),
                        Some(&event),
                        "the sealed envelope decodes to the decided event"
                    );
                    loaded.fold(&id, &stored, &event)?;
                    return Ok(Submitted {
                        receipt: receipt(&stored),
                        replayed: false,
                    });
                }
                // A duplicate: another process stored this key inside the duplicate
                // window, and the original event is in the log. A conflict: another writer
                // appended first. Either way, catch up and decide again.
                Ok(_) | Err(LogError::Conflict { .. }) => {
                    self.catch_up(&id, loaded).await?;
                    caught_up = true;
                    // The key's receipt, if the catch-up brought it, answers on the next
                    // turn (a replay, or a key reused for another command), whatever the
                    // attempts. Otherwise the attempts are bounded with `If-Match` too: a
                    // catch-up that finds nothing new (a read served by a replica that is
                    // behind) would otherwise conflict again forever.
                    let receipt_known = match &opts.meta.idempotency_key {
                        Some(key) => self.first_use(&id, loaded, key).await?.is_some(),
                        None => false,
                    };
                    if !receipt_known && attempts >= self.max_attempts {
                        return Err(SubmitError::Contention { attempts });
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request hash ignores how the request was written (null fields) but not what it
    /// says; a key recorded before request hashes matches its command type alone.
    #[test]
    fn a_retry_is_the_same_type_fields_and_business_time() {
        use crm_domain::Command;
        let cmd = |v: serde_json::Value| -> Command {
            serde_json::from_value(v).expect("a valid command")
        };
        let care = cmd(serde_json::json!({"type": "record_care_touch", "kind": "birthday"}));
        let care_null =
            cmd(serde_json::json!({"type": "record_care_touch", "kind": "birthday", "note": null}));
        let holiday = cmd(serde_json::json!({"type": "record_care_touch", "kind": "holiday"}));
        let at = time::macros::datetime!(2025-01-01 00:00 UTC);
        let h = request_hash(&care, None);
        assert_eq!(h, request_hash(&care_null, None));
        assert_ne!(h, request_hash(&holiday, None));
        assert_ne!(h, request_hash(&care, Some(at)));
        assert_eq!(
            request_hash(&care, Some(at)),
            request_hash(&care, Some(datetime_east(at))),
            "the same instant with another offset"
        );

        let receipt = Receipt {
            event_id: Uuid::nil(),
            customer_id: CustomerId::new(Uuid::nil()),
            event_type: "care_touch_recorded".into(),
            version: 1,
            stream_sequence: 1,
            recorded_at: at,
        };
        let first = KeyUse {
            receipt: receipt.clone(),
            request_hash: Some(h.clone()),
        };
        assert!(first.is_retry_of("care_touch_recorded", Some(&h)));
        assert!(!first.is_retry_of("care_touch_recorded", Some(&request_hash(&holiday, None))));
        assert!(!first.is_retry_of("activity_recorded", Some(&h)));
        let legacy = KeyUse {
            receipt,
            request_hash: None,
        };
        assert!(legacy.is_retry_of("care_touch_recorded", Some(&h)));
        assert!(!legacy.is_retry_of("activity_recorded", Some(&h)));
    }

    /// Folding checks the chain: each event must link to the previous one (the first to
    /// the genesis hash) and belong to the customer whose subject it was read from, so
    /// the command path never builds on a broken or foreign history.
    #[test]
    fn a_history_whose_links_do_not_hold_is_not_folded() {
        use crm_domain::Event;
        use crm_domain::event::CustomerRegistered;
        let id = CustomerId::new(Uuid::now_v7());
        let at = time::macros::datetime!(2025-01-01 00:00 UTC);
        let event = Event::CustomerRegistered(CustomerRegistered {
            name: "Linked".into(),
            segment: None,
            region: None,
            account_manager: None,
            acquisition_channel: None,
        });
        let seal = |version: u64, prev: &str| {
            Envelope::seal(
                Uuid::now_v7(),
                id,
                version,
                &event,
                at,
                at,
                &crate::envelope::Metadata::default(),
                None,
                prev,
            )
            .expect("seal")
        };
        let first = seal(1, GENESIS_HASH);
        let mut loaded = Loaded::default();
        assert!(
            loaded
                .apply(&id, &StoredEvent::new(1, first.clone()))
                .is_ok()
        );
        let forged = seal(2, &"ab".repeat(32));
        let err = loaded
            .apply(&id, &StoredEvent::new(2, forged))
            .expect_err("a broken link was folded");
        assert!(err.to_string().contains("does not link"), "{err}");
        assert_eq!(
            loaded.state.version, 1,
            "the broken event changed the state"
        );
        let mut fresh = Loaded::default();
        assert!(
            fresh
                .apply(&id, &StoredEvent::new(1, seal(1, &first.hash)))
                .is_err(),
            "a first event must link to the genesis hash"
        );
        // A well-linked event of another customer, found on this customer's subject.
        let other = CustomerId::new(Uuid::now_v7());
        let foreign = Envelope::seal(
            Uuid::now_v7(),
            other,
            2,
            &event,
            at,
            at,
            &crate::envelope::Metadata::default(),
            None,
            &first.hash,
        )
        .expect("seal");
        let err = loaded
            .apply(&id, &StoredEvent::new(3, foreign))
            .expect_err("another customer's event was folded");
        assert!(
            err.to_string().contains("on the subject of customer"),
            "{err}"
        );
        assert_eq!(loaded.state.version, 1);
    }

    fn datetime_east(at: OffsetDateTime) -> OffsetDateTime {
        at.to_offset(time::macros::offset!(+8))
    }

    fn ids(n: usize) -> Vec<CustomerId> {
        (0..n).map(|_| CustomerId::new(Uuid::now_v7())).collect()
    }

    /// A customer whose slot is held (a command in flight) keeps that slot, however many
    /// other customers pass through the cache meanwhile; once idle it is evicted again
    /// and the cache is back at its capacity.
    #[test]
    fn a_held_slot_is_never_evicted_and_the_cache_shrinks_back() {
        let slots = Slots::new(2);
        let c = ids(6);
        let held = slots.get(c[0]);
        for other in &c[1..] {
            let _ = slots.get(*other);
            assert!(
                Arc::ptr_eq(&slots.get(c[0]), &held),
                "the held slot was replaced after {other}"
            );
        }
        assert_eq!(slots.lock().len(), 2);

        // Every slot busy: the cache grows for as long as they are held.
        let busy: Vec<Slot> = c[1..4].iter().map(|id| slots.get(*id)).collect();
        assert!(slots.lock().len() >= 4, "{}", slots.lock().len());
        for (id, slot) in c[1..4].iter().zip(&busy) {
            assert!(Arc::ptr_eq(&slots.get(*id), slot));
        }
        drop(busy);
        drop(held);
        let _ = slots.get(c[4]);
        let _ = slots.get(c[5]);
        let cache = slots.lock();
        assert_eq!((cache.len(), cache.cap().get()), (2, 2));
        drop(cache);

        // An idle slot can be forgotten; a held one cannot.
        let held = slots.get(c[0]);
        slots.forget_idle(&c[0]);
        slots.forget_idle(&c[5]);
        assert!(Arc::ptr_eq(&slots.get(c[0]), &held));
        assert!(slots.peek(&c[5]).is_none());
    }
}
