//! The raw JetStream baselines, measured on the same server in the same run, with the
//! message size and count of the scenario they are compared with: asynchronous publish with
//! a window of outstanding acks, publish-and-wait one at a time, and an ordered pull
//! consumer reading without acks. They use a throwaway stream, never `CRM_EVENTS`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use crm_log::wire::{Dialer, Op};
use futures::StreamExt;

use crate::measure::{CpuMeter, Latency, Measured, micros};

/// The throwaway stream of the baselines.
pub const RAW_STREAM: &str = "BENCH_RAW";
/// The throwaway stream of the reference run with headers.
pub const RAW_HEADERS_STREAM: &str = "BENCH_RAW_HDR";
/// Distinct subjects the raw messages are spread over.
pub const RAW_SUBJECTS: usize = 10_000;

/// How to run the baselines.
#[derive(Debug, Clone, Copy)]
pub struct RawPlan {
    /// Payload bytes per message.
    pub size: usize,
    /// Messages for the asynchronous publish and the consume.
    pub count: u64,
    /// Messages for publish-and-wait (at most `count`).
    pub sync_count: u64,
    /// Outstanding acks of the asynchronous publish.
    pub window: usize,
}

/// The three baselines.
#[derive(Debug, Clone)]
pub struct Baselines {
    pub plan: RawPlan,
    pub async_publish: Measured,
    pub sync_publish: Measured,
    pub consume: Measured,
    /// Reference: the same publish and consume, with the two `Crm-*` headers the log
    /// writes on every event.
    pub async_publish_headers: Measured,
    pub consume_headers: Measured,
    /// Reference: the baseline's consume on the lean connection range reads use
    /// (`crm_log::wire`), in pulls of `crm_log::read::PULL`: how much of the baseline is
    /// async-nats's own cost per message.
    pub consume_lean: Option<Measured>,
}

