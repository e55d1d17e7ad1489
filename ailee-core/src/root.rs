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
            super::push_u64(&mut o, v);
            assert_eq!(String::from_utf8(o).unwrap(), v.to_string());
        }
        let mut o = Vec::new();
        super::push_i32(&mut o, i32::MIN);
        assert_eq!(String::from_utf8(o).unwrap(), i32::MIN.to_string());
    }
}
