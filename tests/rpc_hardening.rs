//! The RPC transport and the validation of node replies, against raw TCP
//! fakes for what a real node never sends (redirects, malformed txids,
//! upper-case hashes) and the real regtest node for the normal path.
//!
//! - A redirect is never followed: the request, and with it the
//!   `Authorization` header, never reaches the location (a second listener
//!   checks what arrived there); the error names the location without its
//!   userinfo.
//! - A `sendrawtransaction` reply that is not the transaction's txid
//!   (`a|b`, `ab\ncd`, `""`, 10 MB, another txid) is exit 1 and nothing is
//!   stored; hashes and txids are stored lower-case.
//! - A `getblock` reply that fails validation (damaged bytes, another
//!   block's) is exit 1 for resync and verify alike, through a proxy in front
//!   of the real node; a resync that fails after writing says what it wrote.
//! - Batches of raw blocks are bounded by bytes, not by `--block-batch`: 64
//!   real blocks of 2.2 MB (a reply over the 256 MiB cap) in 128 MiB.
//! - `--wait` rides out HTTP 503 from a proxy in front of the node.

use ailee_recovery::{
    bin, check_db, cmd, db_in, exits, http, proxy_rewriting, resync_cmd, rpc_args, rpc_batch, rpc_error, rpc_result,
    rpc_unknown_method, serve, serve_stream, temp_db, verify_file, Expecting, Node, Reply,
};
use predicates::prelude::*;
use predicates::str::contains;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "secret-pw-42";

/// A listener standing for the host a redirect points at. It never answers;
/// after the tool has exited, [`Target::received`] reads whatever arrived.
struct Target {
    l: TcpListener,
}

impl Target {
    fn bind() -> Target {
        // Another loopback address, as in the report (127.0.0.2).
        let l = TcpListener::bind("127.0.0.2:0")
            .or_else(|_| TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        Target { l }
    }

    fn addr(&self) -> String {
        self.l.local_addr().unwrap().to_string()
    }

    /// Every request that reached the target (the tool has exited, so its
    /// writes are all in the socket buffers and its sockets are closed).
    fn received(&self) -> Vec<String> {
        self.l.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        loop {
            match self.l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut buf = Vec::new();
                    let _ = s.read_to_end(&mut buf);
                    out.push(String::from_utf8_lossy(&buf).into_owned());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return out,
                Err(e) => panic!("accept: {e}"),
            }
        }
    }
}

fn db_is_untouched(db: &Path) {
    check_db(db).expect(
        exits(0)
            .prints("Pending: 0\nConfirmed: 0")
            .prints("Blocks: none stored"),
    );
}

/// The RPC options for a fake at `port`, with a 5 s timeout.
fn fake_args(port: u16) -> Vec<String> {
    let mut a = rpc_args(&format!("http://127.0.0.1:{port}"), "u", SECRET);
    a.extend(["--rpc-timeout", "5"].map(String::from));
    a
}

const STATE: &str = r#"{"ledger": {"balances": [{"peerId": "p1", "balance": 5}]}}"#;

fn create_anchor_broadcast(port: u16, db: &Path) -> assert_cmd::assert::Assert {
    cmd("ailee_create_anchor")
        .args([
            "--l2-state-file",
            "-",
            "--broadcast",
            "--timestamp-ms",
            "1700000000000",
            "--db-path",
        ])
        .arg(db)
        .args(fake_args(port))
        .write_stdin(STATE)
        .timeout(Duration::from_secs(60))
        .assert()
}

fn resync(port: u16, db: &Path) -> assert_cmd::assert::Assert {
    resync_cmd(db)
        .args(fake_args(port))
        .timeout(Duration::from_secs(60))
        .assert()
}

/// Every request is answered with `status` pointing at `target`; with
/// `userinfo`, the location carries credentials that must not be printed.
fn redirecting(status: &'static str, target: &Target, userinfo: bool) -> u16 {
    let info = if userinfo { "eve:stolen-pw@" } else { "" };
    let location = format!("Location: http://{info}{}/\r\n", target.addr());
    serve(move |_| http(status, &location, b""))
}

fn refused_redirect(a: assert_cmd::assert::Assert, code: &str, target: &Target) {
    let a = a
        .code(1)
        .stderr(contains(code))
        .stderr(contains(format!("http://{}/", target.addr())))
        .stderr(contains("never followed"))
        .stderr(contains(SECRET).not())
        .stderr(contains("stolen-pw").not())
        .stderr(contains("eve:").not());
    assert!(a.get_output().stdout.is_empty());
    let got = target.received();
    assert!(got.is_empty(), "the redirect target was contacted: {got:?}");
}

