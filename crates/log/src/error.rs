//! Errors of the log boundary.

use thiserror::Error;

/// Everything that can go wrong talking to the log.
#[derive(Debug, Error)]
pub enum LogError {
    /// Optimistic concurrency: someone else appended to this customer first.
    #[error("concurrent append: the customer's last sequence is not {expected}")]
    Conflict { expected: u64 },
    #[error(
        "nats-server {found} is too old: {required} or newer is required (use the pinned server from scripts/setup-nats.sh)"
    )]
    ServerTooOld {
        found: String,
        required: &'static str,
    },
    #[error("stream {stream} is misconfigured: {reason}")]
    StreamMisconfigured { stream: String, reason: String },
    #[error(
        "no stream {stream} on the NATS server: nothing was ever written to this log, or the NATS URL names another server"
    )]
    StreamMissing { stream: String },
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("nats-server process: {0}")]
    Server(String),
    #[error("nats: {0}")]
    Nats(String),
    #[error("undecodable event at stream sequence {sequence}: {reason}")]
    Decode { sequence: u64, reason: String },
    #[error("the event log is immutable: {0}")]
    Immutable(&'static str),
    /// An event that cannot be written as JSON (nothing was published).
    #[error("cannot encode {0}")]
    Encode(String),
    /// A batch of events was cut short: the first `written` are in the log (JetStream
    /// appends one message at a time). After a conflict the rest are not; after another
    /// failure (an ack that never came) the next one may be. Not a conflict: retrying the
    /// whole batch would write its first events twice.
    #[error("only {written} of {of} events were appended before: {cause}")]
    PartialAppend {
        written: u32,
        of: u32,
        cause: String,
    },
}

impl LogError {
    pub(crate) fn nats(e: impl std::fmt::Display) -> Self {
        LogError::Nats(e.to_string())
    }
}
