//! The catch-up read: a bounded range of the log in large pull requests.
//!
//! [`EventLog::subscribe`](crate::EventLog::subscribe) reads through async-nats's ordered
//! consumer, which asks the server for 500 messages at a time and asks again when half of
//! them have arrived. On a log far ahead of the reader (a projector catching up, a rebuild,
//! an audit) those small pulls, not the CPU, set the pace: an ordered consume of
//! `CRM_EVENTS` ran at 35-43 % of the headerless raw consume, the same log read in pulls of
//! thousands at 52-76 % (docs/benchmarks.md, 2026-12-01 evening). A range read asks an
//! ephemeral pull consumer without acks for [`PULL`] messages per request (and for more
//! when half have arrived, into the same subscription, so they arrive in order), and ends
//! after the last sequence of the range.
//!
//! Like the ordered consumer it trusts nothing it did not see: every message carries the
//! consumer's own delivery sequence. A gap in it (a message lost between server and
//! client), a pull stream that fails (missed heartbeats, the consumer deleted) or one that
//! ends early restarts the read right after the last event it delivered, with a fresh
//! consumer.
//!
//! Where the log was opened with [`EventLog::connect`](crate::EventLog::connect) on a
//! configuration a lean connection can speak ([`crate::wire`]), the messages are read on a
//! connection of the read's own, in place, without async-nats's per-message `Message` and
//! `HeaderMap`; otherwise (or if that connection cannot be made) through async-nats. The
//! consumer is made and deleted through async-nats either way.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use async_nats::jetstream::stream;
use futures::{Stream, StreamExt};

use crate::error::LogError;
use crate::log::StoredEvent;
use crate::wire::{self, AckInfo, Dialer, Op, Wire};

/// Messages asked for per pull request. At most one and a half times this many events wait
/// in the client's buffers when the reader is slower than the server (a subscription holds
/// 65,536 before the client drops messages, which the read would see as a gap).
pub const PULL: usize = 10_000;
/// How long the server keeps a pull request open.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// How long the server keeps the consumer of an abandoned read.
const INACTIVE: Duration = Duration::from_secs(30);
/// How long past a pull's expiry a silent lean connection is taken for dead.
const WIRE_GRACE: Duration = Duration::from_secs(5);
/// Restarts in a row without an event delivered in between before the read gives up.
const MAX_RESTARTS: u32 = 5;

/// Events with stream sequence in `after + 1 ..= until`, in log order; see the module docs.
/// An undecodable event is an `Err` item and the read goes on. A NATS error ends it when
/// no consumer can be made, or after [`MAX_RESTARTS`] restarts without an event between.
pub(crate) fn range(
    stream: stream::Stream,
    dialer: Option<Dialer>,
    after: u64,
    until: u64,
    pull: usize,
    partitions: u32,
) -> impl Stream<Item = Result<StoredEvent, LogError>> + Send + use<> {
    let read = RangeRead {
        stream,
        dialer,
        pull: pull.max(1),
        cursor: Cursor {
            partitions,
            until,
            last: after,
            next_delivery: 1,
            restarts: 0,
        },
        consumer: None,
        source: None,
        done: false,
    };
    futures::stream::unfold(read, |mut read| async move {
        let item = read.next().await?;
        Some((item, read))
    })
}

struct RangeRead {
    stream: stream::Stream,
    /// Opens the lean connection; `None` reads through async-nats.
    dialer: Option<Dialer>,
    /// Messages per pull request.
    pull: usize,
    cursor: Cursor,
    consumer: Option<consumer::Consumer<pull::Config>>,
    source: Option<Source>,
    done: bool,
}

/// Where the read is in the range.
struct Cursor {
    /// The stream's partition count: an event must be on its customer's subject.
    partitions: u32,
    until: u64,
    /// The last stream sequence delivered (the range's start before the first).
    last: u64,
    /// The current consumer's delivery sequence expected next.
    next_delivery: u64,
    restarts: u32,
}

/// What the current consumer's messages arrive on.
enum Source {
    Client(Box<pull::Stream>),
    Wire(WireSource),
}

/// A lean connection subscribed to the pulls' inbox.
struct WireSource {
    wire: Wire,
    inbox: String,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    next_subject: String,
    /// Messages asked for and not yet delivered or expired.
    outstanding: usize,
}

/// What one delivered message means for the read. Returned once per message and never
/// kept, so the event is not boxed.
#[allow(clippy::large_enum_variant)]
enum Flow {
    Event(StoredEvent),
    /// Already delivered (after a restart): read on.
    Skip,
    /// Past the range: the read is done.
    Done,
    /// A gap in the delivery sequence, a failed or ended pull: start again after `last`.
    Restart,
}

