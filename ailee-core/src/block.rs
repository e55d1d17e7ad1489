//! Raw Bitcoin blocks as `getblock HASH 0` returns them: just enough parsing
//! to find `OP_RETURN` outputs and the transactions that carry them.
//!
//! Invariants: bytes from the node are untrusted — every length is checked
//! against what is left (no panic, no allocation sized by the input); a
//! transaction's id is hashed only when the caller asks (most outputs match
//! nothing), over its non-witness serialisation (BIP 144), so segwit blocks
//! of Bitcoin Core and the SV test node's blocks both give the node's txids.

use sha2::{Digest, Sha256};

/// A block that does not parse; says where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockError(pub String);

impl std::fmt::Display for BlockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Cur<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], BlockError> {
        let n = usize::try_from(n).map_err(|_| self.short())?;
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| self.short())?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn short(&self) -> BlockError {
        BlockError(format!(
            "raw block ends early (at byte {} of {})",
            self.at,
            self.b.len()
        ))
    }

    fn u8(&mut self) -> Result<u8, BlockError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, BlockError> {
        let first = self.u8()?;
        let n = match first {
            0xfd => 2,
            0xfe => 4,
            0xff => 8,
            v => return Ok(u64::from(v)),
        };
        let s = self.take(n)?;
        Ok(s.iter().rev().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// A count of items each at least `min` bytes long: bounded by what is left.
    fn count(&mut self, min: u64) -> Result<u64, BlockError> {
        let n = self.varint()?;
        let left = (self.b.len() - self.at) as u64;
        if n.saturating_mul(min) > left {
            return Err(BlockError(format!(
                "count {n} at byte {} exceeds the {left} bytes left",
                self.at
            )));
        }
        Ok(n)
    }
}

/// Double SHA-256, shown as Bitcoin shows hashes (byte-reversed hex).
pub fn dsha256_display(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let mut d: [u8; 32] = Sha256::digest(h.finalize()).into();
    d.reverse();
    crate::root::hex(&d)
}

/// An output a transaction spends: the spent transaction's id (display
/// order, as the node prints it) and the output's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutPoint {
    pub txid: String,
    pub vout: u32,
}

/// One transaction of a block: the outputs it spends, its outputs' scripts,
/// and its id on demand.
pub struct Tx<'a> {
    version: &'a [u8],
    /// Inputs and outputs, as serialised (no segwit marker, no witnesses).
    body: &'a [u8],
    locktime: &'a [u8],
    /// The outputs its inputs spend, in order (a coinbase's one input spends
    /// the null outpoint: all-zero id, index `0xffffffff`).
    pub inputs: Vec<OutPoint>,
    pub output_scripts: Vec<&'a [u8]>,
}

impl Tx<'_> {
    /// The transaction id as the node shows it (lower-case hex).
    pub fn txid(&self) -> String {
        dsha256_display(&[self.version, self.body, self.locktime])
    }

    /// A coinbase: one input, spending the null outpoint (it spends nothing,
    /// so no one's key signed it).
    pub fn is_coinbase(&self) -> bool {
        matches!(self.inputs.as_slice(), [i] if i.vout == u32::MAX && i.txid.bytes().all(|b| b == b'0'))
    }
}

/// A parsed raw block.
pub struct Block<'a> {
    /// The 80-byte header.
    pub header: &'a [u8],
    pub txs: Vec<Tx<'a>>,
}

impl Block<'_> {
    /// The block's hash (lower-case hex).
    pub fn hash(&self) -> String {
        dsha256_display(&[self.header])
    }

    /// Header time (Unix seconds).
    pub fn time(&self) -> u64 {
        u64::from(u32::from_le_bytes([
            self.header[68],
            self.header[69],
            self.header[70],
            self.header[71],
        ]))
    }
}

fn parse_tx<'a>(c: &mut Cur<'a>) -> Result<Tx<'a>, BlockError> {
    let version = c.take(4)?;
    let mut segwit = false;
    if c.b.get(c.at) == Some(&0) {
        // BIP 144 marker 0x00 + flag 0x01 (no valid tx has zero inputs).
        c.take(1)?;
        if c.u8()? != 1 {
            return Err(BlockError(format!("bad segwit flag at byte {}", c.at - 1)));
        }
        segwit = true;
    }
    let body_start = c.at;
    let n_in = c.count(41)?;
    let mut inputs = Vec::new();
    for _ in 0..n_in {
        let prev = c.take(36)?;
        let mut id = prev[..32].to_vec();
        id.reverse();
        inputs.push(OutPoint {
            txid: crate::root::hex(&id),
            vout: u32::from_le_bytes([prev[32], prev[33], prev[34], prev[35]]),
        });
        let l = c.varint()?;
        c.take(l)?;
        c.take(4)?;
    }
    let n_out = c.count(9)?;
    let mut output_scripts = Vec::new();
    for _ in 0..n_out {
        c.take(8)?;
        let l = c.varint()?;
        output_scripts.push(c.take(l)?);
    }
    let body = &c.b[body_start..c.at];
    if segwit {
        for _ in 0..n_in {
            let items = c.count(1)?;
            for _ in 0..items {
                let l = c.varint()?;
                c.take(l)?;
            }
        }
    }
    let locktime = c.take(4)?;
    Ok(Tx {
        version,
        body,
        locktime,
        inputs,
        output_scripts,
    })
}

