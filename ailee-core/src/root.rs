//! The canonical state root (`computeL2StateRoot`, SPEC §1.2).
//!
//! Each section is hashed in key order (unsigned byte order). The order is
//! computed as an index permutation, never by moving entries, so a parsed
//! snapshot keeps its file order for byte-identical writing. Two entries with
//! the same key make the root ambiguous: that is reported as [`Duplicate`].

use crate::model::L2State;
use sha2::{Digest, Sha256};

/// Which section of the state an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Balances,
    Escrows,
    Pegins,
    Pegouts,
    Tasks,
}

impl Section {
    /// The count-line tag in the snapshot file (`balances`, …).
    pub fn name(self) -> &'static str {
        match self {
            Section::Balances => "balances",
            Section::Escrows => "escrows",
            Section::Pegins => "pegins",
            Section::Pegouts => "pegouts",
            Section::Tasks => "tasks",
        }
    }
}

/// Two entries of one section share a key; indices are in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub section: Section,
    pub first: usize,
    pub second: usize,
    pub key: Vec<u8>,
}

/// Key order of every section, as indices into the state's vectors.
#[derive(Debug, Clone, Default)]
pub struct KeyOrder {
    pub balances: Vec<u32>,
    pub escrows: Vec<u32>,
    pub pegins: Vec<u32>,
    pub pegouts: Vec<u32>,
    pub tasks: Vec<u32>,
}

fn order<T>(section: Section, items: &[T], key: impl Fn(&T) -> &[u8]) -> Result<Vec<u32>, Duplicate> {
    let mut idx: Vec<u32> = (0..items.len() as u32).collect();
    // Sorted sections cost one pass; otherwise sort (prefix, index) pairs:
    // the first 8 key bytes as a big-endian integer decide most comparisons
    // without touching the strings.
    let sorted = items.windows(2).all(|w| key(&w[0]) < key(&w[1]));
    if !sorted {
        let prefix = |k: &[u8]| {
            let mut p = [0u8; 8];
            let n = k.len().min(8);
            p[..n].copy_from_slice(&k[..n]);
            u64::from_be_bytes(p)
        };
        let mut keyed: Vec<(u64, u32)> = idx.iter().map(|&i| (prefix(key(&items[i as usize])), i)).collect();
        keyed.sort_unstable_by(|&(pa, a), &(pb, b)| {
            pa.cmp(&pb)
                .then_with(|| key(&items[a as usize]).cmp(key(&items[b as usize])))
                .then(a.cmp(&b))
        });
        idx = keyed.into_iter().map(|(_, i)| i).collect();
        for w in idx.windows(2) {
            let (a, b) = (w[0] as usize, w[1] as usize);
            if key(&items[a]) == key(&items[b]) {
                return Err(Duplicate {
                    section,
                    first: a,
                    second: b,
                    key: key(&items[a]).to_vec(),
                });
            }
        }
    }
    Ok(idx)
}

/// Sorts every section by key; fails on the first duplicate key.
pub fn key_order(state: &L2State<'_>) -> Result<KeyOrder, Duplicate> {
    Ok(KeyOrder {
        balances: order(Section::Balances, &state.balances, |e| &e.peer_id)?,
        escrows: order(Section::Escrows, &state.escrows, |e| &e.task_id)?,
        pegins: order(Section::Pegins, &state.pegins, |e| &e.peg_id)?,
        pegouts: order(Section::Pegouts, &state.pegouts, |e| &e.peg_id)?,
        tasks: order(Section::Tasks, &state.tasks, |e| &e.task_id)?,
    })
}

/// Appends the decimal form of `v` (no allocation, no formatter machinery).
pub(crate) fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    while v >= 100 {
        let r = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[r..r + 2]);
    }
    if v >= 10 {
        let r = v as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[r..r + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + v as u8;
    }
    out.extend_from_slice(&buf[i..]);
}

pub(crate) fn push_i32(out: &mut Vec<u8>, v: i32) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs() as u64);
}

