//! Anchor commitments (SPEC §1.3): the payload, its hash, the `OP_RETURN` script.

use crate::model::Anchor;
use crate::root::{hex, push_u64, sha256_hex};
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// Largest payload carried as is; longer ones are committed to by hash.
pub const MAX_INLINE_PAYLOAD: usize = 80;
/// Prefix of the hashed form of the `OP_RETURN` data.
pub const HASHED_PREFIX: &[u8] = b"AILEE";

/// `l2StateRoot:timestampMs:recoveryMetadata`.
pub fn payload(root: &[u8], timestamp_ms: u64, metadata: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(root.len() + metadata.len() + 22);
    p.extend_from_slice(root);
    p.push(b':');
    push_u64(&mut p, timestamp_ms);
    p.push(b':');
    p.extend_from_slice(metadata);
    p
}

/// Builds the anchor the node would build for `root`.
pub fn build(root: &str, timestamp_ms: u64, metadata: &[u8]) -> Anchor<'static> {
    let payload = payload(root.as_bytes(), timestamp_ms, metadata);
    let hash = sha256_hex(&payload);
    Anchor {
        l2_state_root: Cow::Owned(root.as_bytes().to_vec()),
        timestamp_ms,
        recovery_metadata: Cow::Owned(metadata.to_vec()),
        payload: Cow::Owned(payload),
        hash: Cow::Owned(hash.into_bytes()),
    }
}

/// The bytes the `OP_RETURN` output pushes: the payload itself when it fits
/// in 80 bytes, otherwise `AILEE` + `sha256(payload)`.
pub fn op_return_data(payload: &[u8]) -> Vec<u8> {
    if payload.len() <= MAX_INLINE_PAYLOAD {
        payload.to_vec()
    } else {
        let mut d = HASHED_PREFIX.to_vec();
        d.extend_from_slice(&Sha256::digest(payload));
        d
    }
}

/// `0x6a` + push of `data` (`len` as one byte up to 75, else `0x4c len`).
pub fn op_return_script(data: &[u8]) -> Vec<u8> {
    let mut s = vec![0x6a];
    if data.len() <= 75 {
        s.push(data.len() as u8);
    } else {
        s.push(0x4c);
        s.push(data.len() as u8);
    }
    s.extend_from_slice(data);
    s
}

/// Hex of the full `OP_RETURN` script for a payload.
pub fn op_return_script_hex(payload: &[u8]) -> String {
    hex(&op_return_script(&op_return_data(payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_payload_is_pushed_as_is() {
        let s = op_return_script(&op_return_data(b"abc"));
        assert_eq!(s, [0x6a, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn long_payload_is_committed_by_hash() {
        let p = payload(&[b'a'; 64], 1_700_000_000_000, b"epoch=0");
        assert!(p.len() > 80);
        let d = op_return_data(&p);
        assert_eq!(d.len(), 37);
        assert_eq!(&d[..5], b"AILEE");
        assert_eq!(hex(&d[5..]), sha256_hex(&p));
        let s = op_return_script(&d);
        assert_eq!(&s[..2], [0x6a, 37]);
    }

    #[test]
    fn push_of_76_to_80_bytes_uses_pushdata1() {
        let s = op_return_script(&[7u8; 80]);
        assert_eq!(&s[..3], [0x6a, 0x4c, 80]);
        assert_eq!(s.len(), 83);
        assert_eq!(op_return_script(&[7u8; 75])[1], 75);
    }

    #[test]
    fn build_matches_the_vector_anchor() {
        // basic.dat snapshot 1.
        let root = "b6890648856e6cf4adefb5d9e02d46ff8d1dbf0a7610596d2f15f0bc8697f967";
        let a = build(root, 1_700_000_000_000, b"epoch=0");
        assert_eq!(
            &*a.hash,
            b"e3f908dd3cbda06946093a45ee507d3c8b629cb9fda889e5b994b86bec0fd987"
        );
    }
}
