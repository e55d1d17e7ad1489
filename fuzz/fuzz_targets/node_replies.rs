//! What the node sends, on arbitrary bytes: the raw block parser
//! (`getblock HASH 0`, ailee-core/src/block.rs) and the validators of RPC
//! reply values (ailee-core/src/rpc/reply.rs). Nothing may panic; a block
//! that parses covers the input exactly (one byte more or less is refused)
//! and its hash, time and txids are computable; a validated value has the
//! shape the validator promises.
#![no_main]
use ailee_core::block;
use ailee_core::rpc::reply;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    raw_block(data);
    // The same bytes as the hex text a node returns for a raw block.
    if let Ok(text) = std::str::from_utf8(data) {
        let t = text.trim();
        if let Some(raw) = block::unhex(t) {
            raw_block(&raw);
        }
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            values(&v, 0);
        }
    }
});

fn raw_block(data: &[u8]) {
    let Ok(b) = block::parse(data) else { return };
    assert_eq!(b.header.len(), 80);
    assert_eq!(b.hash().len(), 64);
    let _ = b.time();
    for tx in &b.txs {
        assert_eq!(tx.txid().len(), 64);
        for s in &tx.output_scripts {
            assert!(s.len() <= data.len());
        }
    }
    // Trailing bytes and a missing last byte are errors.
    let mut more = data.to_vec();
    more.push(0);
    assert!(block::parse(&more).is_err(), "a trailing byte was accepted");
    assert!(
        block::parse(&data[..data.len() - 1]).is_err(),
        "a truncated block was accepted"
    );
}

/// Every validator on the value and, a few levels down, on its members (a
/// reply's fields are validated one by one).
fn values(v: &Value, depth: usize) {
    validators(v);
    if depth >= 3 {
        return;
    }
    match v {
        Value::Array(a) => a.iter().take(64).for_each(|m| values(m, depth + 1)),
        Value::Object(o) => o.values().take(64).for_each(|m| values(m, depth + 1)),
        _ => {}
    }
}

fn validators(v: &Value) {
    if let Ok(h) = reply::hex64("txid", v) {
        assert!(h.len() == 64 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        assert!(reply::same_hash("txid", Some(v), &h).is_ok());
        assert!(reply::same_hash("txid", Some(v), &h.to_ascii_uppercase()).is_ok());
    }
    assert_eq!(reply::block_hash(v).is_ok(), reply::txid(v).is_ok());
    let _ = reply::same_hash("hash", Some(v), &"0".repeat(64));
    if let Ok(h) = reply::height(v) {
        assert!(h <= reply::MAX_HEIGHT);
    }
    if let Ok(c) = reply::confirmations(v) {
        assert!(c <= reply::MAX_HEIGHT + 1);
    }
    if let Ok(b) = reply::hex_bytes("raw", v) {
        let s = v.as_str().expect("hex is a string");
        assert_eq!(b.len() * 2, s.len());
        raw_block(&b);
    }
    if let Ok(t) = reply::signed_txid(v) {
        assert_eq!(t.len(), 64);
    }
    let _ = reply::signed_op_return_tx(v, b"ailee-anchor-seed:1700000000000:meta");
}
