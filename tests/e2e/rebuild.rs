//! Blue-green rebuilds under load, after a policy change, after an interruption, over
//! HTTP; and point-in-time views.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crm_cli::demo::{self, DemoArgs};
use crm_e2e::{App, Db, Env, KEY};
use crm_projections::audit::AuditProjection;
use crm_projections::lifecycle::LifecycleProjection;
use crm_projections::rebuild;
use crm_projections::trust::TrustProjection;
use crm_projections::{Projector, ProjectorOptions, ReadStore};
use serde_json::{Value, json};
use uuid::Uuid;

async fn seed(app: &App, customers: u32) -> Vec<Uuid> {
    let args = DemoArgs {
        customers,
        seed: 3,
        until: Some("2025-12-15".into()),
        concurrency: 4,
    };
    demo::run(app.parts.customers.clone(), &args).await.unwrap();
    let until = time::macros::date!(2025 - 12 - 15);
    (0..customers)
        .map(|i| *demo::story(i, 3, until).0.as_uuid())
        .collect()
}

crm_e2e::on_both_stores!(
    rebuild_all_while_writing_and_reading,
    a_policy_change_rebuilds_under_the_new_policy_and_interrupted_rebuilds_resume_only_under_it,
    as_of_a_sequence_equals_the_live_view_at_that_sequence_and_http_rebuilds,
    a_live_projector_stops_rather_than_fold_under_another_policy_than_its_views,
    a_rebuild_builds_the_audit_lookups_once_at_the_end_even_after_an_interruption,
);

async fn rebuild_all_while_writing_and_reading(db: Db) {
    let env = Env::on(db).await;
    let app = Arc::new(App::start(&env).await);
    let ids = seed(&app, 20).await;
    app.settle().await;
    let (_, stages) = app.get("/v1/stages").await;
    let initial_total = stages["total"].as_u64().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let writer = {
        let (app, stop, ids) = (app.clone(), stop.clone(), ids.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let c = ids[n % ids.len()];
                let (s, body) = app
                    .command(c, json!({"type": "log_intervention", "action": "call", "note": format!("call {n}")}))
                    .await;
                assert_eq!(s, 201, "{body}");
                n += 1;
            }
            n
        })
    };
    let reader = {
        let (app, stop, reads, ids) = (app.clone(), stop.clone(), reads.clone(), ids.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (s, v) = app
                    .get(&format!("/v1/customers/{}", ids[i % ids.len()]))
                    .await;
                assert_eq!(s, 200, "{v}");
                assert!(
                    v["lifecycle"]["stage"].is_string() && v["health"]["color"].is_string(),
                    "{v}"
                );
                let (s, st) = app.get("/v1/stages").await;
                assert_eq!(s, 200);
                assert!(
                    st["total"].as_u64().unwrap() >= initial_total,
                    "a half-built view went live: {st}"
                );
                reads.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };

    let policy = Arc::new(crm_projections::policy::default_policy());
    // The writer never pauses: the rebuild must still finish (its last catch-up runs under
    // the live store's write lock), not chase the head for ever. Its batches are small, so
    // it makes several passes and swap attempts, but large enough to outpace the writer:
    // a rebuild slower than the writing can never catch up. (With 50-event batches over
    // TLS to PostgreSQL, in a debug build, the shadow applied ~500 events/s against the
    // writer's ~1,500 and never caught up.)
    let done = tokio::time::timeout(
        Duration::from_secs(180),
        rebuild::rebuild_by_name(
            &rebuild::RebuildClaim::take(&app.parts.store).await.unwrap(),
            "all",
            policy,
            &app.parts.store,
            &app.parts.log,
            500,
            &|_, _, _| {},
        ),
    )
    .await
    .expect("the rebuild finishes while the writer keeps writing")
    .unwrap();
    assert_eq!(done.len(), 5);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    reader.await.unwrap();
    assert!(written > 0 && reads.load(Ordering::Relaxed) > 0);

    // Afterwards the rebuilt live view equals a view built from scratch.
    app.settle().await;
    let head = app.parts.log.head().await.unwrap();
    let fresh = env.fresh_views("fresh.sqlite", &app.parts.log, head).await;
    assert_eq!(
        crm_e2e::dump_views(&app.parts.store).await,
        crm_e2e::dump_views(&fresh).await
    );
    let (_, status) = app.get("/v1/admin/projections").await;
    for p in status["projections"].as_array().unwrap() {
        assert_eq!(p["rebuild"]["state"], "done", "{p}");
    }
    assert!(
        !env.shadow_exists("views.sqlite", "all").await,
        "shadow removed"
    );
}

