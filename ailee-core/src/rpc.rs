//! The Bitcoin node's JSON-RPC. This is the only module that knows the
//! `bitcoincore-rpc` crate (archived upstream): replacing it touches this file.
//!
//! Only calls that Bitcoin Core and the regtest test node (Bitcoin SV) both
//! serve are used, and headers are never decoded through typed structs (the
//! SV node says `num_tx` where Core says `nTx`). Block hashes come in JSON-RPC
//! batches. Secrets never appear in errors: URLs are shown without userinfo.
//!
//! Below the client sits [`transport`] (no redirects, bounded replies); every
//! value a reply carries goes through [`reply`] before it is used or stored.

pub mod reply;
pub mod transport;

use crate::{Error, Result};
// `jsonrpc` is the crate bitcoincore-rpc is built on (same version); its
// `Transport` trait is implemented by our own HTTP transport.
use bitcoincore_rpc::RpcApi;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How to authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    UserPass { user: String, password: String },
    Cookie(PathBuf),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => write!(f, "none"),
            Auth::UserPass { user, .. } => write!(f, "user {user:?} with password"),
            Auth::Cookie(p) => write!(f, "cookie file {}", p.display()),
        }
    }
}

/// Where and how to reach the node.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    /// URL without userinfo.
    pub url: String,
    pub auth: Auth,
    pub timeout: Duration,
}

/// Splits `http://user:pass@host:port/path` into the URL without userinfo and
/// the credentials (SPEC §2): the userinfo runs up to the *last* `@` that is
/// followed by a host (a password may hold `/`, `?`, `#`, `@`), and user and
/// password are percent-decoded.
pub fn split_userinfo(url: &str) -> (String, Option<(String, String)>) {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    let at = rest
        .char_indices()
        .rev()
        .filter(|&(_, c)| c == '@')
        .map(|(i, _)| i)
        .find(|&i| {
            let after = &rest[i + 1..];
            let host = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_' | b'%'))
        });
    match at {
        Some(i) => {
            let (info, host) = (&rest[..i], &rest[i + 1..]);
            let (u, p) = info.split_once(':').unwrap_or((info, ""));
            (format!("{scheme}{host}"), Some((percent_decode(u), percent_decode(p))))
        }
        None => (url.to_string(), None),
    }
}

/// `%XX` sequences decoded; anything else (a lone `%`) kept as is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Environment variables read for credentials when no option gives them.
pub const ENV_USER: &str = "AILEE_RPC_USER";
pub const ENV_PASSWORD: &str = "AILEE_RPC_PASSWORD";
pub const ENV_COOKIE: &str = "AILEE_RPC_COOKIE";

impl RpcConfig {
    /// Credentials, first found: `--rpc-user/--rpc-password`, `--rpc-cookie`,
    /// URL userinfo, `AILEE_RPC_USER/AILEE_RPC_PASSWORD`, `AILEE_RPC_COOKIE`.
    pub fn resolve(
        url: &str,
        user: Option<String>,
        password: Option<String>,
        cookie: Option<PathBuf>,
        env: impl Fn(&str) -> Option<String>,
        timeout: Duration,
    ) -> Result<RpcConfig> {
        let (bare, info) = split_userinfo(url);
        if !bare.starts_with("http://") {
            return Err(Error::Usage(format!(
                "--bitcoin-rpc must be an http:// URL (got {}): the node's RPC speaks plain HTTP",
                split_userinfo(url).0
            )));
        }
        let auth = if let Some(user) = user {
            let password = password
                .or_else(|| env(ENV_PASSWORD))
                .ok_or_else(|| Error::Usage(format!("--rpc-user given without --rpc-password (or {ENV_PASSWORD})")))?;
            Auth::UserPass { user, password }
        } else if let Some(c) = cookie {
            Auth::Cookie(c)
        } else if let Some((user, password)) = info {
            Auth::UserPass { user, password }
        } else if let (Some(user), Some(password)) = (env(ENV_USER), env(ENV_PASSWORD)) {
            Auth::UserPass { user, password }
        } else if let Some(c) = env(ENV_COOKIE) {
            Auth::Cookie(PathBuf::from(c))
        } else {
            Auth::None
        };
        Ok(RpcConfig {
            url: bare,
            auth,
            timeout,
        })
    }
}

/// A connection to the node.
pub struct Rpc {
    client: bitcoincore_rpc::Client,
    url: String,
    /// The transport's timeout and reply limit, changed per call where needed.
    limits: std::sync::Arc<transport::Limits>,
    /// The timeout the connection was configured with.
    timeout: Duration,
    /// Largest `getblock` reply per block of the last batch (bytes; 0 before
    /// the first): sizes the next batch of raw blocks.
    block_reply_bytes: AtomicU64,
}

