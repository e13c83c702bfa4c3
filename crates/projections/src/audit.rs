//! The audit index projection: one row per event with the fields auditors filter on, so a
//! query by type, actor, customer or time does not scan the log. Queries return sequences;
//! callers read the events themselves from the log.

use std::borrow::Cow;
use std::collections::HashMap;

use crm_domain::CustomerId;
use crm_log::{EventLog, StoredEvent};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use sqlx::AnyConnection;
use time::OffsetDateTime;

use crate::cache::StateCache;
use crate::error::ProjectionError;
use crate::projector::Projection;
use crate::sql::{ROWS_PER_STATEMENT, Sql, i64_of, rfc3339, u64_of};
use crate::store::ReadStore;

/// The projection's name.
pub const NAME: &str = "audit";

/// The audit index projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditProjection;

impl Projection for AuditProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_index", "chain_heads"]
    }

    fn bulk_indexes(&self) -> &'static [&'static str] {
        // Auditors' lookups; the index itself only inserts by sequence.
        &[
            "audit_customer",
            "audit_type",
            "audit_actor",
            "audit_occurred",
            "audit_recorded",
        ]
    }

    fn decodes_events(&self) -> bool {
        false
    }

    async fn apply_batch(
        &self,
        tx: &mut AnyConnection,
        events: &[StoredEvent],
        _cache: &mut StateCache,
    ) -> Result<(), ProjectionError> {
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let mut q = Sql::insert_once(
                "audit_index (sequence, customer_id, event_type, actor, occurred_us, recorded_us)",
                "sequence",
            );
            q.values(chunk, |b, e| {
                b.bind(i64_of(e.sequence))
                    .bind(e.envelope.customer_id.to_string())
                    .bind(e.envelope.event_type.clone())
                    .bind(e.envelope.actor.clone())
                    .bind(micros(e.envelope.occurred_at))
                    .bind(micros(e.envelope.recorded_at));
            });
            q.execute(&mut *tx).await?;
        }
        // The latest head of every customer in the batch.
        let mut heads: HashMap<String, (u64, &str, u64)> = HashMap::new();
        for e in events {
            heads.insert(
                e.envelope.customer_id.to_string(),
                (e.envelope.version, e.envelope.hash.as_str(), e.sequence),
            );
        }
        let heads: Vec<_> = heads.into_iter().collect();
        for chunk in heads.chunks(ROWS_PER_STATEMENT) {
            let mut q = Sql::new("INSERT INTO chain_heads (customer_id, version, hash, sequence) ");
            q.values(chunk, |b, (c, (v, h, s))| {
                b.bind(c.clone())
                    .bind(i64_of(*v))
                    .bind(h.to_string())
                    .bind(i64_of(*s));
            });
            q.push(
                " ON CONFLICT (customer_id) DO UPDATE SET version = excluded.version, \
                 hash = excluded.hash, sequence = excluded.sequence \
                 WHERE excluded.sequence > chain_heads.sequence",
            );
            q.execute(&mut *tx).await?;
        }
        Ok(())
    }
}

