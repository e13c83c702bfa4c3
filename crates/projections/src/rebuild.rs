//! Blue-green rebuilds and point-in-time views.
//!
//! A rebuild replays the log from the first event into a shadow copy (a SQLite file next
//! to the live one, or a PostgreSQL schema next to the live one), catches up with the live
//! head, then swaps the projection's tables into the live store in one transaction that
//! keeps live projectors out (SQLite's write lock; on PostgreSQL the exclusive side of the
//! store's swap lock, whose shared side every projector batch takes): readers see the old
//! rows until the commit and the new rows after it, never a half-built view. The shadow
//! survives an interruption, so the next rebuild resumes from its checkpoint if it runs
//! under the same policy and code (the shadow records their fingerprint), and starts the
//! shadow again otherwise; nothing is swapped until the shadow has caught up.
//!
//! The live projector may keep running during a rebuild: the swap locks it out, catches
//! the shadow up with the live checkpoint meanwhile (a few events: the
//! shadow already followed the head twice), then copies; every projection skips events it
//! has already applied, so the live projector's next batch is harmless. A writer that
//! never pauses therefore cannot keep a rebuild from finishing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crm_domain::policy::Policy;
use crm_log::EventLog;
use time::OffsetDateTime;

use crate::any::AnyProjection;
use crate::error::ProjectionError;
use crate::projector::{Projection, Projector, ProjectorOptions};
use crate::sql::{i64_of, rfc3339};
use crate::store::{Dialect, Location, ReadStore, lock_key};

pub use crate::any::ALL;

async fn set_progress(
    live: &ReadStore,
    name: &str,
    state: &str,
    done: u64,
    total: u64,
    error: Option<&str>,
) -> Result<(), ProjectionError> {
    let now = rfc3339(OffsetDateTime::now_utc());
    sqlx::query(
        "INSERT INTO projection_rebuilds (name, state, done, total, started_at, updated_at, error) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO UPDATE SET state = excluded.state, \
         done = excluded.done, total = excluded.total, updated_at = excluded.updated_at, \
         error = excluded.error, \
         started_at = CASE WHEN projection_rebuilds.state = 'rebuilding' THEN projection_rebuilds.started_at ELSE excluded.started_at END",
    )
    .bind(name)
    .bind(state)
    .bind(i64_of(done))
    .bind(i64_of(total))
    .bind(&now)
    .bind(&now)
    .bind(error)
    .execute(live.pool())
    .await?;
    Ok(())
}

/// A rebuild's state as the status API shows it: (state, done, total, started, updated, error).
pub type RebuildRow = (String, u64, u64, String, String, Option<String>);

