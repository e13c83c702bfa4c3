//! Measuring: a closed-loop (or rate-paced) load driver with exact latency percentiles, and
//! peak resident memory from `/proc`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

impl Latency {
    /// Percentiles of latencies in microseconds (sorts them).
    pub fn of(mut micros: Vec<u32>) -> Option<Self> {
        if micros.is_empty() {
            return None;
        }
        micros.sort_unstable();
        let at = |q: f64| {
            // Nearest-rank percentile.
            let rank = (q * micros.len() as f64).ceil() as usize;
            f64::from(micros[rank.clamp(1, micros.len()) - 1]) / 1_000.0
        };
        Some(Self {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
        })
    }
}

/// The outcome of one measured phase.
#[derive(Debug, Clone)]
pub struct Measured {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latency: Option<Latency>,
    /// Paced runs only: latency counted from when each operation was issued (see [`drive`]).
    pub issued: Option<Latency>,
    /// CPU of this process and of the nats-server during the phase, when measured.
    pub cpu: Option<CpuShare>,
}

impl Measured {
    /// The same, with the CPU used since `mark`.
    pub fn with_cpu(mut self, mark: &CpuMark) -> Self {
        self.cpu = mark.share();
        self
    }

    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        per_sec(self.ok, self.elapsed)
    }
}