/// Largest reply asked for in one batch of raw blocks (hex, so a block
/// counts twice its size). A batch that would exceed it is split; a block
/// larger than it alone is fetched alone, up to [`transport::MAX_REPLY_BYTES`].
/// Memory while scanning stays a small multiple of this, whatever
/// `--block-batch` says.
pub const BLOCK_BATCH_BYTES: u64 = 16 << 20;

/// RPC error code of a node still starting ("Loading block index…").
const RPC_IN_WARMUP: i64 = -28;

/// Largest cookie file read (bitcoind's is `__cookie__:` + 64 hex digits).
const MAX_COOKIE_BYTES: u64 = 4096;

fn read_cookie(p: &Path) -> Result<(String, String)> {
    use std::io::Read;
    // A FIFO or device would block or never end: refused before it is opened.
    let md = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
    if !md.is_file() {
        return Err(Error::Usage(format!(
            "{}: not a regular file (a cookie file is)",
            p.display()
        )));
    }
    let mut s = String::new();
    std::fs::File::open(p)
        .and_then(|f| f.take(MAX_COOKIE_BYTES + 1).read_to_string(&mut s))
        .map_err(|e| Error::io(p, e))?;
    if s.len() as u64 > MAX_COOKIE_BYTES {
        return Err(Error::Usage(format!(
            "{}: larger than {MAX_COOKIE_BYTES} bytes, not a cookie file",
            p.display()
        )));
    }
    let s = s.trim_end();
    match s.split_once(':') {
        Some((u, pw)) => Ok((u.to_string(), pw.to_string())),
        None => Err(Error::Usage(format!(
            "{}: not a cookie file (expected user:password)",
            p.display()
        ))),
    }
}

impl Rpc {
    pub fn connect(cfg: &RpcConfig) -> Result<Rpc> {
        let creds = match &cfg.auth {
            Auth::None => None,
            Auth::UserPass { user, password } => Some((user.clone(), password.clone())),
            Auth::Cookie(p) => Some(read_cookie(p)?),
        };
        let limits = transport::Limits::new(cfg.timeout);
        let http = transport::Http::new(
            &cfg.url,
            creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
            limits.clone(),
        );
        let client = bitcoincore_rpc::Client::from_jsonrpc(jsonrpc::Client::with_transport(http));
        Ok(Rpc {
            client,
            url: cfg.url.clone(),
            limits,
            timeout: cfg.timeout,
            block_reply_bytes: AtomicU64::new(0),
        })
    }

    /// Bounds each request's timeout by `t` (never above the configured
    /// `--rpc-timeout`); `None` restores the configured one. `--wait` uses it
    /// so that no attempt outlasts the time left to wait.
    pub fn limit_timeout(&self, t: Option<Duration>) {
        self.limits.set_timeout(t.map_or(self.timeout, |t| t.min(self.timeout)));
    }

    /// A value of the node's reply failed [`reply`]'s validation: exit 1,
    /// naming the method (the node answered wrong; nothing was read from it).
    fn invalid(&self, method: &str, e: reply::Invalid) -> Error {
        Error::Rpc {
            url: self.url.clone(),
            message: format!("{method}: reply refused: {e}"),
        }
    }

    /// A failure described by text (what the server sent is clipped to one
    /// bounded line); no hint is guessed from the text.
    fn err(&self, method: &str, e: impl std::fmt::Display) -> Error {
        Error::Rpc {
            url: self.url.clone(),
            message: format!("{method}: {}", transport::clip(&e.to_string(), 1000)),
        }
    }

    /// An RPC error object of the node: `code N: message`.
    fn rpc_error(&self, method: &str, what: &str, code: i64, message: &str) -> Error {
        let m = format!("{method}: {what}code {code}: {}", transport::clip(message, 1000));
        if code == RPC_IN_WARMUP {
            Error::RpcNotReady {
                url: self.url.clone(),
                message: m,
            }
        } else {
            Error::Rpc {
                url: self.url.clone(),
                message: m,
            }
        }
    }

    /// A failed call, classified by what failed (transport error kind, HTTP
    /// status, RPC error code) — never by searching the text — with the hint
    /// that kind calls for.
    fn failed(&self, method: &str, e: &jsonrpc::Error) -> Error {
        match e {
            jsonrpc::Error::Rpc(r) => self.rpc_error(method, "", i64::from(r.code), &r.message),
            jsonrpc::Error::Transport(t) => match t.downcast_ref::<transport::TransportError>() {
                Some(te) => {
                    use transport::TransportError as T;
                    let hint = match te {
                        T::Http { status: 401 | 403, .. } => {
                            " — authentication refused: check --rpc-user/--rpc-password or --rpc-cookie"
                        }
                        T::Http { status: 503, .. } => " — the node (or a proxy in front of it) is not ready",
                        T::Unreachable(_) => " — is the node running and is the port right?",
                        T::Timeout(_) => " — no complete reply in time (--rpc-timeout)",
                        _ => "",
                    };
                    let message = format!("{method}: {}{hint}", transport::clip(&te.to_string(), 1000));
                    if te.not_ready() {
                        Error::RpcNotReady {
                            url: self.url.clone(),
                            message,
                        }
                    } else {
                        Error::Rpc {
                            url: self.url.clone(),
                            message,
                        }
                    }
                }
                None => self.err(method, t),
            },
            other => self.err(method, other),
        }
    }

