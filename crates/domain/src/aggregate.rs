//! The Customer aggregate, as `eventually`'s [`Aggregate`].
//!
//! The trait is a thin shell over the pure [`decide`] and [`CustomerState::apply`]: the
//! library's contract (load, handle, append with an expected version) becomes the project's,
//! while the functions stay testable on their own.

use eventually_core::aggregate::Aggregate;
use futures::future::BoxFuture;
use time::OffsetDateTime;

use crate::command::Command;
use crate::decide::decide;
use crate::error::DomainError;
use crate::event::Event;
use crate::ids::CustomerId;
use crate::state::CustomerState;

/// A command with the two instants `decide` needs: when it happened in the business, and
/// when it is being recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub command: Command,
    pub occurred_at: OffsetDateTime,
    pub now: OffsetDateTime,
}

/// The Customer aggregate type. Stateless: state lives in [`CustomerState`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Customer;

impl Aggregate for Customer {
    type Id = CustomerId;
    type State = CustomerState;
    type Event = Event;
    type Command = Submission;
    type Error = DomainError;

    fn apply(state: Self::State, event: Self::Event) -> Result<Self::State, Self::Error> {
        Ok(state.apply(&event))
    }

    fn handle<'a, 's: 'a>(
        &'a self,
        _id: &'s Self::Id,
        state: &'s Self::State,
        command: Self::Command,
    ) -> BoxFuture<'a, Result<Option<Vec<Self::Event>>, Self::Error>>
    where
        Self: Sized,
    {
        let result = decide(state, &command.command, command.occurred_at, command.now)
            .map(|event| Some(vec![event]));
        Box::pin(futures::future::ready(result))
    }
}
