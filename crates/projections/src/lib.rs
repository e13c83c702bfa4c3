//! Projector services: they consume the event log and keep SQL read models.
//!
//! - [`store`] opens the read store (SQLite, one file in the data dir) and migrates it.
//! - [`projector`] is the generic runner: read the log in large batches from the
//!   checkpoint, let a [`Projection`] fold the batch in memory and write each touched row
//!   once, and commit the rows together with the new checkpoint in one transaction, so a
//!   crash at any point neither loses nor double-applies an event.
//! - [`rebuild`] replays a projection into a shadow copy and swaps it in atomically, and
//!   builds views as of a past position.
//! - [`status`] is what ops see per projection: checkpoint, lag, apply rate, state.
//! - [`lifecycle`], [`trust`], [`health`] and [`renewals`] are the projections, each with
//!   its queries; [`audit`] indexes the log for auditors; [`policy`] loads the scoring policy file they price and score with.

pub mod any;
pub mod audit;
pub mod cache;
pub mod error;
pub mod health;
pub mod lifecycle;
mod origin;
pub mod policy;
pub mod projector;
pub mod rebuild;
pub mod renewals;
mod sql;
pub mod status;
pub mod store;
pub mod trust;

pub use any::AnyProjection;
pub use error::ProjectionError;
pub use projector::{Projection, Projector, ProjectorOptions, ProjectorStatus};
pub use store::ReadStore;