/// Writes the canonical text whose SHA-256 is the root into `out` (cleared first).
pub fn canonical_text(state: &L2State<'_>, ord: &KeyOrder, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"L2STATE|v1\n");
    let f = |out: &mut Vec<u8>, b: &[u8]| {
        out.push(b':');
        out.extend_from_slice(b);
    };
    let n = |out: &mut Vec<u8>, v: u64| {
        out.push(b':');
        push_u64(out, v);
    };
    let i = |out: &mut Vec<u8>, v: i32| {
        out.push(b':');
        push_i32(out, v);
    };
    out.extend_from_slice(b"balances");
    n(out, state.balances.len() as u64);
    out.push(b'\n');
    for &k in &ord.balances {
        let e = &state.balances[k as usize];
        out.extend_from_slice(b"balance");
        f(out, &e.peer_id);
        n(out, e.balance);
        out.push(b'\n');
    }
    out.extend_from_slice(b"escrows");
    n(out, state.escrows.len() as u64);
    out.push(b'\n');
    for &k in &ord.escrows {
        let e = &state.escrows[k as usize];
        out.extend_from_slice(b"escrow");
        f(out, &e.task_id);
        f(out, &e.client_peer_id);
        n(out, e.amount);
        n(out, e.locked as u64);
        n(out, e.created_at);
        out.push(b'\n');
    }
    out.extend_from_slice(b"pegins");
    n(out, state.pegins.len() as u64);
    out.push(b'\n');
    for &k in &ord.pegins {
        let e = &state.pegins[k as usize];
        out.extend_from_slice(b"pegin");
        f(out, &e.peg_id);
        f(out, &e.btc_tx_id);
        n(out, e.vout as u64);
        n(out, e.btc_amount);
        f(out, &e.btc_source);
        f(out, &e.ailee_dest);
        i(out, e.status);
        n(out, e.confirmations);
        n(out, e.initiated_time);
        n(out, e.completed_time);
        out.push(b'\n');
    }
    out.extend_from_slice(b"pegouts");
    n(out, state.pegouts.len() as u64);
    out.push(b'\n');
    for &k in &ord.pegouts {
        let e = &state.pegouts[k as usize];
        out.extend_from_slice(b"pegout");
        f(out, &e.peg_id);
        f(out, &e.ailee_source);
        f(out, &e.btc_dest);
        n(out, e.ailee_burn_amount);
        n(out, e.btc_release_amount);
        i(out, e.status);
        f(out, &e.anchor_commitment_hash);
        n(out, e.initiated_time);
        n(out, e.completed_time);
        out.push(b'\n');
    }
    out.extend_from_slice(b"tasks");
    n(out, state.tasks.len() as u64);
    out.push(b'\n');
    for &k in &ord.tasks {
        let e = &state.tasks[k as usize];
        out.extend_from_slice(b"task");
        f(out, &e.task_id);
        i(out, e.task_type);
        i(out, e.priority);
        f(out, &e.submitter_id);
        n(out, e.submitted_at_ms);
        f(out, &e.payload_hash);
        f(out, &e.anchor_commitment_hash);
        out.push(b'\n');
    }
}

/// A string of the state that makes the canonical text ambiguous: it holds
/// the field separator `:` (or a line break), so the same text — the same
/// root — also stands for a state that splits the fields elsewhere (escrows
/// `t:c`/`x` and `t`/`c:x` share a root). The node's encoding cannot change
/// (the roots must stay the node's), so such a root does not pin the state
/// down; the tools say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmbiguousField {
    pub section: Section,
    /// The entry's key (peerId, taskId or pegId), raw bytes.
    pub key: Vec<u8>,
    /// The field's name in the node's JSON (e.g. `clientPeerId`).
    pub field: &'static str,
}

impl std::fmt::Display for AmbiguousField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entry = self.section.name().trim_end_matches('s');
        write!(f, "{entry} \"{}\" {}", crate::model::show(&self.key), self.field)
    }
}

