//! The generic projector: batches from the log, one transaction per batch, checkpoint
//! inside it.

use std::future::Future;
use std::time::Duration;

use crm_log::{EventLog, StoredEvent};
use futures::StreamExt;
use serde::Serialize;
use sqlx::SqliteConnection;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::ProjectionError;
use crate::store::ReadStore;

/// A read model kept by a projector.
pub trait Projection: Send + Sync + 'static {
    /// Stable name: checkpoint key, CLI and API name.
    fn name(&self) -> &'static str;

    /// The tables this projection owns (swapped together by a blue-green rebuild).
    fn tables(&self) -> &'static [&'static str];

    /// Applies a batch of events (in log order, all newer than the checkpoint) inside the
    /// projector's transaction. Must write each touched row once, in bulk, and must be
    /// idempotent per event (re-applying an event already reflected changes nothing).
    fn apply_batch(
        &self,
        tx: &mut SqliteConnection,
        events: &[StoredEvent],
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;
}

/// Tuning and test hooks.
#[derive(Debug, Clone)]
pub struct ProjectorOptions {
    /// Most events applied in one transaction.
    pub batch_size: usize,
    /// Test hook: fail after writing batch N (1-based) but before committing it, as a
    /// crash inside the transaction would.
    pub crash_before_commit_of_batch: Option<u64>,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        Self {
            batch_size: 5_000,
            crash_before_commit_of_batch: None,
        }
    }
}

/// What a projector reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProjectorStatus {
    pub checkpoint: u64,
    pub state: String,
    pub applied: u64,
}

/// Runs one projection against the log.
pub struct Projector<P> {
    projection: P,
    store: ReadStore,
    log: EventLog,
    options: ProjectorOptions,
    status: watch::Sender<ProjectorStatus>,
}

impl<P> std::fmt::Debug for Projector<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("options", &self.options)
            .finish()
    }
}

impl<P: Projection> Projector<P> {
    /// A projector for `projection`.
    pub fn new(projection: P, store: ReadStore, log: EventLog, options: ProjectorOptions) -> Self {
        let (status, _) = watch::channel(ProjectorStatus {
            state: "starting".into(),
            ..ProjectorStatus::default()
        });
        Self {
            projection,
            store,
            log,
            options,
            status,
        }
    }

    /// The projection's name.
    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    /// Watches checkpoint and state.
    pub fn status(&self) -> watch::Receiver<ProjectorStatus> {
        self.status.subscribe()
    }

    /// Runs until `shutdown`, retrying with back-off after errors. An error never skips an
    /// event: the projector resumes from its committed checkpoint.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), ProjectionError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.run_once(&shutdown, None).await {
                Ok(()) => return Ok(()),
                Err(e @ ProjectionError::InjectedCrash { .. }) => return Err(e),
                Err(e) => {
                    tracing::error!(projection = self.name(), error = %e, "projector failed; retrying");
                    self.status
                        .send_modify(|s| s.state = format!("failed: {e}"));
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Applies everything up to stream sequence `target` and returns (no retry).
    pub async fn run_until(&self, target: u64) -> Result<(), ProjectionError> {
        self.run_once(&CancellationToken::new(), Some(target)).await
    }

    async fn run_once(
        &self,
        shutdown: &CancellationToken,
        target: Option<u64>,
    ) -> Result<(), ProjectionError> {
        let name = self.name();
        let mut checkpoint = self.store.checkpoint(name).await?;
        self.status.send_modify(|s| {
            s.checkpoint = checkpoint;
            s.state = "live".into();
        });
        if target.is_some_and(|t| checkpoint >= t) {
            return Ok(());
        }
        let stream = self
            .log
            .subscribe(checkpoint)
            .await?
            .ready_chunks(self.options.batch_size.max(1));
        let mut stream = std::pin::pin!(stream);
        let mut batch_no = 0u64;
        loop {
            let chunk = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                chunk = stream.next() => chunk,
            };
            let Some(chunk) = chunk else {
                return Err(crm_log::LogError::Nats("log subscription ended".into()).into());
            };
            let mut events = Vec::with_capacity(chunk.len());
            let mut beyond_target = false;
            for item in chunk {
                let stored = item?;
                if target.is_some_and(|t| stored.sequence > t) {
                    // Never apply past the target: as-of views stop exactly there.
                    beyond_target = true;
                    break;
                }
                if stored.sequence > checkpoint {
                    events.push(stored);
                }
            }
            let Some(last) = events.last().map(|e| e.sequence) else {
                if beyond_target {
                    return Ok(());
                }
                continue;
            };
            batch_no += 1;
            self.commit_batch(&events, last, batch_no).await?;
            checkpoint = last;
            let n = events.len() as u64;
            self.status.send_modify(|s| {
                s.checkpoint = checkpoint;
                s.applied += n;
                s.state = "live".into();
            });
            tracing::debug!(projection = name, checkpoint, events = n, "batch committed");
            if beyond_target || target.is_some_and(|t| checkpoint >= t) {
                return Ok(());
            }
        }
    }

    async fn commit_batch(
        &self,
        events: &[StoredEvent],
        last: u64,
        batch_no: u64,
    ) -> Result<(), ProjectionError> {
        // IMMEDIATE takes SQLite's write lock up front, so concurrent projectors wait on the
        // busy timeout instead of failing when a read transaction tries to upgrade.
        let mut tx = self.store.pool().begin_with("BEGIN IMMEDIATE").await?;
        self.projection.apply_batch(&mut tx, events).await?;
        sqlx::query(
            "INSERT INTO projection_checkpoints (name, last_sequence, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET last_sequence = excluded.last_sequence, \
             updated_at = excluded.updated_at",
        )
        .bind(self.name())
        .bind(i64::try_from(last).unwrap_or(i64::MAX))
        .bind(now_text())
        .execute(&mut *tx)
        .await?;
        if self.options.crash_before_commit_of_batch == Some(batch_no) {
            // Dropping the transaction rolls it back, exactly as a crash would.
            return Err(ProjectionError::InjectedCrash { batch: batch_no });
        }
        tx.commit().await?;
        Ok(())
    }
}

fn now_text() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
