//! Shared pieces of the projections: a statement builder that speaks both SQLite and
//! PostgreSQL, loading touched customers' folded state in bulk, decoding events, formatting
//! values for SQL.

use std::collections::HashMap;

use crm_domain::{CustomerId, Event};
use crm_log::StoredEvent;
use serde::de::DeserializeOwned;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyConnection, Arguments, Encode, FromRow, Type};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ProjectionError;
use crate::store::{Dialect, ReadStore};

/// The database behind a connection.
pub(crate) fn dialect_of(conn: &AnyConnection) -> Dialect {
    match conn.backend_name() {
        "PostgreSQL" => Dialect::Postgres,
        _ => Dialect::Sqlite,
    }
}

/// Rows per multi-row statement: at most 12 bound values each, well under SQLite's and
/// PostgreSQL's limits.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

/// A statement built from text and bound values, written for the database it runs on:
/// `$1, $2, ...` placeholders on PostgreSQL (sqlx's own `QueryBuilder<Any>` always writes
/// `?`, which PostgreSQL rejects), `?` on SQLite. SQLite would take `$N` too, but sqlx then
/// looks up every parameter's name (`sqlite3_bind_parameter_name`, a linear scan), which
/// is quadratic in a statement of 500 rows: it made the projectors 20-40 % slower.
pub(crate) struct Sql {
    /// The text with [`MARK`] where each placeholder goes.
    text: String,
    args: AnyArguments,
    /// For [`Sql::insert_once`]: the key whose rows already stored are left as they are.
    once: Option<&'static str>,
}

/// Stands for a placeholder until the statement is rendered for its database.
const MARK: char = '\u{1}';

impl Sql {
    /// Starts a statement with `text` (constant SQL, never input).
    pub(crate) fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            args: AnyArguments::default(),
            once: None,
        }
    }

    /// A multi-row `INSERT INTO {into}` (the table and its columns, `VALUES` to follow) of
    /// rows written once: a row whose `key` is stored already (its batch replayed after a
    /// crash) is left as it is. On PostgreSQL `ON CONFLICT (key) DO NOTHING`. On SQLite
    /// `INSERT OR IGNORE`: with no constraint left that would abort the statement halfway
    /// (`ON CONFLICT` leaves `NOT NULL` aborting), SQLite keeps no statement journal for it,
    /// a copy of every page the statement changes. That was 10 % of the audit projector's
    /// samples, and its catch-up ran 13 % faster without it. Only for rows whose values
    /// are never NULL where the column is `NOT NULL`: such a row would be skipped, not
    /// refused.
    pub(crate) fn insert_once(into: &str, key: &'static str) -> Self {
        Self {
            once: Some(key),
            ..Self::new(into)
        }
    }

    /// Appends constant SQL text.
    pub(crate) fn push(&mut self, text: impl std::fmt::Display) -> &mut Self {
        use std::fmt::Write;
        let _ = write!(self.text, "{text}");
        self
    }

    /// Appends a placeholder bound to `value`.
    pub(crate) fn bind<'q, T>(&mut self, value: T) -> &mut Self
    where
        T: Encode<'q, Any> + Type<Any>,
    {
        // Encoding into Any's buffer only stores the value; it cannot fail for our types.
        let _ = self.args.add(value);
        self.text.push(MARK);
        self
    }

    /// The statement's text for `dialect`.
    fn render(&self, dialect: Dialect) -> String {
        match (dialect, self.once) {
            (Dialect::Sqlite, None) => self.text.replace(MARK, "?"),
            (Dialect::Sqlite, Some(_)) => {
                format!("INSERT OR IGNORE INTO {}", self.text.replace(MARK, "?"))
            }
            (Dialect::Postgres, once) => {
                let mut out = String::with_capacity(self.text.len() + 4 * self.args.len() + 64);
                if once.is_some() {
                    out.push_str("INSERT INTO ");
                }
                let mut n = 0;
                for c in self.text.chars() {
                    if c == MARK {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(c);
                    }
                }
                if let Some(key) = once {
                    out.push_str(" ON CONFLICT (");
                    out.push_str(key);
                    out.push_str(") DO NOTHING");
                }
                out
            }
        }
    }

    /// Appends ` VALUES (...), (...)`, one parenthesised row per item, whose values `row`
    /// binds through [`Row::bind`].
    pub(crate) fn values<I>(
        &mut self,
        items: I,
        mut row: impl FnMut(&mut Row<'_>, I::Item),
    ) -> &mut Self
    where
        I: IntoIterator,
    {
        self.push(" VALUES ");
        for (i, item) in items.into_iter().enumerate() {
            self.push(if i == 0 { "(" } else { ", (" });
            row(
                &mut Row {
                    sql: self,
                    first: true,
                },
                item,
            );
            self.push(")");
        }
        self
    }

    /// Appends `(v1, v2, ...)` for an `IN` list.
    pub(crate) fn list<'q, T, I>(&mut self, items: I) -> &mut Self
    where
        I: IntoIterator<Item = T>,
        T: Encode<'q, Any> + Type<Any>,
    {
        self.push("(");
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(item);
        }
        self.push(")")
    }

    /// Runs the statement on `conn`; returns the rows it changed.
    pub(crate) async fn execute(self, conn: &mut AnyConnection) -> Result<u64, ProjectionError> {
        let text = self.render(dialect_of(conn));
        let done = sqlx::query_with(sqlx::AssertSqlSafe(text), self.args)
            .execute(conn)
            .await?;
        Ok(done.rows_affected())
    }

    /// Runs the query on `conn` and decodes every row.
    pub(crate) async fn fetch_all<O>(
        self,
        conn: &mut AnyConnection,
    ) -> Result<Vec<O>, ProjectionError>
    where
        O: for<'r> FromRow<'r, AnyRow> + Send + Unpin,
    {
        let text = self.render(dialect_of(conn));
        Ok(sqlx::query_as_with(sqlx::AssertSqlSafe(text), self.args)
            .fetch_all(conn)
            .await?)
    }

    /// Runs the query on a connection of `store` and decodes every row.
    pub(crate) async fn fetch_all_from<O>(
        self,
        store: &ReadStore,
    ) -> Result<Vec<O>, ProjectionError>
    where
        O: for<'r> FromRow<'r, AnyRow> + Send + Unpin,
    {
        let text = self.render(store.dialect());
        Ok(sqlx::query_as_with(sqlx::AssertSqlSafe(text), self.args)
            .fetch_all(store.pool())
            .await?)
    }
}