/// Every string of `state` that holds `:` or a line break, in section order.
pub fn ambiguous_fields(state: &L2State<'_>) -> Vec<AmbiguousField> {
    let mut out = Vec::new();
    let mut check = |section: Section, key: &[u8], fields: &[(&'static str, &[u8])]| {
        for (field, v) in fields {
            if memchr::memchr3(b':', b'\n', b'\r', v).is_some() {
                out.push(AmbiguousField {
                    section,
                    key: key.to_vec(),
                    field,
                });
            }
        }
    };
    for e in &state.balances {
        check(Section::Balances, &e.peer_id, &[("peerId", &e.peer_id)]);
    }
    for e in &state.escrows {
        check(
            Section::Escrows,
            &e.task_id,
            &[("taskId", &e.task_id), ("clientPeerId", &e.client_peer_id)],
        );
    }
    for e in &state.pegins {
        check(
            Section::Pegins,
            &e.peg_id,
            &[
                ("pegId", &e.peg_id),
                ("btcTxId", &e.btc_tx_id),
                ("btcSource", &e.btc_source),
                ("aileeDest", &e.ailee_dest),
            ],
        );
    }
    for e in &state.pegouts {
        check(
            Section::Pegouts,
            &e.peg_id,
            &[
                ("pegId", &e.peg_id),
                ("aileeSource", &e.ailee_source),
                ("btcDest", &e.btc_dest),
                ("anchorCommitmentHash", &e.anchor_commitment_hash),
            ],
        );
    }
    for e in &state.tasks {
        check(
            Section::Tasks,
            &e.task_id,
            &[
                ("taskId", &e.task_id),
                ("submitterId", &e.submitter_id),
                ("payloadHash", &e.payload_hash),
                ("anchorCommitmentHash", &e.anchor_commitment_hash),
            ],
        );
    }
    out
}

/// Fast test on the canonical text of `state` (from [`canonical_text`]):
/// true when it holds exactly the `:` and line breaks its layout puts there,
/// so no string of the state holds one and [`ambiguous_fields`] would find
/// nothing. One vectorised pass over the text; the field-by-field scan is
/// only needed when this says false.
pub fn separators_as_laid_out(state: &L2State<'_>, text: &[u8]) -> bool {
    let (b, e, i, o, t) = (
        state.balances.len(),
        state.escrows.len(),
        state.pegins.len(),
        state.pegouts.len(),
        state.tasks.len(),
    );
    // Count lines carry one ':' each; entry lines as many as they have fields after the tag.
    let colons = 5 + 2 * b + 5 * e + 10 * i + 9 * o + 7 * t;
    let lines = 6 + b + e + i + o + t;
    // Byte counters per 64-byte chunk: the compiler turns this into vector
    // compares (a per-byte usize sum was a quarter of --all's CPU time).
    let count = |chunk: &[u8]| {
        let (mut c, mut n, mut r) = (0u8, 0u8, 0u8);
        for &x in chunk {
            c += u8::from(x == b':');
            n += u8::from(x == b'\n');
            r += u8::from(x == b'\r');
        }
        (usize::from(c), usize::from(n), usize::from(r))
    };
    let (mut c, mut n, mut r) = (0usize, 0usize, 0usize);
    let mut chunks = text.chunks_exact(64);
    for ch in &mut chunks {
        let (a, b, d) = count(ch);
        (c, n, r) = (c + a, n + b, r + d);
    }
    let (a, b, d) = count(chunks.remainder());
    c + a == colons && n + b == lines && r + d == 0
}

/// The one-line warning for a state with [`ambiguous_fields`], or `None`.
pub fn ambiguity_warning(fields: &[AmbiguousField]) -> Option<String> {
    let first = fields.first()?;
    let more = match fields.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    Some(format!(
        "ambiguous state root: {first} contains ':' or a line break{more}; the root's canonical text \
         joins fields with ':' unescaped, so a different state can have the same root — \
         the root does not pin this state down"
    ))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// The state root, given a key order from [`key_order`]; `buf` is scratch space.
pub fn state_root_with(state: &L2State<'_>, ord: &KeyOrder, buf: &mut Vec<u8>) -> String {
    canonical_text(state, ord, buf);
    sha256_hex(buf)
}

/// The state root of `state`; fails if a section has a duplicate key.
pub fn state_root(state: &L2State<'_>) -> Result<String, Duplicate> {
    let ord = key_order(state)?;
    Ok(state_root_with(state, &ord, &mut Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Escrow;
    use std::borrow::Cow;

    fn escrow(task: &'static str, client: &'static str) -> L2State<'static> {
        L2State {
            escrows: vec![Escrow {
                task_id: Cow::Borrowed(task.as_bytes()),
                client_peer_id: Cow::Borrowed(client.as_bytes()),
                amount: 5,
                locked: true,
                created_at: 7,
            }],
            ..L2State::default()
        }
    }

    #[test]
    fn colon_in_ids_lets_two_states_share_a_root_and_is_flagged() {
        let a = escrow("t:c", "x");
        let b = escrow("t", "c:x");
        assert_ne!(a, b);
        assert_eq!(state_root(&a).unwrap(), state_root(&b).unwrap());
        let fa = ambiguous_fields(&a);
        assert_eq!(fa.len(), 1);
        assert_eq!(
            (fa[0].section, fa[0].field, &fa[0].key[..]),
            (Section::Escrows, "taskId", &b"t:c"[..])
        );
        let fb = ambiguous_fields(&b);
        assert_eq!((fb[0].field, &fb[0].key[..]), ("clientPeerId", &b"t"[..]));
        let w = ambiguity_warning(&fb).unwrap();
        assert!(w.contains("escrow \"t\" clientPeerId"), "{w}");
    }

    #[test]
    fn the_fast_test_agrees_with_the_field_scan() {
        let mut buf = Vec::new();
        for (t, c) in [("t", "x"), ("t:c", "x"), ("t", "c:x"), ("a\nb", "x"), ("t", "x\r")] {
            let s = escrow(t, c);
            canonical_text(&s, &key_order(&s).unwrap(), &mut buf);
            assert_eq!(
                separators_as_laid_out(&s, &buf),
                ambiguous_fields(&s).is_empty(),
                "{t:?} {c:?}"
            );
        }
    }

    #[test]
    fn a_state_without_separators_is_not_ambiguous() {
        let s = escrow("t", "x");
        assert!(ambiguous_fields(&s).is_empty());
        assert_eq!(ambiguity_warning(&[]), None);
        assert_eq!(ambiguous_fields(&escrow("t", "a\nb")).len(), 1);
    }

    #[test]
    fn decimal_formatting_matches_std() {
        for v in [
            0u64,
            5,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            123_456_789,
            u64::MAX,
            u64::MAX - 1,
        ] {
            let mut o = Vec::new();
            push_u64(&mut o, v);
            assert_eq!(String::from_utf8(o).unwrap(), v.to_string());
        }
        let mut o = Vec::new();
        push_i32(&mut o, i32::MIN);
        assert_eq!(String::from_utf8(o).unwrap(), i32::MIN.to_string());
    }
}