impl Cursor {
    /// Checks a message's place in the delivery and the range, and decodes it.
    fn accept(&mut self, info: &AckInfo, subject: &str, payload: &[u8]) -> Result<Flow, LogError> {
        if info.consumer_sequence != self.next_delivery {
            tracing::debug!(
                expected = self.next_delivery,
                got = info.consumer_sequence,
                "gap in a catch-up read; restarting it"
            );
            return Ok(Flow::Restart);
        }
        self.next_delivery += 1;
        let sequence = info.stream_sequence;
        if sequence <= self.last {
            return Ok(Flow::Skip);
        }
        if sequence > self.until {
            // Past the range (the range held gaps): done.
            self.last = self.until;
            return Ok(Flow::Done);
        }
        self.last = sequence;
        self.restarts = 0;
        let envelope = crate::log::decode_stored(sequence, subject, payload, self.partitions)?;
        let mut stored = StoredEvent::new(sequence, envelope);
        stored.set_behind(info.pending);
        Ok(Flow::Event(stored))
    }
}

impl RangeRead {
    async fn next(&mut self) -> Option<Result<StoredEvent, LogError>> {
        if self.done {
            return None;
        }
        let item = self.step().await;
        if !matches!(item, Ok(Some(_)) | Err(LogError::Decode { .. })) {
            self.done = true;
            self.drop_consumer().await;
        }
        item.transpose()
    }

    async fn step(&mut self) -> Result<Option<StoredEvent>, LogError> {
        loop {
            if self.cursor.last >= self.cursor.until {
                return Ok(None);
            }
            if self.source.is_none() {
                if self.consumer.is_none() {
                    self.start().await?;
                }
                self.source = Some(self.open_source().await?);
            }
            let flow = match self.source.as_mut() {
                Some(Source::Client(messages)) => client_next(messages, &mut self.cursor).await?,
                Some(Source::Wire(w)) => wire_next(w, self.pull, &mut self.cursor).await?,
                None => continue,
            };
            match flow {
                Flow::Event(stored) => return Ok(Some(stored)),
                Flow::Skip => {}
                Flow::Done => return Ok(None),
                Flow::Restart => self.restart().await?,
            }
        }
    }

    /// The current consumer's messages: on a lean connection of the read's own where one
    /// can be made, through async-nats otherwise.
    async fn open_source(&mut self) -> Result<Source, LogError> {
        let Some(consumer) = &self.consumer else {
            return Err(LogError::Nats("no consumer to read from".into()));
        };
        if let Some(dialer) = &self.dialer {
            let stream = &consumer.cached_info().stream_name;
            let name = &consumer.cached_info().name;
            match open_wire(dialer, stream, name, self.pull).await {
                Ok(source) => return Ok(Source::Wire(source)),
                Err(e) => {
                    tracing::debug!(error = %e, "no lean connection for a catch-up read; reading through the client");
                    self.dialer = None;
                }
            }
        }
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.pull)
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(LogError::nats)?;
        Ok(Source::Client(Box::new(messages)))
    }

    /// A fresh consumer right after the last delivered event.
    async fn start(&mut self) -> Result<(), LogError> {
        let consumer = self
            .stream
            .create_consumer(pull::Config {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: self.cursor.last + 1,
                },
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: INACTIVE,
                ..Default::default()
            })
            .await
            .map_err(LogError::nats)?;
        self.source = None;
        self.cursor.next_delivery = 1;
        self.consumer = Some(consumer);
        Ok(())
    }

    async fn restart(&mut self) -> Result<(), LogError> {
        self.cursor.restarts += 1;
        if self.cursor.restarts > MAX_RESTARTS {
            return Err(LogError::Nats(format!(
                "catch-up read restarted {MAX_RESTARTS} times at stream sequence {} without progress",
                self.cursor.last
            )));
        }
        self.drop_consumer().await;
        Ok(())
    }

    /// Deletes the current consumer (best effort: an abandoned one expires by itself).
    async fn drop_consumer(&mut self) {
        self.source = None;
        if let Some(c) = self.consumer.take() {
            let name = c.cached_info().name.clone();
            let _ = self.stream.delete_consumer(&name).await;
        }
    }
}

