//! The health and churn-alert projection: score, colour, reasons and value tier per
//! customer; alerts with their reasons, recommended action, raise/escalate/resolve times and
//! the interventions logged against them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crm_domain::CustomerId;
use crm_domain::health::{Alert, AlertChange, Color, Health};
use crm_domain::policy::Policy;
use crm_log::StoredEvent;
use serde::Serialize;
use serde_json::Value;
use sqlx::AnyConnection;

use crate::cache::StateCache;
use crate::error::ProjectionError;
use crate::projector::Projection;
use crate::sql::{ROWS_PER_STATEMENT, Sql, decode, i64_of, json, rfc3339, touched, u64_of};
use crate::store::ReadStore;

/// The projection's name.
pub const NAME: &str = "health";

/// The health projection under one policy.
#[derive(Debug, Clone)]
pub struct HealthProjection {
    policy: Arc<Policy>,
}

impl HealthProjection {
    /// Scores with `policy`.
    pub fn new(policy: Arc<Policy>) -> Self {
        Self { policy }
    }
}

#[derive(Debug, Clone, Default, serde::Deserialize, Serialize)]
struct Row {
    health: Health,
    last_sequence: u64,
}

impl Projection for HealthProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn policy(&self) -> Option<&crm_domain::policy::Policy> {
        Some(&self.policy)
    }

    fn fingerprint(&self) -> String {
        crate::policy::fingerprint(NAME, &self.policy)
    }

    fn tables(&self) -> &'static [&'static str] {
        &["customer_health", "alerts"]
    }

    async fn apply_batch(
        &self,
        tx: &mut AnyConnection,
        events: &[StoredEvent],
        cache: &mut StateCache,
    ) -> Result<(), ProjectionError> {
        let mut rows: HashMap<CustomerId, Row> = cache
            .take_or_load(tx, "customer_health", &touched(events))
            .await?;
        // Final state of every alert touched in this batch.
        let mut alerts: HashMap<(CustomerId, String), Alert> = HashMap::new();
        for stored in events {
            let env = &stored.envelope;
            let row = rows.entry(env.customer_id).or_default();
            if env.version <= row.health.version {
                continue;
            }
            let event = decode(stored)?;
            row.last_sequence = stored.sequence;
            let change = row
                .health
                .apply(event, env.occurred_at, env.version, &self.policy);
            if let Some(
                AlertChange::Raised(a) | AlertChange::Updated(a) | AlertChange::Resolved(a),
            ) = change
            {
                alerts.insert((env.customer_id, a.alert_id.clone()), a);
            }
        }
        let list: Vec<_> = rows.iter().collect();
        for chunk in list.chunks(ROWS_PER_STATEMENT) {
            let mut q = Sql::new(
                "INSERT INTO customer_health (customer_id, score, color, reasons, tier, version, \
                 last_sequence, policy_version, has_active_contract, activity_reference, \
                 inactivity_flagged_for, state) ",
            );
            q.values(chunk, |b, (id, row)| {
                let h = &row.health;
                let a = match &h.assessment {
                    Some(a) => Cow::Borrowed(a),
                    None => Cow::Owned(h.assess(&self.policy)),
                };
                b.bind(id.to_string())
                    .bind(i64::from(a.score))
                    .bind(a.color.as_str())
                    .bind(json(&a.reasons))
                    .bind(a.tier.as_str())
                    .bind(i64_of(h.version))
                    .bind(i64_of(row.last_sequence))
                    .bind(self.policy.version.clone())
                    .bind(i64::from(!h.active_contracts.is_empty()))
                    .bind(h.activity_reference().map(|d| d.to_string()))
                    .bind(h.inactivity_flagged_for.map(|d| d.to_string()))
                    .bind(json(row));
            });
            q.push(
                " ON CONFLICT (customer_id) DO UPDATE SET score = excluded.score, \
                 color = excluded.color, reasons = excluded.reasons, tier = excluded.tier, \
                 version = excluded.version, last_sequence = excluded.last_sequence, \
                 policy_version = excluded.policy_version, \
                 has_active_contract = excluded.has_active_contract, \
                 activity_reference = excluded.activity_reference, \
                 inactivity_flagged_for = excluded.inactivity_flagged_for, state = excluded.state",
            );
            q.execute(&mut *tx).await?;
        }
        let alerts: Vec<_> = alerts.into_iter().collect();
        for chunk in alerts.chunks(ROWS_PER_STATEMENT) {
            let mut q = Sql::new(
                "INSERT INTO alerts (customer_id, alert_id, status, color, score, reasons, \
                 recommended_action, raised_at, escalated_at, resolved_at, interventions) ",
            );
            q.values(chunk, |b, ((id, alert_id), a)| {
                b.bind(id.to_string())
                    .bind(alert_id.clone())
                    .bind(if a.resolved_at.is_some() {
                        "resolved"
                    } else {
                        "open"
                    })
                    .bind(a.color.as_str())
                    .bind(i64::from(a.score))
                    .bind(json(&a.reasons))
                    .bind(a.color.recommended_action().0)
                    .bind(rfc3339(a.raised_at))
                    .bind(a.escalated_at.map(rfc3339))
                    .bind(a.resolved_at.map(rfc3339))
                    .bind(json(&a.interventions));
            });
            q.push(
                " ON CONFLICT (customer_id, alert_id) DO UPDATE SET status = excluded.status, \
                 color = excluded.color, score = excluded.score, reasons = excluded.reasons, \
                 recommended_action = excluded.recommended_action, \
                 escalated_at = excluded.escalated_at, resolved_at = excluded.resolved_at, \
                 interventions = excluded.interventions",
            );
            q.execute(&mut *tx).await?;
        }
        cache.keep(rows);
        Ok(())
    }
}

