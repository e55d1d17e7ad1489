//! The grammar of one `l2_snapshots.dat` block (SPEC §1.1), read and written.
//!
//! [`parse_block`] is strict: anything that does not match the grammar is an
//! error naming the block-relative line. It borrows every string that has no
//! escape from the input, so parsing allocates per entry, not per string.
//! [`write_snapshot`] produces the node's exact bytes: parse-then-write of a
//! block the node wrote is byte-identical.

use crate::model::*;
use crate::root::{key_order, push_i32, push_u64, KeyOrder, Section};
use std::borrow::Cow;
use std::fmt;

mod fast;

/// The header line that opens every block.
pub const HEADER: &[u8] = b"SNAPSHOT v1";
/// The marker line that completes a block.
pub const END: &[u8] = b"END_SNAPSHOT";

/// A grammar error inside one block; `line` counts from 1 at the block's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
    /// Another line the error involves (the first of two duplicate keys).
    pub related: Option<usize>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)?;
        match self.related {
            Some(r) => write!(f, " (also on line {r})"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ParseError {}

/// A parsed block: the snapshot, the key order the root needs, and what the
/// reader tolerated.
#[derive(Debug, Clone)]
pub struct Parsed<'a> {
    pub snapshot: Snapshot<'a>,
    pub order: KeyOrder,
    /// Some line ended in `\r\n` (tolerated, SPEC §1.1 rule 5).
    pub crlf: bool,
}

pub use crate::model::show;

struct Line<'a> {
    text: &'a [u8],
    pos: usize,
    no: usize,
}

type R<T> = Result<T, ParseError>;

impl<'a> Line<'a> {
    fn err<T>(&self, msg: impl Into<String>) -> R<T> {
        Err(ParseError {
            line: self.no,
            message: msg.into(),
            related: None,
        })
    }

    /// One separating space before the next field.
    fn sp(&mut self, field: &str) -> R<()> {
        match self.text.get(self.pos) {
            Some(b' ') => {
                self.pos += 1;
                if self.text.get(self.pos) == Some(&b' ') {
                    return self.err(format!("extra space before field {field}"));
                }
                Ok(())
            }
            None => self.err(format!("missing field {field}")),
            Some(_) => self.err(format!(
                "expected a space before field {field}, found {:?}",
                show(&self.text[self.pos..])
            )),
        }
    }

