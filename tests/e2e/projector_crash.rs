//! A projector killed between batches or inside a batch's transaction resumes to exactly
//! the view a rebuild from scratch produces; re-applying a batch changes nothing. For every
//! projection. A subscription that stops delivering is resumed from the checkpoint.

use std::sync::Arc;

use crm_e2e::{App, Db, Env, read_all, register, sign};
use crm_log::StoredEvent;
use crm_projections::audit::AuditProjection;
use crm_projections::cache::StateCache;
use crm_projections::health::HealthProjection;
use crm_projections::lifecycle::LifecycleProjection;
use crm_projections::renewals::RenewalsProjection;
use crm_projections::trust::TrustProjection;
use crm_projections::{
    AnyProjection, Projection, ProjectionError, Projector, ProjectorOptions, ReadStore,
};
use serde_json::json;
use uuid::Uuid;

crm_e2e::on_both_stores!(
    crash_inside_and_between_batches_equals_rebuild_for_every_projection,
    two_projectors_of_one_projection_on_one_store_equal_one,
);

/// The status `crm status` shows for projection `name` of `store` over `log`.
async fn status_of(
    store: &ReadStore,
    log: &crm_log::EventLog,
    name: &str,
) -> crm_projections::status::Status {
    crm_projections::status::statuses(store, log)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.name == name)
        .expect("the projection is listed")
}

async fn generate(app: &App, customers: usize) {
    for i in 0..customers {
        let c = Uuid::now_v7();
        app.accept(c, register(&format!("Customer {i}"))).await;
        app.accept(c, sign("c1")).await;
        app.accept(
            c,
            json!({"type": "record_purchase", "order_id": "o1", "amount_minor": 1000 + i,
            "currency": "EUR", "ordered_on": "2025-03-01"}),
        )
        .await;
        if i % 2 == 0 {
            app.accept(
                c,
                json!({"type": "renew_contract", "contract_id": "c1", "new_ends_on": "2026-12-31"}),
            )
            .await;
            app.accept(c, json!({"type": "record_care_touch", "kind": "holiday"}))
                .await;
        }
        if i % 3 == 0 {
            app.accept(
                c,
                json!({"type": "log_complaint", "complaint_id": "k1", "severity": "major"}),
            )
            .await;
            app.accept(
                c,
                json!({"type": "terminate_contract", "contract_id": "c1"}),
            )
            .await;
            app.accept(c, sign("c2")).await;
        }
        if i % 5 == 0 {
            app.accept(c, json!({"type": "flag_inactivity", "days_inactive": 45}))
                .await;
            app.accept(
                c,
                json!({"type": "change_key_contact", "role": "buyer", "new_contact": "N"}),
            )
            .await;
        }
    }
}

/// A projector of `projection` on `store` reading the app's log in batches of `batch`,
/// rolling back batch `crash` as a crash would.
fn projector<P: Projection>(
    projection: P,
    store: &ReadStore,
    app: &App,
    batch: usize,
    crash: Option<u64>,
) -> Projector<P> {
    Projector::new(
        projection,
        store.clone(),
        app.parts.log.clone(),
        ProjectorOptions {
            batch_size: batch,
            crash_before_commit_of_batch: crash,
            ..ProjectorOptions::default()
        },
    )
}

/// Every row of the audit index and of the chain heads, in key order (empty where the
/// audit projection did not run).
async fn audit_rows(store: &ReadStore) -> Vec<String> {
    let index: Vec<(i64, String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT sequence, customer_id, event_type, actor, occurred_us, recorded_us \
         FROM audit_index ORDER BY sequence",
    )
    .fetch_all(store.pool())
    .await
    .expect("audit_index");
    let heads: Vec<(String, i64, String, i64)> = sqlx::query_as(
        "SELECT customer_id, version, hash, sequence FROM chain_heads ORDER BY customer_id",
    )
    .fetch_all(store.pool())
    .await
    .expect("chain_heads");
    index
        .iter()
        .map(|r| format!("{r:?}"))
        .chain(heads.iter().map(|r| format!("{r:?}")))
        .collect()
}

/// The views and the audit index of `store`.
async fn dump(store: &ReadStore) -> Vec<String> {
    let mut out = crm_e2e::dump_views(store).await;
    out.extend(audit_rows(store).await);
    out
}