/// Signs the chain heads as of the audit projection's checkpoint and stores the result.
/// Returns `None` when the projection has not indexed anything yet.
///
/// When the audit index runs partitioned, its checkpoint is the slowest partition's and the
/// others may have stored heads past it. The head of such a customer as of the checkpoint is
/// its last event at or before it: found in the index (complete up to the checkpoint in
/// every partition) and read from the log; a customer whose first event is past it is left
/// out. So the signed digest is the one `verify` recomputes from the log at that position.
pub async fn create_checkpoint(
    store: &ReadStore,
    log: &EventLog,
    key: &[u8],
) -> Result<Option<ChainCheckpoint>, ProjectionError> {
    // One read transaction: the heads and the checkpoint are consistent.
    let mut tx = store.begin_read().await?;
    let head: Option<(i64,)> =
        sqlx::query_as("SELECT last_sequence FROM projection_checkpoints WHERE name = $1")
            .bind(NAME)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((head,)) = head else {
        return Ok(None);
    };
    let rows: Vec<(String, i64, String, i64)> =
        sqlx::query_as("SELECT customer_id, version, hash, sequence FROM chain_heads")
            .fetch_all(&mut *tx)
            .await?;
    let mut heads = Vec::with_capacity(rows.len());
    let mut earlier = Vec::new();
    for (c, v, h, seq) in rows {
        if seq <= head {
            heads.push((c, u64_of(v), h));
            continue;
        }
        let before: Option<(Option<i64>,)> = sqlx::query_as(
            "SELECT MAX(sequence) FROM audit_index WHERE customer_id = $1 AND sequence <= $2",
        )
        .bind(c.clone())
        .bind(head)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((Some(seq),)) = before {
            earlier.push((c, u64_of(seq)));
        }
    }
    tx.commit().await?;
    for (c, seq) in earlier {
        // Confirmed with the leader: a follower that is behind would answer "not found".
        let stored = log.get_confirmed(seq).await?;
        match stored {
            Some(e) if e.envelope.customer_id.to_string() == c => {
                heads.push((c, e.envelope.version, e.envelope.hash));
            }
            _ => {
                return Err(ProjectionError::CorruptState {
                    customer: c,
                    reason: format!("the audit index names sequence {seq}, the log does not"),
                });
            }
        }
    }
    let mut parsed = Vec::with_capacity(heads.len());
    for (c, v, h) in &heads {
        let id = CustomerId::parse(c).map_err(|e| ProjectionError::CorruptState {
            customer: c.clone(),
            reason: e.to_string(),
        })?;
        parsed.push((id, *v, h.as_str()));
    }
    let digest = crm_log::audit::heads_digest(parsed.into_iter());
    let head_sequence = u64_of(head);
    let customers = heads.len() as u64;
    let checkpoint = ChainCheckpoint {
        head_sequence,
        created_at: rfc3339(OffsetDateTime::now_utc()),
        customers,
        signature: crm_log::audit::sign(key, head_sequence, customers, &digest),
        heads_digest: digest,
    };
    Ok(Some(save_checkpoint(store, &checkpoint).await?))
}

/// Filters of an audit query. Times compare as instants (RFC 3339 in UTC).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditFilter {
    pub customer_id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub actor: Option<String>,
    /// Business time range (`occurred_at`), inclusive.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub to: Option<OffsetDateTime>,
    /// Recording time range (`recorded_at`), inclusive.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub recorded_from: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub recorded_to: Option<OffsetDateTime>,
}

/// Microseconds since the Unix epoch, saturating (the index's time columns).
fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(if t.unix_timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

impl AuditFilter {
    /// The filter with its customer id in the form the index and the envelopes hold
    /// (lowercase, hyphenated). A UUID written another way (uppercase, braced, without
    /// hyphens) is the same customer, and would otherwise match nothing.
    fn canonical(&self) -> Cow<'_, AuditFilter> {
        match self
            .customer_id
            .as_deref()
            .and_then(|c| CustomerId::parse(c).ok())
            .map(|id| id.to_string())
        {
            Some(c) if Some(&c) != self.customer_id.as_ref() => Cow::Owned(AuditFilter {
                customer_id: Some(c),
                ..self.clone()
            }),
            _ => Cow::Borrowed(self),
        }
    }

    /// Whether an event matches (used for the part of the log the index has not reached).
    pub fn matches(&self, e: &StoredEvent) -> bool {
        let env = &e.envelope;
        self.customer_id
            .as_ref()
            .is_none_or(|c| *c == env.customer_id.to_string())
            && self
                .event_type
                .as_ref()
                .is_none_or(|t| *t == env.event_type)
            && self.actor.as_ref().is_none_or(|a| *a == env.actor)
            && self.from.is_none_or(|f| env.occurred_at >= f)
            && self.to.is_none_or(|t| env.occurred_at <= t)
            && self.recorded_from.is_none_or(|f| env.recorded_at >= f)
            && self.recorded_to.is_none_or(|t| env.recorded_at <= t)
    }
}