    /// Bare token up to the next space or end of line.
    fn word(&mut self) -> &'a [u8] {
        let rest = &self.text[self.pos..];
        let n = memchr::memchr(b' ', rest).unwrap_or(rest.len());
        self.pos += n;
        &rest[..n]
    }

    fn quoted(&mut self, field: &str) -> R<Bytes<'a>> {
        self.sp(field)?;
        let t = self.text;
        if t.get(self.pos) != Some(&b'"') {
            return self.err(format!(
                "field {field}: expected a quoted string, found {:?}",
                show(&t[self.pos..])
            ));
        }
        let start = self.pos + 1;
        let mut i = start;
        let mut owned: Option<Vec<u8>> = None;
        loop {
            // `\r` is searched in the same pass: strings never hold one (SPEC §1.1).
            let Some(off) = memchr::memchr3(b'"', b'\\', b'\r', &t[i..]) else {
                return self.err(format!("field {field}: unterminated quoted string"));
            };
            let j = i + off;
            if t[j] == b'\r' {
                return self.err(format!("field {field}: the string contains a carriage return"));
            }
            if t[j] == b'"' {
                self.pos = j + 1;
                return Ok(match owned {
                    None => Cow::Borrowed(&t[start..j]),
                    Some(mut v) => {
                        v.extend_from_slice(&t[i..j]);
                        Cow::Owned(v)
                    }
                });
            }
            // `\` followed by any byte stands for that byte.
            let Some(&escaped) = t.get(j + 1) else {
                return self.err(format!(
                    "field {field}: unterminated quoted string (ends in a backslash)"
                ));
            };
            if escaped == b'\r' {
                return self.err(format!("field {field}: the string contains a carriage return"));
            }
            let v = owned.get_or_insert_with(Vec::new);
            v.extend_from_slice(&t[i..j]);
            v.push(escaped);
            i = j + 2;
        }
    }

    fn digits(&mut self, field: &str, signed: bool) -> R<(bool, u64)> {
        self.sp(field)?;
        let t = self.text;
        let start = self.pos;
        let neg = signed && t.get(start) == Some(&b'-');
        let first = start + neg as usize;
        let mut i = first;
        while i < t.len() && t[i].is_ascii_digit() {
            i += 1;
        }
        let end = i + t[i..].iter().position(|&c| c == b' ').unwrap_or(t.len() - i);
        self.pos = end;
        let w = &t[start..end];
        let d = &t[first..i];
        if d.is_empty() || i != end {
            return self.err(format!("field {field}: not a plain decimal number: {:?}", show(w)));
        }
        if d.len() > 1 && d[0] == b'0' || neg && d == b"0" {
            return self.err(format!(
                "field {field}: number not in plain decimal form: {:?}",
                show(w)
            ));
        }
        match decimal(d) {
            Some(v) => Ok((neg, v)),
            None => self.err(format!("field {field}: number out of range: {:?}", show(w))),
        }
    }

    fn u64(&mut self, field: &str) -> R<u64> {
        Ok(self.digits(field, false)?.1)
    }

    fn u32(&mut self, field: &str) -> R<u32> {
        let v = self.u64(field)?;
        u32::try_from(v).or_else(|_| self.err(format!("field {field}: number out of range for u32: {v}")))
    }

    fn i32(&mut self, field: &str) -> R<i32> {
        let (neg, v) = self.digits(field, true)?;
        let v = if neg { -(v as i128) } else { v as i128 };
        i32::try_from(v).or_else(|_| self.err(format!("field {field}: number out of range for i32: {v}")))
    }

    fn flag(&mut self, field: &str) -> R<bool> {
        self.sp(field)?;
        match self.word() {
            b"0" => Ok(false),
            b"1" => Ok(true),
            w => self.err(format!("field {field}: expected 0 or 1, found {:?}", show(w))),
        }
    }

    fn end(&self) -> R<()> {
        if self.pos == self.text.len() {
            Ok(())
        } else {
            self.err(format!(
                "trailing data after the last field: {:?}",
                show(&self.text[self.pos..])
            ))
        }
    }
}

/// Value of eight ASCII digits (first = most significant), in a few
/// multiplications instead of a chain of eight.
fn eight_digits(d: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    let mut v = u64::from_le_bytes(b) - 0x3030_3030_3030_3030;
    v = v * 10 + (v >> 8);
    (((v & 0x0000_00FF_0000_00FF) * (100 + (1_000_000 << 32)))
        + (((v >> 16) & 0x0000_00FF_0000_00FF) * (1 + (10_000 << 32))))
        >> 32
}

/// Value of a non-empty run of ASCII digits, `None` if it exceeds u64.
fn decimal(d: &[u8]) -> Option<u64> {
    if d.len() > 19 {
        return d
            .iter()
            .try_fold(0u64, |v, &c| v.checked_mul(10)?.checked_add(u64::from(c - b'0')));
    }
    // Up to 19 digits cannot overflow.
    let mut v = 0u64;
    let mut k = 0;
    while k + 8 <= d.len() {
        v = v * 100_000_000 + eight_digits(&d[k..]);
        k += 8;
    }
    for &c in &d[k..] {
        v = v * 10 + u64::from(c - b'0');
    }
    Some(v)
}