async fn a_policy_change_rebuilds_under_the_new_policy_and_interrupted_rebuilds_resume_only_under_it(
    db: Db,
) {
    let env = Env::on(db).await;
    let app = App::start(&env).await;
    let ids = seed(&app, 8).await;
    app.settle().await;
    let (_, before) = app.get(&format!("/v1/customers/{}", ids[0])).await;
    assert_eq!(before["trust"]["policy_version"], "2026-11-default");
    assert_eq!(before["lifecycle"]["policy_version"], "2026-11-default");

    let mut policy = crm_projections::policy::default_policy();
    policy.version = "2026-12-generous".into();
    policy.trust.care_touch = 50;
    let generous = Arc::new(policy);
    rebuild_under(
        &app,
        &rebuild::RebuildClaim::take(&app.parts.store).await.unwrap(),
        "trust",
        generous.clone(),
        100,
    )
    .await;
    let (_, after) = app.get(&format!("/v1/customers/{}", ids[0])).await;
    assert_eq!(after["trust"]["policy_version"], "2026-12-generous");
    assert!(
        after["trust"]["emotional"].as_i64().unwrap()
            > before["trust"]["emotional"].as_i64().unwrap()
    );
    let (_, ledger) = app
        .get(&format!("/v1/customers/{}/trust/ledger?limit=1000", ids[0]))
        .await;
    assert!(
        ledger["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["policy_version"] == "2026-12-generous")
    );

    // An interrupted rebuild left a half-built shadow: the next one under the same code
    // and policy resumes from it, and the live view was never touched in between.
    let head = app.parts.log.head().await.unwrap();
    let claim = rebuild::RebuildClaim::take(&app.parts.store).await.unwrap();
    let (shadow, start) = interrupted_rebuild(
        &app,
        &claim,
        LifecycleProjection::new(Arc::new(crm_projections::policy::default_policy())),
        head,
    )
    .await;
    assert_eq!(start, rebuild::ShadowStart::Fresh);
    let half = shadow.checkpoint("lifecycle").await.unwrap();
    assert!(half > 0 && half < head);
    shadow.pool().close().await;
    let (shadow, start) = rebuild::open_shadow(
        &claim,
        &app.parts.store,
        &[LifecycleProjection::new(Arc::new(
            crm_projections::policy::default_policy(),
        ))],
        &app.parts.log,
    )
    .await
    .unwrap();
    assert_eq!(start, rebuild::ShadowStart::Resumed { at: half });
    shadow.pool().close().await;
    let live_before = crm_projections::lifecycle::dump(&app.parts.store)
        .await
        .unwrap();
    assert_eq!(live_before.len(), 8);
    let done = rebuild_under(
        &app,
        &claim,
        "lifecycle",
        Arc::new(crm_projections::policy::default_policy()),
        10,
    )
    .await;
    assert!(done[0].1 >= head);
    assert_eq!(
        crm_projections::lifecycle::dump(&app.parts.store)
            .await
            .unwrap(),
        live_before
    );

    // One begun under another policy is started again: resumed, its first batches would
    // stay priced under the policy it began with.
    let default = Arc::new(crm_projections::policy::default_policy());
    let trust_under_default = TrustProjection::new(default.clone());
    let (shadow, start) =
        interrupted_rebuild(&app, &claim, trust_under_default.clone(), head).await;
    assert_eq!(start, rebuild::ShadowStart::Fresh);
    let (priced_by_default,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM trust_ledger WHERE policy_version = $1")
            .bind(&default.version)
            .fetch_one(shadow.pool())
            .await
            .unwrap();
    assert!(priced_by_default > 0);
    shadow.pool().close().await;
    let (shadow, start) = rebuild::open_shadow(
        &claim,
        &app.parts.store,
        &[TrustProjection::new(generous.clone())],
        &app.parts.log,
    )
    .await
    .unwrap();
    assert!(
        matches!(&start, rebuild::ShadowStart::Discarded { fingerprint: Some(f) } if f.contains(&default.version)),
        "{start:?}"
    );
    assert_eq!(shadow.checkpoint("trust").await.unwrap(), 0);
    shadow.pool().close().await;
    // Interrupted again under the default policy; the rebuild under the generous one
    // starts over by itself.
    let (shadow, _) = interrupted_rebuild(&app, &claim, trust_under_default, head).await;
    shadow.pool().close().await;
    rebuild_under(&app, &claim, "trust", generous.clone(), 10).await;
    let versions: Vec<(String, i64)> =
        sqlx::query_as("SELECT policy_version, COUNT(*) FROM trust_ledger GROUP BY policy_version")
            .fetch_all(app.parts.store.pool())
            .await
            .unwrap();
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(versions[0].0, generous.version);
    let (_, after) = app.get(&format!("/v1/customers/{}", ids[0])).await;
    assert_eq!(after["trust"]["policy_version"], "2026-12-generous");
    // The lifecycle records the policy its health rules came from, and a rebuild under
    // another policy rewrites it for every customer.
    assert_eq!(after["lifecycle"]["policy_version"], "2026-11-default");
    rebuild_under(&app, &claim, "lifecycle", generous.clone(), 10).await;
    let versions: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT policy_version, COUNT(*) FROM lifecycle_customers GROUP BY policy_version",
    )
    .fetch_all(app.parts.store.pool())
    .await
    .unwrap();
    assert_eq!(versions, vec![(Some(generous.version.clone()), 8)]);
    let (_, after) = app.get(&format!("/v1/customers/{}", ids[0])).await;
    assert_eq!(after["lifecycle"]["policy_version"], "2026-12-generous");
    // The live projector still runs the default policy: it would stop at its next commit
    // rather than fold new events under it on top of these rows (the test below).
    app.stop().await;
}

/// Rebuilds `name` under `policy` in batches of `batch`, holding `claim`.
async fn rebuild_under(
    app: &App,
    claim: &rebuild::RebuildClaim,
    name: &str,
    policy: Arc<crm_domain::policy::Policy>,
    batch: usize,
) -> Vec<(String, u64)> {
    rebuild::rebuild_by_name(
        claim,
        name,
        policy,
        &app.parts.store,
        &app.parts.log,
        batch,
        &|_, _, _| {},
    )
    .await
    .unwrap()
}

/// Opens the shadow a rebuild of `projection` works in, runs it there in batches of 10 up
/// to `head` and crashes before committing the fourth batch, as a rebuild killed mid-way
/// leaves it. Returns the shadow, still open, and how the rebuild found it.
async fn interrupted_rebuild<P: crm_projections::Projection>(
    app: &App,
    claim: &rebuild::RebuildClaim,
    projection: P,
    head: u64,
) -> (ReadStore, rebuild::ShadowStart) {
    let (shadow, start) = rebuild::open_shadow(
        claim,
        &app.parts.store,
        std::slice::from_ref(&projection),
        &app.parts.log,
    )
    .await
    .unwrap();
    Projector::new(
        projection,
        shadow.clone(),
        app.parts.log.clone(),
        ProjectorOptions {
            batch_size: 10,
            crash_before_commit_of_batch: Some(4),
            ..ProjectorOptions::default()
        },
    )
    .run_until(head)
    .await
    .unwrap_err();
    (shadow, start)
}

async fn as_of_a_sequence_equals_the_live_view_at_that_sequence_and_http_rebuilds(db: Db) {
    let env = Env::on(db).await;
    let app = App::start(&env).await;
    let ids = seed(&app, 6).await;
    app.settle().await;
    let at = app.parts.log.head().await.unwrap();
    let then = crm_e2e::dump_views(&app.parts.store).await;

    // The world moves on.
    for c in &ids {
        app.accept(
            *c,
            json!({"type": "change_key_contact", "role": "decision_maker", "new_contact": "New"}),
        )
        .await;
    }
    app.settle().await;
    assert_ne!(crm_e2e::dump_views(&app.parts.store).await, then);

    let past = env.open_store("as-of.sqlite").await;
    rebuild::as_of(
        "all",
        Arc::new(crm_projections::policy::default_policy()),
        &past,
        &app.parts.log,
        at,
        7,
    )
    .await
    .unwrap();
    assert_eq!(crm_e2e::dump_views(&past).await, then);
    assert_eq!(past.checkpoint("health").await.unwrap(), at);
    // The same point again into the same target is a no-op; an earlier point into it is
    // refused (its rows are later than that), and so is a point past the head, at once
    // (it would wait for events that do not exist); neither touches the target.
    let policy = Arc::new(crm_projections::policy::default_policy());
    rebuild::as_of("all", policy.clone(), &past, &app.parts.log, at, 7)
        .await
        .unwrap();
    let earlier = rebuild::as_of("all", policy.clone(), &past, &app.parts.log, at - 1, 7).await;
    assert!(
        matches!(
            earlier,
            Err(crm_projections::ProjectionError::AsOfTargetAhead { checkpoint, at: a, .. })
                if checkpoint == at && a == at - 1
        ),
        "{earlier:?}"
    );
    let head = app.parts.log.head().await.unwrap();
    let future = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        rebuild::as_of("all", policy, &past, &app.parts.log, head + 1, 7),
    )
    .await
    .expect("refused at once, not waiting for the future");
    assert!(
        matches!(
            future,
            Err(crm_projections::ProjectionError::AsOfPastHead { at: a, head: h })
                if a == head + 1 && h == head
        ),
        "{future:?}"
    );
    assert_eq!(crm_e2e::dump_views(&past).await, then);
    assert_eq!(past.checkpoint("health").await.unwrap(), at);
    // By recording time: the sequence of the last event recorded by then.
    let last = app.parts.log.get(at).await.unwrap().unwrap();
    assert_eq!(
        rebuild::sequence_at(&app.parts.log, last.envelope.recorded_at)
            .await
            .unwrap(),
        at
    );

    // While another rebuild holds the store (here: this test, as `crm replay` would), a
    // rebuild over HTTP is refused at once with 409 and touches nothing.
    let held = rebuild::RebuildClaim::take(&app.parts.store).await.unwrap();
    let again = rebuild::RebuildClaim::take(&app.parts.store).await;
    assert!(
        matches!(
            again,
            Err(crm_projections::ProjectionError::RebuildRunning { .. })
        ),
        "{again:?}"
    );
    // The same PostgreSQL store reached through another spelling of its URL (as another
    // host's config may have it) is the same store: refused too.
    if let crm_projections::store::Location::Postgres { url, schema } = app.parts.store.location() {
        let sep = if url.contains('?') { '&' } else { '?' };
        let elsewhere = ReadStore::open_at(&crm_projections::store::Location::Postgres {
            url: format!("{url}{sep}application_name=crm-elsewhere"),
            schema: schema.clone(),
        })
        .await
        .unwrap();
        let refused = rebuild::RebuildClaim::take(&elsewhere).await;
        assert!(
            matches!(
                refused,
                Err(crm_projections::ProjectionError::RebuildRunning { .. })
            ),
            "{refused:?}"
        );
        elsewhere.pool().close().await;
    }
    let (status, body) = app.post("/v1/admin/projections/health/rebuild").await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "rebuild_running", "{body}");
    assert!(!env.shadow_exists("views.sqlite", "health").await);
    held.release().await.unwrap();

    // Ops can start a rebuild over HTTP and watch it finish.
    let (status, _) = app.post("/v1/admin/projections/health/rebuild").await;
    assert_eq!(status, 202);
    let mut state = Value::Null;
    for _ in 0..500 {
        let (_, s) = app.get("/v1/admin/projections").await;
        state = s["projections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "health")
            .unwrap()
            .clone();
        if state["rebuild"]["state"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state["rebuild"]["state"], "done", "{state}");
    let head = app.parts.log.head().await.unwrap();
    assert!(head > 0);
    assert!(
        state["rebuild"]["total"]
            .as_u64()
            .is_some_and(|t| t >= head)
            && state["rebuild"]["done"] == state["rebuild"]["total"],
        "{state}"
    );
    let resp = app
        .http
        .post(format!("{}/v1/admin/projections/nope/rebuild", app.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    app.stop().await;
}

/// After a rebuild under a new policy, a live projector still running the old one stops
/// at its next commit instead of folding new events under the old policy on top of the
/// new rows (a view neither policy would give); so does one started with a policy other
/// than the one the views were built under. One under the views' policy goes on.
async fn a_live_projector_stops_rather_than_fold_under_another_policy_than_its_views(db: Db) {
    use crm_projections::ProjectionError;
    let env = Env::on(db).await;
    let log = env.log().await;
    let store = env.open_store("views.sqlite").await;
    crm_e2e::register_and_sign(&log, 3).await;
    let default = Arc::new(crm_projections::policy::default_policy());
    let mut policy = crm_projections::policy::default_policy();
    policy.version = "2026-12-generous".into();
    policy.trust.care_touch = 50;
    let generous = Arc::new(policy);
    let projector = |policy: &Arc<crm_domain::policy::Policy>| {
        Projector::new(
            TrustProjection::new(policy.clone()),
            store.clone(),
            log.clone(),
            ProjectorOptions::default(),
        )
    };
    let live = projector(&default);
    live.run_until(6).await.unwrap();

    rebuild::rebuild(
        &rebuild::RebuildClaim::take(&store).await.unwrap(),
        vec![TrustProjection::new(generous.clone())],
        &store,
        &log,
        100,
        &|_, _| {},
    )
    .await
    .unwrap();
    let rebuilt = crm_e2e::dump_views(&store).await;
    crm_e2e::register_and_sign(&log, 1).await;

    let err = live.run_until(8).await.unwrap_err();
    assert!(
        matches!(&err, ProjectionError::PolicyMismatch { projection, views, projector }
            if projection == "trust" && views == "2026-12-generous" && projector == "2026-11-default"),
        "{err}"
    );
    assert_eq!(store.checkpoint("trust").await.unwrap(), 6);
    assert_eq!(
        crm_e2e::dump_views(&store).await,
        rebuilt,
        "the old policy wrote"
    );
    // Started again with the old policy: refused the same way.
    let restarted = projector(&default).run_until(8).await.unwrap_err();
    assert!(
        matches!(restarted, ProjectionError::PolicyMismatch { .. }),
        "{restarted}"
    );
    // Under the views' policy it goes on.
    projector(&generous).run_until(8).await.unwrap();
    assert_eq!(store.checkpoint("trust").await.unwrap(), 8);
}

/// The secondary indexes of `audit_index` in `store`, by name.
/// Opens the audit index's shadow again, as the next rebuild of it would.
async fn reopen_audit_shadow(
    app: &App,
    claim: &rebuild::RebuildClaim,
) -> (ReadStore, rebuild::ShadowStart) {
    rebuild::open_shadow(claim, &app.parts.store, &[AuditProjection], &app.parts.log)
        .await
        .unwrap()
}

async fn audit_lookups(store: &ReadStore) -> Vec<String> {
    let sql = match store.dialect() {
        crm_projections::store::Dialect::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_index' \
             AND sql IS NOT NULL ORDER BY name"
        }
        crm_projections::store::Dialect::Postgres => {
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema() \
             AND tablename = 'audit_index' AND indexname <> 'audit_index_pkey' ORDER BY indexname"
        }
    };
    let rows: Vec<(String,)> = sqlx::query_as(sql).fetch_all(store.pool()).await.unwrap();
    rows.into_iter().map(|(n,)| n).collect()
}

async fn audit_rows(store: &ReadStore) -> Vec<(i64, String, String, String, i64, i64)> {
    sqlx::query_as(
        "SELECT sequence, customer_id, event_type, actor, occurred_us, recorded_us \
         FROM audit_index ORDER BY sequence",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

async fn a_rebuild_builds_the_audit_lookups_once_at_the_end_even_after_an_interruption(db: Db) {
    let env = Env::on(db).await;
    let app = App::start(&env).await;
    let ids = seed(&app, 6).await;
    app.settle().await;
    let lookups = audit_lookups(&app.parts.store).await;
    assert_eq!(
        lookups,
        [
            "audit_actor",
            "audit_customer",
            "audit_occurred",
            "audit_recorded",
            "audit_type"
        ]
    );
    let live_rows = audit_rows(&app.parts.store).await;
    let head = app.parts.log.head().await.unwrap();
    assert_eq!(live_rows.len() as u64, head);

    // A fresh shadow inserts its rows without the auditors' lookups; a rebuild killed
    // half-way leaves them dropped, their definitions kept in the shadow.
    let claim = rebuild::RebuildClaim::take(&app.parts.store).await.unwrap();
    let (shadow, start) = interrupted_rebuild(&app, &claim, AuditProjection, head).await;
    assert_eq!(start, rebuild::ShadowStart::Fresh);
    let half = shadow.checkpoint("audit").await.unwrap();
    assert!(half > 0 && half < head);
    assert!(audit_lookups(&shadow).await.is_empty());
    let (waiting,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM rebuild_deferred_indexes")
        .fetch_one(shadow.pool())
        .await
        .unwrap();
    assert_eq!(waiting, 5);
    shadow.pool().close().await;

    // Resumed, the shadow keeps them dropped until they are built, once, before the swap
    // (on SQLite, whose swap copies a table with its indexes page by page; a PostgreSQL
    // shadow never builds them: its swap inserts into the live table's own indexes).
    let (shadow, start) = reopen_audit_shadow(&app, &claim).await;
    assert_eq!(start, rebuild::ShadowStart::Resumed { at: half });
    assert!(audit_lookups(&shadow).await.is_empty());
    let sqlite = shadow.dialect() == crm_projections::store::Dialect::Sqlite;
    assert_eq!(
        rebuild::build_deferred_indexes(&shadow).await.unwrap(),
        sqlite
    );
    assert!(!rebuild::build_deferred_indexes(&shadow).await.unwrap());
    if sqlite {
        assert_eq!(audit_lookups(&shadow).await, lookups);
    } else {
        assert!(audit_lookups(&shadow).await.is_empty());
    }
    shadow.pool().close().await;

    // The next rebuild resumes without them, builds them before the swap, and the live
    // store ends with the same rows and every lookup, which the auditors' queries use.
    let policy = Arc::new(crm_projections::policy::default_policy());
    let done = rebuild_under(&app, &claim, "audit", policy, 10).await;
    assert_eq!(done, [("audit".to_owned(), head)]);
    assert_eq!(audit_lookups(&app.parts.store).await, lookups);
    assert_eq!(audit_rows(&app.parts.store).await, live_rows);
    let (s, page) = app
        .get(&format!("/v1/audit/events?customer_id={}", ids[0]))
        .await;
    assert_eq!(s, 200, "{page}");
    let listed = page["events"].as_array().unwrap();
    let expected = live_rows
        .iter()
        .filter(|r| r.1 == ids[0].to_string())
        .count();
    assert!(expected > 0);
    assert_eq!(listed.len(), expected, "{page}");
    app.stop().await;
}

/// A SQLite shadow is written without syncs, which only a crash of the machine can tear:
/// a shadow begun in another boot of the machine is started again rather than resumed,
/// and so is one SQLite cannot read at all. (Linux: the boot is read from /proc.)
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_from_another_boot_or_torn_is_started_again() {
    let env = Env::new().await;
    let app = App::start(&env).await;
    seed(&app, 4).await;
    app.settle().await;
    let head = app.parts.log.head().await.unwrap();
    let claim = rebuild::RebuildClaim::take(&app.parts.store).await.unwrap();

    // Same boot: resumed. The fingerprint names the boot.
    let (shadow, start) = interrupted_rebuild(&app, &claim, AuditProjection, head).await;
    assert_eq!(start, rebuild::ShadowStart::Fresh);
    let half = shadow.checkpoint("audit").await.unwrap();
    assert!(half > 0 && half < head);
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let (fingerprint,): (String,) =
        sqlx::query_as("SELECT fingerprint FROM rebuild_origin WHERE id = 1")
            .fetch_one(shadow.pool())
            .await
            .unwrap();
    assert!(
        fingerprint.ends_with(&format!("\nboot:{}", boot.trim())),
        "{fingerprint}"
    );
    shadow.pool().close().await;
    let (shadow, start) = reopen_audit_shadow(&app, &claim).await;
    assert_eq!(start, rebuild::ShadowStart::Resumed { at: half });

    // Begun in another boot: started again.
    sqlx::query("UPDATE rebuild_origin SET fingerprint = replace(fingerprint, $1, 'boot:0')")
        .bind(format!("boot:{}", boot.trim()))
        .execute(shadow.pool())
        .await
        .unwrap();
    shadow.pool().close().await;
    let (shadow, start) = reopen_audit_shadow(&app, &claim).await;
    assert!(
        matches!(&start, rebuild::ShadowStart::Discarded { fingerprint: Some(f) } if f.ends_with("boot:0")),
        "{start:?}"
    );
    assert_eq!(shadow.checkpoint("audit").await.unwrap(), 0);
    shadow.pool().close().await;

    // Torn past reading (its header overwritten): started again, and the rebuild that
    // follows swaps in every row.
    let (shadow, _) = interrupted_rebuild(&app, &claim, AuditProjection, head).await;
    shadow.pool().close().await;
    let crm_projections::store::Location::Sqlite(file) = shadow.location() else {
        unreachable!("a SQLite store's shadow is a file")
    };
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.write_all(&[0xA5; 4096]).unwrap();
    }
    let (shadow, start) = reopen_audit_shadow(&app, &claim).await;
    assert_eq!(start, rebuild::ShadowStart::Fresh);
    assert_eq!(shadow.checkpoint("audit").await.unwrap(), 0);
    shadow.pool().close().await;
    let live_rows = audit_rows(&app.parts.store).await;
    let policy = Arc::new(crm_projections::policy::default_policy());
    let done = rebuild_under(&app, &claim, "audit", policy, 10).await;
    assert_eq!(done, [("audit".to_owned(), head)]);
    assert_eq!(audit_rows(&app.parts.store).await, live_rows);
    app.stop().await;
}
