//! The trust-account projection: balances per tier and in total, and a ledger of every
//! deposit and withdrawal with the event and the policy rule that priced it.

use std::collections::HashMap;
use std::sync::Arc;

use crm_domain::CustomerId;
use crm_domain::policy::Policy;
use crm_domain::trust::{self, Balances};
use crm_log::StoredEvent;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use crate::cache::StateCache;
use crate::error::ProjectionError;
use crate::projector::Projection;
use crate::sql::{ROWS_PER_STATEMENT, Sql, decode, i64_of, json, rfc3339, touched, u64_of};
use crate::store::ReadStore;

/// The projection's name.
pub const NAME: &str = "trust";

/// The trust projection under one policy.
#[derive(Debug, Clone)]
pub struct TrustProjection {
    policy: Arc<Policy>,
}

impl TrustProjection {
    /// Prices events with `policy`.
    pub fn new(policy: Arc<Policy>) -> Self {
        Self { policy }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Account {
    balances: Balances,
    version: u64,
    last_sequence: u64,
}

struct PendingEntry {
    customer: CustomerId,
    sequence: u64,
    entry_no: i64,
    event_id: String,
    event_type: String,
    version: u64,
    occurred_at: String,
    entry: trust::Entry,
}

impl Projection for TrustProjection {
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
        &["trust_accounts", "trust_ledger"]
    }

    async fn apply_batch(
        &self,
        tx: &mut AnyConnection,
        events: &[StoredEvent],
        cache: &mut StateCache,
    ) -> Result<(), ProjectionError> {
        let mut accounts: HashMap<CustomerId, Account> = cache
            .take_or_load(tx, "trust_accounts", &touched(events))
            .await?;
        let mut ledger = Vec::new();
        for stored in events {
            let env = &stored.envelope;
            let account = accounts.entry(env.customer_id).or_default();
            if env.version <= account.version {
                continue;
            }
            account.version = env.version;
            account.last_sequence = stored.sequence;
            let event = decode(stored)?;
            for (i, entry) in trust::price(event, &self.policy.trust)
                .into_iter()
                .enumerate()
            {
                account.balances.add(&entry);
                ledger.push(PendingEntry {
                    customer: env.customer_id,
                    sequence: stored.sequence,
                    entry_no: i as i64,
                    event_id: env.event_id.to_string(),
                    event_type: env.event_type.clone(),
                    version: env.version,
                    occurred_at: rfc3339(env.occurred_at),
                    entry,
                });
            }
        }
        let rows: Vec<_> = accounts.iter().collect();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = Sql::new(
                "INSERT INTO trust_accounts (customer_id, basic, value_added, emotional, balance, \
                 version, last_sequence, policy_version, state) ",
            );
            q.values(chunk, |b, (id, a)| {
                b.bind(id.to_string())
                    .bind(a.balances.basic)
                    .bind(a.balances.value_added)
                    .bind(a.balances.emotional)
                    .bind(a.balances.total())
                    .bind(i64_of(a.version))
                    .bind(i64_of(a.last_sequence))
                    .bind(self.policy.version.clone())
                    .bind(json(a));
            });
            q.push(
                " ON CONFLICT (customer_id) DO UPDATE SET basic = excluded.basic, \
                 value_added = excluded.value_added, emotional = excluded.emotional, \
                 balance = excluded.balance, version = excluded.version, \
                 last_sequence = excluded.last_sequence, policy_version = excluded.policy_version, \
                 state = excluded.state",
            );
            q.execute(&mut *tx).await?;
        }
        // The rows are moved into the statements, not cloned: a batch can price thousands.
        let mut ledger = ledger.into_iter().peekable();
        while ledger.peek().is_some() {
            let mut q = Sql::insert_once(
                "trust_ledger (customer_id, sequence, entry_no, event_id, event_type, \
                 version, occurred_at, tier, points, rule, policy_version)",
                "customer_id, sequence, entry_no",
            );
            q.values(ledger.by_ref().take(ROWS_PER_STATEMENT), |b, r| {
                b.bind(r.customer.to_string())
                    .bind(i64_of(r.sequence))
                    .bind(r.entry_no)
                    .bind(r.event_id)
                    .bind(r.event_type)
                    .bind(i64_of(r.version))
                    .bind(r.occurred_at)
                    .bind(r.entry.tier.as_str())
                    .bind(r.entry.points)
                    .bind(r.entry.rule)
                    .bind(self.policy.version.clone());
            });
            q.execute(&mut *tx).await?;
        }
        cache.keep(accounts);
        Ok(())
    }
}

