//! Given/when/then tests of every command, property tests of the fold, and the lifecycle
//! walk. Times are fixed: the domain never reads a clock.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod commands;
mod properties;

use time::OffsetDateTime;
use time::macros::datetime;

use crate::{Command, CustomerState, DomainError, Event, decide};

/// Business time of every `when` unless a test says otherwise.
pub(crate) const AT: OffsetDateTime = datetime!(2025-06-01 12:00 UTC);
/// Recording time.
pub(crate) const NOW: OffsetDateTime = datetime!(2025-06-01 12:00:05 UTC);

/// `given(events).when(command).then_event(...)` / `.then_refused(code)`.
pub(crate) struct Given {
    state: CustomerState,
    at: OffsetDateTime,
    now: OffsetDateTime,
}

pub(crate) fn given(events: impl IntoIterator<Item = Event>) -> Given {
    let state = events
        .into_iter()
        .fold(CustomerState::default(), |s, e| s.apply(&e));
    Given {
        state,
        at: AT,
        now: NOW,
    }
}

pub(crate) struct When {
    state: CustomerState,
    result: Result<Event, DomainError>,
}

impl Given {
    /// Business time of the command; recording follows five seconds later.
    pub(crate) fn at(mut self, at: OffsetDateTime) -> Self {
        self.at = at;
        self.now = at + time::Duration::seconds(5);
        self
    }

    /// A command from a service whose clock runs ahead of the recorder's.
    pub(crate) fn ahead_of_recorder(mut self, at: OffsetDateTime) -> Self {
        self.at = at;
        self
    }

    pub(crate) fn when(self, command: Command) -> When {
        let result = decide(&self.state, &command, self.at, self.now);
        When {
            state: self.state,
            result,
        }
    }
}

impl When {
    pub(crate) fn then_event(self, expected: Event) -> CustomerState {
        match self.result {
            Ok(e) => {
                assert_eq!(e, expected);
                let before = self.state.version;
                let after = self.state.apply(&e);
                assert_eq!(after.version, before + 1);
                after
            }
            Err(err) => panic!("expected {expected:?}, refused with {} ({err})", err.code()),
        }
    }

    pub(crate) fn then_refused(self, code: &str) {
        match self.result {
            Ok(e) => panic!("expected refusal {code}, got {e:?}"),
            Err(err) => {
                assert_eq!(err.code(), code, "{err}");
                // Messages are human sentences, never empty.
                assert!(!err.to_string().is_empty());
            }
        }
    }
}
