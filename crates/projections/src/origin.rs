//! Which event log a projection's rows were built from: the id of the log's first event,
//! kept per projection in `projection_logs`. Views built from one log are never continued
//! on another, whose sequence numbers count other events.

use crm_log::EventLog;
use sqlx::AnyConnection;

use crate::error::ProjectionError;
use crate::store::ReadStore;

/// The id of `log`'s first event (`None` while the log is empty).
pub(crate) async fn first_event_id(log: &EventLog) -> Result<Option<String>, ProjectionError> {
    Ok(log
        .get(1)
        .await?
        .map(|first| first.envelope.event_id.to_string()))
}

/// Every projection's recorded log: (name, first event id).
pub(crate) async fn recorded(store: &ReadStore) -> Result<Vec<(String, String)>, ProjectionError> {
    Ok(
        sqlx::query_as("SELECT name, first_event_id FROM projection_logs")
            .fetch_all(store.pool())
            .await?,
    )
}

/// Before a projector reads: each of `names` must have been built from `log`. A projection
/// the store has no record of (a new one, or one from before records were kept) is
/// recorded as built from it. Nothing is checked while the log is empty: the first
/// commit records it (see [`check_in`]).
pub(crate) async fn check_or_record(
    store: &ReadStore,
    log: &EventLog,
    names: &[&'static str],
) -> Result<(), ProjectionError> {
    let Some(first) = first_event_id(log).await? else {
        return Ok(());
    };
    let mut conn = store.pool().acquire().await?;
    check_in(&mut conn, names, &first).await
}

/// On `conn` (a projector's write transaction, under its projection locks, so a rebuild's
/// swap of another log's rows cannot slip in before the commit): each of `names` was built
/// from the log whose first event is `first`, or is recorded so now.
pub(crate) async fn check_in(
    conn: &mut AnyConnection,
    names: &[&'static str],
    first: &str,
) -> Result<(), ProjectionError> {
    for name in names {
        let read = async |conn: &mut AnyConnection| -> Result<Option<String>, ProjectionError> {
            let row: Option<(String,)> =
                sqlx::query_as("SELECT first_event_id FROM projection_logs WHERE name = $1")
                    .bind(*name)
                    .fetch_optional(&mut *conn)
                    .await?;
            Ok(row.map(|(id,)| id))
        };
        // One read in every commit; the insert only the first time. Two processes of a
        // partitioned group may both find no record: the first insert wins, and the
        // other compares with it.
        let recorded = match read(conn).await? {
            Some(recorded) => recorded,
            None => {
                sqlx::query(
                    "INSERT INTO projection_logs (name, first_event_id) VALUES ($1, $2) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(*name)
                .bind(first)
                .execute(&mut *conn)
                .await?;
                read(conn).await?.unwrap_or_else(|| first.to_owned())
            }
        };
        if recorded != first {
            return Err(ProjectionError::OtherLog {
                projection: (*name).to_owned(),
                recorded,
                found: first.to_owned(),
            });
        }
    }
    Ok(())
}

/// In a rebuild's swap transaction: the rows swapped into `schema` (`main` for SQLite, the
/// live schema for PostgreSQL) were built from the log whose first event is `first`.
pub(crate) async fn record_swapped(
    conn: &mut AnyConnection,
    schema: &str,
    names: &[&'static str],
    first: Option<&str>,
) -> Result<(), ProjectionError> {
    let Some(first) = first else {
        return Ok(());
    };
    for name in names {
        // The schema is the store's own name for itself, never input.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {schema}.projection_logs (name, first_event_id) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET first_event_id = excluded.first_event_id"
        )))
        .bind(*name)
        .bind(first)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
