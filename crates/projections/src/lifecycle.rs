//! The lifecycle-stage projection: stage, since, won-back flag and transition history per
//! customer, plus counts per stage.

use std::collections::BTreeMap;
use std::sync::Arc;

use crm_domain::CustomerId;
use crm_domain::lifecycle::{Lifecycle, Stage, Transition};
use crm_domain::policy::Policy;
use crm_log::StoredEvent;
use serde::Serialize;
use sqlx::AnyConnection;

use crate::cache::StateCache;
use crate::error::ProjectionError;
use crate::projector::Projection;
use crate::sql::{Sql, i64_of, rfc3339, touched};
use crate::store::ReadStore;

/// The projection's name.
pub const NAME: &str = "lifecycle";
/// Rows per multi-row statement (8 bound values each, well under SQLite's limit).
const ROWS_PER_STATEMENT: usize = 500;

/// The lifecycle projection under one policy: decline while red or with purchases falling,
/// and maturity after 12 months in good health, are judged by the policy's health rules.
#[derive(Debug, Clone)]
pub struct LifecycleProjection {
    policy: Arc<Policy>,
}

impl LifecycleProjection {
    /// Judges health with `policy`.
    pub fn new(policy: Arc<Policy>) -> Self {
        Self { policy }
    }
}

impl Projection for LifecycleProjection {
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
        &["lifecycle_customers", "lifecycle_transitions"]
    }

    async fn apply_batch(
        &self,
        tx: &mut AnyConnection,
        events: &[StoredEvent],
        cache: &mut StateCache,
    ) -> Result<(), ProjectionError> {
        // Every touched customer once: kept from the previous batches, or loaded.
        let (mut states, missing) = cache.take::<(Lifecycle, u64)>(&touched(events));
        for chunk in missing.chunks(ROWS_PER_STATEMENT) {
            let mut q = Sql::new(
                "SELECT customer_id, state, last_sequence FROM lifecycle_customers WHERE customer_id IN ",
            );
            q.list(chunk.iter().map(ToString::to_string));
            let rows: Vec<(String, String, i64)> = q.fetch_all(&mut *tx).await?;
            for (id, state, seq) in rows {
                let corrupt = |reason: String| ProjectionError::CorruptState {
                    customer: id.clone(),
                    reason,
                };
                let cid = CustomerId::parse(&id).map_err(|e| corrupt(e.to_string()))?;
                let lc: Lifecycle =
                    serde_json::from_str(&state).map_err(|e| corrupt(e.to_string()))?;
                states.insert(cid, (lc, u64::try_from(seq).unwrap_or(0)));
            }
        }

        // Fold the batch in memory.
        let mut transitions: Vec<(CustomerId, Transition, u64)> = Vec::new();
        for stored in events {
            let env = &stored.envelope;
            let event = crate::sql::decode(stored)?;
            let (lc, seq) = states.entry(env.customer_id).or_default();
            if let Some(t) = lc.apply(event, env.occurred_at, env.version, &self.policy) {
                transitions.push((env.customer_id, t, stored.sequence));
            }
            *seq = (*seq).max(stored.sequence);
        }

        // Write each touched customer's final state once.
        let rows: Vec<_> = states
            .iter()
            .filter_map(|(id, (lc, seq))| lc.stage.map(|stage| (id, lc, stage, *seq)))
            .collect();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = Sql::new(
                "INSERT INTO lifecycle_customers (customer_id, stage, since, version, last_sequence, won_back, state, policy_version) ",
            );
            q.values(chunk, |b, (id, lc, stage, seq)| {
                b.bind(id.to_string())
                    .bind(stage.as_str())
                    .bind(lc.since.map(rfc3339).unwrap_or_default())
                    .bind(i64_of(lc.version))
                    .bind(i64_of(*seq))
                    .bind(i64::from(lc.won_back))
                    .bind(serde_json::to_string(lc).unwrap_or_default())
                    .bind(self.policy.version.as_str());
            });
            q.push(
                " ON CONFLICT (customer_id) DO UPDATE SET stage = excluded.stage, since = excluded.since, \
                 version = excluded.version, last_sequence = excluded.last_sequence, \
                 won_back = excluded.won_back, state = excluded.state, \
                 policy_version = excluded.policy_version",
            );
            q.execute(&mut *tx).await?;
        }
        for chunk in transitions.chunks(ROWS_PER_STATEMENT) {
            let mut q = Sql::insert_once(
                "lifecycle_transitions (customer_id, version, from_stage, to_stage, at, event_type, sequence)",
                "customer_id, version",
            );
            q.values(chunk, |b, (id, t, seq)| {
                b.bind(id.to_string())
                    .bind(i64_of(t.version))
                    .bind(t.from.map(|s| s.as_str()))
                    .bind(t.to.as_str())
                    .bind(rfc3339(t.at))
                    .bind(t.event_type.clone())
                    .bind(i64_of(*seq));
            });
            q.execute(&mut *tx).await?;
        }
        // Only customers with a row (a stage) are kept: one without is loaded as no row.
        states.retain(|_, (lc, _)| lc.stage.is_some());
        cache.keep(states);
        Ok(())
    }
}

