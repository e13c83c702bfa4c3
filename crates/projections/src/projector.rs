//! The generic projector: batches from the log, one transaction per batch, checkpoint
//! inside it.
//!
//! One projector can keep several projections ([`Projector::combined`]): the log is read
//! and decoded once, and each batch is applied to every projection in the same
//! transaction, each from its own checkpoint, with every checkpoint written in that
//! transaction. That is how `crm project all` and a rebuild of `all` run: one consumer
//! instead of one per view, and no contention for SQLite's write lock between them.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crm_log::{EventLog, StoredEvent};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use sqlx::AnyConnection;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cache::StateCache;
use crate::error::ProjectionError;
use crate::store::ReadStore;

/// A read model kept by a projector.
pub trait Projection: Send + Sync + 'static {
    /// Stable name: checkpoint key, CLI and API name.
    fn name(&self) -> &'static str;

    /// The tables this projection owns (swapped together by a blue-green rebuild).
    fn tables(&self) -> &'static [&'static str];

    /// What the rows this projection writes depend on besides the events and the build:
    /// its name, the crate version and, for a projection that prices or scores events,
    /// its policy. A rebuild resumes a half-built shadow copy only if it was begun under
    /// the same fingerprint, by the same build of crm.
    fn fingerprint(&self) -> String {
        format!("{} {}", self.name(), env!("CARGO_PKG_VERSION"))
    }

    /// Secondary indexes on this projection's tables that `apply_batch` never reads
    /// through (it only inserts, or looks rows up by their primary key). A rebuild into a
    /// fresh shadow copy drops them, so its passes do not insert into them row by row (an
    /// index on a random key rewrites most of its pages in every batch); a SQLite shadow
    /// builds each once, by sorting, before the swap (ADR 14).
    fn bulk_indexes(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether `apply_batch` reads the domain events (`StoredEvent::event`) rather than
    /// only the envelopes: the projector then decodes them ahead, off the commit path.
    fn decodes_events(&self) -> bool {
        true
    }

    /// The scoring policy this projection prices or judges events by, if any. The store
    /// records it per projection ([`crate::policy::PolicyRecord`]): a projector never
    /// folds events under one policy on top of rows folded under another.
    fn policy(&self) -> Option<&crm_domain::policy::Policy> {
        None
    }

    /// Applies a batch of events (in log order, all newer than the checkpoint) inside the
    /// projector's transaction. Must write each touched row once, in bulk, and must be
    /// idempotent per event (re-applying an event already reflected changes nothing).
    ///
    /// `cache` is this projection's memory of the previous batches of the pass: a
    /// projection that folds per-customer state takes it from there
    /// ([`StateCache::take_or_load`]) and keeps what it wrote ([`StateCache::keep`]); the
    /// projector forgets it whenever it might no longer match the rows (see [`crate::cache`]).
    fn apply_batch(
        &self,
        tx: &mut AnyConnection,
        events: &[StoredEvent],
        cache: &mut StateCache,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;
}

/// Events a projector applies in one transaction while it catches up, by default (at the
/// head it commits whatever has arrived). Larger transactions rewrite each hot page (a
/// customer's latest rows, the end of a ledger) fewer times: on the 2-core machine,
/// 20,000 instead of 5,000 made rebuilds of 1,000,000 events 10-26 % faster, for 50-90 MiB
/// more peak memory while catching up (docs/benchmarks.md, 2026-12-03).
pub const DEFAULT_BATCH_SIZE: usize = 20_000;

/// Tuning and test hooks.
#[derive(Debug, Clone)]
pub struct ProjectorOptions {
    /// Most events applied in one transaction.
    pub batch_size: usize,
    /// Test hook: fail after writing batch N (1-based) but before committing it, as a
    /// crash inside the transaction would.
    pub crash_before_commit_of_batch: Option<u64>,
    /// Test hook: the projector's first subscription stops delivering once batch N
    /// (1-based) is handed over, without an error or an end, as a subscription that
    /// silently stops would; later subscriptions deliver normally.
    pub stall_after_batch: Option<u64>,
    /// Apply only these partitions of the stream (a partitioned projector holding leases);
    /// `None` applies everything.
    pub share: Option<PartitionShare>,
    /// Most customers whose folded state each projection keeps in memory between batches
    /// ([`crate::cache`]); 0 loads every touched customer's state from the store in every
    /// batch. Not used by a partitioned projector.
    pub state_cache: usize,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_BATCH_SIZE,
            crash_before_commit_of_batch: None,
            stall_after_batch: None,
            share: None,
            state_cache: crate::cache::DEFAULT_CAPACITY,
        }
    }
}