#[cfg(test)]
mod number_tests {
    #[test]
    fn decimal_agrees_with_std_parse() {
        let mut samples: Vec<String> = (0..2000u64).map(|i| (i * 7_919_000_003).to_string()).collect();
        samples.extend(
            [
                "0",
                "9",
                "12345678",
                "123456789",
                "9999999999999999999",
                "18446744073709551615",
            ]
            .map(String::from),
        );
        for s in samples {
            assert_eq!(super::decimal(s.as_bytes()), s.parse::<u64>().ok(), "{s}");
        }
        assert_eq!(super::decimal(b"18446744073709551616"), None);
        assert_eq!(super::decimal(b"99999999999999999999"), None);
        assert_eq!(super::decimal(b"100000000000000000000"), None);
    }
}

/// Splits a block into its non-blank lines, stripping `\r` before `\n`.
struct Lines<'a> {
    data: &'a [u8],
    pos: usize,
    no: usize,
    crlf: bool,
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> Option<Line<'a>> {
        loop {
            if self.pos >= self.data.len() {
                return None;
            }
            let rest = &self.data[self.pos..];
            self.no += 1;
            let (mut text, adv) = match memchr::memchr(b'\n', rest) {
                Some(n) => (&rest[..n], n + 1),
                None => (rest, rest.len()),
            };
            self.pos += adv;
            if let Some(t) = text.strip_suffix(b"\r") {
                self.crlf = true;
                text = t;
            }
            if !text.is_empty() {
                return Some(Line {
                    text,
                    pos: 0,
                    no: self.no,
                });
            }
        }
    }
}

const KNOWN_TAGS: &[&[u8]] = &[
    b"SNAPSHOT",
    b"timestamp_ms",
    b"balances",
    b"balance",
    b"escrows",
    b"escrow",
    b"pegins",
    b"pegin",
    b"pegouts",
    b"pegout",
    b"tasks",
    b"task",
    b"anchor",
    b"END_SNAPSHOT",
];
const ORDER: &[&[u8]] = &[
    b"timestamp_ms",
    b"balances",
    b"escrows",
    b"pegins",
    b"pegouts",
    b"tasks",
    b"anchor",
    b"END_SNAPSHOT",
];

struct Parser<'a> {
    lines: Lines<'a>,
    /// Block-relative line number of each section's count line.
    section_line: [usize; 5],
}

impl<'a> Parser<'a> {
    fn next(&mut self, expected: &str) -> R<Line<'a>> {
        self.lines.next_line().ok_or_else(|| ParseError {
            line: self.lines.no,
            message: format!("block ends where {expected} was expected"),
            related: None,
        })
    }

    /// Reads the line that must start with `tag`, naming what went wrong otherwise.
    fn tagged(&mut self, tag: &[u8], context: Option<(&str, u64, u64)>) -> R<Line<'a>> {
        // The hot path (the tag matches) must not allocate: messages are built on error only.
        let Some(mut line) = self.lines.next_line() else {
            return self.next(&format!("'{}'", String::from_utf8_lossy(tag)));
        };
        let found = line.word();
        if found == tag {
            return Ok(line);
        }
        let what = String::from_utf8_lossy(tag).into_owned();
        if !KNOWN_TAGS.contains(&found) {
            return line.err(format!("unknown tag {:?} (expected '{what}')", show(found)));
        }
        if let Some((section, count, seen)) = context {
            let entry = &section.as_bytes()[..section.len() - 1];
            return if found == entry {
                line.err(format!(
                    "count mismatch: '{section} {count}' but more '{}' lines follow",
                    show(entry)
                ))
            } else {
                line.err(format!(
                    "count mismatch: '{section} {count}' but only {seen} entries before {:?}",
                    show(found)
                ))
            };
        }
        if [&b"balance"[..], b"escrow", b"pegin", b"pegout", b"task"].contains(&found) {
            return line.err(format!(
                "count mismatch: more '{}' lines than the count of their section (expected '{what}')",
                show(found)
            ));
        }
        let rank = |t: &[u8]| ORDER.iter().position(|o| *o == t);
        match (rank(found), rank(tag)) {
            (Some(a), Some(b)) if a != b => {
                line.err(format!("section {:?} out of order (expected '{what}')", show(found)))
            }
            _ => line.err(format!("unexpected {:?} line (expected '{what}')", show(found))),
        }
    }

    fn count(&mut self, section: Section) -> R<u64> {
        let mut line = self.tagged(section.name().as_bytes(), None)?;
        self.section_line[section as usize] = line.no;
        let n = line.u64("count")?;
        line.end()?;
        Ok(n)
    }

    fn entries<T>(
        &mut self,
        section: Section,
        tag: &[u8],
        f: impl Fn(&mut Line<'a>) -> R<T>,
        mut each: impl FnMut(T),
    ) -> R<()> {
        let n = self.count(section)?;
        for seen in 0..n {
            let mut line = self.tagged(tag, Some((section.name(), n, seen)))?;
            each(f(&mut line)?);
            line.end()?;
        }
        Ok(())
    }
}

