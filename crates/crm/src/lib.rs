//! The `crm` command line: parses arguments and config, then wires the library crates
//! together for each sub-command.
//!
//! - [`cli`] defines the arguments.
//! - [`audit`] queries, exports and verifies the event log.
//! - [`config`] is the one typed configuration, layered file + environment.
//! - [`telemetry`] builds the tracing subscriber.
//! - [`services`] starts the parts (log, read store, gateway, projectors) from config.
//! - [`dev`] runs everything in one process with its own pinned nats-server.
//! - [`replay`] rebuilds views blue-green and builds point-in-time views.
//! - [`status`] prints each projection's checkpoint, lag, apply rate and state.
//! - [`demo`] generates believable customer histories through the command path.

pub mod audit;
pub mod cli;
pub mod config;
pub mod demo;
pub mod dev;
pub mod replay;
pub mod services;
pub mod status;
pub mod telemetry;

use std::process::ExitCode;

use clap::Parser;

/// Turns transparent huge pages off for this process and the processes it starts (ADR 16).
///
/// On a kernel that backs all anonymous memory with 2 MiB pages (`always`), every page
/// mimalloc returns to the system and takes back is faulted in again as a fresh huge page,
/// zeroed in full: 6-7 % of a catching-up projector's samples were the kernel zeroing
/// pages, and the combined projector ran 4-8 % faster without them, with less memory
/// (docs/benchmarks.md, 2026-12-05). Called first thing in `main`; where the kernel refuses
/// (or has no such setting) nothing changes.
pub fn disable_transparent_huge_pages() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = cli::Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, as `{:#}` writes them, but without a cause that the
/// message before it already ends with (after `: `): many errors print their source at the
/// end of their own message (sqlx's and the read store's do), and the whole chain would
/// then say the same thing two or three times.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut previous = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let shown = previous
            .strip_suffix(text.as_str())
            .is_some_and(|head| head.ends_with(": "));
        if shown {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        previous = text;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_text;

    /// The setting is the process's own and later processes inherit it (a `crm dev`'s
    /// nats-server too).
    #[cfg(target_os = "linux")]
    #[test]
    fn transparent_huge_pages_are_turned_off() -> anyhow::Result<()> {
        super::disable_transparent_huge_pages();
        assert!(rustix::thread::transparent_huge_pages_are_disabled()?);
        let status = std::process::Command::new("sh")
            .args(["-c", "grep -i '^THP_enabled' /proc/self/status || true"])
            .output()?;
        let line = String::from_utf8_lossy(&status.stdout);
        // Linux 5.0 and later print the flag of each process (`THP_enabled:\t0`); older
        // kernels print nothing.
        assert!(line.is_empty() || line.trim_end().ends_with('0'), "{line}");
        Ok(())
    }

    #[derive(Debug, thiserror::Error)]
    #[error("read store: {0}")]
    struct Wraps(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("error returned from database: {0}")]
    struct Inner(#[source] Leaf);

    #[derive(Debug, thiserror::Error)]
    #[error("(code: 26) file is not a database")]
    struct Leaf;

    /// A cause already written into the message above it is not written again; one that
    /// adds something is.
    #[test]
    fn a_cause_is_written_once() {
        let e = anyhow::Error::new(Wraps(Inner(Leaf))).context("opening read store /tmp/x");
        assert_eq!(
            error_text(&e),
            "opening read store /tmp/x: read store: error returned from database: (code: 26) file is not a database"
        );
        let plain = anyhow::anyhow!("disk full").context("writing the shadow");
        assert_eq!(error_text(&plain), "writing the shadow: disk full");
        // Found inside the message, not as its end: something new.
        let inside = anyhow::anyhow!("denied").context("reading /srv/denied/key");
        assert_eq!(error_text(&inside), "reading /srv/denied/key: denied");
        let ends = anyhow::anyhow!("key").context("reading /srv/key");
        assert_eq!(error_text(&ends), "reading /srv/key: key");
    }
}
