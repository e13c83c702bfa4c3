//! The scheduler: the passing of time enters the log only through commands.
//!
//! On each tick it reads the views for contracts whose renewal window has opened, for
//! contracts whose term ended without a renewal, and for customers without activity for
//! the policy's `no_activity_days` (30), and sends `mark_renewal_due`, `terminate_contract`
//! (naming the lapsed term, so a renewal that came in meanwhile refuses it) and
//! `flag_inactivity` through the normal command path. Every command carries a
//! deterministic idempotency key (`renewal-due:<contract>:<term end>`,
//! `lapsed:<contract>:<term end>`, `inactivity:<reference day>`, with `:<days>` after it
//! for a threshold other than 30), so a restart, a lagging view or two schedulers ticking
//! at once never produce a duplicate.
//! The clock is injectable so tests can move time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crm_domain::command::{FlagInactivity, MarkRenewalDue, TerminateContract};
use crm_domain::{Command, CustomerId, DomainError};
use crm_log::{Customers, LogError, Metadata, SubmitError, SubmitOptions};
use crm_projections::{ProjectionError, ReadStore, health, renewals};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// Where the scheduler gets "now" from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to (tests, simulations).
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    /// A clock stopped at `at`.
    pub fn new(at: OffsetDateTime) -> Self {
        Self(Mutex::new(at))
    }

    /// Moves the clock to `at`.
    pub fn set(&self, at: OffsetDateTime) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: time::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Days without activity after which a customer is flagged, unless the scheduler is told
/// the policy's own ([`Scheduler::flag_inactivity_after`]).
pub const INACTIVITY_DAYS: i64 = 30;

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    pub renewals_marked_due: u32,
    /// Contracts ended because their term passed without a renewal.
    pub contracts_lapsed: u32,
    /// Lapsed terms left for a later tick because their customer's history was still
    /// being written ([`Scheduler::lapse_when_quiet_for`]).
    pub lapses_deferred: u32,
    pub inactivity_flagged: u32,
    /// Commands that were already recorded (replayed keys) or no longer apply.
    pub skipped: u32,
    /// Commands that failed for their customer alone (a rejection the view did not
    /// foresee, an idempotency key another command used, an undecodable history, writers
    /// that kept winning): each logged as a warning and passed over, so one customer
    /// cannot hold up the rest. The next tick sends them again (and a failure that
    /// lasts is logged again on every tick).
    pub failed: u32,
}

/// Why a tick failed.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Views(#[from] ProjectionError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// The scheduler.
#[derive(Debug, Clone)]
pub struct Scheduler {
    customers: Arc<Customers>,
    store: ReadStore,
    clock: Arc<dyn Clock>,
    inactivity_days: i64,
    lapse_grace_days: i64,
    lapse_quiet: time::Duration,
}

/// How long a customer's log must have been quiet (in recorded time) before the scheduler
/// ends one of its contracts as lapsed, by default.
pub const LAPSE_QUIET: time::Duration = time::Duration::minutes(10);

enum Outcome {
    Written,
    Skipped,
    Failed,
}

/// Whether a failed command says something about its customer only, rather than about
/// the log as a whole (unreachable, misconfigured), which every later command would
/// meet too.
fn customer_only(e: &SubmitError) -> bool {
    match e {
        SubmitError::Rejected(_)
        | SubmitError::VersionConflict { .. }
        | SubmitError::Contention { .. }
        | SubmitError::IdempotencyKeyReused { .. } => true,
        SubmitError::Log(log) => matches!(log, LogError::Decode { .. } | LogError::Conflict { .. }),
    }
}

/// A renewals row's customer and the end of its current term (`None` for a row the view
/// could not have written: such a row is passed over).
fn customer_and_term(row: &renewals::RenewalView) -> Option<(CustomerId, time::Date)> {
    let id = CustomerId::parse(&row.customer_id).ok()?;
    let term = time::Date::parse(
        &row.ends_on,
        &time::format_description::well_known::Iso8601::DATE,
    )
    .ok()?;
    Some((id, term))
}

impl Scheduler {
    /// A scheduler over the command path and the views.
    pub fn new(customers: Arc<Customers>, store: ReadStore, clock: Arc<dyn Clock>) -> Self {
        Self {
            customers,
            store,
            clock,
            inactivity_days: INACTIVITY_DAYS,
            lapse_grace_days: 0,
            lapse_quiet: LAPSE_QUIET,
        }
    }

