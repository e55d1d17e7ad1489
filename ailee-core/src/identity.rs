//! The anchoring identity (SPEC §2): the output scripts the node's anchor
//! transactions spend from.
//!
//! Anyone can put an `OP_RETURN` carrying any bytes on Bitcoin, so an
//! anchor's bytes on chain prove nothing about who anchored the state. What
//! only the operator can do is spend from the operator's key: an anchor
//! counts when its transaction spends from this identity — every input, each
//! checked on the output it spends — and never when it is a coinbase.
//!
//! The identity is a text file, `DATA_DIR/anchor_identity` by default
//! (written by `ailee_init_node --anchor-identity`), or the file given with
//! `--anchor-identity FILE`. One entry per line, `#` starts a comment:
//! - an output script in hex (`76a914…88ac`, `0014…`, any script), or
//! - a public key in hex (33 bytes compressed, 65 uncompressed), which stands
//!   for its pay-to-pubkey, pay-to-pubkey-hash and (compressed) P2WPKH scripts.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Name of the identity file in a data directory.
pub const FILE_NAME: &str = "anchor_identity";

/// Longest identity file read (a few scripts; anything bigger is not one).
const FILE_CAP: u64 = 1 << 20;

/// The scripts the operator's anchor transactions spend from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorIdentity {
    scripts: BTreeSet<Vec<u8>>,
    /// Where it was read from (for messages).
    pub source: PathBuf,
}

impl AnchorIdentity {
    /// Parses the file's text (see the module doc); `source` names it in errors.
    pub fn parse(text: &str, source: &Path) -> Result<AnchorIdentity> {
        let bad = |n: usize, why: &str| {
            Error::Usage(format!(
                "{}: line {n}: {why} (expected an output script or a public key, in hex)",
                source.display()
            ))
        };
        let mut scripts = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            let bytes = crate::block::unhex(entry).ok_or_else(|| bad(i + 1, "not hex"))?;
            if bytes.is_empty() {
                return Err(bad(i + 1, "empty"));
            }
            scripts.extend(scripts_of(&bytes));
        }
        if scripts.is_empty() {
            return Err(Error::Usage(format!(
                "{}: no script or public key in the anchoring identity file",
                source.display()
            )));
        }
        Ok(AnchorIdentity {
            scripts,
            source: source.to_path_buf(),
        })
    }

    /// Reads an identity file (a regular file of at most 1 MiB).
    pub fn load(path: &Path) -> Result<AnchorIdentity> {
        let io = |error| Error::Io {
            path: path.to_path_buf(),
            error,
        };
        let md = std::fs::metadata(path).map_err(io)?;
        if !md.is_file() || md.len() > FILE_CAP {
            return Err(Error::Usage(format!(
                "{}: not an anchoring identity file (a small regular file is expected)",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        AnchorIdentity::parse(&text, path)
    }

    /// The identity a tool uses: the file given (`--anchor-identity`), which
    /// must be there, else `DATA_DIR/anchor_identity` when it exists, else none.
    pub fn resolve(given: Option<&Path>, data_dir: Option<&Path>) -> Result<Option<AnchorIdentity>> {
        if let Some(p) = given {
            return AnchorIdentity::load(p).map(Some);
        }
        match data_dir.map(|d| d.join(FILE_NAME)) {
            Some(p) if std::fs::symlink_metadata(&p).is_ok() => AnchorIdentity::load(&p).map(Some),
            _ => Ok(None),
        }
    }

    /// The data directory of a database path (`D/reorg_db` → `D`), where the
    /// identity file is looked for by default.
    pub fn data_dir_of(db_path: &Path) -> Option<PathBuf> {
        let abs = std::path::absolute(db_path).ok()?;
        abs.parent().map(Path::to_path_buf)
    }

    /// Whether an output with this script is the operator's.
    pub fn owns(&self, script: &[u8]) -> bool {
        self.scripts.contains(script)
    }

    /// Number of scripts the identity stands for.
    pub fn len(&self) -> usize {
        self.scripts.len()
    }

    /// Never true for a parsed identity (kept for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty()
    }
}

/// The scripts an entry stands for: a public key's three standard scripts,
/// or the script itself.
fn scripts_of(bytes: &[u8]) -> Vec<Vec<u8>> {
    let compressed = bytes.len() == 33 && matches!(bytes[0], 2 | 3);
    let uncompressed = bytes.len() == 65 && bytes[0] == 4;
    if !(compressed || uncompressed) {
        return vec![bytes.to_vec()];
    }
    let h = hash160(bytes);
    let mut p2pk = vec![bytes.len() as u8];
    p2pk.extend_from_slice(bytes);
    p2pk.push(0xac);
    let mut p2pkh = vec![0x76, 0xa9, 20];
    p2pkh.extend_from_slice(&h);
    p2pkh.extend([0x88, 0xac]);
    let mut out = vec![p2pk, p2pkh];
    if compressed {
        let mut p2wpkh = vec![0x00, 20];
        p2wpkh.extend_from_slice(&h);
        out.push(p2wpkh);
    }
    out
}

/// RIPEMD-160 of SHA-256: the hash in pay-to-pubkey-hash scripts.
fn hash160(b: &[u8]) -> [u8; 20] {
    use ripemd::Digest as _;
    let sha = Sha256::digest(b);
    ripemd::Ripemd160::digest(sha).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Bitcoin's generator point G, compressed: a public key with a well-known hash160.
    const G: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

    #[test]
    fn a_public_key_stands_for_its_standard_scripts() {
        let id = AnchorIdentity::parse(&format!("# the node's key\n{G}\n"), Path::new("f")).unwrap();
        let h = "751e76e8199196d454941c45d1b3a323f1433bd6";
        for s in [format!("76a914{h}88ac"), format!("0014{h}"), format!("21{G}ac")] {
            assert!(id.owns(&crate::block::unhex(&s).unwrap()), "{s}");
        }
        assert_eq!(id.len(), 3);
        assert!(!id.owns(&crate::block::unhex(&format!("a914{h}87")).unwrap()));
    }

    #[test]
    fn a_script_is_itself_and_bad_lines_are_refused() {
        let id = AnchorIdentity::parse("  51  # OP_TRUE\n\n", Path::new("f")).unwrap();
        assert!(id.owns(&[0x51]));
        assert_eq!(id.len(), 1);
        for bad in ["", "# only a comment\n", "zz\n", "515\n"] {
            let e = AnchorIdentity::parse(bad, Path::new("f")).unwrap_err();
            assert_eq!(e.exit_status(), crate::ExitStatus::Operational, "{bad:?}");
        }
    }

    #[test]
    fn resolve_takes_the_flag_then_the_data_directory() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(AnchorIdentity::resolve(None, Some(d.path())).unwrap(), None);
        assert!(AnchorIdentity::resolve(Some(&d.path().join("missing")), None).is_err());
        std::fs::write(d.path().join(FILE_NAME), "51\n").unwrap();
        let id = AnchorIdentity::resolve(None, Some(d.path())).unwrap().unwrap();
        assert!(id.owns(&[0x51]));
        assert_eq!(
            AnchorIdentity::data_dir_of(&d.path().join("reorg_db")).as_deref(),
            Some(d.path())
        );
    }
}
