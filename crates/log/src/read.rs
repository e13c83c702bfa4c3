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

use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use async_nats::jetstream::stream;
use futures::{Stream, StreamExt};

use crate::envelope::Envelope;
use crate::error::LogError;
use crate::log::StoredEvent;

/// Messages asked for per pull request. At most one and a half times this many events wait
/// in the client's buffers when the reader is slower than the server (a subscription holds
/// 65,536 before the client drops messages, which the read would see as a gap).
pub const PULL: usize = 10_000;
/// How long the server keeps a pull request open.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// How long the server keeps the consumer of an abandoned read.
const INACTIVE: Duration = Duration::from_secs(30);
/// Restarts in a row without an event delivered in between before the read gives up.
const MAX_RESTARTS: u32 = 5;

/// Events with stream sequence in `after + 1 ..= until`, in log order; see the module docs.
/// An undecodable event is an `Err` item and the read goes on. A NATS error ends it when
/// no consumer can be made, or after [`MAX_RESTARTS`] restarts without an event between.
pub(crate) fn range(
    stream: stream::Stream,
    after: u64,
    until: u64,
    pull: usize,
) -> impl Stream<Item = Result<StoredEvent, LogError>> + Send + use<> {
    let read = RangeRead {
        stream,
        until,
        pull: pull.max(1),
        last: after,
        consumer: None,
        messages: None,
        next_delivery: 1,
        restarts: 0,
        done: false,
    };
    futures::stream::unfold(read, |mut read| async move {
        let item = read.next().await?;
        Some((item, read))
    })
}

struct RangeRead {
    stream: stream::Stream,
    until: u64,
    /// Messages per pull request.
    pull: usize,
    /// The last stream sequence delivered (the range's start before the first).
    last: u64,
    consumer: Option<consumer::Consumer<pull::Config>>,
    messages: Option<pull::Stream>,
    /// The current consumer's delivery sequence expected next.
    next_delivery: u64,
    restarts: u32,
    done: bool,
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
            if self.last >= self.until {
                return Ok(None);
            }
            if self.messages.is_none() {
                if self.consumer.is_none() {
                    self.start().await?;
                }
                let Some(consumer) = &self.consumer else {
                    continue;
                };
                let messages = consumer
                    .stream()
                    .max_messages_per_batch(self.pull)
                    .expires(PULL_EXPIRES)
                    .messages()
                    .await
                    .map_err(LogError::nats)?;
                self.messages = Some(messages);
            }
            let Some(messages) = self.messages.as_mut() else {
                continue;
            };
            match messages.next().await {
                Some(Ok(msg)) => {
                    let info = msg.info().map_err(LogError::nats)?;
                    if info.consumer_sequence != self.next_delivery {
                        tracing::debug!(
                            expected = self.next_delivery,
                            got = info.consumer_sequence,
                            "gap in a catch-up read; restarting it"
                        );
                        self.restart().await?;
                        continue;
                    }
                    self.next_delivery += 1;
                    let sequence = info.stream_sequence;
                    if sequence <= self.last {
                        continue;
                    }
                    if sequence > self.until {
                        // Past the range (the range held gaps): done.
                        self.last = self.until;
                        return Ok(None);
                    }
                    let pending = info.pending;
                    self.last = sequence;
                    self.restarts = 0;
                    let envelope =
                        Envelope::from_bytes(&msg.payload).map_err(|e| LogError::Decode {
                            sequence,
                            reason: e.to_string(),
                        })?;
                    let mut stored = StoredEvent::new(sequence, envelope);
                    stored.set_behind(pending);
                    return Ok(Some(stored));
                }
                Some(Err(e)) => {
                    // Missed heartbeats, a deleted consumer, a server that went away: start
                    // again after the last delivered event, as the ordered consumer does.
                    tracing::debug!(last = self.last, error = %e, "a catch-up read failed; restarting it");
                    self.restart().await?;
                }
                None => {
                    tracing::debug!(
                        last = self.last,
                        "a catch-up read ended early; restarting it"
                    );
                    self.restart().await?;
                }
            }
        }
    }

    /// A fresh consumer right after the last delivered event.
    async fn start(&mut self) -> Result<(), LogError> {
        let consumer = self
            .stream
            .create_consumer(pull::Config {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: self.last + 1,
                },
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: INACTIVE,
                ..Default::default()
            })
            .await
            .map_err(LogError::nats)?;
        self.messages = None;
        self.next_delivery = 1;
        self.consumer = Some(consumer);
        Ok(())
    }

    async fn restart(&mut self) -> Result<(), LogError> {
        self.restarts += 1;
        if self.restarts > MAX_RESTARTS {
            return Err(LogError::Nats(format!(
                "catch-up read restarted {MAX_RESTARTS} times at stream sequence {} without progress",
                self.last
            )));
        }
        self.drop_consumer().await;
        Ok(())
    }

    /// Deletes the current consumer (best effort: an abandoned one expires by itself).
    async fn drop_consumer(&mut self) {
        self.messages = None;
        if let Some(c) = self.consumer.take() {
            let name = c.cached_info().name.clone();
            let _ = self.stream.delete_consumer(&name).await;
        }
    }
}
