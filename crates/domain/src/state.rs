//! What the rules need to remember about one customer, and the pure fold that builds it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::Date;

use crate::event::Event;
use crate::types::Severity;

/// The state of a contract inside the aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    pub value_minor: i64,
    pub currency: String,
    pub starts_on: Date,
    pub ends_on: Date,
    pub notice_days: u32,
    pub terminated: bool,
    /// The term end for which the renewal was marked due, if it was.
    pub renewal_due_for: Option<Date>,
}

impl Contract {
    /// A contract is active until it is terminated. Whether its end date has passed is a
    /// question for the views (a lapsed contract), not a reason to refuse commands: history
    /// may be back-filled.
    pub fn is_active(&self) -> bool {
        !self.terminated
    }
}

/// A complaint inside the aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Complaint {
    pub severity: Severity,
    pub open: bool,
}

/// Everything `decide` needs about a customer. Built only by [`CustomerState::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerState {
    pub registered: bool,
    pub name: String,
    /// Number of events applied: the per-customer version (1..n).
    pub version: u64,
    pub contracts: BTreeMap<String, Contract>,
    pub complaints: BTreeMap<String, Complaint>,
    pub orders: BTreeSet<String>,
    /// Services delivered: each is delivered (and paid into the trust account) once.
    #[serde(default)]
    pub delivered_services: BTreeSet<String>,
    /// Requests answered: only the first response counts against the SLA.
    #[serde(default)]
    pub responded_requests: BTreeSet<String>,
    pub churned: bool,
    pub won_back: bool,
    /// The latest day of recorded activity, so an inactivity flag decided on stale views
    /// is refused.
    #[serde(default)]
    pub last_activity_on: Option<Date>,
}

impl CustomerState {
    /// Whether at least one contract is active.
    pub fn has_active_contract(&self) -> bool {
        self.contracts.values().any(Contract::is_active)
    }

    /// Folds one event into the state. Events come from the log and were accepted by
    /// `decide`, so applying never fails; an event that refers to something unknown (which
    /// only a corrupted log could contain) leaves that part of the state as it was.
    pub fn apply(mut self, event: &Event) -> Self {
        self.version += 1;
        match event {
            Event::CustomerRegistered(e) => {
                self.registered = true;
                self.name = e.name.clone();
            }
            Event::ContractSigned(e) => {
                if self.churned {
                    self.churned = false;
                    self.won_back = true;
                }
                self.contracts.insert(
                    e.contract_id.clone(),
                    Contract {
                        value_minor: e.value_minor,
                        currency: e.currency.clone(),
                        starts_on: e.starts_on,
                        ends_on: e.ends_on,
                        notice_days: e.notice_days,
                        terminated: false,
                        renewal_due_for: None,
                    },
                );
            }
            Event::ComplaintLogged(e) => {
                self.complaints.insert(
                    e.complaint_id.clone(),
                    Complaint {
                        severity: e.severity,
                        open: true,
                    },
                );
            }
            Event::ComplaintResolved(e) => {
                if let Some(c) = self.complaints.get_mut(&e.complaint_id) {
                    c.open = false;
                }
            }
            Event::PurchaseRecorded(e) => {
                self.orders.insert(e.order_id.clone());
            }
            Event::ActivityRecorded(e) => {
                self.last_activity_on = Some(self.last_activity_on.map_or(e.day, |d| d.max(e.day)));
            }
            Event::RenewalMarkedDue(e) => {
                if let Some(c) = self.contracts.get_mut(&e.contract_id) {
                    c.renewal_due_for = Some(e.term_ends_on);
                }
            }
            Event::ContractRenewed(e) => {
                if let Some(c) = self.contracts.get_mut(&e.contract_id) {
                    c.ends_on = e.new_ends_on;
                    if let Some(v) = e.value_minor {
                        c.value_minor = v;
                    }
                }
            }
            Event::ContractExpanded(e) => {
                if let Some(c) = self.contracts.get_mut(&e.contract_id) {
                    c.value_minor = c.value_minor.saturating_add(e.added_value_minor);
                }
            }
            Event::ContractTerminated(e) => {
                if let Some(c) = self.contracts.get_mut(&e.contract_id) {
                    c.terminated = true;
                }
                if !self.has_active_contract() {
                    self.churned = true;
                }
            }
            Event::ServiceDelivered(e) => {
                self.delivered_services.insert(e.service_id.clone());
            }
            Event::RequestResponded(e) => {
                self.responded_requests.insert(e.request_id.clone());
            }
            Event::ServiceDelayed(_)
            | Event::ValueAddDelivered(_)
            | Event::CareTouchRecorded(_)
            | Event::SurveyAnswered(_)
            | Event::KeyContactChanged(_)
            | Event::InactivityFlagged(_)
            | Event::InterventionLogged(_) => {}
        }
        self
    }
}