    /// [`Rpc::failed`] for an error of the `bitcoincore-rpc` client.
    fn client_failed(&self, method: &str, e: &bitcoincore_rpc::Error) -> Error {
        match e {
            bitcoincore_rpc::Error::JsonRpc(j) => self.failed(method, j),
            other => self.err(method, other),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn block_count(&self) -> Result<u64> {
        let v = self.call("getblockcount", &[])?;
        reply::height(&v).map_err(|e| self.invalid("getblockcount", e))
    }

    /// A raw call whose result is returned as JSON (no typed decoding).
    pub fn call(&self, method: &str, params: &[Value]) -> Result<Value> {
        self.client
            .call::<Value>(method, params)
            .map_err(|e| self.client_failed(method, &e))
    }

    /// `getblockhash` for every height of `heights`, in one batch request.
    pub fn block_hashes(&self, heights: std::ops::RangeInclusive<u64>) -> Result<Vec<String>> {
        let params: Vec<Box<serde_json::value::RawValue>> = heights
            .clone()
            .map(|h| serde_json::value::to_raw_value(&[h]))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err("getblockhash", e))?;
        let c = self.client.get_jsonrpc_client();
        let reqs: Vec<_> = params
            .iter()
            .map(|p| c.build_request("getblockhash", Some(p)))
            .collect();
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        let resps = c.send_batch(&reqs).map_err(|e| self.failed("getblockhash batch", &e))?;
        let mut out = Vec::with_capacity(resps.len());
        for (h, r) in heights.zip(resps) {
            let r = r.ok_or_else(|| self.err("getblockhash batch", format!("no reply for height {h}")))?;
            if let Some(e) = &r.error {
                return Err(self.rpc_error("getblockhash", &format!("height {h}: "), i64::from(e.code), &e.message));
            }
            let hash: Value = r
                .result()
                .map_err(|e| self.err("getblockhash", format!("height {h}: {e}")))?;
            let hash = reply::block_hash(&hash)
                .map_err(|e| self.invalid("getblockhash", reply::Invalid(format!("height {h}: {e}"))))?;
            out.push(hash);
        }
        Ok(out)
    }

    /// Creates, funds and signs through the node's wallet a transaction whose
    /// only non-change output is an `OP_RETURN` carrying `data`; returns the
    /// signed hex, not yet broadcast. Signing tries Bitcoin Core's
    /// `signrawtransactionwithwallet` first and the older `signrawtransaction`
    /// where the node lacks it.
    ///
    /// With an anchoring identity, the transaction spends only the wallet's
    /// confirmed outputs of that identity, and its change goes back to it, so
    /// the anchor is provably the operator's (SPEC §2); a wallet that cannot
    /// fund it that way is an error, nothing is signed.
    pub fn build_op_return_tx(
        &self,
        data: &[u8],
        identity: Option<&crate::identity::AnchorIdentity>,
    ) -> Result<String> {
        let (inputs, options, own) = match identity {
            Some(id) => self.identity_inputs(id)?,
            None => (Vec::new(), serde_json::json!({}), Vec::new()),
        };
        let raw = self.call(
            "createrawtransaction",
            &[
                Value::Array(inputs),
                serde_json::json!({"data": crate::root::hex(data)}),
            ],
        )?;
        let funded = self.call("fundrawtransaction", &[raw, options])?;
        let hex = funded
            .get("hex")
            .cloned()
            .ok_or_else(|| self.err("fundrawtransaction", "no hex in reply"))?;
        if identity.is_some() {
            let bytes = hex.as_str().and_then(crate::block::unhex).unwrap_or_default();
            let tx = crate::block::parse_tx_bytes(&bytes)
                .map_err(|e| self.invalid("fundrawtransaction", reply::Invalid(e.to_string())))?;
            if let Some(i) = tx.inputs.iter().find(|i| !own.contains(&(i.txid.clone(), i.vout))) {
                return Err(self.err(
                    "fundrawtransaction",
                    format!(
                        "the wallet added input {}:{}, which is not the anchoring identity's: send more to the \
                         identity's address (nothing was signed or broadcast)",
                        i.txid, i.vout
                    ),
                ));
            }
        }
        let signed = match self
            .client
            .call::<Value>("signrawtransactionwithwallet", std::slice::from_ref(&hex))
        {
            Ok(v) => v,
            Err(bitcoincore_rpc::Error::JsonRpc(jsonrpc::Error::Rpc(e))) if e.code == -32601 => {
                self.call("signrawtransaction", &[hex])?
            }
            Err(e) => return Err(self.client_failed("signrawtransactionwithwallet", &e)),
        };
        if signed.get("complete").and_then(Value::as_bool) != Some(true) {
            return Err(self.err(
                "signrawtransaction",
                format!("wallet could not sign the transaction: {signed}"),
            ));
        }
        let hex = signed.get("hex").unwrap_or(&Value::Null);
        reply::signed_op_return_tx(hex, data).map_err(|e| self.invalid("signrawtransaction", e))?;
        Ok(hex.as_str().unwrap_or_default().to_ascii_lowercase())
    }

    /// The wallet's spendable outputs of `id` (largest first, up to 0.01
    /// coin, enough for any anchor's fee; unconfirmed ones too — the wallet
    /// spends its own change, so anchors need not wait for a block), as
    /// `createrawtransaction` inputs, the `fundrawtransaction` options sending
    /// the change back to the identity, and the outpoints chosen.
    #[allow(clippy::type_complexity)]
    fn identity_inputs(&self, id: &crate::identity::AnchorIdentity) -> Result<(Vec<Value>, Value, Vec<(String, u32)>)> {
        const ENOUGH_SATS: u64 = 1_000_000;
        let utxos = self.call("listunspent", &[Value::from(0), Value::from(9_999_999)])?;
        let mut mine: Vec<(u64, String, u32, Option<String>)> = Vec::new();
        for u in utxos.as_array().map(Vec::as_slice).unwrap_or_default() {
            let script = u
                .get("scriptPubKey")
                .and_then(Value::as_str)
                .and_then(crate::block::unhex);
            let spendable = u.get("spendable").and_then(Value::as_bool).unwrap_or(true);
            let (Some(script), Some(txid), Some(vout), Some(amount)) = (
                script,
                u.get("txid").and_then(Value::as_str),
                u.get("vout")
                    .and_then(Value::as_u64)
                    .and_then(|v| u32::try_from(v).ok()),
                u.get("amount").and_then(Value::as_f64),
            ) else {
                continue;
            };
            if spendable && id.owns(&script) {
                let sats = (amount * 1e8).round() as u64;
                let address = u.get("address").and_then(Value::as_str).map(str::to_string);
                mine.push((sats, txid.to_ascii_lowercase(), vout, address));
            }
        }
        mine.sort_by_key(|m| std::cmp::Reverse(m.0));
        let (mut inputs, mut own, mut total, mut change) = (Vec::new(), Vec::new(), 0u64, None);
        for (sats, txid, vout, address) in mine {
            if total >= ENOUGH_SATS {
                break;
            }
            inputs.push(serde_json::json!({"txid": txid, "vout": vout}));
            own.push((txid, vout));
            total = total.saturating_add(sats);
            change = change.or(address);
        }
        if inputs.is_empty() {
            return Err(self.err(
                "listunspent",
                format!(
                    "the wallet holds no spendable output of the anchoring identity ({}): send coins to its \
                     address and run again",
                    id.source.display()
                ),
            ));
        }
        let options = match change {
            Some(a) => serde_json::json!({"changeAddress": a}),
            None => serde_json::json!({}),
        };
        Ok((inputs, options, own))
    }

    /// Broadcasts a signed transaction; returns its txid, which must be the
    /// txid of `hex` (64 hex digits, lower-case), or the call fails and the
    /// caller stores nothing.
    pub fn send_raw(&self, hex: &str) -> Result<String> {
        let expected = reply::signed_txid(&Value::from(hex)).map_err(|e| self.invalid("sendrawtransaction", e))?;
        let v = self.call("sendrawtransaction", &[Value::from(hex)])?;
        let refused = |e: reply::Invalid| {
            self.invalid(
                "sendrawtransaction",
                reply::Invalid(format!(
                    "{e} (transaction {expected} may have been broadcast and is not recorded: \
                     look it up with getrawtransaction before anchoring again)"
                )),
            )
        };
        let txid = reply::txid(&v).map_err(refused)?;
        if txid != expected {
            return Err(refused(reply::Invalid(format!(
                "the node answered txid {txid} for the transaction whose txid is {expected}"
            ))));
        }
        Ok(txid)
    }
}

/// A 64-digit hex hash from the node, lower-cased; `None` for anything else.
/// Hashes are compared and stored in this one case (hex is hex).
pub fn hash64(v: &Value) -> Option<String> {
    reply::block_hash(v).ok()
}

/// The node's view of its chain, read in one call (`getblockchaininfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    /// Height of the best block.
    pub blocks: u64,
    /// Hash of the best block (lower case).
    pub best: String,
    /// Headers the node knows of, when it says.
    pub headers: Option<u64>,
    /// Initial block download (Bitcoin Core says so; the SV test node does not).
    pub ibd: bool,
}

