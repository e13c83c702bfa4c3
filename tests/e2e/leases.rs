//! Partition leases in the NATS KV bucket: members share the partitions fairly, each
//! partition held by exactly one member, and a leaver's partitions move on.

use std::collections::BTreeSet;
use std::time::Duration;

use crm_e2e::Env;
use crm_log::lease::{Held, LeaseSettings, PartitionLeases};
use tokio_util::sync::CancellationToken;

const PARTITIONS: u32 = 16;

struct Member {
    stop: CancellationToken,
    leases: PartitionLeases,
}

async fn join(env: &Env, settings: &LeaseSettings, owner: &str) -> Member {
    let log = env.log().await;
    let stop = CancellationToken::new();
    let leases = PartitionLeases::join(
        log.jetstream(),
        settings,
        owner.into(),
        PARTITIONS,
        stop.clone(),
    )
    .await
    .unwrap();
    Member { stop, leases }
}

/// Waits until the members' held sets are disjoint, cover every partition, and have the
/// `expected` sizes (in member order); returns the sets.
async fn settle(members: &[Member], expected: &[usize]) -> Vec<Held> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let held: Vec<Held> = members
            .iter()
            .map(|m| m.leases.watch().borrow().clone())
            .collect();
        let sizes: Vec<usize> = held.iter().map(|h| h.len()).collect();
        let union: BTreeSet<u32> = held.iter().flat_map(|h| h.keys().copied()).collect();
        let total: usize = sizes.iter().sum();
        if sizes == expected && union.len() == PARTITIONS as usize && total == union.len() {
            return held;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "leases did not settle: sizes {sizes:?}, expected {expected:?}, {} distinct",
            union.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_share_sixteen_partitions_fairly_and_a_leaver_s_move_on() {
    let env = Env::new().await;
    let settings = LeaseSettings {
        bucket: "crm_leases_test".into(),
        ttl: Duration::from_secs(3),
        replicas: 1,
    };
    // Names sort as m0 < m1 < … : the first 16 % 5 = 1 member by name holds one more.
    let mut members = Vec::new();
    for i in 0..5 {
        members.push(join(&env, &settings, &format!("m{i}")).await);
    }
    let held = settle(&members, &[4, 3, 3, 3, 3]).await;

    // The bucket says the same: every partition has exactly the holder its member sees.
    let log = env.log().await;
    let kv = log
        .jetstream()
        .get_key_value("crm_leases_test")
        .await
        .unwrap();
    let holders = crm_log::lease::holders(&kv).await.unwrap();
    for (i, h) in held.iter().enumerate() {
        for p in h.keys() {
            assert_eq!(holders[p], format!("m{i}"));
        }
    }

    // m0 leaves cleanly: its leases are given back and the four others share all 16.
    let m0 = members.remove(0);
    m0.stop.cancel();
    m0.leases.left().await;
    settle(&members, &[4, 4, 4, 4]).await;

    for m in members {
        m.stop.cancel();
        m.leases.left().await;
    }
    assert!(crm_log::lease::holders(&kv).await.unwrap().is_empty());
}

/// A lease bucket deleted and made again numbers its revisions from 1, but its fences are
/// still above every fence of the old bucket (they carry the bucket's creation time), so
/// the read store goes on accepting the new holders' commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_made_again_gives_larger_fences() {
    let env = Env::new().await;
    let settings = LeaseSettings {
        bucket: "crm_leases_epoch".into(),
        ttl: Duration::from_secs(3),
        replicas: 1,
    };
    let m = join(&env, &settings, "a").await;
    let before = settle(std::slice::from_ref(&m), &[16]).await.remove(0);
    m.stop.cancel();
    m.leases.left().await;

    // Revisions of the first bucket are well past 1 by now; the new bucket starts again.
    let log = env.log().await;
    log.jetstream()
        .delete_key_value(&settings.bucket)
        .await
        .unwrap();
    // Epochs count whole seconds.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let m = join(&env, &settings, "a").await;
    let after = settle(std::slice::from_ref(&m), &[16]).await.remove(0);
    let old_max = before.values().max().copied().unwrap();
    let new_min = after.values().min().copied().unwrap();
    assert!(
        new_min > old_max,
        "new fences {after:?} must all exceed the old {before:?}"
    );
    // The revision part did restart: below the old bucket's revisions.
    assert!(after.values().all(|f| f & 0xFFFF_FFFF <= 32), "{after:?}");
    m.stop.cancel();
    m.leases.left().await;
}

/// A member configured with another lease time than the bucket was made with is refused
/// with a message naming both, instead of losing its leases between renewals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_time_other_than_the_bucket_s_is_refused() {
    let env = Env::new().await;
    let settings = LeaseSettings {
        ttl: Duration::from_secs(2),
        ..LeaseSettings::default()
    };
    let first = join(&env, &settings, "a").await;
    let log = env.log().await;
    let longer = LeaseSettings {
        ttl: Duration::from_secs(6),
        ..settings.clone()
    };
    let err = PartitionLeases::join(
        log.jetstream(),
        &longer,
        "b".into(),
        PARTITIONS,
        CancellationToken::new(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("2s") && err.contains("6s"), "{err}");
    // The same lease time joins.
    let second = join(&env, &settings, "c").await;
    settle(&[first, second], &[8, 8]).await;
}
