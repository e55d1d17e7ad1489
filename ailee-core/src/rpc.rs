//! The Bitcoin node's JSON-RPC. This is the only module that knows the
//! `bitcoincore-rpc` crate (archived upstream): replacing it touches this file.
//!
//! Only calls that Bitcoin Core and the regtest test node (Bitcoin SV) both
//! serve are used, and headers are never decoded through typed structs (the
//! SV node says `num_tx` where Core says `nTx`). Block hashes come in JSON-RPC
//! batches. Secrets never appear in errors: URLs are shown without userinfo.

use crate::{Error, Result};
// `jsonrpc` is the crate bitcoincore-rpc is built on (same version); it is a
// direct dependency only to enable its minreq transport.
use bitcoincore_rpc::RpcApi;
use serde_json::Value;
use std::path::{Path, PathBuf};
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
}

fn read_cookie(p: &Path) -> Result<(String, String)> {
    let s = crate::snapfile::read_capped(p, crate::snapfile::COOKIE_CAP, "cookie file", false)?;
    let s = String::from_utf8(s).map_err(|_| Error::Usage(format!("{}: not a cookie file (not text)", p.display())))?;
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
        // minreq transport: the node answers large batches with chunked
        // transfer encoding, which the crate's default transport cannot read.
        let mut b = jsonrpc::http::minreq_http::Builder::new()
            .timeout(cfg.timeout)
            .url(&cfg.url)
            .map_err(|e| Error::Usage(format!("--bitcoin-rpc {}: {e}", cfg.url)))?;
        match &cfg.auth {
            Auth::None => {}
            Auth::UserPass { user, password } => b = b.basic_auth(user.clone(), Some(password.clone())),
            Auth::Cookie(p) => {
                let (u, pw) = read_cookie(p)?;
                b = b.basic_auth(u, Some(pw));
            }
        }
        let client = bitcoincore_rpc::Client::from_jsonrpc(jsonrpc::Client::with_transport(b.build()));
        Ok(Rpc {
            client,
            url: cfg.url.clone(),
        })
    }

    fn err(&self, method: &str, e: impl std::fmt::Display) -> Error {
        let m = e.to_string();
        let hint = if m.contains("401") {
            " — authentication refused: check --rpc-user/--rpc-password or --rpc-cookie"
        } else if m.contains("Connection refused") {
            " — is the node running and is the port right?"
        } else {
            ""
        };
        Error::Rpc {
            url: self.url.clone(),
            message: format!("{method}: {m}{hint}"),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn block_count(&self) -> Result<u64> {
        self.client.get_block_count().map_err(|e| self.err("getblockcount", e))
    }

    /// A raw call whose result is returned as JSON (no typed decoding).
    pub fn call(&self, method: &str, params: &[Value]) -> Result<Value> {
        self.client
            .call::<Value>(method, params)
            .map_err(|e| self.err(method, e))
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
        let resps = c.send_batch(&reqs).map_err(|e| self.err("getblockhash batch", e))?;
        let mut out = Vec::with_capacity(resps.len());
        for (h, r) in heights.zip(resps) {
            let r = r.ok_or_else(|| self.err("getblockhash batch", format!("no reply for height {h}")))?;
            if let Some(e) = &r.error {
                return Err(self.err(
                    "getblockhash",
                    format!("height {h}: RPC error {}: {}", e.code, e.message),
                ));
            }
            let hash: String = r
                .result()
                .map_err(|e| self.err("getblockhash", format!("height {h}: {e}")))?;
            if !crate::records::is_hash(&hash) {
                return Err(self.err("getblockhash", format!("height {h}: not a block hash: {hash:?}")));
            }
            out.push(hash);
        }
        Ok(out)
    }

    /// The block holding a wallet or indexed transaction, if it is mined:
    /// `(block hash, confirmations)`.
    pub fn tx_block(&self, txid: &str) -> Result<Option<(String, u64)>> {
        let v = match self.call("gettransaction", &[Value::from(txid)]) {
            Ok(v) => v,
            Err(_) => self.call("getrawtransaction", &[Value::from(txid), Value::from(1)])?,
        };
        let conf = v.get("confirmations").and_then(Value::as_i64).unwrap_or(0);
        match v.get("blockhash").and_then(Value::as_str) {
            Some(b) if conf > 0 => Ok(Some((b.to_string(), conf as u64))),
            _ => Ok(None),
        }
    }

    /// Creates, funds and signs through the node's wallet a transaction whose
    /// only non-change output is an `OP_RETURN` carrying `data`; returns the
    /// signed hex, not yet broadcast. Signing tries Bitcoin Core's
    /// `signrawtransactionwithwallet` first and the older `signrawtransaction`
    /// where the node lacks it.
    pub fn build_op_return_tx(&self, data: &[u8]) -> Result<String> {
        let raw = self.call(
            "createrawtransaction",
            &[
                Value::Array(vec![]),
                serde_json::json!({"data": crate::root::hex(data)}),
            ],
        )?;
        let funded = self.call("fundrawtransaction", &[raw])?;
        let hex = funded
            .get("hex")
            .cloned()
            .ok_or_else(|| self.err("fundrawtransaction", "no hex in reply"))?;
        let signed = match self
            .client
            .call::<Value>("signrawtransactionwithwallet", std::slice::from_ref(&hex))
        {
            Ok(v) => v,
            Err(bitcoincore_rpc::Error::JsonRpc(jsonrpc::Error::Rpc(e))) if e.code == -32601 => {
                self.call("signrawtransaction", &[hex])?
            }
            Err(e) => return Err(self.err("signrawtransactionwithwallet", e)),
        };
        if signed.get("complete").and_then(Value::as_bool) != Some(true) {
            return Err(self.err(
                "signrawtransaction",
                format!("wallet could not sign the transaction: {signed}"),
            ));
        }
        signed
            .get("hex")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| self.err("signrawtransaction", "no hex in reply"))
    }

    /// Broadcasts a signed transaction; returns its txid.
    pub fn send_raw(&self, hex: &str) -> Result<String> {
        let v = self.call("sendrawtransaction", &[Value::from(hex)])?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.err("sendrawtransaction", "no txid in reply"))
    }

    /// Height of a block, from its header as raw JSON.
    pub fn block_height(&self, hash: &str) -> Result<u64> {
        let v = self.call("getblockheader", &[Value::from(hash), Value::from(true)])?;
        v.get("height")
            .and_then(Value::as_u64)
            .ok_or_else(|| self.err("getblockheader", "no height in header"))
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
