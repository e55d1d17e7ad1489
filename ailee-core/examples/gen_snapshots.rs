//! Generates a large, healthy snapshot file for benchmarks (scripts/bench.sh):
//! `gen_snapshots OUT SNAPSHOTS ENTRIES [TORN]` writes SNAPSHOTS blocks of about
//! ENTRIES balance lines plus the other sections, each with a correct root and
//! anchor, peg-outs naming the previous snapshot's anchor, as the node does.
//! With TORN=1 a torn block is appended at the end.

use ailee_core::anchor;
use ailee_core::format::write_snapshot;
use ailee_core::model::*;
use ailee_core::root::state_root;
use std::borrow::Cow;
use std::io::Write;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn id(&mut self, prefix: &str) -> Cow<'static, [u8]> {
        Cow::Owned(format!("{prefix}{:016x}", self.next()).into_bytes())
    }
    fn hex(&mut self) -> Cow<'static, [u8]> {
        Cow::Owned(
            format!(
                "{:016x}{:016x}{:016x}{:016x}",
                self.next(),
                self.next(),
                self.next(),
                self.next()
            )
            .into_bytes(),
        )
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: gen_snapshots OUT SNAPSHOTS ENTRIES [TORN]".into());
    }
    let (snapshots, entries): (usize, usize) = (args[2].parse()?, args[3].parse()?);
    let torn = args.get(4).is_some_and(|t| t == "1");
    let mut out = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(&args[1])?);
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut prev_anchor: Option<Vec<u8>> = None;
    let mut buf = Vec::new();
    for i in 0..snapshots {
        let ts = 1_700_000_000_000 + i as u64 * 60_000;
        let mut s = L2State::default();
        for _ in 0..entries {
            s.balances.push(Balance {
                peer_id: rng.id("peer"),
                balance: rng.next() >> 20,
            });
        }
        for _ in 0..entries / 4 {
            s.escrows.push(Escrow {
                task_id: rng.id("task"),
                client_peer_id: rng.id("peer"),
                amount: rng.next() >> 24,
                locked: rng.next() & 1 == 1,
                created_at: ts - (rng.next() % 1_000_000),
            });
        }
        for _ in 0..entries / 8 {
            s.pegins.push(PegIn {
                peg_id: rng.id("pegin"),
                btc_tx_id: rng.hex(),
                vout: (rng.next() % 4) as u32,
                btc_amount: rng.next() >> 30,
                btc_source: rng.id("bc1q"),
                ailee_dest: rng.id("peer"),
                status: (rng.next() % 4) as i32,
                confirmations: rng.next() % 100,
                initiated_time: ts - 5000,
                completed_time: ts,
            });
        }
        if let Some(a) = &prev_anchor {
            for _ in 0..entries / 8 {
                s.pegouts.push(PegOut {
                    peg_id: rng.id("pegout"),
                    ailee_source: rng.id("peer"),
                    btc_dest: rng.id("bc1q"),
                    ailee_burn_amount: rng.next() >> 30,
                    btc_release_amount: rng.next() >> 31,
                    status: (rng.next() % 4) as i32,
                    anchor_commitment_hash: Cow::Owned(a.clone()),
                    initiated_time: ts - 5000,
                    completed_time: ts,
                });
            }
        }
        for _ in 0..entries / 4 {
            s.tasks.push(Task {
                task_id: rng.id("task"),
                task_type: (rng.next() % 5) as i32,
                priority: (rng.next() % 3) as i32,
                submitter_id: rng.id("peer"),
                submitted_at_ms: ts - 1000,
                payload_hash: rng.hex(),
                anchor_commitment_hash: Cow::Borrowed(b""),
            });
        }
        let root = state_root(&s).map_err(|d| format!("duplicate generated key {:?}", d.key))?;
        let a = anchor::build(&root, ts, format!("epoch={i}").as_bytes());
        prev_anchor = Some(a.hash.to_vec());
        buf.clear();
        write_snapshot(
            &Snapshot {
                timestamp_ms: ts,
                state: s,
                anchor: Some(a),
            },
            &mut buf,
        )?;
        out.write_all(&buf)?;
    }
    if torn {
        out.write_all(&buf[..buf.len() / 2])?;
    }
    out.flush()?;
    Ok(())
}
