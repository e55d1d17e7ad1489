//! The JSON form of the L2 state (SPEC §3), read strictly and written from a
//! snapshot: `--l2-state-file` of `ailee_create_anchor`, `--print-state` of
//! `ailee_l2_verify`. Converting a snapshot to JSON and back gives the same
//! state, hence the same root.
//!
//! Reading: unknown fields, wrong types, values out of range, duplicate
//! fields and strings with line breaks are errors naming the JSON path.

use crate::format::Entry;
use crate::model::*;
use crate::snapfile::SnapshotFile;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StateJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snapshot_timestamp_ms: Option<u64>,
    #[serde(default)]
    ledger: Obj<LedgerJson>,
    #[serde(default)]
    bridge: Obj<BridgeJson>,
    #[serde(default)]
    orchestration: Obj<OrchestrationJson>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerJson {
    #[serde(default)]
    balances: Vec<Obj<BalanceJson>>,
    #[serde(default)]
    escrows: Vec<Obj<EscrowJson>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BridgeJson {
    #[serde(default)]
    pegins: Vec<Obj<PegInJson>>,
    #[serde(default)]
    pegouts: Vec<Obj<PegOutJson>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrchestrationJson {
    #[serde(default)]
    tasks: Vec<Obj<TaskJson>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BalanceJson {
    peer_id: String,
    balance: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EscrowJson {
    task_id: String,
    client_peer_id: String,
    amount: u64,
    locked: bool,
    created_at: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PegInJson {
    peg_id: String,
    btc_tx_id: String,
    vout: u32,
    btc_amount: u64,
    btc_source: String,
    ailee_dest: String,
    confirmations: u64,
    initiated_time: u64,
    completed_time: u64,
    status: i32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PegOutJson {
    peg_id: String,
    ailee_source: String,
    btc_dest: String,
    ailee_burn_amount: u64,
    btc_release_amount: u64,
    initiated_time: u64,
    completed_time: u64,
    status: i32,
    anchor_commitment_hash: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TaskJson {
    task_id: String,
    task_type: i32,
    priority: i32,
    submitter_id: String,
    submitted_at_ms: u64,
    payload_hash: String,
    anchor_commitment_hash: String,
}

/// A JSON object, and only an object: serde's derived structs also accept a
/// positional array (`["p1", 5]` for a balance), which SPEC §3 does not allow
/// (named fields only). Deserialises through `deserialize_map`, so an array
/// is "invalid type: sequence, expected ..." naming its path.
#[derive(Debug, Default)]
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object with named fields")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> std::result::Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<T: Serialize> Serialize for Obj<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<T> std::ops::Deref for Obj<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A state read from JSON, with its snapshot timestamp if the file gave one.
#[derive(Debug, Clone)]
pub struct JsonState {
    pub timestamp_ms: Option<u64>,
    pub state: L2State<'static>,
}

fn s(v: String) -> Bytes<'static> {
    Cow::Owned(v.into_bytes())
}

fn check_line_breaks(path: &str, v: &str) -> Result<()> {
    if v.contains(['\n', '\r']) {
        return Err(Error::Usage(format!(
            "{path}: the string contains a line break, which a snapshot file cannot hold"
        )));
    }
    Ok(())
}

/// Parses the JSON state of SPEC §3; errors name the JSON path.
pub fn from_json(text: &str) -> Result<JsonState> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let j: Obj<StateJson> = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        Error::Usage(format!("invalid state JSON: {at}{}", e.inner()))
    })?;
    // Exactly one object: whatever follows it (but whitespace) is refused, not
    // ignored (a second object after the first would otherwise be dropped).
    de.end().map_err(|e| {
        Error::Usage(format!(
            "invalid state JSON: more after the state object ({e}); the file must hold exactly one JSON object"
        ))
    })?;
    let mut j = j.0;
    let (ledger, bridge, orchestration) = (
        std::mem::take(&mut j.ledger.0),
        std::mem::take(&mut j.bridge.0),
        std::mem::take(&mut j.orchestration.0),
    );
    macro_rules! strings {
        ($list:expr, $base:literal, $($f:ident => $name:literal),+) => {
            for (i, e) in $list.iter().enumerate() {
                $(check_line_breaks(&format!(concat!($base, "[{}].", $name), i), &e.$f)?;)+
            }
        };
    }
    strings!(ledger.balances, "ledger.balances", peer_id => "peerId");
    strings!(ledger.escrows, "ledger.escrows", task_id => "taskId", client_peer_id => "clientPeerId");
    strings!(bridge.pegins, "bridge.pegins", peg_id => "pegId", btc_tx_id => "btcTxId", btc_source => "btcSource", ailee_dest => "aileeDest");
    strings!(bridge.pegouts, "bridge.pegouts", peg_id => "pegId", ailee_source => "aileeSource", btc_dest => "btcDest", anchor_commitment_hash => "anchorCommitmentHash");
    strings!(orchestration.tasks, "orchestration.tasks", task_id => "taskId", submitter_id => "submitterId", payload_hash => "payloadHash", anchor_commitment_hash => "anchorCommitmentHash");
    let state = L2State {
        balances: entries(ledger.balances),
        escrows: entries(ledger.escrows),
        pegins: entries(bridge.pegins),
        pegouts: entries(bridge.pegouts),
        tasks: entries(orchestration.tasks),
    };
    if let Err(d) = crate::root::key_order(&state) {
        return Err(Error::Usage(format!(
            "invalid state JSON: {} entries {} and {} share the key {:?}",
            d.section.name(),
            d.first,
            d.second,
            crate::format::show(&d.key)
        )));
    }
    Ok(JsonState {
        timestamp_ms: j.snapshot_timestamp_ms,
        state,
    })
}

/// The entries of one JSON list as the snapshot's entries, in list order.
fn entries<J: Into<T>, T>(list: Vec<Obj<J>>) -> Vec<T> {
    list.into_iter().map(|Obj(j)| j.into()).collect()
}

impl From<BalanceJson> for Balance<'static> {
    fn from(b: BalanceJson) -> Self {
        Balance {
            peer_id: s(b.peer_id),
            balance: b.balance,
        }
    }
}

impl From<EscrowJson> for Escrow<'static> {
    fn from(e: EscrowJson) -> Self {
        Escrow {
            task_id: s(e.task_id),
            client_peer_id: s(e.client_peer_id),
            amount: e.amount,
            locked: e.locked,
            created_at: e.created_at,
        }
    }
}

impl From<PegInJson> for PegIn<'static> {
    fn from(p: PegInJson) -> Self {
        PegIn {
            peg_id: s(p.peg_id),
            btc_tx_id: s(p.btc_tx_id),
            vout: p.vout,
            btc_amount: p.btc_amount,
            btc_source: s(p.btc_source),
            ailee_dest: s(p.ailee_dest),
            status: p.status,
            confirmations: p.confirmations,
            initiated_time: p.initiated_time,
            completed_time: p.completed_time,
        }
    }
}