/// Stream sequences of matching events in `after + 1..=until`, in log order, at most
/// `limit`.
pub async fn query(
    store: &ReadStore,
    filter: &AuditFilter,
    after: u64,
    until: u64,
    limit: u32,
) -> Result<Vec<u64>, ProjectionError> {
    let filter = filter.canonical();
    let mut q = Sql::new("SELECT sequence FROM audit_index WHERE sequence > ");
    q.bind(i64_of(after));
    q.push(" AND sequence <= ").bind(i64_of(until));
    if let Some(c) = &filter.customer_id {
        q.push(" AND customer_id = ").bind(c.clone());
    }
    if let Some(t) = &filter.event_type {
        q.push(" AND event_type = ").bind(t.clone());
    }
    if let Some(a) = &filter.actor {
        q.push(" AND actor = ").bind(a.clone());
    }
    // Times are stored as integer microseconds (UTC), so ranges compare exactly and can use
    // the (event_type, occurred_us), occurred_us and recorded_us indexes.
    for (column, op, bound) in [
        ("occurred_us", ">=", filter.from),
        ("occurred_us", "<=", filter.to),
        ("recorded_us", ">=", filter.recorded_from),
        ("recorded_us", "<=", filter.recorded_to),
    ] {
        if let Some(t) = bound {
            q.push(format_args!(" AND {column} {op} ")).bind(micros(t));
        }
    }
    q.push(" ORDER BY sequence LIMIT ").bind(i64::from(limit));
    let rows: Vec<(i64,)> = q.fetch_all_from(store).await?;
    Ok(rows.into_iter().map(|(s,)| u64_of(s)).collect())
}

/// Direct gets in flight while a page of events is read back from the log.
const FETCH_CONCURRENCY: usize = 64;

/// One page of matching events after `after`, in log order: from the index, then from the
/// part of the log the index has not reached yet. Events always come from the log itself.
pub async fn page(
    store: &ReadStore,
    log: &crm_log::EventLog,
    filter: &AuditFilter,
    after: u64,
    limit: u32,
) -> Result<Vec<StoredEvent>, ProjectionError> {
    let filter = &*filter.canonical();
    // An index built from another log points at other events: refused, not served.
    if let Some(first) = crate::origin::first_event_id(log).await?
        && let Some((_, recorded)) = crate::origin::recorded(store)
            .await?
            .into_iter()
            .find(|(name, recorded)| name == NAME && *recorded != first)
    {
        return Err(ProjectionError::OtherLog {
            projection: NAME.to_owned(),
            recorded,
            found: first,
        });
    }
    // The index up to its checkpoint, the log after it. Rows past the checkpoint (a batch
    // committing meanwhile, or partitions ahead of the slowest when the audit index runs
    // partitioned: its checkpoint is the lowest) are left to the log part, so no event
    // comes twice and none is passed over.
    let indexed_to = store.checkpoint(NAME).await?;
    let indexed = query(store, filter, after, indexed_to, limit).await?;
    // The index has more matches than this page when it filled it: only a short page goes
    // on into the log's unindexed tail (going there with matches left in the index would
    // pass over them for good).
    let index_exhausted = (indexed.len() as u32) < limit;
    // Direct gets, many in flight, results kept in log order. The log denies deletes, so
    // every sequence up to its head holds an event: one that cannot be read is an error,
    // never a gap to step over.
    let mut out: Vec<StoredEvent> = futures::stream::iter(indexed)
        .map(|seq| async move { present(seq, log.get_confirmed(seq).await?) })
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await?;
    if index_exhausted {
        let head = log.head().await?;
        let mut seq = after.max(indexed_to);
        while seq < head && (out.len() as u32) < limit {
            seq += 1;
            let e = present(seq, log.get_confirmed(seq).await?)?;
            if filter.matches(&e) {
                out.push(e);
            }
        }
    }
    Ok(out)
}

