//! The renewals projection: every contract with its end date, notice window and status.
//!
//! Stored statuses are `active`, `due` (marked due by the scheduler), `renewed` (in a
//! renewed term), `terminated` and `lapsed` (ended by the scheduler's lapse pass after its
//! term passed without renewal). A contract not ended whose end date has passed is shown as
//! `lapsed` too, and the days left are computed, at query time against the reader's date.

use std::collections::{BTreeMap, HashMap};

use crm_domain::calendar::{days_after, days_before};
use crm_domain::{CustomerId, Event};
use crm_log::StoredEvent;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use time::Date;

use crate::cache::StateCache;
use crate::error::ProjectionError;
use crate::projector::Projection;
use crate::sql::{ROWS_PER_STATEMENT, Sql, decode, i64_of, json, touched};
use crate::store::ReadStore;

/// The projection's name.
pub const NAME: &str = "renewals";

/// The renewals projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenewalsProjection;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Contract {
    starts_on: Date,
    ends_on: Date,
    notice_days: u32,
    status: String,
    value_minor: i64,
    currency: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Customer {
    version: u64,
    last_sequence: u64,
    contracts: BTreeMap<String, Contract>,
}

impl Projection for RenewalsProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn tables(&self) -> &'static [&'static str] {
        &["renewal_customers", "renewals"]
    }

    async fn apply_batch(
        &self,
        tx: &mut AnyConnection,
        events: &[StoredEvent],
        cache: &mut StateCache,
    ) -> Result<(), ProjectionError> {
        let mut customers: HashMap<CustomerId, Customer> = cache
            .take_or_load(tx, "renewal_customers", &touched(events))
            .await?;
        let mut dirty: HashMap<(CustomerId, String), ()> = HashMap::new();
        for stored in events {
            let env = &stored.envelope;
            let c = customers.entry(env.customer_id).or_default();
            if env.version <= c.version {
                continue;
            }
            c.version = env.version;
            c.last_sequence = stored.sequence;
            let event = decode(stored)?;
            let touched_contract = match &event {
                Event::ContractSigned(e) => {
                    c.contracts.insert(
                        e.contract_id.clone(),
                        Contract {
                            starts_on: e.starts_on,
                            ends_on: e.ends_on,
                            notice_days: e.notice_days,
                            status: "active".into(),
                            value_minor: e.value_minor,
                            currency: e.currency.clone(),
                        },
                    );
                    Some(e.contract_id.clone())
                }
                Event::RenewalMarkedDue(e) => c.contracts.get_mut(&e.contract_id).map(|k| {
                    k.status = "due".into();
                    e.contract_id.clone()
                }),
                Event::ContractRenewed(e) => c.contracts.get_mut(&e.contract_id).map(|k| {
                    k.status = "renewed".into();
                    k.ends_on = e.new_ends_on;
                    if let Some(v) = e.value_minor {
                        k.value_minor = v;
                    }
                    e.contract_id.clone()
                }),
                Event::ContractExpanded(e) => c.contracts.get_mut(&e.contract_id).map(|k| {
                    k.value_minor = k.value_minor.saturating_add(e.added_value_minor);
                    e.contract_id.clone()
                }),
                Event::ContractTerminated(e) => c.contracts.get_mut(&e.contract_id).map(|k| {
                    // A lapsed contract stays listed as lapsed (ended without renewal), not
                    // among the terminated ones.
                    k.status = if e.lapsed { "lapsed" } else { "terminated" }.into();
                    e.contract_id.clone()
                }),
                _ => None,
            };
            if let Some(contract) = touched_contract {
                dirty.insert((env.customer_id, contract), ());
            }
        }
        let list: Vec<_> = customers.iter().collect();
        for chunk in list.chunks(ROWS_PER_STATEMENT) {
            let mut q = Sql::new(
                "INSERT INTO renewal_customers (customer_id, version, last_sequence, state) ",
            );
            q.values(chunk, |b, (id, c)| {
                b.bind(id.to_string())
                    .bind(i64_of(c.version))
                    .bind(i64_of(c.last_sequence))
                    .bind(json(c));
            });
            q.push(
                " ON CONFLICT (customer_id) DO UPDATE SET version = excluded.version, \
                 last_sequence = excluded.last_sequence, state = excluded.state",
            );
            q.execute(&mut *tx).await?;
        }
        let rows: Vec<_> = dirty
            .into_keys()
            .filter_map(|(id, contract)| {
                let k = customers.get(&id)?.contracts.get(&contract)?.clone();
                Some((id, contract, k))
            })
            .collect();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = Sql::new(
                "INSERT INTO renewals (customer_id, contract_id, starts_on, ends_on, notice_days, \
                 status, value_minor, currency) ",
            );
            q.values(chunk, |b, (id, contract, k)| {
                b.bind(id.to_string())
                    .bind(contract.clone())
                    .bind(k.starts_on.to_string())
                    .bind(k.ends_on.to_string())
                    .bind(i64::from(k.notice_days))
                    .bind(k.status.clone())
                    .bind(k.value_minor)
                    .bind(k.currency.clone());
            });
            q.push(
                " ON CONFLICT (customer_id, contract_id) DO UPDATE SET starts_on = excluded.starts_on, \
                 ends_on = excluded.ends_on, notice_days = excluded.notice_days, \
                 status = excluded.status, value_minor = excluded.value_minor, \
                 currency = excluded.currency",
            );
            q.execute(&mut *tx).await?;
        }
        cache.keep(customers);
        Ok(())
    }
}