/// The next message through async-nats.
async fn client_next(messages: &mut pull::Stream, cursor: &mut Cursor) -> Result<Flow, LogError> {
    match messages.next().await {
        Some(Ok(msg)) => {
            let info = msg.info().map_err(LogError::nats)?;
            let info = AckInfo {
                stream_sequence: info.stream_sequence,
                consumer_sequence: info.consumer_sequence,
                pending: info.pending,
            };
            cursor.accept(&info, &msg.subject, &msg.payload)
        }
        Some(Err(e)) => {
            // Missed heartbeats, a deleted consumer, a server that went away: start
            // again after the last delivered event, as the ordered consumer does.
            tracing::debug!(last = cursor.last, error = %e, "a catch-up read failed; restarting it");
            Ok(Flow::Restart)
        }
        None => {
            tracing::debug!(
                last = cursor.last,
                "a catch-up read ended early; restarting it"
            );
            Ok(Flow::Restart)
        }
    }
}

/// A lean connection subscribed to a fresh inbox, with the first pull request sent.
async fn open_wire(
    dialer: &Dialer,
    stream: &str,
    consumer: &str,
    pull: usize,
) -> std::io::Result<WireSource> {
    let mut wire = dialer.connect().await?;
    let inbox = format!("_INBOX.{}", uuid::Uuid::new_v4().simple());
    wire.subscribe(&inbox, 1).await?;
    let mut source = WireSource {
        wire,
        inbox,
        next_subject: format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
        outstanding: 0,
    };
    source.ask(pull).await?;
    Ok(source)
}

impl WireSource {
    /// Asks the consumer for `n` more messages.
    async fn ask(&mut self, n: usize) -> std::io::Result<()> {
        let request = format!(r#"{{"batch":{n},"expires":{}}}"#, PULL_EXPIRES.as_nanos());
        self.wire
            .publish(&self.next_subject, &self.inbox, request.as_bytes())
            .await?;
        self.outstanding += n;
        Ok(())
    }
}

/// The next message on the lean connection, asking for more when half of what was asked
/// for has arrived.
async fn wire_next(w: &mut WireSource, pull: usize, cursor: &mut Cursor) -> Result<Flow, LogError> {
    loop {
        // A live server answers within PULL_EXPIRES: a message, or the pull's expiry.
        let op = match tokio::time::timeout(PULL_EXPIRES + WIRE_GRACE, w.wire.next_op()).await {
            Ok(Ok(op)) => op,
            Ok(Err(e)) => {
                tracing::debug!(last = cursor.last, error = %e, "a catch-up read's connection failed; restarting it");
                return Ok(Flow::Restart);
            }
            Err(_) => {
                tracing::debug!(
                    last = cursor.last,
                    "a catch-up read's connection went quiet; restarting it"
                );
                return Ok(Flow::Restart);
            }
        };
        let flow = match op {
            Op::Msg(m) => match m.status() {
                None => {
                    let Some(info) = m.reply.and_then(wire::ack_info) else {
                        tracing::debug!(
                            "a catch-up read got a message without a JetStream reply; restarting it"
                        );
                        return Ok(Flow::Restart);
                    };
                    w.outstanding = w.outstanding.saturating_sub(1);
                    // An undecodable event is returned after the top-up below, so a read
                    // in pulls of one does not wait for an expiry.
                    Some(cursor.accept(&info, m.subject, m.payload))
                }
                // Idle heartbeat.
                Some(100) => None,
                // A pull request that expired or found nothing: what it still had to
                // deliver will not come.
                Some(404 | 408) => {
                    let left = m
                        .header("Nats-Pending-Messages")
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(w.outstanding);
                    w.outstanding = w.outstanding.saturating_sub(left);
                    None
                }
                Some(code) => {
                    tracing::debug!(
                        last = cursor.last,
                        code,
                        headers = %String::from_utf8_lossy(m.headers),
                        "a catch-up read's pull failed; restarting it"
                    );
                    return Ok(Flow::Restart);
                }
            },
            Op::Ping => {
                if let Err(e) = w.wire.pong().await {
                    tracing::debug!(error = %e, "a catch-up read could not answer a ping; restarting it");
                    return Ok(Flow::Restart);
                }
                None
            }
            Op::Err(e) => {
                tracing::debug!(last = cursor.last, error = %e, "a catch-up read's connection was refused; restarting it");
                return Ok(Flow::Restart);
            }
            Op::Pong | Op::Ok | Op::Info(_) => None,
        };
        // Ask for more unless the read is about to end or restart on this connection.
        let going_on = matches!(
            flow,
            None | Some(Ok(Flow::Event(_) | Flow::Skip)) | Some(Err(_))
        );
        if going_on
            && w.outstanding <= pull / 2
            && let Err(e) = w.ask(pull).await
        {
            // The event in hand is delivered; the broken connection fails the next read.
            tracing::debug!(error = %e, "a catch-up read could not ask for more; restarting it");
            return flow.unwrap_or(Ok(Flow::Restart));
        }
        if let Some(flow) = flow {
            return flow;
        }
    }
}