async fn check<P: Projection + Clone>(projection: P, app: &App, env: &Env, events: &[StoredEvent]) {
    let name = projection.name();
    let head = events.last().unwrap().sequence;
    let run = |store: &ReadStore, batch: usize, crash: Option<u64>| {
        projector(projection.clone(), store, app, batch, crash)
    };
    // Reference: one clean pass from scratch.
    let fresh = env.open_store(&format!("{name}-fresh.sqlite")).await;
    run(&fresh, 10_000, None).run_until(head).await.unwrap();
    assert_eq!(fresh.checkpoint(name).await.unwrap(), head);
    assert!(!dump(&fresh).await.is_empty(), "{name}: nothing projected");

    // Crash inside the transaction of batch 3: batches 1 and 2 stay, batch 3 vanishes.
    let crashed = env.open_store(&format!("{name}-crashed.sqlite")).await;
    let err = run(&crashed, 25, Some(3))
        .run_until(head)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProjectionError::InjectedCrash { batch: 3 }),
        "{name}: {err}"
    );
    // Catching up, the projector commits full batches: exactly 2 x 25 events stayed.
    let cp = crashed.checkpoint(name).await.unwrap();
    assert!(head > 75, "{name}: head {head}");
    assert_eq!(cp, 50, "{name}: checkpoint {cp} of {head}");

    // Killed between batches: stop at a sequence in the middle, then drop the projector.
    run(&crashed, 25, None).run_until(head / 2).await.unwrap();
    let mid = crashed.checkpoint(name).await.unwrap();
    assert!(mid >= head / 2 && mid < head, "{name}: {mid}");

    // Restart and finish: the same view as the clean pass, nothing lost or doubled.
    run(&crashed, 25, None).run_until(head).await.unwrap();
    assert_eq!(crashed.checkpoint(name).await.unwrap(), head);
    assert_eq!(dump(&crashed).await, dump(&fresh).await, "{name}");

    // The folded state kept between batches changes nothing: none kept, and far fewer
    // customers kept than there are (entries dropped every batch), give the same views.
    for capacity in [0, 3] {
        let store = env
            .open_store(&format!("{name}-state-cache-{capacity}.sqlite"))
            .await;
        Projector::new(
            projection.clone(),
            store.clone(),
            app.parts.log.clone(),
            ProjectorOptions {
                batch_size: 25,
                state_cache: capacity,
                ..ProjectorOptions::default()
            },
        )
        .run_until(head)
        .await
        .unwrap();
        assert_eq!(
            dump(&store).await,
            dump(&fresh).await,
            "{name} with a state cache of {capacity}"
        );
    }

    // Re-applying batches already reflected (a crash before the checkpoint commit, then
    // redelivery) changes nothing.
    for window in [&events[..60], &events[events.len() - 40..]] {
        let mut conn = crashed.pool().acquire().await.unwrap();
        projection
            .apply_batch(&mut conn, window, &mut StateCache::new(0))
            .await
            .unwrap();
    }
    assert_eq!(
        dump(&crashed).await,
        dump(&fresh).await,
        "{name} after re-apply"
    );
}

async fn crash_inside_and_between_batches_equals_rebuild_for_every_projection(db: Db) {
    let env = Env::on(db).await;
    let app = App::start_with(env.config("unused.sqlite"), false).await;
    generate(&app, 40).await;
    let events = read_all(&app.parts.log).await;
    assert!(events.len() > 150);
    let policy = Arc::new(crm_projections::policy::default_policy());
    check(
        LifecycleProjection::new(policy.clone()),
        &app,
        &env,
        &events,
    )
    .await;
    check(TrustProjection::new(policy.clone()), &app, &env, &events).await;
    check(HealthProjection::new(policy), &app, &env, &events).await;
    check(RenewalsProjection, &app, &env, &events).await;
    check(AuditProjection, &app, &env, &events).await;
    app.stop().await;
}

/// A subscription that stops delivering mid-run (no error, no end) is noticed by the stall
/// check and resumed from the committed checkpoint by `run_until` (rebuilds, `crm replay`,
/// as-of views), to the same view as a clean pass. The subscription is about the log, not
/// the store: SQLite only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_resubscribes_after_a_subscription_stops_delivering() {
    let env = Env::on(Db::Sqlite).await;
    let app = App::start_with(env.config("unused.sqlite"), false).await;
    generate(&app, 12).await;
    let events = read_all(&app.parts.log).await;
    let head = events.last().unwrap().sequence;
    assert!(head > 60, "head {head}");
    let run = |store: &ReadStore, stall: Option<u64>| {
        Projector::new(
            LifecycleProjection::new(Arc::new(crm_projections::policy::default_policy())),
            store.clone(),
            app.parts.log.clone(),
            ProjectorOptions {
                batch_size: 10,
                stall_after_batch: stall,
                ..ProjectorOptions::default()
            },
        )
    };
    let fresh = env.open_store("stall-fresh.sqlite").await;
    run(&fresh, None).run_until(head).await.unwrap();

    let stalled = env.open_store("stall.sqlite").await;
    let projector = run(&stalled, Some(2));
    let started = std::time::Instant::now();
    let finished = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        projector.run_until(head),
    )
    .await
    .expect("run_until finishes after the stall");
    finished.unwrap();
    // The first subscription delivered two batches of 10 and stopped; the stall check
    // (3 s while the log holds more) noticed it, and a new one delivered the rest.
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(3),
        "no stall was waited out: {:?}",
        started.elapsed()
    );
    assert_eq!(stalled.checkpoint("lifecycle").await.unwrap(), head);
    assert_eq!(
        crm_projections::lifecycle::dump(&stalled).await.unwrap(),
        crm_projections::lifecycle::dump(&fresh).await.unwrap()
    );
}

