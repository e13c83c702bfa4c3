//! Any projection, chosen by name: the one place a name becomes a projection.

use std::sync::Arc;

use crm_domain::policy::Policy;
use crm_log::StoredEvent;
use sqlx::AnyConnection;

use crate::audit::AuditProjection;
use crate::cache::StateCache;
use crate::error::ProjectionError;
use crate::health::HealthProjection;
use crate::lifecycle::LifecycleProjection;
use crate::projector::Projection;
use crate::renewals::RenewalsProjection;
use crate::trust::TrustProjection;
use crate::{audit, health, lifecycle, renewals, trust};

/// Every projection's name, in the order `all` runs them.
pub const ALL: [&str; 5] = [
    audit::NAME,
    lifecycle::NAME,
    trust::NAME,
    health::NAME,
    renewals::NAME,
];

/// The projections that price or judge events by the scoring policy, rebuilt together by
/// `scored` after a policy change (one swap, so no live projector ever finds some of
/// them under the new policy and some under the old).
pub const SCORED: [&str; 3] = [lifecycle::NAME, trust::NAME, health::NAME];

/// One of the projections.
#[derive(Debug, Clone)]
pub enum AnyProjection {
    Audit(AuditProjection),
    Lifecycle(LifecycleProjection),
    Trust(TrustProjection),
    Health(HealthProjection),
    Renewals(RenewalsProjection),
}

impl AnyProjection {
    /// The projection called `name`, priced and scored with `policy`.
    pub fn by_name(name: &str, policy: &Arc<Policy>) -> Result<Self, ProjectionError> {
        Ok(match name {
            audit::NAME => Self::Audit(AuditProjection),
            lifecycle::NAME => Self::Lifecycle(LifecycleProjection::new(policy.clone())),
            trust::NAME => Self::Trust(TrustProjection::new(policy.clone())),
            health::NAME => Self::Health(HealthProjection::new(policy.clone())),
            renewals::NAME => Self::Renewals(RenewalsProjection),
            other => return Err(ProjectionError::UnknownProjection(other.to_owned())),
        })
    }

    /// The projections called `name`: every one for `all`, the policy's three for
    /// `scored` ([`SCORED`]).
    pub fn named(name: &str, policy: &Arc<Policy>) -> Result<Vec<Self>, ProjectionError> {
        if name == "all" {
            ALL.iter().map(|n| Self::by_name(n, policy)).collect()
        } else if name == "scored" {
            SCORED.iter().map(|n| Self::by_name(n, policy)).collect()
        } else {
            Ok(vec![Self::by_name(name, policy)?])
        }
    }
}

impl Projection for AnyProjection {
    fn name(&self) -> &'static str {
        match self {
            Self::Audit(p) => p.name(),
            Self::Lifecycle(p) => p.name(),
            Self::Trust(p) => p.name(),
            Self::Health(p) => p.name(),
            Self::Renewals(p) => p.name(),
        }
    }

    fn tables(&self) -> &'static [&'static str] {
        match self {
            Self::Audit(p) => p.tables(),
            Self::Lifecycle(p) => p.tables(),
            Self::Trust(p) => p.tables(),
            Self::Health(p) => p.tables(),
            Self::Renewals(p) => p.tables(),
        }
    }

    fn bulk_indexes(&self) -> &'static [&'static str] {
        match self {
            Self::Audit(p) => p.bulk_indexes(),
            Self::Lifecycle(p) => p.bulk_indexes(),
            Self::Trust(p) => p.bulk_indexes(),
            Self::Health(p) => p.bulk_indexes(),
            Self::Renewals(p) => p.bulk_indexes(),
        }
    }

    fn fingerprint(&self) -> String {
        match self {
            Self::Audit(p) => p.fingerprint(),
            Self::Lifecycle(p) => p.fingerprint(),
            Self::Trust(p) => p.fingerprint(),
            Self::Health(p) => p.fingerprint(),
            Self::Renewals(p) => p.fingerprint(),
        }
    }

    fn policy(&self) -> Option<&crm_domain::policy::Policy> {
        match self {
            Self::Audit(p) => p.policy(),
            Self::Lifecycle(p) => p.policy(),
            Self::Trust(p) => p.policy(),
            Self::Health(p) => p.policy(),
            Self::Renewals(p) => p.policy(),
        }
    }

    fn decodes_events(&self) -> bool {
        match self {
            Self::Audit(p) => p.decodes_events(),
            Self::Lifecycle(p) => p.decodes_events(),
            Self::Trust(p) => p.decodes_events(),
            Self::Health(p) => p.decodes_events(),
            Self::Renewals(p) => p.decodes_events(),
        }
    }

    async fn apply_batch(
        &self,
        tx: &mut AnyConnection,
        events: &[StoredEvent],
        cache: &mut StateCache,
    ) -> Result<(), ProjectionError> {
        match self {
            Self::Audit(p) => p.apply_batch(tx, events, cache).await,
            Self::Lifecycle(p) => p.apply_batch(tx, events, cache).await,
            Self::Trust(p) => p.apply_batch(tx, events, cache).await,
            Self::Health(p) => p.apply_batch(tx, events, cache).await,
            Self::Renewals(p) => p.apply_batch(tx, events, cache).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scored_names_the_policys_views_and_all_every_view() -> Result<(), ProjectionError> {
        let policy = Arc::new(crate::policy::default_policy());
        let names = |n: &str| -> Result<Vec<&'static str>, ProjectionError> {
            Ok(AnyProjection::named(n, &policy)?
                .iter()
                .map(Projection::name)
                .collect())
        };
        assert_eq!(names("scored")?, ["lifecycle", "trust", "health"]);
        assert!(
            AnyProjection::named("scored", &policy)?
                .iter()
                .all(|p| p.policy().is_some())
        );
        assert_eq!(names("all")?, ALL);
        assert_eq!(names("trust")?, ["trust"]);
        assert!(AnyProjection::named("scores", &policy).is_err());
        Ok(())
    }
}
