//! Shared pieces of the projections: loading touched customers' folded state in bulk,
//! decoding events, formatting values for SQL.

use std::collections::HashMap;

use crm_domain::{CustomerId, Event};
use crm_log::StoredEvent;
use serde::de::DeserializeOwned;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ProjectionError;

/// Rows per multi-row statement: at most 11 bound values each, well under SQLite's limit.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

/// The distinct customers of a batch, sorted.
pub(crate) fn touched(events: &[StoredEvent]) -> Vec<CustomerId> {
    let mut ids: Vec<CustomerId> = events.iter().map(|e| e.envelope.customer_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Loads the JSON `state` column of `table` for `ids` (customers absent from the table are
/// absent from the map). `table` is always a constant of the calling projection.
pub(crate) async fn load_states<S: DeserializeOwned>(
    tx: &mut SqliteConnection,
    table: &'static str,
    ids: &[CustomerId],
) -> Result<HashMap<CustomerId, S>, ProjectionError> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "SELECT customer_id, state FROM {table} WHERE customer_id IN ("
        ));
        let mut sep = q.separated(", ");
        for id in chunk {
            sep.push_bind(id.to_string());
        }
        q.push(")");
        let rows: Vec<(String, String)> = q.build_query_as().fetch_all(&mut *tx).await?;
        for (id, state) in rows {
            let corrupt = |reason: String| ProjectionError::CorruptState {
                customer: id.clone(),
                reason,
            };
            let cid = CustomerId::parse(&id).map_err(|e| corrupt(e.to_string()))?;
            let s: S = serde_json::from_str(&state).map_err(|e| corrupt(e.to_string()))?;
            out.insert(cid, s);
        }
    }
    Ok(out)
}

/// The domain event of a stored envelope (decoded once for all projections of a batch).
pub(crate) fn decode(stored: &StoredEvent) -> Result<&Event, ProjectionError> {
    stored.event().map_err(|e| {
        crm_log::LogError::Decode {
            sequence: stored.sequence,
            reason: e.to_string(),
        }
        .into()
    })
}

/// RFC 3339 text for a timestamp column.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A `u64` for an INTEGER column.
pub(crate) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `u64` from an INTEGER column.
pub(crate) fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// JSON text for a TEXT column. Serialising plain derived data cannot fail.
pub(crate) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}