/// One reply of a batch: the result, or the node's error code and message.
pub type Reply = std::result::Result<Value, (i64, String)>;

/// Where the node says a transaction is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxPlace {
    /// Mined in this block (lower-case hash), with this many confirmations.
    InBlock { block: String, confirmations: u64 },
    /// Known but not in a best-chain block (mempool, or a block reorged away).
    Unmined,
    /// The node does not know it (`-5`: not in the mempool, no txindex entry, not the wallet's).
    Unknown(String),
}

/// Is `e` a node that is not ready to answer — nothing listening, the
/// connection reset, no reply within the timeout, HTTP 503 (a proxy in front
/// of a restarting node), RPC warm-up (`-28`, "Loading block index…") —
/// rather than one that answered wrong? Decided by the failure's kind when
/// it happened ([`Error::RpcNotReady`]), not by its text.
pub fn not_ready(e: &Error) -> bool {
    matches!(e, Error::RpcNotReady { .. })
}

/// A raw block from the node: it parses whole and its hash is the one
/// asked for (checked when it was fetched, [`Rpc::blocks`]).
#[derive(Debug, Clone)]
pub struct RawBlock {
    /// The block's hash (lower case), as asked for and as computed.
    pub hash: String,
    bytes: Vec<u8>,
    url: String,
}

