//! The reorg database (RocksDB) and what is built on it: the schema's reads
//! and writes ([`reorgdb`]), resync from Bitcoin ([`resync`]), anchors found
//! on chain recorded ([`onchain`]), the monitor ([`monitor`]) and backups
//! ([`backup`]).
//!
//! Apart from `ailee-core` so that tools which never open the database do not
//! link RocksDB: its C++ static initializers and libstdc++'s relocations cost
//! about 2 ms at every process start. Like the core, this crate never prints,
//! never exits and never panics on input.

#![deny(clippy::print_stdout, clippy::print_stderr, clippy::exit, clippy::dbg_macro)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

// The core's modules under their usual paths (`crate::format`, …), for the
// modules that moved here from the core.
pub(crate) use ailee_core::{atomic, block, cancel, format, progress, records, rpc, snapfile, verify, Error, Result};

pub mod backup;
pub mod monitor;
pub mod onchain;
pub mod reorgdb;
pub mod resync;