/// One row of a multi-row `VALUES` list.
pub(crate) struct Row<'a> {
    sql: &'a mut Sql,
    first: bool,
}

impl Row<'_> {
    /// The next value of the row.
    pub(crate) fn bind<'q, T>(&mut self, value: T) -> &mut Self
    where
        T: Encode<'q, Any> + Type<Any>,
    {
        if !self.first {
            self.sql.push(", ");
        }
        self.first = false;
        self.sql.bind(value);
        self
    }
}

/// The distinct customers of a batch, sorted. (Sorted as integers: a batch holds thousands
/// of events, and comparing two `u128`s is cheaper than comparing two 16-byte arrays; the
/// order is the same.)
pub(crate) fn touched(events: &[StoredEvent]) -> Vec<CustomerId> {
    let mut ids: Vec<u128> = events
        .iter()
        .map(|e| e.envelope.customer_id.as_uuid().as_u128())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .map(|id| CustomerId::new(uuid::Uuid::from_u128(id)))
        .collect()
}

/// Loads the JSON `state` column of `table` for `ids` (customers absent from the table are
/// absent from the map). `table` is always a constant of the calling projection.
pub(crate) async fn load_states<S: DeserializeOwned>(
    tx: &mut AnyConnection,
    table: &'static str,
    ids: &[CustomerId],
) -> Result<HashMap<CustomerId, S>, ProjectionError> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut q = Sql::new(format!(
            "SELECT customer_id, state FROM {table} WHERE customer_id IN "
        ));
        q.list(chunk.iter().map(ToString::to_string));
        let rows: Vec<(String, String)> = q.fetch_all(&mut *tx).await?;
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

/// RFC 3339 text for a timestamp column, in UTC: text columns are ordered as text, and
/// only one offset makes that the order of the instants.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::{Dialect, Sql};

    /// Rows written once: `OR IGNORE` on SQLite, `ON CONFLICT (key) DO NOTHING` on
    /// PostgreSQL, with the placeholders each one takes.
    #[test]
    fn an_insert_of_rows_written_once_is_written_for_each_database() {
        let mut q = Sql::insert_once("t (a, b)", "a");
        q.values([(1_i64, "x"), (2, "y")], |r, (a, b)| {
            r.bind(a).bind(b);
        });
        assert_eq!(
            q.render(Dialect::Sqlite),
            "INSERT OR IGNORE INTO t (a, b) VALUES (?, ?), (?, ?)"
        );
        assert_eq!(
            q.render(Dialect::Postgres),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) ON CONFLICT (a) DO NOTHING"
        );
    }

    /// Stored as text in UTC, so the text order is the order of the instants whatever
    /// offset the caller wrote.
    #[test]
    fn timestamps_are_stored_in_utc_and_sort_as_instants() {
        let east = super::rfc3339(datetime!(2025-06-10 01:00 +08:00));
        let west = super::rfc3339(datetime!(2025-06-09 20:00 UTC));
        assert_eq!(east, "2025-06-09T17:00:00Z");
        assert!(east < west);
    }
}
