//! `audit`: auditors' queries over a large log through the audit index (issue 5), next to
//! answering the same query by scanning the log, and the raw consume rate, all measured in
//! the same run.

use std::time::{Duration, Instant};

use anyhow::Context;
use crm_log::EventLog;
use crm_projections::ReadStore;
use crm_projections::audit::{self as index, AuditFilter, AuditProjection};
use futures::StreamExt;
use time::{OffsetDateTime, PrimitiveDateTime, Time};

use crate::Args;
use crate::measure::{self, Latency, Measured, reset_peak_rss};
use crate::report::{RAW_CONSUME, Row, Table, baseline_rows};
use crate::scenarios::{Env, common_notes, preload, project_one, row_rss, timed_row};

/// One query as an auditor would send it to `GET /v1/audit/events`.
struct Query {
    name: String,
    filter: AuditFilter,
    /// Events per page.
    limit: u32,
    /// Follow `next_after_sequence` to the end (what `crm audit export` and NDJSON do).
    all_pages: bool,
}

fn day_start(d: time::Date) -> OffsetDateTime {
    PrimitiveDateTime::new(d, Time::MIDNIGHT).assume_utc()
}

/// Runs `q` once; returns the events it returned.
async fn run_query(store: &ReadStore, log: &EventLog, q: &Query) -> anyhow::Result<u64> {
    let mut after = 0;
    let mut n = 0u64;
    loop {
        let page = index::page(store, log, &q.filter, after, q.limit).await?;
        n += page.len() as u64;
        let full = page.len() as u32 == q.limit;
        match page.last() {
            Some(last) if q.all_pages && full => after = last.sequence,
            _ => return Ok(n),
        }
    }
}

/// Answers `filter` without the index: reads and decodes the whole log, keeps matches.
async fn scan(log: &EventLog, head: u64, filter: &AuditFilter) -> anyhow::Result<(u64, Duration)> {
    let t = Instant::now();
    let stream = log.read(0, head);
    let mut stream = std::pin::pin!(stream);
    let (mut seen, mut matched) = (0u64, 0u64);
    while seen < head {
        let e = stream.next().await.context("subscription ended")??;
        seen += 1;
        if filter.matches(&e) {
            matched += 1;
        }
    }
    Ok((matched, t.elapsed()))
}

