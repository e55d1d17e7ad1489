//! The snapshot reader on arbitrary bytes: block scanning (forward, in small
//! chunks, and from the end), the strict grammar, verification (whose one-pass
//! path must agree with the strict parser), and the
//! write-back of anything that parses. Nothing may panic; what parses must
//! write back to the same bytes modulo CRLF and blank lines, and parse again
//! to the same snapshot.
#![no_main]
use ailee_core::format::{parse_block, write_snapshot};
use ailee_core::scan::{Backward, Scanner};
use ailee_core::verify::check_block;
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let mut sc = Scanner::with_chunk_size(data, 64);
    let mut fwd = Vec::new();
    while let Some(c) = sc.next_chunk().expect("in-memory read") {
        for b in &c.blocks {
            fwd.push(c.data[b.start..b.end].to_vec());
        }
    }
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
    // From the end: the same complete blocks.
    let mut f = tempfile_in_memory(data);
    let file = f.as_file_mut();
    let mut bw = Backward::new(file).expect("open");
    let mut back = Vec::new();
    while let Some(b) = bw.next_block().expect("read") {
        back.push(b.bytes);
    }
    back.reverse();
    assert_eq!(back, fwd);
});

struct Tmp(std::fs::File);
impl Tmp {
    fn as_file_mut(&mut self) -> &mut std::fs::File {
        &mut self.0
    }
}

fn tempfile_in_memory(data: &[u8]) -> Tmp {
    let path = std::env::temp_dir().join(format!("ailee-fuzz-{}", std::process::id()));
    let mut f = std::fs::File::create(&path).expect("create");
    f.write_all(data).expect("write");
    let f = std::fs::File::open(&path).expect("open");
    let _ = std::fs::remove_file(&path);
    Tmp(f)
}