/// One entry of a block, as [`visit_block`] hands them out (file order).
#[derive(Debug, Clone)]
pub enum Entry<'a> {
    Balance(Balance<'a>),
    Escrow(Escrow<'a>),
    PegIn(PegIn<'a>),
    PegOut(PegOut<'a>),
    Task(Task<'a>),
}

/// What [`visit_block`] returns besides the entries.
#[derive(Debug, Clone)]
pub struct Visited<'a> {
    pub timestamp_ms: u64,
    pub anchor: Option<Anchor<'a>>,
    pub crlf: bool,
    /// Block-relative line of each section's count line.
    pub section_line: [usize; 5],
}

/// The grammar of [`parse_block`] without holding the entries: each is handed
/// to `each` as it is read (memory flat in the number of entries). Does NOT
/// check for duplicate keys (that needs them all): a caller that needs the
/// full verdict checks the keys itself or calls [`parse_block`].
pub fn visit_block<'a>(block: &'a [u8], each: impl FnMut(Entry<'a>)) -> Result<Visited<'a>, ParseError> {
    let mut p = Parser {
        lines: Lines {
            data: block,
            pos: 0,
            no: 0,
            crlf: false,
        },
        section_line: [0; 5],
    };
    grammar(&mut p, each)
}

/// The grammar of one block, every entry handed to `each`.
fn grammar<'a>(p: &mut Parser<'a>, mut each: impl FnMut(Entry<'a>)) -> Result<Visited<'a>, ParseError> {
    let header = p.next("the 'SNAPSHOT v1' header")?;
    if header.text != HEADER {
        return header.err(format!(
            "expected the 'SNAPSHOT v1' header, found {:?}",
            show(header.text)
        ));
    }
    let mut line = p.tagged(b"timestamp_ms", None)?;
    let timestamp_ms = line.u64("timestamp_ms")?;
    line.end()?;

    p.entries(Section::Balances, b"balance", balance, |e| each(Entry::Balance(e)))?;
    p.entries(Section::Escrows, b"escrow", escrow, |e| each(Entry::Escrow(e)))?;
    p.entries(Section::Pegins, b"pegin", pegin, |e| each(Entry::PegIn(e)))?;
    p.entries(Section::Pegouts, b"pegout", pegout, |e| each(Entry::PegOut(e)))?;
    p.entries(Section::Tasks, b"task", task, |e| each(Entry::Task(e)))?;

    let anchor = anchor_line(p)?;
    let end = p.next("'END_SNAPSHOT'")?;
    if end.text != END {
        return end.err(format!(
            "expected 'END_SNAPSHOT' after the anchor, found {:?}",
            show(end.text)
        ));
    }
    if let Some(extra) = p.lines.next_line() {
        return extra.err(format!("data after 'END_SNAPSHOT': {:?}", show(extra.text)));
    }
    Ok(Visited {
        timestamp_ms,
        anchor,
        crlf: p.lines.crlf,
        section_line: p.section_line,
    })
}

// The fields of each entry line, in the node's order (SPEC §2).

fn balance<'a>(l: &mut Line<'a>) -> R<Balance<'a>> {
    Ok(Balance {
        peer_id: l.quoted("peerId")?,
        balance: l.u64("balance")?,
    })
}

fn escrow<'a>(l: &mut Line<'a>) -> R<Escrow<'a>> {
    Ok(Escrow {
        task_id: l.quoted("taskId")?,
        client_peer_id: l.quoted("clientPeerId")?,
        amount: l.u64("amount")?,
        locked: l.flag("locked")?,
        created_at: l.u64("createdAt")?,
    })
}

fn pegin<'a>(l: &mut Line<'a>) -> R<PegIn<'a>> {
    Ok(PegIn {
        peg_id: l.quoted("pegId")?,
        btc_tx_id: l.quoted("btcTxId")?,
        vout: l.u32("vout")?,
        btc_amount: l.u64("btcAmount")?,
        btc_source: l.quoted("btcSource")?,
        ailee_dest: l.quoted("aileeDest")?,
        status: l.i32("status")?,
        confirmations: l.u64("confirmations")?,
        initiated_time: l.u64("initiatedTime")?,
        completed_time: l.u64("completedTime")?,
    })
}