/// The event at `sequence`, which the log must hold (see [`page`]).
fn present(sequence: u64, event: Option<StoredEvent>) -> Result<StoredEvent, ProjectionError> {
    event.ok_or_else(|| ProjectionError::MissingEvent { sequence })
}

/// A signed checkpoint of every chain head at a log position.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainCheckpoint {
    pub head_sequence: u64,
    pub created_at: String,
    pub customers: u64,
    pub heads_digest: String,
    pub signature: String,
}

/// Stores a checkpoint (idempotent per head sequence).
///
/// Returns the checkpoint the store keeps at that position: `c`, or one made there before
/// with the same digest (the scheduler's, a moment earlier). One there with another
/// digest is an error: the store and the log disagree about that position.
pub async fn save_checkpoint(
    store: &ReadStore,
    c: &ChainCheckpoint,
) -> Result<ChainCheckpoint, ProjectionError> {
    sqlx::query(
        "INSERT INTO audit_checkpoints (head_sequence, created_at, customers, heads_digest, signature) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (head_sequence) DO NOTHING",
    )
    .bind(i64_of(c.head_sequence))
    .bind(&c.created_at)
    .bind(i64_of(c.customers))
    .bind(&c.heads_digest)
    .bind(&c.signature)
    .execute(store.pool())
    .await?;
    let (created_at, customers, heads_digest, signature): (String, i64, String, String) =
        sqlx::query_as(
            "SELECT created_at, customers, heads_digest, signature FROM audit_checkpoints \
             WHERE head_sequence = $1",
        )
        .bind(i64_of(c.head_sequence))
        .fetch_one(store.pool())
        .await?;
    if heads_digest != c.heads_digest {
        return Err(ProjectionError::CorruptState {
            customer: "*".into(),
            reason: format!(
                "a checkpoint at sequence {} is already stored with another chain-head digest \
                 ({heads_digest}, the log gives {}): run `crm audit verify`",
                c.head_sequence, c.heads_digest
            ),
        });
    }
    Ok(ChainCheckpoint {
        head_sequence: c.head_sequence,
        created_at,
        customers: u64_of(customers),
        heads_digest,
        signature,
    })
}

/// After a full verify: an audit index that has read more of the log than the log holds
/// now means the log lost events (or the store belongs to another log). No signed
/// checkpoint may cover those events yet, so the chains alone would pass; the report
/// fails, saying so. Compared with the head as it is now, not the verified one, so events
/// appended during the verify are no false alarm.
pub async fn check_index_against_head(
    store: &ReadStore,
    log: &crm_log::EventLog,
    report: &mut crm_log::audit::Report,
) -> Result<(), ProjectionError> {
    let indexed = store.checkpoint(NAME).await?;
    let head = log.head().await?;
    if indexed > head {
        report.ok = false;
        report.warnings.push(format!(
            "the audit index has read the log up to sequence {indexed}, past its head {head}: \
             the log lost events, or this read store belongs to another log"
        ));
    }
    Ok(())
}

/// Every stored checkpoint, oldest first.
pub async fn checkpoints(store: &ReadStore) -> Result<Vec<ChainCheckpoint>, ProjectionError> {
    let rows: Vec<(i64, String, i64, String, String)> = sqlx::query_as(
        "SELECT head_sequence, created_at, customers, heads_digest, signature FROM audit_checkpoints ORDER BY head_sequence",
    )
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(s, created_at, n, heads_digest, signature)| ChainCheckpoint {
                head_sequence: u64_of(s),
                created_at,
                customers: u64_of(n),
                heads_digest,
                signature,
            },
        )
        .collect())
}

impl From<&ChainCheckpoint> for crm_log::audit::SignedHeads {
    fn from(c: &ChainCheckpoint) -> Self {
        Self {
            head_sequence: c.head_sequence,
            customers: c.customers,
            heads_digest: c.heads_digest.clone(),
            signature: c.signature.clone(),
        }
    }
}
