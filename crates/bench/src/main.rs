//! `crm-bench`: the command path, the HTTP gateway and the projectors, each measured next
//! to the raw JetStream baseline for the same message size and count, on the same
//! nats-server in the same run.
//!
//! ```sh
//! cargo run --release -p crm-bench -- all
//! cargo run --release -p crm-bench -- append --concurrency 64 --commands 50000
//! ```
//!
//! Every scenario starts its own nats-server (the pinned one, see
//! `crm_log::server::find_binary`) with a temporary store, and keeps SQLite files in a
//! temporary directory. Nothing is hard-coded: every figure printed is measured in the run.

mod audit;
mod http1;
mod measure;
mod memory;
mod raw;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// In-process command path: decide + conditional append (`Customers::submit`).
    Append,
    /// End to end through the HTTP gateway with keep-alive clients.
    Http,
    /// Each view alone, then the four views together, then all five projections (the audit
    /// index too) as `crm project all` runs them, over a preloaded log; last, all five
    /// live behind the command path, with each event's lag from append to commit.
    Project,
    /// All four views rebuilt from scratch over a larger preloaded log.
    Rebuild,
    /// Audit queries (type and time range, customer, actor) over a large log through the
    /// audit index, next to scanning the log for the same answer.
    Audit,
    /// The gateway and a projector each in a process of their own at several numbers of
    /// customers (`--memory-customers`), with each process's peak RSS.
    Memory,
    /// append, http, project and rebuild in turn, each on a fresh nats-server (audit and
    /// memory are long: run them by name).
    All,
}

/// Benchmark harness for the CRM event log, gateway and projectors.
#[derive(Debug, Clone, Parser)]
#[command(name = "crm-bench", version)]
pub struct Args {
    /// Scenario to run.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Customers the append and http scenarios spread their commands over.
    #[arg(long, default_value_t = 10_000)]
    pub customers: u64,
    /// Commands measured by append and http (after registering the customers).
    #[arg(long, default_value_t = 100_000)]
    pub commands: u64,
    /// Concurrent submitters (append), HTTP clients (http) and demo writers (preloads).
    #[arg(long, short = 'c', default_value_t = 64)]
    pub concurrency: usize,
    /// Also run append and http paced at this many commands/s (latency measured from
    /// each command's scheduled start). By default they are paced at half of the
    /// throughput just measured.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Skip the paced run of append and http.
    #[arg(long)]
    pub no_paced: bool,
    /// Outstanding acks of the raw asynchronous publish baseline.
    #[arg(long, default_value_t = 768)]
    pub window: usize,
    /// Most messages of the publish-and-wait baseline (it is slow; the count is printed).
    #[arg(long, default_value_t = 20_000)]
    pub sync_count: u64,
    /// Events preloaded (demo histories through the command path) for `project`.
    #[arg(long, default_value_t = 50_000)]
    pub events: u64,
    /// Events preloaded for `rebuild` (the issue's target is 1,000,000).
    #[arg(long, default_value_t = 100_000)]
    pub rebuild_events: u64,
    /// `rebuild`: run only the row the target is about (the four views through one
    /// combined projector), skipping the others.
    #[arg(long)]
    pub combined_only: bool,
    /// Events preloaded for `audit` (the issue's figure is over 1,000,000).
    #[arg(long, default_value_t = 1_000_000)]
    pub audit_events: u64,
    /// Times each audit query is repeated for its latency percentiles.
    #[arg(long, default_value_t = 30)]
    pub audit_repeats: usize,
    /// `project`, `rebuild`: read the log through async-nats only, without the lean
    /// connections range reads use (to compare the two in alternating runs).
    #[arg(long)]
    pub client_reads: bool,
    /// `project`, `rebuild`: measure the combined projector's row this many times, each
    /// right after the raw ordered consume of the same count on the same server, and show
    /// the pair with the median ratio (for an even N the upper of the middle two; every
    /// pair's ratio is in the notes). On a machine whose speed drifts, a baseline measured
    /// beside its row gives the steadier ratio.
    #[arg(long, default_value_t = 3)]
    pub pairs: usize,
    /// Projector batch size (events per transaction).
    #[arg(long, default_value_t = crm_projections::projector::DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Customers kept in the aggregate cache.
    #[arg(long, default_value_t = crm_log::repository::DEFAULT_CACHE_CAPACITY)]
    pub cache: usize,
    /// Customers whose folded state each projection keeps between batches (as
    /// `projector.state_cache`; 0 reloads every touched customer in every batch).
    #[arg(long, default_value_t = crm_projections::cache::DEFAULT_CAPACITY)]
    pub state_cache: usize,
    /// Run the four projectors inside the gateway process during `http` (as `crm dev`).
    #[arg(long)]
    pub with_projectors: bool,
    /// Customer counts of the `memory` scenario, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    pub memory_customers: Vec<u64>,
    /// Also run `project` and `rebuild` into PostgreSQL at this URL (a fresh schema per
    /// row, dropped afterwards), e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
    #[arg(long)]
    pub postgres_url: Option<String>,
    /// Also write the tables (Markdown) to this file.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Worker threads of the bench's async runtime (default: `TOKIO_WORKER_THREADS`, else
    /// one per CPU, as the `crm` binary). The in-process paths run on this runtime.
    #[arg(long)]
    pub worker_threads: Option<usize>,
}

impl Args {
    /// The projector options the bench's projectors run with.
    pub fn projector(&self) -> crm_projections::ProjectorOptions {
        crm_projections::ProjectorOptions {
            batch_size: self.batch_size,
            state_cache: self.state_cache,
            ..crm_projections::ProjectorOptions::default()
        }
    }
}

/// The same allocator as the `crm` binary (the bench runs the same paths in process, and
/// re-executes itself as `crm` for the process rows).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // As the `crm` binary does, so the paths measured here run as they do there.
    crm_cli::disable_transparent_huge_pages();
    // Re-executed by the bench as a `crm` process of its own (see `memory`).
    if std::env::var_os(memory::AS_CRM).is_some() {
        return crm_cli::main();
    }
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.worker_threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On SIGINT or SIGTERM the scenario is dropped rather than left to the process's exit:
    // dropping it kills the nats-server and `crm` processes it started (`kill_on_drop`)
    // and removes its temporary files, which an exit in the middle would leave behind.
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = scenarios::run(args) => Some(result),
            () = crm_cli::services::shutdown_signal() => None,
        }
    });
    match outcome {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        None => {
            eprintln!("interrupted: the servers this run started are stopped");
            ExitCode::from(130)
        }
    }
}