#[test]
fn resync_never_follows_a_redirect_nor_sends_the_password_there() {
    for status in [
        "301 Moved Permanently",
        "302 Found",
        "303 See Other",
        "307 Temporary Redirect",
        "308 Permanent Redirect",
    ] {
        for userinfo in [false, true] {
            let target = Target::bind();
            let port = redirecting(status, &target, userinfo);
            let (_d, db) = temp_db();
            refused_redirect(resync(port, &db), &status[..3], &target);
            db_is_untouched(&db);
        }
    }
}

#[test]
fn create_anchor_broadcast_never_follows_a_redirect() {
    let target = Target::bind();
    let port = redirecting("307 Temporary Redirect", &target, false);
    let (_d, db) = temp_db();
    refused_redirect(create_anchor_broadcast(port, &db), "307", &target);
    db_is_untouched(&db);
}

#[test]
fn the_redirect_target_listener_does_see_a_direct_request() {
    // The check above is only meaningful if the target records what arrives:
    // pointing the tool straight at it, the Authorization header shows up.
    let target = Target::bind();
    let (_d, db) = temp_db();
    resync_cmd(&db)
        .args(["--bitcoin-rpc", &format!("http://{}", target.addr())])
        .args(["--rpc-user", "u", "--rpc-password", SECRET, "--rpc-timeout", "1"])
        .timeout(Duration::from_secs(60))
        .expect(exits(1));
    let got = target.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].to_ascii_lowercase().contains("authorization: basic"), "{got:?}");
}

// --- validated replies -------------------------------------------------------

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A one-input legacy transaction whose only output is `OP_RETURN data`.
fn op_return_tx(data: &[u8]) -> Vec<u8> {
    let mut script = vec![0x6a];
    if data.len() > 75 {
        script.push(0x4c);
    }
    script.push(data.len() as u8);
    script.extend_from_slice(data);
    let mut t = vec![1, 0, 0, 0, 1];
    t.extend_from_slice(&[0x11; 32]);
    t.extend_from_slice(&[0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 1]);
    t.extend_from_slice(&[0; 8]);
    t.push(script.len() as u8);
    t.extend_from_slice(&script);
    t.extend_from_slice(&[0; 4]);
    t
}

/// The txid of a transaction without witness: sha256d, byte-reversed.
fn txid_of(tx: &[u8]) -> String {
    let once = unhex(&ailee_core::root::sha256_hex(tx));
    let mut twice = unhex(&ailee_core::root::sha256_hex(&once));
    twice.reverse();
    hex(&twice)
}

/// A wallet node: builds, funds and signs the OP_RETURN transaction the tool
/// asks for (the data comes from `createrawtransaction`), and answers
/// `sendrawtransaction` with `send(txid of what was sent)`.
fn wallet_node(send: impl Fn(&str) -> Value + Send + Sync + 'static) -> u16 {
    serve(move |body| {
        let req: Value = serde_json::from_str(body).unwrap();
        let p = &req["params"];
        match req["method"].as_str().unwrap() {
            "createrawtransaction" => {
                rpc_result(body, json!(hex(&op_return_tx(&unhex(p[1]["data"].as_str().unwrap())))))
            }
            "fundrawtransaction" => rpc_result(body, json!({"hex": p[0], "fee": 0.00001, "changepos": -1})),
            "signrawtransactionwithwallet" => rpc_result(body, json!({"hex": p[0], "complete": true})),
            "sendrawtransaction" => rpc_result(body, send(&txid_of(&unhex(p[0].as_str().unwrap())))),
            _ => rpc_unknown_method(body),
        }
    })
}

/// What a fake node answers `sendrawtransaction` with, given the real txid.
type SendReply = Box<dyn Fn(&str) -> Value + Send + Sync>;

#[test]
fn malformed_txids_from_sendrawtransaction_exit_1_and_store_nothing() {
    let cases: Vec<(&str, SendReply)> = vec![
        ("a|b", Box::new(|_| json!("a|b"))),
        ("ab\\ncd", Box::new(|_| json!("ab\ncd"))),
        ("\"\"", Box::new(|_| json!(""))),
        ("not 64 hex digits", Box::new(|_| json!("x".repeat(10 << 20)))),
        ("not 64 hex digits", Box::new(|_| json!(null))),
        ("not 64 hex digits", Box::new(|_| json!(12345))),
        ("not 64 hex digits", Box::new(|t: &str| json!(format!("{t}|{t}")))),
        (
            "for the transaction whose txid is",
            Box::new(|_| json!("ab".repeat(32))),
        ),
    ];
    for (why, send) in cases {
        let port = wallet_node(send);
        let (_d, db) = temp_db();
        let a = create_anchor_broadcast(port, &db)
            .code(1)
            .stderr(contains("sendrawtransaction"))
            .stderr(contains(why))
            .stderr(contains(SECRET).not());
        let err = &a.get_output().stderr;
        assert!(err.len() < 4000, "bounded message ({} bytes) for {why}", err.len());
        db_is_untouched(&db);
    }
}

