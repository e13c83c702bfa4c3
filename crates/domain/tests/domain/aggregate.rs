//! The `eventually` shell around the pure functions.

use crm_domain::aggregate::{Customer, Submission};
use crm_domain::{Command, CustomerId, CustomerState, DomainError, decide};
use eventually_core::aggregate::{Aggregate, AggregateExt, AggregateRootBuilder};
use eventually_core::versioning::Versioned;
use futures::executor::block_on;
use time::Duration;

use crate::harness::*;

fn id() -> CustomerId {
    CustomerId::parse("0196f3a2-7c1e-7d3a-9b2f-3c4d5e6f7a8b").expect("a valid UUID")
}

fn submission(command: Command) -> Submission {
    Submission {
        command,
        occurred_at: AT,
        now: NOW,
    }
}

#[test]
fn handle_returns_the_one_event_decide_returns() {
    let state = given(active()).state().clone();
    let command = Command::ExpandContract(expand("c1", 10));
    let handled = block_on(Customer.handle(&id(), &state, submission(command.clone())));
    let decided = decide(&state, &command, AT, NOW).expect("accepted");
    assert_eq!(handled, Ok(Some(vec![decided])));
}

#[test]
fn handle_registers_a_new_customer() {
    let state = CustomerState::default();
    let handled = block_on(Customer.handle(
        &id(),
        &state,
        submission(Command::RegisterCustomer(register("Acme"))),
    ));
    assert_eq!(handled, Ok(Some(vec![registered()])));
}

#[test]
fn handle_refuses_with_the_domain_error() {
    let state = CustomerState::default();
    let handled =
        block_on(Customer.handle(&id(), &state, submission(Command::SignContract(sign("c1")))));
    assert_eq!(handled, Err(DomainError::CustomerNotRegistered));
}

#[test]
fn handle_passes_both_instants_to_decide() {
    let state = CustomerState::default();
    let early = Submission {
        command: Command::RegisterCustomer(register("Acme")),
        occurred_at: NOW + Duration::minutes(6),
        now: NOW,
    };
    let handled = block_on(Customer.handle(&id(), &state, early));
    assert_eq!(handled, Err(DomainError::OccurredInFuture));
}

#[test]
fn apply_and_fold_are_the_pure_fold() {
    let events = with_everything();
    let by_hand = events
        .iter()
        .fold(CustomerState::default(), |s, e| s.apply(e));
    let folded = Customer::fold(CustomerState::default(), events.clone().into_iter())
        .expect("applying never fails");
    assert_eq!(folded, by_hand);
    assert_eq!(folded.version, 3);
    let one = <Customer as Aggregate>::apply(CustomerState::default(), registered())
        .expect("applying never fails");
    assert_eq!(one, CustomerState::default().apply(&registered()));
}

#[test]
fn an_aggregate_root_records_what_it_handled() {
    let mut root = AggregateRootBuilder::from(Customer).build(id());
    assert_eq!(root.id(), &id());
    assert_eq!(root.version(), 0);
    block_on(root.handle(submission(Command::RegisterCustomer(register("Acme")))))
        .expect("register accepted");
    block_on(root.handle(submission(Command::SignContract(sign("c1"))))).expect("sign accepted");
    let refused = block_on(root.handle(submission(Command::SignContract(sign("c1")))))
        .map(|_| ())
        .expect_err("a duplicate contract is refused");
    assert_eq!(refused.code(), "contract_already_exists");
    let expected = Customer::fold(CustomerState::default(), active().into_iter())
        .expect("applying never fails");
    assert_eq!(root.state(), &expected);
    assert_eq!(root.state().version, 2);
}

#[test]
fn customer_ids_are_uuids_in_hyphenated_form() {
    let text = "0196f3a2-7c1e-7d3a-9b2f-3c4d5e6f7a8b";
    let parsed: CustomerId = text.parse().expect("a valid UUID");
    assert_eq!(parsed, id());
    assert_eq!(parsed.to_string(), text);
    // Other notations parse to the same id and print hyphenated.
    let simple = CustomerId::parse("0196F3A27C1E7D3A9B2F3C4D5E6F7A8B").expect("simple form");
    assert_eq!(simple, parsed);
    assert_eq!(simple.to_string(), text);
    assert_eq!(
        serde_json::to_value(parsed).expect("serialises"),
        serde_json::json!(text)
    );
    let back: CustomerId = serde_json::from_value(serde_json::json!(text)).expect("parses");
    assert_eq!(back, parsed);
    assert_eq!(parsed.as_uuid().to_string(), text);
    assert!(CustomerId::parse("not-a-uuid").is_err());
    assert!("".parse::<CustomerId>().is_err());
}
