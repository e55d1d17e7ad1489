//! The one verifier (SPEC §2): the whole verdict on a snapshot block, in the
//! order the spec gives —
//!
//! 1. the block alone: grammar, state root, anchor hash, payload commitment
//!    ([`crate::verify::check_block`]);
//! 2. its peg-out links: the anchors of the snapshots before it
//!    ([`SnapshotFile::anchors_before`], or a set collected while reading
//!    forward) and the reorg database, which decides first (a void record
//!    fails even if the file holds the anchor);
//! 3. its own anchor's record in the reorg database: void fails, absent or
//!    PENDING is said;
//! 4. with a [`BitcoinCheck`], its own anchor on Bitcoin
//!    ([`crate::onchain::verify_on_chain`]).
//!
//! Each step runs only when the ones before it passed. Every tool that
//! verifies asks a [`Verifier`] and renders the [`BlockVerdict`]:
//! `ailee_l2_verify` (every mode), the monitor (`ailee_metrics`),
//! `ailee_create_anchor` (its peg-outs, [`Verifier::links`]; the block it
//! appends) and the backup's on-chain check ([`Verifier::on_chain`]).
//! Anchor records are read through the one trait
//! [`crate::records::AnchorLookup`] (the database in-process, or its reader
//! process).
//!
//! The steps can be taken apart: [`Verifier::check`] (step 1, no lookup)
//! then [`Verifier::finish`] (steps 2–4), so a caller can say what the block
//! alone tells before any lookup, or check blocks on many threads and
//! finish them in order after one batched [`Verifier::prefetch`].

use crate::format::show;
use crate::identity::AnchorIdentity;
use crate::onchain::{anchor_payload, own_record, verify_on_chain, OnChain, OwnRecord};
use crate::records::AnchorLookup;
use crate::rpc::Rpc;
use crate::snapfile::SnapshotFile;
use crate::verify::{check_block, Failure, LinkStatus, PegoutRef, Verdict};
use crate::{Error, Result};
use std::cell::{OnceCell, RefCell};
use std::collections::HashSet;

/// A connection to a Bitcoin node, with the anchoring identity whose
/// transactions count.
type Node = (Rpc, Option<AnchorIdentity>);

/// The Bitcoin node that proves a snapshot's own anchor, and how deep its
/// transaction must be.
pub struct BitcoinCheck<'a> {
    pub min_conf: u64,
    node: NodeRef<'a>,
}

enum NodeRef<'a> {
    Borrowed(&'a Rpc, Option<&'a AnchorIdentity>),
    Lazy {
        connect: Box<dyn Fn() -> Result<Node> + 'a>,
        made: OnceCell<Node>,
    },
}

impl<'a> BitcoinCheck<'a> {
    /// Through a node already connected.
    pub fn new(rpc: &'a Rpc, identity: Option<&'a AnchorIdentity>, min_conf: u64) -> BitcoinCheck<'a> {
        BitcoinCheck {
            min_conf,
            node: NodeRef::Borrowed(rpc, identity),
        }
    }

    /// Connected by `connect` when a block first needs it (one whose own
    /// anchor is judged), so a snapshot that fails before never touches
    /// the node or the identity file.
    pub fn lazy(min_conf: u64, connect: impl Fn() -> Result<Node> + 'a) -> BitcoinCheck<'a> {
        BitcoinCheck {
            min_conf,
            node: NodeRef::Lazy {
                connect: Box::new(connect),
                made: OnceCell::new(),
            },
        }
    }

    fn node(&self) -> Result<(&Rpc, Option<&AnchorIdentity>)> {
        match &self.node {
            NodeRef::Borrowed(rpc, id) => Ok((rpc, *id)),
            NodeRef::Lazy { connect, made } => {
                if made.get().is_none() {
                    let _ = made.set(connect()?);
                }
                match made.get() {
                    Some((rpc, id)) => Ok((rpc, id.as_ref())),
                    None => Err(Error::Usage("no Bitcoin node to check the anchor on".into())),
                }
            }
        }
    }
}