/// Two projectors of the same projection writing one store at once (a second
/// `crm project` started by mistake, or two during a hand-over), with batches that overlap
/// differently: the view equals one clean pass, no event lost or applied twice. Each must
/// fold from what the other committed, not from state it read before the other's commit.
async fn two_projectors_of_one_projection_on_one_store_equal_one(db: Db) {
    let env = Env::on(db).await;
    let app = App::start_with(env.config("unused.sqlite"), false).await;
    // Customers interleaved in the log, so every batch touches many of them.
    let customers: Vec<Uuid> = (0..24).map(|_| Uuid::now_v7()).collect();
    for (i, c) in customers.iter().enumerate() {
        app.accept(*c, register(&format!("Customer {i}"))).await;
        app.accept(*c, sign("c1")).await;
    }
    for round in 0..8 {
        for (i, c) in customers.iter().enumerate() {
            let body = match (round + i) % 4 {
                0 => json!({"type": "record_care_touch", "kind": "holiday"}),
                1 => json!({"type": "record_purchase", "order_id": format!("o{round}"),
                            "amount_minor": 1000 + i, "currency": "EUR",
                            "ordered_on": "2025-03-01"}),
                2 => json!({"type": "log_complaint", "complaint_id": format!("k{round}"),
                            "severity": "minor"}),
                _ => json!({"type": "delay_service", "contract_id": "c1",
                            "service_id": format!("s{round}"), "promised_on": "2025-03-01",
                            "days_late": 1 + round}),
            };
            app.accept(*c, body).await;
        }
    }
    let head = app.parts.log.head().await.unwrap();
    let policy = Arc::new(crm_projections::policy::default_policy());
    let projections: [(&str, AnyProjection); 2] = [
        (
            "trust",
            AnyProjection::Trust(TrustProjection::new(policy.clone())),
        ),
        (
            "health",
            AnyProjection::Health(HealthProjection::new(policy.clone())),
        ),
    ];
    for (name, projection) in projections {
        let run = |store: &ReadStore, batch: usize| {
            projector(projection.clone(), store, &app, batch, None)
        };
        let fresh = env.open_store(&format!("{name}-one.sqlite")).await;
        run(&fresh, 10_000).run_until(head).await.unwrap();
        for round in 0..4 {
            let store = env.open_store(&format!("{name}-two-{round}.sqlite")).await;
            let (one, other) = (run(&store, 7 + round), run(&store, 11));
            let one = tokio::spawn(async move { one.run_until(head).await });
            let other = tokio::spawn(async move { other.run_until(head).await });
            one.await.unwrap().unwrap();
            other.await.unwrap().unwrap();
            assert_eq!(
                crm_e2e::dump_views(&store).await,
                crm_e2e::dump_views(&fresh).await,
                "{name}, round {round}: two projectors at once"
            );
        }
    }
    app.stop().await;
}

