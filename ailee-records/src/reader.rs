//! The protocol of the reorg database reader, both ends.
//!
//! `ailee_l2_verify --reorg-db P` does not link RocksDB: it starts
//! `ailee_init_reorg_db --path=P --get-anchor - --json` and asks it
//! questions, one per line on its stdin; the reader answers each with one
//! JSON line ([`Answer`]) as soon as it is read, in order. The server is
//! `ailee_db::reader::serve`, the client `ailee_cli::dbquery::RemoteDb`.
//!
//! A question ([`Question`]) is an anchor hash, or `block:<height>` for the
//! stored best-chain block hash at a height. Every answer names its
//! question in `anchor_hash`, so an answer can never be taken for another's.
//! An answer is a record (`found: true` and the record's fields), an absent
//! one (`found: false`), a block hash (`found: true, block_hash`) or an
//! error (`error`, `exit_code`: 2 is a record that does not decode). A
//! reader that cannot open the database writes one error document without
//! `anchor_hash` and exits.

use crate::{AnchorRecord, AnchorStatus};
use serde::{Deserialize, Serialize};

/// The prefix of a question about a stored block hash: `block:<height>`
/// (no anchor hash the node writes looks like that: anchors are hex).
pub const BLOCK_QUESTION: &str = "block:";

/// Longest question line the reader reads: a hash is 64 characters.
pub const QUESTION_CAP: usize = 64 * 1024;

/// What a line asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question<'a> {
    /// The record stored under this anchor hash, exactly as given.
    Anchor(&'a str),
    /// The stored best-chain block hash at this height.
    Block(u64),
}

impl<'a> Question<'a> {
    /// Reads a question line (without its line end).
    pub fn parse(line: &'a str) -> Question<'a> {
        match line.strip_prefix(BLOCK_QUESTION).and_then(|h| h.parse::<u64>().ok()) {
            Some(height) => Question::Block(height),
            None => Question::Anchor(line),
        }
    }

    /// The question as a line (without its line end).
    pub fn line(&self) -> String {
        match self {
            Question::Anchor(h) => h.to_string(),
            Question::Block(height) => format!("{BLOCK_QUESTION}{height}"),
        }
    }
}

/// One answer line as written on the pipe. The fields are those of every
/// kind of answer, each present only where that kind has it; they are in
/// alphabetical order, as the reader has always written them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The question, as asked. Absent only in the reader's open error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitcoin_height: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitcoin_tx_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmations: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `error`: the exit status it stands for (2: integrity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l2_state_root: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_count: Option<u64>,
    /// The status name (`PENDING`, `CONFIRMED`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// What an answer says, read strictly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Record(AnchorRecord),
    Block(String),
    Absent,
    /// The reader could not answer: its message and exit code.
    Error {
        message: String,
        exit_code: Option<u64>,
    },
}

/// An answer that lacks a field its kind needs (the field's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub &'static str);

impl Answer {
    /// The answer for a record.
    pub fn record(a: &AnchorRecord) -> Answer {
        Answer {
            anchor_hash: Some(a.anchor_hash.clone()),
            found: Some(true),
            bitcoin_tx_id: Some(a.bitcoin_tx_id.clone()),
            bitcoin_height: Some(a.bitcoin_height),
            confirmations: Some(a.confirmations),
            broadcast_time: Some(a.broadcast_time),
            retry_count: Some(a.retry_count),
            status: Some(a.status.name().to_string()),
            l2_state_root: Some(a.l2_state_root.clone()),
            ..Answer::default()
        }
    }

    /// Nothing is stored for `question`.
    pub fn absent(question: &str) -> Answer {
        Answer {
            anchor_hash: Some(question.to_string()),
            found: Some(false),
            ..Answer::default()
        }
    }

    /// The stored block hash asked for by `question`.
    pub fn block(question: &str, hash: String) -> Answer {
        Answer {
            anchor_hash: Some(question.to_string()),
            found: Some(true),
            block_hash: Some(hash),
            ..Answer::default()
        }
    }

    /// The reader could not answer `question`.
    pub fn error(question: &str, message: String, exit_code: u8) -> Answer {
        Answer {
            anchor_hash: Some(question.to_string()),
            error: Some(message),
            exit_code: Some(u64::from(exit_code)),
            ..Answer::default()
        }
    }

    /// The error this answer (or document) reports, if any.
    pub fn error_reply(&self) -> Option<Reply> {
        let message = self.error.clone()?;
        Some(Reply::Error {
            message,
            exit_code: self.exit_code,
        })
    }

