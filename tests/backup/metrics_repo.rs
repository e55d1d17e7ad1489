//! Issue 22, item 9: backup metrics per repository. The local and the
//! off-site cron lines share one `--metrics-dir`: every `ailee_backup_*`
//! series carries `repository` (its location without credentials), so a
//! local success never clears an off-site failure — in the file, in the
//! monitor's backup-age check and in the alert rules (run by promtool on the
//! file the runs wrote). A file of the version before the label is replaced
//! cleanly on the first run.

use super::*;
use std::collections::BTreeSet;
use std::time::Duration;

/// `(name, repository)` → value for every sample of the file; every sample
/// carries exactly the `repository` label.
fn series(prom: &Path) -> BTreeMap<(String, String), f64> {
    let mut m = BTreeMap::new();
    for (name, labels, v) in ailee_core::metrics::read_samples(prom).unwrap() {
        assert!(labels.len() == 1 && labels[0].0 == "repository", "{name} {labels:?}");
        assert!(m.insert((name, labels[0].1.clone()), v).is_none());
    }
    m
}

fn get(s: &BTreeMap<(String, String), f64>, name: &str, repo: &str) -> Option<f64> {
    s.get(&(format!("ailee_backup_{name}"), repo.to_string())).copied()
}

/// `promtool check metrics` accepts the file without a lint complaint.
fn promtool_check(prom: &Path) {
    let o = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(prom).unwrap())
        .output()
        .expect("promtool (Debian's prometheus package) must be installed");
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "{}{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(prom).unwrap()
    );
}

/// Runs the real alert rules (scripts/examples/prometheus/ailee-alerts.yml)
/// under `promtool test rules` on the samples of `prom` and asserts that
/// `alert` fires for exactly the repositories `firing`.
fn alert_fires_for(dir: &Path, prom: &Path, alert: &str, severity: &str, firing: &[&str]) {
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\'', "''");
    let mut y = format!(
        "rule_files:\n  - '{}'\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n",
        q(&root()
            .join("scripts/examples/prometheus/ailee-alerts.yml")
            .to_string_lossy())
    );
    for ((name, repo), v) in series(prom) {
        y += &format!(
            "      - series: '{name}{{repository=\"{}\"}}'\n        values: '{v}x3'\n",
            q(&repo)
        );
    }
    y += &format!("    promql_expr_test:\n      - expr: ALERTS{{alertname=\"{alert}\"}}\n        eval_time: 1m\n");
    if firing.is_empty() {
        y += "        exp_samples: []\n";
    } else {
        y += "        exp_samples:\n";
        for r in firing {
            y += &format!(
                "          - labels: 'ALERTS{{alertname=\"{alert}\",alertstate=\"firing\",repository=\"{}\",severity=\"{severity}\"}}'\n            value: 1\n",
                q(r)
            );
        }
    }
    let t = dir.join("alerts.test.yml");
    std::fs::write(&t, &y).unwrap();
    succeeds(Command::new("promtool").args(["test", "rules"]).arg(&t), &y);
}

/// `ailee_metrics monitor -q` (as cron runs it: only warnings are printed) on
/// the fixture with the metrics directory.
fn monitor(f: &Fixture, m: &Path) -> assert_cmd::assert::Assert {
    assert_cmd::Command::new(bin("ailee_metrics"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["monitor", "-q", "--data-dir"])
        .arg(f.data())
        .arg("--metrics-dir")
        .arg(m)
        .assert()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Timestamps are whole seconds: runs compared by them must not share one.
fn next_second() {
    std::thread::sleep(Duration::from_millis(1100));
}

/// The measured case: a local success right after an off-site failure, both
/// cron lines with the same --metrics-dir. The off-site failure stays (its
/// own last failure after its own last success, its own counter), the alert
/// fires for the off-site repository only, and the monitor judges each
/// repository's last success on its own.
/// A backup to the off-site repository `repo` with metrics in `ms`.
fn offsite_args<'a>(ms: &'a str, repo: &'a str, pw: &'a Path) -> Vec<&'a str> {
    let pw = pw.to_str().unwrap();
    vec!["--metrics-dir", ms, "--repo", repo, "--password-file", pw]
}