/// A contract as the renewals view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenewalView {
    pub customer_id: String,
    pub contract_id: String,
    pub starts_on: String,
    pub ends_on: String,
    pub notice_days: u32,
    /// The day the renewal window opens (ends_on - notice_days).
    pub notice_from: String,
    pub status: String,
    pub days_left: i64,
    pub value_minor: i64,
    pub currency: String,
}

type RenewalRow = (String, String, String, String, i64, String, i64, String);

fn parse_date(s: &str) -> Option<Date> {
    Date::parse(s, &time::format_description::well_known::Iso8601::DATE).ok()
}

fn view(r: RenewalRow, today: Date) -> Option<RenewalView> {
    let (customer_id, contract_id, starts_on, ends_on, notice_days, status, value_minor, currency) =
        r;
    let end = parse_date(&ends_on)?;
    let notice = u32::try_from(notice_days).unwrap_or(0);
    let status = if status != "terminated" && end < today {
        "lapsed".to_owned()
    } else {
        status
    };
    Some(RenewalView {
        customer_id,
        contract_id,
        starts_on,
        ends_on,
        notice_days: notice,
        notice_from: days_before(end, i64::from(notice)).to_string(),
        status,
        days_left: (end - today).whole_days(),
        value_minor,
        currency,
    })
}

/// Where a page of renewals ends: the last contract's end date, customer and contract.
/// Pages continue after it whatever was renewed, signed or ended meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalCursor {
    pub ends_on: Date,
    pub customer_id: String,
    pub contract_id: String,
}

impl RenewalCursor {
    /// The cursor after `view`.
    pub fn after(view: &RenewalView) -> Self {
        Self {
            ends_on: parse_date(&view.ends_on).unwrap_or(Date::MIN),
            customer_id: view.customer_id.clone(),
            contract_id: view.contract_id.clone(),
        }
    }

    /// Parses `<ends_on>/<customer_id>/<contract_id>` (the contract id may hold `/`).
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.splitn(3, '/');
        let ends_on = parse_date(parts.next()?)?;
        let customer_id = CustomerId::parse(parts.next()?).ok()?.to_string();
        let contract_id = parts.next()?.to_owned();
        Some(Self {
            ends_on,
            customer_id,
            contract_id,
        })
    }
}

impl std::fmt::Display for RenewalCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.ends_on, self.customer_id, self.contract_id
        )
    }
}

/// Contracts not terminated that end within `within_days` after `today`, and, when
/// `include_lapsed`, those that ended within `within_days` before it without renewal
/// (status `lapsed`, negative days left); by end date, then customer and contract, after
/// `after`.
pub async fn upcoming(
    store: &ReadStore,
    today: Date,
    within_days: i64,
    include_lapsed: bool,
    after: Option<&RenewalCursor>,
    limit: u32,
) -> Result<Vec<RenewalView>, ProjectionError> {
    let from = if include_lapsed {
        days_before(today, within_days)
    } else {
        today
    };
    let until = days_after(today, within_days);
    let mut q = Sql::new(
        "SELECT customer_id, contract_id, starts_on, ends_on, notice_days, status, value_minor, currency \
         FROM renewals WHERE status <> 'terminated' AND ends_on >= ",
    );
    q.bind(from.to_string())
        .push(" AND ends_on <= ")
        .bind(until.to_string());
    if let Some(c) = after {
        q.push(" AND (ends_on, customer_id, contract_id) > (")
            .bind(c.ends_on.to_string())
            .push(", ")
            .bind(c.customer_id.clone())
            .push(", ")
            .bind(c.contract_id.clone())
            .push(")");
    }
    q.push(" ORDER BY ends_on, customer_id, contract_id LIMIT ")
        .bind(i64::from(limit));
    let rows: Vec<RenewalRow> = q.fetch_all_from(store).await?;
    Ok(rows.into_iter().filter_map(|r| view(r, today)).collect())
}

/// Contracts whose renewal window is open on `today` and that are not yet marked due: the
/// scheduler's work list.
pub async fn entering_notice_window(
    store: &ReadStore,
    today: Date,
) -> Result<Vec<RenewalView>, ProjectionError> {
    let rows: Vec<RenewalRow> = sqlx::query_as(
        "SELECT customer_id, contract_id, starts_on, ends_on, notice_days, status, value_minor, currency \
         FROM renewals WHERE status IN ('active', 'renewed') ORDER BY ends_on",
    )
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| view(r, today))
        .filter(|v| {
            parse_date(&v.notice_from).is_some_and(|from| from <= today) && v.status != "lapsed"
        })
        .collect())
}

/// Contracts not ended whose term ended before `before` without a renewal: the scheduler's
/// lapse pass ends them (`terminate_contract` naming the term), so a customer whose last
/// contract lapsed churns.
pub async fn lapsed_unended(
    store: &ReadStore,
    before: Date,
) -> Result<Vec<RenewalView>, ProjectionError> {
    let mut q = Sql::new(
        "SELECT customer_id, contract_id, starts_on, ends_on, notice_days, status, value_minor, currency \
         FROM renewals WHERE status IN ('active', 'due', 'renewed') AND ends_on < ",
    );
    q.bind(before.to_string())
        .push(" ORDER BY ends_on, customer_id, contract_id");
    let rows: Vec<RenewalRow> = q.fetch_all_from(store).await?;
    Ok(rows.into_iter().filter_map(|r| view(r, before)).collect())
}

/// Every renewal row, for comparing copies.
pub async fn dump(store: &ReadStore) -> Result<Vec<RenewalRow>, ProjectionError> {
    Ok(sqlx::query_as(
        "SELECT customer_id, contract_id, starts_on, ends_on, notice_days, status, value_minor, currency \
         FROM renewals ORDER BY customer_id, contract_id",
    )
    .fetch_all(store.pool())
    .await?)
}
