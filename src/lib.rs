//! sonde probes LLM APIs and measures, minute by minute, which provider of a model is up,
//! fast, really streaming, within rate limits and within budget.
//!
//! The modules follow the data flow of docs/design.md: [`config`] and [`probe`] say what to run,
//! [`runner`] runs it through a [`provider`] adapter, [`measurement`] turns timestamped
//! events into timings, [`result`] is the record every later stage reads, [`capability`] says what a
//! target can do, [`printer`]
//! presents records, and [`simulator`] stands in for real providers. ARCHITECTURE.md has the
//! map and the invariants.

pub mod aggregate;
pub mod bench;
pub mod budget;
pub mod capability;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod interned;
pub mod lease;
pub mod limiter;
pub mod measurement;
pub mod notify;
pub mod owned_dir;
pub mod printer;
pub mod probe;
pub mod provider;
pub mod publish;
pub mod quality;
pub mod redact;
pub mod result;
pub mod runner;
pub mod sanitize;
pub mod scheduler;
pub mod server;
pub mod simulator;
pub mod store;
pub mod sync;
pub mod timer;
pub mod units;
