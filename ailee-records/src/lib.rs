//! The records of the AILEE reorg database (SPEC §1.4): column families, key
//! prefixes, the key and value encodings of blocks, anchors and reorg
//! events, the errors of opening and reading the database ([`DbError`]), and
//! the protocol of the database reader ([`reader`]).
//!
//! Independent of RocksDB (and of everything else): the database crate
//! (`ailee-db`) stores these records, the core's verifier reads
//! [`AnchorRecord`]s through its lookup trait, and a tool that does not link
//! RocksDB reads them through the reader's pipe (`ailee-cli`'s `dbquery`).
//!
//! Every decoder is strict: a value the node could not decode is corruption,
//! and the error names the key.

#![deny(clippy::print_stdout, clippy::print_stderr, clippy::exit, clippy::dbg_macro)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod db_error;
pub mod reader;

pub use db_error::DbError;

use std::fmt;

/// Column family holding every record.
pub const CF_DEFAULT: &str = "default";
/// Column family the node opens too (fails without it); the tools never write it.
pub const CF_REPUTATION: &str = "reputation_cf";
/// Both column families, in the node's order.
pub const COLUMN_FAMILIES: [&str; 2] = [CF_DEFAULT, CF_REPUTATION];
pub const BLOCK_PREFIX: &str = "block:";
pub const ANCHOR_PREFIX: &str = "anchor:";
pub const REORG_PREFIX: &str = "reorg:";
pub const REORG_COUNTER: &str = "reorg_counter";
/// Confirmations after which a PENDING anchor becomes CONFIRMED.
pub const DEFAULT_CONFIRMATIONS: u64 = 6;

/// `block:<height, 20 digits>`
pub fn block_key(height: u64) -> String {
    format!("{BLOCK_PREFIX}{height:020}")
}

/// `reorg:<id, 20 digits>`
pub fn reorg_key(id: u64) -> String {
    format!("{REORG_PREFIX}{id:020}")
}

/// `anchor:<anchorHash>`
pub fn anchor_key(hash: &str) -> String {
    format!("{ANCHOR_PREFIX}{hash}")
}

/// A record that does not decode; names the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {:?} does not decode: {}", self.key, self.message)
    }
}

impl std::error::Error for DecodeError {}

fn err<T>(key: &str, message: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError {
        key: key.to_string(),
        message: message.into(),
    })
}

/// Strict plain decimal (no sign, no leading zeros, fits u64).
pub fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

fn num(key: &str, field: &str, s: &str) -> Result<u64, DecodeError> {
    parse_u64(s).map_or_else(|| err(key, format!("{field} is not a decimal number: {s:?}")), Ok)
}

fn text<'a>(key: &str, v: &'a [u8]) -> Result<&'a str, DecodeError> {
    std::str::from_utf8(v).or_else(|_| err(key, "value is not UTF-8"))
}

/// A key of the default column family, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Block(u64),
    Anchor(String),
    Reorg(u64),
    Counter,
}

fn padded(key: &str, what: &str, digits: &str) -> Result<u64, DecodeError> {
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return err(key, format!("{what} is not 20 zero-padded digits: {digits:?}"));
    }
    digits.parse().or_else(|_| err(key, format!("{what} out of range")))
}

impl Key {
    pub fn decode(raw: &[u8]) -> Result<Key, DecodeError> {
        let key = String::from_utf8_lossy(raw).into_owned();
        let Ok(k) = std::str::from_utf8(raw) else {
            return err(&key, "key is not UTF-8");
        };
        if let Some(h) = k.strip_prefix(BLOCK_PREFIX) {
            return Ok(Key::Block(padded(k, "height", h)?));
        }
        if let Some(id) = k.strip_prefix(REORG_PREFIX) {
            return Ok(Key::Reorg(padded(k, "event id", id)?));
        }
        if let Some(h) = k.strip_prefix(ANCHOR_PREFIX) {
            if h.is_empty() {
                return err(k, "empty anchor hash");
            }
            return Ok(Key::Anchor(h.to_string()));
        }
        if k == REORG_COUNTER {
            return Ok(Key::Counter);
        }
        err(k, "unknown key")
    }
}

/// Is `s` a 64-digit hex hash?
pub fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Value of `block:<height>`: the block hash in hex.
pub fn decode_block_hash(key: &str, v: &[u8]) -> Result<String, DecodeError> {
    let s = text(key, v)?;
    if !is_hash(s) {
        return err(key, format!("block hash is not 64 hex digits: {s:?}"));
    }
    Ok(s.to_string())
}

/// Lifecycle of an anchor commitment on Bitcoin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnchorStatus {
    Pending = 0,
    Confirmed = 1,
    InvalidatedReorg = 2,
    FailedOrphaned = 3,
}

