//! The L2 state as the node keeps it, and one snapshot of it.
//!
//! Strings are raw bytes (`Cow` so a parsed snapshot borrows from the block it
//! was read from and never allocates for a string without escapes). Entries
//! keep the order they were read in, so writing a parsed snapshot gives the
//! same bytes back; the state root sorts on its own (see [`crate::root`]).

use std::borrow::Cow;

/// Shows bytes for a message: lossy UTF-8, control bytes escaped, cut at 60.
pub fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(60)]);
    let mut out: String = s.escape_debug().collect();
    if b.len() > 60 {
        out.push('…');
    }
    out
}

/// A string field: raw bytes, borrowed from the input where possible.
pub type Bytes<'a> = Cow<'a, [u8]>;

/// `balance <peerId> <balance>`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance<'a> {
    pub peer_id: Bytes<'a>,
    pub balance: u64,
}

/// `escrow <taskId> <clientPeerId> <amount> <locked> <createdAt>`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escrow<'a> {
    pub task_id: Bytes<'a>,
    pub client_peer_id: Bytes<'a>,
    pub amount: u64,
    pub locked: bool,
    pub created_at: u64,
}

/// `pegin …` — a Bitcoin → L2 transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PegIn<'a> {
    pub peg_id: Bytes<'a>,
    pub btc_tx_id: Bytes<'a>,
    pub vout: u32,
    pub btc_amount: u64,
    pub btc_source: Bytes<'a>,
    pub ailee_dest: Bytes<'a>,
    pub status: i32,
    pub confirmations: u64,
    pub initiated_time: u64,
    pub completed_time: u64,
}

/// `pegout …` — an L2 → Bitcoin transfer, authorised by an earlier anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PegOut<'a> {
    pub peg_id: Bytes<'a>,
    pub ailee_source: Bytes<'a>,
    pub btc_dest: Bytes<'a>,
    pub ailee_burn_amount: u64,
    pub btc_release_amount: u64,
    pub status: i32,
    pub anchor_commitment_hash: Bytes<'a>,
    pub initiated_time: u64,
    pub completed_time: u64,
}

/// `task …` — an orchestration task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task<'a> {
    pub task_id: Bytes<'a>,
    pub task_type: i32,
    pub priority: i32,
    pub submitter_id: Bytes<'a>,
    pub submitted_at_ms: u64,
    pub payload_hash: Bytes<'a>,
    pub anchor_commitment_hash: Bytes<'a>,
}

/// The anchor commitment stored with a snapshot (SPEC §1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor<'a> {
    pub l2_state_root: Bytes<'a>,
    pub timestamp_ms: u64,
    pub recovery_metadata: Bytes<'a>,
    pub payload: Bytes<'a>,
    pub hash: Bytes<'a>,
}

/// The five sections of the L2 state, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct L2State<'a> {
    pub balances: Vec<Balance<'a>>,
    pub escrows: Vec<Escrow<'a>>,
    pub pegins: Vec<PegIn<'a>>,
    pub pegouts: Vec<PegOut<'a>>,
    pub tasks: Vec<Task<'a>>,
}

/// One `SNAPSHOT v1` … `END_SNAPSHOT` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot<'a> {
    pub timestamp_ms: u64,
    pub state: L2State<'a>,
    pub anchor: Option<Anchor<'a>>,
}

fn own(b: &Bytes<'_>) -> Bytes<'static> {
    Cow::Owned(b.to_vec())
}

impl Snapshot<'_> {
    /// A copy that owns all its strings (outlives the buffer it was read from).
    pub fn into_owned(self) -> Snapshot<'static> {
        let s = &self.state;
        Snapshot {
            timestamp_ms: self.timestamp_ms,
            state: L2State {
                balances: s
                    .balances
                    .iter()
                    .map(|b| Balance {
                        peer_id: own(&b.peer_id),
                        balance: b.balance,
                    })
                    .collect(),
                escrows: s
                    .escrows
                    .iter()
                    .map(|e| Escrow {
                        task_id: own(&e.task_id),
                        client_peer_id: own(&e.client_peer_id),
                        amount: e.amount,
                        locked: e.locked,
                        created_at: e.created_at,
                    })
                    .collect(),
                pegins: s
                    .pegins
                    .iter()
                    .map(|p| PegIn {
                        peg_id: own(&p.peg_id),
                        btc_tx_id: own(&p.btc_tx_id),
                        vout: p.vout,
                        btc_amount: p.btc_amount,
                        btc_source: own(&p.btc_source),
                        ailee_dest: own(&p.ailee_dest),
                        status: p.status,
                        confirmations: p.confirmations,
                        initiated_time: p.initiated_time,
                        completed_time: p.completed_time,
                    })
                    .collect(),
                pegouts: s
                    .pegouts
                    .iter()
                    .map(|p| PegOut {
                        peg_id: own(&p.peg_id),
                        ailee_source: own(&p.ailee_source),
                        btc_dest: own(&p.btc_dest),
                        ailee_burn_amount: p.ailee_burn_amount,
                        btc_release_amount: p.btc_release_amount,
                        status: p.status,
                        anchor_commitment_hash: own(&p.anchor_commitment_hash),
                        initiated_time: p.initiated_time,
                        completed_time: p.completed_time,
                    })
                    .collect(),
                tasks: s
                    .tasks
                    .iter()
                    .map(|t| Task {
                        task_id: own(&t.task_id),
                        task_type: t.task_type,
                        priority: t.priority,
                        submitter_id: own(&t.submitter_id),
                        submitted_at_ms: t.submitted_at_ms,
                        payload_hash: own(&t.payload_hash),
                        anchor_commitment_hash: own(&t.anchor_commitment_hash),
                    })
                    .collect(),
            },
            anchor: self.anchor.as_ref().map(|a| Anchor {
                l2_state_root: own(&a.l2_state_root),
                timestamp_ms: a.timestamp_ms,
                recovery_metadata: own(&a.recovery_metadata),
                payload: own(&a.payload),
                hash: own(&a.hash),
            }),
        }
    }
}