fn pegout<'a>(l: &mut Line<'a>) -> R<PegOut<'a>> {
    Ok(PegOut {
        peg_id: l.quoted("pegId")?,
        ailee_source: l.quoted("aileeSource")?,
        btc_dest: l.quoted("btcDest")?,
        ailee_burn_amount: l.u64("aileeBurnAmount")?,
        btc_release_amount: l.u64("btcReleaseAmount")?,
        status: l.i32("status")?,
        anchor_commitment_hash: l.quoted("anchorCommitmentHash")?,
        initiated_time: l.u64("initiatedTime")?,
        completed_time: l.u64("completedTime")?,
    })
}

fn task<'a>(l: &mut Line<'a>) -> R<Task<'a>> {
    Ok(Task {
        task_id: l.quoted("taskId")?,
        task_type: l.i32("taskType")?,
        priority: l.i32("priority")?,
        submitter_id: l.quoted("submitterId")?,
        submitted_at_ms: l.u64("submittedAtMs")?,
        payload_hash: l.quoted("payloadHash")?,
        anchor_commitment_hash: l.quoted("anchorCommitmentHash")?,
    })
}

/// The `anchor` line: `anchor none`, or the anchor's five fields.
fn anchor_line<'a>(p: &mut Parser<'a>) -> R<Option<Anchor<'a>>> {
    let mut line = p.tagged(b"anchor", None)?;
    if line.text[line.pos..] == *b" none" {
        return Ok(None);
    }
    let a = Anchor {
        l2_state_root: line.quoted("l2StateRoot")?,
        timestamp_ms: line.u64("timestampMs")?,
        recovery_metadata: line.quoted("recoveryMetadata")?,
        payload: line.quoted("payload")?,
        hash: line.quoted("hash")?,
    };
    line.end()?;
    Ok(Some(a))
}

/// Parses one block: from its `SNAPSHOT v1` header through `END_SNAPSHOT`.
pub fn parse_block(block: &[u8]) -> Result<Parsed<'_>, ParseError> {
    let mut state = L2State {
        balances: Vec::new(),
        escrows: Vec::new(),
        pegins: Vec::new(),
        pegouts: Vec::new(),
        tasks: Vec::new(),
    };
    let v = visit_block(block, |e| match e {
        Entry::Balance(e) => state.balances.push(e),
        Entry::Escrow(e) => state.escrows.push(e),
        Entry::PegIn(e) => state.pegins.push(e),
        Entry::PegOut(e) => state.pegouts.push(e),
        Entry::Task(e) => state.tasks.push(e),
    })?;
    let Visited {
        timestamp_ms,
        anchor,
        crlf,
        section_line,
    } = v;
    let order = key_order(&state).map_err(|d| {
        let first = entry_line(block, section_line[d.section as usize], d.first);
        let second = entry_line(block, section_line[d.section as usize], d.second);
        ParseError {
            line: second,
            message: format!("duplicate key {:?} in {}", show(&d.key), d.section.name()),
            related: Some(first),
        }
    })?;
    Ok(Parsed {
        snapshot: Snapshot {
            timestamp_ms,
            state,
            anchor,
        },
        order,
        crlf,
    })
}