/// The partitions one process of a partitioned projector group applies.
///
/// Each projection keeps a checkpoint per partition (`<name>@<pp>`: every event of that
/// partition up to it is applied) and the group keeps the projection's own checkpoint at
/// the lowest of them, so everything that reads `<name>` (status, reads that wait for a
/// projection, rebuilds) sees a true watermark. Every commit carries the fences of the
/// held leases and is refused if another process has since taken one over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionShare {
    /// The group: processes with the same group share the partitions.
    pub group: String,
    /// The stream's partition count.
    pub total: u32,
    /// Held partition → fence (the lease revision at which it was taken).
    pub held: BTreeMap<u32, u64>,
}

/// The checkpoint key of one partition of a projection.
pub fn partition_checkpoint(name: &str, partition: u32) -> String {
    format!("{name}@{partition:02}")
}

/// Where one projection stands.
#[derive(Debug, Clone)]
enum Mark {
    /// One checkpoint for the whole log.
    Whole(u64),
    /// One checkpoint per held partition.
    Parts(BTreeMap<u32, u64>),
}

impl Mark {
    /// Where reading the log must start for this projection.
    fn low(&self) -> u64 {
        match self {
            Mark::Whole(c) => *c,
            Mark::Parts(m) => m.values().copied().min().unwrap_or(u64::MAX),
        }
    }

    /// The furthest point of the log this projection has applied.
    fn high(&self) -> u64 {
        match self {
            Mark::Whole(c) => *c,
            Mark::Parts(m) => m.values().copied().max().unwrap_or(0),
        }
    }

    /// Whether `event` is still to be applied.
    fn wants(&self, event: &StoredEvent, total: u32) -> bool {
        match self {
            Mark::Whole(c) => event.sequence > *c,
            Mark::Parts(m) => {
                let p = crm_log::subject::partition(&event.envelope.customer_id, total);
                m.get(&p).is_some_and(|c| event.sequence > *c)
            }
        }
    }

    fn advance(&mut self, last: u64) {
        match self {
            Mark::Whole(c) => *c = (*c).max(last),
            Mark::Parts(m) => m.values_mut().for_each(|c| *c = (*c).max(last)),
        }
    }
}

/// What a projector reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProjectorStatus {
    pub checkpoint: u64,
    pub state: String,
    pub applied: u64,
}

/// Runs one projection, or several together, against the log.
pub struct Projector<P> {
    projections: Vec<P>,
    /// The policies of the projections that have one, checked in every commit.
    policies: Vec<crate::policy::PolicyRecord>,
    store: ReadStore,
    log: EventLog,
    options: ProjectorOptions,
    status: watch::Sender<ProjectorStatus>,
    /// Whether [`ProjectorOptions::stall_after_batch`] has been used up.
    stall_injected: AtomicBool,
    /// The id of the log's first event, once known (see `origin`).
    first_event: std::sync::OnceLock<String>,
}

impl<P> std::fmt::Debug for Projector<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("options", &self.options)
            .finish()
    }
}

impl<P: Projection> Projector<P> {
    /// A projector for `projection`.
    pub fn new(projection: P, store: ReadStore, log: EventLog, options: ProjectorOptions) -> Self {
        Self::combined(vec![projection], store, log, options)
    }

    /// One projector for several projections: one read of the log, one transaction per
    /// batch for all of them, each kept from its own checkpoint.
    pub fn combined(
        projections: Vec<P>,
        store: ReadStore,
        log: EventLog,
        options: ProjectorOptions,
    ) -> Self {
        let (status, _) = watch::channel(ProjectorStatus {
            state: "starting".into(),
            ..ProjectorStatus::default()
        });
        Self {
            policies: projections
                .iter()
                .filter_map(crate::policy::PolicyRecord::of)
                .collect(),
            projections,
            store,
            log,
            options,
            status,
            stall_injected: AtomicBool::new(false),
            first_event: std::sync::OnceLock::new(),
        }
    }

