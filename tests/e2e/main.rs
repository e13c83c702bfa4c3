//! End-to-end tests of the spine: a real nats-server per test, real SQLite, real HTTP.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod audit;
mod bad_input;
mod cluster;
mod concurrency;
mod customer_success;
mod demo;
mod doors;
mod grpc;
mod hostile;
mod idempotency;
mod leases;
mod lifecycle;
mod log_guarantees;
mod projector_crash;
mod rebuild;
mod scheduler;