/// What verifying a block needs from its text: the grammar's verdict, the
/// state root and the fields the anchor checks read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked<'a> {
    /// The state root (lowercase hex).
    pub root: String,
    pub anchor: Option<Anchor<'a>>,
    /// `(pegId, anchorCommitmentHash)` of every peg-out, in file order.
    pub pegouts: Vec<(Bytes<'a>, Bytes<'a>)>,
    /// Some line ended in `\r\n`.
    pub crlf: bool,
    /// The warning of [`crate::root::ambiguity_warning`], if a string holds `:`.
    pub ambiguous: Option<String>,
}

/// Parses `block` and computes its root, as [`parse_block`] then
/// [`crate::root::state_root_with`] would, without holding the state: a block
/// in the node's plain form (no escapes, `\r`, `:` or blank lines) is read in
/// one pass and its canonical text hashed as it is made; any other block,
/// and every error, goes through [`parse_block`] (same errors, same lines).
/// `buf` is scratch space, reused across calls.
pub fn check_parse<'a>(block: &'a [u8], buf: &mut Vec<u8>) -> Result<Checked<'a>, ParseError> {
    if let Some(f) = fast::check(block, buf) {
        return Ok(Checked {
            root: f.root,
            anchor: f.anchor,
            pegouts: f.pegouts,
            crlf: false,
            ambiguous: None,
        });
    }
    strict_check(block, buf)
}

/// [`check_parse`] through the strict parser only (the reference the fast
/// path is tested against).
pub fn strict_check<'a>(block: &'a [u8], buf: &mut Vec<u8>) -> Result<Checked<'a>, ParseError> {
    let p = parse_block(block)?;
    let state = &p.snapshot.state;
    crate::root::canonical_text(state, &p.order, buf);
    let ambiguous = if crate::root::separators_as_laid_out(state, buf) {
        None
    } else {
        crate::root::ambiguity_warning(&crate::root::ambiguous_fields(state))
    };
    Ok(Checked {
        root: crate::root::sha256_hex(buf),
        anchor: p.snapshot.anchor,
        pegouts: p
            .snapshot
            .state
            .pegouts
            .into_iter()
            .map(|e| (e.peg_id, e.anchor_commitment_hash))
            .collect(),
        crlf: p.crlf,
        ambiguous,
    })
}

/// Block-relative line of entry `idx` of the section whose count is on `count_line`.
fn entry_line(block: &[u8], count_line: usize, idx: usize) -> usize {
    let mut lines = Lines {
        data: block,
        pos: 0,
        no: 0,
        crlf: false,
    };
    while lines.no < count_line {
        if lines.next_line().is_none() {
            break;
        }
    }
    for _ in 0..idx {
        lines.next_line();
    }
    lines.next_line().map_or(0, |l| l.no)
}

/// A string field that cannot be written (SPEC §1.1: no `\n` or `\r`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnwritableString {
    pub field: &'static str,
    pub value: Vec<u8>,
}

impl fmt::Display for UnwritableString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "field {} contains a line break, which the snapshot format cannot hold: {:?}",
            self.field,
            show(&self.value)
        )
    }
}

impl std::error::Error for UnwritableString {}

struct W<'o> {
    out: &'o mut Vec<u8>,
}

