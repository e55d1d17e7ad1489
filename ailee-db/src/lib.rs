//! The reorg database (RocksDB) and what is built on it: the schema's reads
//! and writes ([`reorgdb`], over the record encodings of `ailee-records`),
//! resync from Bitcoin ([`resync`]), anchors found on chain recorded
//! ([`onchain`]), the monitor's checks ([`monitor`]), backups and restores
//! ([`backup`]), and the reader's server ([`reader`]) that answers
//! `ailee_l2_verify --reorg-db` through a pipe.
//!
//! Apart from `ailee-core` so that tools which never open the database do not
//! link RocksDB: its C++ static initializers and libstdc++'s relocations cost
//! about 2 ms at every process start. Like the core, this crate never prints,
//! never exits and never panics on input.

#![deny(clippy::print_stdout, clippy::print_stderr, clippy::exit, clippy::dbg_macro)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod backup;
pub mod monitor;
pub mod onchain;
pub mod reader;
pub mod reorgdb;
pub mod resync;
