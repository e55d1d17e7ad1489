//! RPC faults the real node cannot produce, served by a raw TCP fake on
//! 127.0.0.1: malformed or cut-off JSON, a wrong id, an HTTP 500 with an error
//! object, a 64 MB body, no reply at all. Each must end in exit 1 within the
//! timeout, with a message, and leave the database unchanged. RPC errors read
//! `code N: message` (no Rust debug text); the authentication hint comes
//! with HTTP 401, not with an error text that holds "401"; `--wait` gives up
//! on a node that never answers at `--wait-timeout`, not at `--rpc-timeout`.

use ailee_recovery::{check_db, cmd, exits, http, rpc_batch, rpc_result, serve, silent, temp_db, Expecting};
use predicates::prelude::*;
use predicates::str::contains;
use std::time::{Duration, Instant};

/// getblockcount and getblockchaininfo answer height 10 (with the request's id);
/// batches get `batch(body)`.
fn count_then(body: &str, batch: fn(&str) -> Vec<u8>) -> Vec<u8> {
    if body.contains("getblockcount") {
        rpc_result(body, serde_json::json!(10))
    } else if body.contains("getblockchaininfo") {
        rpc_result(body, serde_json::json!({"blocks": 10, "bestblockhash": "0".repeat(64)}))
    } else {
        batch(body)
    }
}

fn resync_against(port: u16, db: &std::path::Path) -> assert_cmd::assert::Assert {
    let t0 = Instant::now();
    let a = cmd("ailee_resync_blocks")
        .args([
            "--start-height",
            "0",
            "--rpc-timeout",
            "3",
            "--rpc-user",
            "u",
            "--rpc-password",
            "secret-pw-42",
        ])
        .args(["--bitcoin-rpc", &format!("http://127.0.0.1:{port}"), "--db-path"])
        .arg(db)
        .timeout(Duration::from_secs(30))
        .assert();
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "bounded time: {:?}",
        t0.elapsed()
    );
    a
}

fn check_fault(reply: fn(&str) -> Vec<u8>, msg: &str) {
    let (_d, db) = temp_db();
    resync_against(serve(reply), &db)
        .code(1)
        .stderr(contains(msg))
        .stderr(contains("secret-pw-42").not());
    check_db(&db).expect(exits(0).prints("Blocks: none stored"));
}

#[test]
fn malformed_json_reply() {
    check_fault(
        |b| count_then(b, |_| http("200 OK", "", b"[{\"result\": \"abc")),
        "getblockhash batch",
    );
}

#[test]
fn reply_cut_off_mid_body() {
    check_fault(
        |b| {
            count_then(b, |_| {
                b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n[{\"result\":\"00".to_vec()
            })
        },
        "getblockhash batch",
    );
}

#[test]
fn reply_with_wrong_ids() {
    check_fault(
        |b| count_then(b, |_| http("200 OK", "", br#"[{"result":"00","error":null,"id":999}]"#)),
        "getblockhash batch",
    );
}

#[test]
fn http_500_with_an_error_object() {
    check_fault(
        |_| {
            http(
                "500 Internal Server Error",
                "",
                br#"{"result":null,"error":{"code":-28,"message":"Loading block index..."},"id":1}"#,
            )
        },
        "getblockcount: code -28: Loading block index",
    );
}

/// Answers every request of a batch with the RPC error `code`/`message`
/// (with the request's id, as a node does).
fn batch_errors(body: &str, code: i64, message: &str) -> Vec<u8> {
    rpc_batch(
        body,
        |_| serde_json::json!({"result": null, "error": {"code": code, "message": message}}),
    )
}

#[test]
fn the_authentication_hint_comes_with_http_401_not_with_a_text_holding_401() {
    check_fault(
        |_| {
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"jsonrpc\"\r\nContent-Length: 0\r\n\r\n"
                .to_vec()
        },
        "getblockcount: HTTP 401 Unauthorized",
    );
    let (_d, db) = temp_db();
    resync_against(
        serve(|b| count_then(b, |b| batch_errors(b, -5, "block 0000401f not found"))),
        &db,
    )
    .code(1)
    .stderr(contains("getblockhash: height "))
    .stderr(contains(": code -5: block 0000401f not found"))
    .stderr(contains("authentication").not())
    .stderr(contains("RpcError").not());
    let (_d, db) = temp_db();
    resync_against(
        serve(|_| b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".to_vec()),
        &db,
    )
    .code(1)
    .stderr(contains(
        "authentication refused: check --rpc-user/--rpc-password or --rpc-cookie",
    ));
}

#[test]
fn rpc_error_object_in_a_batch_entry() {
    check_fault(
        |b| {
            count_then(b, |_| {
                http(
                    "200 OK",
                    "",
                    br#"[{"result":null,"error":{"code":-8,"message":"Block height out of range"},"id":0}]"#,
                )
            })
        },
        "getblockhash",
    );
}

#[test]
fn a_64_mb_body() {
    check_fault(
        |b| {
            count_then(b, |_| {
                let mut body = b"[{\"result\":\"".to_vec();
                body.resize(64 << 20, b'a');
                body.extend_from_slice(b"\",\"error\":null,\"id\":0}]");
                http("200 OK", "", &body)
            })
        },
        "getblockhash",
    );
}

#[test]
fn no_reply_times_out() {
    let (_d, db) = temp_db();
    resync_against(silent(), &db)
        .code(1)
        .stderr(contains("getblockcount: the timeout of the request was reached"));
}

#[test]
fn wait_gives_up_on_a_node_that_never_answers_at_wait_timeout_not_rpc_timeout() {
    // The default --rpc-timeout is 30 s; no attempt may outlast the 5 s left to wait.
    let (_d, db) = temp_db();
    let t0 = Instant::now();
    cmd("ailee_resync_blocks")
        .args([
            "--start-height",
            "0",
            "--wait",
            "--wait-timeout",
            "5",
            "--wait-interval",
            "1",
        ])
        .args(["--bitcoin-rpc", &format!("http://127.0.0.1:{}", silent()), "--db-path"])
        .arg(&db)
        .timeout(Duration::from_secs(120))
        .expect(
            exits(1)
                .says("gave up waiting for the node after")
                .says("(--wait-timeout 5)")
                .says("the timeout of the request was reached"),
        );
    assert!(
        t0.elapsed() < Duration::from_secs(25),
        "waited {:?}: the attempt outlasted --wait-timeout",
        t0.elapsed()
    );
    check_db(&db).expect(exits(0).prints("Blocks: none stored"));
}