    /// The projection's name (`all` style joined names for a combined projector).
    pub fn name(&self) -> &'static str {
        match self.projections.as_slice() {
            [one] => one.name(),
            _ => "combined",
        }
    }

    /// The names of the projections this projector keeps.
    pub fn names(&self) -> Vec<&'static str> {
        self.projections.iter().map(Projection::name).collect()
    }

    /// The log it reads.
    pub(crate) fn log(&self) -> &EventLog {
        &self.log
    }

    /// The id of the log's first event (from `events` when they begin the log), looked up
    /// once per projector.
    async fn first_event_id(
        &self,
        events: &[StoredEvent],
    ) -> Result<Option<String>, ProjectionError> {
        if let Some(known) = self.first_event.get() {
            return Ok(Some(known.clone()));
        }
        let found = match events.first() {
            Some(e) if e.sequence == 1 => Some(e.envelope.event_id.to_string()),
            _ => crate::origin::first_event_id(&self.log).await?,
        };
        if let Some(id) = &found {
            let _ = self.first_event.set(id.clone());
        }
        Ok(found)
    }

    /// The policies its projections fold under.
    pub(crate) fn policies(&self) -> &[crate::policy::PolicyRecord] {
        &self.policies
    }

    async fn marks(&self) -> Result<Vec<Mark>, ProjectionError> {
        let mut out = Vec::with_capacity(self.projections.len());
        for p in &self.projections {
            let whole = self.store.checkpoint(p.name()).await?;
            out.push(match &self.options.share {
                None => Mark::Whole(whole),
                Some(share) => {
                    let mut parts = BTreeMap::new();
                    for &pp in share.held.keys() {
                        let own = self
                            .store
                            .checkpoint(&partition_checkpoint(p.name(), pp))
                            .await?;
                        // The projection's own checkpoint is a watermark for every
                        // partition (it may come from an unpartitioned run).
                        parts.insert(pp, own.max(whole));
                    }
                    Mark::Parts(parts)
                }
            });
        }
        Ok(out)
    }

    /// The tables of the projections this projector keeps.
    pub fn tables(&self) -> Vec<&'static str> {
        self.projections
            .iter()
            .flat_map(|p| p.tables().iter().copied())
            .collect()
    }

    /// Watches checkpoint and state.
    pub fn status(&self) -> watch::Receiver<ProjectorStatus> {
        self.status.subscribe()
    }

    /// Runs until `shutdown`, retrying with back-off after errors. An error never skips an
    /// event: the projector resumes from its committed checkpoint.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), ProjectionError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.run_once(&shutdown, None).await {
                Ok(()) => return Ok(()),
                Err(
                    e @ (ProjectionError::InjectedCrash { .. }
                    | ProjectionError::LeaseLost { .. }
                    | ProjectionError::AheadOfLog { .. }
                    | ProjectionError::OtherLog { .. }
                    | ProjectionError::PolicyMismatch { .. }),
                ) => return Err(e),
                Err(e) => {
                    tracing::error!(projection = self.name(), error = %e, "projector failed; retrying");
                    self.status
                        .send_modify(|s| s.state = format!("failed: {e}"));
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Applies everything up to stream sequence `target` and returns. A subscription that
    /// stops delivering is started again from the committed checkpoint (as [`run`] does);
    /// any other error is returned at once.
    ///
    /// [`run`]: Projector::run
    pub async fn run_until(&self, target: u64) -> Result<(), ProjectionError> {
        let mut stalls_here = 0u32;
        let mut last_stall = None;
        loop {
            match self.run_once(&CancellationToken::new(), Some(target)).await {
                Err(ProjectionError::Stalled { checkpoint, head }) => {
                    // Give up only when the subscription keeps stalling at one checkpoint.
                    stalls_here = if last_stall == Some(checkpoint) {
                        stalls_here + 1
                    } else {
                        1
                    };
                    last_stall = Some(checkpoint);
                    if stalls_here > MAX_STALLS_AT_ONE_CHECKPOINT {
                        return Err(ProjectionError::Stalled { checkpoint, head });
                    }
                    tracing::warn!(
                        projection = self.name(),
                        checkpoint,
                        head,
                        "no event arrived for a while; resubscribing from the checkpoint"
                    );
                }
                other => return other,
            }
        }
    }

    async fn run_once(
        &self,
        shutdown: &CancellationToken,
        target: Option<u64>,
    ) -> Result<(), ProjectionError> {
        let name = self.name();
        let mut marks = self.marks().await?;
        let mut checkpoint = marks.iter().map(Mark::low).min().unwrap_or(0);
        if checkpoint == u64::MAX {
            // A partitioned projector holding no partition: nothing to do.
            shutdown.cancelled().await;
            return Ok(());
        }
        self.status.send_modify(|s| {
            s.checkpoint = checkpoint;
            s.state = "live".into();
        });
        if target.is_some_and(|t| checkpoint >= t) {
            // Views that already reach the target (a shadow or an as-of copy left at that
            // sequence) must still have been built from this log.
            crate::origin::check_or_record(&self.store, &self.log, &self.names()).await?;
            return Ok(());
        }
        let batch_size = self.options.batch_size.max(1);
        // Behind the head, read up to it in large pulls (`EventLog::read`), then follow the
        // log from there (unless the target is already in the range); at the head, follow
        // it at once. An error item ends the applier's pass before anything after it is
        // applied, so following on after a failed read cannot skip an event.
        let head = self.log.head().await?;
        // A checkpoint past the head means the read store was built from another log (a
        // stream made again, an older backup restored, another server): following on from
        // it would skip the new log's events up to there without a word.
        if let Some(ahead) = marks.iter().map(Mark::high).max().filter(|c| *c > head) {
            return Err(ProjectionError::AheadOfLog {
                projection: name.to_owned(),
                checkpoint: ahead,
                head,
            });
        }
        // A checkpoint within the head may still count another log's events.
        crate::origin::check_or_record(&self.store, &self.log, &self.names()).await?;

        let catch_up_to = target.map_or(head, |t| t.min(head));
        let stream = if catch_up_to > checkpoint {
            let follow = if target.is_some_and(|t| t <= catch_up_to) {
                futures::stream::empty().left_stream()
            } else {
                let log = self.log.clone();
                futures::stream::once(async move { log.subscribe(catch_up_to).await })
                    .try_flatten()
                    .right_stream()
            };
            self.log
                .read(checkpoint, catch_up_to)
                .chain(follow)
                .left_stream()
        } else {
            self.log.subscribe(checkpoint).await?.right_stream()
        }
        .ready_chunks(batch_size);
        // A reader task reads and decodes the next batches while this one commits (the
        // commit mostly waits on SQLite's worker thread). The log arrives in small chunks
        // (a pull's worth); the reader gathers them into batches of `batch_size`. While the
        // log holds more for it (catching up, rebuilding) it hands over only full batches:
        // fewer, larger transactions rewrite each customer's rows and pages fewer times.
        // Once it has caught up with the head it hands over whatever it has as soon as the
        // applier has room, so a live projector commits each event as it comes. Memory
        // stays bounded: two batches queued, one being gathered (plus the chunk that
        // overfilled it), one being applied.
        let (batches, mut incoming) = tokio::sync::mpsc::channel(2);
        let decode_ahead = self.projections.iter().any(Projection::decodes_events);
        let stall_after = self
            .options
            .stall_after_batch
            .filter(|_| !self.stall_injected.swap(true, Ordering::Relaxed));
        let _reader = AbortOnDrop(tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut handed_over = 0u64;
            let mut pending: Vec<Result<StoredEvent, crm_log::LogError>> = Vec::new();
            // Whether the log held more for this subscription when its latest event was
            // delivered (an error is handed over at once).
            let mut more_waiting = false;
            loop {
                if stall_after.is_some_and(|n| handed_over >= n) {
                    // Keep the channel open and read nothing more, for ever.
                    std::future::pending::<()>().await;
                }
                if pending.len() >= batch_size {
                    let rest = pending.split_off(batch_size);
                    if batches
                        .send(std::mem::replace(&mut pending, rest))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    handed_over += 1;
                    continue;
                }
                tokio::select! {
                    chunk = stream.next() => {
                        let Some(chunk) = chunk else { break };
                        for stored in chunk.iter().flatten().filter(|_| decode_ahead) {
                            // Fills the event's decode-once cell; a failure shows again,
                            // with the event's sequence, where a projection applies it.
                            let _ = stored.event();
                        }
                        more_waiting = chunk.iter().all(Result::is_ok)
                            && chunk.last().is_some_and(|s| s.as_ref().is_ok_and(|s| s.behind() > 0));
                        pending.extend(chunk);
                    }
                    permit = batches.reserve(), if !pending.is_empty() && !more_waiting => {
                        let Ok(permit) = permit else { return };
                        permit.send(std::mem::take(&mut pending));
                        handed_over += 1;
                    }
                }
            }
            // The subscription ended: hand over what is left (the applier then reports
            // the end).
            if !pending.is_empty() {
                let _ = batches.send(pending).await;
            }
        }));
        let mut batch_no = 0u64;
        let mut rate = ApplyRate::new();
        // One connection for every batch of the pass (see `ReadStore::begin_write`).
        let mut conn = self.store.pool().acquire().await?;
        // Each projection's memory of this pass's batches: empty at the start of every pass,
        // so nothing of a batch that failed or was dropped before its commit survives.
        let capacity = if self.options.share.is_some() {
            0
        } else {
            self.options.state_cache
        };
        let mut kept: Vec<Kept> = self
            .projections
            .iter()
            .map(|_| Kept {
                cache: StateCache::new(capacity),
                stamp: None,
            })
            .collect();
        // How many more events the log held when the latest applied one was read (unknown,
        // so taken as none, until the first batch).
        let mut behind = 0u64;
        // On SQLite, the WAL checkpoint interval set on `conn`: unknown until the first batch
        // (a pooled connection keeps what an earlier pass set).
        let mut wal = crate::store::WalPace::of(self.store.dialect());
        loop {
            // While the log held more for this subscription, a batch is due in well under a
            // second; at the head, quiet is normal.
            let stall_check = if behind > 0 {
                STALL_CHECK_BEHIND
            } else {
                STALL_CHECK
            };
            let chunk = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                chunk = incoming.recv() => chunk,
                _ = tokio::time::sleep(stall_check) => {
                    // Nothing for a while: right at the head; behind it, a subscription
                    // that stopped delivering (as may happen when a cluster node dies).
                    // Then start again from the checkpoint instead of waiting for ever.
                    let head = self.log.head().await?;
                    if head > checkpoint {
                        return Err(ProjectionError::Stalled { checkpoint, head });
                    }
                    continue;
                }
            };
            let Some(chunk) = chunk else {
                return Err(crm_log::LogError::Nats("log subscription ended".into()).into());
            };
            let mut events = Vec::with_capacity(chunk.len());
            let mut beyond_target = false;
            for item in chunk {
                let stored = item?;
                if target.is_some_and(|t| stored.sequence > t) {
                    // Never apply past the target: as-of views stop exactly there.
                    beyond_target = true;
                    break;
                }
                if stored.sequence > checkpoint {
                    events.push(stored);
                }
            }
            let Some(last) = events.last().map(|e| e.sequence) else {
                if beyond_target {
                    return Ok(());
                }
                continue;
            };
            batch_no += 1;
            wal.set(&mut conn, events.last().map_or(0, StoredEvent::behind) > 0)
                .await?;
            let apply_rate = rate.record(events.len() as u64);
            self.commit_batch(&mut conn, &events, &marks, &mut kept, apply_rate, batch_no)
                .await?;
            marks.iter_mut().for_each(|m| m.advance(last));
            checkpoint = last;
            behind = events.last().map_or(0, StoredEvent::behind);
            let n = events.len() as u64;
            self.status.send_modify(|s| {
                s.checkpoint = checkpoint;
                s.applied += n;
                s.state = "live".into();
            });
            tracing::debug!(projection = name, checkpoint, events = n, "batch committed");
            if beyond_target || target.is_some_and(|t| checkpoint >= t) {
                return Ok(());
            }
        }
    }

    /// Applies `events` (ascending, not empty) to every projection past its own checkpoint,
    /// and moves every checkpoint to the last event's sequence, in one transaction on
    /// `conn` (the pass's connection).
    async fn commit_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[StoredEvent],
        marks: &[Mark],
        kept: &mut [Kept],
        apply_rate: f64,
        batch_no: u64,
    ) -> Result<(), ProjectionError> {
        let last = events.last().map_or(0, |e| e.sequence);
        let first_event = self.first_event_id(events).await?;
        let started = Instant::now();
        let mut tx = self.store.begin_write(conn).await?;
        let mut spent = Vec::with_capacity(self.projections.len() + 2);
        spent.push(("begin", started.elapsed()));
        if let Some(share) = &self.options.share {
            check_fences(&mut tx, share).await?;
        }
        // Whole projections: one writer at a time per projection, in one order (by name),
        // so two projectors never fold from state the other is about to replace, and never
        // wait on each other in a cycle. (A partitioned projection's fences do this for it.)
        let mut whole: Vec<&str> = self
            .projections
            .iter()
            .zip(marks)
            .filter(|(_, m)| matches!(m, Mark::Whole(_)))
            .map(|(p, _)| p.name())
            .collect();
        whole.sort_unstable();
        for name in whole {
            self.store.lock_projection(&mut tx, name).await?;
        }
        // Under the locks, so a swap of rows folded under another policy, or built from
        // another log, cannot slip in between the check and the commit. (A projector that
        // started on an empty log records the log here, at its first commit.)
        crate::policy::check_or_record(&mut tx, &self.policies).await?;
        if let Some(first) = &first_event {
            crate::origin::check_in(&mut tx, &self.names(), first).await?;
        }
        let now = now_text();
        let mut stamped = Vec::with_capacity(kept.len());
        for ((projection, mark), kept) in self.projections.iter().zip(marks).zip(kept.iter_mut()) {
            let name = projection.name();
            match mark {
                Mark::Whole(done) => {
                    let fresh = &events[events.partition_point(|e| e.sequence <= *done)..];
                    if fresh.is_empty() {
                        continue;
                    }
                    let t = Instant::now();
                    if kept.cache.is_warm()
                        && !wrote_last(&mut tx, name, kept.stamp.as_deref()).await?
                    {
                        // Someone else wrote this projection since our latest commit.
                        kept.cache.clear();
                    }
                    projection
                        .apply_batch(&mut tx, fresh, &mut kept.cache)
                        .await?;
                    write_checkpoint(&mut tx, name, last, &now, apply_rate).await?;
                    stamped.push(name);
                    spent.push((name, t.elapsed()));
                }
                Mark::Parts(parts) => {
                    let total = self.options.share.as_ref().map_or(1, |s| s.total);
                    let fresh: Vec<StoredEvent> = events
                        .iter()
                        .filter(|e| mark.wants(e, total))
                        .cloned()
                        .collect();
                    if !fresh.is_empty() {
                        // A partitioned projector keeps nothing between batches: its
                        // partitions may move to another process and back.
                        kept.cache.clear();
                        projection
                            .apply_batch(&mut tx, &fresh, &mut kept.cache)
                            .await?;
                    }
                    for &pp in parts.keys() {
                        let key = partition_checkpoint(name, pp);
                        write_checkpoint(&mut tx, &key, last, &now, apply_rate).await?;
                    }
                    raise_watermark(&mut tx, name, total, &now, apply_rate).await?;
                }
            }
        }
        if self.options.crash_before_commit_of_batch == Some(batch_no) {
            // Dropping the transaction rolls it back, exactly as a crash would.
            return Err(ProjectionError::InjectedCrash { batch: batch_no });
        }
        let t = Instant::now();
        tx.commit().await?;
        spent.push(("commit", t.elapsed()));
        for (projection, kept) in self.projections.iter().zip(kept.iter_mut()) {
            if stamped.contains(&projection.name()) {
                kept.stamp = Some(now.clone());
            }
        }
        tracing::debug!(
            events = events.len(),
            spent = ?spent,
            total = ?started.elapsed(),
            "batch timings"
        );
        Ok(())
    }
}

