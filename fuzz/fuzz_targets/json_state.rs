//! The JSON state reader (SPEC §3) on arbitrary bytes: errors, never panics;
//! what it accepts has a root and writes as a snapshot that parses back.
#![no_main]
use ailee_core::format::{parse_block, write_snapshot};
use ailee_core::model::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(j) = ailee_core::state_json::from_json(text) else {
        return;
    };
    let root = ailee_core::root::state_root(&j.state).expect("accepted state has unique keys");
    let snap = Snapshot {
        timestamp_ms: j.timestamp_ms.unwrap_or(0),
        state: j.state,
        anchor: None,
    };
    let mut out = Vec::new();
    write_snapshot(&snap, &mut out).expect("accepted strings have no line breaks");
    let p = parse_block(&out).expect("written block parses");
    assert_eq!(
        ailee_core::root::state_root(&p.snapshot.state).expect("same keys"),
        root
    );
});
