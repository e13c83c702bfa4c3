//! Partition leases in a NATS KV bucket, so several projector processes share the stream's
//! partitions with each partition applied by exactly one of them at a time.
//!
//! - Every member renews a `members.<owner>` key each tick; the bucket's `max_age` is the
//!   lease time, so the keys of a process that died vanish on their own.
//! - A partition `pp` is held through the key `p.<pp>`: taken with a create (fails if
//!   someone holds it), renewed with an update on the revision last written (fails if
//!   someone else took it meanwhile), given back with a delete.
//! - Each member aims at its fair share: `partitions / members`, one more for the first
//!   `partitions % members` members by name, so the shares add up to the partitions. It
//!   gives back any surplus and takes free partitions up to its share, so a newcomer gets
//!   work and a dead member's partitions move to the survivors once its keys expire.
//! - The revision at which a member took a partition is its **fence**: revisions only grow,
//!   so a later holder always has a larger fence, and the read store refuses a commit
//!   carrying a smaller fence than the last one it saw. A process that was paused past its
//!   lease can therefore not overwrite work of the one that took over.
//! - A bucket deleted and made again numbers its revisions from 1, below the fences the
//!   read store already recorded, so the fence also carries the bucket's **epoch** (its
//!   creation time in seconds since 2025-01-01) above the revision:
//!   `epoch << 32 | revision`. A later bucket's fences are then larger than any of an
//!   earlier one's, and projectors started after the bucket was made again just work.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::LogError;

/// Default name of the lease bucket.
pub const DEFAULT_BUCKET: &str = "crm_projector_leases";

/// Held partitions and their fences.
pub type Held = BTreeMap<u32, u64>;

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// KV bucket name.
    pub bucket: String,
    /// How long a lease lives without renewal (the bucket's `max_age`).
    pub ttl: Duration,
    /// KV bucket replicas.
    pub replicas: usize,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            bucket: DEFAULT_BUCKET.into(),
            ttl: Duration::from_secs(10),
            replicas: 1,
        }
    }
}

/// One member's view of its leases; a background task keeps them.
#[derive(Debug)]
pub struct PartitionLeases {
    held: watch::Receiver<Held>,
    task: tokio::task::JoinHandle<()>,
}

impl PartitionLeases {
    /// Joins the group as `owner` and keeps leases until `shutdown`, then gives them back.
    pub async fn join(
        js: &jetstream::Context,
        settings: &LeaseSettings,
        owner: String,
        partitions: u32,
        shutdown: CancellationToken,
    ) -> Result<Self, LogError> {
        let store = open_bucket(js, settings).await?;
        let epoch = bucket_epoch(&store).await?;
        let (tx, rx) = watch::channel(Held::new());
        let mut member = Member {
            store,
            epoch,
            owner,
            partitions,
            held: BTreeMap::new(),
            member_revision: None,
        };
        // Renew three times per lease time, counted from the start of each tick, so a slow
        // tick does not push the next one later.
        let mut ticks = tokio::time::interval(settings.ttl / 3);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ttl = settings.ttl;
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                match tokio::time::timeout(ttl, member.tick()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, owner = %member.owner, "lease tick failed");
                    }
                    Err(_) => {
                        tracing::warn!(owner = %member.owner, "lease tick timed out");
                    }
                }
                // Only leases renewed recently enough are worked on: one the server may
                // already have expired (renewals failing for a third of the lease time)
                // is dropped locally before anyone else can take it.
                let fresh = ttl.saturating_sub(ttl / 3);
                let now: Held = member
                    .held
                    .iter()
                    .filter(|(_, l)| l.renewed_at.elapsed() < fresh)
                    .map(|(p, l)| (*p, l.fence))
                    .collect();
                tx.send_if_modified(|h| {
                    let changed = *h != now;
                    *h = now;
                    changed
                });
            }
            member.release_all().await;
            tx.send_replace(Held::new());
        });
        Ok(Self { held: rx, task })
    }

    /// Waits until the leases are given back (after `shutdown` was cancelled).
    pub async fn left(self) {
        let _ = self.task.await;
    }

    /// Watches the held partitions.
    pub fn watch(&self) -> watch::Receiver<Held> {
        self.held.clone()
    }
}