impl From<PegOutJson> for PegOut<'static> {
    fn from(p: PegOutJson) -> Self {
        PegOut {
            peg_id: s(p.peg_id),
            ailee_source: s(p.ailee_source),
            btc_dest: s(p.btc_dest),
            ailee_burn_amount: p.ailee_burn_amount,
            btc_release_amount: p.btc_release_amount,
            status: p.status,
            anchor_commitment_hash: s(p.anchor_commitment_hash),
            initiated_time: p.initiated_time,
            completed_time: p.completed_time,
        }
    }
}

impl From<TaskJson> for Task<'static> {
    fn from(t: TaskJson) -> Self {
        Task {
            task_id: s(t.task_id),
            task_type: t.task_type,
            priority: t.priority,
            submitter_id: s(t.submitter_id),
            submitted_at_ms: t.submitted_at_ms,
            payload_hash: s(t.payload_hash),
            anchor_commitment_hash: s(t.anchor_commitment_hash),
        }
    }
}

fn u(path: &str, b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| Error::Integrity(format!("{path}: not UTF-8, cannot be written as JSON")))
}

fn balance_json(b: &Balance<'_>) -> Result<BalanceJson> {
    Ok(BalanceJson {
        peer_id: u("peerId", &b.peer_id)?,
        balance: b.balance,
    })
}

fn escrow_json(e: &Escrow<'_>) -> Result<EscrowJson> {
    Ok(EscrowJson {
        task_id: u("taskId", &e.task_id)?,
        client_peer_id: u("clientPeerId", &e.client_peer_id)?,
        amount: e.amount,
        locked: e.locked,
        created_at: e.created_at,
    })
}