    /// The answer to an anchor question: a record, absent, or an error.
    pub fn anchor_reply(&self) -> Result<Reply, Missing> {
        if let Some(e) = self.error_reply() {
            return Ok(e);
        }
        if !self.found.ok_or(Missing("found"))? {
            return Ok(Reply::Absent);
        }
        let name = self.status.as_deref().ok_or(Missing("status"))?;
        let status = AnchorStatus::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or(Missing("status"))?;
        let text = |v: &Option<String>, key| v.clone().ok_or(Missing(key));
        let number = |v: Option<u64>, key| v.ok_or(Missing(key));
        Ok(Reply::Record(AnchorRecord {
            anchor_hash: text(&self.anchor_hash, "anchor_hash")?,
            bitcoin_tx_id: text(&self.bitcoin_tx_id, "bitcoin_tx_id")?,
            bitcoin_height: number(self.bitcoin_height, "bitcoin_height")?,
            confirmations: number(self.confirmations, "confirmations")?,
            broadcast_time: number(self.broadcast_time, "broadcast_time")?,
            retry_count: number(self.retry_count, "retry_count")?,
            status,
            l2_state_root: text(&self.l2_state_root, "l2_state_root")?,
        }))
    }

    /// The answer to a block question: a hash, absent, or an error.
    pub fn block_reply(&self) -> Result<Reply, Missing> {
        if let Some(e) = self.error_reply() {
            return Ok(e);
        }
        if !self.found.ok_or(Missing("found"))? {
            return Ok(Reply::Absent);
        }
        Ok(Reply::Block(self.block_hash.clone().ok_or(Missing("block_hash"))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::rec;

    fn round_trip(a: &Answer) -> Answer {
        serde_json::from_str(&serde_json::to_string(a).unwrap()).unwrap()
    }

    #[test]
    fn every_answer_reads_back_as_written() {
        let r = rec();
        assert_eq!(round_trip(&Answer::record(&r)).anchor_reply(), Ok(Reply::Record(r)));
        assert_eq!(round_trip(&Answer::absent("x")).anchor_reply(), Ok(Reply::Absent));
        let b = Answer::block("block:7", "00".repeat(32));
        assert_eq!(round_trip(&b).block_reply(), Ok(Reply::Block("00".repeat(32))));
        let e = round_trip(&Answer::error("x", "damaged".into(), 2));
        assert_eq!(
            e.anchor_reply(),
            Ok(Reply::Error {
                message: "damaged".into(),
                exit_code: Some(2)
            })
        );
    }

    #[test]
    fn the_wire_text_is_the_readers_of_old() {
        assert_eq!(
            serde_json::to_string(&Answer::absent("f")).unwrap(),
            r#"{"anchor_hash":"f","found":false}"#
        );
        let old = serde_json::json!({"anchor_hash": "ab".repeat(32), "found": true, "bitcoin_tx_id": "cd".repeat(32),
            "bitcoin_height": 812, "confirmations": 6, "broadcast_time": 1_700_000_000_000u64, "retry_count": 1,
            "status": "CONFIRMED", "l2_state_root": "ef".repeat(32)});
        assert_eq!(serde_json::to_string(&Answer::record(&rec())).unwrap(), old.to_string());
    }

    #[test]
    fn an_answer_missing_a_field_names_it() {
        let mut a = Answer::record(&rec());
        a.status = Some("MAYBE".into());
        assert_eq!(a.anchor_reply(), Err(Missing("status")));
        let mut a = Answer::record(&rec());
        a.confirmations = None;
        assert_eq!(a.anchor_reply(), Err(Missing("confirmations")));
        assert_eq!(Answer::default().anchor_reply(), Err(Missing("found")));
        // The reader's open error: a document without a question.
        let doc: Answer = serde_json::from_str(r#"{"error": "P: damaged", "exit_code": 2, "healthy": false}"#).unwrap();
        assert_eq!(doc.anchor_hash, None);
        assert!(matches!(
            doc.error_reply(),
            Some(Reply::Error { exit_code: Some(2), .. })
        ));
    }

    #[test]
    fn questions_read_back_as_written() {
        assert_eq!(Question::parse("block:12"), Question::Block(12));
        assert_eq!(Question::parse("block:x"), Question::Anchor("block:x"));
        assert_eq!(Question::parse(&"a".repeat(64)), Question::Anchor(&"a".repeat(64)));
        assert_eq!(Question::Block(12).line(), "block:12");
    }
}