/// Opens (creating if needed) the lease bucket.
pub async fn open_bucket(
    js: &jetstream::Context,
    settings: &LeaseSettings,
) -> Result<kv::Store, LogError> {
    match js.get_key_value(&settings.bucket).await {
        Ok(store) => {
            // Members renew at a third of the configured lease time, but keys expire at
            // the bucket's: a bucket made under another lease time would take leases away
            // between renewals (or keep a dead member's for longer than configured).
            let status = store
                .status()
                .await
                .map_err(|e| LogError::Nats(format!("reading lease bucket: {e}")))?;
            let kept = status.info.config.max_age;
            if kept != settings.ttl {
                return Err(LogError::StreamMisconfigured {
                    stream: format!("KV_{}", settings.bucket),
                    reason: format!(
                        "the lease bucket keeps leases for {kept:?} but the lease time is \
                         configured as {:?} (projector.lease_ttl_ms): configure {kept:?} \
                         again, or delete the bucket while no projector runs so the next \
                         one makes it anew",
                        settings.ttl
                    ),
                });
            }
            let replicas = status.info.config.num_replicas;
            if replicas < settings.replicas {
                tracing::warn!(
                    bucket = %settings.bucket,
                    replicas,
                    stream_replicas = settings.replicas,
                    "the lease bucket has fewer replicas than the event stream: a restart of \
                     its node stalls every partitioned projector; delete it while no \
                     projector runs so the next one makes it with the stream's replicas"
                );
            }
            Ok(store)
        }
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: settings.bucket.clone(),
                description: "crm projector partition leases".into(),
                history: 1,
                max_age: settings.ttl,
                storage: jetstream::stream::StorageType::File,
                num_replicas: settings.replicas.max(1),
                ..Default::default()
            })
            .await
            .map_err(|e| LogError::Nats(format!("creating lease bucket: {e}"))),
    }
}

/// Seconds from the Unix epoch to 2025-01-01T00:00:00Z.
const EPOCH_BASE: i64 = 1_735_689_600;

/// The epoch of a lease bucket: its creation time in seconds since 2025-01-01, at most
/// 2^31 - 1 (in 2093), so a fence fits a signed 64-bit column.
pub async fn bucket_epoch(store: &kv::Store) -> Result<u64, LogError> {
    let status = store
        .status()
        .await
        .map_err(|e| LogError::Nats(format!("reading lease bucket: {e}")))?;
    let secs = status.info.created.unix_timestamp() - EPOCH_BASE;
    Ok(u64::try_from(secs.clamp(0, i64::from(i32::MAX))).unwrap_or(0))
}

/// The fence of a lease taken at `revision` of a bucket of `epoch`. Revisions past 2^32
/// (decades of renewals) would wrap and make commits be refused as stale, never accepted
/// wrongly.
pub fn fence(epoch: u64, revision: u64) -> u64 {
    (epoch << 32) | (revision & 0xFFFF_FFFF)
}

/// Who holds which partition right now, read from the bucket: partition → owner.
pub async fn holders(store: &kv::Store) -> Result<BTreeMap<u32, String>, LogError> {
    let mut out = BTreeMap::new();
    for key in keys(store).await? {
        let Some(p) = key.strip_prefix("p.").and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(Some(e)) = store.entry(key.as_str()).await
            && e.operation == kv::Operation::Put
        {
            out.insert(p, String::from_utf8_lossy(&e.value).into_owned());
        }
    }
    Ok(out)
}

async fn keys(store: &kv::Store) -> Result<Vec<String>, LogError> {
    let mut keys = store
        .keys()
        .await
        .map_err(|e| LogError::Nats(format!("listing leases: {e}")))?;
    let mut out = Vec::new();
    while let Some(k) = keys.next().await {
        out.push(k.map_err(|e| LogError::Nats(format!("listing leases: {e}")))?);
    }
    Ok(out)
}

#[derive(Debug)]
struct Lease {
    fence: u64,
    revision: u64,
    renewed_at: tokio::time::Instant,
}

struct Member {
    store: kv::Store,
    /// The bucket's epoch (see the module docs), the upper half of every fence.
    epoch: u64,
    owner: String,
    partitions: u32,
    held: BTreeMap<u32, Lease>,
    member_revision: Option<u64>,
}

fn partition_key(p: u32) -> String {
    format!("p.{p:02}")
}

