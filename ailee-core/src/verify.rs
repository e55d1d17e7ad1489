//! Verification of one snapshot (SPEC §2, `ailee_l2_verify`), in the order
//! the spec gives: grammar, state root, anchor hash, payload commitment, then
//! peg-out anchor links.
//!
//! [`check_block`] decides everything a block can decide alone. Peg-out links
//! need other snapshots or the reorg database: they come back as
//! [`Verdict::pegout_refs`], resolved by the one verifier
//! (`crate::verifier::Verifier`, which also judges the own anchor).

use crate::format::{check_parse, parse_block, ParseError};
use crate::records::AnchorStatus;
use crate::root::sha256_hex;
use std::fmt;

/// Why a snapshot does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The block does not match the grammar.
    Corrupt(ParseError),
    NoAnchor,
    RootMismatch {
        expected: String,
        anchor: String,
    },
    HashMismatch {
        expected: String,
        anchor: String,
    },
    PayloadMismatch {
        expected: String,
        anchor: String,
    },
    PegoutMissingAnchor {
        peg_id: String,
    },
    /// A peg-out's anchor is unknown to every source, or known as invalidated.
    PegoutAnchor {
        peg_id: String,
        hash: String,
        why: String,
    },
    /// The snapshot's own anchor is void (INVALIDATED_REORG,
    /// FAILED_ORPHANED) in the reorg database.
    OwnVoid {
        hash: String,
        status: AnchorStatus,
    },
    /// The chain contradicts the own anchor's record (or there is none): an
    /// integrity failure.
    OwnAnchor(String),
    /// The own anchor is recorded but not provable on the chain yet (not
    /// mined, too few confirmations): exit 1, not an integrity verdict.
    NotYetProvable(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Corrupt(e) => write!(f, "corrupt snapshot: {e}"),
            Failure::NoAnchor => write!(f, "No anchor commitment present in snapshot."),
            Failure::RootMismatch { expected, anchor } => write!(
                f,
                "Anchor verification failed: Anchor state root mismatch. expected={expected} anchor={anchor}"
            ),
            Failure::HashMismatch { expected, anchor } => {
                write!(f, "Anchor verification failed: Anchor hash mismatch. expected={expected} anchor={anchor}")
            }
            Failure::PayloadMismatch { expected, anchor } => write!(
                f,
                "Anchor verification failed: Anchor payload does not commit to the state root. expected={expected} anchor={anchor}"
            ),
            Failure::PegoutMissingAnchor { peg_id } => {
                write!(f, "Peg-out {peg_id} missing anchor commitment hash.")
            }
            Failure::PegoutAnchor { peg_id, hash, why } => {
                write!(f, "Peg-out {peg_id} names anchor {hash}, which {why}.")
            }
            Failure::OwnVoid { hash, status } => write!(
                f,
                "Anchor verification failed: the snapshot's own anchor {hash} is {} in the reorg database.",
                status.name()
            ),
            Failure::OwnAnchor(m) => write!(f, "Anchor verification failed: {m}."),
            Failure::NotYetProvable(m) => write!(f, "Anchor not provable on Bitcoin yet: {m}."),
        }
    }
}

/// A peg-out and the anchor it names (hash lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PegoutRef {
    pub peg_id: String,
    pub hash: String,
}

/// What one block says about itself.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// The computed state root, once the block parsed.
    pub root: Option<String>,
    /// The anchor's hash as written (lowercased), if the block has an anchor.
    pub anchor_hash: Option<String>,
    pub failure: Option<Failure>,
    /// Peg-out anchor links still to resolve (only when nothing else failed).
    pub pegout_refs: Vec<PegoutRef>,
    pub crlf: bool,
    /// A warning when an id of the state holds `:`, so the root does not pin
    /// the state down ([`crate::root::ambiguous_fields`]); not a failure.
    pub ambiguous_root: Option<String>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Checks one block; `buf` is reusable scratch space for the canonical text.
pub fn check_block(block: &[u8], buf: &mut Vec<u8>) -> Verdict {
    let c = match check_parse(block, buf) {
        Ok(c) => c,
        Err(e) => {
            return Verdict {
                failure: Some(Failure::Corrupt(e)),
                ..Verdict::default()
            }
        }
    };
    let root = c.root;
    let mut v = Verdict {
        crlf: c.crlf,
        ambiguous_root: c.ambiguous,
        ..Verdict::default()
    };
    v.failure = (|| {
        let Some(a) = &c.anchor else {
            return Some(Failure::NoAnchor);
        };
        v.anchor_hash = Some(text(&a.hash).to_ascii_lowercase());
        if *a.l2_state_root != *root.as_bytes() {
            return Some(Failure::RootMismatch {
                expected: root.clone(),
                anchor: text(&a.l2_state_root),
            });
        }
        let h = sha256_hex(&a.payload);
        if !a.hash.eq_ignore_ascii_case(h.as_bytes()) {
            return Some(Failure::HashMismatch {
                expected: h,
                anchor: text(&a.hash),
            });
        }
        let expected = crate::anchor::payload(&a.l2_state_root, a.timestamp_ms, &a.recovery_metadata);
        if *a.payload != *expected {
            return Some(Failure::PayloadMismatch {
                expected: text(&expected),
                anchor: text(&a.payload),
            });
        }
        v.pegout_refs.reserve_exact(c.pegouts.len());
        for (peg_id, hash) in &c.pegouts {
            if hash.is_empty() {
                return Some(Failure::PegoutMissingAnchor { peg_id: text(peg_id) });
            }
            v.pegout_refs.push(PegoutRef {
                peg_id: text(peg_id),
                hash: String::from_utf8_lossy(hash).to_ascii_lowercase(),
            });
        }
        None
    })();
    if v.failure.is_some() {
        v.pegout_refs.clear();
    }
    v.root = Some(root);
    v
}

/// The anchor hash of a block (lowercased), read from its anchor line only;
/// used to collect the anchors of snapshots that are not being verified.
pub fn anchor_hash_of(block: &[u8]) -> Option<String> {
    let at = memchr::memmem::rfind(block, b"\nanchor \"")? + 1;
    let line = &block[at..];
    let line = &line[..memchr::memchr(b'\n', line).unwrap_or(line.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Reuse the strict grammar: a block holding only this line's fields.
    let fake = [
        b"SNAPSHOT v1\ntimestamp_ms 0\nbalances 0\nescrows 0\npegins 0\npegouts 0\ntasks 0\n",
        line,
        b"\nEND_SNAPSHOT\n",
    ]
    .concat();
    let p = parse_block(&fake).ok()?;
    p.snapshot.anchor.map(|a| text(&a.hash).to_ascii_lowercase())
}

/// What a source knows of an anchor a peg-out names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStatus {
    /// Known and usable.
    Valid,
    /// Known but void (e.g. `INVALIDATED_REORG`); the text says why.
    Void(String),
    Unknown,
}
