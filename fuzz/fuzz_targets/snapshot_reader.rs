//! The snapshot reader on arbitrary bytes: block scanning (forward, in small
//! chunks, and from the end), the strict grammar, verification (whose one-pass
//! path must agree with the strict parser), and the
//! write-back of anything that parses. Nothing may panic; what parses must
//! write back to the same bytes modulo CRLF and blank lines, and parse again
//! to the same snapshot.
#![no_main]
use ailee_core::format::{parse_block, write_snapshot};
use ailee_core::snapfile::SnapshotFile;
use ailee_core::verify::check_block;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("ailee-fuzz-{}", std::process::id()));
    std::fs::write(&path, data).expect("write");
    let sf = SnapshotFile::open(&path).expect("open").with_read_sizes(64, 64, 64, 64);
    let _ = std::fs::remove_file(&path);
    let fwd: Vec<Vec<u8>> = sf.blocks().map(|b| b.expect("read").bytes).collect();
    let mut buf = Vec::new();
    for b in &fwd {
        let _ = check_block(b, &mut buf);
        // The one-pass path of `--all` agrees with the strict parser.
        let strict = ailee_core::format::strict_check(b, &mut Vec::new());
        assert_eq!(ailee_core::format::check_parse(b, &mut buf), strict);
        if let Ok(p) = parse_block(b) {
            let mut out = Vec::new();
            write_snapshot(&p.snapshot, &mut out).expect("parsed strings have no line breaks");
            let again = parse_block(&out).expect("written block parses");
            assert_eq!(again.snapshot, p.snapshot);
        }
    }
    // From the end, in windows of 64 bytes: the same complete blocks.
    let mut back: Vec<Vec<u8>> = sf.newest_first(None).expect("open").map(|b| b.expect("read").bytes).collect();
    back.reverse();
    assert_eq!(back, fwd);
});