/// Parses one raw transaction (`getrawtransaction TXID 0`); trailing bytes
/// are an error.
pub fn parse_tx_bytes(raw: &[u8]) -> Result<Tx<'_>, BlockError> {
    let mut c = Cur { b: raw, at: 0 };
    let tx = parse_tx(&mut c)?;
    if c.at != raw.len() {
        return Err(BlockError(format!("{} bytes after the transaction", raw.len() - c.at)));
    }
    Ok(tx)
}

/// Parses a raw block; trailing bytes are an error.
pub fn parse(raw: &[u8]) -> Result<Block<'_>, BlockError> {
    let mut c = Cur { b: raw, at: 0 };
    let header = c.take(80)?;
    let n = c.count(60)?;
    let mut txs = Vec::new();
    for _ in 0..n {
        txs.push(parse_tx(&mut c)?);
    }
    if c.at != raw.len() {
        return Err(BlockError(format!(
            "{} bytes after the last transaction",
            raw.len() - c.at
        )));
    }
    Ok(Block { header, txs })
}

/// Decodes lower- or upper-case hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let v = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.chunks_exact(2).map(|p| Some(v(p[0])? << 4 | v(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Regtest block 1 of the SV test node (coinbase only).
    const BLOCK1: &str = "0000002006226e46111a0b59caaf126043eb5bbf28c34f3a5e332a1fc7b2b73cf188910f634e8316d1e69c1570fd1d104b8641a34a7ab3a1d90e5fcd0ae737df98f2a3eec1d9026bffff7f20020000000102000000010000000000000000000000000000000000000000000000000000000000000000ffffffff03510101ffffffff0100f2052a01000000232103462d433ff06d0065cedf95fc916777cfe41720bd2b5be2916274661a26512fb4ac00000000";

    #[test]
    fn parses_a_coinbase_block_and_its_txid_is_the_merkle_root() {
        let raw = unhex(BLOCK1).unwrap();
        let b = parse(&raw).unwrap();
        assert_eq!(b.txs.len(), 1);
        assert_eq!(b.txs[0].output_scripts.len(), 1);
        // One transaction: the merkle root (header bytes 36..68) is its id.
        let mut root = b.header[36..68].to_vec();
        root.reverse();
        assert_eq!(b.txs[0].txid(), crate::root::hex(&root));
        assert_eq!(b.hash().len(), 64);
        assert!(b.txs[0].is_coinbase());
    }

    #[test]
    fn segwit_txid_skips_marker_and_witness() {
        // version, marker+flag, 1 input, 1 output (OP_RETURN "hi"), witness of one 2-byte item, locktime.
        let mut tx = vec![2, 0, 0, 0, 0, 1, 1];
        tx.extend([9u8; 36]);
        tx.extend([0, 0xff, 0xff, 0xff, 0xff, 1]);
        tx.extend([0u8; 8]);
        tx.extend([4, 0x6a, 2, b'h', b'i']);
        tx.extend([1, 2, 0xaa, 0xbb]);
        tx.extend([0u8; 4]);
        let mut c = Cur { b: &tx, at: 0 };
        let t = parse_tx(&mut c).unwrap();
        assert_eq!(c.at, tx.len());
        assert_eq!(t.output_scripts, vec![&[0x6a, 2, b'h', b'i'][..]]);
        assert_eq!(
            t.inputs,
            vec![OutPoint {
                txid: "09".repeat(32),
                vout: 0x09090909
            }]
        );
        assert!(!t.is_coinbase());
        assert_eq!(parse_tx_bytes(&tx).unwrap().txid(), t.txid());
        assert!(parse_tx_bytes(&tx[..tx.len() - 1]).is_err());
        assert!(parse_tx_bytes(&[&tx[..], &[0]].concat()).is_err());
        let mut legacy = vec![2, 0, 0, 0, 1];
        legacy.extend([9u8; 36]);
        legacy.extend([0, 0xff, 0xff, 0xff, 0xff, 1]);
        legacy.extend([0u8; 8]);
        legacy.extend([4, 0x6a, 2, b'h', b'i']);
        legacy.extend([0u8; 4]);
        assert_eq!(t.txid(), dsha256_display(&[&legacy]));
    }

    #[test]
    fn truncated_or_padded_blocks_are_errors_not_panics() {
        let raw = unhex(BLOCK1).unwrap();
        for n in 0..raw.len() {
            assert!(parse(&raw[..n]).is_err(), "{n}");
        }
        let mut more = raw.clone();
        more.push(0);
        assert!(parse(&more).is_err());
        let mut huge = raw[..80].to_vec();
        huge.extend([0xff; 9]);
        assert!(parse(&huge).is_err());
    }
}
