//! What the stream itself guarantees: immutability, refusing a misconfigured stream, the
//! hash chain, and the eventually EventStore contract.

use async_nats::jetstream;
use crm_domain::CustomerId;
use crm_domain::event::{CareTouchRecorded, Event};
use crm_domain::types::CareTouchKind;
use crm_e2e::{App, Db, Env, assert_chain, read_all, register};
use crm_log::eventstore::JetStreamEventStore;
use crm_log::{Customers, EventLog, LogError, NatsConfig, StoredEvent, StreamSettings};
use eventually_core::store::{AppendError, EventStore, Expected, Select};
use futures::TryStreamExt;
use std::sync::Arc;
use uuid::Uuid;

#[tokio::test]
async fn delete_and_purge_are_refused_by_the_server() {
    let env = Env::new().await;
    let app = App::start(&env).await;
    let c = Uuid::now_v7();
    app.accept(c, register("Immutable")).await;

    let log = env.log().await;
    assert!(log.try_delete(1).await.is_err());
    assert!(log.try_purge().await.is_err());

    // Also with a plain JetStream client, not through our adapter.
    let client = async_nats::connect(env.nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let stream = js.get_stream("CRM_EVENTS").await.unwrap();
    assert!(stream.delete_message(1).await.is_err());
    assert!(stream.purge().await.is_err());
    assert!(
        stream
            .purge()
            .filter(format!("crm.events.*.{c}"))
            .await
            .is_err()
    );
    let mut stream = stream;
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 1);
    assert!(info.config.deny_delete && info.config.deny_purge && info.config.allow_direct);
    assert_eq!(
        info.config
            .metadata
            .get("crm.partitions")
            .map(String::as_str),
        Some("16")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_mutable_stream_is_refused() {
    let env = Env::new().await;
    let client = async_nats::connect(env.nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    js.create_stream(jetstream::stream::Config {
        name: "CRM_EVENTS".into(),
        subjects: vec!["crm.events.*.*".into()],
        allow_direct: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let err = EventLog::open(client, &StreamSettings::default())
        .await
        .unwrap_err();
    match err {
        LogError::StreamMisconfigured { reason, .. } => {
            assert!(reason.contains("deny_delete"), "{reason}")
        }
        other => panic!("expected StreamMisconfigured, got {other}"),
    }
}

#[tokio::test]
async fn envelopes_carry_headers_schema_and_a_verifiable_chain() {
    let env = Env::new().await;
    let app = App::start(&env).await;
    let c = Uuid::now_v7();
    app.accept(c, register("Chain")).await;
    app.accept(c, crm_e2e::sign("c1")).await;
    app.accept(
        c,
        serde_json::json!({"type": "record_care_touch", "kind": "birthday"}),
    )
    .await;

    let client = async_nats::connect(env.nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let stream = js.get_stream("CRM_EVENTS").await.unwrap();
    let raw = stream.direct_get(2).await.unwrap();
    // Exactly these of our own headers: every one is stored with every message and parsed
    // by every reader, and the envelope carries the rest. (A direct get adds the server's
    // `Nats-Sequence`, `Nats-Stream`, `Nats-Subject` and `Nats-Time-Stamp`.)
    let mut ours: Vec<String> = raw
        .headers
        .iter()
        .map(|(n, _)| n.to_string())
        .filter(|n| n.starts_with("Crm-"))
        .collect();
    ours.sort();
    assert_eq!(ours, ["Crm-Event-Id", "Crm-Event-Type"]);
    assert_eq!(
        raw.headers
            .get("Nats-Expected-Last-Subject-Sequence")
            .map(|v| v.as_str()),
        Some("1"),
        "the optimistic-concurrency check is kept with the message"
    );
    assert_eq!(
        raw.headers.get("Crm-Event-Type").map(|v| v.as_str()),
        Some("contract_signed")
    );
    let json: serde_json::Value = serde_json::from_slice(&raw.payload).unwrap();
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["version"], 2);
    assert_eq!(json["customer_id"], c.to_string());
    assert_eq!(
        raw.headers
            .get("Crm-Event-Id")
            .map(|v| v.as_str().to_owned()),
        json["event_id"].as_str().map(str::to_owned)
    );
    let subject = raw.subject.to_string();
    assert!(
        subject.starts_with("crm.events.") && subject.ends_with(&c.to_string()),
        "{subject}"
    );

    let log = env.log().await;
    let events = read_all(&log).await;
    assert_chain(&events);
    // Tampering with any byte of content is detectable.
    let mut forged = events[1].clone();
    let mut payload = forged.envelope.payload.to_value();
    payload["value_minor"] = serde_json::json!(1);
    forged.envelope.payload = payload.into();
    assert!(!forged.envelope.hash_is_valid());
    app.stop().await;
}

/// A subscription tells with every event how many more the log held for it: projectors
/// gather full batches while it is behind and commit each event once it has caught up.
#[tokio::test]
async fn subscribed_events_tell_how_far_behind_the_head_the_reader_is() {
    use futures::StreamExt;
    let env = Env::new().await;
    let app = App::start(&env).await;
    let c = Uuid::now_v7();
    app.accept(c, register("Behind")).await;
    for _ in 0..4 {
        app.accept(
            c,
            serde_json::json!({"type": "record_care_touch", "kind": "birthday"}),
        )
        .await;
    }
    let log = env.log().await;
    assert_eq!(log.head().await.unwrap(), 5);
    for after in [0, 3] {
        let got: Vec<(u64, u64)> = log
            .subscribe(after)
            .await
            .unwrap()
            .take(5 - after as usize)
            .map(|e| {
                let e = e.unwrap();
                (e.sequence, e.behind())
            })
            .collect()
            .await;
        let want: Vec<(u64, u64)> = (after + 1..=5).map(|s| (s, 5 - s)).collect();
        assert_eq!(got, want, "subscribed after {after}");
    }
    app.accept(
        c,
        serde_json::json!({"type": "record_care_touch", "kind": "holiday"}),
    )
    .await;
    let mut live = std::pin::pin!(log.subscribe(5).await.unwrap());
    let sixth = live.next().await.unwrap().unwrap();
    assert_eq!((sixth.sequence, sixth.behind()), (6, 0));
    app.stop().await;
}

#[tokio::test]
async fn eventually_event_store_contract() {
    let env = Env::new().await;
    let log = env.log().await;
    let customers = Arc::new(Customers::new(log.clone(), 100, 4));
    let mut store = JetStreamEventStore::new(customers, "test");
    let id = CustomerId::new(Uuid::now_v7());
    let touch = || {
        Event::CareTouchRecorded(CareTouchRecorded {
            kind: CareTouchKind::Holiday,
            note: None,
        })
    };

    assert_eq!(
        store
            .append(id, Expected::Exact(0), vec![touch()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .append(id, Expected::Exact(1), vec![touch(), touch()])
            .await
            .unwrap(),
        3
    );
    let conflict = store
        .append(id, Expected::Exact(1), vec![touch()])
        .await
        .unwrap_err();
    assert!(conflict.is_conflict_error());
    assert_eq!(
        store
            .append(id, Expected::Any, vec![touch()])
            .await
            .unwrap(),
        4
    );

    let all: Vec<_> = store
        .stream(id, Select::All)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        all.iter()
            .map(eventually_core::versioning::Versioned::version)
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let from3: Vec<_> = store
        .stream(id, Select::From(3))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(from3.len(), 2);
    let everything: Vec<_> = store
        .stream_all(Select::All)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(everything.len(), 4);
    assert!(matches!(
        store.remove(id).await,
        Err(LogError::Immutable(_))
    ));
    assert_chain(&read_all(&log).await);
}

/// A writer appends batches of 200 events (a registration, then care touches) to new
/// customers through the event store while the command path keeps recording care
/// touches for the same customer once it is registered. Every batch outcome is honest
/// about what it wrote: success wrote them all, a conflict nothing, and a batch the other
/// writer cut into says how many it wrote (`PartialAppend`, not a conflict a caller would
/// retry whole). Checked by the actor on each writer's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_short_by_another_writer_is_not_reported_as_a_conflict() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let env = Env::new().await;
    let log = env.log().await;
    let customers = Arc::new(Customers::new(log.clone(), 1_000, 8));
    let touch = || {
        Event::CareTouchRecorded(CareTouchRecorded {
            kind: CareTouchKind::Holiday,
            note: None,
        })
    };
    let batch = || {
        let mut events = vec![Event::CustomerRegistered(
            crm_domain::event::CustomerRegistered {
                name: "Batched".into(),
                segment: None,
                region: None,
                account_manager: None,
                acquisition_channel: None,
            },
        )];
        events.extend((1..200).map(|_| touch()));
        events
    };
    let mut batches = JetStreamEventStore::new(customers.clone(), "batches");
    let mut outcomes = Vec::new();
    let mut singles_written = std::collections::HashMap::new();
    // Until a few batches were cut into (about half are, on 2 cores), at most 200.
    let cut = |outcomes: &[(CustomerId, Result<u32, LogError>)]| {
        outcomes
            .iter()
            .filter(|(_, r)| matches!(r, Err(LogError::PartialAppend { .. })))
            .count()
    };
    while outcomes.len() < 200 && cut(&outcomes) < 3 {
        let id = CustomerId::new(Uuid::now_v7());
        let stop = Arc::new(AtomicBool::new(false));
        let singles = tokio::spawn({
            let customers = customers.clone();
            let stop = stop.clone();
            async move {
                let command: crm_domain::Command = serde_json::from_value(
                    serde_json::json!({"type": "record_care_touch", "kind": "holiday"}),
                )
                .unwrap();
                let opts = crm_log::SubmitOptions::now("singles");
                let mut written = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    match customers.submit(id, &command, &opts).await {
                        Ok(_) => written += 1,
                        // Not registered yet, or the batch kept winning.
                        Err(_) => tokio::task::yield_now().await,
                    }
                }
                written
            }
        });
        let result = batches.append(id, Expected::Any, batch()).await;
        stop.store(true, Ordering::Relaxed);
        singles_written.insert(id, singles.await.unwrap());
        outcomes.push((id, result));
    }
    let events = read_all(&log).await;
    let by = |id: &CustomerId, actor: &str| {
        events
            .iter()
            .filter(|e| e.envelope.customer_id == *id && e.envelope.actor == actor)
            .count()
    };
    for (id, result) in &outcomes {
        let wrote = by(id, "batches");
        match result {
            Ok(_) => assert_eq!(wrote, 200, "{id}"),
            Err(e) if e.is_conflict_error() => assert_eq!(wrote, 0, "{id}: {e}"),
            Err(LogError::PartialAppend { written, of, cause }) => {
                // After a conflict exactly `written`; after a lost ack perhaps one more.
                let exact = cause.contains("concurrent append");
                let written = *written as usize;
                assert!(
                    wrote == written || (!exact && wrote == written + 1),
                    "{id}: {wrote} written, reported {written} ({cause})"
                );
                assert_eq!(*of, 200);
                assert!(written > 0);
            }
            Err(e) => panic!("{id}: {e}"),
        }
        assert_eq!(by(id, "singles"), singles_written[id], "{id}");
        let chain: Vec<_> = events
            .iter()
            .filter(|e| e.envelope.customer_id == *id)
            .cloned()
            .collect();
        assert_chain(&chain);
    }
    let cut_short = cut(&outcomes);
    eprintln!(
        "batches cut short by the other writer: {cut_short} of {}; whole: {}; conflicts: {}; singles written: {}",
        outcomes.len(),
        outcomes.iter().filter(|(_, r)| r.is_ok()).count(),
        outcomes
            .iter()
            .filter(|(_, r)| r.as_ref().is_err_and(|e| e.is_conflict_error()))
            .count(),
        singles_written.values().sum::<usize>()
    );
    assert!(
        cut_short > 0,
        "no batch was cut into: the case under test did not happen"
    );
}

/// A fresh server whose log holds `per_customer` care touches for each of `customers`
/// customers, appended round robin in runs of three through the event store; with the
/// log's head.
async fn filled_log(customers: usize, per_customer: u32) -> (Env, EventLog, u64) {
    let env = Env::new().await;
    let log = env.log().await;
    let mut store = JetStreamEventStore::new(Arc::new(Customers::new(log.clone(), 100, 4)), "test");
    let ids: Vec<CustomerId> = (0..customers)
        .map(|_| CustomerId::new(Uuid::now_v7()))
        .collect();
    let touch = || {
        Event::CareTouchRecorded(CareTouchRecorded {
            kind: CareTouchKind::Holiday,
            note: None,
        })
    };
    let mut version = 0;
    while version < per_customer {
        let n = (per_customer - version).min(3);
        for id in &ids {
            let events = (0..n).map(|_| touch()).collect();
            store
                .append(*id, Expected::Exact(version), events)
                .await
                .unwrap();
        }
        version += n;
    }
    let head = log.head().await.unwrap();
    (env, log, head)
}

/// The catch-up read (`EventLog::read`, as projectors, rebuilds and audits use it) returns
/// exactly the events of its range, in log order, the same as the live subscription, across
/// many pull requests, and ends after the last one.
#[tokio::test]
async fn a_catch_up_read_returns_exactly_its_range_across_many_pulls() {
    use futures::StreamExt;
    let (env, lean_log, head) = filled_log(10, 60).await;
    assert_eq!(head, 600);
    let subscribed: Vec<_> = lean_log
        .subscribe(0)
        .await
        .unwrap()
        .take(600)
        .try_collect()
        .await
        .unwrap();
    // On the read's own lean connection, and through async-nats.
    for log in [lean_log, env.client_only_log().await] {
        a_catch_up_read_returns_exactly_its_range(&log, head, &subscribed).await;
    }
}

async fn a_catch_up_read_returns_exactly_its_range(
    log: &EventLog,
    head: u64,
    subscribed: &[StoredEvent],
) {
    for (after, until, pull) in [
        (0, 600, 64),
        (137, 462, 7),
        (599, 600, 64),
        (0, 600, 10_000),
    ] {
        let read: Vec<_> = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            log.read_in_pulls(after, until, pull)
                .try_collect::<Vec<_>>(),
        )
        .await
        .expect("the read ends after its last event")
        .unwrap();
        let want = &subscribed[after as usize..until as usize];
        assert_eq!(
            read.len(),
            want.len(),
            "read ({after}, {until}] in pulls of {pull}"
        );
        assert_eq!(read, want, "read ({after}, {until}] in pulls of {pull}");
        // Events tell how many more the log held, as subscribed ones do.
        assert_eq!(read.last().unwrap().behind(), head - until);
    }
    // An empty range ends at once.
    let none: Vec<_> = log.read(600, 600).try_collect().await.unwrap();
    assert!(none.is_empty());
    // No consumer is left behind by reads that ended.
    let consumers: Vec<_> = log
        .jetstream()
        .get_stream(log.stream_name())
        .await
        .unwrap()
        .consumer_names()
        .try_collect()
        .await
        .unwrap();
    assert!(
        consumers.len() <= 1,
        "only the subscription's ordered consumer may remain: {consumers:?}"
    );
}

/// A catch-up read whose consumer disappears mid-way (deleted, or lost with a server) starts
/// again right after the last event it delivered: nothing is skipped, nothing repeated.
#[tokio::test]
async fn a_catch_up_read_survives_its_consumer_being_deleted() {
    let (env, lean_log, head) = filled_log(8, 50).await;
    assert_eq!(head, 400);
    a_catch_up_read_survives_a_deleted_consumer(&lean_log, head).await;
    a_catch_up_read_survives_a_deleted_consumer(&env.client_only_log().await, head).await;
}

async fn a_catch_up_read_survives_a_deleted_consumer(log: &EventLog, head: u64) {
    use futures::StreamExt;
    let mut read = std::pin::pin!(log.read_in_pulls(0, head, 20));
    let mut got = Vec::new();
    while got.len() < 150 {
        got.push(read.next().await.unwrap().unwrap().sequence);
    }
    let js_stream = log.jetstream().get_stream(log.stream_name()).await.unwrap();
    let names: Vec<String> = js_stream.consumer_names().try_collect().await.unwrap();
    assert_eq!(names.len(), 1, "the read's own consumer: {names:?}");
    js_stream.delete_consumer(&names[0]).await.unwrap();
    let rest = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(e) = read.next().await {
            got.push(e.unwrap().sequence);
        }
    })
    .await;
    assert!(
        rest.is_ok(),
        "the read went on after its consumer was deleted"
    );
    assert_eq!(got, (1..=head).collect::<Vec<_>>());
}

/// Credentials written into the NATS URL (`nats://user:password@host`, `nats://token@host`)
/// log in, as they do for other NATS clients; wrong ones are refused, and the error names
/// the server without the secret.
#[tokio::test]
async fn credentials_in_the_url_log_in_and_never_show_in_errors() {
    use crm_log::server::{NatsServer, ServerOptions};
    for (args, good, bad) in [
        (
            vec!["--user", "crm", "--pass", "s3cr%t"],
            "crm:s3cr%25t",
            "crm:n0pe-secret",
        ),
        (vec!["--auth", "t0ken"], "t0ken", "n0pe-secret"),
    ] {
        let server = NatsServer::start_with(ServerOptions {
            extra_args: args.iter().map(ToString::to_string).collect(),
            ..ServerOptions::default()
        })
        .await
        .unwrap();
        let url = |creds: &str| format!("nats://{creds}@127.0.0.1:{}", server.port());
        let log = EventLog::connect(&NatsConfig::url(url(good)), &StreamSettings::default())
            .await
            .unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(log.head().await.unwrap(), 0);
        let err =
            match EventLog::connect(&NatsConfig::url(url(bad)), &StreamSettings::default()).await {
                Ok(_) => panic!("{bad}: wrong credentials were taken"),
                Err(e) => e.to_string(),
            };
        assert!(!err.contains("n0pe-secret"), "{err}");
        assert!(err.contains("***@127.0.0.1"), "{err}");
    }
}

/// Range reads run on a lean connection of their own ([`crm_log::wire`]) that logs in as
/// the log's configuration says (a user and password, or a token), refuses wrong
/// credentials, and reads the same events as async-nats does.
#[tokio::test]
async fn a_lean_connection_logs_in_as_the_log_does_and_reads_the_same_events() {
    use crm_log::connect::Secret;
    use crm_log::server::{NatsServer, ServerOptions};
    use crm_log::wire::Dialer;
    for (args, how) in [
        (["--user", "crm", "--pass", "s3cret"], "user"),
        (["--auth", "t0ken", "", ""], "token"),
    ] {
        let server = NatsServer::start_with(ServerOptions {
            extra_args: args
                .iter()
                .filter(|a| !a.is_empty())
                .map(ToString::to_string)
                .collect(),
            ..ServerOptions::default()
        })
        .await
        .unwrap();
        let port = server.port();
        let mut config = NatsConfig::url(format!("nats://127.0.0.1:{port}"));
        let mut wrong = config.clone();
        match how {
            "user" => {
                config.user = Some("crm".into());
                config.password = Some(Secret::new("s3cret"));
                wrong.user = Some("crm".into());
                wrong.password = Some(Secret::new("nope"));
            }
            _ => {
                config.token = Some(Secret::new("t0ken"));
                wrong.token = Some(Secret::new("nope"));
            }
        }
        let dialer = Dialer::new(&config).expect("a plain configuration has a lean connection");
        dialer
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{how}: the lean connection logs in: {e}"));
        let refused = Dialer::new(&wrong)
            .expect("a dialer")
            .connect()
            .await
            .err()
            .unwrap_or_else(|| panic!("{how}: wrong credentials are refused"));
        assert!(refused.to_string().contains("refused"), "{how}: {refused}");

        let log = EventLog::connect(&config, &StreamSettings::default())
            .await
            .unwrap();
        assert!(log.lean_reads(), "{how}: the log reads on lean connections");
        let mut store =
            JetStreamEventStore::new(Arc::new(Customers::new(log.clone(), 100, 4)), "test");
        for _ in 0..5 {
            let id = CustomerId::new(Uuid::now_v7());
            let events = (0..4)
                .map(|_| {
                    Event::CareTouchRecorded(CareTouchRecorded {
                        kind: CareTouchKind::Holiday,
                        note: None,
                    })
                })
                .collect();
            store.append(id, Expected::Exact(0), events).await.unwrap();
        }
        let head = log.head().await.unwrap();
        assert_eq!(head, 20);
        let lean: Vec<StoredEvent> = log.read_in_pulls(0, head, 3).try_collect().await.unwrap();
        let client = crm_log::connect(&config).await.unwrap();
        let through_client = EventLog::open(client, &StreamSettings::default())
            .await
            .unwrap();
        assert!(!through_client.lean_reads());
        let want: Vec<StoredEvent> = through_client.read(0, head).try_collect().await.unwrap();
        assert_eq!(
            lean.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            (1..=head).collect::<Vec<_>>(),
            "{how}"
        );
        assert_eq!(lean, want, "{how}");
    }
}

/// An event that cannot be decoded is an error item of a catch-up read, which then goes on
/// with the next event, on both paths and even in pulls of one.
#[tokio::test]
async fn a_catch_up_read_reports_an_undecodable_event_and_goes_on() {
    use futures::StreamExt;
    let (env, lean_log, head) = filled_log(2, 3).await;
    assert_eq!(head, 6);
    let stranger = CustomerId::new(Uuid::now_v7());
    let subject = crm_log::subject::customer_subject(&stranger, lean_log.partitions());
    lean_log
        .jetstream()
        .publish(subject, "not an envelope".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // One more event after it.
    let mut store =
        JetStreamEventStore::new(Arc::new(Customers::new(lean_log.clone(), 100, 4)), "test");
    let touch = Event::CareTouchRecorded(CareTouchRecorded {
        kind: CareTouchKind::Holiday,
        note: None,
    });
    store
        .append(
            CustomerId::new(Uuid::now_v7()),
            Expected::Exact(0),
            vec![touch],
        )
        .await
        .unwrap();
    let head = lean_log.head().await.unwrap();
    assert_eq!(head, 8);
    for log in [lean_log, env.client_only_log().await] {
        for pull in [1, 64] {
            let items: Vec<_> = tokio::time::timeout(
                std::time::Duration::from_secs(20),
                log.read_in_pulls(0, head, pull).collect::<Vec<_>>(),
            )
            .await
            .expect("the read goes on after the undecodable event and ends after the last");
            assert_eq!(items.len(), 8, "pulls of {pull}");
            for (i, item) in items.iter().enumerate() {
                match item {
                    Ok(e) => assert_eq!(e.sequence, i as u64 + 1),
                    Err(LogError::Decode { sequence, .. }) => assert_eq!(*sequence, 7),
                    Err(e) => panic!("pulls of {pull}: {e}"),
                }
            }
            assert!(
                matches!(items[6], Err(LogError::Decode { sequence: 7, .. })),
                "pulls of {pull}: the stranger's message is a decode error"
            );
        }
    }
}

/// A managed PostgreSQL usually requires TLS: a URL with `sslmode=require` opens the read
/// store over TLS (the build carries rustls for it) when the server offers TLS, and is
/// refused, not downgraded, when it does not.
#[tokio::test]
async fn the_read_store_opens_over_tls_when_the_url_requires_it() {
    use crm_projections::store::Location;
    let env = Env::on(Db::Postgres).await;
    let Location::Postgres { url, schema } = env.location("tls.sqlite") else {
        unreachable!("a PostgreSQL env")
    };
    let plain = env.open_store("plain.sqlite").await;
    let (ssl,): (String,) = sqlx::query_as("SHOW ssl")
        .fetch_one(plain.pool())
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let required = Location::Postgres {
        url: format!("{url}{sep}sslmode=require"),
        schema,
    };
    let opened = crm_projections::ReadStore::open_at(&required).await;
    if ssl == "on" {
        let store = opened.unwrap_or_else(|e| panic!("sslmode=require on a TLS server: {e}"));
        let (encrypted,): (bool,) =
            sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert!(encrypted, "the connection is encrypted");
    } else {
        assert!(
            opened.is_err(),
            "sslmode=require on a server without TLS is refused"
        );
    }
}
