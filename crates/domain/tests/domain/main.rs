//! Integration tests of `crm-domain` through its public API only: every command's accepted
//! event and refusals (given/when/then), the wire shapes, the `eventually` aggregate, the
//! lifecycle model, and property tests of the fold. Time is always passed in, never read.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod aggregate;
mod commands;
mod harness;
mod health;
mod lifecycle;
mod properties;
mod wire;