impl Member {
    async fn tick(&mut self) -> Result<(), LogError> {
        // 1. Say we are alive (a failure here must not keep the renewals below from running).
        let member_key = format!("members.{}", self.owner);
        match self
            .store
            .put(member_key.as_str(), self.owner.clone().into_bytes().into())
            .await
        {
            Ok(rev) => self.member_revision = Some(rev),
            Err(e) => tracing::warn!(error = %e, owner = %self.owner, "renewing membership failed"),
        }

        // 2. Renew what we hold, all at once (a tick must stay well inside the lease time
        //    on a loaded machine); anything we cannot renew is lost.
        let (store, owner) = (&self.store, &self.owner);
        let renewals = self.held.iter().map(|(&p, lease)| {
            let revision = lease.revision;
            let value = owner.clone().into_bytes().into();
            async move { (p, store.update(partition_key(p), value, revision).await) }
        });
        for (p, outcome) in futures::future::join_all(renewals).await {
            match outcome {
                Ok(rev) => {
                    if let Some(lease) = self.held.get_mut(&p) {
                        lease.revision = rev;
                        lease.renewed_at = tokio::time::Instant::now();
                    }
                }
                // Someone else wrote the key: it expired and was taken over.
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::warn!(partition = p, error = %e, owner = %self.owner, "lease lost");
                    self.held.remove(&p);
                }
                // A timeout or a broken connection says nothing about the key (the update
                // may even have gone through): keep trying until the lease is too old.
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, owner = %self.owner, "lease renewal failed");
                }
            }
        }

        // 3. Our share of the partitions among the live members (one listing of the
        //    bucket gives both the members and the partitions taken).
        let all = keys(&self.store).await?;
        let mut members: Vec<&str> = all
            .iter()
            .filter_map(|k| k.strip_prefix("members."))
            .collect();
        if !members.contains(&self.owner.as_str()) {
            members.push(&self.owner);
        }
        members.sort_unstable();
        let rank = members
            .iter()
            .position(|m| *m == self.owner)
            .unwrap_or(members.len());
        let share = fair_share(self.partitions, members.len(), rank);

        // 4. Give back any surplus (highest partitions first).
        while self.held.len() > share {
            let Some((p, lease)) = self.held.pop_last() else {
                break;
            };
            if let Err(e) = self
                .store
                .delete_expect_revision(partition_key(p), Some(lease.revision))
                .await
            {
                tracing::debug!(partition = p, error = %e, "giving back a lease");
            }
            tracing::info!(partition = p, owner = %self.owner, "lease given back");
        }

        // 5. Take free partitions up to our share, starting at an owner-dependent offset so
        //    members that start together do not race for the same keys.
        if self.held.len() < share {
            let taken: std::collections::BTreeSet<u32> = all
                .iter()
                .filter_map(|k| k.strip_prefix("p.").and_then(|p| p.parse().ok()))
                .collect();
            let offset = fnv(&self.owner) % self.partitions.max(1);
            for i in 0..self.partitions {
                if self.held.len() >= share {
                    break;
                }
                let p = (offset + i) % self.partitions;
                if taken.contains(&p) || self.held.contains_key(&p) {
                    continue;
                }
                if let Ok(rev) = self
                    .store
                    .create(partition_key(p), self.owner.clone().into_bytes().into())
                    .await
                {
                    let fence = fence(self.epoch, rev);
                    tracing::info!(partition = p, owner = %self.owner, fence, "lease taken");
                    self.held.insert(
                        p,
                        Lease {
                            fence,
                            revision: rev,
                            renewed_at: tokio::time::Instant::now(),
                        },
                    );
                }
            }
        }
        Ok(())
    }

    async fn release_all(&mut self) {
        for (p, lease) in std::mem::take(&mut self.held) {
            let _ = self
                .store
                .delete_expect_revision(partition_key(p), Some(lease.revision))
                .await;
        }
        let _ = self
            .store
            .delete_expect_revision(format!("members.{}", self.owner), self.member_revision)
            .await;
    }
}

/// The partitions the member at `rank` (0-based, members sorted by name) should hold:
/// everyone gets `partitions / members`, the first `partitions % members` one more, so
/// the shares add up to exactly `partitions` and nobody is left without work while
/// there is enough to go round.
fn fair_share(partitions: u32, members: usize, rank: usize) -> usize {
    let partitions = partitions as usize;
    let members = members.max(1);
    partitions / members + usize::from(rank < partitions % members)
}

fn fnv(s: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::fair_share;

    #[test]
    fn fair_shares_add_up_and_leave_nobody_idle() {
        for members in 1..=20usize {
            let shares: Vec<usize> = (0..members).map(|r| fair_share(16, members, r)).collect();
            assert_eq!(
                shares.iter().sum::<usize>(),
                16,
                "{members} members: {shares:?}"
            );
            let (lo, hi) = (shares.iter().min(), shares.iter().max());
            assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{shares:?}");
            if members <= 16 {
                assert!(
                    shares.iter().all(|s| *s >= 1),
                    "{members} members: {shares:?}"
                );
            }
        }
    }
}
