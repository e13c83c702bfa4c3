//! The read store: SQLite in WAL mode (one file, the embedded default) or PostgreSQL (one
//! schema of a database, for production and scale-out), migrated at open. Both are reached
//! through `sqlx::Any`, so every projection and query is one piece of SQL that both accept;
//! the few things that differ (locking, the swap of a rebuild) ask [`ReadStore::dialect`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyConnection, AnyPool, Connection, Transaction};

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

/// The SQL database behind a read store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Where a read store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// One SQLite file.
    Sqlite(PathBuf),
    /// One schema of a PostgreSQL database (`postgres://` URL).
    Postgres { url: String, schema: String },
}

impl Location {
    /// The dialect of this location.
    pub fn dialect(&self) -> Dialect {
        match self {
            Self::Sqlite(_) => Dialect::Sqlite,
            Self::Postgres { .. } => Dialect::Postgres,
        }
    }

    /// Where a rebuild of `label` keeps its shadow copy: a file next to the live one, or
    /// a schema next to the live one.
    pub fn shadow(&self, label: &str) -> Location {
        match self {
            Self::Sqlite(file) => {
                let stem = file
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "views.sqlite".into());
                Self::Sqlite(file.with_file_name(format!("{stem}.rebuild-{label}")))
            }
            Self::Postgres { url, schema } => Self::Postgres {
                url: url.clone(),
                schema: format!("{schema}_rebuild_{label}"),
            },
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(file) => write!(f, "{}", file.display()),
            Self::Postgres { url, schema } => {
                // Never print a password.
                let shown = match (url.find("://"), url.rfind('@')) {
                    (Some(scheme), Some(at)) if at > scheme => {
                        format!("{}://…{}", &url[..scheme], &url[at..])
                    }
                    _ => url.clone(),
                };
                write!(f, "{shown} (schema {schema})")
            }
        }
    }
}

/// A handle on the read models.
#[derive(Debug, Clone)]
pub struct ReadStore {
    pool: AnyPool,
    location: Arc<Location>,
}

impl ReadStore {
    /// Opens (creating if needed) the SQLite file at `path` and applies migrations.
    pub async fn open_file(path: &Path) -> Result<Self, ProjectionError> {
        Self::open_at(&Location::Sqlite(path.to_owned())).await
    }

    /// Opens (creating if needed) `schema` of the PostgreSQL database at `url` and applies
    /// migrations.
    pub async fn open_postgres(url: &str, schema: &str) -> Result<Self, ProjectionError> {
        Self::open_at(&Location::Postgres {
            url: url.to_owned(),
            schema: schema.to_owned(),
        })
        .await
    }

    /// Opens the store at `location` and applies migrations.
    pub async fn open_at(location: &Location) -> Result<Self, ProjectionError> {
        Self::open_as(location, Role::Live).await
    }

    /// Opens a rebuild's shadow copy at `location` (see [`shadow_pragmas`]: on SQLite, a
    /// scratch file that a machine crash may leave torn) and applies migrations.
    pub(crate) async fn open_shadow(location: &Location) -> Result<Self, ProjectionError> {
        Self::open_as(location, Role::Shadow).await
    }