/// `n` per `elapsed`, per second.
pub fn per_sec(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Microseconds, saturating at `u32::MAX` (71 minutes).
pub fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Runs operations `0..count` on `workers` concurrent tasks; `op(k, worker)` performs the
/// k-th one. Without `rate` each worker starts its next operation as soon as the previous
/// one finished (closed loop) and latency is the operation's own duration. With `rate`
/// (operations per second) the k-th operation is scheduled at `start + k / rate` and its
/// latency is measured from that scheduled time, so a stalled server is not hidden by
/// workers that simply stop sending (no coordinated omission), as long as `workers`
/// suffice for the rate.
///
/// A paced run releases operations from an OS thread of its own (the pacer), not from
/// tokio timers in the runtime under test: a tokio sleep here wakes 1.2–1.4 ms late at the
/// median and 5–15 ms at the 99th percentile, and a woken task also waits for a busy
/// runtime, which is the system's own latency and must count. The pacer sleeps until the
/// next operation falls due and then hands out every due one (a semaphore permit each);
/// a worker takes the next number when it gets a permit.
///
/// It also counts each latency from when the pacer *released* the operation (never before
/// its scheduled time): that leaves out only the pacer thread's own lateness (an OS sleep,
/// a few tens of µs at the median on a VM), and keeps the wait for a free worker and for
/// the runtime. The `ref: the driver alone` row shows the pacer's lateness.
pub async fn drive<F, Fut>(count: u64, workers: usize, rate: Option<f64>, op: F) -> Measured
where
    F: Fn(u64, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let trace = std::env::var_os("CRM_BENCH_TRACE").is_some();
    let start = Instant::now();
    // A rate that is not a positive number (a closed loop that measured nothing) paces
    // nothing: the run is a closed loop.
    let pacer = rate
        .filter(|r| r.is_finite() && *r > 0.0)
        .map(|r| Pacer::start(start, r, count));
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers.max(1) {
        let op = op.clone();
        let next = next.clone();
        let pacer = pacer.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut issued = Vec::new();
            let mut starts = Vec::new();
            let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
            loop {
                let (k, t0, issued_at) = match &pacer {
                    Some(p) => {
                        if !p.take().await {
                            break;
                        }
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= count {
                            break;
                        }
                        let at = p.due(k);
                        (k, at, Some(p.released(k).max(at)))
                    }
                    None => {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= count {
                            break;
                        }
                        (k, Instant::now(), None)
                    }
                };
                match op(k, worker).await {
                    Ok(()) => {
                        let done = Instant::now();
                        ok += 1;
                        lat.push(micros(done - t0));
                        if let Some(i) = issued_at {
                            issued.push(micros(done.saturating_duration_since(i)));
                        }
                        if trace {
                            starts.push(micros(t0 - start));
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, issued, starts, ok, errors, first_error)
        }));
    }
    let mut all = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut all_issued = Vec::new();
    let mut traced = Vec::new();
    let (mut ok, mut errors, mut first_error) = (0, 0, None);
    for t in tasks {
        match t.await {
            Ok((lat, issued, starts, o, e, fe)) => {
                traced.extend(starts.iter().copied().zip(lat.iter().copied()));
                all.extend(lat);
                all_issued.extend(issued);
                ok += o;
                errors += e;
                if first_error.is_none() {
                    first_error = fe;
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(format!("worker panicked: {e}"));
            }
        }
    }
    let elapsed = start.elapsed();
    if let Some(p) = &pacer {
        p.stop();
    }
    if trace {
        traced.sort_unstable();
        // One file per measured phase, numbered in the order the phases end.
        static PHASE: AtomicU64 = AtomicU64::new(1);
        let path = std::env::temp_dir().join(format!(
            "crm-bench-trace-{}-{}.txt",
            std::process::id(),
            PHASE.fetch_add(1, Ordering::Relaxed)
        ));
        let text: String = traced.iter().map(|(s, l)| format!("{s} {l}\n")).collect();
        if std::fs::write(&path, text).is_ok() {
            eprintln!("  trace (start µs, latency µs): {}", path.display());
        }
    }
    Measured {
        ok,
        errors,
        first_error,
        elapsed,
        latency: Latency::of(all),
        issued: Latency::of(all_issued),
        cpu: None,
    }
}

/// Hands out paced operations from an OS thread of its own (see [`drive`]).
#[derive(Clone)]
struct Pacer {
    start: Instant,
    rate: f64,
    permits: Arc<tokio::sync::Semaphore>,
    /// When the pacer released operation k, in µs after `start`.
    released_at: Arc<Vec<AtomicU64>>,
}

impl Pacer {
    fn start(start: Instant, rate: f64, count: u64) -> Self {
        let n = usize::try_from(count).unwrap_or(usize::MAX);
        let pacer = Pacer {
            start,
            rate,
            permits: Arc::new(tokio::sync::Semaphore::new(0)),
            released_at: Arc::new((0..n).map(|_| AtomicU64::new(0)).collect()),
        };
        let p = pacer.clone();
        std::thread::spawn(move || {
            let mut released = 0u64;
            while released < count && !p.permits.is_closed() {
                let now = Instant::now();
                // Operation k falls due at k / rate: those with k / rate <= now.
                let due = (((now - p.start).as_secs_f64() * p.rate).floor() as u64)
                    .saturating_add(1)
                    .min(count);
                if due > released {
                    let at = micros(now - p.start);
                    for k in released..due {
                        if let Some(slot) =
                            usize::try_from(k).ok().and_then(|k| p.released_at.get(k))
                        {
                            slot.store(u64::from(at), Ordering::Relaxed);
                        }
                    }
                    p.permits
                        .add_permits(usize::try_from(due - released).unwrap_or(usize::MAX));
                    released = due;
                }
                if released >= count {
                    break;
                }
                let next = p.due(released);
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
            }
            // Every operation is out (or there were none): the workers waiting for one
            // find that there are none left.
            p.permits.add_permits(1 << 20);
        });
        pacer
    }

    /// When operation k is scheduled.
    fn due(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.rate)
    }

    /// When the pacer released operation k.
    fn released(&self, k: u64) -> Instant {
        let at = usize::try_from(k)
            .ok()
            .and_then(|k| self.released_at.get(k))
            .map_or(0, |slot| slot.load(Ordering::Relaxed));
        self.start + Duration::from_micros(at)
    }

    /// Waits for the next released operation; false once the run is over.
    async fn take(&self) -> bool {
        match self.permits.acquire().await {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Ends the pacer thread (and any worker still waiting).
    fn stop(&self) {
        self.permits.close();
    }
}

/// Resets this process's peak RSS (VmHWM) to its current RSS, so the next reading covers
/// only what follows. Linux ≥ 4.0; ignored where unsupported.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak RSS (VmHWM) in MiB of this process (`None`) or of `pid`.
pub fn peak_rss_mib(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The pid of the `nats-server` listening on `port` (found by its command line; the
/// launcher does not expose the child's pid).
pub fn nats_server_pid(port: u16) -> Option<u32> {
    let port = port.to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_nats = args.first().is_some_and(|a| a.ends_with(b"nats-server"));
        let on_port = args
            .windows(2)
            .any(|w| w[0] == b"-p" && w[1] == port.as_bytes());
        if is_nats && on_port {
            return Some(pid);
        }
    }
    None
}

/// CPU time of a process in seconds (user + system), from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI this runs on.
    Some((utime + stime) / 100.0)
}

/// CPU used by this process and by the nats-server during a phase, in % of one core
/// (200 % is both cores of a 2-core machine).
#[derive(Debug, Clone, Copy)]
pub struct CpuShare {
    pub bench: f64,
    pub nats: f64,
}

/// Measures the CPU of this process and of the nats-server.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    pub nats_pid: Option<u32>,
}

/// A starting point of a [`CpuMeter`].
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    at: Instant,
    bench: Option<f64>,
    nats: Option<f64>,
    nats_pid: Option<u32>,
}

impl CpuMeter {
    /// Now.
    pub fn mark(&self) -> CpuMark {
        CpuMark {
            at: Instant::now(),
            bench: cpu_seconds(None),
            nats: self.nats_pid.and_then(|p| cpu_seconds(Some(p))),
            nats_pid: self.nats_pid,
        }
    }
}

impl CpuMark {
    /// CPU used since the mark, as a share of the wall time since the mark.
    pub fn share(&self) -> Option<CpuShare> {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let bench = cpu_seconds(None)? - self.bench?;
        let nats = self.nats_pid.and_then(|p| cpu_seconds(Some(p)))? - self.nats?;
        Some(CpuShare {
            bench: 100.0 * bench / wall,
            nats: 100.0 * nats / wall,
        })
    }
}

/// `/proc/loadavg`'s first three fields.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let l = Latency::of((1..=1_000).rev().collect()).expect("latencies");
        assert!((l.p50 - 0.5).abs() < 1e-9);
        assert!((l.p99 - 0.99).abs() < 1e-9);
        assert!((l.p999 - 0.999).abs() < 1e-9);
        assert!(Latency::of(Vec::new()).is_none());
        let one = Latency::of(vec![7]).expect("one");
        assert!((one.p999 - 0.007).abs() < 1e-9);
    }

    #[test]
    fn proc_readings_exist_on_linux() {
        assert!(cpu_seconds(None).is_some());
        assert!(peak_rss_mib(None).is_some_and(|m| m > 0.0));
    }

    #[tokio::test]
    async fn drive_runs_every_operation_once() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let m = drive(200, 8, None, move |k, _| {
            let s = s.clone();
            async move {
                s.lock().map_err(|e| e.to_string())?.push(k);
                if k % 50 == 0 {
                    Err(format!("op {k}"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!((m.ok, m.errors), (196, 4));
        let mut ks = seen.lock().expect("lock").clone();
        ks.sort_unstable();
        assert_eq!(ks, (0..200).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn paced_drive_keeps_to_the_rate() {
        let m = drive(20, 4, Some(200.0), |_, _| async { Ok(()) }).await;
        assert_eq!(m.ok, 20);
        // 20 operations at 200/s: the last is scheduled at 95 ms.
        assert!(m.elapsed >= Duration::from_millis(95));
    }

    #[tokio::test]
    async fn latency_from_issue_leaves_out_the_pacer() {
        // Operations that take no time, one worker at 10,000/s, released by the pacer
        // thread. Counted from their release they take no more than the runtime needs to
        // wake the worker; counted from the schedule they also carry the pacer's own
        // lateness, never less.
        let m = drive(500, 1, Some(10_000.0), |_, _| async { Ok(()) }).await;
        assert_eq!(m.ok, 500);
        let issued = m.issued.expect("a paced run counts from the issue too");
        assert!(issued.p50 < 5.0, "{issued:?}");
        assert!(m.latency.expect("latency").p50 >= issued.p50);
    }

    #[tokio::test]
    async fn nothing_to_pace_ends_at_once() {
        // No operations, or a rate that is not a positive number (a closed loop that
        // measured nothing): the run ends, nothing waits for ever.
        for (count, rate) in [(0, 1_000.0), (5, 0.0), (5, f64::NAN), (5, f64::INFINITY)] {
            let m = tokio::time::timeout(
                Duration::from_secs(10),
                drive(count, 3, Some(rate), |_, _| async { Ok(()) }),
            )
            .await
            .expect("the run ends");
            assert_eq!(m.ok, count, "{count} at {rate}");
        }
    }

    #[tokio::test]
    async fn latency_from_issue_still_counts_the_wait_for_a_busy_worker() {
        // One worker at 1,000/s; the 6th operation takes 30 ms, the others none. The 7th
        // to the 20th are due while the worker is busy: each counts from its schedule, so
        // 14 of 20 latencies are 16–29 ms.
        let m = drive(20, 1, Some(1_000.0), |k, _| async move {
            if k == 5 {
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            Ok(())
        })
        .await;
        assert_eq!(m.ok, 20);
        let issued = m.issued.expect("issued");
        assert!(issued.p50 >= 10.0, "{issued:?}");
        assert!(issued.p99 >= 30.0, "{issued:?}");
    }

    #[tokio::test]
    async fn closed_loop_has_no_issued_latency() {
        let m = drive(10, 2, None, |_, _| async { Ok(()) }).await;
        assert!(m.latency.is_some());
        assert!(m.issued.is_none());
    }
}