pub async fn run(args: &Args) -> anyhow::Result<Table> {
    eprintln!("[audit] starting nats-server");
    let env = Env::start().await?;
    let log = env.log().await?;
    let (pre, demo_customers, pre_rss) = preload(args, &env, &log, args.audit_events).await?;
    let head = log.head().await?;

    eprintln!("[audit] building the audit index over {head} events");
    let store = ReadStore::open_file(&env.dir.path().join("audit.sqlite")).await?;
    reset_peak_rss();
    let mark = env.cpu.mark();
    let indexed = project_one(
        AuditProjection,
        store.clone(),
        log.clone(),
        args.projector(),
        head,
    )
    .await?;
    let index_row = timed_row(
        "audit index projection (from scratch)".into(),
        head,
        indexed,
        mark.share(),
        row_rss(),
    );

    // The middle of the business time the demo histories span.
    let (min_us, max_us): (i64, i64) =
        sqlx::query_as("SELECT MIN(occurred_us), MAX(occurred_us) FROM audit_index")
            .fetch_one(store.pool())
            .await?;
    let mid = OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(min_us + (max_us - min_us) / 2) * 1_000,
    )?
    .date();
    eprintln!(
        "[audit] business time from {} to {}",
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(min_us) * 1_000)?,
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(max_us) * 1_000)?
    );
    let first = log.get(1).await?.context("the log is empty")?;
    let last = log.get(head).await?.context("no head event")?;
    let recorded_mid =
        first.envelope.recorded_at + (last.envelope.recorded_at - first.envelope.recorded_at) / 2;
    let customer = log
        .get(head / 2)
        .await?
        .context("no middle event")?
        .envelope
        .customer_id
        .to_string();
    let typed = |ty: &str, from: time::Date, days: i64| AuditFilter {
        event_type: Some(ty.into()),
        from: Some(day_start(from)),
        to: Some(day_start(from + time::Duration::days(days))),
        ..AuditFilter::default()
    };
    let queries = vec![
        Query {
            name: "type complaint_logged, 90 days of business time, first page of 100".into(),
            filter: typed("complaint_logged", mid, 90),
            limit: 100,
            all_pages: false,
        },
        Query {
            name: "type contract_signed, one year of business time, first page of 1,000".into(),
            filter: typed("contract_signed", mid - time::Duration::days(180), 365),
            limit: 1_000,
            all_pages: false,
        },
        Query {
            name: "type contract_signed, one year of business time, first page of 100 (the API default)"
                .into(),
            filter: typed("contract_signed", mid - time::Duration::days(180), 365),
            limit: 100,
            all_pages: false,
        },
        Query {
            name: "type purchase_recorded, 30 days, every match in pages of 1,000".into(),
            filter: typed("purchase_recorded", mid, 30),
            limit: 1_000,
            all_pages: true,
        },
        Query {
            name: "type key_contact_changed, whole log, every match in pages of 1,000".into(),
            filter: AuditFilter {
                event_type: Some("key_contact_changed".into()),
                ..AuditFilter::default()
            },
            limit: 1_000,
            all_pages: true,
        },
        Query {
            name: "one customer, every event".into(),
            filter: AuditFilter {
                customer_id: Some(customer),
                ..AuditFilter::default()
            },
            limit: 1_000,
            all_pages: true,
        },
        Query {
            name: "recorded-time range (second half of the log), first page of 100".into(),
            filter: AuditFilter {
                recorded_from: Some(recorded_mid),
                ..AuditFilter::default()
            },
            limit: 100,
            all_pages: false,
        },
    ];

    let mut table = Table {
        scenario: format!(
            "audit: queries over {head} events of {demo_customers} demo customers, through the audit index (SQLite) and the log"
        ),
        ..Table::default()
    };
    table.rows.push(Row::of(
        format!("preload: demo histories via Customers::submit ({demo_customers} customers)"),
        &pre,
        pre_rss,
    ));
    table.rows.push(index_row);
    let mut notes = Vec::new();
    for q in &queries {
        eprintln!("[audit] {}", q.name);
        let mut lat = Vec::with_capacity(args.audit_repeats);
        let mut returned = 0;
        let t = Instant::now();
        for _ in 0..args.audit_repeats.max(1) {
            let one = Instant::now();
            returned = run_query(&store, &log, q).await?;
            lat.push(measure::micros(one.elapsed()));
        }
        let m = Measured {
            ok: args.audit_repeats.max(1) as u64,
            errors: 0,
            first_error: None,
            elapsed: t.elapsed(),
            latency: Latency::of(lat),
            issued: None,
            cpu: None,
        };
        table.rows.push(Row::of(
            format!("query: {} → {returned} events", q.name),
            &m,
            row_rss(),
        ));
        notes.push((q, returned));
    }

    // Where a page's time goes: the index lookup alone, and the raw direct gets of the same
    // scattered sequences (no decode) as the floor of reading them back from the log.
    let big = &queries[1];
    let seqs = index::query(&store, &big.filter, 0, u64::MAX, big.limit).await?;
    eprintln!(
        "[audit] index lookup alone, and raw direct gets of the same {} sequences",
        seqs.len()
    );
    let repeat = |rows: &mut Vec<Row>, name: String, lat: Vec<u32>, t: Instant| {
        let m = Measured {
            ok: lat.len() as u64,
            errors: 0,
            first_error: None,
            elapsed: t.elapsed(),
            latency: Latency::of(lat),
            issued: None,
            cpu: None,
        };
        rows.push(Row::of(name, &m, None));
    };
    let (mut lat, t) = (Vec::new(), Instant::now());
    for _ in 0..args.audit_repeats.max(1) {
        let one = Instant::now();
        index::query(&store, &big.filter, 0, u64::MAX, big.limit).await?;
        lat.push(measure::micros(one.elapsed()));
    }
    repeat(
        &mut table.rows,
        format!(
            "index lookup alone (SQL): {} → {} sequences",
            big.name,
            seqs.len()
        ),
        lat,
        t,
    );
    let stream = log.jetstream().get_stream(log.stream_name()).await?;
    let (mut lat, t) = (Vec::new(), Instant::now());
    for _ in 0..args.audit_repeats.max(1) {
        let one = Instant::now();
        let got: Vec<_> = futures::stream::iter(seqs.iter().copied())
            .map(|seq| stream.direct_get(seq))
            .buffered(64)
            .collect()
            .await;
        anyhow::ensure!(got.iter().all(Result::is_ok), "a direct get failed");
        lat.push(measure::micros(one.elapsed()));
    }
    repeat(
        &mut table.rows,
        format!(
            "baseline: raw direct get of the same {} scattered sequences, 64 in flight (no decode)",
            seqs.len()
        ),
        lat,
        t,
    );

    // The same answers without the index: the whole log read, decoded and filtered. Also a
    // check that the index returned exactly what the log holds.
    eprintln!("[audit] scanning the log for the same answers");
    for (q, returned) in notes.iter().filter(|(q, _)| q.all_pages) {
        let (matched, took) = scan(&log, head, &q.filter).await?;
        anyhow::ensure!(
            matched == *returned,
            "{}: the index returned {returned} events, a scan of the log finds {matched}",
            q.name
        );
        table.rows.push(timed_row(
            format!(
                "scan of the log for: {} → {matched} events (events scanned /s)",
                q.name
            ),
            head,
            took,
            None,
            None,
        ));
    }
    let size = crate::raw::mean_payload(log.jetstream(), log.stream_name(), 1, head, 2_000).await?;
    eprintln!("[audit] baselines");
    let b = env.baselines(args, size, head).await?;
    let raw_consume = b.consume.rate();
    for row in table.rows.iter_mut().filter(|r| r.name.starts_with("scan")) {
        *row = row.clone().vs(RAW_CONSUME, raw_consume);
    }
    table.rows.extend(baseline_rows(&b));
    table.notes = common_notes(args, size, &b);
    table.notes.push(format!(
        "queries run {} times each; latency is one whole query (every page when it says so), \
         events fetched from the log by direct get; the raw ordered consume of the whole log \
         takes {:.2} s, the floor of any answer that scans",
        args.audit_repeats.max(1),
        head as f64 / raw_consume.max(1e-9)
    ));
    table.notes.extend(env.closing_notes());
    Ok(table)
}
