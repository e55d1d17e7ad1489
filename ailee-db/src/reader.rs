//! The reorg database reader's server: answers the questions of
//! [`ailee_records::reader`] from an open database, one JSON line each, as
//! soon as each is read. `ailee_init_reorg_db --get-anchor -` runs it on its
//! stdin and stdout for `ailee_l2_verify --reorg-db` (which does not link
//! RocksDB); the client is `ailee_cli::dbquery::RemoteDb`.

use crate::reorgdb::ReorgDb;
use ailee_core::{Error, Result};
use ailee_records::reader::{Answer, Question, QUESTION_CAP};
use std::io::{BufRead, Read, Write};

/// The answer to one question (a record that does not decode is an error
/// answer, exit code 2; the reader goes on).
pub fn answer(db: &ReorgDb, line: &str) -> Answer {
    let failed = |e: Error| Answer::error(line, e.to_string(), e.exit_status().code());
    match Question::parse(line) {
        Question::Block(height) => match db.block_hash(height) {
            Ok(Some(b)) => Answer::block(line, b),
            Ok(None) => Answer::absent(line),
            Err(e) => failed(e),
        },
        Question::Anchor(hash) => match db.anchor(hash) {
            Ok(Some(a)) => Answer::record(&a),
            Ok(None) => Answer::absent(line),
            Err(e) => failed(e),
        },
    }
}

/// Answers every question line of `input` on `output`, each flushed at once
/// (a caller may wait for each answer before asking the next), until the end
/// of `input`. A line longer than [`QUESTION_CAP`] is a usage error.
pub fn serve(db: &ReorgDb, mut input: impl BufRead, mut output: impl Write) -> Result<()> {
    let io = |e| Error::io("standard input/output", e);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Lines are capped like any other input: a hash is 64 characters.
        let n = (&mut input)
            .take(QUESTION_CAP as u64 + 2)
            .read_until(b'\n', &mut line)
            .map_err(io)?;
        if n == 0 {
            return Ok(());
        }
        let raw = line.strip_suffix(b"\n").unwrap_or(&line);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.len() > QUESTION_CAP {
            return Err(Error::Usage(
                "--get-anchor -: an input line is longer than 64 KiB".into(),
            ));
        }
        let a = answer(db, &String::from_utf8_lossy(raw));
        let text = serde_json::to_string(&a).map_err(|e| Error::Usage(e.to_string()))?;
        writeln!(output, "{text}").and_then(|_| output.flush()).map_err(io)?;
    }
}
