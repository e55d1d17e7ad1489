//! The fast path of [`super::check_parse`]: the grammar of a block the node
//! wrote (no escapes, no `\r`, no `:` in its strings, no blank lines) read in
//! one pass that writes each entry's canonical line as it goes, then hashed
//! section by section in key order.
//!
//! Invariant: it only ever *accepts* what the strict parser accepts, with the
//! same root, anchor and peg-outs; anything else (including every error) is
//! `None`, and the caller runs the strict parser, which words the error. So
//! error messages, snapshot numbers and lines have one source.
//!
//! Cost: no allocation per entry (the canonical lines go to the caller's
//! scratch buffer, one index vector per block); a section already in key
//! order is checked in one pass and hashed straight from the buffer; an
//! unsorted one is sorted as (8-byte key prefix, index) pairs and streamed to
//! the hasher in chunks.

use super::{Line, END, HEADER};
use crate::model::{Anchor, Bytes};
use crate::root::Section;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::ops::Range;

/// What the fast path gives back (see [`super::Checked`]).
pub(super) struct Fast<'a> {
    pub root: String,
    pub anchor: Option<Anchor<'a>>,
    /// (pegId, anchorCommitmentHash) of every peg-out, file order.
    pub pegouts: Vec<(Bytes<'a>, Bytes<'a>)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum F {
    Q,
    U64,
    U32,
    I32,
    Flag,
}

/// The sections: count tag, entry tag, fields, in file order.
const SECTIONS: [(Section, &[u8], &[F]); 5] = [
    (Section::Balances, b"balance", &[F::Q, F::U64]),
    (Section::Escrows, b"escrow", &[F::Q, F::Q, F::U64, F::Flag, F::U64]),
    (
        Section::Pegins,
        b"pegin",
        &[F::Q, F::Q, F::U32, F::U64, F::Q, F::Q, F::I32, F::U64, F::U64, F::U64],
    ),
    (
        Section::Pegouts,
        b"pegout",
        &[F::Q, F::Q, F::Q, F::U64, F::U64, F::I32, F::Q, F::U64, F::U64],
    ),
    (
        Section::Tasks,
        b"task",
        &[F::Q, F::I32, F::I32, F::Q, F::U64, F::Q, F::Q],
    ),
];

/// The quoted fields of one line, raw ranges in the block (at most 4 per entry).
/// The quoted fields of one line, raw ranges in the block (at most 4 per entry).
type Quoted = [Range<usize>; 4];