impl AnchorStatus {
    pub const ALL: [AnchorStatus; 4] = [
        AnchorStatus::Pending,
        AnchorStatus::Confirmed,
        AnchorStatus::InvalidatedReorg,
        AnchorStatus::FailedOrphaned,
    ];

    pub fn from_code(c: u64) -> Option<AnchorStatus> {
        Self::ALL.get(usize::try_from(c).ok()?).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            AnchorStatus::Pending => "PENDING",
            AnchorStatus::Confirmed => "CONFIRMED",
            AnchorStatus::InvalidatedReorg => "INVALIDATED_REORG",
            AnchorStatus::FailedOrphaned => "FAILED_ORPHANED",
        }
    }

    /// Whether a peg-out may rely on an anchor in this state.
    pub fn is_void(self) -> bool {
        matches!(self, AnchorStatus::InvalidatedReorg | AnchorStatus::FailedOrphaned)
    }
}

/// `anchorHash|bitcoinTxId|bitcoinHeight|confirmations|broadcastTime|retryCount|status|l2StateRoot`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorRecord {
    pub anchor_hash: String,
    /// Empty until broadcast.
    pub bitcoin_tx_id: String,
    /// 0 until the transaction is mined.
    pub bitcoin_height: u64,
    pub confirmations: u64,
    /// Unix milliseconds.
    pub broadcast_time: u64,
    pub retry_count: u64,
    pub status: AnchorStatus,
    pub l2_state_root: String,
}

impl AnchorRecord {
    pub fn encode(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}",
            self.anchor_hash,
            self.bitcoin_tx_id,
            self.bitcoin_height,
            self.confirmations,
            self.broadcast_time,
            self.retry_count,
            self.status as u8,
            self.l2_state_root
        )
    }

    pub fn decode(key: &str, v: &[u8]) -> Result<AnchorRecord, DecodeError> {
        let s = text(key, v)?;
        let f: Vec<&str> = s.split('|').collect();
        if f.len() != 8 {
            return err(key, format!("anchor record has {} fields, expected 8", f.len()));
        }
        let status = num(key, "status", f[6])?;
        let Some(status) = AnchorStatus::from_code(status) else {
            return err(key, format!("unknown anchor status {status}"));
        };
        if f[0].is_empty() {
            return err(key, "empty anchor hash");
        }
        if let Some(h) = key.strip_prefix(ANCHOR_PREFIX) {
            if h != f[0] {
                return err(key, format!("record names anchor {:?}, not its key's", f[0]));
            }
        }
        Ok(AnchorRecord {
            anchor_hash: f[0].to_string(),
            bitcoin_tx_id: f[1].to_string(),
            bitcoin_height: num(key, "bitcoinHeight", f[2])?,
            confirmations: num(key, "confirmations", f[3])?,
            broadcast_time: num(key, "broadcastTime", f[4])?,
            retry_count: num(key, "retryCount", f[5])?,
            status,
            l2_state_root: f[7].to_string(),
        })
    }
}

/// `reorgHeight|oldBlockHash|newBlockHash|detectedAtTime|n|anchor1|…|anchorN`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReorgEvent {
    /// The fork point: the lowest height whose hash changed.
    pub reorg_height: u64,
    pub old_block_hash: String,
    pub new_block_hash: String,
    /// Unix milliseconds.
    pub detected_at: u64,
    pub invalidated_anchors: Vec<String>,
}

impl ReorgEvent {
    pub fn encode(&self) -> String {
        let mut s = format!(
            "{}|{}|{}|{}|{}",
            self.reorg_height,
            self.old_block_hash,
            self.new_block_hash,
            self.detected_at,
            self.invalidated_anchors.len()
        );
        for a in &self.invalidated_anchors {
            s.push('|');
            s.push_str(a);
        }
        s
    }

    pub fn decode(key: &str, v: &[u8]) -> Result<ReorgEvent, DecodeError> {
        let s = text(key, v)?;
        let f: Vec<&str> = s.split('|').collect();
        if f.len() < 5 {
            return err(key, format!("reorg event has {} fields, expected at least 5", f.len()));
        }
        let n = num(key, "anchor count", f[4])?;
        if (f.len() - 5) as u64 != n {
            return err(key, format!("reorg event says {n} anchors but lists {}", f.len() - 5));
        }
        if f[5..].iter().any(|a| a.is_empty()) {
            return err(key, "empty anchor hash in reorg event");
        }
        Ok(ReorgEvent {
            reorg_height: num(key, "reorgHeight", f[0])?,
            old_block_hash: f[1].to_string(),
            new_block_hash: f[2].to_string(),
            detected_at: num(key, "detectedAtTime", f[3])?,
            invalidated_anchors: f[5..].iter().map(|s| s.to_string()).collect(),
        })
    }
}

