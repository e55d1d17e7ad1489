//! The JSON form of the L2 state (SPEC §3), read strictly and written from a
//! snapshot: `--l2-state-file` of `ailee_create_anchor`, `--print-state` of
//! `ailee_l2_verify`. Converting a snapshot to JSON and back gives the same
//! state, hence the same root.
//!
//! Reading: unknown fields, wrong types, values out of range, duplicate
//! fields and strings with line breaks are errors naming the JSON path.

use crate::model::*;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StateJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snapshot_timestamp_ms: Option<u64>,
    #[serde(default)]
    ledger: LedgerJson,
    #[serde(default)]
    bridge: BridgeJson,
    #[serde(default)]
    orchestration: OrchestrationJson,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerJson {
    #[serde(default)]
    balances: Vec<BalanceJson>,
    #[serde(default)]
    escrows: Vec<EscrowJson>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BridgeJson {
    #[serde(default)]
    pegins: Vec<PegInJson>,
    #[serde(default)]
    pegouts: Vec<PegOutJson>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrchestrationJson {
    #[serde(default)]
    tasks: Vec<TaskJson>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BalanceJson {
    peer_id: String,
    balance: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EscrowJson {
    task_id: String,
    client_peer_id: String,
    amount: u64,
    locked: bool,
    created_at: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PegInJson {
    peg_id: String,
    btc_tx_id: String,
    vout: u32,
    btc_amount: u64,
    btc_source: String,
    ailee_dest: String,
    confirmations: u64,
    initiated_time: u64,
    completed_time: u64,
    status: i32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PegOutJson {
    peg_id: String,
    ailee_source: String,
    btc_dest: String,
    ailee_burn_amount: u64,
    btc_release_amount: u64,
    initiated_time: u64,
    completed_time: u64,
    status: i32,
    anchor_commitment_hash: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TaskJson {
    task_id: String,
    task_type: i32,
    priority: i32,
    submitter_id: String,
    submitted_at_ms: u64,
    payload_hash: String,
    anchor_commitment_hash: String,
}

/// A state read from JSON, with its snapshot timestamp if the file gave one.
#[derive(Debug, Clone)]
pub struct JsonState {
    pub timestamp_ms: Option<u64>,
    pub state: L2State<'static>,
}

fn s(v: String) -> Bytes<'static> {
    Cow::Owned(v.into_bytes())
}

fn check_line_breaks(path: &str, v: &str) -> Result<()> {
    if v.contains(['\n', '\r']) {
        return Err(Error::Usage(format!(
            "{path}: the string contains a line break, which a snapshot file cannot hold"
        )));
    }
    Ok(())
}

/// Parses the JSON state of SPEC §3; errors name the JSON path.
pub fn from_json(text: &str) -> Result<JsonState> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let j: StateJson = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        Error::Usage(format!("invalid state JSON: {at}{}", e.inner()))
    })?;
    macro_rules! strings {
        ($list:expr, $base:literal, $($f:ident => $name:literal),+) => {
            for (i, e) in $list.iter().enumerate() {
                $(check_line_breaks(&format!(concat!($base, "[{}].", $name), i), &e.$f)?;)+
            }
        };
    }
    strings!(j.ledger.balances, "ledger.balances", peer_id => "peerId");
    strings!(j.ledger.escrows, "ledger.escrows", task_id => "taskId", client_peer_id => "clientPeerId");
    strings!(j.bridge.pegins, "bridge.pegins", peg_id => "pegId", btc_tx_id => "btcTxId", btc_source => "btcSource", ailee_dest => "aileeDest");
    strings!(j.bridge.pegouts, "bridge.pegouts", peg_id => "pegId", ailee_source => "aileeSource", btc_dest => "btcDest", anchor_commitment_hash => "anchorCommitmentHash");
    strings!(j.orchestration.tasks, "orchestration.tasks", task_id => "taskId", submitter_id => "submitterId", payload_hash => "payloadHash", anchor_commitment_hash => "anchorCommitmentHash");
    let state = L2State {
        balances: j
            .ledger
            .balances
            .into_iter()
            .map(|b| Balance {
                peer_id: s(b.peer_id),
                balance: b.balance,
            })
            .collect(),
        escrows: j
            .ledger
            .escrows
            .into_iter()
            .map(|e| Escrow {
                task_id: s(e.task_id),
                client_peer_id: s(e.client_peer_id),
                amount: e.amount,
                locked: e.locked,
                created_at: e.created_at,
            })
            .collect(),
        pegins: j
            .bridge
            .pegins
            .into_iter()
            .map(|p| PegIn {
                peg_id: s(p.peg_id),
                btc_tx_id: s(p.btc_tx_id),
                vout: p.vout,
                btc_amount: p.btc_amount,
                btc_source: s(p.btc_source),
                ailee_dest: s(p.ailee_dest),
                status: p.status,
                confirmations: p.confirmations,
                initiated_time: p.initiated_time,
                completed_time: p.completed_time,
            })
            .collect(),
        pegouts: j
            .bridge
            .pegouts
            .into_iter()
            .map(|p| PegOut {
                peg_id: s(p.peg_id),
                ailee_source: s(p.ailee_source),
                btc_dest: s(p.btc_dest),
                ailee_burn_amount: p.ailee_burn_amount,
                btc_release_amount: p.btc_release_amount,
                status: p.status,
                anchor_commitment_hash: s(p.anchor_commitment_hash),
                initiated_time: p.initiated_time,
                completed_time: p.completed_time,
            })
            .collect(),
        tasks: j
            .orchestration
            .tasks
            .into_iter()
            .map(|t| Task {
                task_id: s(t.task_id),
                task_type: t.task_type,
                priority: t.priority,
                submitter_id: s(t.submitter_id),
                submitted_at_ms: t.submitted_at_ms,
                payload_hash: s(t.payload_hash),
                anchor_commitment_hash: s(t.anchor_commitment_hash),
            })
            .collect(),
    };
    if let Err(d) = crate::root::key_order(&state) {
        return Err(Error::Usage(format!(
            "invalid state JSON: {} entries {} and {} share the key {:?}",
            d.section.name(),
            d.first,
            d.second,
            crate::format::show(&d.key)
        )));
    }
    Ok(JsonState {
        timestamp_ms: j.snapshot_timestamp_ms,
        state,
    })
}

fn u(path: &str, b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| Error::Integrity(format!("{path}: not UTF-8, cannot be written as JSON")))
}

/// The JSON of SPEC §3 for a snapshot's state (entries in file order).
pub fn to_json(snap: &Snapshot<'_>) -> Result<serde_json::Value> {
    let st = &snap.state;
    let j = StateJson {
        snapshot_timestamp_ms: Some(snap.timestamp_ms),
        ledger: LedgerJson {
            balances: st
                .balances
                .iter()
                .map(|b| {
                    Ok(BalanceJson {
                        peer_id: u("peerId", &b.peer_id)?,
                        balance: b.balance,
                    })
                })
                .collect::<Result<_>>()?,
            escrows: st
                .escrows
                .iter()
                .map(|e| {
                    Ok(EscrowJson {
                        task_id: u("taskId", &e.task_id)?,
                        client_peer_id: u("clientPeerId", &e.client_peer_id)?,
                        amount: e.amount,
                        locked: e.locked,
                        created_at: e.created_at,
                    })
                })
                .collect::<Result<_>>()?,
        },
        bridge: BridgeJson {
            pegins: st
                .pegins
                .iter()
                .map(|p| {
                    Ok(PegInJson {
                        peg_id: u("pegId", &p.peg_id)?,
                        btc_tx_id: u("btcTxId", &p.btc_tx_id)?,
                        vout: p.vout,
                        btc_amount: p.btc_amount,
                        btc_source: u("btcSource", &p.btc_source)?,
                        ailee_dest: u("aileeDest", &p.ailee_dest)?,
                        confirmations: p.confirmations,
                        initiated_time: p.initiated_time,
                        completed_time: p.completed_time,
                        status: p.status,
                    })
                })
                .collect::<Result<_>>()?,
            pegouts: st
                .pegouts
                .iter()
                .map(|p| {
                    Ok(PegOutJson {
                        peg_id: u("pegId", &p.peg_id)?,
                        ailee_source: u("aileeSource", &p.ailee_source)?,
                        btc_dest: u("btcDest", &p.btc_dest)?,
                        ailee_burn_amount: p.ailee_burn_amount,
                        btc_release_amount: p.btc_release_amount,
                        initiated_time: p.initiated_time,
                        completed_time: p.completed_time,
                        status: p.status,
                        anchor_commitment_hash: u("anchorCommitmentHash", &p.anchor_commitment_hash)?,
                    })
                })
                .collect::<Result<_>>()?,
        },
        orchestration: OrchestrationJson {
            tasks: st
                .tasks
                .iter()
                .map(|t| {
                    Ok(TaskJson {
                        task_id: u("taskId", &t.task_id)?,
                        task_type: t.task_type,
                        priority: t.priority,
                        submitter_id: u("submitterId", &t.submitter_id)?,
                        submitted_at_ms: t.submitted_at_ms,
                        payload_hash: u("payloadHash", &t.payload_hash)?,
                        anchor_commitment_hash: u("anchorCommitmentHash", &t.anchor_commitment_hash)?,
                    })
                })
                .collect::<Result<_>>()?,
        },
    };
    serde_json::to_value(j).map_err(|e| Error::Integrity(format!("cannot render state as JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_example_parses_and_absent_sections_are_empty() {
        let j = from_json(
            r#"{"snapshotTimestampMs": 1700000000000, "ledger": {"balances": [{"peerId": "p1", "balance": 5}]}}"#,
        )
        .unwrap();
        assert_eq!(j.timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(j.state.balances.len(), 1);
        assert!(j.state.tasks.is_empty());
        assert!(from_json("{}").unwrap().state.balances.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        for (text, needle) in [
            (
                r#"{"ledger": {"balances": [{"peerId": "p", "balance": -1}]}}"#,
                "ledger.balances[0].balance",
            ),
            (
                r#"{"ledger": {"balances": [{"peerId": "p", "balance": 18446744073709551616}]}}"#,
                "ledger.balances[0].balance",
            ),
            (
                r#"{"ledger": {"balances": [{"peerId": "p", "balance": 1.5}]}}"#,
                "ledger.balances[0].balance",
            ),
            (
                r#"{"ledger": {"balances": [{"peerId": "p", "balance": 1, "x": 2}]}}"#,
                "unknown field `x`",
            ),
            (
                r#"{"ledger": {"balances": [{"peerId": 5, "balance": 1}]}}"#,
                "ledger.balances[0].peerId",
            ),
            (
                r#"{"ledger": {"balances": [{"balance": 1}]}}"#,
                "missing field `peerId`",
            ),
            (
                r#"{"ledger": {"balances": [{"peerId": "a\nb", "balance": 1}]}}"#,
                "ledger.balances[0].peerId: the string contains a line break",
            ),
            (
                r#"{"bridge": {"pegins": [{"pegId": "", "btcTxId": "", "vout": 4294967296, "btcAmount": 0, "btcSource": "", "aileeDest": "", "confirmations": 0, "initiatedTime": 0, "completedTime": 0, "status": 0}]}}"#,
                "bridge.pegins[0].vout",
            ),
            (
                r#"{"ledger": {"balances": [{"peerId": "p", "balance": 1}, {"peerId": "p", "balance": 2}]}}"#,
                "share the key",
            ),
            (
                r#"{"snapshotTimestampMs": 1, "snapshotTimestampMs": 2}"#,
                "duplicate field",
            ),
            ("{", "EOF"),
        ] {
            let e = from_json(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