/// A customer's lifecycle as the view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LifecycleView {
    pub stage: String,
    pub since: String,
    pub version: u64,
    pub won_back: bool,
    /// The policy the health rules ran under when the projector last wrote this row;
    /// `None` for a row written by a build that did not record it (the customer's next
    /// event or `crm replay lifecycle` fills it in).
    pub policy_version: Option<String>,
    #[serde(skip)]
    pub last_sequence: u64,
}

/// One stage change as the view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransitionView {
    pub from: Option<String>,
    pub to: String,
    pub at: String,
    pub version: u64,
    pub event_type: String,
    pub stream_sequence: u64,
}

/// The lifecycle of one customer, if the projection has seen it.
pub async fn get(
    store: &ReadStore,
    id: &CustomerId,
) -> Result<Option<LifecycleView>, ProjectionError> {
    let row: Option<(String, String, i64, i64, Option<String>, i64)> = sqlx::query_as(
        "SELECT stage, since, version, won_back, policy_version, last_sequence FROM lifecycle_customers WHERE customer_id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(store.pool())
    .await?;
    Ok(row.map(
        |(stage, since, version, won_back, policy_version, seq)| LifecycleView {
            stage,
            since,
            version: u64::try_from(version).unwrap_or(0),
            won_back: won_back != 0,
            policy_version,
            last_sequence: u64::try_from(seq).unwrap_or(0),
        },
    ))
}

/// A customer's stage changes in order, after `after_version`, at most `limit`.
pub async fn history(
    store: &ReadStore,
    id: &CustomerId,
    after_version: u64,
    limit: u32,
) -> Result<Vec<TransitionView>, ProjectionError> {
    let rows: Vec<(Option<String>, String, String, i64, String, i64)> = sqlx::query_as(
        "SELECT from_stage, to_stage, at, version, event_type, sequence FROM lifecycle_transitions \
         WHERE customer_id = $1 AND version > $2 ORDER BY version LIMIT $3",
    )
    .bind(id.to_string())
    .bind(i64_of(after_version))
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(from, to, at, version, event_type, seq)| TransitionView {
            from,
            to,
            at,
            version: u64::try_from(version).unwrap_or(0),
            event_type,
            stream_sequence: u64::try_from(seq).unwrap_or(0),
        })
        .collect())
}

/// Customers per stage; every stage is present, zero when empty.
pub async fn stage_counts(store: &ReadStore) -> Result<BTreeMap<String, u64>, ProjectionError> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT stage, COUNT(*) FROM lifecycle_customers GROUP BY stage")
            .fetch_all(store.pool())
            .await?;
    let mut counts: BTreeMap<String, u64> = Stage::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for (stage, n) in rows {
        counts.insert(stage, u64::try_from(n).unwrap_or(0));
    }
    Ok(counts)
}

/// A row of the view as [`dump`] returns it: customer, stage, since, version, won back,
/// state, policy version.
pub type DumpRow = (String, String, String, i64, i64, String, Option<String>);

/// Every row of the view, for comparing two copies (tests, rebuild checks).
pub async fn dump(store: &ReadStore) -> Result<Vec<DumpRow>, ProjectionError> {
    Ok(sqlx::query_as(
        "SELECT customer_id, stage, since, version, won_back, state, policy_version FROM lifecycle_customers ORDER BY customer_id",
    )
    .fetch_all(store.pool())
    .await?)
}

/// Every transition, for comparing two copies.
pub async fn dump_transitions(
    store: &ReadStore,
) -> Result<Vec<(String, i64, Option<String>, String, String, String, i64)>, ProjectionError> {
    Ok(sqlx::query_as(
        "SELECT customer_id, version, from_stage, to_stage, at, event_type, sequence FROM lifecycle_transitions ORDER BY customer_id, version",
    )
    .fetch_all(store.pool())
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row folded before the lifecycle recorded its policy survives the migration that
    /// adds the column, and reads with no policy version rather than failing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_row_from_before_the_policy_column_reads_without_one() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("old.sqlite");
        sqlx::any::install_default_drivers();
        let old = sqlx::AnyPool::connect(&format!("sqlite://{}?mode=rwc", path.display())).await?;
        sqlx::migrate!("./migrations/sqlite")
            .run_to(8, &old)
            .await?;
        let id = CustomerId::parse("0193a1f0-0000-7000-8000-000000000001")?;
        sqlx::query(
            "INSERT INTO lifecycle_customers (customer_id, stage, since, version, last_sequence, won_back, state) \
             VALUES ($1, 'growth', '2025-01-01T00:00:00Z', 2, 7, 0, '{}')",
        )
        .bind(id.to_string())
        .execute(&old)
        .await?;
        old.close().await;

        let store = ReadStore::open_file(&path).await?;
        let view = get(&store, &id).await?.expect("the old row is still there");
        assert_eq!(
            view,
            LifecycleView {
                stage: "growth".into(),
                since: "2025-01-01T00:00:00Z".into(),
                version: 2,
                won_back: false,
                policy_version: None,
                last_sequence: 7,
            }
        );
        Ok(())
    }
}