fn pegin_json(p: &PegIn<'_>) -> Result<PegInJson> {
    Ok(PegInJson {
        peg_id: u("pegId", &p.peg_id)?,
        btc_tx_id: u("btcTxId", &p.btc_tx_id)?,
        vout: p.vout,
        btc_amount: p.btc_amount,
        btc_source: u("btcSource", &p.btc_source)?,
        ailee_dest: u("aileeDest", &p.ailee_dest)?,
        confirmations: p.confirmations,
        initiated_time: p.initiated_time,
        completed_time: p.completed_time,
        status: p.status,
    })
}

fn pegout_json(p: &PegOut<'_>) -> Result<PegOutJson> {
    Ok(PegOutJson {
        peg_id: u("pegId", &p.peg_id)?,
        ailee_source: u("aileeSource", &p.ailee_source)?,
        btc_dest: u("btcDest", &p.btc_dest)?,
        ailee_burn_amount: p.ailee_burn_amount,
        btc_release_amount: p.btc_release_amount,
        initiated_time: p.initiated_time,
        completed_time: p.completed_time,
        status: p.status,
        anchor_commitment_hash: u("anchorCommitmentHash", &p.anchor_commitment_hash)?,
    })
}

fn task_json(t: &Task<'_>) -> Result<TaskJson> {
    Ok(TaskJson {
        task_id: u("taskId", &t.task_id)?,
        task_type: t.task_type,
        priority: t.priority,
        submitter_id: u("submitterId", &t.submitter_id)?,
        submitted_at_ms: t.submitted_at_ms,
        payload_hash: u("payloadHash", &t.payload_hash)?,
        anchor_commitment_hash: u("anchorCommitmentHash", &t.anchor_commitment_hash)?,
    })
}

/// Each entry of `items` converted by `f`, in order.
fn all<T, J>(items: &[T], f: impl Fn(&T) -> Result<J>) -> Result<Vec<Obj<J>>> {
    items.iter().map(|x| f(x).map(Obj)).collect()
}

/// The JSON of SPEC §3 for a snapshot's state (entries in file order).
pub fn to_json(snap: &Snapshot<'_>) -> Result<serde_json::Value> {
    let st = &snap.state;
    let j = StateJson {
        snapshot_timestamp_ms: Some(snap.timestamp_ms),
        ledger: Obj(LedgerJson {
            balances: all(&st.balances, balance_json)?,
            escrows: all(&st.escrows, escrow_json)?,
        }),
        bridge: Obj(BridgeJson {
            pegins: all(&st.pegins, pegin_json)?,
            pegouts: all(&st.pegouts, pegout_json)?,
        }),
        orchestration: Obj(OrchestrationJson {
            tasks: all(&st.tasks, task_json)?,
        }),
    };
    serde_json::to_value(j).map_err(|e| Error::Integrity(format!("cannot render state as JSON: {e}")))
}

/// Why a block could not be written as JSON by [`write_block_json`].
#[derive(Debug)]
pub enum BlockJsonError {
    /// The block does not parse (what [`crate::format::parse_block`] says).
    Corrupt(crate::format::ParseError),
    /// A string is not UTF-8: JSON cannot carry it (nothing was written).
    NotUtf8(Error),
    /// Writing failed.
    Io(std::io::Error),
    /// Reading the snapshot file failed (it names the file).
    Read(Error),
}

impl From<std::io::Error> for BlockJsonError {
    fn from(e: std::io::Error) -> Self {
        BlockJsonError::Io(e)
    }
}

fn utf8_of(e: &Entry<'_>) -> Result<()> {
    let check = |path: &str, b: &[u8]| u(path, b).map(drop);
    match e {
        Entry::Balance(b) => check("peerId", &b.peer_id),
        Entry::Escrow(e) => {
            check("taskId", &e.task_id)?;
            check("clientPeerId", &e.client_peer_id)
        }
        Entry::PegIn(p) => {
            check("pegId", &p.peg_id)?;
            check("btcTxId", &p.btc_tx_id)?;
            check("btcSource", &p.btc_source)?;
            check("aileeDest", &p.ailee_dest)
        }
        Entry::PegOut(p) => {
            check("pegId", &p.peg_id)?;
            check("aileeSource", &p.ailee_source)?;
            check("btcDest", &p.btc_dest)?;
            check("anchorCommitmentHash", &p.anchor_commitment_hash)
        }
        Entry::Task(t) => {
            check("taskId", &t.task_id)?;
            check("submitterId", &t.submitter_id)?;
            check("payloadHash", &t.payload_hash)?;
            check("anchorCommitmentHash", &t.anchor_commitment_hash)
        }
    }
}