/// Where the anchors of the snapshots before a block come from.
#[derive(Clone, Copy)]
pub enum Earlier<'a> {
    /// Read from the file as the block's peg-outs need them: the snapshots
    /// that start before this offset ([`SnapshotFile::anchors_before`]).
    Before(&'a SnapshotFile, u64),
    /// Collected already (reading forward).
    Known(&'a HashSet<String>),
}

/// The verdict on peg-out links ([`Verifier::links`]).
#[derive(Debug, Default)]
pub struct Links {
    pub failure: Option<Failure>,
    /// Anchors no source records, when that is only a warning (no
    /// authoritative source).
    pub warnings: Vec<String>,
}

/// The whole verdict on one block.
#[derive(Debug, Clone, Default)]
pub struct BlockVerdict {
    /// The computed state root, once the block parsed.
    pub root: Option<String>,
    /// The anchor's hash as written (lowercased), if the block has an anchor.
    pub anchor_hash: Option<String>,
    /// The first failure, in the order of the steps; `None`: it verifies.
    pub failure: Option<Failure>,
    /// Lines end in `\r\n` (tolerated).
    pub crlf: bool,
    /// A warning when an id of the state holds `:` (the root does not pin
    /// the state down); not a failure.
    pub ambiguous_root: Option<String>,
    /// The block's peg-outs and the anchors they name.
    pub pegout_refs: Vec<PegoutRef>,
    /// Peg-out anchors no source records, when that is only a warning.
    pub link_warnings: Vec<String>,
    /// The own anchor's record, when a database was given and the steps
    /// before passed.
    pub own: Option<OwnRecord>,
    /// The on-chain verdict on the own anchor, when a chain check was given
    /// and the steps before passed (not proven: also in `failure`).
    pub on_chain: Option<OnChain>,
    /// The anchor's payload, kept from [`Verifier::check`] for the chain check.
    payload: Option<Vec<u8>>,
}

impl From<Verdict> for BlockVerdict {
    fn from(v: Verdict) -> BlockVerdict {
        BlockVerdict {
            root: v.root,
            anchor_hash: v.anchor_hash,
            failure: v.failure,
            crlf: v.crlf,
            ambiguous_root: v.ambiguous_root,
            pegout_refs: v.pegout_refs,
            ..BlockVerdict::default()
        }
    }
}

impl BlockVerdict {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }

    /// What the own anchor's record says that is not a failure — absent, or
    /// PENDING — when no chain check decided instead.
    pub fn own_warning(&self) -> Option<String> {
        if self.on_chain.is_some() {
            return None;
        }
        let hash = self.anchor_hash.as_deref().unwrap_or_default();
        match self.own.as_ref()? {
            OwnRecord::Absent => Some(format!(
                "the snapshot's own anchor {hash} is not recorded in the reorg database (add --bitcoin-rpc to check it on Bitcoin)"
            )),
            OwnRecord::Pending(r) => Some(format!(
                "the snapshot's own anchor {hash} is PENDING in the reorg database ({})",
                if r.bitcoin_tx_id.is_empty() {
                    "never broadcast".to_string()
                } else {
                    format!("txid {}", r.bitcoin_tx_id)
                }
            )),
            OwnRecord::Confirmed(_) | OwnRecord::Void(_) => None,
        }
    }

    /// The proof on Bitcoin: (txid, height, confirmations).
    pub fn proof(&self) -> Option<(&str, u64, u64)> {
        match &self.on_chain {
            Some(OnChain::Proven {
                txid,
                height,
                confirmations,
            }) => Some((txid, *height, *confirmations)),
            _ => None,
        }
    }
}

/// The verification policy: which sources decide, and how strictly.
#[derive(Default)]
pub struct Verifier<'a> {
    /// The reorg database: decides peg-out links and judges the own anchor.
    pub db: Option<&'a dyn AnchorLookup>,
    /// A peg-out anchor that no source records fails (otherwise it is a
    /// warning). [`Verifier::new`] sets it when there is a database.
    pub unknown_links_fail: bool,
    /// Prove the own anchor on Bitcoin (needs `db`, whose record names the
    /// transaction).
    pub chain: Option<BitcoinCheck<'a>>,
    /// Scratch space for the canonical text of the block being checked.
    scratch: RefCell<Vec<u8>>,
}

