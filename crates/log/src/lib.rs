//! The event log on NATS JetStream, shared by the gateway, the projectors and the tools.
//!
//! - [`server`] starts a pinned `nats-server` as a child process (for `crm dev` and tests).
//! - [`connect`] opens a connection from [`NatsConfig`] and refuses servers older than 2.11.
//! - [`stream`] creates the immutable `CRM_EVENTS` stream or verifies an existing one.
//! - [`subject`] maps a customer to its partitioned subject.
//! - [`envelope`] is the JSON wire form of an event with its hash chain and schema version.
//! - [`log`] is the raw log: conditional appends, per-customer reads, reading everything.
//! - [`read`] reads a range of the log in large pulls, and [`wire`] is the lean connection
//!   it reads on where the configuration allows.
//! - [`repository`] loads customers (through a bounded cache), decides, appends, retries,
//!   and keeps idempotency keys for as long as the log exists.
//! - [`audit`] verifies hash chains and signed checkpoints of the chain heads.
//! - [`lease`] shares the stream's partitions among projector processes through leases in a
//!   NATS KV bucket, with fencing.
//! - [`eventstore`] exposes the log through `eventually`'s `EventStore` trait.

pub mod audit;
pub mod connect;
pub mod envelope;
pub mod error;
pub mod eventstore;
pub mod lease;
pub mod log;
pub mod read;
pub mod repository;
pub mod server;
pub mod stream;
pub mod subject;
pub mod wire;

pub use connect::{NatsConfig, connect};
pub use envelope::{Envelope, Metadata};
pub use error::LogError;
pub use log::{EventLog, StoredEvent};
pub use repository::{Customers, RECENT_KEYS, Receipt, SubmitError, SubmitOptions, Submitted};
pub use stream::StreamSettings;