    /// Ends a contract as lapsed only once nothing has been recorded for its customer for
    /// `quiet` ([`LAPSE_QUIET`] by default). History being back-filled (an import, `crm
    /// demo`) arrives in business-time order: a contract signed years ago shows an ended,
    /// unrenewed term until its renewal, a few commands later, is written, and ending it
    /// in between would churn the customer and refuse the rest of the import.
    pub fn lapse_when_quiet_for(mut self, quiet: std::time::Duration) -> Self {
        self.lapse_quiet = time::Duration::try_from(quiet).unwrap_or(LAPSE_QUIET);
        self
    }

    /// Ends an unrenewed contract as lapsed only once `grace_days` have passed after its
    /// term's last day (by default as soon as that day has ended in every time zone: from
    /// 12:00 UTC the day after it).
    pub fn lapse_after(mut self, grace_days: u32) -> Self {
        self.lapse_grace_days = i64::from(grace_days);
        self
    }

    /// Flags a customer once `days` have passed without activity: the policy's
    /// `health.no_activity_days`, so the flag is one the health rule counts (the views
    /// ignore a shorter one).
    pub fn flag_inactivity_after(mut self, days: u32) -> Self {
        self.inactivity_days = i64::from(days.max(1));
        self
    }

    async fn send(
        &self,
        id: CustomerId,
        command: Command,
        key: String,
    ) -> Result<Outcome, SubmitError> {
        let opts = SubmitOptions {
            occurred_at: Some(self.clock.now()),
            now: OffsetDateTime::now_utc(),
            expected_version: None,
            meta: Metadata {
                actor: "scheduler".into(),
                idempotency_key: Some(key),
                ..Metadata::default()
            },
        };
        match self.customers.submit(id, &command, &opts).await {
            Ok(s) if s.replayed => Ok(Outcome::Skipped),
            Ok(_) => Ok(Outcome::Written),
            // The key names the piece of work (this term's renewal, this stretch of
            // inactivity): used for this command already, by an earlier tick at another
            // time, means done. Used for another command, it is not ours: a failure.
            Err(SubmitError::IdempotencyKeyReused { original_type })
                if original_type == command.event_type() =>
            {
                Ok(Outcome::Skipped)
            }
            // The view was behind the log: the work is already done or no longer applies.
            Err(SubmitError::Rejected(
                DomainError::RenewalAlreadyMarked { .. }
                | DomainError::TermMismatch { .. }
                | DomainError::ContractNotActive(_)
                | DomainError::ContractNotFound(_)
                | DomainError::CustomerChurned
                | DomainError::RenewalNotDue { .. }
                | DomainError::RecentlyActive { .. },
            )) => Ok(Outcome::Skipped),
            Err(e) if customer_only(&e) => {
                tracing::warn!(
                    customer = %id,
                    command = command.command_type(),
                    error = %e,
                    "scheduler: command failed for this customer; passing over it"
                );
                Ok(Outcome::Failed)
            }
            Err(e) => Err(e),
        }
    }