    async fn open_as(location: &Location, role: Role) -> Result<Self, ProjectionError> {
        install_default_drivers();
        if let Location::Postgres { schema, .. } = location {
            check_identifier(schema)?;
        }
        // Two processes creating the same fresh store at once (two projectors starting
        // together) can find a fresh SQLite file locked while the other sets up WAL mode or
        // migrates (SQLite answers SQLITE_BUSY at once, not through the busy timeout), or
        // race to create the same PostgreSQL schema. Retry.
        let mut attempt = 0u32;
        loop {
            match connect(location, role).await {
                Ok(pool) => {
                    return Ok(Self {
                        pool,
                        location: Arc::new(location.clone()),
                    });
                }
                Err(e) if attempt < 40 && is_transient_at_open(&e) => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "read store busy at open; retrying");
                    tokio::time::sleep(Duration::from_millis(25 * u64::from(attempt.min(10))))
                        .await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Where this store lives.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The SQL database behind this store.
    pub fn dialect(&self) -> Dialect {
        self.location.dialect()
    }

    /// The connection pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a projector's write transaction on `conn` (a connection of this store's pool
    /// that the projector keeps for its whole pass: SQLite drops a connection's page cache
    /// whenever another connection wrote the file since its last transaction, so batch
    /// after batch on the same connection finds the pages of the previous one still
    /// cached). On SQLite it takes the write lock up front (BEGIN IMMEDIATE), so concurrent
    /// projectors wait on the busy timeout instead of failing when a read transaction tries
    /// to upgrade; on PostgreSQL it takes the shared side of the store's swap lock, so a
    /// rebuild's swap waits for running batches and batches wait for the swap.
    pub async fn begin_write<'c>(
        &self,
        conn: &'c mut AnyConnection,
    ) -> Result<Transaction<'c, Any>, ProjectionError> {
        match self.dialect() {
            Dialect::Sqlite => Ok(conn.begin_with("BEGIN IMMEDIATE").await?),
            Dialect::Postgres => {
                let mut tx = conn.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
                    .bind(self.swap_lock_key())
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    /// On PostgreSQL, takes projection `name`'s write lock until the end of `tx` (a
    /// transaction from [`ReadStore::begin_write`]), before the batch reads any of its
    /// state: two projectors applying the same projection to this store then apply their
    /// batches one after the other, and the later one sees what the earlier one wrote
    /// (otherwise it would fold the state it read before and write it over the newer
    /// rows). SQLite's write lock, taken by `begin_write`, already does this.
    pub async fn lock_projection(
        &self,
        tx: &mut AnyConnection,
        name: &str,
    ) -> Result<(), ProjectionError> {
        if self.dialect() == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(lock_key(&format!("projection-{name}"), &self.location))
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    /// Begins a read transaction that sees one snapshot for all its statements.
    pub async fn begin_read(&self) -> Result<Transaction<'static, Any>, ProjectionError> {
        match self.dialect() {
            // A deferred SQLite transaction reads one snapshot from its first read on.
            Dialect::Sqlite => Ok(self.pool.begin().await?),
            Dialect::Postgres => Ok(self
                .pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?),
        }
    }

    /// The PostgreSQL advisory-lock key of this store's swaps (unused on SQLite, whose
    /// write lock plays that part).
    pub(crate) fn swap_lock_key(&self) -> i64 {
        lock_key("swap", &self.location)
    }

    /// A projection's checkpoint (0 when it never ran).
    pub async fn checkpoint(&self, name: &str) -> Result<u64, ProjectionError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT last_sequence FROM projection_checkpoints WHERE name = $1")
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

/// A stable advisory-lock key for `purpose` at `location` (FNV-1a of both). PostgreSQL's
/// advisory locks belong to one database, so there the schema alone names the store:
/// processes that spell the database's URL differently (a host alias, other credentials
/// or parameters) still meet on one key.
pub(crate) fn lock_key(purpose: &str, location: &Location) -> i64 {
    let text = match location {
        Location::Postgres { schema, .. } => format!("crm-{purpose}:postgres:{schema}"),
        Location::Sqlite(file) => format!("crm-{purpose}:sqlite:{}", file.display()),
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// PostgreSQL schema names are spliced into SQL (search_path, the swap's qualified
/// names), so only plain lower-case identifiers are accepted.
fn check_identifier(schema: &str) -> Result<(), ProjectionError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(ProjectionError::BadSchema(schema.to_owned()))
    }
}

/// A SQLite URL for `path`, with the characters a URL would eat escaped.
fn sqlite_url(path: &Path) -> String {
    let mut url = String::from("sqlite://");
    for c in path.display().to_string().chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    url.push_str("?mode=rwc");
    url
}

/// What a store is for, which decides how a SQLite file is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The views readers read: [`SQLITE_PRAGMAS`].
    Live,
    /// A rebuild's shadow copy: [`shadow_pragmas`].
    Shadow,
}

async fn connect(location: &Location, role: Role) -> Result<AnyPool, ProjectionError> {
    match location {
        Location::Sqlite(path) => {
            let pragmas: Arc<str> = match role {
                Role::Live => SQLITE_PRAGMAS.into(),
                Role::Shadow => shadow_pragmas().into(),
            };
            {
                // One plain connection first, which reads the schema: a file that is not a
                // database (or is torn) is reported as such at once (a pool would retry
                // until its acquire timeout and report only that it timed out).
                let mut conn = sqlx::AnyConnection::connect(&sqlite_url(path)).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(pragmas.to_string()))
                    .execute(&mut conn)
                    .await?;
                sqlx::query("SELECT COUNT(*) FROM sqlite_master")
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
            }
            let pool = AnyPoolOptions::new()
                .max_connections(8)
                .after_connect(move |conn, _| {
                    let pragmas = pragmas.clone();
                    Box::pin(async move {
                        sqlx::raw_sql(sqlx::AssertSqlSafe(pragmas.to_string()))
                            .execute(conn)
                            .await?;
                        Ok(())
                    })
                })
                .connect(&sqlite_url(path))
                .await?;
            migrate(&pool, Dialect::Sqlite).await?;
            Ok(pool)
        }
        Location::Postgres { url, schema } => {
            {
                // One plain connection first: an unreachable server or a refused login is
                // reported as such at once (a pool would retry until its acquire timeout
                // and report only that it timed out).
                let mut conn = sqlx::AnyConnection::connect(url).await?;
                let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
                sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
            }
            let search_path: Arc<str> = format!("SET search_path TO {schema}").into();
            let pool = AnyPoolOptions::new()
                .max_connections(8)
                .after_connect(move |conn, _| {
                    let search_path = search_path.clone();
                    Box::pin(async move {
                        sqlx::raw_sql(sqlx::AssertSqlSafe(search_path.to_string()))
                            .execute(conn)
                            .await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await?;
            migrate(&pool, Dialect::Postgres).await?;
            Ok(pool)
        }
    }
}

/// Set on every SQLite connection.
const SQLITE_PRAGMAS: &str = "\
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    PRAGMA busy_timeout = 10000;
    -- 64 MiB of page cache per connection (the default is 2 MiB): the projectors' bulk
    -- upserts and the audit index's secondary indexes touch pages all over the file, and
    -- re-reading them dominated their time.
    PRAGMA cache_size = -65536;
    -- Checkpoint the WAL every 64 MiB instead of every 4 MiB: each checkpoint writes pages
    -- back all over the file and syncs; with the audit index's secondary indexes, the
    -- default made bulk inserts 1.4x slower (measured on this machine with a Python sqlite3
    -- loop, 1,000,000 audit-index rows in transactions of 5,000: 14,800 rows/s -> 21,000
    -- rows/s). Every 256 MiB rather than 64: a projector's batches rewrite the same hot
    -- pages (its latest customers' rows, the ends of its ledgers), and one checkpoint copies
    -- each page once however many batches rewrote it; 500,000-event rebuilds spent 20 %
    -- less time committing (0.77-0.84 s against 0.94-1.02 s) and ran 3-6 % faster in three
    -- alternated pairs. The log file then takes up to ~256 MiB on disk, and the WAL index in
    -- shared memory ~0.5 MiB. A projector at the head of the log checkpoints every 16 MiB
    -- instead (`WalPace`).
    PRAGMA wal_autocheckpoint = 65536;
    -- Statement journals in memory: every multi-row upsert inside a projector's
    -- transaction keeps one (to undo just that statement), and past 64 KiB SQLite spills it
    -- to a temporary file, so each batch wrote its pages through the kernel a second time
    -- (3.4 % of a rebuild's samples in `subjournalPage` -> `unixWrite`). In memory it is
    -- bounded by the pages one statement of at most 500 rows touches. (Temporary tables and
    -- sorts live in memory too; the views' queries are indexed or limited.)
    PRAGMA temp_store = MEMORY;";

/// When a projector's commits checkpoint SQLite's WAL into the database file. SQLite does
/// it inside the commit that takes the WAL past `wal_autocheckpoint` pages, and the commit
/// returns only after it has copied every page written since the last one. Catching up,
/// a large interval lets one checkpoint copy each hot page once however many batches
/// rewrote it ([`SQLITE_PRAGMAS`]: 256 MiB). Following the head, the same interval made
/// every ~25,000th event wait 230-270 ms for its commit, so a projector at the head
/// checkpoints in steps of 16 MiB instead (`crm-bench project`, the live rows: all five
/// projections behind appends at 10,000-12,000/s, p99 lag 364-478 ms before, 147-236 ms
/// after; steps of 4 MiB were no better and sync the file four times as often).
pub(crate) struct WalPace {
    sqlite: bool,
    /// Whether the interval set on the connection is the catch-up one; `None` until set.
    catching_up: Option<bool>,
}

/// WAL pages between checkpoints while a projector catches up (as [`SQLITE_PRAGMAS`]).
const WAL_PAGES_CATCHING_UP: &str = "PRAGMA wal_autocheckpoint = 65536";
/// WAL pages between checkpoints once a projector follows the head (16 MiB).
const WAL_PAGES_LIVE: &str = "PRAGMA wal_autocheckpoint = 4096";

impl WalPace {
    pub(crate) fn of(dialect: Dialect) -> Self {
        Self {
            sqlite: dialect == Dialect::Sqlite,
            catching_up: None,
        }
    }

    /// Sets the interval on `conn` for a batch read behind the head (`catching_up`) or
    /// at it, unless it is set already.
    pub(crate) async fn set(
        &mut self,
        conn: &mut sqlx::AnyConnection,
        catching_up: bool,
    ) -> Result<(), sqlx::Error> {
        if self.sqlite && self.catching_up != Some(catching_up) {
            let pragma = if catching_up {
                WAL_PAGES_CATCHING_UP
            } else {
                WAL_PAGES_LIVE
            };
            sqlx::query(pragma).execute(&mut *conn).await?;
            self.catching_up = Some(catching_up);
        }
        Ok(())
    }
}

/// Set on every connection to a rebuild's SQLite shadow file, instead of
/// [`SQLITE_PRAGMAS`]. One projector writes a shadow, and it is read only between that
/// projector's batches and by the swap, so it needs neither WAL's concurrent readers nor
/// its durability:
///
/// - A rollback journal (TRUNCATE) instead of WAL. The pages of a table that only grows
///   (the audit index, two thirds of a rebuilt file) go once into the file; under WAL each
///   went into the log and again into the file at every checkpoint. The journal keeps only
///   the prior contents of pages a batch rewrites, and a killed process leaves it behind
///   for the next open to roll the torn batch back.
/// - No syncs (`synchronous = OFF`) where the machine's boot is known
///   ([`boot_id`]): only a crash of the machine itself can lose unsynced writes, and
///   a rebuild resumes a shadow only if it was begun in the same boot (its fingerprint
///   carries the boot id), so a shadow a machine crash may have torn is started again.
///   Where the boot is unknown, `FULL` (a rollback journal under `NORMAL` may be torn
///   by a power cut, and such a shadow could not be told apart).
/// - Worker threads for sorts: the deferred indexes are built by sorting the whole table
///   (`CREATE INDEX`), which can then use every core (only where a sort may spill to
///   temporary files, which `build_deferred_indexes` allows on its connection).
///
/// On a 2-core machine, `crm replay all` over 1,000,000 events: a median of 12.4 s against
/// 12.95 s with the live pragmas in six alternated pairs (the ranges overlap), 1.61 GB
/// written against 2.05 GB (see `docs/benchmarks.md`).
fn shadow_pragmas() -> String {
    let synchronous = if boot_id().is_some() { "OFF" } else { "FULL" };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    format!(
        "\
    PRAGMA journal_mode = TRUNCATE;
    PRAGMA synchronous = {synchronous};
    PRAGMA busy_timeout = 10000;
    PRAGMA cache_size = -65536;
    PRAGMA temp_store = MEMORY;
    PRAGMA threads = {threads};"
    )
}

/// This boot of the machine, where the system says (Linux): a machine crash, the one
/// thing that can tear a file written without syncs, always starts another boot.
pub(crate) fn boot_id() -> Option<String> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty())
    })
    .clone()
}

/// Whether an error at open is worth a retry: SQLite's "database is locked" / "database is
/// busy" (codes 5 and 6 and their extended codes), or PostgreSQL's unique violation of two
/// sessions creating one schema at once.
fn is_transient_at_open(e: &ProjectionError) -> bool {
    let Some(db) = database_error(e) else {
        return false;
    };
    matches!(
        db.code().as_deref(),
        Some("5" | "6" | "517" | "261" | "773" | "23505")
    )
}

/// The database's own error inside `e`, from a statement or a migration.
pub(crate) fn database_error(e: &ProjectionError) -> Option<&dyn sqlx::error::DatabaseError> {
    match e {
        ProjectionError::Db(sqlx::Error::Database(db))
        | ProjectionError::Migrate(
            sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(db))
            | sqlx::migrate::MigrateError::ExecuteMigration(sqlx::Error::Database(db), _),
        ) => Some(db.as_ref()),
        _ => None,
    }
}

/// Applies the migrations of `dialect`. sqlx takes no lock on SQLite, so two processes
/// opening a fresh file at once (`crm dev` next to `crm project`, two projectors) can both
/// try the same migration; each migration runs in its own transaction, so the loser's
/// attempt rolls back whole and a retry finds it applied. On PostgreSQL sqlx serialises
/// migrations with an advisory lock.
async fn migrate(pool: &AnyPool, dialect: Dialect) -> Result<(), ProjectionError> {
    let mut migrator = match dialect {
        Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        Dialect::Postgres => sqlx::migrate!("./migrations/postgres"),
    };
    // Migrations only add. A store a newer version migrated (a newer `crm status` run
    // against it, or a rolling upgrade) still opens for this one, instead of failing
    // with `VersionMissing` and keeping an older gateway from restarting (or rolling back).
    migrator.set_ignore_missing(true);
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

    /// A store that cannot be reached is "unavailable" (callers may retry); a query that
    /// fails in the store is not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_store_is_unavailable_and_a_bad_query_is_not() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = ReadStore::open_file(&dir.path().join("u.sqlite")).await?;
        let bad = store.checkpoint_rows().await.map(|_| ()).and(
            sqlx::query("SELECT * FROM no_such_table")
                .execute(store.pool())
                .await
                .map(|_| ())
                .map_err(ProjectionError::from),
        );
        let bad = bad.expect_err("a query on a missing table failed");
        assert!(!bad.is_unavailable(), "{bad}");
        store.pool().close().await;
        let closed = store.ping().await.expect_err("a closed store answered");
        assert!(closed.is_unavailable(), "{closed}");
        Ok(())
    }
}

#[cfg(test)]
mod pragma_tests {
    use super::*;

    /// A projector's write connection checkpoints its WAL in large steps while catching up
    /// and in small ones at the head, whatever an earlier pass left set on the pooled
    /// connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_checkpoint_interval_follows_catching_up_and_live() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = ReadStore::open_file(&dir.path().join("w.sqlite")).await?;
        let mut conn = store.pool().acquire().await?;
        async fn interval(conn: &mut sqlx::AnyConnection) -> anyhow::Result<i64> {
            let (pages,): (i64,) = sqlx::query_as("PRAGMA wal_autocheckpoint")
                .fetch_one(conn)
                .await?;
            Ok(pages)
        }
        assert_eq!(interval(&mut conn).await?, 65_536, "the pool's own setting");
        let mut pace = WalPace::of(store.dialect());
        pace.set(&mut conn, false).await?;
        assert_eq!(interval(&mut conn).await?, 4_096);
        pace.set(&mut conn, false).await?;
        assert_eq!(interval(&mut conn).await?, 4_096);
        pace.set(&mut conn, true).await?;
        assert_eq!(interval(&mut conn).await?, 65_536);
        pace.set(&mut conn, false).await?;
        // The next pass on the same pooled connection starts from what it finds.
        let mut next = WalPace::of(store.dialect());
        next.set(&mut conn, true).await?;
        assert_eq!(interval(&mut conn).await?, 65_536);
        Ok(())
    }

    /// Every pooled SQLite connection runs with the pragmas the projectors were tuned
    /// for (WAL, synchronous NORMAL, a large page cache, a 10 s busy timeout).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_connections_carry_the_tuned_pragmas() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = ReadStore::open_file(&dir.path().join("p.sqlite")).await?;
        let mut conns = Vec::new();
        for _ in 0..3 {
            conns.push(store.pool().acquire().await?);
        }
        for conn in &mut conns {
            let mut get = async |pragma: &'static str| -> anyhow::Result<String> {
                let row: (String,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT CAST({pragma} AS TEXT)"
                )))
                .fetch_one(&mut **conn)
                .await?;
                Ok(row.0)
            };
            assert_eq!(
                get("(SELECT journal_mode FROM pragma_journal_mode)").await?,
                "wal"
            );
            assert_eq!(
                get("(SELECT synchronous FROM pragma_synchronous)").await?,
                "1"
            );
            assert_eq!(
                get("(SELECT cache_size FROM pragma_cache_size)").await?,
                "-65536"
            );
            assert_eq!(
                get("(SELECT timeout FROM pragma_busy_timeout)").await?,
                "10000"
            );
            let (pages,): (i64,) = sqlx::query_as("PRAGMA wal_autocheckpoint")
                .fetch_one(&mut **conn)
                .await?;
            assert_eq!(pages, 65536);
        }
        Ok(())
    }

    /// A file that is not a database is refused at once with SQLite's own error, not
    /// after the pool's 30 s acquire timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_that_is_not_a_database_is_refused_at_once() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "not a database, ".repeat(64))?;
        let started = std::time::Instant::now();
        let e = ReadStore::open_file(&path)
            .await
            .expect_err("a text file opened as a store");
        assert!(started.elapsed() < Duration::from_secs(10), "{e}");
        let code = database_error(&e).and_then(|db| db.code().map(|c| c.into_owned()));
        assert_eq!(code.as_deref(), Some("26"), "{e}");
        assert_eq!(
            std::fs::read(&path)?,
            "not a database, ".repeat(64).into_bytes()
        );
        Ok(())
    }

    /// A rebuild's shadow runs with a rollback journal, without syncs where the boot is
    /// known, and with worker threads for its sorts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shadow_is_kept_in_a_rollback_journal_without_syncs() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let at = Location::Sqlite(dir.path().join("p.sqlite.rebuild-all"));
        let shadow = ReadStore::open_shadow(&at).await?;
        let mut conns = Vec::new();
        for _ in 0..3 {
            conns.push(shadow.pool().acquire().await?);
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        for conn in &mut conns {
            let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
                .fetch_one(&mut **conn)
                .await?;
            assert_eq!(mode, "truncate");
            let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
                .fetch_one(&mut **conn)
                .await?;
            assert_eq!(sync, if boot_id().is_some() { 0 } else { 2 });
            let (got,): (i64,) = sqlx::query_as("PRAGMA threads")
                .fetch_one(&mut **conn)
                .await?;
            assert_eq!(got, threads as i64);
        }
        assert_eq!(
            boot_id().is_some(),
            std::path::Path::new("/proc/sys/kernel/random/boot_id").exists()
        );
        drop(conns);
        shadow.pool().close().await;
        // The live store next to it is untouched: still WAL.
        let live = ReadStore::open_file(&dir.path().join("p.sqlite")).await?;
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(live.pool())
            .await?;
        assert_eq!(mode, "wal");
        Ok(())
    }
}