fn key_of<'e>(e: &'e Entry<'_>) -> (usize, &'e [u8]) {
    match e {
        Entry::Balance(b) => (0, &b.peer_id),
        Entry::Escrow(e) => (1, &e.task_id),
        Entry::PegIn(p) => (2, &p.peg_id),
        Entry::PegOut(p) => (3, &p.peg_id),
        Entry::Task(t) => (4, &t.task_id),
    }
}

/// One entry as the JSON object `to_json` gives it (keys sorted, as
/// `serde_json::Value` holds them). Strings were checked to be UTF-8.
fn entry_value(e: &Entry<'_>) -> Result<serde_json::Value> {
    let v = match e {
        Entry::Balance(b) => serde_json::to_value(balance_json(b)?),
        Entry::Escrow(e) => serde_json::to_value(escrow_json(e)?),
        Entry::PegIn(p) => serde_json::to_value(pegin_json(p)?),
        Entry::PegOut(p) => serde_json::to_value(pegout_json(p)?),
        Entry::Task(t) => serde_json::to_value(task_json(t)?),
    };
    v.map_err(|e| Error::Integrity(format!("cannot render state as JSON: {e}")))
}

/// Writes the JSON of SPEC §3 for one snapshot block — byte for byte what
/// `serde_json::to_string_pretty(&to_json(parsed block))` gives, without the
/// final newline — streaming: the block is read once to check it (grammar,
/// keys, UTF-8: on any failure nothing is written) and once per section to
/// write it, and no entry is kept (memory flat in the number of entries).
pub fn write_block_json(block: &[u8], w: &mut impl std::io::Write) -> std::result::Result<(), BlockJsonError> {
    // Check: the grammar, keys strictly increasing per section (as the node
    // writes them; otherwise the full parse decides about duplicates), and
    // the first string that is not UTF-8, in the order to_json meets them.
    let mut last: [Option<Vec<u8>>; 5] = Default::default();
    let mut sorted = true;
    let mut not_utf8 = None;
    let visited = crate::format::visit_block(block, |e| {
        if not_utf8.is_none() {
            not_utf8 = utf8_of(&e).err();
        }
        let (s, k) = key_of(&e);
        if sorted {
            if last[s].as_deref().is_some_and(|p| p >= k) {
                sorted = false;
            } else {
                let buf = last[s].get_or_insert_with(Vec::new);
                buf.clear();
                buf.extend_from_slice(k);
            }
        }
    })
    .map_err(BlockJsonError::Corrupt)?;
    if !sorted {
        crate::format::parse_block(block).map_err(BlockJsonError::Corrupt)?;
    }
    if let Some(e) = not_utf8 {
        return Err(BlockJsonError::NotUtf8(e));
    }
    // serde_json's pretty layout, one array at a time.
    write_document(w, visited.timestamp_ms, |w, kind| {
        let mut n = 0usize;
        let mut failed: Option<BlockJsonError> = None;
        let mut one = String::new();
        crate::format::visit_block(block, |e| {
            if failed.is_none() && key_of(&e).0 == kind {
                failed = write_entry(w, &e, n, &mut one).err();
                n += 1;
            }
        })
        .map_err(BlockJsonError::Corrupt)?;
        failed.map_or(Ok(n), Err)
    })
}

/// Entry `n` (from 0) of an array, indented as serde_json's pretty layout
/// puts it; `one` is scratch space.
fn write_entry(
    w: &mut dyn std::io::Write,
    e: &Entry<'_>,
    n: usize,
    one: &mut String,
) -> std::result::Result<(), BlockJsonError> {
    let text = entry_value(e)
        .and_then(|v| {
            serde_json::to_string_pretty(&v).map_err(|e| Error::Integrity(format!("cannot render state as JSON: {e}")))
        })
        .map_err(BlockJsonError::NotUtf8)?;
    one.clear();
    one.push_str(if n == 0 { "\n" } else { ",\n" });
    for (i, l) in text.lines().enumerate() {
        if i > 0 {
            one.push('\n');
        }
        one.push_str("      ");
        one.push_str(l);
    }
    w.write_all(one.as_bytes()).map_err(BlockJsonError::Io)
}