#[test]
fn a_local_success_does_not_clear_an_offsite_failure() {
    let f = Fixture::basic();
    let (m, ms, prom) = f.backup_prom();
    let ms = ms.as_str();
    let off = f.dir().join("offsite");
    let offs = off.to_str().unwrap();
    let local = f.data().join("backups/repo");
    let local = local.to_str().unwrap();
    let pw = f.dir().join("offsite-password");
    let wrong = f.dir().join("wrong-password");
    std::fs::write(&wrong, "not the off-site secret\n").unwrap();
    let offsite = |pw: &Path| f.backup(&offsite_args(ms, offs, pw));

    // The off-site password file is missing: the run fails before restic
    // runs, and the failure is the off-site repository's.
    offsite(&pw).code(1).stderr(contains("offsite-password"));
    let s = series(&prom);
    assert_eq!(get(&s, "failures_total", offs), Some(1.0));
    assert_eq!(get(&s, "last_success_timestamp_seconds", offs), None);
    monitor(&f, &m).code(1).stdout(contains(format!(
        "Warning: no successful backup yet, only failed ones (from {}, repository {offs})",
        prom.display()
    )));

    f.backup(&["--metrics-dir", ms]).code(0).stderr("");
    std::fs::write(&pw, "the off-site secret\n").unwrap();
    offsite(&pw).code(0).stderr("");
    next_second();
    // The off-site repository exists with another password: restic refuses it.
    offsite(&wrong).code(1).stderr(contains("wrong password"));
    next_second();
    f.backup(&["--metrics-dir", ms]).code(0).stderr("");

    let s = series(&prom);
    let off_ok = get(&s, "last_success_timestamp_seconds", offs).unwrap();
    let off_failed = get(&s, "last_failure_timestamp_seconds", offs).unwrap();
    let local_ok = get(&s, "last_success_timestamp_seconds", local).unwrap();
    assert!(off_ok < off_failed && off_failed < local_ok, "{s:?}");
    assert_eq!(get(&s, "failures_total", offs), Some(2.0));
    assert_eq!(get(&s, "failures_total", local), Some(0.0));
    assert_eq!(get(&s, "last_failure_timestamp_seconds", local), None);
    for repo in [local, offs] {
        for name in ["duration_seconds", "bytes_added", "repository_size_bytes"] {
            assert!(get(&s, name, repo).is_some_and(|v| v >= 0.0), "{name} {repo}: {s:?}");
        }
        // Present from the first run on, like the failure counter.
        assert_eq!(get(&s, "stale_locks_removed_total", repo), Some(0.0), "{repo}");
        assert_eq!(get(&s, "timeouts_total", repo), Some(0.0), "{repo}");
    }
    assert_eq!(s.len(), 15, "{s:?}");
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(!text.contains("secret"), "{text}");
    promtool_check(&prom);
    alert_fires_for(f.dir(), &prom, "AileeBackupFailing", "critical", &[offs]);

    // Both repositories were backed up within the limit: no backup warning.
    monitor(&f, &m).code(0).stdout("");
    // The off-site copy's last success 3 h ago: the monitor warns about it,
    // the fresh local one does not hide it.
    assert_cmd::Command::new(bin("ailee_metrics"))
        .args(["write", "--metrics-dir", ms, "--writer", "ailee_backup", "--set"])
        .arg(format!(
            "ailee_backup_last_success_timestamp_seconds{{repository={offs}}}={}",
            now() - 3 * 3600
        ))
        .expect(exits(0));
    let out = monitor(&f, &m).code(1);
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert_eq!(
        stdout,
        format!(
            "Warning: the last successful backup is 3h old (limit 2h, from {}, repository {offs})\n",
            prom.display()
        )
    );
}