impl RawBlock {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The parsed block. It parsed when fetched, so this does not fail; a
    /// failure would be reported as the invalid reply it would be.
    pub fn block(&self) -> Result<crate::block::Block<'_>> {
        crate::block::parse(&self.bytes).map_err(|e| Error::Rpc {
            url: self.url.clone(),
            message: format!("getblock: reply refused: block {}: {e}", self.hash),
        })
    }
}

/// The iterator of [`Rpc::blocks`].
pub struct Blocks<'r> {
    rpc: &'r Rpc,
    hashes: &'r [String],
    next: usize,
    ready: std::collections::VecDeque<RawBlock>,
    done: bool,
}

impl Iterator for Blocks<'_> {
    type Item = Result<RawBlock>;

    fn next(&mut self) -> Option<Result<RawBlock>> {
        if let Some(b) = self.ready.pop_front() {
            return Some(Ok(b));
        }
        if self.done || self.next >= self.hashes.len() {
            return None;
        }
        if let Err(e) = crate::cancel::check() {
            self.done = true;
            return Some(Err(e));
        }
        match self.rpc.next_blocks(&self.hashes[self.next..]) {
            Ok(v) => {
                self.next += v.len();
                self.ready = v.into();
                self.ready.pop_front().map(Ok)
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// RPC error code of "no such transaction" and of "block height out of range".
const RPC_NOT_FOUND: i64 = -5;
const RPC_OUT_OF_RANGE: i64 = -8;

impl Rpc {
    /// Sends one JSON-RPC batch of `method` with each of `params` (arrays).
    pub fn batch(&self, method: &str, params: &[Value]) -> Result<Vec<Reply>> {
        self.batch_mixed(&params.iter().map(|p| (method, p.clone())).collect::<Vec<_>>())
    }

    /// One JSON-RPC batch of different calls; replies in request order.
    pub fn batch_mixed(&self, calls: &[(&str, Value)]) -> Result<Vec<Reply>> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let what = calls[0].0;
        let raw: Vec<Box<serde_json::value::RawValue>> = calls
            .iter()
            .map(|(_, p)| serde_json::value::to_raw_value(p))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(what, e))?;
        let c = self.client.get_jsonrpc_client();
        let reqs: Vec<_> = calls
            .iter()
            .zip(&raw)
            .map(|((m, _), p)| c.build_request(m, Some(p)))
            .collect();
        let resps = c
            .send_batch(&reqs)
            .map_err(|e| self.failed(&format!("{what} batch"), &e))?;
        if resps.len() != calls.len() {
            return Err(self.err(
                &format!("{what} batch"),
                format!("{} replies to {} requests", resps.len(), calls.len()),
            ));
        }
        let mut out = Vec::with_capacity(resps.len());
        for (i, r) in resps.into_iter().enumerate() {
            let r = r.ok_or_else(|| self.err(&format!("{what} batch"), format!("no reply to request {i}")))?;
            out.push(match r.error {
                Some(e) => Err((i64::from(e.code), e.message)),
                None => Ok(r
                    .result
                    .as_deref()
                    .and_then(|v| serde_json::from_str(v.get()).ok())
                    .unwrap_or(Value::Null)),
            });
        }
        Ok(out)
    }

    /// `getblockchaininfo`: tip height and hash in one reply.
    pub fn chain_info(&self) -> Result<ChainInfo> {
        let v = self.call("getblockchaininfo", &[])?;
        let blocks = reply::height(v.get("blocks").unwrap_or(&Value::Null))
            .map_err(|e| self.invalid("getblockchaininfo", reply::Invalid(format!("blocks: {e}"))))?;
        let best = reply::block_hash(v.get("bestblockhash").unwrap_or(&Value::Null))
            .map_err(|e| self.invalid("getblockchaininfo", reply::Invalid(format!("bestblockhash: {e}"))))?;
        Ok(ChainInfo {
            blocks,
            best,
            headers: v.get("headers").and_then(Value::as_u64),
            ibd: v.get("initialblockdownload").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// The hash at `height` on the best chain, `None` above the tip.
    pub fn block_hash_at(&self, height: u64) -> Result<Option<String>> {
        match self.call_reply("getblockhash", &[Value::from(height)])? {
            Ok(v) => reply::block_hash(&v)
                .map(Some)
                .map_err(|e| self.invalid("getblockhash", reply::Invalid(format!("height {height}: {e}")))),
            Err((RPC_OUT_OF_RANGE, _)) => Ok(None),
            Err((code, m)) => Err(self.rpc_error("getblockhash", &format!("height {height}: "), code, &m)),
        }
    }

    fn call_reply(&self, method: &str, params: &[Value]) -> Result<Reply> {
        Ok(self
            .batch_mixed(&[(method, Value::Array(params.to_vec()))])?
            .pop()
            .unwrap_or(Ok(Value::Null)))
    }

    /// Hashes of `heights` in one batch, ending with `getblockhash(pin.0)`:
    /// `None` when the node no longer has `pin.1` there — the chain moved
    /// while (or before) these were read, so they may mix two chains.
    pub fn block_hashes_pinned(
        &self,
        heights: std::ops::RangeInclusive<u64>,
        pin: (u64, &str),
    ) -> Result<Option<Vec<String>>> {
        let mut calls: Vec<(&str, Value)> = heights
            .clone()
            .map(|h| ("getblockhash", serde_json::json!([h])))
            .collect();
        calls.push(("getblockhash", serde_json::json!([pin.0])));
        let mut replies = self.batch_mixed(&calls)?;
        let last = replies.pop();
        let invalid =
            |h: u64, e: reply::Invalid| self.invalid("getblockhash", reply::Invalid(format!("height {h}: {e}")));
        match last {
            Some(Ok(v)) => {
                if reply::block_hash(&v).map_err(|e| invalid(pin.0, e))? != pin.1 {
                    return Ok(None);
                }
            }
            Some(Err((RPC_OUT_OF_RANGE, _))) => return Ok(None),
            Some(Err((code, m))) => {
                return Err(self.rpc_error("getblockhash", &format!("height {}: ", pin.0), code, &m))
            }
            None => return Err(self.err("getblockhash batch", "no replies")),
        }
        let mut out = Vec::with_capacity(replies.len());
        for (h, r) in heights.zip(replies) {
            match r {
                Ok(v) => out.push(reply::block_hash(&v).map_err(|e| invalid(h, e))?),
                // Below the pinned tip, a height out of range means the chain moved.
                Err((RPC_OUT_OF_RANGE, _)) => return Ok(None),
                Err((code, m)) => return Err(self.rpc_error("getblockhash", &format!("height {h}: "), code, &m)),
            }
        }
        Ok(Some(out))
    }

    /// Raw blocks (`getblock HASH 0`), each parsed and checked to be the
    /// block asked for (see [`Rpc::blocks`]), all in memory: for a few
    /// blocks. A scan uses [`Rpc::blocks`].
    pub fn raw_blocks(&self, hashes: &[String]) -> Result<Vec<Vec<u8>>> {
        self.blocks(hashes).map(|b| b.map(RawBlock::into_bytes)).collect()
    }

    /// One raw block, validated as by [`Rpc::blocks`].
    pub fn raw_block(&self, hash: &str) -> Result<RawBlock> {
        let hashes = [hash.to_ascii_lowercase()];
        self.blocks(&hashes)
            .next()
            .unwrap_or_else(|| Err(self.err("getblock", format!("block {hash}: no reply"))))
    }

    /// The raw blocks of `hashes`, in order, fetched in JSON-RPC batches
    /// bounded by bytes ([`BLOCK_BATCH_BYTES`]) as they are consumed: at most
    /// one batch is held. Every block is validated in this one place
    /// ([`reply::raw_block`]): hex, a block that parses whole, and the hash
    /// asked for. A reply that fails is an invalid-reply error (exit 1)
    /// naming `getblock` and the block — the node answered wrong, nothing is
    /// concluded from it. The iteration ends after the first error.
    pub fn blocks<'r>(&'r self, hashes: &'r [String]) -> Blocks<'r> {
        Blocks {
            rpc: self,
            hashes,
            next: 0,
            ready: std::collections::VecDeque::new(),
            done: false,
        }
    }

    /// The next batch from `rest` (non-empty): as many blocks as the last
    /// batch's largest block says fit in [`BLOCK_BATCH_BYTES`] (one at
    /// first), halved while the reply is refused as too large; a block too
    /// large alone is fetched alone up to the transport's cap.
    fn next_blocks(&self, rest: &[String]) -> Result<Vec<RawBlock>> {
        let per = self.block_reply_bytes.load(Ordering::Relaxed);
        let fit = BLOCK_BATCH_BYTES.checked_div(per).map_or(1, |n| n.max(1));
        let mut k = usize::try_from(fit).unwrap_or(usize::MAX).min(rest.len()).max(1);
        loop {
            let limit = if k == 1 {
                transport::MAX_REPLY_BYTES
            } else {
                BLOCK_BATCH_BYTES
            };
            match self.getblock_batch(&rest[..k], limit) {
                Ok(v) => return Ok(v),
                Err(None) if k > 1 => k /= 2,
                Err(None) => {
                    return Err(self.err(
                        "getblock",
                        format!(
                            "block {}: the reply is larger than the {} bytes one reply may hold \
                             (a block over {} MiB): it cannot be read (this is not a --block-batch matter: \
                             batches are split to fit)",
                            rest[0],
                            transport::MAX_REPLY_BYTES,
                            transport::MAX_REPLY_BYTES / 2 / (1 << 20)
                        ),
                    ))
                }
                Err(Some(e)) => return Err(e),
            }
        }
    }

    /// One `getblock HASH 0` batch with replies limited to `limit` bytes;
    /// `Err(None)` when the reply was refused as larger than that.
    fn getblock_batch(&self, hashes: &[String], limit: u64) -> std::result::Result<Vec<RawBlock>, Option<Error>> {
        let params: Vec<Box<serde_json::value::RawValue>> = hashes
            .iter()
            .map(|h| serde_json::value::to_raw_value(&(h, 0)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Some(self.err("getblock", e)))?;
        let c = self.client.get_jsonrpc_client();
        let reqs: Vec<_> = params.iter().map(|p| c.build_request("getblock", Some(p))).collect();
        self.limits.set_max_reply(limit);
        let sent = c.send_batch(&reqs);
        self.limits.set_max_reply(transport::MAX_REPLY_BYTES);
        let resps = match sent {
            Ok(r) => r,
            Err(jsonrpc::Error::Transport(t))
                if matches!(
                    t.downcast_ref::<transport::TransportError>(),
                    Some(transport::TransportError::TooLarge { .. })
                ) && limit < transport::MAX_REPLY_BYTES =>
            {
                return Err(None)
            }
            Err(e) => return Err(Some(self.failed("getblock batch", &e))),
        };
        if resps.len() != hashes.len() {
            return Err(Some(self.err(
                "getblock batch",
                format!("{} replies to {} requests", resps.len(), hashes.len()),
            )));
        }
        let mut out = Vec::with_capacity(hashes.len());
        let mut largest = 0u64;
        for (h, r) in hashes.iter().zip(resps) {
            let r = r.ok_or_else(|| Some(self.err("getblock batch", format!("no reply for block {h}"))))?;
            if let Some(e) = &r.error {
                return Err(Some(self.rpc_error(
                    "getblock",
                    &format!("block {h}: "),
                    i64::from(e.code),
                    &e.message,
                )));
            }
            let text = r.result.as_deref().map_or("null", |v| v.get());
            largest = largest.max(text.len() as u64);
            let bytes = reply::raw_block(text, h).map_err(|e| Some(self.invalid("getblock", e)))?;
            out.push(RawBlock {
                hash: h.to_ascii_lowercase(),
                bytes,
                url: self.url.clone(),
            });
        }
        // A little room for the JSON around each result.
        self.block_reply_bytes.store(largest + 100, Ordering::Relaxed);
        Ok(out)
    }

    /// Where each transaction is, one batch of `getrawtransaction TXID 1`;
    /// transactions the node's index does not know are asked of its wallet
    /// (`gettransaction`), which knows its own transactions without `-txindex`.
    pub fn tx_places(&self, txids: &[String]) -> Result<Vec<TxPlace>> {
        let params: Vec<Value> = txids.iter().map(|t| serde_json::json!([t, 1])).collect();
        let mut out = Vec::with_capacity(txids.len());
        for (t, r) in txids.iter().zip(self.batch("getrawtransaction", &params)?) {
            let place = match r {
                Ok(v) => self.place_of("getrawtransaction", t, &v)?,
                Err((RPC_NOT_FOUND, m)) => match self.call_reply("gettransaction", &[Value::from(t.as_str())])? {
                    Ok(v) => self.place_of("gettransaction", t, &v)?,
                    Err(_) => TxPlace::Unknown(m),
                },
                Err((code, m)) => return Err(self.rpc_error("getrawtransaction", &format!("{t}: "), code, &m)),
            };
            out.push(place);
        }
        Ok(out)
    }

    fn place_of(&self, method: &str, txid: &str, v: &Value) -> Result<TxPlace> {
        let invalid = |e: reply::Invalid| self.invalid(method, reply::Invalid(format!("{txid}: {e}")));
        reply::same_hash("txid", v.get("txid"), txid).map_err(invalid)?;
        let conf = match v.get("confirmations") {
            None => 0,
            Some(c) => reply::confirmations(c).map_err(invalid)?,
        };
        if conf == 0 {
            return Ok(TxPlace::Unmined);
        }
        let block = reply::block_hash(v.get("blockhash").unwrap_or(&Value::Null)).map_err(invalid)?;
        Ok(TxPlace::InBlock {
            block,
            confirmations: conf,
        })
    }
}

impl Rpc {
    /// The raw bytes of each transaction, one batch of `getrawtransaction
    /// TXID 0`; one the node's index does not know is asked of its wallet
    /// (`gettransaction`, its `hex`); `None` where neither knows it. Each
    /// reply is parsed and must hash to the id asked for (else exit 1: a
    /// reply that fails validation).
    pub fn raw_txs(&self, txids: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let params: Vec<Value> = txids.iter().map(|t| serde_json::json!([t, 0])).collect();
        let mut out = Vec::with_capacity(txids.len());
        for (t, r) in txids.iter().zip(self.batch("getrawtransaction", &params)?) {
            let (method, hex) = match r {
                Ok(v) => ("getrawtransaction", v),
                Err((RPC_NOT_FOUND, _)) => match self.call_reply("gettransaction", &[Value::from(t.as_str())])? {
                    Ok(v) => ("gettransaction", v.get("hex").cloned().unwrap_or(Value::Null)),
                    Err(_) => {
                        out.push(None);
                        continue;
                    }
                },
                Err((code, m)) => return Err(self.err("getrawtransaction", format!("{t}: RPC error {code}: {m}"))),
            };
            let invalid = |why: String| self.invalid(method, reply::Invalid(format!("{t}: {why}")));
            let raw = hex
                .as_str()
                .and_then(crate::block::unhex)
                .ok_or_else(|| invalid("reply is not raw transaction hex".into()))?;
            let id = crate::block::parse_tx_bytes(&raw)
                .map_err(|e| invalid(e.to_string()))?
                .txid();
            if !id.eq_ignore_ascii_case(t) {
                return Err(invalid(format!("the node returned transaction {id}")));
            }
            out.push(Some(raw));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_split_off_the_url() {
        assert_eq!(
            split_userinfo("http://u:p%40ss@127.0.0.1:8332/wallet/x"),
            (
                "http://127.0.0.1:8332/wallet/x".into(),
                Some(("u".into(), "p@ss".into()))
            )
        );
        // A password with `/`, `=`, `+`, `@`, `?`, `#`: split at the last `@` before the host.
        for pw in ["k3J/9+aQxZ==", "a@b/c?d#e", "x%2Fy"] {
            let (bare, info) = split_userinfo(&format!("http://op:{pw}@127.0.0.1:18443"));
            assert_eq!(bare, "http://127.0.0.1:18443");
            let want = if pw == "x%2Fy" { "x/y" } else { pw };
            assert_eq!(info, Some(("op".into(), want.into())));
        }
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(
            split_userinfo("http://127.0.0.1:8332"),
            ("http://127.0.0.1:8332".into(), None)
        );
    }

    #[test]
    fn credentials_precedence_and_no_secret_in_debug() {
        let env = |k: &str| match k {
            ENV_USER => Some("envu".to_string()),
            ENV_PASSWORD => Some("envp".to_string()),
            _ => None,
        };
        let t = Duration::from_secs(1);
        let c = RpcConfig::resolve("http://a:b@h:1", None, None, None, env, t).unwrap();
        assert_eq!(
            c.auth,
            Auth::UserPass {
                user: "a".into(),
                password: "b".into()
            }
        );
        assert_eq!(c.url, "http://h:1");
        let c = RpcConfig::resolve("http://h:1", None, None, None, env, t).unwrap();
        assert_eq!(
            c.auth,
            Auth::UserPass {
                user: "envu".into(),
                password: "envp".into()
            }
        );
        let c = RpcConfig::resolve("http://a:b@h:1", Some("x".into()), Some("y".into()), None, env, t).unwrap();
        assert_eq!(
            c.auth,
            Auth::UserPass {
                user: "x".into(),
                password: "y".into()
            }
        );
        assert_eq!(format!("{:?}", c.auth), "user \"x\" with password");
        assert!(RpcConfig::resolve("https://h:1", None, None, None, |_| None, t).is_err());
    }
}