/// The latest rebuild of `name`, if any.
pub async fn rebuild_status(
    live: &ReadStore,
    name: &str,
) -> Result<Option<RebuildRow>, ProjectionError> {
    let row: Option<(String, i64, i64, String, String, Option<String>)> = sqlx::query_as(
        "SELECT state, done, total, started_at, updated_at, error FROM projection_rebuilds WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(live.pool())
    .await?;
    Ok(
        row.map(|(s, d, t, st, up, e)| {
            (s, crate::sql::u64_of(d), crate::sql::u64_of(t), st, up, e)
        }),
    )
}

/// Runs `projector` until `target`, reporting progress.
/// How often a pass records its progress in the live store's rebuild rows (the status
/// API counts a rebuild whose row was not written for 60 s as over).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

async fn run_with_progress<P: Projection>(
    projector: &Projector<P>,
    target: u64,
    on_progress: &(dyn Fn(u64, u64) + Send + Sync),
    live: &ReadStore,
    names: &[&str],
) -> Result<(), ProjectionError> {
    let mut rx = projector.status();
    let run = projector.run_until(target);
    let mut run = std::pin::pin!(run);
    let mut recorded = std::time::Instant::now();
    loop {
        tokio::select! {
            r = &mut run => return r,
            changed = rx.changed() => {
                if changed.is_ok() {
                    let cp = rx.borrow().checkpoint;
                    on_progress(cp, target);
                    if recorded.elapsed() >= PROGRESS_EVERY {
                        recorded = std::time::Instant::now();
                        // Best effort: the pass goes on if the live store is busy.
                        if let Err(e) = progress_all(live, names, "rebuilding", cp, target).await {
                            tracing::debug!(error = %e, "recording rebuild progress");
                        }
                    }
                }
            }
        }
    }
}

/// The exclusive right to rebuild into one live read store, held until dropped and
/// released if the process dies, so two rebuilds (two HTTP calls, `crm replay` next to the
/// gateway) never share a shadow copy or swap over each other: an advisory lock on
/// `<live file>.rebuild.lock` for SQLite, a session advisory lock on a connection of its
/// own for PostgreSQL.
#[derive(Debug)]
pub struct RebuildClaim {
    live: Location,
    _lock: ClaimLock,
}

#[derive(Debug)]
#[allow(dead_code)] // held for their locks, never read
enum ClaimLock {
    /// Closing the file (dropping it) releases the lock.
    File(std::fs::File),
    /// Closing the connection (dropping it) releases the lock. (In a mutex only so the
    /// claim can be shared across tasks; nothing uses the connection.)
    Postgres(std::sync::Mutex<sqlx::AnyConnection>),
}

impl RebuildClaim {
    /// Claims `live`, or fails with [`ProjectionError::RebuildRunning`] at once if another
    /// rebuild holds it.
    pub async fn take(live: &ReadStore) -> Result<Self, ProjectionError> {
        let lock = match live.location() {
            Location::Sqlite(file) => ClaimLock::File(lock_file(file)?),
            Location::Postgres { .. } => {
                // Detached from the pool: the lock lives exactly as long as this connection.
                let mut conn = live.pool().acquire().await?.detach();
                let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
                    .bind(lock_key("rebuild", live.location()))
                    .fetch_one(&mut conn)
                    .await?;
                if !got {
                    return Err(ProjectionError::RebuildRunning {
                        lock: format!("advisory lock of {}", live.location()),
                    });
                }
                ClaimLock::Postgres(std::sync::Mutex::new(conn))
            }
        };
        Ok(Self {
            live: live.location().clone(),
            _lock: lock,
        })
    }

    /// The live read store this claim is for.
    pub fn live(&self) -> &Location {
        &self.live
    }

    /// Gives the claim up, so that a claim taken after this returns succeeds. Dropping the
    /// claim gives it up too, but on PostgreSQL the server releases the lock of a dropped
    /// connection only when its backend notices the connection is gone, a moment later;
    /// this unlocks explicitly first.
    pub async fn release(self) -> Result<(), ProjectionError> {
        let Self { live, _lock: lock } = self;
        if let ClaimLock::Postgres(conn) = lock {
            let mut conn = conn
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(lock_key("rebuild", &live))
                .execute(&mut conn)
                .await?;
            sqlx::Connection::close(conn).await?;
        }
        Ok(())
    }
}

fn lock_file(live_file: &Path) -> Result<std::fs::File, ProjectionError> {
    let mut lock_path = live_file.as_os_str().to_owned();
    lock_path.push(".rebuild.lock");
    let lock_path = PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| ProjectionError::Io {
            path: lock_path.display().to_string(),
            reason: e.to_string(),
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ProjectionError::RebuildRunning {
            lock: lock_path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(ProjectionError::Io {
            path: lock_path.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Passes outside the lock before the swap: after the first (from the first event), more
/// passes run while the shadow is more than a batch behind, up to this many.
const MAX_PASSES: usize = 10;
/// Attempts at the swap; each holds the live write lock at most [`SWAP_CATCH_UP`] for
/// its catch-up before giving the lock back and trying again.
const MAX_SWAPS: usize = 10;
/// Longest catch-up under the live write lock (well inside the 10 s busy timeout that
/// live projectors wait for the lock).
const SWAP_CATCH_UP: Duration = Duration::from_secs(3);

/// Rebuilds `projections` blue-green, together: one pass over the log into one shadow
/// file, then one swap of all their tables. Returns the sequence the swapped-in views
/// stand at.
pub async fn rebuild<P: Projection + Clone>(
    claim: &RebuildClaim,
    projections: Vec<P>,
    live: &ReadStore,
    log: &EventLog,
    batch_size: usize,
    on_progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<u64, ProjectionError> {
    let names: Vec<&'static str> = projections.iter().map(Projection::name).collect();
    let (shadow, _) = match open_shadow(claim, live, &projections, log).await {
        Ok(opened) => opened,
        Err(e) => {
            mark_failed(live, &names, &e).await;
            return Err(e);
        }
    };
    let shadow_at = shadow.location().clone();
    let projector = Projector::combined(
        projections.clone(),
        shadow.clone(),
        log.clone(),
        ProjectorOptions {
            batch_size,
            ..ProjectorOptions::default()
        },
    );
    let result: Result<u64, ProjectionError> = async {
        // Passes outside any lock until the shadow is within a batch of the head; the swap
        // catches up the last few events under the live store's write lock, so a steady
        // writer cannot keep it from finishing.
        for _ in 0..MAX_SWAPS {
            for pass in 0..MAX_PASSES {
                let head = log.head().await?;
                let mut target = head;
                for name in &names {
                    target = target.max(live.checkpoint(name).await?);
                }
                let done = shadow.min_checkpoint(&names).await?;
                if pass > 0 && target.saturating_sub(done) <= batch_size as u64 {
                    break;
                }
                progress_all(live, &names, "rebuilding", done, target).await?;
                run_with_progress(&projector, target, on_progress, live, &names).await?;
                let done = shadow.min_checkpoint(&names).await?;
                progress_all(live, &names, "rebuilding", done, target).await?;
            }
            if build_deferred_indexes(&shadow).await? {
                // Events written while the indexes were built: one more round of passes
                // outside the lock, so the swap's catch-up under it stays short.
                continue;
            }
            if let Some(at) = swap(&projector, &shadow, live).await? {
                return Ok(at);
            }
            tracing::info!(
                projections = ?names,
                "the catch-up under the write lock took too long; going round again"
            );
        }
        Err(ProjectionError::SwapTimedOut {
            attempts: MAX_SWAPS,
        })
    }
    .await;
    shadow.pool().close().await;
    match &result {
        Ok(at) => {
            // The swap has committed: the rebuild succeeded whatever happens to its status
            // row, so a failure to record "done" is logged, not returned.
            if let Err(e) = progress_all(live, &names, "done", *at, *at).await {
                tracing::warn!(error = %e, "recording a finished rebuild's status");
            }
            drop_shadow(live, &shadow_at).await;
        }
        Err(e) => mark_failed(live, &names, e).await,
    }
    result
}

/// Records a failed rebuild in the status every projection of it reports (best effort: the
/// error itself goes back to the caller).
async fn mark_failed(live: &ReadStore, names: &[&str], e: &ProjectionError) {
    let msg = e.to_string();
    for name in names {
        let _ = set_progress(live, name, "failed", 0, 0, Some(&msg)).await;
    }
}

/// How a rebuild found its shadow copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShadowStart {
    /// There was none (or an empty one): the rebuild starts from the first event.
    Fresh,
    /// An interrupted rebuild of the same projections, build and policy left one: the
    /// rebuild goes on from the sequence it reached.
    Resumed { at: u64 },
    /// An interrupted rebuild left one begun under another fingerprint (another policy,
    /// another build of crm, or from before fingerprints were kept): its rows would mix
    /// the two, so it was removed and the rebuild starts from the first event.
    Discarded { fingerprint: Option<String> },
}

/// The fingerprint of a set of projections rebuilt together, by this build.
fn fingerprint_of<P: Projection>(projections: &[P]) -> String {
    let mut parts: Vec<String> = projections.iter().map(Projection::fingerprint).collect();
    parts.push(build_identity());
    parts.join("\n")
}

/// The running binary, by its size and modification time: a fold fixed between an
/// interruption and the next rebuild changes the binary but rarely the crate version, and
/// the first batches of a resumed shadow would stay folded the old way. (The same image
/// restarted resumes; a new build starts over.) The crate version if the binary cannot be
/// looked at.
fn build_identity() -> String {
    let binary = std::env::current_exe()
        .and_then(std::fs::metadata)
        .and_then(|m| {
            let modified = m.modified()?;
            Ok((m.len(), modified))
        })
        .ok()
        .and_then(|(len, modified)| {
            let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
            Some(format!(
                "binary of {len} bytes built at {}",
                since.as_nanos()
            ))
        });
    binary.unwrap_or_else(|| format!("crm-projections {}", env!("CARGO_PKG_VERSION")))
}

/// Opens the shadow copy a rebuild of `projections` into the claimed live store works in,
/// keeping what an interrupted rebuild left there only if it was begun under the same
/// fingerprint ([`Projection::fingerprint`]), and records the fingerprint in it.
pub async fn open_shadow<P: Projection>(
    claim: &RebuildClaim,
    live: &ReadStore,
    projections: &[P],
    log: &EventLog,
) -> Result<(ReadStore, ShadowStart), ProjectionError> {
    let names: Vec<&'static str> = projections.iter().map(Projection::name).collect();
    let label = match names.as_slice() {
        [one] => *one,
        _ => "all",
    };
    let at = claim.live().shadow(label);
    // The log is part of it: a shadow an interrupted rebuild began on another log (the
    // stream made again since) is started again, not resumed. So is the boot: a SQLite
    // shadow is written without syncs, and only a machine crash (a new boot) can tear it.
    let fingerprint = format!(
        "{}\nlog:{}{}",
        fingerprint_of(projections),
        crate::origin::first_event_id(log)
            .await?
            .unwrap_or_default(),
        match (&at, crate::store::boot_id()) {
            (Location::Sqlite(_), Some(boot)) => format!("\nboot:{boot}"),
            _ => String::new(),
        }
    );
    let (shadow, recorded, reached) = match read_shadow(&at, &names).await {
        Ok(read) => read,
        // A shadow file SQLite cannot read (torn by a crash of the machine, which its
        // fingerprint would have discarded anyway) is only lost work: start it again.
        Err(e) if matches!(at, Location::Sqlite(_)) && is_corrupt(&e) => {
            tracing::warn!(
                projections = ?names,
                shadow = %at,
                error = %e,
                "an interrupted rebuild's shadow cannot be read; starting it again"
            );
            remove_shadow(live, &at).await?;
            read_shadow(&at, &names).await?
        }
        Err(e) => return Err(e),
    };
    let start = match recorded {
        Some((f,)) if f == fingerprint => ShadowStart::Resumed {
            at: reached.iter().copied().min().unwrap_or(0),
        },
        None if reached.iter().all(|&r| r == 0) => ShadowStart::Fresh,
        recorded => ShadowStart::Discarded {
            fingerprint: recorded.map(|(f,)| f),
        },
    };
    let shadow = match &start {
        ShadowStart::Discarded { .. } => {
            tracing::info!(
                projections = ?names,
                shadow = %at,
                "an interrupted rebuild's shadow was begun under another policy, version or log; starting it again"
            );
            shadow.pool().close().await;
            remove_shadow(live, &at).await?;
            let shadow = ReadStore::open_shadow(&at).await?;
            origin_table(&shadow).await?;
            shadow
        }
        ShadowStart::Resumed { at: from } => {
            tracing::info!(projections = ?names, from, "resuming an interrupted rebuild");
            shadow
        }
        ShadowStart::Fresh => shadow,
    };
    if !matches!(start, ShadowStart::Resumed { .. }) {
        let bulk: Vec<&'static str> = projections
            .iter()
            .flat_map(|p| p.bulk_indexes().iter().copied())
            .collect();
        defer_indexes(&shadow, &bulk).await?;
    }
    sqlx::query(
        "INSERT INTO rebuild_origin (id, fingerprint) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint",
    )
    .bind(&fingerprint)
    .execute(shadow.pool())
    .await?;
    Ok((shadow, start))
}

/// Opens the shadow at `at` and reads the fingerprint it was begun under and the
/// checkpoint each of `names` reached in it.
async fn read_shadow(
    at: &Location,
    names: &[&'static str],
) -> Result<(ReadStore, Option<(String,)>, Vec<u64>), ProjectionError> {
    let shadow = ReadStore::open_shadow(at).await?;
    let read = async {
        origin_table(&shadow).await?;
        let recorded: Option<(String,)> =
            sqlx::query_as("SELECT fingerprint FROM rebuild_origin WHERE id = 1")
                .fetch_optional(shadow.pool())
                .await?;
        let mut reached = Vec::with_capacity(names.len());
        for name in names {
            reached.push(shadow.checkpoint(name).await?);
        }
        Ok::<_, ProjectionError>((recorded, reached))
    }
    .await;
    match read {
        Ok((recorded, reached)) => Ok((shadow, recorded, reached)),
        Err(e) => {
            shadow.pool().close().await;
            Err(e)
        }
    }
}

/// Whether SQLite found a file that is not a sound database: `SQLITE_CORRUPT` (11) or
/// `SQLITE_NOTADB` (26), whatever their extended code.
fn is_corrupt(e: &ProjectionError) -> bool {
    crate::store::database_error(e)
        .and_then(|db| db.code()?.parse::<i64>().ok())
        .is_some_and(|c| matches!(c & 0xff, 11 | 26))
}

/// In a fresh shadow: drops `indexes` (each projection's [`Projection::bulk_indexes`]),
/// keeping their definitions in the shadow, so the first pass inserts rows without them
/// and [`build_deferred_indexes`] builds each once before the swap. One transaction: an
/// interrupted rebuild resumes with the indexes either all kept or all recorded.
async fn defer_indexes(
    shadow: &ReadStore,
    indexes: &[&'static str],
) -> Result<(), ProjectionError> {
    if indexes.is_empty() {
        return Ok(());
    }
    let mut tx = shadow.pool().begin().await?;
    let definition_of = match shadow.dialect() {
        Dialect::Sqlite => "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = $1",
        Dialect::Postgres => {
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1"
        }
    };
    for name in indexes {
        let definition: Option<(String,)> = sqlx::query_as(definition_of)
            .bind(*name)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((definition,)) = definition else {
            continue;
        };
        sqlx::query(
            "INSERT INTO rebuild_deferred_indexes (name, definition) VALUES ($1, $2) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(*name)
        .bind(&definition)
        .execute(&mut *tx)
        .await?;
        // Index names are constants of the projections, never input.
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX {name}")))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Builds the indexes [`defer_indexes`] dropped from a SQLite shadow, as they were defined,
/// in one transaction. Returns whether it built any (none may be waiting).
///
/// Only on SQLite, whose swap (`INSERT INTO live SELECT * FROM shadow`) copies a table's
/// b-trees page by page when both copies have the same indexes. PostgreSQL inserts every
/// row into the live table's own indexes whatever the shadow has, so a PostgreSQL shadow
/// never builds them: it is dropped after the swap.
pub async fn build_deferred_indexes(shadow: &ReadStore) -> Result<bool, ProjectionError> {
    if shadow.dialect() == Dialect::Postgres {
        return Ok(false);
    }
    let waiting: Vec<(String, String)> =
        sqlx::query_as("SELECT name, definition FROM rebuild_deferred_indexes ORDER BY name")
            .fetch_all(shadow.pool())
            .await?;
    if waiting.is_empty() {
        return Ok(false);
    }
    let started = std::time::Instant::now();
    let mut conn = shadow.pool().acquire().await?;
    // Sorts in temporary files rather than in memory, on this connection only (it is
    // closed after the build, not returned to the pool): SQLite's sorter uses the worker
    // threads of `PRAGMA threads` only when it may spill to files, and with them the five
    // sorts of 1,000,000 rows took 2.7-2.9 s against 3.0-3.6 s (docs/benchmarks.md). The
    // files are deleted when each sort ends, usually before they reach the disk.
    conn.close_on_drop();
    sqlx::query("PRAGMA temp_store = FILE")
        .execute(&mut *conn)
        .await?;
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    for (name, definition) in &waiting {
        // The definition was read from the shadow's own catalogue. (Made idempotent, in
        // case a migration of a later build made the index again.)
        let definition = match definition.strip_prefix("CREATE INDEX ") {
            Some(rest) if !rest.starts_with("IF NOT EXISTS") => {
                format!("CREATE INDEX IF NOT EXISTS {rest}")
            }
            _ => definition.clone(),
        };
        sqlx::query(sqlx::AssertSqlSafe(definition))
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM rebuild_deferred_indexes WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    tracing::info!(
        indexes = ?waiting.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        secs = started.elapsed().as_secs_f64(),
        "built the shadow's deferred indexes"
    );
    Ok(true)
}

/// Makes the tables a shadow records its fingerprint and its deferred indexes in. Only
/// shadows hold them, so they are made here rather than by a migration of every store.
async fn origin_table(shadow: &ReadStore) -> Result<(), ProjectionError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS rebuild_origin \
         (id INTEGER PRIMARY KEY CHECK (id = 1), fingerprint TEXT NOT NULL)",
    )
    .execute(shadow.pool())
    .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS rebuild_deferred_indexes \
         (name TEXT PRIMARY KEY, definition TEXT NOT NULL)",
    )
    .execute(shadow.pool())
    .await?;
    Ok(())
}

async fn progress_all(
    live: &ReadStore,
    names: &[&str],
    state: &str,
    done: u64,
    total: u64,
) -> Result<(), ProjectionError> {
    for name in names {
        set_progress(live, name, state, done, total, None).await?;
    }
    Ok(())
}

/// Swaps the shadow's tables into the live store and returns the checkpoint they stand at,
/// or `None` if the shadow could not catch up within [`SWAP_CATCH_UP`].
///
/// Under the live store's write lock (no live projector can commit meanwhile; readers go
/// on reading the old rows), the shadow first catches up with the live checkpoint, so the
/// swapped-in views are never behind what readers already saw.
async fn swap<P: Projection>(
    projector: &Projector<P>,
    shadow: &ReadStore,
    live: &ReadStore,
) -> Result<Option<u64>, ProjectionError> {
    let names = projector.names();
    let first_event = crate::origin::first_event_id(projector.log()).await?;
    let mut conn = live.pool().acquire().await?;
    // The transaction below is begun by hand: if this future is dropped half-way, the
    // connection must be closed (the database rolls back) rather than go back to the pool
    // inside a write transaction (with the shadow attached, on SQLite).
    conn.close_on_drop();
    // How the two copies are named on this connection.
    let (main, other) = match (live.location(), shadow.location()) {
        (Location::Sqlite(_), Location::Sqlite(file)) => {
            // ATTACH is not allowed inside a transaction: attach first, on this connection.
            sqlx::query("ATTACH DATABASE $1 AS shadow")
                .bind(file.display().to_string())
                .execute(&mut *conn)
                .await?;
            ("main".to_owned(), "shadow".to_owned())
        }
        (
            Location::Postgres {
                schema: live_schema,
                ..
            },
            Location::Postgres { schema, .. },
        ) => (live_schema.clone(), schema.clone()),
        _ => unreachable!("a shadow is always in the live store's database kind"),
    };
    let outcome = async {
        // SQLite: a deferred transaction whose first statement writes to `main` takes the
        // write lock of the live file only. (BEGIN IMMEDIATE would lock the attached shadow
        // too, and the shadow's projector must still write to it below.)
        // PostgreSQL: the exclusive swap lock waits for running projector batches and
        // keeps new ones out until the commit.
        sqlx::query("BEGIN").execute(&mut *conn).await?;
        if live.dialect() == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(live.swap_lock_key())
                .execute(&mut *conn)
                .await?;
        }
        let now = rfc3339(OffsetDateTime::now_utc());
        for name in &names {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {main}.projection_rebuilds SET updated_at = $1 WHERE name = $2"
            )))
            .bind(&now)
            .bind(*name)
            .execute(&mut *conn)
            .await?;
        }
        let mut live_at = 0;
        for name in &names {
            // The projection's own row and, for partitioned projectors, its per-partition
            // rows (`name@pp`).
            let cp: Option<(i64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT MAX(last_sequence) FROM {main}.projection_checkpoints \
                 WHERE name = $1 OR substr(name, 1, length($1) + 1) = $1 || '@' \
                 HAVING COUNT(*) > 0"
            )))
            .bind(*name)
            .fetch_optional(&mut *conn)
            .await?;
            live_at = live_at.max(cp.map_or(0, |(cp,)| crate::sql::u64_of(cp)));
        }
        if shadow.min_checkpoint(&names).await? < live_at {
            let caught_up =
                tokio::time::timeout(SWAP_CATCH_UP, projector.run_until(live_at)).await;
            match caught_up {
                Ok(r) => r?,
                Err(_) => {
                    sqlx::query("ROLLBACK").execute(&mut *conn).await?;
                    return Ok(None);
                }
            }
        }
        // The checkpoint of the rows copied below, read through this connection from the
        // attached shadow itself: rows and checkpoint come from one snapshot of one file.
        let mut at = u64::MAX;
        for name in &names {
            let cp: Option<(i64,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT last_sequence FROM {other}.projection_checkpoints WHERE name = $1"
            )))
            .bind(*name)
                    .fetch_optional(&mut *conn)
                    .await?;
            at = at.min(cp.map_or(0, |(cp,)| crate::sql::u64_of(cp)));
        }
        if at < live_at {
            return Err(ProjectionError::ShadowBehind { at, live: live_at });
        }
        for table in projector.tables() {
            // Table names are constants of the projection, never input.
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {main}.{table}")))
                .execute(&mut *conn)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {main}.{table} SELECT * FROM {other}.{table}"
            )))
            .execute(&mut *conn)
            .await?;
        }
        for name in &names {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {main}.projection_checkpoints (name, last_sequence, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET last_sequence = excluded.last_sequence, updated_at = excluded.updated_at"
            )))
            .bind(*name)
            .bind(i64_of(at))
            .bind(&now)
            .execute(&mut *conn)
            .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {main}.projection_checkpoints SET last_sequence = $2 \
                 WHERE substr(name, 1, length($1) + 1) = $1 || '@'"
            )))
            .bind(*name)
            .bind(i64_of(at))
            .execute(&mut *conn)
            .await?;
        }
        // The swapped-in rows were folded under the rebuild's policies: a live projector
        // under another one stops at its next commit rather than mix the two.
        crate::policy::record_swapped(&mut conn, &main, projector.policies()).await?;
        // And from the rebuild's log, which a live projector on another log refuses.
        crate::origin::record_swapped(&mut conn, &main, &names, first_event.as_deref()).await?;
        sqlx::query("COMMIT").execute(&mut *conn).await?;
        Ok::<_, ProjectionError>(Some(at))
    }
    .await;
    if outcome.is_err() {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    if live.dialect() == Dialect::Sqlite {
        let _ = sqlx::query("DETACH DATABASE shadow")
            .execute(&mut *conn)
            .await;
    }
    outcome
}

