//! The read store: SQLite in WAL mode, migrated at open.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::error::ProjectionError;

/// What the store knows of one projection's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRow {
    pub name: String,
    /// Last stream sequence applied.
    pub last_sequence: u64,
    /// When the last batch was committed (RFC 3339).
    pub updated_at: String,
    /// Events per second over the projector's last ten seconds of commits.
    pub apply_rate: f64,
}

/// A handle on the read models.
#[derive(Debug, Clone)]
pub struct ReadStore {
    pool: SqlitePool,
}

impl ReadStore {
    /// Opens (creating if needed) the SQLite file at `path` and applies migrations.
    pub async fn open_file(path: &Path) -> Result<Self, ProjectionError> {
        let url = format!("sqlite://{}", path.display());
        Self::open(&url).await
    }

    /// Opens a `sqlite:` URL and applies migrations.
    pub async fn open(url: &str) -> Result<Self, ProjectionError> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            // 64 MiB of page cache per connection (the default is 2 MiB): the projectors'
            // bulk upserts and the audit index's secondary indexes touch pages all over
            // the file, and re-reading them dominated their time.
            .pragma("cache_size", "-65536")
            // Checkpoint the WAL every 64 MiB instead of every 4 MiB: each checkpoint writes
            // pages back all over the file and syncs; with the audit index's secondary
            // indexes, the default made bulk inserts 1.4x slower (measured on this machine
            // with a Python sqlite3 loop, 1,000,000 audit-index rows in transactions of
            // 5,000: 14,800 rows/s -> 21,000 rows/s).
            .pragma("wal_autocheckpoint", "16384");
        // Two processes creating the same fresh file at once (two projectors starting
        // together) can find it locked while the other sets up WAL mode or migrates; SQLite
        // answers that with SQLITE_BUSY at once, not through the busy timeout. Retry.
        let mut attempt = 0u32;
        loop {
            let opened = async {
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .connect_with(opts.clone())
                    .await?;
                migrate(&pool).await?;
                Ok::<_, ProjectionError>(pool)
            }
            .await;
            match opened {
                Ok(pool) => return Ok(Self { pool }),
                Err(e) if attempt < 40 && is_busy(&e) => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "read store busy at open; retrying");
                    tokio::time::sleep(Duration::from_millis(25 * u64::from(attempt.min(10))))
                        .await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A projection's checkpoint (0 when it never ran).
    pub async fn checkpoint(&self, name: &str) -> Result<u64, ProjectionError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT last_sequence FROM projection_checkpoints WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map_or(0, |(s,)| u64::try_from(s).unwrap_or(0)))
    }

    /// Every projection's checkpoint row.
    pub async fn checkpoint_rows(&self) -> Result<Vec<CheckpointRow>, ProjectionError> {
        let rows: Vec<(String, i64, String, f64)> = sqlx::query_as(
            "SELECT name, last_sequence, updated_at, apply_rate FROM projection_checkpoints \
             ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, s, updated_at, apply_rate)| CheckpointRow {
                name,
                last_sequence: u64::try_from(s).unwrap_or(0),
                updated_at,
                apply_rate,
            })
            .collect())
    }

    /// The lowest checkpoint among `names` (0 if any never ran).
    pub async fn min_checkpoint(&self, names: &[&str]) -> Result<u64, ProjectionError> {
        let mut lowest = u64::MAX;
        for name in names {
            lowest = lowest.min(self.checkpoint(name).await?);
        }
        Ok(if names.is_empty() { 0 } else { lowest })
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<(), ProjectionError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Whether `e` is SQLite's "database is locked" / "database is busy" (codes 5 and 6).
fn is_busy(e: &ProjectionError) -> bool {
    let db = match e {
        ProjectionError::Db(sqlx::Error::Database(db)) => db,
        ProjectionError::Migrate(
            sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(db))
            | sqlx::migrate::MigrateError::ExecuteMigration(sqlx::Error::Database(db), _),
        ) => db,
        _ => return false,
    };
    matches!(
        db.code().as_deref(),
        Some("5" | "6" | "517" | "261" | "773")
    )
}

/// Applies the migrations. sqlx takes no lock on SQLite, so two processes opening a fresh
/// file at once (`crm dev` next to `crm project`, two projectors) can both try the same
/// migration; each migration runs in its own transaction, so the loser's attempt rolls back
/// whole and a retry finds it applied.
async fn migrate(pool: &SqlitePool) -> Result<(), ProjectionError> {
    let migrator = sqlx::migrate!("./migrations/sqlite");
    let mut attempt = 0;
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 20 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "migration raced another process; retrying");
                tokio::time::sleep(Duration::from_millis(25 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several openers of one fresh file at once (as two projector processes starting
    /// together): every one gets a migrated store, none fails with "database is locked".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_opens_of_a_fresh_file_all_succeed() -> anyhow::Result<()> {
        for round in 0..5 {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join(format!("views-{round}.sqlite"));
            let opens = (0..6).map(|_| {
                let path = path.clone();
                tokio::spawn(async move { ReadStore::open_file(&path).await })
            });
            for opened in futures::future::join_all(opens).await {
                let store = opened??;
                assert_eq!(store.checkpoint("lifecycle").await?, 0);
            }
        }
        Ok(())
    }
}
