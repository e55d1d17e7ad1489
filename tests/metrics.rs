//! Metrics and alerts (SPEC §6): the shared textfile writer (`ailee_metrics
//! write`), the monitor, the resync and drill hooks, `promtool check metrics`
//! on every file the tools write, the alert rules under `promtool check
//! rules` / `promtool test rules`, and node_exporter scraping it all.

use ailee_core::metrics::{Kind, CATALOG};
use ailee_recovery::{bash, cmd, db_tool, exits, init_db, root, vector, Expecting, Node};
use predicates::str::contains;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn promtool(args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let mut c = Command::new("promtool");
    c.args(args)
        .current_dir(root().join("scripts/examples/prometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .expect("promtool (Debian's prometheus package) must be installed");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `promtool check metrics` must pass on the file, with no lint complaint.
fn check_metrics(path: &Path) {
    let data = std::fs::read(path).unwrap();
    let (ok, out) = promtool(&["check", "metrics"], Some(&data));
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics {}:\n{out}\n{}",
        path.display(),
        String::from_utf8_lossy(&data)
    );
}

/// Samples of a file in the exposition format: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn read_samples(path: &Path) -> BTreeMap<String, f64> {
    samples(&std::fs::read_to_string(path).unwrap())
}

fn write(dir: &Path, writer: &str, args: &[&str]) -> assert_cmd::Command {
    let mut c = cmd("ailee_metrics");
    c.arg("write")
        .arg("--metrics-dir")
        .arg(dir)
        .args(["--writer", writer])
        .args(args);
    c
}

// ---------------------------------------------------------------------------
// The alert rules

#[test]
fn alert_rules_pass_promtool_check_rules() {
    let (ok, out) = promtool(&["check", "rules", "ailee-alerts.yml"], None);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alert_rule_unit_tests_pass_and_cover_every_alert_firing_and_not_firing() {
    let (ok, out) = promtool(&["test", "rules", "ailee-alerts.test.yml"], None);
    assert!(ok, "{out}");
    let dir = root().join("scripts/examples/prometheus");
    let rules = std::fs::read_to_string(dir.join("ailee-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("ailee-alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    // Each `alertname:` line is followed by its `exp_alerts:` line.
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for a in &alerts {
        let mut fires = false;
        let mut quiet = false;
        for (i, l) in lines.iter().enumerate() {
            if *l == format!("alertname: {a}") {
                match lines.get(i + 1) {
                    Some(&"exp_alerts: []") => quiet = true,
                    Some(&"exp_alerts:") => fires = true,
                    other => panic!("{a}: unexpected {other:?}"),
                }
            }
        }
        assert!(fires && quiet, "{a}: firing tested {fires}, not firing tested {quiet}");
    }
    // Every alert names what to run.
    for block in rules.split("- alert: ").skip(1) {
        assert!(block.contains("summary:") && block.contains("ailee_"), "{block}");
    }
}

#[test]
fn every_metric_is_in_the_monitoring_guide_table() {
    let guide = std::fs::read_to_string(root().join("docs/MONITORING.md")).unwrap();
    let section = guide
        .split("## Metrics and alerts")
        .nth(1)
        .expect("docs/MONITORING.md section ## Metrics and alerts");
    for d in CATALOG {
        assert!(
            section.contains(&format!("| `{}", d.name)),
            "{} missing from docs/MONITORING.md",
            d.name
        );
    }
}

// ---------------------------------------------------------------------------
// The writer (`ailee_metrics write`)

#[test]
fn every_declared_metric_written_through_the_cli_passes_promtool() {
    let d = tempfile::tempdir().unwrap();
    let mut writers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (i, def) in CATALOG.iter().enumerate() {
        let labels = if def.labels.is_empty() {
            String::new()
        } else {
            format!(
                "{{{}}}",
                def.labels
                    .iter()
                    .map(|l| format!("{l}=odd\\value {i}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        let flag = match def.kind {
            Kind::Counter => format!("--inc={}{labels}=2", def.name),
            Kind::Gauge => format!("--set={}{labels}=17{i}.5", def.name),
        };
        writers.entry(def.writer).or_default().push(flag);
    }
    for (writer, flags) in &writers {
        let args: Vec<&str> = flags.iter().map(String::as_str).collect();
        write(d.path(), writer, &args).expect(exits(0));
        let f = d.path().join(format!("{writer}.prom"));
        check_metrics(&f);
        // One sample per declared metric of this writer.
        let text = std::fs::read_to_string(&f).unwrap();
        let n = CATALOG.iter().filter(|c| c.writer == *writer).count();
        assert_eq!(samples(&text).len(), n, "{text}");
        assert_eq!(text.matches("# TYPE ").count(), n, "{text}");
        assert_eq!(text.matches("# HELP ").count(), n, "{text}");
    }
    // The backslash in a label value is escaped in the file.
    let drill = std::fs::read_to_string(d.path().join("ailee_drill.prom")).unwrap();
    assert!(drill.contains(r#"mode="odd\\value"#), "{drill}");
}

#[test]
fn failure_counter_survives_runs_and_keeps_the_last_success() {
    let (d, f) = backup_prom();
    write(
        d.path(),
        "ailee_backup",
        &[
            "--set",
            "ailee_backup_last_success_timestamp_seconds{repository=/srv/b}=1700000000",
        ],
    )
    .expect(exits(0));
    for n in 1..=3 {
        write(
            d.path(),
            "ailee_backup",
            &[
                "--set",
                "ailee_backup_last_failure_timestamp_seconds{repository=/srv/b}=now",
                "--inc",
                "ailee_backup_failures_total{repository=/srv/b}",
            ],
        )
        .expect(exits(0));
        let s = read_samples(&f);
        assert_eq!(s[r#"ailee_backup_failures_total{repository="/srv/b"}"#], n as f64);
        assert_eq!(
            s[r#"ailee_backup_last_success_timestamp_seconds{repository="/srv/b"}"#],
            1700000000.0
        );
        assert!(s[r#"ailee_backup_last_failure_timestamp_seconds{repository="/srv/b"}"#] > 1.7e9);
    }
    check_metrics(&f);
}

#[test]
fn bad_writes_exit_1_and_leave_the_file_alone() {
    let (d, f) = backup_prom();
    write(
        d.path(),
        "ailee_backup",
        &["--set", "ailee_backup_duration_seconds{repository=/r}=3"],
    )
    .expect(exits(0));
    let before = std::fs::read(&f).unwrap();
    for args in [
        &["--set", "ailee_backup_duration_seconds{repository=/r}=2h"][..],
        &["--set", "ailee_backup_duration_seconds{repository=/r}=inf"],
        &["--set", "ailee_backup_duration_seconds{repository=/r}=NaN"],
        &["--set", "ailee_backup_duration_seconds{repository=/r}"],
        &["--set", "ailee_nope=1"],
        &["--set", "ailee_restore_success=1"],
        &["--set", "ailee_backup_duration_seconds{mode=x}=1"],
        // The backup's series carry the repository (since issue 22 item 9).
        &["--set", "ailee_backup_duration_seconds=1"],
        &["--set", "ailee_backup_duration_seconds{repository=/r}="],
        &[
            "--set",
            "ailee_backup_duration_seconds{repository=/r}=1",
            "--set",
            "ailee_backup_duration_seconds{repository=/r}=x",
        ],
        &["--inc", "ailee_backup_duration_seconds{repository=/r}"],
        &["--inc", "ailee_backup_failures_total{repository=/r}=-1"],
        &[],
    ] {
        write(d.path(), "ailee_backup", args).expect(exits(1));
        assert_eq!(std::fs::read(&f).unwrap(), before, "{args:?}");
    }
    write(d.path(), "ailee_drill", &["--set", "ailee_drill_success{mode=}=1"]).expect(exits(1));
    assert!(!d.path().join("ailee_drill.prom").exists());
    write(d.path(), "../evil", &["--set", "ailee_backup_duration_seconds=1"]).expect(exits(1));
    // Not a directory.
    write(&f, "ailee_backup", &["--set", "ailee_backup_duration_seconds=1"]).expect(exits(1));
    assert_eq!(std::fs::read(&f).unwrap(), before);
}

// ---------------------------------------------------------------------------
// The monitor

/// A data directory: the basic vector's snapshots and an empty reorg database.
fn data_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(vector("basic"), d.path().join("l2_snapshots.dat")).unwrap();
    db_tool(d.path().join("reorg_db")).expect(exits(0));
    d
}

fn monitor(data: &Path, metrics: &Path) -> assert_cmd::Command {
    let mut c = cmd("ailee_metrics");
    c.args(["monitor", "--data-dir"])
        .arg(data)
        .arg("--metrics-dir")
        .arg(metrics);
    c
}

/// A metrics directory and the path of `ailee_backup`'s file in it.
fn backup_prom() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("ailee_backup.prom");
    (d, f)
}

/// A data directory ([`data_dir`]) and a metrics directory whose backup
/// ended a minute ago: what `monitor` reads.
fn monitored() -> (tempfile::TempDir, tempfile::TempDir) {
    let d = data_dir();
    let m = tempfile::tempdir().unwrap();
    backed_up(m.path(), 60);
    (d, m)
}

/// The samples of the monitor's file in the metrics directory `m`.
fn monitor_samples(m: &Path) -> BTreeMap<String, f64> {
    read_samples(&m.join("ailee_monitor.prom"))
}

/// A backup metrics file saying the last success was `age` seconds ago.
fn backed_up(metrics: &Path, age: u64) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - age;
    write(
        metrics,
        "ailee_backup",
        &[
            "--set",
            &format!("ailee_backup_last_success_timestamp_seconds{{repository=/srv/b}}={t}"),
        ],
    )
    .expect(exits(0));
}

/// `timestamp_ms` of the newest block of a file.
fn newest_timestamp_ms(file: &Path) -> u64 {
    let text = std::fs::read_to_string(file).unwrap();
    let last = text.rsplit("SNAPSHOT v1\n").next().unwrap();
    last.lines()
        .next()
        .unwrap()
        .strip_prefix("timestamp_ms ")
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn healthy_node_exits_0_and_reports_what_it_saw() {
    let (d, m) = monitored();
    monitor(d.path(), m.path()).expect(exits(0).prints("OK: "));
    let f = m.path().join("ailee_monitor.prom");
    check_metrics(&f);
    let s = read_samples(&f);
    let file = d.path().join("l2_snapshots.dat");
    assert_eq!(s["ailee_snapshot_newest_verified"], 1.0);
    assert_eq!(s["ailee_snapshot_torn_tail"], 0.0);
    assert_eq!(
        s["ailee_snapshot_file_size_bytes"],
        std::fs::metadata(&file).unwrap().len() as f64
    );
    assert_eq!(
        s["ailee_snapshot_newest_timestamp_seconds"],
        newest_timestamp_ms(&file) as f64 / 1000.0
    );
    assert_eq!(s["ailee_reorg_db_corrupt_records"], 0.0);
    assert_eq!(s["ailee_reorg_db_reorg_events_total"], 0.0);
    assert_eq!(s[r#"ailee_reorg_db_anchors{status="pending"}"#], 0.0);
    assert!(s["ailee_reorg_db_size_bytes"] > 0.0);
    assert_eq!(s["ailee_monitor_warnings"], 0.0);
    assert!(!s.contains_key("ailee_anchor_divergence_blocks"));
    // -q: silent when all is well (cron mails any output).
    monitor(d.path(), m.path())
        .arg("-q")
        .expect(exits(0).prints_nothing().says_nothing());
}

#[test]
fn corrupted_newest_snapshot_exits_2_and_sets_verified_0() {
    let (d, m) = monitored();
    let file = d.path().join("l2_snapshots.dat");
    corrupt_newest(&file);
    monitor(d.path(), m.path()).expect(
        exits(2)
            .prints("Warning: the newest snapshot does not verify")
            .prints("Procedure 1"),
    );
    let f = m.path().join("ailee_monitor.prom");
    check_metrics(&f);
    assert_eq!(read_samples(&f)["ailee_snapshot_newest_verified"], 0.0);
}

/// Changes one balance digit of the newest snapshot (state root mismatch).
fn corrupt_newest(file: &Path) {
    let mut data = std::fs::read(file).unwrap();
    let start = data.windows(12).rposition(|w| w == b"SNAPSHOT v1\n").unwrap();
    let i = start + data[start..].windows(9).position(|w| w == b"balance \"").unwrap();
    let j = i + data[i..].iter().position(|&b| b == b'\n').unwrap() - 1;
    data[j] = if data[j] == b'7' { b'3' } else { b'7' };
    std::fs::write(file, data).unwrap();
}

#[test]
fn torn_tail_is_reported_but_the_newest_complete_snapshot_still_verifies() {
    let (d, m) = monitored();
    let file = d.path().join("l2_snapshots.dat");
    let mut f = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
    f.write_all(b"SNAPSHOT v1\ntimestamp_ms 1\nbalances 2\nbalance \"pe")
        .unwrap();
    drop(f);
    monitor(d.path(), m.path()).expect(exits(0).says("torn snapshot"));
    let s = monitor_samples(m.path());
    assert_eq!(s["ailee_snapshot_torn_tail"], 1.0);
    assert_eq!(s["ailee_snapshot_newest_verified"], 1.0);
}

#[test]
fn old_or_missing_backup_warns_with_exit_1() {
    let d = data_dir();
    let m = tempfile::tempdir().unwrap();
    monitor(d.path(), m.path()).expect(exits(1).prints("Warning: no backup found"));
    assert_eq!(monitor_samples(m.path())["ailee_monitor_warnings"], 1.0);
    backed_up(m.path(), 3 * 3600);
    monitor(d.path(), m.path()).expect(exits(1).prints("Warning: the last successful backup is 3h old (limit 2h"));
    // Decimals are accepted and mean what they say: 3 h is within 3.5 h.
    monitor(d.path(), m.path())
        .args(["--max-backup-age-hours", "3.5"])
        .expect(exits(0));
    monitor(d.path(), m.path())
        .args(["--max-backup-age-hours", "2.5"])
        .expect(exits(1));
}

#[test]
fn invalid_thresholds_are_argument_errors_not_silent_passes() {
    let d = data_dir();
    let m = tempfile::tempdir().unwrap();
    for (opt, v) in [
        ("--max-backup-age-hours", "2h"),
        ("--max-backup-age-hours", "0"),
        ("--max-backup-age-hours", "-1"),
        ("--max-backup-age-hours", "inf"),
        ("--max-backup-age-hours", "nan"),
        ("--max-snapshot-age-hours", "1d"),
        ("--max-snapshot-mb", "5000MB"),
        ("--max-snapshot-mb", "0"),
        ("--max-reorg-db-mb", "1.5"),
        ("--max-divergence", "-3"),
    ] {
        monitor(d.path(), m.path()).args([opt, v]).expect(exits(1));
        assert!(!m.path().join("ailee_monitor.prom").exists(), "{opt} {v}");
    }
    // The same through the script.
    bash(&format!(
        "{} --data-dir {} --max-backup-age-hours 2h",
        root().join("scripts/ailee_monitor").display(),
        d.path().display()
    ))
    .expect(exits(1));
}

#[test]
fn size_thresholds_warn_like_the_runbook() {
    let (d, m) = monitored();
    // 1 MB limits: grow the snapshot file past 1 MB with a sparse torn tail.
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(d.path().join("l2_snapshots.dat"))
        .unwrap();
    f.set_len(3 * 1024 * 1024).unwrap();
    monitor(d.path(), m.path())
        .args(["--max-snapshot-mb", "1"])
        .expect(exits(1).prints("Warning: Snapshot file is 3MB - consider pruning"));
    // reorg_db counted as `du -sm` does (allocated, rounded up): an old
    // RocksDB info log of 2 MB plus the database's own files.
    std::fs::write(d.path().join("reorg_db/LOG.old.1"), vec![b'x'; 2 << 20]).unwrap();
    let out = monitor(d.path(), m.path())
        .args(["--max-reorg-db-mb", "2"])
        .expect(exits(1).prints("Warning: Reorg DB is 3MB - consider pruning"));
    assert!(!String::from_utf8_lossy(&out.get_output().stdout).contains("Snapshot file"));
    let s = monitor_samples(m.path());
    assert!(s["ailee_reorg_db_size_bytes"] > (2 << 20) as f64);
}

#[test]
fn corrupt_reorg_db_record_exits_2() {
    let (d, m) = monitored();
    let db = d.path().join("reorg_db");
    let out = Command::new("ldb")
        .arg(format!("--db={}", db.display()))
        .args([
            "--ignore_unknown_options",
            "put",
            &format!("anchor:{}", "a".repeat(64)),
            "garbage",
        ])
        .output()
        .expect("Debian's ldb (rocksdb-tools)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    monitor(d.path(), m.path()).expect(exits(2).prints("corrupt record").prints("Procedure 3"));
    let f = m.path().join("ailee_monitor.prom");
    check_metrics(&f);
    assert_eq!(read_samples(&f)["ailee_reorg_db_corrupt_records"], 1.0);
}

#[test]
fn unreachable_node_warns_rpc_up_0_and_never_shows_the_password() {
    let (d, m) = monitored();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed again when the listener drops
    let out = monitor(d.path(), m.path())
        .args(["--rpc-timeout", "5", "--bitcoin-rpc"])
        .arg(format!("http://ailee:s3cret-pw@127.0.0.1:{port}"))
        .expect(exits(1).prints("cannot reach the Bitcoin node"));
    let o = out.get_output();
    let all = format!(
        "{}{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(m.path().join("ailee_monitor.prom")).unwrap()
    );
    assert!(!all.contains("s3cret"), "{all}");
    let s = monitor_samples(m.path());
    assert_eq!(s["ailee_bitcoin_rpc_up"], 0.0);
    assert!(!s.contains_key("ailee_anchor_divergence_blocks"));
}

/// Records one reorg event (id 0) in a fresh database at `db`.
fn fresh_db_with_event(db: &Path, height: u64, detected_ms: u64) {
    use ailee_db::reorgdb::{Batch, Mode, ReorgDb};
    if db.exists() {
        std::fs::remove_dir_all(db).unwrap();
    }
    ReorgDb::create(db).unwrap();
    let d = ReorgDb::open(db, Mode::ReadWrite).unwrap();
    let mut b = Batch::default();
    for h in 0..=height + 3 {
        b.put_block(h, &format!("{h:064x}"));
    }
    b.record_reorg(
        0,
        &ailee_core::records::ReorgEvent {
            reorg_height: height,
            old_block_hash: "aa".repeat(32),
            new_block_hash: "bb".repeat(32),
            detected_at: detected_ms,
            invalidated_anchors: vec![],
        },
    );
    d.write(b).unwrap();
}

#[test]
fn a_new_reorg_warns_once_even_in_a_rebuilt_database() {
    let (d, m) = monitored();
    let db = d.path().join("reorg_db");
    monitor(d.path(), m.path()).expect(exits(0));
    fresh_db_with_event(&db, 5, 1_700_000_000_000);
    // The previous run saw no stored block: the depth is unknown.
    monitor(d.path(), m.path()).expect(exits(1).prints("Warning: new reorg recorded at height 5: 0 anchor(s)"));
    monitor(d.path(), m.path()).expect(exits(0));
    let s = monitor_samples(m.path());
    assert_eq!(s["ailee_reorg_db_last_reorg_height"], 5.0);
    assert_eq!(s["ailee_reorg_db_last_reorg_timestamp_seconds"], 1_700_000_000.0);
    assert!(!s.contains_key("ailee_reorg_db_last_reorg_depth_blocks"));
    // Procedure 3 rebuilds the database; its first event reuses id 0 and the
    // count is 1 again, but it is a new reorg: the previous run saw tip 8.
    fresh_db_with_event(&db, 7, 1_700_000_100_000);
    monitor(d.path(), m.path()).expect(exits(1).prints("Warning: new reorg recorded at height 7 (depth 2)"));
    monitor(d.path(), m.path()).expect(exits(0));
    assert_eq!(monitor_samples(m.path())["ailee_reorg_db_last_reorg_depth_blocks"], 2.0);
}

#[test]
fn monitor_script_passes_options_through() {
    let (d, m) = monitored();
    bash(&format!(
        "{} --data-dir {} --metrics-dir {}",
        root().join("scripts/ailee_monitor").display(),
        d.path().display(),
        m.path().display()
    ))
    .expect(exits(0).prints("OK: "));
    check_metrics(&m.path().join("ailee_monitor.prom"));
}

// ---------------------------------------------------------------------------
// node_exporter end to end

/// Debian's prometheus-node-exporter with only the textfile collector, on
/// 127.0.0.1 and a free port; killed on drop.
struct Exporter {
    child: Child,
    port: u16,
}

impl Exporter {
    fn start(dir: &Path) -> Exporter {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--collector.disable-defaults", "--collector.textfile"])
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter must be installed");
        let mut e = Exporter { child, port };
        for _ in 0..300 {
            if e.try_scrape().is_some() {
                return e;
            }
            if let Ok(Some(s)) = e.child.try_wait() {
                panic!("node_exporter exited: {s}");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("node_exporter did not answer within 30 s");
    }

    fn try_scrape(&self) -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        let (head, body) = body.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200").then(|| body.to_string())
    }

    /// The samples of one scrape; the collector must have read every file.
    fn scrape(&self) -> BTreeMap<String, f64> {
        let text = self.try_scrape().expect("scrape /metrics");
        let s = samples(&text);
        assert_eq!(s.get("node_textfile_scrape_error"), Some(&0.0), "{text}");
        s
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ailee_backup` as an operator runs it: from the tools' directory (the
/// restic-based binary) or, before it, the script.
fn backup(data: &Path, metrics: &Path) -> assert_cmd::Command {
    let mut c = bash(&format!(
        "ailee_backup --data-dir {} --metrics-dir {}",
        data.display(),
        metrics.display()
    ));
    let path = format!(
        "{}:{}:{}",
        ailee_recovery::bin("ailee_l2_verify").parent().unwrap().display(),
        root().join("scripts").display(),
        std::env::var("PATH").unwrap()
    );
    c.env("PATH", path).env("HOME", data.parent().unwrap());
    c
}

/// `ailee_resync_blocks` from height `start` into the database `db`, through
/// the node of `rpc` (its options), writing its metrics into `metrics`.
fn resync_into(rpc: &[String], db: &Path, start: u64, metrics: &Path) -> assert_cmd::Command {
    let mut c = cmd("ailee_resync_blocks");
    c.args(["--start-height", &start.to_string(), "--db-path"])
        .arg(db)
        .args(rpc)
        .arg("--metrics-dir")
        .arg(metrics);
    c
}

/// A node with an anchored, confirmed snapshot, then a deep reorg: the
/// monitor and the resync write into one textfile directory, node_exporter
/// serves what they reported.
#[test]
fn node_exporter_serves_what_the_monitor_and_resync_reported() {
    let node = Node::mined(110);
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let textfile = d.path().join("textfile");
    std::fs::create_dir_all(&textfile).unwrap();
    db_tool(data.join("reorg_db")).expect(exits(0));
    let rpc = node.rpc_args();
    let resync = |start: u64| resync_into(&rpc, &data.join("reorg_db"), start, &textfile);
    resync(0).expect(exits(0));
    cmd("ailee_create_anchor")
        .args(["--l2-state-file", "-", "--broadcast", "--snapshot-file"])
        .arg(data.join("l2_snapshots.dat"))
        .arg("--db-path")
        .arg(data.join("reorg_db"))
        .args(&rpc)
        .write_stdin(r#"{"ledger": {"balances": [{"peerId": "p1", "balance": 5}]}}"#)
        .expect(exits(0));
    node.generate(1);
    let mined_at = node.count();
    node.generate(9);
    resync(100).expect(exits(0));

    let exporter = Exporter::start(&textfile);
    // No backup in this directory: the monitor warns about that (exit 1) and
    // about nothing else.
    let mon = || {
        let mut c = cmd("ailee_metrics");
        c.args(["monitor", "--data-dir"])
            .arg(&data)
            .arg("--metrics-dir")
            .arg(&textfile)
            .args(&rpc);
        c
    };
    let out = mon().expect(exits(1));
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("Warning: no backup found"), "{stdout}");
    for f in ["ailee_monitor.prom", "ailee_resync.prom"] {
        check_metrics(&textfile.join(f));
    }
    let s = exporter.scrape();
    assert_eq!(s["ailee_snapshot_newest_verified"], 1.0);
    assert_eq!(s["ailee_snapshot_torn_tail"], 0.0);
    assert_eq!(s[r#"ailee_reorg_db_anchors{status="confirmed"}"#], 1.0);
    assert_eq!(s[r#"ailee_reorg_db_anchors{status="pending"}"#], 0.0);
    assert_eq!(s["ailee_reorg_db_tip_height"], node.count() as f64);
    assert_eq!(s["ailee_reorg_db_corrupt_records"], 0.0);
    assert_eq!(s["ailee_bitcoin_rpc_up"], 1.0);
    assert_eq!(s["ailee_bitcoin_tip_height"], node.count() as f64);
    assert_eq!(s["ailee_anchor_newest_height"], mined_at as f64);
    assert_eq!(s["ailee_anchor_divergence_blocks"], (node.count() - mined_at) as f64);
    assert_eq!(s["ailee_monitor_warnings"], 1.0);
    assert_eq!(s["ailee_resync_last_exit_code"], 0.0);
    assert_eq!(s["ailee_resync_reorgs_found_total"], 0.0);
    assert!(s["ailee_resync_last_run_timestamp_seconds"] > 1.7e9);

    // A deep reorg above the anchor's block: resync finds it (exit 3), the
    // monitor sees its depth from the tip it saw before; the anchor stays.
    let tip = node.count();
    let fork = mined_at + 2;
    node.fork(fork, tip - fork + 2);
    resync(fork - 1).expect(exits(3));
    mon().expect(exits(1).prints(format!(
        "new reorg recorded at height {fork} (depth {})",
        tip - fork + 1
    )));
    let s = exporter.scrape();
    assert_eq!(s["ailee_resync_reorgs_found_total"], 1.0);
    assert_eq!(s["ailee_resync_last_exit_code"], 3.0);
    assert_eq!(s["ailee_resync_last_reorg_height"], fork as f64);
    assert_eq!(s["ailee_resync_last_reorg_depth_blocks"], (tip - fork + 1) as f64);
    assert_eq!(s["ailee_reorg_db_reorg_events_total"], 1.0);
    assert_eq!(s["ailee_reorg_db_last_reorg_height"], fork as f64);
    assert_eq!(s["ailee_reorg_db_last_reorg_depth_blocks"], (tip - fork + 1) as f64);
    assert_eq!(s["ailee_reorg_db_tip_height"], node.count() as f64);
    assert_eq!(s["ailee_snapshot_newest_verified"], 1.0);
    // The next run warns no more about it and keeps the depth.
    let out = mon().expect(exits(1));
    assert!(!String::from_utf8_lossy(&out.get_output().stdout).contains("new reorg"));
    assert_eq!(
        exporter.scrape()["ailee_reorg_db_last_reorg_depth_blocks"],
        (tip - fork + 1) as f64
    );
    // A resync with nothing to do: the counter stays, the exit code is 0 again.
    resync(fork).expect(exits(0));
    let s = exporter.scrape();
    assert_eq!(s["ailee_resync_reorgs_found_total"], 1.0);
    assert_eq!(s["ailee_resync_last_exit_code"], 0.0);
    // The node goes away: rpc_up 0, the divergence is no longer reported.
    let mut node = node;
    node.stop();
    mon().expect(exits(1).prints("cannot reach the Bitcoin node"));
    let s = exporter.scrape();
    assert_eq!(s["ailee_bitcoin_rpc_up"], 0.0);
    assert!(!s.contains_key("ailee_anchor_divergence_blocks"), "{s:?}");
    for f in ["ailee_monitor.prom", "ailee_resync.prom"] {
        check_metrics(&textfile.join(f));
    }
}

/// The verified gauge goes to 0 in node_exporter after the newest snapshot
/// is corrupted.
#[test]
fn node_exporter_serves_the_verified_gauge_at_0_after_corruption() {
    let data = data_dir();
    let textfile = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(textfile.path());
    let mon = |c: i32| {
        cmd("ailee_metrics")
            .args(["monitor", "--data-dir"])
            .arg(data.path())
            .arg("--metrics-dir")
            .arg(textfile.path())
            .assert()
            .code(c);
    };
    mon(1); // no backup
    assert_eq!(exporter.scrape()["ailee_snapshot_newest_verified"], 1.0);
    corrupt_newest(&data.path().join("l2_snapshots.dat"));
    mon(2);
    assert_eq!(exporter.scrape()["ailee_snapshot_newest_verified"], 0.0);
}

/// Backups through node_exporter, with the names of the restic-based
/// ailee_backup (written through `ailee_metrics`): the last success, and after
/// a failed backup the failures counter and the last failure time, the last
/// success kept. (The pre-restic script on main writes no failure metrics and
/// its file fails `promtool check metrics`: this test passes once the new
/// ailee_backup is in.)
#[test]
fn node_exporter_serves_the_backup_success_and_failure_counter() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(vector("basic"), data.join("l2_snapshots.dat")).unwrap();
    db_tool(data.join("reorg_db")).expect(exits(0));
    let textfile = d.path().join("textfile");
    std::fs::create_dir_all(&textfile).unwrap();
    let exporter = Exporter::start(&textfile);
    backup(&data, &textfile).expect(exits(0));
    let s = exporter.scrape();
    let l = format!("{{repository=\"{}\"}}", data.join("backups/repo").display());
    let good = s[&format!("ailee_backup_last_success_timestamp_seconds{l}")];
    assert!(good > 1.7e9);
    assert!(s[&format!("ailee_backup_duration_seconds{l}")] >= 0.0);
    check_metrics(&textfile.join("ailee_backup.prom"));
    // The monitor takes the backup's age from that file: no warning.
    cmd("ailee_metrics")
        .args(["monitor", "--data-dir"])
        .arg(&data)
        .arg("--metrics-dir")
        .arg(&textfile)
        .expect(exits(0));

    // A backup that fails: reorg_db is not a database.
    std::fs::remove_dir_all(data.join("reorg_db")).unwrap();
    std::fs::write(data.join("reorg_db"), "not a database").unwrap();
    for n in 1..=2 {
        backup(&data, &textfile).expect(exits(1));
        let s = exporter.scrape();
        assert_eq!(
            s.get(&format!("ailee_backup_failures_total{l}")),
            Some(&(n as f64)),
            "{s:?}"
        );
        assert!(s[&format!("ailee_backup_last_failure_timestamp_seconds{l}")] >= good);
        assert_eq!(s[&format!("ailee_backup_last_success_timestamp_seconds{l}")], good);
    }
    check_metrics(&textfile.join("ailee_backup.prom"));
}

// ---------------------------------------------------------------------------
// The drill

#[test]
fn drill_writes_recovery_time_and_pass_per_mode() {
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("textfile");
    let target = ailee_recovery::bin("ailee_l2_verify")
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf();
    let out = bash(&format!(
        "{} --mode crash --metrics-dir {}",
        root().join("scripts/test_recovery.sh").display(),
        m.display()
    ))
    .env("HOME", std::env::var_os("HOME").unwrap_or_default())
    .env("CARGO_TARGET_DIR", target)
    .output()
    .unwrap();
    // The metrics say what the drill printed, whether its steps passed or not.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let failed: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SUMMARY: "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|l| l.strip_suffix(" failed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no SUMMARY line:\n{stdout}"));
    assert_eq!(out.status.code(), Some(if failed == 0 { 0 } else { 1 }), "{stdout}");
    let ms: f64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("RECOVERY TIME crash: "))
        .and_then(|l| l.strip_suffix(" ms"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no RECOVERY TIME line:\n{stdout}"));
    let f = m.join("ailee_drill.prom");
    check_metrics(&f);
    let s = read_samples(&f);
    assert_eq!(
        s[r#"ailee_drill_success{mode="crash"}"#],
        if failed == 0 { 1.0 } else { 0.0 }
    );
    assert_eq!(s[r#"ailee_drill_recovery_seconds{mode="crash"}"#], ms / 1000.0);
    assert!(s["ailee_drill_last_run_timestamp_seconds"] > 1.7e9);
}

#[test]
fn concurrent_increments_are_never_lost() {
    let d = tempfile::tempdir().unwrap();
    let exe = ailee_recovery::bin("ailee_metrics");
    let children: Vec<Child> = (0..16)
        .map(|_| {
            Command::new(&exe)
                .args(["write", "--metrics-dir"])
                .arg(d.path())
                .args([
                    "--writer",
                    "ailee_backup",
                    "--inc",
                    "ailee_backup_failures_total{repository=/r}",
                ])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(
        read_samples(&d.path().join("ailee_backup.prom"))[r#"ailee_backup_failures_total{repository="/r"}"#],
        16.0
    );
}

#[test]
fn monitor_reads_a_database_the_node_holds() {
    let (d, m) = monitored();
    let _held =
        ailee_db::reorgdb::ReorgDb::open(&d.path().join("reorg_db"), ailee_db::reorgdb::Mode::ReadWrite).unwrap();
    monitor(d.path(), m.path()).expect(exits(0));
    assert_eq!(monitor_samples(m.path())["ailee_reorg_db_corrupt_records"], 0.0);
}

#[test]
fn unusable_inputs_are_operational_errors_and_still_reported() {
    let (d, m) = monitored();
    // A FIFO instead of the snapshot file: refused at once, verified 0.
    let file = d.path().join("l2_snapshots.dat");
    std::fs::remove_file(&file).unwrap();
    assert!(Command::new("mkfifo").arg(&file).status().unwrap().success());
    monitor(d.path(), m.path())
        .timeout(std::time::Duration::from_secs(60))
        .expect(exits(1).prints("cannot read the snapshot file"));
    let s = monitor_samples(m.path());
    assert_eq!(s["ailee_snapshot_newest_verified"], 0.0);
    assert!(!s.contains_key("ailee_snapshot_file_size_bytes"));
    // No reorg_db: its metrics are left out, not reported stale.
    std::fs::remove_dir_all(d.path().join("reorg_db")).unwrap();
    monitor(d.path(), m.path()).expect(exits(1).prints("cannot open reorg database"));
    let s = monitor_samples(m.path());
    assert!(!s.contains_key("ailee_reorg_db_corrupt_records"), "{s:?}");
    assert!(!s.contains_key(r#"ailee_reorg_db_anchors{status="pending"}"#), "{s:?}");
    // A data directory that is missing, or a metrics directory that is a file.
    monitor(&d.path().join("missing"), m.path()).expect(exits(1));
    monitor(d.path(), &file).expect(exits(1));
}

#[test]
fn drill_rejects_a_metrics_dir_that_is_a_file_before_doing_anything() {
    let d = tempfile::tempdir().unwrap();
    let file: PathBuf = d.path().join("file");
    std::fs::write(&file, "").unwrap();
    bash(&format!(
        "{} --mode crash --metrics-dir {}",
        root().join("scripts/test_recovery.sh").display(),
        file.display()
    ))
    .env("HOME", d.path())
    .expect(exits(1).says("not a directory"));
}

// ---------------------------------------------------------------------------
// A monitor that never goes blind (issue 25): the checks run and print first,
// the exit status is the worse of the checks and the metrics write, and a
// file that cannot be replaced is rewritten in place (or withdrawn) rather
// than left saying "verified 1".

/// `bash -euo pipefail` on `script` in a private mount namespace (`unshare
/// -rm`: a read-only bind mount or a small tmpfs that vanishes with it), the
/// monitor's binary directory on PATH.
fn in_mount_namespace(script: &str) -> assert_cmd::Command {
    let mut c = bash(r#"exec unshare -rm bash -euo pipefail -c "$INNER""#);
    c.env("INNER", script);
    c
}

/// A data directory whose newest snapshot verifies and one whose newest does
/// not, a textfile directory holding a recent backup, and a monitor run on the
/// good one that wrote "verified 1".
fn good_bad_and_metrics() -> (tempfile::TempDir, tempfile::TempDir, tempfile::TempDir) {
    let (good, bad) = (data_dir(), data_dir());
    corrupt_newest(&bad.path().join("l2_snapshots.dat"));
    let m = tempfile::tempdir().unwrap();
    backed_up(m.path(), 60);
    monitor(good.path(), m.path()).expect(exits(0));
    assert_eq!(monitor_samples(m.path())["ailee_snapshot_newest_verified"], 1.0);
    (good, bad, m)
}

#[test]
fn read_only_metrics_dir_still_prints_the_failing_check_and_exits_2() {
    let (good, bad, m) = good_bad_and_metrics();
    let run = |data: &Path| {
        in_mount_namespace(&format!(
            "mount --bind -o ro {m} {m}; ailee_metrics monitor --data-dir {d} --metrics-dir {m}",
            m = m.path().display(),
            d = data.display()
        ))
        .assert()
    };
    // Before the fix: exit 1, and only the lock file's error on stderr.
    let out = run(bad.path())
        .code(2)
        .stdout(contains("Warning: the newest snapshot does not verify"))
        .stderr(contains("error: cannot write the metrics file"))
        .stderr(contains("Read-only file system"))
        .stderr(contains("AileeMonitorNotRunning"));
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("cannot be changed either"), "{stderr}");
    // Healthy checks, unwritable metrics: exit 1 on the write alone, the checks said OK.
    run(good.path())
        .code(1)
        .stdout(contains("OK: "))
        .stderr(contains("error: cannot write the metrics file"));
    // -q: nothing on stdout when the checks are fine, the write error still on stderr.
    in_mount_namespace(&format!(
        "mount --bind -o ro {m} {m}; ailee_metrics monitor -q --data-dir {d} --metrics-dir {m}",
        m = m.path().display(),
        d = good.path().display()
    ))
    .expect(exits(1).prints_nothing().says("error: cannot write the metrics file"));
}

#[test]
fn full_disk_exits_2_and_the_file_is_rewritten_with_verified_0() {
    let (good, bad, m) = good_bad_and_metrics();
    let full = tempfile::tempdir().unwrap();
    // In the namespace: a 128 KiB tmpfs as the textfile directory, a healthy
    // run on it (verified 1), the disk filled, then the failing snapshot.
    let out = in_mount_namespace(&format!(
        r#"mount -t tmpfs -o size=128k tmpfs {t}
cp {m}/ailee_backup.prom {t}/
ailee_metrics monitor --data-dir {good} --metrics-dir {t}
grep -x 'ailee_snapshot_newest_verified 1' {t}/ailee_monitor.prom
cat /dev/zero > {t}/fill 2>/dev/null || true
rc=0; ailee_metrics monitor --data-dir {bad} --metrics-dir {t} || rc=$?
echo "exit $rc"
cat {t}/ailee_monitor.prom"#,
        t = full.path().display(),
        m = m.path().display(),
        good = good.path().display(),
        bad = bad.path().display()
    ))
    .expect(exits(0).says("No space left on device").says("rewrote it in place"));
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    // Before the fix: the warning printed, but exit 1 and verified 1 kept.
    let (checks, file) = stdout.split_once("exit ").unwrap();
    assert!(
        checks.contains("Warning: the newest snapshot does not verify"),
        "{stdout}"
    );
    assert!(file.starts_with("2\n"), "{stdout}");
    let s = samples(file);
    assert_eq!(s["ailee_snapshot_newest_verified"], 0.0, "{stdout}");
    assert_eq!(s["ailee_monitor_warnings"], 1.0, "{stdout}");
}

/// Undoes `chattr +i` when the test ends, however it ends.
struct Immutable(PathBuf);

impl Immutable {
    fn set(p: &Path) -> Immutable {
        let s = Command::new("chattr")
            .arg("+i")
            .arg(p)
            .status()
            .expect("chattr (e2fsprogs)");
        assert!(s.success(), "chattr +i {}", p.display());
        Immutable(p.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn a_directory_where_no_file_can_be_created_gets_the_file_rewritten_in_place() {
    // An immutable directory stops root too: no temporary file, no rename,
    // but the existing file's contents can be rewritten.
    let (_good, bad, m) = good_bad_and_metrics();
    let _i = Immutable::set(m.path());
    monitor(bad.path(), m.path()).expect(
        exits(2)
            .prints("Warning: the newest snapshot does not verify")
            .says("Operation not permitted")
            .says("rewrote it in place"),
    );
    let f = m.path().join("ailee_monitor.prom");
    check_metrics(&f);
    assert_eq!(read_samples(&f)["ailee_snapshot_newest_verified"], 0.0);
}

#[test]
fn a_directory_in_place_of_the_metrics_file_does_not_hide_the_checks() {
    let (_good, bad, m) = good_bad_and_metrics();
    let f = m.path().join("ailee_monitor.prom");
    std::fs::remove_file(&f).unwrap();
    std::fs::create_dir(&f).unwrap();
    // Before the fix: exit 1 "not a regular file" and no check at all.
    monitor(bad.path(), m.path()).expect(
        exits(2)
            .prints("Warning: the newest snapshot does not verify")
            .says("not a regular file")
            .says("error: cannot write the metrics file"),
    );
}

#[test]
fn a_symlinked_reorg_db_is_followed_for_its_size() {
    let (d, m) = monitored();
    let elsewhere = tempfile::tempdir().unwrap();
    let moved = elsewhere.path().join("reorg_db");
    std::fs::rename(d.path().join("reorg_db"), &moved).unwrap();
    std::os::unix::fs::symlink(&moved, d.path().join("reorg_db")).unwrap();
    monitor(d.path(), m.path()).expect(exits(0).prints("OK: "));
    let s = monitor_samples(m.path());
    // Before the fix: 0 (the symlink's own size).
    let du = Command::new("du").args(["-s", "-B1"]).arg(&moved).output().unwrap();
    let du: f64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(s["ailee_reorg_db_size_bytes"], du);
    assert!(du > 0.0);
}

// ---------------------------------------------------------------------------
// Every refusal is seen (issue 25): a real 120-block reorg under a CONFIRMED
// anchor, deeper than --max-reorg-depth 100.

/// The resync refuses it (exit 1) and says so in its metrics; the monitor
/// with --bitcoin-rpc warns about the fork and its depth (it said "OK"
/// before), tells a real reorg from the wrong node; ailee_get_snapshot_block
/// --bitcoin-rpc does not print the orphaned height.
#[test]
fn a_120_block_reorg_under_a_confirmed_anchor_is_seen_everywhere() {
    let node = Node::mined(101);
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("data");
    let db = data.join("reorg_db");
    let m = d.path().join("textfile");
    init_db(&db);
    backed_up(&m, 60);
    let rpc = node.rpc_args();
    let resync = |start: u64| resync_into(&rpc, &db, start, &m);
    resync(0).expect(exits(0));
    let file = data.join("l2_snapshots.dat");
    cmd("ailee_create_anchor")
        .args(["--l2-state-file", "-", "--broadcast", "--snapshot-file"])
        .arg(&file)
        .arg("--db-path")
        .arg(&db)
        .args(&rpc)
        .write_stdin(r#"{"ledger": {"balances": [{"peerId": "p1", "balance": 5}]}}"#)
        .expect(exits(0));
    node.generate(1);
    let mined_at = node.count();
    // The fork lies one block under the anchor; 120 stored blocks above it.
    let fork = mined_at - 1;
    node.generate(fork + 119 - mined_at);
    resync(fork - 10).expect(exits(0));
    // (The anchor is over 100 blocks behind the tip: not what this is about.)
    let mon = |args: &[String]| {
        let mut c = monitor(&data, &m);
        c.args(["--max-divergence", "1000"]).args(args);
        c
    };
    mon(&rpc).expect(exits(0).prints("OK: "));
    assert_eq!(
        read_samples(&m.join("ailee_monitor.prom"))["ailee_bitcoin_fork_depth_blocks"],
        0.0
    );
    let snapshot_block = |extra: &[String]| {
        let mut c = bash(&format!(
            "{} {} \"$@\"",
            root().join("scripts/ailee_get_snapshot_block").display(),
            file.display()
        ));
        c.arg("ailee_get_snapshot_block").args(extra);
        c
    };
    snapshot_block(&rpc).expect(exits(0).prints_exactly(format!("{mined_at}\n")));

    // The reorg: the old branch from `fork` replaced by a longer one.
    node.fork(fork, 121);
    assert_eq!(node.count(), fork + 120);

    // Resync refuses (deeper than --max-reorg-depth 100), nothing written; the metric says so.
    resync(fork + 100).expect(exits(1).says("Refused"));
    let r = m.join("ailee_resync.prom");
    check_metrics(&r);
    let s = read_samples(&r);
    assert_eq!(s["ailee_resync_refused"], 1.0);
    assert_eq!(s["ailee_resync_last_exit_code"], 1.0);
    assert!(!s.contains_key("ailee_resync_behind_since_timestamp_seconds"));

    // The monitor: a warning naming the fork, its depth, a real reorg, the anchor above it.
    let out = mon(&rpc).expect(exits(1));
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    for want in [
        format!(
            "forks from reorg_db at height {fork}: 120 stored block(s) up to {}",
            fork + 119
        ),
        "the node knows reorg_db's tip block as a stale branch: a real reorg".to_string(),
        format!("the newest anchor's recorded block (height {mined_at}) is above the fork"),
        "deeper than --max-reorg-depth 100: ailee_resync_blocks refuses it".to_string(),
    ] {
        assert!(stdout.contains(&want), "{want:?} not in {stdout}");
    }
    let f = m.join("ailee_monitor.prom");
    check_metrics(&f);
    assert_eq!(read_samples(&f)["ailee_bitcoin_fork_depth_blocks"], 120.0);

    // ailee_get_snapshot_block: without the node it can only tell the record;
    // asking the node, the orphaned height is refused.
    snapshot_block(&[]).expect(exits(0).prints_exactly(format!("{mined_at}\n")));
    snapshot_block(&rpc)
        .expect(exits(2).prints_nothing().says(format!(
            "mined at height {mined_at}, which the node's best chain no longer holds (reorg_db forks from it at height {fork})"
        )));

    // Telling a deep reorg from the wrong node: another regtest node with as
    // many blocks has never seen reorg_db's blocks.
    let fork_json = |n: &Node| {
        let o = cmd("ailee_metrics")
            .args(["fork", "--json", "--db-path"])
            .arg(&db)
            .args(n.rpc_args())
            .expect(exits(1));
        serde_json::from_slice::<serde_json::Value>(&o.get_output().stdout).unwrap()
    };
    let v = fork_json(&node);
    assert_eq!(
        (v["fork_height"].as_u64(), v["depth"].as_u64()),
        (Some(fork), Some(120)),
        "{v}"
    );
    assert_eq!(v["node_knows_stored_tip"], true, "{v}");
    let other = Node::start();
    other.generate(fork + 120);
    let v = fork_json(&other);
    assert_eq!(v["fork_height"].as_u64(), Some(1), "{v}");
    assert_eq!(v["node_knows_stored_tip"], false, "{v}");
    mon(&other.rpc_args()).expect(exits(1).prints("the node has never seen reorg_db's tip block: the wrong node"));
}

/// A node behind: every run since the first that found it behind keeps that
/// time; a run that is not behind removes it.
#[test]
fn a_node_behind_is_reported_since_the_first_run_that_saw_it() {
    let node = Node::mined(20);
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("reorg_db");
    let m = d.path().join("textfile");
    init_db(&db);
    let resync = || resync_into(&node.rpc_args(), &db, 0, &m);
    resync().expect(exits(0));
    // The node rolls back 5 blocks (same hashes below): behind, not a reorg.
    let h16 = node.hash(16);
    node.cli(&["invalidateblock", &h16]);
    resync().expect(exits(1).says("node is behind"));
    let since = read_samples(&m.join("ailee_resync.prom"))["ailee_resync_behind_since_timestamp_seconds"];
    assert!(since > 1.7e9);
    assert_eq!(read_samples(&m.join("ailee_resync.prom"))["ailee_resync_refused"], 0.0);
    // Rewrite the first time back an hour, as if the node had been behind since.
    write(
        &m,
        "ailee_resync",
        &[
            "--set",
            &format!("ailee_resync_behind_since_timestamp_seconds={}", since - 3600.0),
        ],
    )
    .expect(exits(0));
    resync().expect(exits(1));
    let r = m.join("ailee_resync.prom");
    check_metrics(&r);
    assert_eq!(
        read_samples(&r)["ailee_resync_behind_since_timestamp_seconds"],
        since - 3600.0
    );
    node.cli(&["reconsiderblock", &h16]);
    resync().expect(exits(0));
    assert!(!read_samples(&r).contains_key("ailee_resync_behind_since_timestamp_seconds"));
}
