//! The core library of the AILEE recovery tools: what every tool agrees on,
//! with no RocksDB and no printing.
//!
//! - the snapshot file: its format ([`format`], [`model`]), the one type that
//!   reads it ([`snapfile`]), appending to it ([`append`]), JSON states
//!   ([`state_json`]);
//! - the state root ([`root`]) and anchors ([`anchor`]); the one verifier
//!   (`verifier`: the whole verdict on a block — root, anchor, peg-out links,
//!   own anchor's record, on chain) built on the block check ([`verify`]) and
//!   the parallel reader ([`pipeline`]), over anchor records read through
//!   [`records::AnchorLookup`] (the record types are the `ailee-records`
//!   crate's);
//! - Bitcoin: the RPC client ([`rpc`]), anchors found on chain ([`onchain`]),
//!   the anchoring identity ([`identity`]);
//! - the process: typed errors ([`error`]) and the one exit-code table
//!   ([`exit`]), cooperative cancellation ([`cancel`]), child processes
//!   ([`child`]), atomic files ([`atomic`]), progress ([`progress`]) and the
//!   Prometheus textfile writer ([`metrics`]).
//!
//! This crate never prints, never exits and never panics on input; binaries
//! render its results. The reorg database (RocksDB) and what is built on it
//! (resync, the monitor's checks, backups, the database reader) are in
//! `ailee-db`, so a tool that does not open the database (verify, extract,
//! prune) starts without RocksDB's C++ runtime (about 2 ms of process start).

#![deny(clippy::print_stdout, clippy::print_stderr, clippy::exit, clippy::dbg_macro)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod anchor;
pub mod append;
pub mod atomic;
pub mod block;
pub mod cancel;
pub mod child;
pub mod error;
pub mod exit;
pub mod format;
pub mod identity;
pub mod metrics;
pub mod model;
#[cfg(feature = "rpc")]
pub mod onchain;
pub mod pipeline;
pub mod progress;
pub mod records;
pub mod root;
#[cfg(feature = "rpc")]
pub mod rpc;
mod scan;
pub mod snapfile;
pub mod state_json;
#[cfg(feature = "rpc")]
pub mod verifier;
pub mod verify;

pub use error::{Error, Result};
pub use exit::ExitStatus;