/// A read store built from another log that is longer than the store's checkpoints (the
/// case the head check cannot see: `crm dev --nats-url` over a data dir built from the
/// embedded log) is refused by the log's first event, with nothing written; rebuilt from
/// this log, it is this log's view and its projector follows on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_store_built_from_another_log_is_refused_until_rebuilt() {
    let env = Env::on(Db::Sqlite).await;
    let app = App::start_with(env.config("unused.sqlite"), false).await;
    let store = env.open_store("views.sqlite").await;
    let policy = Arc::new(crm_projections::policy::default_policy());
    let lifecycle = || LifecycleProjection::new(policy.clone());
    let on = |app: &App, store: &ReadStore| {
        Projector::new(
            lifecycle(),
            store.clone(),
            app.parts.log.clone(),
            ProjectorOptions::default(),
        )
    };
    // The projector starts while the log is still empty (a new `crm dev` data dir): it
    // records the log at its first commit.
    let stop = tokio_util::sync::CancellationToken::new();
    let live = tokio::spawn({
        let projector = on(&app, &store);
        let stop = stop.clone();
        async move { projector.run(stop).await }
    });
    generate(&app, 1).await;
    let first_head = app.parts.log.head().await.unwrap();
    crm_e2e::wait_for_checkpoint(&store, "lifecycle", first_head).await;
    stop.cancel();
    live.await.unwrap().unwrap();
    app.stop().await;

    // Another log, longer than the first.
    let other = Env::on(Db::Sqlite).await;
    let app = App::start_with(other.config("unused.sqlite"), false).await;
    generate(&app, 3).await;
    let head = app.parts.log.head().await.unwrap();
    assert!(head > first_head, "{head} > {first_head}");
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        on(&app, &store).run(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("refused at once, not retried")
    .unwrap_err();
    assert!(
        matches!(&err, ProjectionError::OtherLog { projection, .. } if projection == "lifecycle"),
        "{err}"
    );
    assert_eq!(
        store.checkpoint("lifecycle").await.unwrap(),
        first_head,
        "nothing written"
    );
    assert_eq!(
        status_of(&store, &app.parts.log, "lifecycle").await.state,
        "other_log"
    );

    crm_projections::rebuild::rebuild_by_name(
        &crm_projections::rebuild::RebuildClaim::take(&store)
            .await
            .unwrap(),
        "lifecycle",
        policy.clone(),
        &store,
        &app.parts.log,
        100,
        &|_, _, _| {},
    )
    .await
    .unwrap();
    on(&app, &store).run_until(head).await.unwrap();
    assert_eq!(
        status_of(&store, &app.parts.log, "lifecycle").await.state,
        "live"
    );
    let fresh = other.open_store("fresh.sqlite").await;
    on(&app, &fresh).run_until(head).await.unwrap();
    assert_eq!(
        crm_projections::lifecycle::dump(&store).await.unwrap(),
        crm_projections::lifecycle::dump(&fresh).await.unwrap(),
        "the rebuilt view is this log's"
    );
    app.stop().await;
}

/// A read store built from another log (here: the same store, and a new nats-server whose
/// log is shorter) is refused, with the checkpoint and the head named, instead of followed
/// from its checkpoint, which would skip the new log's events up to there; `status` shows
/// it as `ahead_of_log`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_store_ahead_of_the_log_is_refused_not_followed() {
    let env = Env::on(Db::Sqlite).await;
    let app = App::start_with(env.config("unused.sqlite"), false).await;
    generate(&app, 4).await;
    let head = app.parts.log.head().await.unwrap();
    let store = env.open_store("views.sqlite").await;
    let lifecycle =
        || LifecycleProjection::new(Arc::new(crm_projections::policy::default_policy()));
    let on = |app: &App| {
        Projector::new(
            lifecycle(),
            store.clone(),
            app.parts.log.clone(),
            ProjectorOptions::default(),
        )
    };
    on(&app).run_until(head).await.unwrap();
    app.stop().await;

    // Another log: a fresh server with two events in it.
    let other = Env::on(Db::Sqlite).await;
    let app = App::start_with(other.config("unused.sqlite"), false).await;
    let c = Uuid::now_v7();
    app.accept(c, register("Elsewhere")).await;
    app.accept(c, sign("c-1")).await;
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        on(&app).run(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("refused at once, not retried")
    .unwrap_err();
    match err {
        ProjectionError::AheadOfLog {
            checkpoint,
            head: other_head,
            ..
        } => assert_eq!((checkpoint, other_head), (head, 2)),
        other => panic!("expected AheadOfLog, got {other}"),
    }
    assert_eq!(
        store.checkpoint("lifecycle").await.unwrap(),
        head,
        "nothing written"
    );
    let lifecycle_status = status_of(&store, &app.parts.log, "lifecycle").await;
    assert_eq!(lifecycle_status.state, "ahead_of_log");

    // A failed rebuild is shown as the rebuild's state; it does not hide that the live
    // copy is ahead of this log.
    sqlx::query(
        "INSERT INTO projection_rebuilds (name, state, done, total, started_at, updated_at, error) \
         VALUES ('lifecycle', 'failed', 0, 0, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 'timed out')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let lifecycle_status = status_of(&store, &app.parts.log, "lifecycle").await;
    assert_eq!(lifecycle_status.state, "ahead_of_log");
    assert_eq!(
        lifecycle_status
            .rebuild
            .as_ref()
            .map(|r| r["state"].clone()),
        Some(serde_json::json!("failed"))
    );
    assert_eq!(
        status_of(&store, &app.parts.log, "trust").await.state,
        "never_ran",
        "a failed rebuild elsewhere"
    );
    app.stop().await;
}