/// Removes a swapped-in shadow copy (best effort: a leftover is only disk space, and the
/// next rebuild of the same projections resumes from it harmlessly, or starts it again
/// if it was begun under another fingerprint).
async fn drop_shadow(live: &ReadStore, shadow: &Location) {
    if let Err(e) = remove_shadow(live, shadow).await {
        tracing::warn!(error = %e, %shadow, "could not remove the rebuild's shadow copy");
    }
}

/// Removes a shadow copy: its files, or its schema.
async fn remove_shadow(live: &ReadStore, shadow: &Location) -> Result<(), ProjectionError> {
    match shadow {
        Location::Sqlite(file) => {
            // The file, its rollback journal (a shadow's), and a WAL and its index (left
            // by an older build's shadow).
            for suffix in ["", "-journal", "-wal", "-shm"] {
                let mut p = file.clone().into_os_string();
                p.push(suffix);
                let p = PathBuf::from(p);
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(ProjectionError::Io {
                            path: p.display().to_string(),
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
        Location::Postgres { schema, .. } => {
            let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
            sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(live.pool())
                .await?;
        }
    }
    Ok(())
}

/// Rebuilds a projection by name (`all` for every one, in one pass) with `policy`.
pub async fn rebuild_by_name(
    claim: &RebuildClaim,
    name: &str,
    policy: Arc<Policy>,
    live: &ReadStore,
    log: &EventLog,
    batch_size: usize,
    on_progress: &(dyn Fn(&str, u64, u64) + Send + Sync),
) -> Result<Vec<(String, u64)>, ProjectionError> {
    let projections = AnyProjection::named(name, &policy)?;
    let names: Vec<String> = projections.iter().map(|p| p.name().to_owned()).collect();
    let progress = |d: u64, t: u64| on_progress(name, d, t);
    let at = rebuild(claim, projections, live, log, batch_size, &progress).await?;
    Ok(names.into_iter().map(|n| (n, at)).collect())
}

/// Builds `name` (or `all`) as it stood at stream sequence `at` into the store at `target`.
/// Refuses a sequence past the log's head (it would wait for events that do not exist
/// yet) and a target that already holds one of the views at a later sequence (its rows
/// cannot be taken back). A target behind `at` is carried forward to it.
pub async fn as_of(
    name: &str,
    policy: Arc<Policy>,
    target: &ReadStore,
    log: &EventLog,
    at: u64,
    batch_size: usize,
) -> Result<(), ProjectionError> {
    let head = log.head().await?;
    if at > head {
        return Err(ProjectionError::AsOfPastHead { at, head });
    }
    let projections = AnyProjection::named(name, &policy)?;
    for p in &projections {
        let checkpoint = target.checkpoint(p.name()).await?;
        if checkpoint > at {
            return Err(ProjectionError::AsOfTargetAhead {
                projection: p.name().to_owned(),
                checkpoint,
                at,
            });
        }
    }
    let opts = ProjectorOptions {
        batch_size,
        ..ProjectorOptions::default()
    };
    Projector::combined(projections, target.clone(), log.clone(), opts)
        .run_until(at)
        .await
}

/// The last stream sequence recorded at or before `at` (0 if none), by binary search over
/// the log's recording times.
pub async fn sequence_at(log: &EventLog, at: OffsetDateTime) -> Result<u64, ProjectionError> {
    let (mut lo, mut hi) = (0u64, log.head().await?);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        match log.get(mid).await? {
            Some(e) if e.envelope.recorded_at <= at => lo = mid,
            _ => hi = mid - 1,
        }
    }
    Ok(lo)
}