/// A projection's memory of a pass and the `updated_at` its latest commit wrote to the
/// projection's checkpoint row.
struct Kept {
    cache: StateCache,
    stamp: Option<String>,
}

/// Whether the checkpoint row of `name` is still the one written with `stamp` (by this
/// projector's latest commit): if not, a rebuild swapped the projection's tables in or
/// another process applied it meanwhile, and what this projector keeps may be stale.
async fn wrote_last(
    tx: &mut AnyConnection,
    name: &str,
    stamp: Option<&str>,
) -> Result<bool, ProjectionError> {
    let Some(stamp) = stamp else {
        return Ok(false);
    };
    let row: Option<(String,)> =
        sqlx::query_as("SELECT updated_at FROM projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(row.is_some_and(|(at,)| at == stamp))
}

async fn write_checkpoint(
    tx: &mut AnyConnection,
    key: &str,
    last: u64,
    now: &str,
    apply_rate: f64,
) -> Result<(), ProjectionError> {
    // Never backwards: after a rebuild's swap moved the checkpoint ahead, a live projector
    // still re-applying older events (harmlessly) must not move it back.
    sqlx::query(
        "INSERT INTO projection_checkpoints (name, last_sequence, updated_at, apply_rate) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET \
         last_sequence = CASE WHEN excluded.last_sequence > projection_checkpoints.last_sequence \
         THEN excluded.last_sequence ELSE projection_checkpoints.last_sequence END, \
         updated_at = excluded.updated_at, apply_rate = excluded.apply_rate",
    )
    .bind(key)
    .bind(i64::try_from(last).unwrap_or(i64::MAX))
    .bind(now)
    .bind(apply_rate)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Moves a partitioned projection's own checkpoint to the lowest of its partitions'
/// checkpoints, once every partition has one; never backwards.
async fn raise_watermark(
    tx: &mut AnyConnection,
    name: &str,
    total: u32,
    now: &str,
    apply_rate: f64,
) -> Result<(), ProjectionError> {
    let (low, count): (Option<i64>, i64) = sqlx::query_as(
        "SELECT MIN(last_sequence), COUNT(*) FROM projection_checkpoints \
         WHERE substr(name, 1, length($1) + 1) = $1 || '@'",
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    let (Some(low), true) = (low, count >= i64::from(total)) else {
        return Ok(());
    };
    write_checkpoint(tx, name, crate::sql::u64_of(low), now, apply_rate).await
}

/// Records the fences of the held leases, refusing the commit if any partition has since
/// been taken over (a larger fence is recorded).
async fn check_fences(
    tx: &mut AnyConnection,
    share: &PartitionShare,
) -> Result<(), ProjectionError> {
    for (&partition, &fence) in &share.held {
        let done = sqlx::query(
            "INSERT INTO projection_fences (grp, partition, fence) VALUES ($1, $2, $3) \
             ON CONFLICT (grp, partition) DO UPDATE SET fence = excluded.fence \
             WHERE excluded.fence >= projection_fences.fence",
        )
        .bind(&share.group)
        .bind(i64::from(partition))
        .bind(i64::try_from(fence).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(ProjectionError::LeaseLost { partition, fence });
        }
    }
    Ok(())
}

/// How long a projector waits for the next batch before it checks whether the log moved
/// on without it.
const STALL_CHECK: Duration = Duration::from_secs(10);

/// The same while the log held more events for the subscription when the latest batch was
/// read (catching up, rebuilding): a batch is then due in milliseconds, so a subscription
/// that stopped delivering (seen once in a rebuild of 1,000,000 events, at 600,000) costs
/// seconds, not ten. A false alarm only resubscribes from the checkpoint.
const STALL_CHECK_BEHIND: Duration = Duration::from_secs(3);

/// Stalls in a row at one checkpoint after which [`Projector::run_until`] gives up.
const MAX_STALLS_AT_ONE_CHECKPOINT: u32 = 3;

/// Aborts the task when dropped (the projector's reader, whatever way `run_once` ends).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Events applied per second over the last [`ApplyRate::WINDOW`] of commits.
#[derive(Debug)]
struct ApplyRate {
    started: Instant,
    commits: VecDeque<(Instant, u64)>,
}

impl ApplyRate {
    const WINDOW: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Self {
            started: Instant::now(),
            commits: VecDeque::new(),
        }
    }

    /// Records a commit of `events` now and returns the rate including it.
    fn record(&mut self, events: u64) -> f64 {
        let now = Instant::now();
        self.commits.push_back((now, events));
        while self
            .commits
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > Self::WINDOW)
        {
            self.commits.pop_front();
        }
        let total: u64 = self.commits.iter().map(|(_, n)| n).sum();
        // Over the window, or over the run so far when it is younger than the window.
        let span = now
            .duration_since(self.started)
            .min(Self::WINDOW)
            .max(Duration::from_millis(100));
        total as f64 / span.as_secs_f64()
    }
}

fn now_text() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