impl<'a> Verifier<'a> {
    /// A verifier over `db` (when given): a peg-out anchor no source
    /// records fails with a database, and is a warning without one.
    pub fn new(db: Option<&'a dyn AnchorLookup>) -> Verifier<'a> {
        Verifier {
            db,
            unknown_links_fail: db.is_some(),
            ..Verifier::default()
        }
    }

    pub fn with_chain(self, chain: Option<BitcoinCheck<'a>>) -> Verifier<'a> {
        Verifier { chain, ..self }
    }

    /// Whether a peg-out anchor no source records fails (`true`) or is a
    /// warning, whatever the database.
    pub fn failing_unknown_links(self, fail: bool) -> Verifier<'a> {
        Verifier {
            unknown_links_fail: fail,
            ..self
        }
    }

    /// Every step on `block`, whose earlier snapshots' anchors `earlier`
    /// gives. An `Err` is operational (a lookup or the node failed); what
    /// the block is worth is in the verdict.
    pub fn verify(&self, block: &[u8], earlier: Earlier<'_>) -> Result<BlockVerdict> {
        let mut v = self.check(block);
        self.finish(&mut v, earlier)?;
        Ok(v)
    }

    /// Step 1, the block alone (no lookup).
    pub fn check(&self, block: &[u8]) -> BlockVerdict {
        let mut v = BlockVerdict::from(check_block(block, &mut self.scratch.borrow_mut()));
        if v.ok() && self.db.is_some() && self.chain.is_some() {
            v.payload = anchor_payload(block);
        }
        v
    }

    /// Steps 2 to 4 on a block that [`Verifier::check`] (or
    /// [`crate::pipeline::check_all`]) checked; nothing when it failed.
    pub fn finish(&self, v: &mut BlockVerdict, earlier: Earlier<'_>) -> Result<()> {
        if !v.ok() {
            return Ok(());
        }
        let read;
        let earlier = match earlier {
            Earlier::Known(set) => set,
            Earlier::Before(sf, offset) => {
                read = sf.anchors_before(offset, &v.pegout_refs)?;
                &read
            }
        };
        let links = self.links(&v.pegout_refs, earlier)?;
        v.failure = links.failure;
        v.link_warnings = links.warnings;
        if v.ok() {
            self.own(v)?;
        }
        Ok(())
    }

    /// Resolves peg-out links: the database (when given) decides first — a
    /// void record fails even if the file has the anchor — then the earlier
    /// snapshots. An anchor no source records fails when
    /// [`Verifier::unknown_links_fail`], else is a warning.
    pub fn links(&self, refs: &[PegoutRef], earlier: &HashSet<String>) -> Result<Links> {
        let mut out = Links::default();
        if let (Some(db), false) = (self.db, refs.is_empty()) {
            db.prefetch(&refs.iter().map(|r| r.hash.as_str()).collect::<Vec<_>>())?;
        }
        for r in refs {
            let from_db = match self.db {
                Some(db) => db.link_status(&r.hash)?,
                None => LinkStatus::Unknown,
            };
            if let LinkStatus::Void(why) = from_db {
                out.failure = Some(Failure::PegoutAnchor {
                    peg_id: r.peg_id.clone(),
                    hash: r.hash.clone(),
                    why,
                });
                return Ok(out);
            }
            if from_db == LinkStatus::Valid || earlier.contains(&r.hash) {
                continue;
            }
            if self.unknown_links_fail {
                out.failure = Some(Failure::PegoutAnchor {
                    peg_id: r.peg_id.clone(),
                    hash: r.hash.clone(),
                    why: "neither an earlier snapshot in this file nor the reorg database records".into(),
                });
                return Ok(out);
            }
            out.warnings.push(format!(
                "peg-out {} names anchor {}, which no earlier snapshot in this file records (check it with --reorg-db)",
                show(r.peg_id.as_bytes()),
                r.hash
            ));
        }
        Ok(out)
    }

    /// A hint that these verdicts are about to be finished: their peg-out
    /// anchors and own anchors are asked of the database in one batch (a
    /// database behind a pipe answers them in one round trip).
    pub fn prefetch<'v>(&self, verdicts: impl IntoIterator<Item = &'v BlockVerdict>) -> Result<()> {
        let Some(db) = self.db else {
            return Ok(());
        };
        let hashes: Vec<&str> = verdicts
            .into_iter()
            .filter(|v| v.ok())
            .flat_map(|v| {
                v.pegout_refs
                    .iter()
                    .map(|p| p.hash.as_str())
                    .chain(v.anchor_hash.as_deref())
            })
            .collect();
        db.prefetch(&hashes)
    }