/// A new, empty file-backed stream `name` (an old one of that name is deleted) on
/// `prefix.>`, and its [`RAW_SUBJECTS`] subjects.
async fn fresh_stream(
    js: &jetstream::Context,
    name: &str,
    prefix: &str,
) -> anyhow::Result<(stream::Stream, Vec<Subject>)> {
    let _ = js.delete_stream(name).await;
    let stream = js
        .create_stream(stream::Config {
            name: name.into(),
            subjects: vec![format!("{prefix}.>")],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating the stream {name}"))?;
    let subjects = (0..RAW_SUBJECTS)
        .map(|i| Subject::from(format!("{prefix}.{i}")))
        .collect();
    Ok((stream, subjects))
}

fn payload(size: usize) -> Bytes {
    // JSON-looking filler of exactly `size` bytes.
    let mut v = vec![b'x'; size.max(2)];
    v[0] = b'"';
    let last = v.len() - 1;
    v[last] = b'"';
    Bytes::from(v)
}

/// Measures the three baselines on a fresh `BENCH_RAW` stream (kept for [`consume_again`]).
pub async fn measure(
    client: &async_nats::Client,
    dialer: Option<&Dialer>,
    plan: RawPlan,
    cpu: CpuMeter,
) -> anyhow::Result<Baselines> {
    let js = jetstream::new(client.clone());
    let (raw, subjects) = fresh_stream(&js, RAW_STREAM, "bench").await?;
    let body = payload(plan.size);

    eprintln!(
        "  baseline: async publish of {} x {} B, {} outstanding acks",
        plan.count, plan.size, plan.window
    );
    let mark = cpu.mark();
    let async_publish = publish_windowed(&js, &subjects, &body, plan.count, plan.window, false)
        .await?
        .with_cpu(&mark);
    eprintln!("  baseline: ordered consume of {} messages", plan.count);
    let mark = cpu.mark();
    let consume = consume_ordered(&raw, plan.count).await?.with_cpu(&mark);
    let consume_lean = match dialer {
        Some(dialer) => {
            eprintln!(
                "  reference: consume of {} messages on a lean connection",
                plan.count
            );
            let mark = cpu.mark();
            Some(
                consume_lean(&raw, dialer, plan.count)
                    .await?
                    .with_cpu(&mark),
            )
        }
        None => None,
    };
    let sync_count = plan.sync_count.min(plan.count).max(1);
    eprintln!("  baseline: publish-and-wait of {sync_count} messages");
    let mark = cpu.mark();
    let sync_publish = sync_publish(&js, &subjects, &body, sync_count)
        .await?
        .with_cpu(&mark);
    // The stream stays for `consume_again` (the scenario's nats-server and its temporary
    // store go at the end of the scenario).

    eprintln!("  reference: async publish and consume with the two Crm-* headers");
    let (with_headers, subjects) = fresh_stream(&js, RAW_HEADERS_STREAM, "benchh").await?;
    let mark = cpu.mark();
    let async_publish_headers =
        publish_windowed(&js, &subjects, &body, plan.count, plan.window, true)
            .await?
            .with_cpu(&mark);
    let mark = cpu.mark();
    let consume_headers = consume_ordered(&with_headers, plan.count)
        .await?
        .with_cpu(&mark);
    let _ = js.delete_stream(RAW_HEADERS_STREAM).await;
    Ok(Baselines {
        plan,
        async_publish,
        sync_publish,
        consume,
        async_publish_headers,
        consume_headers,
        consume_lean,
    })
}

/// The raw ordered consume baseline again, on the stream [`measure`] published (which holds
/// `count` messages of the baseline's size, and the publish-and-wait ones after them): for a
/// ratio against a baseline measured right beside the row it is compared with.
pub async fn consume_again(
    client: &async_nats::Client,
    count: u64,
    cpu: CpuMeter,
) -> anyhow::Result<Measured> {
    let js = jetstream::new(client.clone());
    let raw = js
        .get_stream(RAW_STREAM)
        .await
        .context("the raw baseline's stream")?;
    let mark = cpu.mark();
    Ok(consume_ordered(&raw, count).await?.with_cpu(&mark))
}

async fn publish_windowed(
    js: &jetstream::Context,
    subjects: &[Subject],
    body: &Bytes,
    count: u64,
    window: usize,
    crm_headers: bool,
) -> anyhow::Result<Measured> {
    let window = window.max(1);
    let mut lat = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut pending: VecDeque<(Instant, jetstream::context::PublishAckFuture)> =
        VecDeque::with_capacity(window);
    let start = Instant::now();
    for i in 0..count {
        if pending.len() >= window
            && let Some((t, ack)) = pending.pop_front()
        {
            ack.await.context("raw publish ack")?;
            lat.push(micros(t.elapsed()));
        }
        let t = Instant::now();
        let subject = subjects[(i as usize) % subjects.len()].clone();
        let ack = if crm_headers {
            js.publish_with_headers(subject, headers(), body.clone())
                .await
        } else {
            js.publish(subject, body.clone()).await
        }
        .context("raw publish")?;
        pending.push_back((t, ack));
    }
    while let Some((t, ack)) = pending.pop_front() {
        ack.await.context("raw publish ack")?;
        lat.push(micros(t.elapsed()));
    }
    Ok(finished(count, start.elapsed(), lat))
}

/// The `Crm-*` headers `EventLog::append` writes (event type and id). Its third header,
/// `Nats-Expected-Last-Subject-Sequence`, is left out: a pipelined publish cannot know
/// each subject's last sequence, and a wrong one is refused.
fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(crm_log::log::HEADER_EVENT_TYPE, "activity_recorded");
    h.insert(
        crm_log::log::HEADER_EVENT_ID,
        uuid::Uuid::now_v7().to_string().as_str(),
    );
    h
}

async fn sync_publish(
    js: &jetstream::Context,
    subjects: &[Subject],
    body: &Bytes,
    count: u64,
) -> anyhow::Result<Measured> {
    let mut lat = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let start = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        // Different subjects from the async run's first messages do not matter: the
        // stream has no per-subject limits.
        let subject = subjects[(i as usize * 7 + 3) % subjects.len()].clone();
        js.publish(subject, body.clone())
            .await
            .context("raw publish")?
            .await
            .context("raw publish ack")?;
        lat.push(micros(t.elapsed()));
    }
    Ok(finished(count, start.elapsed(), lat))
}

/// The throwaway stream of the paced publish-and-wait baseline.
pub const RAW_PACED_STREAM: &str = "BENCH_RAW_PACED";

/// Publish-and-wait of `count` messages of `size` bytes from `workers` concurrent
/// publishers. With a `rate`, the k-th is scheduled at `k / rate` seconds: the latency floor
/// of one appended event at that rate, measured like the paced scenarios (from the
/// scheduled start). Without one, each publisher sends its next message when the previous
/// one is acknowledged (a closed loop, as the `append` submitters run): the most a pipeline
/// of that many appends in flight can carry on this server.
///
/// With `conditional`, each message is sent as `EventLog::append` sends it: the two
/// `Crm-*` headers and `Nats-Expected-Last-Subject-Sequence`, the subject's last sequence
/// as the publisher knows it from its previous ack on that subject (round robin over the
/// subjects, so no two publishes of one subject are ever in flight together): the floor of
/// a conditional append, with the server's check in it and no CRM code.
pub async fn publish_and_wait(
    client: &async_nats::Client,
    size: usize,
    count: u64,
    workers: usize,
    rate: Option<f64>,
    conditional: bool,
    cpu: CpuMeter,
) -> anyhow::Result<Measured> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let js = jetstream::new(client.clone());
    let (_, subjects) = fresh_stream(&js, RAW_PACED_STREAM, "benchp").await?;
    let last: Arc<Vec<AtomicU64>> =
        Arc::new((0..subjects.len()).map(|_| Default::default()).collect());
    let subjects = Arc::new(subjects);
    let body = payload(size);
    eprintln!(
        "  {}: {}publish-and-wait of {count} messages, {workers} publishers {}",
        if conditional { "reference" } else { "baseline" },
        if conditional { "conditional " } else { "" },
        match rate {
            Some(rate) => format!("paced at {rate:.0}/s"),
            None => "in a closed loop".into(),
        },
    );
    let mark = cpu.mark();
    let op_js = js.clone();
    let measured = crate::measure::drive(count, workers, rate, move |k, _| {
        let (js, body, last) = (op_js.clone(), body.clone(), last.clone());
        let i = (k as usize) % subjects.len();
        let subject = subjects[i].clone();
        async move {
            let sent = if conditional {
                let mut h = headers();
                let expected = last[i].load(Ordering::Acquire);
                h.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    expected.to_string().as_str(),
                );
                js.publish_with_headers(subject, h, body).await
            } else {
                js.publish(subject, body).await
            };
            let ack = sent
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            last[i].store(ack.sequence, Ordering::Release);
            Ok(())
        }
    })
    .await
    .with_cpu(&mark);
    let _ = js.delete_stream(RAW_PACED_STREAM).await;
    Ok(measured)
}