/// Health as the customer view shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthView {
    pub color: String,
    pub score: u32,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crm_domain::health::Reason>))]
    pub reasons: Value,
    pub tier: String,
    pub policy_version: String,
    #[serde(skip)]
    pub version: u64,
}

/// The health of one customer.
pub async fn get(
    store: &ReadStore,
    id: &CustomerId,
) -> Result<Option<HealthView>, ProjectionError> {
    let row: Option<(String, i64, String, String, String, i64)> = sqlx::query_as(
        "SELECT color, score, reasons, tier, policy_version, version FROM customer_health WHERE customer_id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(store.pool())
    .await?;
    Ok(row.map(
        |(color, score, reasons, tier, policy_version, version)| HealthView {
            color,
            score: u32::try_from(score).unwrap_or(0),
            reasons: serde_json::from_str(&reasons).unwrap_or(Value::Null),
            tier,
            policy_version,
            version: u64_of(version),
        },
    ))
}

/// An alert as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertView {
    pub alert_id: String,
    pub customer_id: String,
    pub status: String,
    pub color: String,
    pub score: u32,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crm_domain::health::Reason>))]
    pub reasons: Value,
    /// `{code, message}`: routine quarterly care, a dedicated care plan, or executive escalation.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub recommended_action: Value,
    pub raised_at: String,
    pub escalated_at: Option<String>,
    pub resolved_at: Option<String>,
    /// Interventions logged against the alert, oldest first.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub interventions: Value,
}

type AlertRow = (
    String,
    String,
    String,
    String,
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
);

fn alert_view(r: AlertRow) -> AlertView {
    let (
        customer_id,
        alert_id,
        status,
        color,
        score,
        reasons,
        raised_at,
        escalated_at,
        resolved_at,
        interventions,
    ) = r;
    let c = match color.as_str() {
        "red" => Color::Red,
        "yellow" => Color::Yellow,
        _ => Color::Green,
    };
    let (code, message) = c.recommended_action();
    AlertView {
        alert_id,
        customer_id,
        status,
        color,
        score: u32::try_from(score).unwrap_or(0),
        reasons: serde_json::from_str(&reasons).unwrap_or(Value::Null),
        recommended_action: serde_json::json!({ "code": code, "message": message }),
        raised_at,
        escalated_at,
        resolved_at,
        interventions: serde_json::from_str(&interventions).unwrap_or(Value::Null),
    }
}

const ALERT_COLUMNS: &str = "customer_id, alert_id, status, color, score, reasons, raised_at, \
                             escalated_at, resolved_at, interventions";

/// Open alerts, optionally of one colour, in (customer, alert) order and paged by it.
pub async fn open_alerts(
    store: &ReadStore,
    color: Option<&str>,
    after: Option<(String, String)>,
    limit: u32,
) -> Result<Vec<AlertView>, ProjectionError> {
    let mut q = Sql::new(format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE status = 'open'"
    ));
    if let Some(c) = color {
        q.push(" AND color = ").bind(c.to_owned());
    }
    if let Some((customer, alert)) = after {
        q.push(" AND (customer_id, alert_id) > (")
            .bind(customer)
            .push(", ")
            .bind(alert)
            .push(")");
    }
    q.push(" ORDER BY customer_id, alert_id LIMIT ")
        .bind(i64::from(limit));
    let rows: Vec<AlertRow> = q.fetch_all_from(store).await?;
    Ok(rows.into_iter().map(alert_view).collect())
}