/// `digits` is a non-empty run of ASCII digits: true when it is in plain
/// form (no leading zero) and at most `max` (both as decimal text).
fn plain(digits: &[u8], max: &[u8]) -> bool {
    (digits.len() == 1 || digits[0] != b'0') && (digits.len() < max.len() || digits.len() == max.len() && digits <= max)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

fn word8(b: &[u8], i: usize) -> Option<u64> {
    let a: [u8; 8] = b.get(i..i + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(a))
}

/// Bytes of `w` equal to `c`: the lowest set high bit marks the first one.
fn eq_mask(w: u64, c: u8) -> u64 {
    let x = w ^ (ONES * u64::from(c));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Position of the first `"` or `\n` at or after `i`: a word at a time for
/// up to 32 bytes (ids such as the generator's, `peer` and 16 hex
/// digits, end within 24), then the vectorised search.
fn quote_or_nl(b: &[u8], mut i: usize) -> Option<usize> {
    for _ in 0..4 {
        let Some(w) = word8(b, i) else { break };
        let m = eq_mask(w, b'"') | eq_mask(w, b'\n');
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    memchr::memchr2(b'"', b'\n', b.get(i..)?).map(|n| i + n)
}

/// End of the run of ASCII digits starting at `i`.
fn digits_end(b: &[u8], mut i: usize) -> usize {
    while let Some(w) = word8(b, i) {
        // Per byte, without carries between bytes: the high bit of `ge` is set
        // when the low 7 bits are >= 0x30, that of `le` when they are <= 0x39;
        // a byte with its own high bit set is never a digit.
        let low = w & !HIGHS;
        let ge = (low | HIGHS).wrapping_sub(ONES * 0x30);
        let le = (ONES * (0x39 | 0x80)).wrapping_sub(low);
        let m = !(ge & le & !w) & HIGHS;
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// The canonical text being written: `buf[..n]`, with slack after it so
/// short copies can move 16 bytes at a time.
struct Out {
    buf: Vec<u8>,
    n: usize,
}

impl Out {
    #[inline(always)]
    fn copy(&mut self, src: &[u8], s: usize, len: usize) {
        if self.n + len + 16 > self.buf.len() {
            self.buf.resize(2 * self.buf.len() + len + 16, 0);
        }
        let whole = (len + 15) & !15;
        if s + whole <= src.len() {
            let dst = &mut self.buf[self.n..self.n + whole];
            for (d, c) in dst.chunks_exact_mut(16).zip(src[s..s + whole].chunks_exact(16)) {
                d.copy_from_slice(c);
            }
        } else {
            self.buf[self.n..self.n + len].copy_from_slice(&src[s..s + len]);
        }
        self.n += len;
    }

    /// `len` bytes from `s`, the first written as `:`.
    fn field(&mut self, src: &[u8], s: usize, len: usize) {
        let at = self.n;
        self.copy(src, s, len);
        self.buf[at] = b':';
    }

    fn byte(&mut self, c: u8) {
        if self.n + 16 > self.buf.len() {
            self.buf.resize(2 * self.buf.len() + 16, 0);
        }
        self.buf[self.n] = c;
        self.n += 1;
    }
}

/// Reads one line `tag f1 f2 …\n` of the given fields at `*pos` in `b`,
/// appending its canonical form (`tag:f1:f2…\n`) to `out`; the quoted
/// fields' ranges go to `q`. `None` when the line is not in the node's plain
/// form. The block's last line may lack its `\n`.
fn fields(b: &[u8], pos: &mut usize, tag: &[u8], spec: &[F], out: &mut Out, q: &mut Quoted) -> Option<()> {
    let mut p = *pos;
    // A tag and its space fit in 8 bytes, except on the few count lines.
    let n = tag.len();
    match word8(b, p) {
        Some(w) if n < 8 => {
            let mut t = [0u8; 8];
            t[..n].copy_from_slice(tag);
            t[n] = b' ';
            let mask = u64::MAX >> (8 * (7 - n));
            if w & mask != u64::from_le_bytes(t) {
                return None;
            }
        }
        _ => {
            if b.get(p..p + n)? != tag {
                return None;
            }
        }
    }
    out.copy(b, p, n);
    p += n;
    let mut nq = 0;
    for &f in spec {
        if b.get(p) != Some(&b' ') {
            return None;
        }
        // Each field is copied with the byte before it (the space, or the
        // opening quote), which becomes the `:` of the canonical text.
        let sep = p;
        p += 1;
        match f {
            F::Q => {
                if b.get(p) != Some(&b'"') {
                    return None;
                }
                let end = quote_or_nl(b, p + 1)?;
                if b[end] != b'"' {
                    return None;
                }
                out.field(b, p, end - p);
                if let Some(r) = q.get_mut(nq) {
                    *r = p + 1..end;
                }
                nq += 1;
                p = end + 1;
            }
            F::Flag => {
                if !matches!(b.get(p), Some(b'0' | b'1')) {
                    return None;
                }
                p += 1;
                out.field(b, sep, 2);
            }
            F::U64 | F::U32 | F::I32 => {
                let neg = f == F::I32 && b.get(p) == Some(&b'-');
                p += usize::from(neg);
                let d = p;
                p = digits_end(b, p);
                let max: &[u8] = match (f, neg) {
                    (F::U64, _) => b"18446744073709551615",
                    (F::U32, _) => b"4294967295",
                    (_, false) => b"2147483647",
                    (_, true) => b"2147483648",
                };
                if p == d || !plain(&b[d..p], max) || neg && &b[d..p] == b"0" {
                    return None;
                }
                out.field(b, sep, p - sep);
            }
        }
    }
    match b.get(p) {
        Some(b'\n') => p += 1,
        None => {}
        Some(_) => return None,
    }
    out.byte(b'\n');
    *pos = p;
    Some(())
}

/// The count line `name N` at `*pos`: N, its canonical line appended to `out`.
fn count(b: &[u8], pos: &mut usize, name: &[u8], out: &mut Out) -> Option<u64> {
    let mut q: Quoted = Default::default();
    let start = out.n;
    fields(b, pos, name, &[F::U64], out, &mut q)?;
    let digits = &out.buf[start + name.len() + 1..out.n - 1];
    Some(digits.iter().fold(0u64, |v, &c| v * 10 + u64::from(c - b'0')))
}

/// One entry: its key (raw range in the block) and its canonical line
/// (range in the scratch text).
struct Ent {
    key: Range<u32>,
    line: Range<u32>,
}

/// Eight key bytes from `at` as a big-endian integer, zero-padded: with the
/// key itself as tie-break, it orders keys as their bytes do.
fn prefix(k: &[u8], at: usize) -> u64 {
    let k = k.get(at..).unwrap_or_default();
    if let Some(w) = k.get(..8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        return u64::from_be_bytes(w);
    }
    let mut p = [0u8; 8];
    let n = k.len().min(8);
    p[..n].copy_from_slice(&k[..n]);
    u64::from_be_bytes(p)
}

/// Feeds the hasher in chunks of this size when lines are gathered out of order.
const CHUNK: usize = 16 * 1024;

/// Scratch space of the fast path, kept per thread: no allocation per entry
/// nor, once warm, per block.
#[derive(Default)]
struct Scratch {
    ents: Vec<Ent>,
    order: Vec<u64>,
    chunk: Vec<u8>,
    pegouts: Vec<(Range<usize>, Range<usize>)>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Hashes one section's lines (`text`, file order) in key order. `None` on
/// a duplicate key (the strict parser words it).
fn hash_section(
    h: &mut Sha256,
    block: &[u8],
    text: &[u8],
    ents: &[Ent],
    (order, chunk): (&mut Vec<u64>, &mut Vec<u8>),
) -> Option<()> {
    let key = |e: &Ent| &block[e.key.start as usize..e.key.end as usize];
    let line = |e: &Ent| &text[e.line.start as usize..e.line.end as usize];
    // Bytes every key shares at its start (within the first 8) say nothing:
    // the prefixes start after them.
    let first = ents.first().map_or(0, |e| prefix(key(e), 0));
    let diff = ents.iter().fold(0u64, |d, e| d | (prefix(key(e), 0) ^ first));
    let shared = (diff.leading_zeros() / 8) as usize;
    // Sorted as one u64 each, (the prefix's top bits, index): no comparator
    // call; then the rare runs of equal prefixes are put in key order.
    let bits = u64::BITS - (ents.len() as u64).leading_zeros();
    let mask = u64::MAX.checked_shl(bits).unwrap_or(0);
    order.clear();
    order.extend(
        ents.iter()
            .enumerate()
            .map(|(i, e)| prefix(key(e), shared) & mask | i as u64),
    );
    order.sort_unstable();
    let ent = |x: u64| &ents[(x & !mask) as usize];
    let mut i = 0;
    while i < order.len() {
        let p = order[i] & mask;
        let mut j = i + 1;
        while j < order.len() && order[j] & mask == p {
            j += 1;
        }
        if j - i > 1 {
            order[i..j].sort_unstable_by(|a, b| key(ent(*a)).cmp(key(ent(*b))));
            if order[i..j].windows(2).any(|w| key(ent(w[0])) == key(ent(w[1]))) {
                return None;
            }
        }
        i = j;
    }
    chunk.resize(CHUNK, 0);
    let mut n = 0;
    for &x in order.iter() {
        let l = line(ent(x));
        if n + l.len() > CHUNK {
            h.update(&chunk[..n]);
            n = 0;
        }
        if l.len() > CHUNK {
            h.update(l);
        } else {
            chunk[n..n + l.len()].copy_from_slice(l);
            n += l.len();
        }
    }
    h.update(&chunk[..n]);
    Some(())
}

/// Reads the `n` entries of one section; returns whether they came in
/// strict key order.
fn entries(
    b: &[u8],
    pos: &mut usize,
    n: u64,
    (tag, spec): (&[u8], &[F]),
    out: &mut Out,
    ents: &mut Vec<Ent>,
    mut each: impl FnMut(&Quoted),
) -> Option<bool> {
    let mut sorted = true;
    let mut q: Quoted = Default::default();
    let (mut prev, mut prev_prefix): (&[u8], u64) = (&[], 0);
    for i in 0..n {
        let start = out.n;
        fields(b, pos, tag, spec, out, &mut q)?;
        let k = &b[q[0].clone()];
        // The first 8 bytes decide almost every comparison without a memcmp.
        let p = prefix(k, 0);
        sorted &= i == 0 || prev_prefix < p || prev_prefix == p && prev < k;
        (prev, prev_prefix) = (k, p);
        ents.push(Ent {
            key: q[0].start as u32..q[0].end as u32,
            line: start as u32..out.n as u32,
        });
        each(&q);
    }
    Some(sorted)
}

/// The fast path; `text` is scratch space.
pub(super) fn check<'a>(block: &'a [u8], text: &mut Vec<u8>) -> Option<Fast<'a>> {
    SCRATCH.with(|s| {
        let mut s = s.try_borrow_mut().ok()?;
        let s = &mut *s;
        let mut out = Out {
            buf: std::mem::take(text),
            n: 0,
        };
        // A section's canonical text is never longer than the block (plus
        // the copies' slack): sized once from zeroed memory, whose fresh
        // pages are touched only where written, rather than grown by
        // doubling (each growth a copy and a zero-fill).
        if out.buf.len() < block.len() + 64 {
            out.buf = vec![0; block.len() + block.len() / 4 + 64];
        }
        let r = sections(block, &mut out, s);
        *text = out.buf;
        let (h, anchor_at) = r?;
        finish(block, h, anchor_at, s)
    })
}

/// Header, timestamp and the five sections, hashed; the offset after them.
fn sections(block: &[u8], out: &mut Out, s: &mut Scratch) -> Option<(Sha256, usize)> {
    // Offsets are kept as u32.
    if block.len() > u32::MAX as usize || !block.starts_with(HEADER) || block.get(HEADER.len()) != Some(&b'\n') {
        return None;
    }
    let mut pos = HEADER.len() + 1;
    let mut q: Quoted = Default::default();
    fields(block, &mut pos, b"timestamp_ms", &[F::U64], out, &mut q)?;
    let mut h = Sha256::new();
    h.update(b"L2STATE|v1\n");
    s.pegouts.clear();
    for (section, tag, spec) in SECTIONS {
        out.n = 0;
        s.ents.clear();
        let n = count(block, &mut pos, section.name().as_bytes(), out)?;
        let head = out.n;
        let pegouts = &mut s.pegouts;
        let sorted = entries(block, &mut pos, n, (tag, spec), out, &mut s.ents, |q| {
            if section == Section::Pegouts {
                pegouts.push((q[0].clone(), q[3].clone()));
            }
        })?;
        if sorted {
            h.update(&out.buf[..out.n]);
        } else {
            h.update(&out.buf[..head]);
            hash_section(&mut h, block, &out.buf, &s.ents, (&mut s.order, &mut s.chunk))?;
        }
    }
    // Strings with `\`, `\r` or `:` (an ambiguous root) take the strict path.
    if memchr::memchr3(b'\\', b'\r', b':', &block[..pos]).is_some() {
        return None;
    }
    Some((h, pos))
}

/// The anchor and END lines after the sections; the root.
fn finish<'a>(block: &'a [u8], h: Sha256, at: usize, s: &Scratch) -> Option<Fast<'a>> {
    let rest = &block[at..];
    let (line, after) = match memchr::memchr(b'\n', rest) {
        Some(n) => (&rest[..n], &rest[n + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let anchor = anchor(line)?;
    if after != b"END_SNAPSHOT\n" && after != END {
        return None;
    }
    let b = |r: &Range<usize>| Cow::Borrowed(&block[r.clone()]);
    Some(Fast {
        root: crate::root::hex(&h.finalize()),
        anchor,
        pegouts: s.pegouts.iter().map(|(p, a)| (b(p), b(a))).collect(),
    })
}

/// The anchor line, read by the strict grammar (one line per block).
fn anchor(text: &[u8]) -> Option<Option<Anchor<'_>>> {
    if text == b"anchor none" {
        return Some(None);
    }
    let mut line = Line { text, pos: 0, no: 0 };
    if line.word() != b"anchor" || text.ends_with(b"\r") {
        return None;
    }
    let a = Anchor {
        l2_state_root: line.quoted("l2StateRoot").ok()?,
        timestamp_ms: line.u64("timestampMs").ok()?,
        recovery_metadata: line.quoted("recoveryMetadata").ok()?,
        payload: line.quoted("payload").ok()?,
        hash: line.quoted("hash").ok()?,
    };
    line.end().ok()?;
    Some(Some(a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Balance, L2State, PegOut, Snapshot};

    #[test]
    fn the_word_scans_agree_with_byte_loops() {
        let mut b: Vec<u8> = (0..=255u8).collect();
        b.extend(b"123456789012345678901234\"x\n0");
        for i in 0..b.len() {
            let want = b[i..].iter().position(|&c| c == b'"' || c == b'\n').map(|n| i + n);
            assert_eq!(quote_or_nl(&b, i), want, "{i}");
            let d = i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            assert_eq!(digits_end(&b, i), d, "{i}");
        }
        for c in 0..=255u8 {
            let w = [b'1', b'2', c, b'3', b'4', b'5', b'6', b'7', b'8', b'9'];
            let d = 2 + usize::from(c.is_ascii_digit()) * 8;
            assert_eq!(digits_end(&w, 0), d, "{c}");
        }
    }

    fn block(keys: &[&str], edit: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
        let b = |s: &str| Cow::Owned(s.as_bytes().to_vec());
        let mut state = L2State::default();
        for k in keys {
            state.balances.push(Balance {
                peer_id: b(k),
                balance: 7,
            });
            state.pegouts.push(PegOut {
                peg_id: b(k),
                ailee_source: b("a b"),
                btc_dest: b("bc1q"),
                ailee_burn_amount: 1,
                btc_release_amount: u64::MAX,
                status: i32::MIN,
                anchor_commitment_hash: b("ab"),
                initiated_time: 0,
                completed_time: 9,
            });
        }
        let root = crate::root::state_root(&state).unwrap();
        let snap = Snapshot {
            timestamp_ms: 5,
            anchor: Some(crate::anchor::build(&root, 5, b"m")),
            state,
        };
        let mut out = Vec::new();
        super::super::write_snapshot(&snap, &mut out).unwrap();
        edit(&mut out);
        out
    }

    fn fast_root(b: &[u8]) -> Option<String> {
        check(b, &mut Vec::new()).map(|f| f.root)
    }

    #[test]
    fn plain_blocks_take_the_fast_path_sorted_or_not() {
        for keys in [&["peer1", "peer2", "peer3"][..], &["peer3", "peer1", "peer2", "p"], &[]] {
            let b = block(keys, |_| {});
            let strict = super::super::strict_check(&b, &mut Vec::new()).unwrap();
            assert_eq!(fast_root(&b), Some(strict.root), "{keys:?}");
        }
        let no_newline = block(&["x"], |b| {
            b.pop();
        });
        assert!(fast_root(&no_newline).is_some());
    }

    #[test]
    fn anything_else_is_left_to_the_strict_parser() {
        type Edit = fn(&mut Vec<u8>);
        let cases: [(&str, Edit); 7] = [
            ("escape", |b| {
                let i = memchr::memmem::find(b, b"a b").unwrap();
                b.splice(i..i, *b"\\\\");
            }),
            ("colon", |b| {
                let i = memchr::memmem::find(b, b"a b").unwrap();
                b[i + 1] = b':';
            }),
            ("crlf", |b| {
                let i = memchr::memchr(b'\n', b).unwrap();
                b.insert(i, b'\r');
            }),
            ("blank line", |b| {
                let i = memchr::memchr(b'\n', b).unwrap();
                b.insert(i, b'\n');
            }),
            ("duplicate", |b| {
                let i = memchr::memmem::find(b, b"peer2").unwrap();
                b[i + 4] = b'1';
            }),
            ("leading zero", |b| {
                let i = memchr::memmem::find(b, b" 7\n").unwrap();
                b.insert(i + 1, b'0');
            }),
            ("u64 overflow", |b| {
                let i = memchr::memmem::find(b, b"18446744073709551615").unwrap();
                b[i + 19] = b'6';
            }),
        ];
        for (what, edit) in cases {
            let b = block(&["peer3", "peer1", "peer2"], edit);
            assert_eq!(fast_root(&b), None, "{what}");
        }
    }
}
