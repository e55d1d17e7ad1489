//! The anchor records as the verifier sees them: [`AnchorLookup`], the one
//! trait it reads them through (records, peg-out link status, stored block
//! hashes), over the record types and encodings of the
//! `ailee-records` crate (re-exported here, so `ailee_core::records::X`
//! names the same items as `ailee_records::X`).
//!
//! The records live in their own crate because both ends use them: the
//! database crate (`ailee-db`, RocksDB) stores them, and the core, which
//! never links RocksDB, verifies snapshots against them.

pub use ailee_records::*;

use crate::verify::LinkStatus;

/// Where anchor records are read from: the reorg database itself
/// (`ailee_db::reorgdb::ReorgDb`), or a process that reads it for a tool that
/// does not link RocksDB (`ailee_l2_verify`, see `ailee_cli::dbquery`).
pub trait AnchorLookup {
    /// The record stored under `hash`, exactly as given.
    fn anchor(&self, hash: &str) -> crate::Result<Option<AnchorRecord>>;

    /// A hint that these hashes are about to be looked up (as written and
    /// lower-cased): a source behind a pipe asks for all of them in one round
    /// trip. The default does nothing.
    fn prefetch(&self, _hashes: &[&str]) -> crate::Result<()> {
        Ok(())
    }

    /// The stored hash of the best-chain block at `height` (`block:<height>`),
    /// to tell whether a Bitcoin node follows the same chain. The default
    /// knows none (a source without blocks proves nothing either way).
    fn block_hash(&self, _height: u64) -> crate::Result<Option<String>> {
        Ok(None)
    }

    /// The record of `hash` as written, else lower-cased (the node writes
    /// lower-case hex).
    fn anchor_any_case(&self, hash: &str) -> crate::Result<Option<AnchorRecord>> {
        match self.anchor(hash)? {
            Some(r) => Ok(Some(r)),
            None if hash.bytes().any(|b| b.is_ascii_uppercase()) => self.anchor(&hash.to_ascii_lowercase()),
            None => Ok(None),
        }
    }

    /// What the records say of an anchor a peg-out names: a void record
    /// (INVALIDATED_REORG, FAILED_ORPHANED) is [`LinkStatus::Void`], any
    /// other record valid, none unknown.
    fn link_status(&self, hash: &str) -> crate::Result<LinkStatus> {
        Ok(match self.anchor_any_case(hash)? {
            None => LinkStatus::Unknown,
            Some(r) if r.status.is_void() => LinkStatus::Void(format!("the reorg database marks {}", r.status.name())),
            Some(_) => LinkStatus::Valid,
        })
    }
}