/// Every alert of one customer (open and resolved), oldest first: in the order they were
/// raised, which is the order of the versions that raised them (`alert-<version>`; an
/// alert's `raised_at` is the latest business time seen, which never goes back). Sorted
/// here, by number: neither the ids (`alert-11` before `alert-9`) nor the RFC 3339 texts
/// (`…:00.5Z` before `…:00Z`) sort as text in that order.
pub async fn customer_alerts(
    store: &ReadStore,
    id: &CustomerId,
) -> Result<Vec<AlertView>, ProjectionError> {
    let mut q = Sql::new(format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE customer_id = "
    ));
    q.bind(id.to_string());
    let rows: Vec<AlertRow> = q.fetch_all_from(store).await?;
    let mut alerts: Vec<AlertView> = rows.into_iter().map(alert_view).collect();
    alerts.sort_by_key(|a| {
        let raised_by = a
            .alert_id
            .strip_prefix("alert-")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        (raised_by, a.alert_id.clone())
    });
    Ok(alerts)
}

/// A customer the scheduler may need to flag as inactive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InactivityCandidate {
    pub customer_id: CustomerId,
    pub activity_reference: time::Date,
    pub flagged_for: Option<time::Date>,
}

/// Customers with an active contract whose last activity (or registration) is on or before
/// `cutoff` and who have not been flagged for that activity reference yet.
pub async fn inactivity_candidates(
    store: &ReadStore,
    cutoff: time::Date,
) -> Result<Vec<InactivityCandidate>, ProjectionError> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT customer_id, activity_reference, inactivity_flagged_for FROM customer_health \
         WHERE has_active_contract = 1 AND activity_reference IS NOT NULL AND activity_reference <= $1 \
         AND (inactivity_flagged_for IS NULL OR inactivity_flagged_for <> activity_reference)",
    )
    .bind(cutoff.to_string())
    .fetch_all(store.pool())
    .await?;
    let date =
        |s: &str| time::Date::parse(s, &time::format_description::well_known::Iso8601::DATE).ok();
    Ok(rows
        .into_iter()
        .filter_map(|(id, reference, flagged)| {
            Some(InactivityCandidate {
                customer_id: CustomerId::parse(&id).ok()?,
                activity_reference: date(&reference)?,
                flagged_for: flagged.as_deref().and_then(date),
            })
        })
        .collect())
}

/// Every health row, for comparing copies.
pub async fn dump(
    store: &ReadStore,
) -> Result<Vec<(String, i64, String, String, String, i64)>, ProjectionError> {
    Ok(sqlx::query_as(
        "SELECT customer_id, score, color, reasons, tier, version FROM customer_health ORDER BY customer_id",
    )
    .fetch_all(store.pool())
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A customer's alerts come in the order they were raised (the raising version), even
    /// where their ids or their times do not sort that way as text: `alert-11` after
    /// `alert-9` at the same time, and a time with a fraction after one without.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_customers_alerts_come_in_the_order_they_were_raised() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = ReadStore::open_file(&dir.path().join("alerts.sqlite")).await?;
        let id = CustomerId::parse("0193a1f0-0000-7000-8000-000000000002")?;
        for (alert, raised_at) in [
            ("alert-11", "2025-03-01T10:00:01Z"),
            ("alert-9", "2025-03-01T10:00:00.500Z"),
            ("alert-10", "2025-03-01T10:00:01Z"),
            ("alert-3", "2025-03-01T10:00:00Z"),
        ] {
            sqlx::query(
                "INSERT INTO alerts (customer_id, alert_id, status, color, score, reasons, \
                 recommended_action, raised_at, interventions) \
                 VALUES ($1, $2, 'resolved', 'yellow', 55, '[]', 'care_plan', $3, '[]')",
            )
            .bind(id.to_string())
            .bind(alert)
            .bind(raised_at)
            .execute(store.pool())
            .await?;
        }
        let order: Vec<String> = customer_alerts(&store, &id)
            .await?
            .into_iter()
            .map(|a| a.alert_id)
            .collect();
        assert_eq!(order, ["alert-3", "alert-9", "alert-10", "alert-11"]);
        Ok(())
    }
}
