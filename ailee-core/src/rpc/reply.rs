//! Validation of every value the node returns, before it is used or stored.
//!
//! The node is trusted for what Bitcoin says, not for its syntax: a reply
//! that is not the shape a healthy node gives is refused here, in one place,
//! rather than written into the reorg database where the node itself could
//! no longer read it (a `|` in a txid breaks the record's encoding; an empty
//! one looks never broadcast; upper-case hex compares unequal to the stored
//! lower-case hash).
//!
//! Rules: block hashes and txids are exactly 64 hex digits and come back
//! lower-case; heights and confirmations are JSON integers in
//! `0..=MAX_HEIGHT`; arithmetic on them is checked by the callers. Errors
//! quote at most a short escaped excerpt of the offending value.

use serde_json::Value;

/// Highest block height accepted from a node (Bitcoin Core keeps heights in
/// a signed 32-bit integer).
pub const MAX_HEIGHT: u64 = i32::MAX as u64;

/// Why a value from the node was refused (the caller adds method and URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{}\"", super::transport::excerpt(s.as_bytes(), 80)),
        other => super::transport::excerpt(other.to_string().as_bytes(), 80),
    }
}

/// A 64-hex-digit hash or txid, lower-cased.
pub fn hex64(what: &str, v: &Value) -> Result<String, Invalid> {
    match v.as_str() {
        Some(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(s.to_ascii_lowercase()),
        _ => Err(Invalid(format!("{what} is not 64 hex digits: {}", show(v)))),
    }
}

/// A block hash (64 hex digits), lower-cased.
pub fn block_hash(v: &Value) -> Result<String, Invalid> {
    hex64("block hash", v)
}

/// A txid (64 hex digits), lower-cased.
pub fn txid(v: &Value) -> Result<String, Invalid> {
    hex64("txid", v)
}

/// A reply about `asked` must name it: `v` (the reply's `hash` or `txid`
/// field) is 64 hex digits equal to `asked`, case aside.
pub fn same_hash(what: &str, v: Option<&Value>, asked: &str) -> Result<(), Invalid> {
    let got = hex64(what, v.unwrap_or(&Value::Null))?;
    if got.eq_ignore_ascii_case(asked) {
        Ok(())
    } else {
        Err(Invalid(format!("asked about {what} {asked}, the reply is about {got}")))
    }
}

/// A block height: a JSON integer in `0..=MAX_HEIGHT`.
pub fn height(v: &Value) -> Result<u64, Invalid> {
    match v.as_u64() {
        Some(h) if h <= MAX_HEIGHT => Ok(h),
        _ => Err(Invalid(format!(
            "height is not an integer in 0..={MAX_HEIGHT}: {}",
            show(v)
        ))),
    }
}

/// A confirmation count. Bitcoin Core reports a conflicted wallet
/// transaction with a negative count: that is "not in the best chain", 0.
pub fn confirmations(v: &Value) -> Result<u64, Invalid> {
    match v.as_i64() {
        Some(c) if c < 0 => Ok(0),
        Some(c) if c as u64 <= MAX_HEIGHT + 1 => Ok(c as u64),
        _ => Err(Invalid(format!(
            "confirmations is not an integer in 0..={}: {}",
            MAX_HEIGHT + 1,
            show(v)
        ))),
    }
}

/// Hex text (even length, hex digits only), as for a raw transaction.
pub fn hex_bytes(what: &str, v: &Value) -> Result<Vec<u8>, Invalid> {
    let bad = || Invalid(format!("{what} is not hex: {}", show(v)));
    let s = v.as_str().ok_or_else(bad)?;
    if s.is_empty() || s.len() % 2 != 0 {
        return Err(bad());
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16);
            match (d(p[0]), d(p[1])) {
                (Some(a), Some(b)) => Ok((a * 16 + b) as u8),
                _ => Err(bad()),
            }
        })
        .collect()
}

/// A raw block (`getblock HASH 0`) from the JSON text of the reply's result
/// (`raw`, as the node sent it): a string of hex digits whose bytes are one
/// block that parses whole ([`crate::block::parse`]: no byte missing, none
/// after the last transaction, every count bounded by what is left) and whose
/// hash is `asked` — a node that returns another block, or damaged bytes,
/// answered wrong. Returns the block's bytes.
pub fn raw_block(raw: &str, asked: &str) -> Result<Vec<u8>, Invalid> {
    let bad = |why: &str| {
        Invalid(format!(
            "block {asked}: {why}: {}",
            super::transport::excerpt(raw.as_bytes(), 80)
        ))
    };
    // A healthy node's hex needs no escapes: the text between the quotes is it.
    let hex = match raw.trim().strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(h) if !h.contains('\\') => h,
        _ => return Err(bad("the reply is not a string of raw block hex")),
    };
    let bytes = crate::block::unhex(hex).ok_or_else(|| bad("the reply is not raw block hex"))?;
    let block = crate::block::parse(&bytes).map_err(|e| Invalid(format!("block {asked}: {e}")))?;
    let got = block.hash();
    if !got.eq_ignore_ascii_case(asked) {
        return Err(Invalid(format!(
            "asked for block {asked}, the node returned block {got}"
        )));
    }
    Ok(bytes)
}

fn decode_tx(v: &Value) -> Result<bitcoincore_rpc::bitcoin::Transaction, Invalid> {
    let bytes = hex_bytes("signed transaction", v)?;
    bitcoincore_rpc::bitcoin::consensus::deserialize(&bytes)
        .map_err(|e| Invalid(format!("signed transaction does not decode: {e}")))
}