/// The document of SPEC §3 around its arrays, as serde_json pretty-prints
/// it (two spaces a level, keys sorted: bridge, ledger, orchestration,
/// snapshotTimestampMs); `entries(w, kind)` writes the entries of one
/// section ([`key_of`]'s numbering) and says how many.
fn write_document<W: std::io::Write>(
    w: &mut W,
    timestamp_ms: u64,
    mut entries: impl FnMut(&mut W, usize) -> std::result::Result<usize, BlockJsonError>,
) -> std::result::Result<(), BlockJsonError> {
    let io = BlockJsonError::Io;
    let mut array = |w: &mut W, name: &str, kind: usize, last: bool| -> std::result::Result<(), BlockJsonError> {
        write!(w, "    \"{name}\": [").map_err(io)?;
        let n = entries(w, kind)?;
        w.write_all(if n > 0 { b"\n    ]" } else { b"]" }).map_err(io)?;
        w.write_all(if last { b"\n" } else { b",\n" }).map_err(io)
    };
    w.write_all(b"{\n  \"bridge\": {\n").map_err(io)?;
    array(w, "pegins", 2, false)?;
    array(w, "pegouts", 3, true)?;
    w.write_all(b"  },\n  \"ledger\": {\n").map_err(io)?;
    array(w, "balances", 0, false)?;
    array(w, "escrows", 1, true)?;
    w.write_all(b"  },\n  \"orchestration\": {\n").map_err(io)?;
    array(w, "tasks", 4, true)?;
    write!(w, "  }},\n  \"snapshotTimestampMs\": {timestamp_ms}\n}}").map_err(io)?;
    Ok(())
}

/// What [`write_span_json`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streamed {
    Written,
    /// Nothing was written: the block is not in the layout the streaming
    /// reader takes (counts written as plain decimals, keys whose hashes
    /// differ, every string UTF-8, the grammar satisfied). Read
    /// it whole and use [`write_block_json`], which says what is wrong.
    NotStreamable,
}

/// Section names in block order; an entry's section is [`key_of`]'s number.
const SECTIONS: [&str; 5] = ["balances", "escrows", "pegins", "pegouts", "tasks"];
/// Entry lines checked (or written) by one call of the grammar.
const BATCH_LINES: usize = 4096;

/// Where a streamable block's sections are: byte range of the entry lines
/// and their number, per section; and its timestamp.
struct Layout {
    timestamp_ms: u64,
    sections: [(u64, u64); 5],
}

/// A block holding `lines` (`count` entry lines of section `kind`, each
/// ending in `\n`) and nothing else, with the timestamp and anchor lines
/// given: the strict grammar ([`crate::format::visit_block`]) reads it as
/// it reads those lines inside the whole block.
fn mini_block(kind: usize, count: usize, lines: &[u8], ts: &[u8], anchor: &[u8], out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    out.extend_from_slice(b"SNAPSHOT v1\n");
    out.extend_from_slice(ts);
    out.push(b'\n');
    for (k, name) in SECTIONS.iter().enumerate() {
        let _ = writeln!(out, "{name} {}", if k == kind { count } else { 0 });
        if k == kind {
            out.extend_from_slice(lines);
        }
    }
    out.extend_from_slice(anchor);
    out.extend_from_slice(b"\nEND_SNAPSHOT\n");
}

/// `name N` with N a plain decimal (no sign, no leading zero): the count.
fn count_line(line: &[u8], name: &str) -> Option<usize> {
    let digits = std::str::from_utf8(line.strip_prefix(name.as_bytes())?.strip_prefix(b" ")?).ok()?;
    let n: usize = digits.parse().ok()?;
    (n.to_string() == digits).then_some(n)
}

/// Bytes of a block per pass of the duplicate-key check: one pass keeps an
/// 8-byte hash per key of one part of the keys, at most ~2.6 million of
/// them (an entry line has at least 13 bytes).
const KEYS_PASS: u64 = 32 << 20;