/// Reads the first `count` messages of `stream` with an ordered consumer (no acks), not
/// decoding them. Used for the baseline and, on `CRM_EVENTS`, as a reference.
pub async fn consume_ordered(stream: &stream::Stream, count: u64) -> anyhow::Result<Measured> {
    let start = Instant::now();
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .context("creating an ordered consumer")?;
    let mut messages = consumer.messages().await.context("consuming")?;
    let mut n = 0u64;
    let mut bytes = 0usize;
    while n < count {
        let msg = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .context("consume stalled for 30 s")?
            .context("consumer ended")?
            .context("consume")?;
        bytes += msg.payload.len();
        n += 1;
    }
    std::hint::black_box(bytes);
    Ok(finished(count, start.elapsed(), Vec::new()))
}

/// Consumes `count` messages of `stream` from the start through a pull consumer without
/// acks, on a lean connection (`crm_log::wire`), as `EventLog::read` does: pulls of
/// `crm_log::read::PULL`, another when half has arrived.
pub async fn consume_lean(
    stream: &stream::Stream,
    dialer: &Dialer,
    count: u64,
) -> anyhow::Result<Measured> {
    let start = Instant::now();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .context("creating a pull consumer")?;
    let info = consumer.cached_info();
    let next = format!(
        "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
        info.stream_name, info.name
    );
    let mut wire = dialer.connect().await.context("lean connection")?;
    let inbox = format!("_INBOX.{}", uuid::Uuid::new_v4().simple());
    wire.subscribe(&inbox, 1).await?;
    let pull = crm_log::read::PULL;
    let request = format!(r#"{{"batch":{pull},"expires":30000000000}}"#);
    wire.publish(&next, &inbox, request.as_bytes()).await?;
    let mut outstanding = pull;
    let mut n = 0u64;
    let mut bytes = 0usize;
    while n < count {
        let op = tokio::time::timeout(Duration::from_secs(30), wire.next_op())
            .await
            .context("consume stalled for 30 s")??;
        let mut ping = false;
        match op {
            Op::Msg(m) if m.status().is_none() => {
                bytes += m.payload.len();
                n += 1;
                outstanding -= 1;
            }
            Op::Msg(m) => anyhow::bail!("pull ended: status {:?}", m.status()),
            Op::Ping => ping = true,
            Op::Err(e) => anyhow::bail!("server error: {e}"),
            _ => {}
        }
        if ping {
            wire.pong().await?;
        }
        if outstanding <= pull / 2 {
            wire.publish(&next, &inbox, request.as_bytes()).await?;
            outstanding += pull;
        }
    }
    std::hint::black_box(bytes);
    let elapsed = start.elapsed();
    let _ = stream.delete_consumer(&consumer.cached_info().name).await;
    Ok(finished(count, elapsed, Vec::new()))
}

fn finished(count: u64, elapsed: Duration, lat: Vec<u32>) -> Measured {
    Measured {
        ok: count,
        errors: 0,
        first_error: None,
        elapsed,
        latency: Latency::of(lat),
        issued: None,
        cpu: None,
    }
}

/// Mean payload size of up to `samples` messages of `stream` with sequences in
/// `from..=to`, read with direct gets.
pub async fn mean_payload(
    js: &jetstream::Context,
    stream: &str,
    from: u64,
    to: u64,
    samples: u64,
) -> anyhow::Result<usize> {
    anyhow::ensure!(to >= from && from > 0, "no messages to size");
    let stream = js.get_stream(stream).await.context("get stream")?;
    let span = to - from + 1;
    let step = (span / samples.max(1)).max(1);
    let (mut total, mut n) = (0usize, 0usize);
    let mut seq = from;
    while seq <= to {
        let msg = stream.direct_get(seq).await.context("direct get")?;
        total += msg.payload.len();
        n += 1;
        seq += step;
    }
    Ok(total / n.max(1))
}
