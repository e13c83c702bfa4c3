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

/// Entry point of the binary.
pub fn main() -> ExitCode {
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
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