/// A key's hash, for the duplicate check (its section mixed in).
fn key_hash(section: usize, key: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    section.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

/// Checks the span of a block as [`write_block_json`] checks a block, from
/// the file a window at a time; `None` when it is not streamable. Keys are
/// checked for duplicates by their hashes, part `part` of `parts` (by hash)
/// in this pass; equal hashes are left to the whole-block writer.
fn check_span(
    sf: &SnapshotFile,
    offset: u64,
    len: u64,
    part: u64,
    parts: u64,
) -> std::result::Result<Option<Layout>, BlockJsonError> {
    let read = BlockJsonError::Read;
    let mut lines = sf.lines(offset, len);
    if lines.next_text().map_err(read)? != Some(b"SNAPSHOT v1") {
        return Ok(None);
    }
    let Some(ts) = lines.next_text().map_err(read)?.map(<[u8]>::to_vec) else {
        return Ok(None);
    };
    let mut sections = [(0, 0); 5];
    let mut hashes = Vec::new();
    let (mut batch, mut block) = (Vec::new(), Vec::new());
    for (kind, name) in SECTIONS.iter().enumerate() {
        let Some(count) = lines.next_text().map_err(read)?.and_then(|l| count_line(l, name)) else {
            return Ok(None);
        };
        let start = lines.pos();
        let mut k = 0;
        for i in 0..count {
            let Some(l) = lines.next_text().map_err(read)? else {
                return Ok(None);
            };
            batch.extend_from_slice(l);
            batch.push(b'\n');
            k += 1;
            if k == BATCH_LINES || i + 1 == count {
                mini_block(kind, k, &batch, b"timestamp_ms 0", b"anchor none", &mut block);
                let mut utf8 = true;
                let visited = crate::format::visit_block(&block, |e| {
                    utf8 &= utf8_of(&e).is_ok();
                    let h = key_hash(kind, key_of(&e).1);
                    if h % parts == part {
                        hashes.push(h);
                    }
                });
                if visited.is_err() || !utf8 {
                    return Ok(None);
                }
                batch.clear();
                k = 0;
            }
        }
        sections[kind] = (start, lines.pos());
    }
    let Some(anchor) = lines.next_text().map_err(read)?.map(<[u8]>::to_vec) else {
        return Ok(None);
    };
    if lines.next_text().map_err(read)? != Some(b"END_SNAPSHOT") || lines.next_text().map_err(read)?.is_some() {
        return Ok(None);
    }
    hashes.sort_unstable();
    if hashes.windows(2).any(|w| w[0] == w[1]) {
        return Ok(None);
    }
    // The timestamp and anchor lines, read by the grammar.
    mini_block(0, 0, b"", &ts, &anchor, &mut block);
    let Ok(v) = crate::format::visit_block(&block, |_| {}) else {
        return Ok(None);
    };
    Ok(Some(Layout {
        timestamp_ms: v.timestamp_ms,
        sections,
    }))
}

/// [`write_block_json`] of the block at `offset` (`len` bytes) of `sf`,
/// streamed: the block is read from the file a window at a time, once to
/// check it (once per [`KEYS_PASS`] bytes: the duplicate-key check keeps an
/// 8-byte hash per key of one part of the keys) and once to write it, and
/// at most [`BATCH_LINES`] entries are held — memory flat in the size of
/// the state. A block the streaming
/// reader does not take ([`Streamed::NotStreamable`]: nothing written) is
/// for [`write_block_json`].
pub fn write_span_json(
    sf: &SnapshotFile,
    offset: u64,
    len: u64,
    w: &mut impl std::io::Write,
) -> std::result::Result<Streamed, BlockJsonError> {
    let parts = len.div_ceil(KEYS_PASS).max(1);
    let mut layout = None;
    for part in 0..parts {
        layout = check_span(sf, offset, len, part, parts)?;
        if layout.is_none() {
            return Ok(Streamed::NotStreamable);
        }
    }
    let Some(layout) = layout else {
        return Ok(Streamed::NotStreamable);
    };
    let (mut batch, mut block, mut one) = (Vec::new(), Vec::new(), String::new());
    write_document(w, layout.timestamp_ms, |w, kind| {
        let (start, end) = layout.sections[kind];
        let mut lines = sf.lines(start, end - start);
        let mut n = 0usize;
        loop {
            let mut k = 0;
            batch.clear();
            while k < BATCH_LINES {
                let Some(l) = lines.next_text().map_err(BlockJsonError::Read)? else {
                    break;
                };
                batch.extend_from_slice(l);
                batch.push(b'\n');
                k += 1;
            }
            if k == 0 {
                return Ok(n);
            }
            mini_block(kind, k, &batch, b"timestamp_ms 0", b"anchor none", &mut block);
            let mut failed = None;
            crate::format::visit_block(&block, |e| {
                if failed.is_none() {
                    failed = write_entry(w, &e, n, &mut one).err();
                    n += 1;
                }
            })
            .map_err(BlockJsonError::Corrupt)?;
            if let Some(e) = failed {
                return Err(e);
            }
        }
    })?;
    Ok(Streamed::Written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_parses_and_absent_sections_are_empty() {
        let j = from_json(
            r#"{"snapshotTimestampMs": 1700000000000, "ledger": {"balances": [{"peerId": "p1", "balance": 5}]}}"#,
        )
        .unwrap();
        assert_eq!(j.timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(j.state.balances.len(), 1);
        assert!(j.state.tasks.is_empty());
        assert!(from_json("{}").unwrap().state.balances.is_empty());
        // Whitespace around the one object is fine.
        assert!(from_json(" \n\t{}\n\n ").is_ok());
    }

    /// The streamed JSON is byte for byte what the JSON value pretty-prints
    /// to, for every snapshot of the vectors and the malformed catalogue, and
    /// refuses what the value could not be built from.
    #[test]
    fn streamed_json_is_the_values_text() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let mut n = 0;
        for sub in ["vectors", "malformed"] {
            for f in std::fs::read_dir(dir.join(sub)).unwrap() {
                let sf = crate::snapfile::SnapshotFile::open(&f.unwrap().path()).unwrap();
                for b in sf.blocks() {
                    let block = &b.unwrap().bytes[..];
                    let mut got = Vec::new();
                    let r = write_block_json(block, &mut got);
                    match crate::format::parse_block(block) {
                        Ok(p) => {
                            let want = serde_json::to_string_pretty(&to_json(&p.snapshot).unwrap()).unwrap();
                            r.unwrap();
                            assert_eq!(String::from_utf8(got).unwrap(), want);
                            n += 1;
                        }
                        Err(e) => match r {
                            Err(BlockJsonError::Corrupt(g)) => assert_eq!(g, e),
                            other => panic!("{e}: {other:?}"),
                        },
                    }
                }
            }
        }
        assert!(n > 20, "{n}");
        // Keys out of order (no duplicate) are fine; a duplicate is corrupt.
        let block = |a: &str, b: &str| {
            format!("SNAPSHOT v1\ntimestamp_ms 1\nbalances 2\nbalance \"{a}\" 1\nbalance \"{b}\" 2\nescrows 0\npegins 0\npegouts 0\ntasks 0\nanchor none\nEND_SNAPSHOT\n")
        };
        let mut out = Vec::new();
        write_block_json(block("b", "a").as_bytes(), &mut out).unwrap();
        assert!(matches!(
            write_block_json(block("a", "a").as_bytes(), &mut Vec::new()),
            Err(BlockJsonError::Corrupt(_))
        ));
        // A string that is not UTF-8: nothing written.
        let mut bad = block("a", "b").into_bytes();
        let at = bad.windows(3).position(|w| w == b"\"b\"").unwrap();
        bad[at + 1] = 0xff;
        let mut out = Vec::new();
        assert!(matches!(
            write_block_json(&bad, &mut out),
            Err(BlockJsonError::NotUtf8(_))
        ));
        assert!(out.is_empty());
    }

    /// What the streamed writer gives, for every block of `path`: the same
    /// bytes as the whole-block writer, or nothing (and then the
    /// whole-block writer decides); never output for a block it refuses.
    fn streamed_agrees(path: &std::path::Path, streamed: &mut usize, whole: &mut usize) {
        let sf = SnapshotFile::open(path).unwrap();
        for b in sf.blocks() {
            let b = b.unwrap();
            let mut want = Vec::new();
            let r = write_block_json(&b.bytes, &mut want);
            let mut got = Vec::new();
            match write_span_json(&sf, b.offset, b.bytes.len() as u64, &mut got).unwrap() {
                Streamed::Written => {
                    assert!(
                        r.is_ok(),
                        "{path:?} at {}: streamed a block the writer refuses",
                        b.offset
                    );
                    assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap());
                    *streamed += 1;
                }
                Streamed::NotStreamable => {
                    assert!(got.is_empty());
                    *whole += 1;
                }
            }
        }
    }

    #[test]
    fn streamed_from_the_file_is_the_whole_blocks_json() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let (mut streamed, mut whole) = (0, 0);
        for sub in ["vectors", "malformed"] {
            for f in std::fs::read_dir(dir.join(sub)).unwrap() {
                streamed_agrees(&f.unwrap().path(), &mut streamed, &mut whole);
            }
        }
        assert!(streamed > 20 && whole > 10, "{streamed} streamed, {whole} not");
        // More entries than one batch, with CRLF and blank lines; keys out
        // of order (streamed); a duplicate key (not streamed: the whole
        // block says where).
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let mut text = String::from("SNAPSHOT v1\r\ntimestamp_ms 7\r\n\r\n");
        let n = BATCH_LINES + 3;
        text += &format!("balances {n}\n");
        for i in 0..n {
            text += &format!("balance \"p{i:06}\" {i}\n");
        }
        text += &format!("escrows 0\npegins 0\npegouts 0\ntasks {n}\n");
        for i in 0..n {
            text += &format!("task \"t{i:06}\" 1 -2 \"s\" 3 \"h\" \"\"\n\n");
        }
        text += "anchor none\nEND_SNAPSHOT\n";
        let unsorted = text.replacen("p000001", "p999999", 1);
        let duplicate = text.replacen("p000001", "p000000", 1);
        std::fs::write(&p, format!("{text}{unsorted}{duplicate}")).unwrap();
        let (mut streamed, mut whole) = (0, 0);
        streamed_agrees(&p, &mut streamed, &mut whole);
        assert_eq!((streamed, whole), (2, 1));
    }

    #[test]
    fn errors_name_the_field() {
        for (text, needle) in [
            (
                r#"{"ledger": {"balances": [{"peerId": "p", "balance": -1}]}}"#,
                "ledger.balances[0].balance",
            ),
            (
                r#"{"ledger": {"balances": [{"peerId": "p", "balance": 18446744073709551616}]}}"#,
                "ledger.balances[0].balance",
            ),
            (
                r#"{"ledger": {"balances": [{"peerId": "p", "balance": 1.5}]}}"#,
                "ledger.balances[0].balance",
            ),
            (
                r#"{"ledger": {"balances": [{"peerId": "p", "balance": 1, "x": 2}]}}"#,
                "unknown field `x`",
            ),
            (
                r#"{"ledger": {"balances": [{"peerId": 5, "balance": 1}]}}"#,
                "ledger.balances[0].peerId",
            ),
            (
                r#"{"ledger": {"balances": [{"balance": 1}]}}"#,
                "missing field `peerId`",
            ),
            (
                r#"{"ledger": {"balances": [{"peerId": "a\nb", "balance": 1}]}}"#,
                "ledger.balances[0].peerId: the string contains a line break",
            ),
            (
                r#"{"bridge": {"pegins": [{"pegId": "", "btcTxId": "", "vout": 4294967296, "btcAmount": 0, "btcSource": "", "aileeDest": "", "confirmations": 0, "initiatedTime": 0, "completedTime": 0, "status": 0}]}}"#,
                "bridge.pegins[0].vout",
            ),
            (
                r#"{"ledger": {"balances": [{"peerId": "p", "balance": 1}, {"peerId": "p", "balance": 2}]}}"#,
                "share the key",
            ),
            (
                r#"{"snapshotTimestampMs": 1, "snapshotTimestampMs": 2}"#,
                "duplicate field",
            ),
            ("{", "EOF"),
            // Exactly one object, named fields only (issue 25).
            ("{} this is not JSON", "more after the state object"),
            (
                r#"{"ledger": {}}}, "bridge": {"pegouts": []}}"#,
                "more after the state object",
            ),
            ("{} {}", "more after the state object"),
            ("[]", "expected a JSON object"),
            (r#"[5, {}, {}, {}]"#, "expected a JSON object"),
            (r#"{"ledger": [[["p1", 5]], []]}"#, "ledger: invalid type: sequence"),
            (
                r#"{"ledger": {"balances": [["p1", 5]]}}"#,
                "ledger.balances[0]: invalid type: sequence",
            ),
            (
                r#"{"bridge": {"pegouts": [["a", "b", "c", 1, 1, 0, 0, 0, "h"]]}}"#,
                "bridge.pegouts[0]: invalid type: sequence",
            ),
        ] {
            let e = from_json(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
