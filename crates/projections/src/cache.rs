//! Folded per-customer state a projection keeps between the batches of one projector pass,
//! so a customer touched batch after batch is not loaded and decoded from its `state`
//! column every time.
//!
//! The projector owns one [`StateCache`] per projection and pass, and passes it to
//! [`Projection::apply_batch`](crate::Projection::apply_batch). What a projection keeps in
//! it is the state it has just written in the batch's transaction, so the cache is only
//! right while that transaction and every earlier one committed and nobody else wrote the
//! projection's rows since. The projector therefore:
//! - starts every pass (after any error, a crash-test hook, a shutdown, a resubscription)
//!   with empty caches, so a batch that failed or was dropped before its commit leaves
//!   nothing behind;
//! - empties a projection's cache when its checkpoint row is no longer the one the
//!   projector's own latest commit wrote (a rebuild swapped its tables in, or another
//!   process applies the same projection);
//! - keeps nothing for a partitioned projector (its partitions move between processes).
//!
//! Memory is bounded: at most `capacity` customers per projection; past it, arbitrary
//! entries are dropped (they are loaded again when next touched).

use std::any::Any;
use std::collections::HashMap;

use crm_domain::CustomerId;
use serde::de::DeserializeOwned;
use sqlx::AnyConnection;

use crate::error::ProjectionError;
use crate::sql::load_states;

/// Customers a projection keeps in memory between batches, by default.
pub const DEFAULT_CAPACITY: usize = 20_000;

/// One projection's kept state, whatever its type.
pub struct StateCache {
    capacity: usize,
    slot: Option<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for StateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCache")
            .field("capacity", &self.capacity)
            .field("warm", &self.slot.is_some())
            .finish()
    }
}

impl StateCache {
    /// An empty cache of at most `capacity` customers (0 keeps nothing).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            slot: None,
        }
    }

    /// Forgets everything kept.
    pub fn clear(&mut self) {
        self.slot = None;
    }

    /// Whether anything is kept.
    pub fn is_warm(&self) -> bool {
        self.slot.is_some()
    }

    /// The kept states of type `S` (a projection always keeps one type).
    fn states<S: Send + Sync + 'static>(&mut self) -> &mut HashMap<CustomerId, S> {
        let fresh = || Box::new(HashMap::<CustomerId, S>::new()) as Box<dyn Any + Send + Sync>;
        let slot = self.slot.get_or_insert_with(fresh);
        if !slot.is::<HashMap<CustomerId, S>>() {
            *slot = fresh();
        }
        slot.downcast_mut::<HashMap<CustomerId, S>>()
            .expect("the slot was just made of this type")
    }

    /// The state of every customer in `ids` (sorted, distinct): taken out of the cache
    /// where kept, loaded from the JSON `state` column of `table` otherwise. Customers
    /// with no row are absent from the map.
    pub(crate) async fn take_or_load<S>(
        &mut self,
        tx: &mut AnyConnection,
        table: &'static str,
        ids: &[CustomerId],
    ) -> Result<HashMap<CustomerId, S>, ProjectionError>
    where
        S: DeserializeOwned + Send + Sync + 'static,
    {
        let (mut out, missing) = self.take::<S>(ids);
        if !missing.is_empty() {
            out.extend(load_states::<S>(tx, table, &missing).await?);
        }
        Ok(out)
    }

    /// Takes the kept state of every customer in `ids` out of the cache; returns them and
    /// the customers it did not keep (to be loaded from the store).
    pub(crate) fn take<S: Send + Sync + 'static>(
        &mut self,
        ids: &[CustomerId],
    ) -> (HashMap<CustomerId, S>, Vec<CustomerId>) {
        if self.capacity == 0 {
            return (HashMap::with_capacity(ids.len()), ids.to_vec());
        }
        let kept = self.states::<S>();
        let mut out = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match kept.remove(id) {
                Some(s) => {
                    out.insert(*id, s);
                }
                None => missing.push(*id),
            }
        }
        (out, missing)
    }

    /// Keeps `states`, the state just written for each customer, for the next batch.
    pub(crate) fn keep<S: Send + Sync + 'static>(&mut self, states: HashMap<CustomerId, S>) {
        if self.capacity == 0 {
            return;
        }
        let capacity = self.capacity;
        let kept = self.states::<S>();
        if kept.is_empty() && states.len() <= capacity {
            *kept = states;
            return;
        }
        kept.extend(states);
        if kept.len() > capacity {
            let excess = kept.len() - capacity;
            let victims: Vec<CustomerId> = kept.keys().take(excess).copied().collect();
            for id in victims {
                kept.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> CustomerId {
        CustomerId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02x}"))
            .expect("a valid UUID")
    }

    #[test]
    fn keeps_at_most_its_capacity() {
        let mut cache = StateCache::new(3);
        cache.keep((0..5).map(|n| (id(n), n)).collect::<HashMap<_, _>>());
        assert_eq!(cache.states::<u8>().len(), 3);
        cache.keep((5..7).map(|n| (id(n), n)).collect::<HashMap<_, _>>());
        let kept = cache.states::<u8>();
        assert_eq!(kept.len(), 3);
        assert!(kept.iter().all(|(k, v)| *k == id(*v)));
    }

    #[test]
    fn a_zero_capacity_keeps_nothing_and_clear_forgets() {
        let mut none = StateCache::new(0);
        none.keep(HashMap::from([(id(1), 1u8)]));
        assert!(!none.is_warm());
        let mut some = StateCache::new(10);
        some.keep(HashMap::from([(id(1), 1u8)]));
        assert!(some.is_warm());
        some.clear();
        assert!(!some.is_warm());
    }
}