#[test]
fn an_upper_case_txid_is_stored_lower_case() {
    let port = wallet_node(|t| json!(t.to_ascii_uppercase()));
    let (_d, db) = temp_db();
    let out = create_anchor_broadcast(port, &db).code(0);
    let txid = String::from_utf8_lossy(&out.get_output().stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Broadcast txid: ").map(str::to_string))
        .expect("txid line");
    assert_eq!(txid.len(), 64);
    assert_eq!(txid, txid.to_ascii_lowercase());
    let rec = ailee_db::reorgdb::ReorgDb::open(&db, ailee_db::reorgdb::Mode::ReadOnly)
        .unwrap()
        .anchors()
        .unwrap();
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].bitcoin_tx_id, txid);
}

#[test]
fn a_signed_transaction_without_the_anchor_output_is_refused_before_broadcast() {
    // A wallet that signs something else: nothing is broadcast or stored.
    let sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = sent.clone();
    let port = serve(move |body| {
        let req: Value = serde_json::from_str(body).unwrap();
        match req["method"].as_str().unwrap() {
            "sendrawtransaction" => {
                s2.store(true, std::sync::atomic::Ordering::SeqCst);
                rpc_result(body, json!("00".repeat(32)))
            }
            "signrawtransactionwithwallet" => rpc_result(
                body,
                json!({"hex": hex(&op_return_tx(b"someone else")), "complete": true}),
            ),
            _ => rpc_result(body, json!({"hex": "00"})),
        }
    });
    let (_d, db) = temp_db();
    create_anchor_broadcast(port, &db)
        .code(1)
        .stderr(contains("no output carrying the anchor's OP_RETURN"));
    assert!(!sent.load(std::sync::atomic::Ordering::SeqCst));
    db_is_untouched(&db);
}