/// Value of `reorg_counter`.
pub fn decode_counter(key: &str, v: &[u8]) -> Result<u64, DecodeError> {
    num(key, "reorg counter", text(key, v)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record with every field set (the reader's tests use it too).
    pub(crate) fn rec() -> AnchorRecord {
        AnchorRecord {
            anchor_hash: "ab".repeat(32),
            bitcoin_tx_id: "cd".repeat(32),
            bitcoin_height: 812,
            confirmations: 6,
            broadcast_time: 1_700_000_000_000,
            retry_count: 1,
            status: AnchorStatus::Confirmed,
            l2_state_root: "ef".repeat(32),
        }
    }

    #[test]
    fn keys_are_zero_padded_and_round_trip() {
        assert_eq!(block_key(42), "block:00000000000000000042");
        assert_eq!(Key::decode(block_key(42).as_bytes()), Ok(Key::Block(42)));
        assert_eq!(Key::decode(reorg_key(u64::MAX).as_bytes()), Ok(Key::Reorg(u64::MAX)));
        assert_eq!(Key::decode(b"reorg_counter"), Ok(Key::Counter));
        assert_eq!(Key::decode(b"anchor:ab"), Ok(Key::Anchor("ab".into())));
    }

    #[test]
    fn malformed_keys_name_the_key() {
        for k in [
            "block:42",
            "block:0000000000000000004x",
            "reorg:",
            "anchor:",
            "bogus",
            "block:99999999999999999999",
        ] {
            let e = Key::decode(k.as_bytes()).unwrap_err();
            assert_eq!(e.key, k);
        }
    }

    #[test]
    fn anchor_record_round_trips() {
        let r = rec();
        let k = anchor_key(&r.anchor_hash);
        assert_eq!(AnchorRecord::decode(&k, r.encode().as_bytes()).unwrap(), r);
        let pending = AnchorRecord {
            bitcoin_tx_id: String::new(),
            status: AnchorStatus::Pending,
            ..r
        };
        assert_eq!(AnchorRecord::decode(&k, pending.encode().as_bytes()).unwrap(), pending);
    }

    #[test]
    fn malformed_anchor_records_are_rejected() {
        let r = rec();
        let k = anchor_key(&r.anchor_hash);
        let good = r.encode();
        let bad = [
            good.rsplit_once('|').unwrap().0.to_string(),       // missing field
            format!("{good}|extra"),                            // extra field
            good.replacen("|812|", "|8x2|", 1),                 // non-numeric height
            good.replacen("|812|", "|-812|", 1),                // signed
            good.replacen("|1|ef", "|7|ef", 1),                 // unknown status
            good.replace('|', ","),                             // wrong separator
            good.replacen(&r.anchor_hash, &"00".repeat(32), 1), // not its key's anchor
        ];
        for b in bad {
            let e = AnchorRecord::decode(&k, b.as_bytes()).unwrap_err();
            assert_eq!(e.key, k, "{b}");
        }
        assert!(AnchorRecord::decode(&k, b"\xff").is_err());
    }

    #[test]
    fn reorg_event_round_trips_and_checks_its_count() {
        let e = ReorgEvent {
            reorg_height: 100,
            old_block_hash: "aa".repeat(32),
            new_block_hash: "bb".repeat(32),
            detected_at: 5,
            invalidated_anchors: vec!["x".into(), "y".into()],
        };
        let k = reorg_key(0);
        assert_eq!(ReorgEvent::decode(&k, e.encode().as_bytes()).unwrap(), e);
        let none = ReorgEvent {
            invalidated_anchors: vec![],
            ..e.clone()
        };
        assert_eq!(ReorgEvent::decode(&k, none.encode().as_bytes()).unwrap(), none);
        for bad in [
            "100|a|b|5|3|x|y",
            "100|a|b|5",
            "x|a|b|5|0",
            "100|a|b|5|1|",
            "100;a;b;5;0",
        ] {
            assert!(ReorgEvent::decode(&k, bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn block_hash_and_counter_values() {
        assert!(decode_block_hash("block:1", "0f".repeat(32).as_bytes()).is_ok());
        assert!(decode_block_hash("block:1", b"xyz").is_err());
        assert_eq!(decode_counter("reorg_counter", b"3"), Ok(3));
        assert!(decode_counter("reorg_counter", b"03").is_err());
        assert!(decode_counter("reorg_counter", b"").is_err());
    }
}
