//! The customer-lifecycle domain, free of I/O.
//!
//! A [`Customer`](aggregate::Customer) is the one aggregate. Internal services send a
//! [`Command`]; [`decide`](decide::decide) checks it against the customer's
//! [`CustomerState`] and, if the rules allow, returns exactly one [`Event`].
//! [`CustomerState::apply`] folds events back into state. Both are pure functions: time is
//! passed in, nothing here touches the network, a clock or a database.
//!
//! - [`command`] and [`event`] define the wire shapes (snake_case `type` names).
//! - [`state`] holds what the rules need to remember about a customer.
//! - [`decide`] holds the invariants, one function per command family.
//! - [`aggregate`] plugs the pure functions into `eventually`'s `Aggregate` trait.
//! - [`lifecycle`] is the pure stage model the lifecycle projection folds.
//! - [`policy`], [`trust`] and [`health`] price events into the trust account, score
//!   health, raise churn alerts and cut value tiers, all from business time.

pub mod aggregate;
pub mod calendar;
pub mod command;
pub mod decide;
pub mod error;
pub mod event;
pub mod health;
pub mod ids;
pub mod lifecycle;
pub mod policy;
pub mod state;
pub mod trust;
pub mod types;

#[cfg(test)]
mod tests;

pub use aggregate::{Customer, Submission};
pub use command::Command;
pub use decide::{business_time, decide};
pub use error::DomainError;
pub use event::Event;
pub use ids::CustomerId;
pub use state::CustomerState;