    /// One pass over the views. A command that fails for its customer alone is counted in
    /// [`TickReport::failed`] and the pass goes on; one that fails for the log as a whole
    /// ends the pass with the error.
    pub async fn tick(&self) -> Result<TickReport, SchedulerError> {
        // Business days are UTC days (the command path stores `occurred_at` in UTC).
        let now = self.clock.now().to_offset(time::UtcOffset::UTC);
        let today = now.date();
        let mut report = TickReport::default();
        for due in renewals::entering_notice_window(&self.store, today).await? {
            let Some((id, term)) = customer_and_term(&due) else {
                continue;
            };
            let key = format!("renewal-due:{}:{}", due.contract_id, due.ends_on);
            let cmd = Command::MarkRenewalDue(MarkRenewalDue {
                contract_id: due.contract_id.clone(),
                term_ends_on: term,
            });
            match self.send(id, cmd, key).await? {
                Outcome::Written => report.renewals_marked_due += 1,
                Outcome::Skipped => report.skipped += 1,
                Outcome::Failed => report.failed += 1,
            }
        }
        // A term that ended without a renewal: the contract lapsed, and with its
        // customer's last contract the customer churns. A contract's dates are calendar
        // days of whoever signed it, so its last day has ended once it has ended in every
        // time zone: once the date at UTC-12 is past it (at 12:00 UTC the next day, not at
        // midnight UTC while it is still the evening of that day in the Americas).
        let ended_everywhere = (now - time::Duration::hours(12)).date();
        let lapse_before =
            crm_domain::calendar::days_before(ended_everywhere, self.lapse_grace_days);
        for lapsed in renewals::lapsed_unended(&self.store, lapse_before).await? {
            let Some((id, term)) = customer_and_term(&lapsed) else {
                continue;
            };
            // Recorded time, not the business clock: is the customer's history still
            // being written?
            if self.lapse_quiet > time::Duration::ZERO {
                let last = match self.customers.log().last_event(&id).await {
                    Ok(last) => last,
                    // This customer's last event does not decode: a failure for it alone.
                    Err(e @ LogError::Decode { .. }) => {
                        tracing::warn!(customer = %id, error = %e, "scheduler: cannot read the customer's last event; passing over it");
                        report.failed += 1;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let quiet_since = OffsetDateTime::now_utc()
                    .checked_sub(self.lapse_quiet)
                    .unwrap_or(time::PrimitiveDateTime::MIN.assume_utc());
                if last.is_some_and(|last| last.envelope.recorded_at > quiet_since) {
                    report.lapses_deferred += 1;
                    continue;
                }
            }
            let key = format!("lapsed:{}:{}", lapsed.contract_id, lapsed.ends_on);
            let cmd = Command::TerminateContract(TerminateContract {
                contract_id: lapsed.contract_id.clone(),
                reason: Some(format!(
                    "lapsed: the term ended on {} without a renewal",
                    lapsed.ends_on
                )),
                term_ends_on: Some(term),
            });
            match self.send(id, cmd, key).await? {
                Outcome::Written => report.contracts_lapsed += 1,
                Outcome::Skipped => report.skipped += 1,
                Outcome::Failed => report.failed += 1,
            }
        }
        let cutoff = crm_domain::calendar::days_before(today, self.inactivity_days);
        for c in health::inactivity_candidates(&self.store, cutoff).await? {
            let days = (today - c.activity_reference).whole_days();
            // The threshold is part of the key: a flag sent under another threshold (a
            // policy changed since) does not make this one a replay of it.
            let key = if self.inactivity_days == INACTIVITY_DAYS {
                format!("inactivity:{}", c.activity_reference)
            } else {
                format!(
                    "inactivity:{}:{}",
                    c.activity_reference, self.inactivity_days
                )
            };
            let cmd = Command::FlagInactivity(FlagInactivity {
                days_inactive: u32::try_from(days).unwrap_or(u32::MAX),
                last_activity_on: Some(c.activity_reference),
            });
            match self.send(c.customer_id, cmd, key).await? {
                Outcome::Written => report.inactivity_flagged += 1,
                Outcome::Skipped => report.skipped += 1,
                Outcome::Failed => report.failed += 1,
            }
        }
        Ok(report)
    }

    /// Ticks every `interval` until `shutdown`. A failed tick is logged and retried on the
    /// next one.
    pub async fn run(&self, interval: Duration, shutdown: CancellationToken) {
        let mut timer = tokio::time::interval(interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = timer.tick() => {}
            }
            // A pass can be long (every due contract and inactive customer, one command
            // each): stop in the middle of it rather than hold up a shutdown. What was not
            // sent is sent on the next start, and what was sent replays as done.
            let tick = tokio::select! {
                _ = shutdown.cancelled() => return,
                tick = self.tick() => tick,
            };
            match tick {
                Ok(r)
                    if r.renewals_marked_due
                        + r.contracts_lapsed
                        + r.inactivity_flagged
                        + r.failed
                        > 0 =>
                {
                    tracing::info!(
                        renewals_marked_due = r.renewals_marked_due,
                        contracts_lapsed = r.contracts_lapsed,
                        inactivity_flagged = r.inactivity_flagged,
                        failed = r.failed,
                        "scheduler tick"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "scheduler tick failed"),
            }
        }
    }
}