    /// Step 4 alone: anchor `hash`, whose `OP_RETURN` carries `payload`, on
    /// the best chain, through its record in the database. `None` without
    /// a database or a chain check.
    pub fn on_chain(&self, hash: &str, payload: &[u8]) -> Result<Option<OnChain>> {
        let (Some(db), Some(chain)) = (self.db, &self.chain) else {
            return Ok(None);
        };
        let (rpc, identity) = chain.node()?;
        verify_on_chain(db, rpc, hash, payload, chain.min_conf, identity).map(Some)
    }

    /// Steps 3 and 4: the own anchor's record (void fails), then the chain.
    fn own(&self, v: &mut BlockVerdict) -> Result<()> {
        let (Some(db), Some(hash)) = (self.db, v.anchor_hash.clone()) else {
            return Ok(());
        };
        // The node first: a node that cannot be reached is said whatever the record.
        if let (Some(chain), Some(_)) = (&self.chain, &v.payload) {
            chain.node()?;
        }
        let rec = own_record(db, &hash)?;
        if let OwnRecord::Void(r) = &rec {
            v.failure = Some(Failure::OwnVoid {
                hash: hash.clone(),
                status: r.status,
            });
        }
        v.own = Some(rec);
        let Some(payload) = v.payload.take().filter(|_| v.ok()) else {
            return Ok(());
        };
        let Some(verdict) = self.on_chain(&hash, &payload)? else {
            return Ok(());
        };
        match &verdict {
            OnChain::Proven { .. } => {}
            OnChain::NotYet(m) => v.failure = Some(Failure::NotYetProvable(m.clone())),
            OnChain::Contradicted(m) => v.failure = Some(Failure::OwnAnchor(m.clone())),
        }
        v.on_chain = Some(verdict);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{AnchorRecord, AnchorStatus};
    use std::collections::HashMap;

    /// Records in memory; remembers what was prefetched.
    #[derive(Default)]
    struct Map {
        records: HashMap<String, AnchorRecord>,
        asked: RefCell<Vec<String>>,
    }

    impl Map {
        fn with(records: &[(&str, AnchorStatus)]) -> Map {
            let records = records
                .iter()
                .map(|(h, status)| {
                    let r = AnchorRecord {
                        anchor_hash: h.to_string(),
                        bitcoin_tx_id: String::new(),
                        bitcoin_height: 0,
                        confirmations: 0,
                        broadcast_time: 0,
                        retry_count: 0,
                        status: *status,
                        l2_state_root: "e".repeat(64),
                    };
                    (h.to_string(), r)
                })
                .collect();
            Map {
                records,
                ..Map::default()
            }
        }
    }

    impl AnchorLookup for Map {
        fn anchor(&self, hash: &str) -> Result<Option<AnchorRecord>> {
            Ok(self.records.get(hash).cloned())
        }

        fn prefetch(&self, hashes: &[&str]) -> Result<()> {
            self.asked.borrow_mut().extend(hashes.iter().map(|h| h.to_string()));
            Ok(())
        }
    }

    /// The `basic` vector: its newest snapshot has peg-outs naming the
    /// anchors of earlier snapshots.
    fn basic() -> SnapshotFile {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vectors/basic.dat");
        SnapshotFile::open(&p).unwrap()
    }

    fn newest(sf: &SnapshotFile) -> (u64, Vec<u8>) {
        let b = sf.newest().unwrap().0.unwrap();
        (b.offset, b.bytes)
    }

    #[test]
    fn links_resolve_against_the_file_and_warn_without_a_database() {
        let sf = basic();
        let (offset, block) = newest(&sf);
        let v = Verifier::new(None)
            .verify(&block, Earlier::Before(&sf, offset))
            .unwrap();
        assert!(v.ok(), "{:?}", v.failure);
        assert!(!v.pegout_refs.is_empty());
        assert!(v.link_warnings.is_empty());
        assert_eq!((v.own.as_ref(), v.own_warning()), (None, None));
        // Without the earlier snapshots, the links are unknown: a warning.
        let none = HashSet::new();
        let v = Verifier::new(None).verify(&block, Earlier::Known(&none)).unwrap();
        assert!(v.ok());
        assert_eq!(v.link_warnings.len(), v.pegout_refs.len());
        assert!(
            v.link_warnings[0].contains("check it with --reorg-db"),
            "{:?}",
            v.link_warnings
        );
        // Strict: the same links fail.
        let strict = Verifier::new(None).failing_unknown_links(true);
        let v = strict.verify(&block, Earlier::Known(&none)).unwrap();
        assert!(matches!(&v.failure, Some(Failure::PegoutAnchor { why, .. }) if why.starts_with("neither")));
    }

    #[test]
    fn the_database_decides_links_first_and_judges_the_own_anchor() {
        let sf = basic();
        let (offset, block) = newest(&sf);
        let v = Verifier::new(None).check(&block);
        let (own, link) = (v.anchor_hash.clone().unwrap(), v.pegout_refs[0].hash.clone());
        // A void link fails even though the file holds that anchor.
        let db = Map::with(&[(&link, AnchorStatus::InvalidatedReorg)]);
        let v = Verifier::new(Some(&db))
            .verify(&block, Earlier::Before(&sf, offset))
            .unwrap();
        let want = "the reorg database marks INVALIDATED_REORG";
        assert!(
            matches!(&v.failure, Some(Failure::PegoutAnchor { why, .. }) if why == want),
            "{:?}",
            v.failure
        );
        assert_eq!(v.own, None, "the own anchor is judged only after the links pass");
        // Links from the file; the own anchor absent, PENDING, void.
        let db = Map::default();
        let v = Verifier::new(Some(&db))
            .verify(&block, Earlier::Before(&sf, offset))
            .unwrap();
        assert!(v.ok(), "{:?}", v.failure);
        assert_eq!(v.own, Some(OwnRecord::Absent));
        assert!(v
            .own_warning()
            .unwrap()
            .contains("is not recorded in the reorg database"));
        let db = Map::with(&[(&own, AnchorStatus::Pending)]);
        let v = Verifier::new(Some(&db))
            .verify(&block, Earlier::Before(&sf, offset))
            .unwrap();
        assert!(v.ok());
        assert!(v
            .own_warning()
            .unwrap()
            .ends_with("is PENDING in the reorg database (never broadcast)"));
        let db = Map::with(&[(&own, AnchorStatus::FailedOrphaned)]);
        let v = Verifier::new(Some(&db))
            .verify(&block, Earlier::Before(&sf, offset))
            .unwrap();
        assert_eq!(
            v.failure,
            Some(Failure::OwnVoid {
                hash: own.clone(),
                status: AnchorStatus::FailedOrphaned
            })
        );
        assert_eq!(v.own_warning(), None);
        assert_eq!(
            v.failure.unwrap().to_string(),
            format!(
                "Anchor verification failed: the snapshot's own anchor {own} is FAILED_ORPHANED in the reorg database."
            )
        );
    }

    #[test]
    fn prefetch_asks_for_links_and_own_anchors_of_passing_blocks_only() {
        let sf = basic();
        let (_, block) = newest(&sf);
        let db = Map::default();
        let verifier = Verifier::new(Some(&db));
        let good = verifier.check(&block);
        let bad = verifier.check(b"SNAPSHOT v1\nnot a block\nEND_SNAPSHOT\n");
        assert!(!bad.ok());
        verifier.prefetch([&good, &bad]).unwrap();
        let mut want: Vec<String> = good.pegout_refs.iter().map(|r| r.hash.clone()).collect();
        want.extend(good.anchor_hash.clone());
        assert_eq!(*db.asked.borrow(), want);
        // Nothing without a database.
        Verifier::new(None).prefetch([&good]).unwrap();
    }
}