/// A customer's trust account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrustView {
    pub balance: i64,
    pub basic: i64,
    pub value_added: i64,
    pub emotional: i64,
    pub policy_version: String,
}

/// One ledger line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerLine {
    pub stream_sequence: u64,
    pub event_id: String,
    pub event_type: String,
    pub version: u64,
    pub occurred_at: String,
    pub tier: String,
    pub points: i64,
    pub rule: String,
    pub policy_version: String,
}

type LedgerRow = (
    i64,
    String,
    String,
    i64,
    String,
    String,
    i64,
    String,
    String,
);

/// The account of one customer.
pub async fn get(store: &ReadStore, id: &CustomerId) -> Result<Option<TrustView>, ProjectionError> {
    account(&mut *store.pool().acquire().await?, id).await
}

/// The account and one page of its ledger from one snapshot, so the page
/// is never from a later batch than the balance beside it.
pub async fn account_page(
    store: &ReadStore,
    id: &CustomerId,
    after_sequence: u64,
    limit: u32,
) -> Result<(Option<TrustView>, Vec<LedgerLine>), ProjectionError> {
    let mut tx = store.begin_read().await?;
    let account = account(&mut tx, id).await?;
    let lines = ledger(&mut tx, id, after_sequence, limit).await?;
    tx.commit().await?;
    Ok((account, lines))
}

async fn account(
    conn: &mut AnyConnection,
    id: &CustomerId,
) -> Result<Option<TrustView>, ProjectionError> {
    let row: Option<(i64, i64, i64, i64, String)> = sqlx::query_as(
        "SELECT balance, basic, value_added, emotional, policy_version FROM trust_accounts WHERE customer_id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(
        |(balance, basic, value_added, emotional, policy_version)| TrustView {
            balance,
            basic,
            value_added,
            emotional,
            policy_version,
        },
    ))
}

/// Ledger lines after `after_sequence`, in log order, at most `limit` (and the rest of the
/// last line's event).
async fn ledger(
    conn: &mut AnyConnection,
    id: &CustomerId,
    after_sequence: u64,
    limit: u32,
) -> Result<Vec<LedgerLine>, ProjectionError> {
    // A page ends with a whole event: one event can price several lines (an on-time
    // delivery that also exceeded expectations), and the cursor is the event's sequence,
    // so a page cut between them would lose the rest. The page takes every line up to the
    // event of its `limit`-th line, so it can hold a line or two more than `limit`.
    let rows: Vec<LedgerRow> = sqlx::query_as(
        "SELECT sequence, event_id, event_type, version, occurred_at, tier, points, rule, policy_version \
         FROM trust_ledger WHERE customer_id = $1 AND sequence > $2 \
         AND sequence <= COALESCE((SELECT sequence FROM trust_ledger WHERE customer_id = $3 AND sequence > $4 \
             ORDER BY sequence, entry_no LIMIT 1 OFFSET $5), $6) \
         ORDER BY sequence, entry_no",
    )
    .bind(id.to_string())
    .bind(i64_of(after_sequence))
    .bind(id.to_string())
    .bind(i64_of(after_sequence))
    .bind(i64::from(limit.max(1) - 1))
    .bind(i64::MAX)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                seq,
                event_id,
                event_type,
                version,
                occurred_at,
                tier,
                points,
                rule,
                policy_version,
            )| LedgerLine {
                stream_sequence: u64_of(seq),
                event_id,
                event_type,
                version: u64_of(version),
                occurred_at,
                tier,
                points,
                rule,
                policy_version,
            },
        )
        .collect())
}

/// Every account, for comparing copies and checking ledger sums.
pub async fn dump(
    store: &ReadStore,
) -> Result<Vec<(String, i64, i64, i64, i64, i64)>, ProjectionError> {
    Ok(sqlx::query_as(
        "SELECT customer_id, basic, value_added, emotional, balance, version FROM trust_accounts ORDER BY customer_id",
    )
    .fetch_all(store.pool())
    .await?)
}

/// Ledger sums per customer and tier: (customer, tier, sum).
pub async fn ledger_sums(store: &ReadStore) -> Result<Vec<(String, String, i64)>, ProjectionError> {
    Ok(sqlx::query_as(
        "SELECT customer_id, tier, CAST(SUM(points) AS BIGINT) FROM trust_ledger GROUP BY customer_id, tier ORDER BY customer_id, tier",
    )
    .fetch_all(store.pool())
    .await?)
}
