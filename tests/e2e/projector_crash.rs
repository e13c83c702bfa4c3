//! A projector killed between batches or inside a batch's transaction resumes to exactly
//! the view a rebuild from scratch produces.

use crm_e2e::{App, Env, read_all, register, sign};
use crm_log::StoredEvent;
use crm_projections::lifecycle::{self, LifecycleProjection};
use crm_projections::{ProjectionError, Projector, ProjectorOptions, ReadStore};
use serde_json::json;
use uuid::Uuid;

async fn generate(app: &App, customers: usize) {
    for i in 0..customers {
        let c = Uuid::now_v7();
        app.accept(c, register(&format!("Customer {i}"))).await;
        app.accept(c, sign("c1")).await;
        if i % 2 == 0 {
            app.accept(
                c,
                json!({"type": "renew_contract", "contract_id": "c1", "new_ends_on": "2026-12-31"}),
            )
            .await;
        }
        if i % 3 == 0 {
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
        }
    }
}

async fn dump(
    store: &ReadStore,
) -> (
    Vec<impl PartialEq + std::fmt::Debug>,
    Vec<impl PartialEq + std::fmt::Debug>,
) {
    (
        lifecycle::dump(store).await.unwrap(),
        lifecycle::dump_transitions(store).await.unwrap(),
    )
}

fn projector(
    store: &ReadStore,
    app: &App,
    batch: usize,
    crash: Option<u64>,
) -> Projector<LifecycleProjection> {
    Projector::new(
        LifecycleProjection,
        store.clone(),
        app.parts.log.clone(),
        ProjectorOptions {
            batch_size: batch,
            crash_before_commit_of_batch: crash,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_inside_and_between_batches_equals_rebuild() {
    let env = Env::new().await;
    let app = App::start_with(env.config("unused.sqlite"), false).await;
    generate(&app, 40).await;
    let events: Vec<StoredEvent> = read_all(&app.parts.log).await;
    let head = events.last().unwrap().sequence;
    assert!(head > 100);

    // Reference: one clean pass from scratch.
    let fresh = ReadStore::open_file(&env.path("fresh.sqlite"))
        .await
        .unwrap();
    projector(&fresh, &app, 10_000, None)
        .run_until(head)
        .await
        .unwrap();

    // Crash inside the transaction of batch 3: batches 1 and 2 stay, batch 3 vanishes.
    let crashed = ReadStore::open_file(&env.path("crashed.sqlite"))
        .await
        .unwrap();
    let err = projector(&crashed, &app, 25, Some(3))
        .run_until(head)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProjectionError::InjectedCrash { batch: 3 }),
        "{err}"
    );
    let cp = crashed.checkpoint("lifecycle").await.unwrap();
    assert!(cp > 0 && cp < head, "checkpoint {cp} of {head}");
    let applied_customers = lifecycle::dump(&crashed).await.unwrap().len();
    assert!(applied_customers > 0);

    // Killed between batches: stop at a sequence in the middle, then drop the projector.
    projector(&crashed, &app, 25, None)
        .run_until(head / 2)
        .await
        .unwrap();
    let mid = crashed.checkpoint("lifecycle").await.unwrap();
    assert!(mid >= head / 2 && mid < head, "{mid}");

    // Restart and finish: the same view as the clean pass, nothing lost or doubled.
    projector(&crashed, &app, 25, None)
        .run_until(head)
        .await
        .unwrap();
    assert_eq!(crashed.checkpoint("lifecycle").await.unwrap(), head);
    assert_eq!(dump(&crashed).await, dump(&fresh).await);

    // Re-applying a batch that is already reflected (redelivery) changes nothing.
    let mut conn = crashed.pool().acquire().await.unwrap();
    use crm_projections::Projection;
    LifecycleProjection
        .apply_batch(&mut conn, &events[..50])
        .await
        .unwrap();
    drop(conn);
    assert_eq!(dump(&crashed).await, dump(&fresh).await);
    app.stop().await;
}
