//! Errors of the projections boundary.

use thiserror::Error;

/// What can stop a projector or a query.
#[derive(Debug, Error)]
pub enum ProjectionError {
    #[error("read store: {0}")]
    Db(#[from] sqlx::Error),
    #[error("read store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Log(#[from] crm_log::LogError),
    #[error("corrupt projection state for {customer}: {reason}")]
    CorruptState { customer: String, reason: String },
    #[error("unknown projection {0:?}")]
    UnknownProjection(String),
    #[error("partition {partition} is now held by another projector (fence {fence} is stale)")]
    LeaseLost { partition: u32, fence: u64 },
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("the rebuild could not catch up under the write lock in {attempts} attempts")]
    SwapTimedOut { attempts: usize },
    #[error("a rebuild into this read store is already running (lock {lock})")]
    RebuildRunning { lock: String },
    #[error("the rebuild's shadow stopped at {at}, behind the live checkpoint {live}")]
    ShadowBehind { at: u64, live: u64 },
    #[error(
        "{0:?} is not a usable PostgreSQL schema name (lower-case letters, digits and _, not starting with a digit, at most 63)"
    )]
    BadSchema(String),
    #[error(
        "no event arrived for a while at checkpoint {checkpoint} while the log head is {head}; resubscribing"
    )]
    Stalled { checkpoint: u64, head: u64 },
    #[error(
        "the read store holds {projection} as of sequence {checkpoint}, past the log's head {head}: it was built from another log (a stream made again, an older backup, another server); start this log's views in a fresh store (remove the SQLite file, or use a new PostgreSQL schema)"
    )]
    AheadOfLog {
        projection: String,
        checkpoint: u64,
        head: u64,
    },
    #[error(
        "the {projection} views were built from another event log (its first event is {recorded}; this log's is {found}): following this log from their checkpoint would mix the two. Rebuild them from this log (`crm replay {projection}`), or point the projector at the log they came from"
    )]
    OtherLog {
        projection: String,
        recorded: String,
        found: String,
    },
    #[error(
        "the {projection} views were folded under policy {views:?} and this projector runs policy {projector:?} (if the labels read alike, the rules differ): folding new events under it on top of them would mix the two. Start it with the policy the views were built under, or rebuild them under its policy (`crm replay {projection}`) and start it again"
    )]
    PolicyMismatch {
        projection: String,
        views: String,
        projector: String,
    },
    #[error(
        "the log has no event at sequence {sequence}, which the audit index or the log's head says it holds: the stream was restored shorter than the read store, or edited"
    )]
    MissingEvent { sequence: u64 },
    #[error("crash injected before commit of batch {batch}")]
    InjectedCrash { batch: u64 },
    #[error("sequence {at} is past the log's head {head}: that point in time has not happened")]
    AsOfPastHead { at: u64, head: u64 },
    #[error(
        "the target already holds {projection} as of sequence {checkpoint}, later than {at}: choose a new target"
    )]
    AsOfTargetAhead {
        projection: String,
        checkpoint: u64,
        at: u64,
    },
}

impl ProjectionError {
    /// A store that could not be reached in time: what the API documents as
    /// `read_store_unavailable`.
    pub fn store_unavailable() -> Self {
        ProjectionError::Db(sqlx::Error::PoolTimedOut)
    }

    /// The read store could not be reached or was too busy to answer in time: the caller
    /// may retry. Anything else (a bad query, corrupt data) is not transient.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ProjectionError::Db(
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            )
        )
    }
}