/// A node whose tip is 3 and whose `getblockhash` answers `hash(height)`.
fn chain_node(hash: fn(u64) -> Value) -> u16 {
    serve(move |body| {
        let req: Value = serde_json::from_str(body).unwrap();
        if req.is_array() {
            return rpc_batch(
                body,
                |r| json!({"result": hash(r["params"][0].as_u64().unwrap()), "error": null}),
            );
        }
        // The tip's hash as getblockchaininfo reports it (a valid one when the
        // test's hashes are malformed, so that getblockhash is what fails).
        let best = match hash(3) {
            Value::String(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => json!(s),
            _ => json!("ab".repeat(32)),
        };
        match req["method"].as_str().unwrap() {
            "getblockcount" => rpc_result(body, json!(3)),
            "getblockchaininfo" => rpc_result(
                body,
                json!({"chain": "regtest", "blocks": 3, "headers": 3, "bestblockhash": best, "initialblockdownload": false}),
            ),
            "getblockhash" => rpc_result(body, hash(req["params"][0].as_u64().unwrap())),
            _ => rpc_unknown_method(body),
        }
    })
}

#[test]
fn upper_case_block_hashes_are_stored_lower_case() {
    let port = chain_node(|h| json!(format!("{h:064X}").replace('0', "A")));
    let (_d, db) = temp_db();
    resync(port, &db).code(0);
    let r = ailee_db::reorgdb::ReorgDb::open(&db, ailee_db::reorgdb::Mode::ReadOnly).unwrap();
    for h in 0..=3u64 {
        assert_eq!(
            r.block_hash(h).unwrap().unwrap(),
            format!("{h:064X}").replace('0', "A").to_ascii_lowercase()
        );
    }
}

#[test]
fn malformed_block_hashes_and_heights_exit_1_and_store_nothing() {
    for bad in [
        (|_| json!("a|b")) as fn(u64) -> Value,
        |_| json!(""),
        |_| json!("0".repeat(63)),
        |h| json!(format!("{h:064x}\n")),
        |_| json!(7),
    ] {
        let port = chain_node(bad);
        let (_d, db) = temp_db();
        resync(port, &db)
            .code(1)
            .stderr(contains("getblockhash"))
            .stderr(contains("64 hex digits"));
        db_is_untouched(&db);
    }
    for count in [json!(-1), json!(1u64 << 40), json!("3"), json!(2.5)] {
        let port = serve(move |body| rpc_result(body, count.clone()));
        refused_at_getblockcount(port);
    }
}

#[test]
fn a_reply_over_the_size_cap_is_refused_before_it_is_read() {
    // A server announcing a 1 TB body: refused on the header, nothing read.
    let port = serve(|_| b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n[".to_vec());
    let (_d, db) = temp_db();
    resync(port, &db).code(1).stderr(contains("larger than"));
    db_is_untouched(&db);
}

#[test]
fn broadcast_on_the_real_node_stores_the_nodes_txid_lower_case() {
    let node = Node::mined(101);
    let (_d, db) = temp_db();
    let out = cmd("ailee_create_anchor")
        .args(["--l2-state-file", "-", "--broadcast", "--json", "--db-path"])
        .arg(&db)
        .args(node.rpc_args())
        .write_stdin(STATE)
        .expect(exits(0));
    let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let txid = v["txid"].as_str().unwrap().to_string();
    assert!(txid.len() == 64 && txid.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    // The node knows that transaction, and it carries the anchor's script.
    let raw: Value = serde_json::from_str(&node.cli(&["getrawtransaction", &txid, "1"])).unwrap();
    assert_eq!(raw["txid"], txid.as_str());
    let script = v["op_return_script"].as_str().unwrap();
    assert!(
        raw["vout"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["scriptPubKey"]["hex"].as_str().unwrap().ends_with(script)),
        "{raw}"
    );
    let rec = ailee_db::reorgdb::ReorgDb::open(&db, ailee_db::reorgdb::Mode::ReadOnly)
        .unwrap()
        .anchors()
        .unwrap();
    assert_eq!(rec[0].bitcoin_tx_id, txid);
    // And a resync through the same transport stores the node's hashes.
    node.generate(1);
    node.resync(&db, 0).expect(exits(0));
    let r = ailee_db::reorgdb::ReorgDb::open(&db, ailee_db::reorgdb::Mode::ReadOnly).unwrap();
    let tip = node.count();
    assert_eq!(r.block_hash(tip).unwrap().unwrap(), node.hash(tip));
}

// --- hostile replies: bounded memory and time ---------------------------------

/// A resync against the fake at `port` fails at its first call (exit 1,
/// `getblockcount` named); the database is untouched.
fn refused_at_getblockcount(port: u16) {
    let (_d, db) = temp_db();
    resync(port, &db).code(1).stderr(contains("getblockcount"));
    db_is_untouched(&db);
}

/// A resync (no credentials) against the fake at `port` with `--rpc-timeout
/// secs` exits 1 within that bound with `msg`; the database is untouched.
fn refused_within(port: u16, secs: u64, msg: &str) {
    let (_d, db) = temp_db();
    resync_cmd(&db)
        .args(["--bitcoin-rpc", &format!("http://127.0.0.1:{port}")])
        .args(["--rpc-timeout", &secs.to_string()])
        .timeout(Duration::from_secs(secs.max(120)))
        .expect(exits(1).says(msg));
    db_is_untouched(&db);
}

#[test]
fn endless_headers_are_cut_off() {
    let port = serve_stream(|s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
        let line = format!("X-Junk: {}\r\n", "a".repeat(1000));
        while s.write_all(line.as_bytes()).is_ok() {}
    });
    refused_at_getblockcount(port);
}

#[test]
fn endless_status_line_is_cut_off() {
    let port = serve_stream(|s| {
        let _ = s.write_all(b"HTTP/1.1 200 ");
        let chunk = [b'O'; 4096];
        while s.write_all(&chunk).is_ok() {}
    });
    refused_at_getblockcount(port);
}

#[test]
fn endless_chunked_body_stops_at_the_cap() {
    // No Content-Length: the body is counted while read and refused at the cap.
    let port = serve_stream(|s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        let mut chunk = format!("{:x}\r\n", 1 << 20).into_bytes();
        chunk.extend(std::iter::repeat_n(b' ', 1 << 20));
        chunk.extend_from_slice(b"\r\n");
        while s.write_all(&chunk).is_ok() {}
    });
    refused_within(port, 600, "larger than 268435456 bytes");
}

#[test]
fn a_body_that_never_ends_hits_the_request_timeout() {
    // One byte at a time, forever: the timeout covers the whole request, not
    // each read, so a trickle cannot hold the tool.
    let port = serve_stream(|s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
        loop {
            if s.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    refused_within(port, 2, "timeout");
}

#[test]
fn a_reply_with_another_id_or_shape_is_refused() {
    for reply in [
        (|_: &str| http("200 OK", "", br#"{"result":3,"error":null,"id":999}"#)) as fn(&str) -> Vec<u8>,
        |_| http("200 OK", "", br#"[{"result":3,"error":null,"id":0}]"#),
        |_| http("200 OK", "", br#""just a string""#),
        |_| http("200 OK", "", b""),
        |_| http("200 OK", "", b"\xff\xfe{}"),
    ] {
        let port = serve(reply);
        refused_at_getblockcount(port);
    }
}

#[test]
fn batch_replies_missing_or_duplicated_are_refused() {
    for batch in [
        // One reply short.
        (|body: &str| {
            let req: Value = serde_json::from_str(body).unwrap();
            let rs: Vec<Value> = req.as_array().unwrap()[1..]
                .iter()
                .map(|r| json!({"result": "ab".repeat(32), "error": null, "id": r["id"]}))
                .collect();
            Value::Array(rs)
        }) as fn(&str) -> Value,
        // Every reply carries the first id.
        |body| {
            let req: Value = serde_json::from_str(body).unwrap();
            let a = req.as_array().unwrap();
            Value::Array(
                a.iter()
                    .map(|_| json!({"result": "ab".repeat(32), "error": null, "id": a[0]["id"]}))
                    .collect(),
            )
        },
    ] {
        let port = serve(move |body| {
            let req: Value = serde_json::from_str(body).unwrap();
            if req.is_array() {
                http("200 OK", "", batch(body).to_string().as_bytes())
            } else if req["method"] == "getblockchaininfo" {
                rpc_result(
                    body,
                    json!({"chain": "regtest", "blocks": 3, "headers": 3, "bestblockhash": "ab".repeat(32), "initialblockdownload": false}),
                )
            } else {
                rpc_result(body, json!(3))
            }
        });
        let (_d, db) = temp_db();
        resync(port, &db).code(1).stderr(contains("getblockhash"));
        db_is_untouched(&db);
    }
}

/// A node at tip 3 (block hash at height h: `h + 1` in 64 hex digits) whose
/// wallet knows the anchor's transaction, mined in the block at height 1.
/// `tx_reply`/`header_reply` shape those answers.
fn node_with_tx(tx_reply: fn(&str) -> Value, header_reply: fn(&str) -> Value) -> u16 {
    serve(move |body| {
        let req: Value = serde_json::from_str(body).unwrap();
        if req.is_array() {
            return rpc_batch(body, |r| {
                let result = match r["method"].as_str().unwrap() {
                    "getblockhash" => json!(format!("{:064x}", r["params"][0].as_u64().unwrap() + 1)),
                    "getblockheader" => header_reply(r["params"][0].as_str().unwrap_or_default()),
                    _ => tx_reply(r["params"][0].as_str().unwrap_or_default()),
                };
                json!({"result": result, "error": null})
            });
        }
        let p0 = req["params"][0].as_str().unwrap_or_default().to_string();
        match req["method"].as_str().unwrap() {
            "getblockcount" => rpc_result(body, json!(3)),
            "getblockchaininfo" => rpc_result(
                body,
                json!({"chain": "regtest", "blocks": 3, "headers": 3, "bestblockhash": format!("{:064x}", 4), "initialblockdownload": false}),
            ),
            "gettransaction" | "getrawtransaction" => rpc_result(body, tx_reply(&p0)),
            "getblockheader" => rpc_result(body, header_reply(&p0)),
            _ => rpc_unknown_method(body),
        }
    })
}

#[test]
fn replies_about_another_transaction_or_block_are_refused_and_the_anchor_is_unchanged() {
    use ailee_core::records::{AnchorRecord, AnchorStatus};
    use ailee_db::reorgdb::{Batch, Mode, ReorgDb};
    let pending = AnchorRecord {
        anchor_hash: "a".repeat(64),
        bitcoin_tx_id: "c".repeat(64),
        bitcoin_height: 0,
        confirmations: 0,
        broadcast_time: 1_700_000_000_000,
        retry_count: 0,
        status: AnchorStatus::Pending,
        l2_state_root: "e".repeat(64),
    };
    type Case = (fn(&str) -> Value, fn(&str) -> Value, &'static str);
    // (Resync takes a mined transaction's height from the stored best-chain
    // hashes, so it asks for no block header.)
    let cases: [Case; 2] = [
        // getrawtransaction about another txid
        (
            |_| json!({"txid": "d".repeat(64), "confirmations": 3, "blockhash": format!("{:064x}", 2)}),
            |h| json!({"hash": h, "height": 1}),
            "asked about txid",
        ),
        // a block hash that is not one
        (
            |t| json!({"txid": t, "confirmations": 3, "blockhash": "e|e"}),
            |h| json!({"hash": h, "height": 1}),
            "not 64 hex digits",
        ),
    ];
    for (tx, header, why) in cases {
        let (_d, db) = temp_db();
        {
            let w = ReorgDb::open(&db, Mode::ReadWrite).unwrap();
            let mut b = Batch::default();
            b.put_anchor(&pending);
            w.write(b).unwrap();
        }
        resync(node_with_tx(tx, header), &db).code(1).stderr(contains(why));
        let r = ReorgDb::open(&db, Mode::ReadOnly).unwrap();
        assert_eq!(r.anchor(&pending.anchor_hash).unwrap().unwrap(), pending, "{why}");
    }
    // The same node answering consistently confirms the anchor: the fake is
    // good enough for the refusals above to mean something.
    let (_d, db) = temp_db();
    {
        let w = ReorgDb::open(&db, Mode::ReadWrite).unwrap();
        let mut b = Batch::default();
        b.put_anchor(&pending);
        w.write(b).unwrap();
    }
    let port = node_with_tx(
        |t| json!({"txid": t.to_ascii_uppercase(), "confirmations": 3, "blockhash": format!("{:064X}", 2)}),
        |h| json!({"hash": h, "height": 1}),
    );
    cmd("ailee_resync_blocks")
        .args(["--start-height", "0", "--confirmations", "3", "--db-path"])
        .arg(&db)
        .args(fake_args(port))
        .expect(exits(0));
    let r = ReorgDb::open(&db, Mode::ReadOnly).unwrap();
    let a = r.anchor(&pending.anchor_hash).unwrap().unwrap();
    assert_eq!(
        (a.status, a.bitcoin_height, a.confirmations),
        (AnchorStatus::Confirmed, 1, 3)
    );
}

#[test]
fn a_cookie_that_is_not_a_small_regular_file_is_refused_at_once() {
    let (d, db) = temp_db();
    let fifo = d.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let big = d.path().join("big.cookie");
    std::fs::write(&big, format!("__cookie__:{}", "a".repeat(1 << 20))).unwrap();
    let port = serve(|body| rpc_result(body, json!(3)));
    for (cookie, why) in [
        (Path::new("/dev/zero"), "not a regular file"),
        (fifo.as_path(), "not a regular file"),
        (big.as_path(), "larger than 4096 bytes"),
    ] {
        resync_cmd(&db)
            .args(["--bitcoin-rpc", &format!("http://127.0.0.1:{port}"), "--rpc-cookie"])
            .arg(cookie)
            .timeout(Duration::from_secs(60))
            .expect(exits(1).says(why).says_not("aaaa"));
    }
    db_is_untouched(&db);
}

#[test]
fn a_huge_or_multi_line_rpc_error_message_is_clipped_to_one_line() {
    let port = serve(|body| {
        let msg = format!("Loading\nerror: forged line{}", "z".repeat(10 << 20));
        rpc_error("500 Internal Server Error", body, -28, &msg)
    });
    let (_d, db) = temp_db();
    let a = resync(port, &db)
        .code(1)
        .stderr(contains("Loading\\nerror: forged line"));
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(err.len() < 3000, "{} bytes", err.len());
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    db_is_untouched(&db);
}

// --- node replies that fail validation, through a proxy in front of the real node ---

/// A rewrite applying `damage` to the hex of every `getblock` result.
fn damaging(damage: Arc<dyn Fn(&str) -> String + Send + Sync>) -> impl Fn(&str, Reply) -> Reply + Send + Sync {
    move |req, mut r| {
        if req.contains("\"getblock\"") {
            let mut v: Value = serde_json::from_slice(&r.body).unwrap();
            for item in v.as_array_mut().unwrap() {
                if let Some(h) = item["result"].as_str() {
                    item["result"] = json!(damage(h));
                }
            }
            r.body = v.to_string().into_bytes();
        }
        r
    }
}

#[test]
fn a_damaged_getblock_reply_is_exit_1_for_resync_and_verify_and_resync_says_what_it_wrote() {
    let node = Node::mined(101);
    let d = tempfile::tempdir().unwrap();
    let (db, f) = (db_in(d.path()), d.path().join("l2.dat"));
    node.give_identity(d.path());
    node.broadcast_anchor(&f, &db).write_stdin(STATE).expect(exits(0));
    node.generate(30); // the anchor at 102, tip 131
    node.resync(&db, 0).expect(exits(0));
    let block1 = node.cli(&["getblock", &node.hash(1), "0"]);
    type Damage = (&'static str, Arc<dyn Fn(&str) -> String + Send + Sync>);
    let cases: Vec<Damage> = vec![
        ("raw block ends early", Arc::new(|h: &str| h[..h.len() - 2].to_string())),
        (
            "1 bytes after the last transaction",
            Arc::new(|h: &str| format!("{h}00")),
        ),
        (
            "raw block ends early (at byte 0 of 0)",
            Arc::new(|_: &str| String::new()),
        ),
        (
            "count 18446744073709551615",
            Arc::new(|h: &str| format!("{}{}{}", &h[..160], "ff".repeat(9), &h[162..])),
        ),
        (
            "raw block ends early (at byte 0 of 40)",
            Arc::new(|h: &str| h[..80].to_string()),
        ),
        ("the node returned block", Arc::new(move |_: &str| block1.clone())),
    ];
    let verify = |url: &str| {
        verify_file(&f)
            .arg("--reorg-db")
            .arg(&db)
            .args(node.rpc_args_at(url))
            .timeout(Duration::from_secs(120))
            .assert()
    };
    let resync_anchors = |url: &str, db: &Path| {
        cmd("ailee_resync_blocks")
            .args(["--start-height", "101", "--anchors-from"])
            .arg(&f)
            .arg("--db-path")
            .arg(db)
            .arg("--anchor-identity")
            .arg(d.path().join("anchor_identity"))
            .args(node.rpc_args_at(url))
            .timeout(Duration::from_secs(120))
            .assert()
    };
    for (why, damage) in cases {
        let px = format!(
            "http://127.0.0.1:{}",
            proxy_rewriting(node.rpc_port, damaging(damage)).port
        );
        // Resync: exit 1 naming getblock and the block; the 31 hashes it
        // wrote before the scan are said and are in the database.
        let fresh = tempfile::tempdir().unwrap();
        let db2 = db_in(fresh.path());
        resync_anchors(&px, &db2)
            .code(1)
            .stderr(contains("getblock: reply refused: "))
            .stderr(contains(why))
            .stderr(contains(
                "31 block hashes written (heights 101 to 131) before the error",
            ))
            .stderr(contains("a rerun finishes the job"));
        let stored: Vec<(u64, String)> = ailee_db::reorgdb::ReorgDb::open(&db2, ailee_db::reorgdb::Mode::ReadOnly)
            .unwrap()
            .blocks_from(0)
            .map(Result::unwrap)
            .collect();
        assert_eq!(stored.len(), 31, "{why}");
        assert_eq!(stored[0], (101, node.hash(101)));
        assert_eq!(stored[30], (131, node.hash(131)));
        // Verify: exit 1 too — the node answered wrong; the snapshot is not blamed.
        verify(&px)
            .code(1)
            .stderr(contains("getblock: reply refused: "))
            .stderr(contains(why))
            .stderr(contains("Anchor verification failed").not())
            .stdout(contains("Verification OK.").not());
        // The rerun against the node itself finishes the job.
        resync_anchors(&node.url(), &db2)
            .code(0)
            .stdout(contains("1 found on the chain, 1 recorded"));
    }
    // The same proxy passing the node's replies unchanged: both succeed (the
    // failures above are the damage's).
    let px = format!(
        "http://127.0.0.1:{}",
        proxy_rewriting(node.rpc_port, damaging(Arc::new(|h: &str| h.to_string()))).port
    );
    verify(&px).code(0).stdout(contains("Verification OK."));
    let fresh = tempfile::tempdir().unwrap();
    resync_anchors(&px, &db_in(fresh.path()))
        .code(0)
        .stdout(contains("1 found on the chain, 1 recorded"));
}

fn varint(n: usize) -> Vec<u8> {
    match n {
        0..=0xfc => vec![n as u8],
        0xfd..=0xffff => [&[0xfd][..], &(n as u16).to_le_bytes()].concat(),
        _ => [&[0xfe][..], &(n as u32).to_le_bytes()].concat(),
    }
}

/// Big blocks on a node past the genesis upgrade (`-genesisactivationheight=1`):
/// each holds one transaction spending the previous one's anyone-can-spend
/// (`OP_TRUE`) output, with an `OP_FALSE OP_RETURN` of `size` bytes. Built
/// here, not by the wallet: no signature to make over megabytes.
struct BigBlocks {
    rpc: ailee_core::rpc::Rpc,
    prev: String,
    vout: u32,
    value: u64,
}

impl BigBlocks {
    fn new(node: &Node) -> BigBlocks {
        let rpc = ailee_core::rpc::Rpc::connect(&ailee_core::rpc::RpcConfig {
            url: node.url(),
            auth: ailee_core::rpc::Auth::UserPass {
                user: node.user.clone(),
                password: node.password.clone(),
            },
            timeout: Duration::from_secs(120),
        })
        .unwrap();
        let value = 10 * 100_000_000u64;
        // Version 1, no input, one OP_TRUE output, locktime 0: the wallet funds and signs it.
        let mut t = vec![1, 0, 0, 0, 0, 1];
        t.extend_from_slice(&value.to_le_bytes());
        t.extend_from_slice(&[1, 0x51, 0, 0, 0, 0]);
        let funded = rpc.call("fundrawtransaction", &[json!(hex(&t))]).unwrap();
        let signed = rpc.call("signrawtransaction", &[funded["hex"].clone()]).unwrap();
        let prev = rpc.call("sendrawtransaction", &[signed["hex"].clone()]).unwrap();
        let decoded = rpc.call("decoderawtransaction", &[signed["hex"].clone()]).unwrap();
        let vout = decoded["vout"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["scriptPubKey"]["hex"] == "51")
            .unwrap()["n"]
            .as_u64()
            .unwrap() as u32;
        node.generate(1);
        BigBlocks {
            rpc,
            prev: prev.as_str().unwrap().to_string(),
            vout,
            value,
        }
    }

    /// Mines `n` blocks, each with one transaction of about `size` bytes.
    fn mine(&mut self, node: &Node, n: usize, size: usize) {
        for i in 0..n {
            self.value -= (size as u64 / 1000 + 1) * 600;
            let mut script = vec![0x00, 0x6a, 0x4e];
            script.extend_from_slice(&(size as u32).to_le_bytes());
            script.resize(script.len() + size, i as u8);
            let mut t = vec![1, 0, 0, 0, 1];
            t.extend(unhex(&self.prev).iter().rev());
            t.extend_from_slice(&self.vout.to_le_bytes());
            t.extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff, 2]);
            t.extend_from_slice(&self.value.to_le_bytes());
            t.extend_from_slice(&[1, 0x51]);
            t.extend_from_slice(&0u64.to_le_bytes());
            t.extend(varint(script.len()));
            t.extend_from_slice(&script);
            t.extend_from_slice(&[0; 4]);
            let txid = self.rpc.call("sendrawtransaction", &[json!(hex(&t))]).unwrap();
            assert_eq!(txid.as_str().unwrap(), txid_of(&t));
            (self.prev, self.vout) = (txid_of(&t), 0);
            node.generate(1);
        }
    }
}

#[test]
fn raw_block_batches_are_bounded_by_bytes_not_by_block_batch() {
    // 64 blocks of 2.2 MB: one batch of --block-batch 64 would be a reply of
    // 282 MB of hex, over the 256 MiB cap. Split by bytes, the scan reads
    // them all in well under the cap.
    let node = Node::start_with(&["-genesisactivationheight=1"]);
    node.generate(101);
    let mut big = BigBlocks::new(&node); // funded at 102
    big.mine(&node, 63, 2_200_000); // 103..=165
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("l2.dat");
    let anchor_db = db_in(d.path());
    node.give_identity(d.path());
    node.broadcast_anchor(&f, &anchor_db)
        .write_stdin(STATE)
        .expect(exits(0));
    big.mine(&node, 1, 2_200_000); // 166, with the anchor
    let fresh = tempfile::tempdir().unwrap();
    let db = db_in(fresh.path());
    node.give_identity(fresh.path());
    let out = assert_cmd::Command::new("/usr/bin/time")
        .args(["-f", "maxrss %M KiB"])
        .arg(bin("ailee_resync_blocks"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C")
        .args(["--start-height", "103", "--block-batch", "64", "--anchors-from"])
        .arg(&f)
        .arg("--db-path")
        .arg(&db)
        .args(node.rpc_args())
        .timeout(Duration::from_secs(600))
        .expect(exits(0).prints("1 found on the chain, 1 recorded"));
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let kib: u64 = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("maxrss ")?.strip_suffix(" KiB")?.parse().ok())
        .unwrap_or_else(|| panic!("no maxrss line: {err}"));
    assert!(
        kib < 128 << 10,
        "peak RSS {kib} KiB: not well under the 256 MiB reply cap"
    );
}

#[test]
fn wait_rides_out_http_503_from_a_proxy_in_front_of_the_node() {
    // A reverse proxy answers 503 while bitcoind restarts: not ready, waited for.
    let node = Node::mined(20);
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(3));
    let px = proxy_rewriting(node.rpc_port, move |_, r| {
        let busy = left
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok();
        if busy {
            Reply {
                status: "503 Service Unavailable".into(),
                body: b"<html>bitcoind is restarting</html>".to_vec(),
            }
        } else {
            r
        }
    });
    let url = px.url();
    let (_d, db) = temp_db();
    // Without --wait: exit 1 at once, saying what the proxy said.
    node.resync_at(&url, &db, 0).expect(
        exits(1)
            .says("getblockcount: HTTP 503 Service Unavailable")
            .says("not ready")
            .says_not("authentication"),
    );
    db_is_untouched(&db);
    // With --wait: the two 503s left are waited out, then the resync runs.
    node.resync_at(&url, &db, 0)
        .args(["--wait", "--wait-interval", "1", "--wait-timeout", "600"])
        .timeout(Duration::from_secs(600))
        .expect(
            exits(0)
                .says("node not ready")
                .says("HTTP 503")
                .prints("21 block hashes written"),
        );
}

#[test]
fn a_resync_that_fails_midway_says_what_it_wrote() {
    // Heights 0..=19 are written (four batches of --batch-size 5, one write);
    // the fifth getblockhash batch comes back malformed.
    let node = Node::mined(29);
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let px = proxy_rewriting(node.rpc_port, move |req, mut r| {
        if req.contains("\"getblockhash\"") && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 4 {
            let mut v: Value = serde_json::from_slice(&r.body).unwrap();
            for item in v.as_array_mut().unwrap() {
                item["result"] = json!("not-a-hash");
            }
            r.body = v.to_string().into_bytes();
        }
        r
    });
    let (_d, db) = temp_db();
    cmd("ailee_resync_blocks")
        .args(["--start-height", "0", "--batch-size", "5", "--db-path"])
        .arg(&db)
        .args(node.rpc_args_at(&px.url()))
        .expect(
            exits(1)
                .says("getblockhash: reply refused: height 2")
                .says("20 block hashes written (heights 0 to 19) before the error")
                .says("a rerun finishes the job"),
        );
    let r = ailee_db::reorgdb::ReorgDb::open(&db, ailee_db::reorgdb::Mode::ReadOnly).unwrap();
    assert_eq!(r.tip().unwrap(), Some(19));
    assert_eq!(r.block_hash(19).unwrap().unwrap(), node.hash(19));
    drop(r);
    node.resync(&db, 0).expect(exits(0));
}