/// A run that fails before its repository is resolved (bad arguments, a
/// missing data directory) counts for the repository its command line names
/// (without a URL's password); one that names none (no --repo, no
/// --data-dir, no RESTIC_REPOSITORY) writes nothing.
#[test]
fn failures_before_restic_count_for_the_repository_the_line_names() {
    let f = Fixture::basic();
    let (_, ms, prom) = f.backup_prom();
    let ms = ms.as_str();
    let cmd = || {
        let mut c = assert_cmd::Command::new(bin("ailee_backup"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", f.dir())
            .current_dir(f.dir());
        c
    };

    // Neither a repository nor a data directory: an argument error, and no
    // series to put it on.
    cmd().args(["--metrics-dir", ms]).expect(exits(1).says("--data-dir"));
    assert!(!prom.exists());

    // An argument error on the off-site line (a relative --repo, as resolve
    // makes it absolute).
    cmd()
        .args([
            "--data-dir",
            "ailee",
            "--metrics-dir",
            ms,
            "--repo",
            "offsite",
            "--keep-hourly",
            "x",
        ])
        .expect(exits(1).says("--keep-hourly"));
    // An argument error on the local line: DATA_DIR/backups/repo.
    cmd()
        .args(["--data-dir=ailee", "--metrics-dir", ms, "--keep-daily=-1"])
        .expect(exits(1));
    // A missing data directory, off-site over REST with a password in the URL.
    let url = "rest:http://ailee:s3cret-url-pw@127.0.0.1:9/";
    cmd()
        .args(["--data-dir", "missing", "--metrics-dir", ms, "--repo", url])
        .expect(exits(1).says("missing"));
    // The same repository from the environment, in a line that does not parse.
    cmd()
        .env("RESTIC_REPOSITORY", url)
        .args(["--data-dir", "ailee", "--metrics-dir", ms, "--bogus"])
        .expect(exits(1));

    let s = series(&prom);
    let offsite = f.dir().join("offsite");
    let local = f.data().join("backups/repo");
    let redacted = "rest:http://ailee:***@127.0.0.1:9/";
    for (repo, n) in [
        (offsite.to_str().unwrap(), 1.0),
        (local.to_str().unwrap(), 1.0),
        (redacted, 2.0),
    ] {
        assert_eq!(get(&s, "failures_total", repo), Some(n), "{repo}: {s:?}");
        assert!(get(&s, "last_failure_timestamp_seconds", repo).is_some(), "{repo}");
        assert_eq!(get(&s, "last_success_timestamp_seconds", repo), None, "{repo}");
    }
    assert_eq!(s.keys().map(|(_, r)| r).collect::<BTreeSet<_>>().len(), 3, "{s:?}");
    assert!(!std::fs::read_to_string(&prom).unwrap().contains("s3cret"));
    promtool_check(&prom);

    // The local line's next success clears its failure, not the others'.
    f.backup(&["--metrics-dir", ms]).code(0).stderr("");
    let local = local.to_str().unwrap();
    alert_fires_for(
        f.dir(),
        &prom,
        "AileeBackupFailing",
        "critical",
        &[offsite.to_str().unwrap(), redacted],
    );
    let s = series(&prom);
    assert!(
        get(&s, "last_success_timestamp_seconds", local) >= get(&s, "last_failure_timestamp_seconds", local),
        "{s:?}"
    );
}

/// The file of the version before the label (unlabelled series, written by
/// local and off-site runs alike): the monitor still reads its last success;
/// the first run after the upgrade succeeds, says nothing, and leaves only
/// its repository's labelled series (the old values cannot be told apart, so
/// they are dropped, not given to one repository).
#[test]
fn an_unlabelled_file_of_the_previous_version_is_replaced_cleanly() {
    let f = Fixture::basic();
    let (m, ms, prom) = f.backup_prom();
    let ms = ms.as_str();
    let t = now() - 3 * 3600;
    let old = format!(
        "# HELP ailee_backup_last_success_timestamp_seconds Unix time of the last successful backup.\n\
         # TYPE ailee_backup_last_success_timestamp_seconds gauge\n\
         ailee_backup_last_success_timestamp_seconds {t}\n\
         # HELP ailee_backup_last_failure_timestamp_seconds Unix time of the last failed backup.\n\
         # TYPE ailee_backup_last_failure_timestamp_seconds gauge\n\
         ailee_backup_last_failure_timestamp_seconds {}\n\
         # HELP ailee_backup_failures_total Backups that failed, counted across runs.\n\
         # TYPE ailee_backup_failures_total counter\n\
         ailee_backup_failures_total 5\n\
         # HELP ailee_backup_duration_seconds Duration of the last backup run.\n\
         # TYPE ailee_backup_duration_seconds gauge\n\
         ailee_backup_duration_seconds 1.25\n\
         # HELP ailee_backup_bytes_added Bytes the last backup added to the repository (after deduplication).\n\
         # TYPE ailee_backup_bytes_added gauge\n\
         ailee_backup_bytes_added 1234\n\
         # HELP ailee_backup_repository_size_bytes Size of the backup repository after the last backup.\n\
         # TYPE ailee_backup_repository_size_bytes gauge\n\
         ailee_backup_repository_size_bytes 56789\n",
        t + 60
    );
    std::fs::write(&prom, old).unwrap();
    monitor(&f, &m).code(1).stdout(format!(
        "Warning: the last successful backup is 3h old (limit 2h, from {})\n",
        prom.display()
    ));

    f.backup(&["--metrics-dir", ms]).code(0).stdout("").stderr("");
    let local = f.data().join("backups/repo");
    let local = local.to_str().unwrap();
    let s = series(&prom);
    assert_eq!(get(&s, "failures_total", local), Some(0.0), "{s:?}");
    assert!(get(&s, "last_success_timestamp_seconds", local).unwrap() >= (t + 3 * 3600) as f64);
    assert_eq!(get(&s, "last_failure_timestamp_seconds", local), None);
    assert_eq!(s.len(), 7, "{s:?}");
    promtool_check(&prom);
    monitor(&f, &m).code(0).stdout("");
    // The next run reads it back whole.
    f.backup(&["--metrics-dir", ms]).code(0).stderr("");
    assert_eq!(series(&prom).len(), 7);
}

/// The two restic counters, each for its own repository and present from
/// the first run on: a stale lock (a restic SIGKILLed while it held the
/// local repository's lock) removed by the next local run, and an off-site
/// restic that never answers, stopped at `--restic-timeout`.
#[test]
fn stale_lock_removals_and_timeouts_are_counted_per_repository() {
    let f = Fixture::basic();
    let (_, ms, prom) = f.backup_prom();
    let ms = ms.as_str();
    let local = f.repo();
    f.backup(&["--metrics-dir", ms]).code(0).stderr("");

    let mut holder = Command::new("restic")
        .arg("--repo")
        .arg(&local)
        .arg("--password-file")
        .arg(f.data().join("backups/restic-password"))
        .args(["backup", "--stdin"])
        .env("HOME", f.dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    // A lock under its final name (64 hex digits): restic writes it under a
    // temporary name first, and a kill in between leaves no lock at all.
    let has_lock = || {
        std::fs::read_dir(local.join("locks")).unwrap().any(|e| {
            let n = e.unwrap().file_name();
            let n = n.to_string_lossy();
            n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit())
        })
    };
    while !has_lock() {
        assert!(t.elapsed() < Duration::from_secs(60), "restic took no lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    f.backup(&["--metrics-dir", ms]).code(0).stderr("");
    let local = local.to_str().unwrap();
    let s = series(&prom);
    assert_eq!(get(&s, "stale_locks_removed_total", local), Some(1.0), "{s:?}");
    assert_eq!(get(&s, "timeouts_total", local), Some(0.0), "{s:?}");

    let off = f.dir().join("offsite");
    let offs = off.to_str().unwrap();
    let pw = f.dir().join("offsite-password");
    std::fs::write(&pw, "the off-site secret\n").unwrap();
    let stuck = f.dir().join("stuck-restic");
    std::fs::write(&stuck, "#!/bin/sh\nexec sleep 120\n").unwrap();
    std::fs::set_permissions(&stuck, std::fs::Permissions::from_mode(0o755)).unwrap();
    let t = std::time::Instant::now();
    let offsite = offsite_args(ms, offs, &pw);
    f.backup(
        &[
            &offsite[..],
            &["--restic", stuck.to_str().unwrap(), "--restic-timeout", "1"],
        ]
        .concat(),
    )
    .code(1)
    .stderr(contains("did not finish within 1 s"));
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    let s = series(&prom);
    assert_eq!(get(&s, "timeouts_total", offs), Some(1.0), "{s:?}");
    assert_eq!(get(&s, "failures_total", offs), Some(1.0), "{s:?}");
    assert_eq!(get(&s, "stale_locks_removed_total", offs), Some(0.0), "{s:?}");
    assert_eq!(get(&s, "timeouts_total", local), Some(0.0), "{s:?}");
    assert_eq!(get(&s, "stale_locks_removed_total", local), Some(1.0), "{s:?}");
    assert_eq!(get(&s, "failures_total", local), Some(0.0), "{s:?}");
    promtool_check(&prom);
}