impl W<'_> {
    fn tag(&mut self, t: &str) -> &mut Self {
        self.out.extend_from_slice(t.as_bytes());
        self
    }
    fn q(&mut self, field: &'static str, s: &[u8]) -> Result<&mut Self, UnwritableString> {
        if memchr::memchr2(b'\n', b'\r', s).is_some() {
            return Err(UnwritableString {
                field,
                value: s.to_vec(),
            });
        }
        self.out.extend_from_slice(b" \"");
        for &c in s {
            if c == b'"' || c == b'\\' {
                self.out.push(b'\\');
            }
            self.out.push(c);
        }
        self.out.push(b'"');
        Ok(self)
    }
    fn n(&mut self, v: u64) -> &mut Self {
        self.out.push(b' ');
        push_u64(self.out, v);
        self
    }
    fn i(&mut self, v: i32) -> &mut Self {
        self.out.push(b' ');
        push_i32(self.out, v);
        self
    }
    fn nl(&mut self) {
        self.out.push(b'\n');
    }
}

/// Appends `snap` to `out` exactly as the node's `appendSnapshotToFile` writes it.
pub fn write_snapshot(snap: &Snapshot<'_>, out: &mut Vec<u8>) -> Result<(), UnwritableString> {
    let s = &snap.state;
    let mut w = W { out };
    w.tag("SNAPSHOT v1").nl();
    w.tag("timestamp_ms").n(snap.timestamp_ms).nl();
    w.tag("balances").n(s.balances.len() as u64).nl();
    for e in &s.balances {
        w.tag("balance").q("peerId", &e.peer_id)?.n(e.balance).nl();
    }
    w.tag("escrows").n(s.escrows.len() as u64).nl();
    for e in &s.escrows {
        w.tag("escrow")
            .q("taskId", &e.task_id)?
            .q("clientPeerId", &e.client_peer_id)?;
        w.n(e.amount).n(e.locked as u64).n(e.created_at).nl();
    }
    w.tag("pegins").n(s.pegins.len() as u64).nl();
    for e in &s.pegins {
        w.tag("pegin")
            .q("pegId", &e.peg_id)?
            .q("btcTxId", &e.btc_tx_id)?
            .n(e.vout as u64)
            .n(e.btc_amount);
        w.q("btcSource", &e.btc_source)?.q("aileeDest", &e.ailee_dest)?;
        w.i(e.status)
            .n(e.confirmations)
            .n(e.initiated_time)
            .n(e.completed_time)
            .nl();
    }
    w.tag("pegouts").n(s.pegouts.len() as u64).nl();
    for e in &s.pegouts {
        w.tag("pegout")
            .q("pegId", &e.peg_id)?
            .q("aileeSource", &e.ailee_source)?
            .q("btcDest", &e.btc_dest)?;
        w.n(e.ailee_burn_amount).n(e.btc_release_amount).i(e.status);
        w.q("anchorCommitmentHash", &e.anchor_commitment_hash)?
            .n(e.initiated_time)
            .n(e.completed_time)
            .nl();
    }
    w.tag("tasks").n(s.tasks.len() as u64).nl();
    for e in &s.tasks {
        w.tag("task")
            .q("taskId", &e.task_id)?
            .i(e.task_type)
            .i(e.priority)
            .q("submitterId", &e.submitter_id)?;
        w.n(e.submitted_at_ms)
            .q("payloadHash", &e.payload_hash)?
            .q("anchorCommitmentHash", &e.anchor_commitment_hash)?;
        w.nl();
    }
    match &snap.anchor {
        None => w.tag("anchor none").nl(),
        Some(a) => {
            w.tag("anchor").q("l2StateRoot", &a.l2_state_root)?.n(a.timestamp_ms);
            w.q("recoveryMetadata", &a.recovery_metadata)?
                .q("payload", &a.payload)?
                .q("hash", &a.hash)?;
            w.nl();
        }
    }
    w.tag("END_SNAPSHOT").nl();
    Ok(())
}
