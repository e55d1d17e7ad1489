//! Shared library of the AILEE recovery tools.
//!
//! Everything the six binaries agree on lives here: the snapshot file format
//! ([`format`]) and its one reader ([`snapfile`]), the state root ([`root`]), anchors ([`anchor`]),
//! verification ([`verify`]), the exit-code table ([`exit`]) and cooperative
//! cancellation ([`cancel`]). This crate never prints, never exits and never
//! panics on input; binaries render its results.
//!
//! It does not link RocksDB: the reorg database and what is built on it
//! (resync, monitor, backup) are in `ailee-db`, so a tool that does not open
//! the database (verify, extract, prune) starts without RocksDB's C++ runtime
//! (about 2 ms of process start).

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
pub mod verify;

pub use error::{Error, Result};
pub use exit::ExitStatus;