/// The txid of a signed transaction given as hex (lower-case).
pub fn signed_txid(v: &Value) -> Result<String, Invalid> {
    Ok(decode_tx(v)?.compute_txid().to_string().to_ascii_lowercase())
}

/// A signed transaction from the wallet must decode and carry the anchor's
/// `OP_RETURN` (`0x6a` + push of `data`; nodes that put `OP_FALSE` first,
/// as Bitcoin SV does for data carriers, are accepted too).
pub fn signed_op_return_tx(v: &Value, data: &[u8]) -> Result<(), Invalid> {
    let tx = decode_tx(v)?;
    let want = crate::anchor::op_return_script(data);
    let found = tx.output.iter().any(|o| {
        let s = o.script_pubkey.as_bytes();
        s == want.as_slice() || (s.first() == Some(&0) && &s[1..] == want.as_slice())
    });
    if found {
        Ok(())
    } else {
        Err(Invalid(format!(
            "the signed transaction has no output carrying the anchor's OP_RETURN {}",
            crate::root::hex(&want)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn txids_must_be_64_hex_digits_and_come_back_lower_case() {
        let good = "AB".repeat(32);
        assert_eq!(txid(&json!(good)).unwrap(), "ab".repeat(32));
        for bad in [
            json!("a|b"),
            json!("ab\ncd"),
            json!(""),
            json!("0".repeat(63)),
            json!("0".repeat(65)),
            json!(format!("{}g", "0".repeat(63))),
            json!("x".repeat(10 << 20)),
            json!(null),
            json!(5),
        ] {
            let e = txid(&bad).unwrap_err();
            assert!(e.0.len() < 400, "bounded message: {} bytes", e.0.len());
        }
        assert!(txid(&json!("a|b")).unwrap_err().0.contains("a|b"));
        assert!(txid(&json!("ab\ncd")).unwrap_err().0.contains("ab\\ncd"));
    }

    #[test]
    fn heights_and_confirmations_are_range_checked() {
        assert_eq!(height(&json!(0)).unwrap(), 0);
        assert_eq!(height(&json!(MAX_HEIGHT)).unwrap(), MAX_HEIGHT);
        for bad in [
            json!(-1),
            json!(MAX_HEIGHT + 1),
            json!(u64::MAX),
            json!(1.5),
            json!("7"),
            json!(null),
        ] {
            assert!(height(&bad).is_err(), "{bad}");
        }
        assert_eq!(confirmations(&json!(-3)).unwrap(), 0);
        assert_eq!(confirmations(&json!(6)).unwrap(), 6);
        assert!(confirmations(&json!(u64::MAX)).is_err());
        assert!(confirmations(&json!("6")).is_err());
    }

    #[test]
    fn a_reply_about_another_object_is_refused() {
        let h = "ab".repeat(32);
        assert!(same_hash("txid", Some(&json!(h.to_ascii_uppercase())), &h).is_ok());
        assert!(same_hash("txid", Some(&json!("cd".repeat(32))), &h).is_err());
        assert!(same_hash("txid", None, &h).is_err());
    }

    #[test]
    fn raw_blocks_must_parse_whole_and_be_the_block_asked_for() {
        // Regtest block 1 of the SV test node (coinbase only), as in block.rs.
        let good = "0000002006226e46111a0b59caaf126043eb5bbf28c34f3a5e332a1fc7b2b73cf188910f634e8316d1e69c1570fd1d104b8641a34a7ab3a1d90e5fcd0ae737df98f2a3eec1d9026bffff7f20020000000102000000010000000000000000000000000000000000000000000000000000000000000000ffffffff03510101ffffffff0100f2052a01000000232103462d433ff06d0065cedf95fc916777cfe41720bd2b5be2916274661a26512fb4ac00000000";
        let hash = crate::block::parse(&crate::block::unhex(good).unwrap()).unwrap().hash();
        let q = |h: &str| format!("\"{h}\"");
        assert_eq!(raw_block(&q(good), &hash).unwrap().len(), good.len() / 2);
        assert!(raw_block(&q(&good.to_ascii_uppercase()), &hash.to_ascii_uppercase()).is_ok());
        let count = format!("{}ffffffffffffffffff{}", &good[..160], &good[162..]);
        for (bad, why) in [
            (q(&good[..good.len() - 2]), "ends early"),
            (q(&format!("{good}00")), "after the last transaction"),
            (q(""), "ends early"),
            (q(&count), "count 18446744073709551615"),
            (q(&good[..80]), "ends early"),
            (q("zz"), "not raw block hex"),
            ("null".to_string(), "not a string"),
            ("5".to_string(), "not a string"),
            (q("00\\u0030"), "not a string"),
        ] {
            let e = raw_block(&bad, &hash).unwrap_err().0;
            assert!(e.contains(why) && e.contains(&hash), "{e}");
        }
        let other = "ab".repeat(32);
        let e = raw_block(&q(good), &other).unwrap_err().0;
        assert_eq!(e, format!("asked for block {other}, the node returned block {hash}"));
    }

    #[test]
    fn hex_bytes_decodes_or_refuses() {
        assert_eq!(hex_bytes("tx", &json!("00fF")).unwrap(), vec![0, 255]);
        for bad in [json!(""), json!("0"), json!("zz"), json!(1)] {
            assert!(hex_bytes("tx", &bad).is_err());
        }
    }
}
