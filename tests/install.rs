//! Installation (README "Install"): `scripts/install.sh` into a temporary
//! prefix, then the runbook's procedures with only that prefix on PATH and the
//! clone out of reach; man pages render; completions complete; the `.deb`
//! builds, passes lintian without errors and its binaries run.

use ailee_recovery::{bin, exits, root, vector, Expecting};
use predicates::prelude::*;
use predicates::str::contains;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The binaries' directory of this test build.
fn bin_dir() -> PathBuf {
    bin("ailee_l2_verify").parent().unwrap().to_path_buf()
}

/// The system's PATH without any directory of this repository or its build.
fn system_path() -> String {
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()
}

/// A temporary directory with the tools installed in `sub` of it: (directory, prefix).
fn installed(sub: &str) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join(sub);
    install(&prefix);
    (t, prefix)
}

/// Installs into `prefix` (a fresh directory) from this test's build.
fn install(prefix: &Path) {
    assert_cmd::Command::new(root().join("scripts/install.sh"))
        .env_clear()
        .env("PATH", system_path())
        .args([
            "--prefix".as_ref(),
            prefix.as_os_str(),
            "--bin-dir".as_ref(),
            bin_dir().as_os_str(),
        ])
        .arg("--no-build")
        .expect(exits(0));
}

/// bash in `cwd` with only `path` (and the system) on PATH, no $AILEE_BIN.
fn sh(cwd: &Path, path: &str, script: &str) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new("bash");
    c.env_clear()
        .env("PATH", path)
        .env("LC_ALL", "C")
        .env("HOME", cwd)
        .current_dir(cwd)
        .args(["-euo", "pipefail", "-c", script]);
    c
}

fn binaries(prefix: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(prefix.join("bin"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::read(p).unwrap().starts_with(b"\x7fELF"))
        .collect();
    v.sort();
    v
}

#[test]
fn installed_tools_run_the_runbook_with_only_the_prefix_on_path() {
    let (t, prefix) = installed("opt/ailee");
    // The installed tree is relocatable: move it, so nothing can lean on the
    // path it was installed to (and the clone is not on PATH either).
    let moved = t.path().join("elsewhere");
    std::fs::rename(&prefix, &moved).unwrap();
    let work = t.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::copy(vector("basic"), work.join("basic.dat")).unwrap();
    let path = format!("{}:{}", moved.join("bin").display(), system_path());

    for b in binaries(&moved) {
        let size = std::fs::metadata(&b).unwrap().len();
        assert!(size <= 20 << 20, "{} is {size} bytes (> 20 MB)", b.display());
        let name = b.file_name().unwrap().to_str().unwrap().to_string();
        sh(&work, &path, &format!("{name} --version"))
            .expect(exits(0))
            .stdout(predicate::str::starts_with(format!("{name} ")));
    }

    sh(
        &work,
        &path,
        r#"
ailee_init_node --data-dir ./ailee
ailee_l2_verify --snapshot basic.dat --index 1 --print-state > state.json
ailee_create_anchor --l2-state-file state.json --timestamp-ms 1000 --snapshot-file ./ailee/l2_snapshots.dat --db-path ./ailee/reorg_db >/dev/null
ailee_create_anchor --l2-state-file state.json --timestamp-ms 2000 --snapshot-file ./ailee/l2_snapshots.dat --db-path ./ailee/reorg_db >/dev/null
ailee_l2_verify --snapshot ./ailee/l2_snapshots.dat
ailee_init_reorg_db --path ./ailee/reorg_db --check >/dev/null
ailee_extract_snapshots ./ailee/l2_snapshots.dat ./snapshots/ >/dev/null
ls ./snapshots/ >&2
ailee_prune_snapshots --file ./ailee/l2_snapshots.dat --keep 1 --output ./ailee/pruned.dat >/dev/null
ailee_l2_verify --snapshot ./ailee/pruned.dat >/dev/null
ailee_backup --data-dir ./ailee
ailee_l2_verify --snapshot ./ailee/backups/l2_snapshots_latest.dat.bak >/dev/null
"#,
    )
    .expect(exits(0).prints("Verification OK.").says("snapshot_2.dat"));

    // The runbook's way: `./ailee_init_node` from the tools' directory, which
    // is not on PATH.
    sh(
        &moved.join("bin"),
        &system_path(),
        &format!("./ailee_init_node --data-dir {}", work.join("node2").display()),
    )
    .expect(exits(0));
    assert!(work.join("node2/reorg_db/CURRENT").is_file());

    // Through a symlink in another directory.
    let links = t.path().join("links");
    std::fs::create_dir(&links).unwrap();
    std::os::unix::fs::symlink(moved.join("bin/ailee_init_node"), links.join("ailee_init_node")).unwrap();
    sh(
        &links,
        &system_path(),
        &format!("./ailee_init_node --data-dir {}", work.join("node3").display()),
    )
    .expect(exits(0));
}

/// A directory whose `python3`, `python` and `jq` fail loudly: put first on
/// PATH, a script that still needs one of them fails.
fn without_python(t: &Path) -> PathBuf {
    let d = t.join("no-python");
    std::fs::create_dir(&d).unwrap();
    for name in ["python3", "python", "jq"] {
        let p = d.join(name);
        std::fs::write(&p, "#!/bin/sh\necho \"$0: not installed\" >&2\nexit 127\n").unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    d
}

/// The installed scripts need no python (the `.deb` does not depend on it):
/// `ailee_get_snapshot_block` reads the verify document and the anchor record
/// through lib.sh's json_get.
#[test]
fn installed_scripts_read_the_tools_json_without_python() {
    let (t, prefix) = installed("p");
    let path = format!(
        "{}:{}:{}",
        without_python(t.path()).display(),
        prefix.join("bin").display(),
        system_path()
    );
    sh(
        t.path(),
        &path,
        r#"
ailee_init_node --data-dir ./ailee >/dev/null
ailee_l2_verify --snapshot basic.dat --index 1 --print-state > state.json
ailee_create_anchor --l2-state-file state.json --snapshot-file ./ailee/l2_snapshots.dat --db-path ./ailee/reorg_db >/dev/null
ailee_get_snapshot_block ./ailee/l2_snapshots.dat"#
            .replace("basic.dat", vector("basic").to_str().unwrap())
            .as_str(),
    )
    .expect(exits(1).prints_nothing())
    .stderr(contains("is not mined yet (status PENDING); run ailee_resync_blocks").and(contains("not installed").not()));
}

/// lib.sh's json_get, the scripts' one JSON reader: top-level fields only,
/// strings unescaped, null and absent as "", nested values skipped, exit 1
/// on what is not a JSON object.
#[test]
fn json_get_reads_top_level_fields_of_a_json_object() {
    let t = tempfile::tempdir().unwrap();
    let lib = root().join("scripts/lib.sh");
    let path = format!("{}:{}", without_python(t.path()).display(), system_path());
    let doc = r#"{"a": {"status": "nested", "x": [1, {"status": "deeper"}]},
  "status" : "CONFIRMED", "text": "say \"hi\" \\ \/ \u00e9", "height": 117, "ok": true,
  "none": null, "list": ["status"]}"#;
    for (field, want) in [
        ("status", "CONFIRMED\n"),
        ("text", "say \"hi\" \\ / \u{e9}\n"),
        ("height", "117\n"),
        ("ok", "true\n"),
        ("none", "\n"),
        ("list", "\n"),
        ("absent", "\n"),
        ("x", "\n"),
    ] {
        sh(
            t.path(),
            &path,
            &format!("source {}; json_get {field} <<'EOF'\n{doc}\nEOF", lib.display()),
        )
        .env("LC_ALL", "C.UTF-8")
        .expect(exits(0))
        .stdout(want);
    }
    for bad in ["", "not json", "[1, 2]", "{\"a\": \u{1}}"] {
        sh(
            t.path(),
            &path,
            &format!("source {}; json_get a <<'EOF'\n{bad}\nEOF", lib.display()),
        )
        .expect(exits(1));
    }
}

#[test]
fn scripts_answer_help_and_version_and_check_their_tools_first() {
    let (t, prefix) = installed("p");
    for s in ["ailee_init_node", "ailee_get_snapshot_block", "ailee_monitor"] {
        let p = prefix.join("bin").join(s);
        let help = sh(t.path(), &system_path(), &format!("{} --help", p.display())).expect(exits(0));
        let out = String::from_utf8(help.get_output().stdout.clone()).unwrap();
        assert!(out.starts_with(s), "{s} --help: {out}");
        assert!(!out.contains("$("), "{s} --help prints source: {out}");
        sh(t.path(), &system_path(), &format!("{} --version", p.display()))
            .expect(exits(0))
            .stdout(predicate::str::starts_with(format!("{s} ")));
    }
    // The drill through a symlink finds its own directory (env.sh, ROOT).
    std::os::unix::fs::symlink(root().join("scripts/test_recovery.sh"), t.path().join("drill")).unwrap();
    sh(t.path(), &system_path(), "./drill --help")
        .expect(exits(0))
        .stdout(predicate::str::starts_with("test_recovery.sh --mode"));
    sh(t.path(), &system_path(), "./drill --mode nonsense")
        .expect(exits(1))
        .stderr(contains("usage: test_recovery.sh").and(contains("unbound").not()));
    // A script whose tool is missing refuses before it changes anything.
    let lonely = t.path().join("lonely");
    std::fs::create_dir_all(lonely.join("lib/ailee-recovery")).unwrap();
    std::fs::create_dir(lonely.join("bin")).unwrap();
    std::fs::copy(prefix.join("bin/ailee_init_node"), lonely.join("bin/ailee_init_node")).unwrap();
    std::fs::copy(
        prefix.join("lib/ailee-recovery/lib.sh"),
        lonely.join("lib/ailee-recovery/lib.sh"),
    )
    .unwrap();
    sh(
        t.path(),
        &system_path(),
        &format!("{}/bin/ailee_init_node --data-dir d", lonely.display()),
    )
    .expect(exits(1).says("cannot find ailee_init_reorg_db"));
    assert!(!t.path().join("d").exists(), "half-initialised directory left behind");
}

/// Every script of the source tree, developers' ones too, answers `--help`
/// before it builds, installs or checks anything: exit 0, its help on
/// stdout, nothing on stderr, even with no cargo and no tools on PATH.
#[test]
fn every_script_answers_help_before_doing_anything() {
    let t = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for e in std::fs::read_dir(root().join("scripts")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".sh") || name == "lib.sh" || name == "env.sh" {
            continue;
        }
        let out = sh(t.path(), &system_path(), &format!("{} --help", p.display())).expect(exits(0));
        let (stdout, stderr) = (&out.get_output().stdout, &out.get_output().stderr);
        assert!(
            stdout.len() > 40,
            "{name} --help printed no help: {:?}",
            String::from_utf8_lossy(stdout)
        );
        assert!(stderr.is_empty(), "{name} --help: {}", String::from_utf8_lossy(stderr));
        seen += 1;
    }
    assert!(seen >= 15, "only {seen} scripts found");
    assert!(
        t.path().read_dir().unwrap().next().is_none(),
        "--help left files behind"
    );
}

#[test]
fn man_pages_render_and_bash_completion_completes() {
    let (t, prefix) = installed("p");
    let man1 = prefix.join("share/man/man1");
    let mut pages = 0;
    for cmd in std::fs::read_dir(prefix.join("bin")).unwrap() {
        let name = cmd.unwrap().file_name().into_string().unwrap();
        let page = man1.join(format!("{name}.1.gz"));
        assert!(page.is_file(), "no man page for {name}");
        let out = Command::new("man")
            .env_clear()
            .env("PATH", system_path())
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .args(["--warnings", "-P", "cat", "-l"])
            .arg(&page)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "man -l {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("NAME") && text.contains(&name), "man -l {name}:\n{text}");
        assert!(
            out.stderr.is_empty(),
            "man -l {name} warns: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pages += 1;
    }
    assert!(pages >= 11, "{pages} man pages");
    let verify = Command::new("man")
        .env("MANWIDTH", "80")
        .args(["-P", "cat", "-l"])
        .arg(man1.join("ailee_l2_verify.1.gz"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&verify.stdout).contains("--last-valid"));

    let comp = prefix.join("share/bash-completion/completions/ailee_l2_verify");
    let script = format!(
        r#"source {}
f=$(complete -p ailee_l2_verify | sed 's/.*-F \([^ ]*\).*/\1/')
COMP_WORDS=(ailee_l2_verify --sn); COMP_CWORD=1; COMP_LINE='ailee_l2_verify --sn'; COMP_POINT=${{#COMP_LINE}}
"$f" ailee_l2_verify --sn ailee_l2_verify
printf '%s\n' "${{COMPREPLY[@]}}""#,
        comp.display()
    );
    sh(t.path(), &system_path(), &script)
        .expect(exits(0))
        .stdout(predicate::str::diff("--snapshot\n"));
    for (dir, file) in [
        ("share/zsh/vendor-completions", "_ailee_l2_verify"),
        ("share/fish/vendor_completions.d", "ailee_l2_verify.fish"),
    ] {
        let s = std::fs::read_to_string(prefix.join(dir).join(file)).unwrap();
        assert!(s.contains("snapshot"), "{file}");
    }
    let examples = prefix.join("share/ailee-recovery/examples");
    let cron = std::fs::read_to_string(examples.join("ailee-recovery")).unwrap();
    assert!(cron.contains(&format!("{}/bin", prefix.display())) && !cron.contains("/opt/ailee/bin"));
}

#[test]
fn the_debian_package_builds_passes_lintian_and_runs_extracted() {
    let t = tempfile::tempdir().unwrap();
    let out = assert_cmd::Command::new(root().join("scripts/package-deb.sh"))
        .env_clear()
        .env("PATH", system_path())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .args([
            "--out".as_ref(),
            t.path().as_os_str(),
            "--bin-dir".as_ref(),
            bin_dir().as_os_str(),
        ])
        .arg("--no-build")
        .expect(exits(0));
    let deb = PathBuf::from(String::from_utf8(out.get_output().stdout.clone()).unwrap().trim());
    assert!(deb
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("ailee-recovery_0."));

    let contents = Command::new("dpkg-deb").arg("--contents").arg(&deb).output().unwrap();
    assert!(contents.status.success());
    let listing = String::from_utf8_lossy(&contents.stdout);
    for f in [
        "./usr/bin/ailee_l2_verify",
        "./usr/bin/ailee_resync_blocks",
        "./usr/bin/ailee_init_node",
        "./usr/bin/ailee_backup",
        "./usr/bin/ailee_restore",
        "./usr/bin/ailee_metrics",
        "./usr/lib/ailee-recovery/lib.sh",
        "./usr/share/man/man1/ailee_l2_verify.1.gz",
        "./usr/share/bash-completion/completions/ailee_l2_verify",
        "./usr/share/ailee-recovery/examples/ailee-recovery",
        "./usr/share/doc/ailee-recovery/copyright",
    ] {
        assert!(listing.contains(f), "{f} not in the package:\n{listing}");
    }
    let fields = Command::new("dpkg-deb")
        .args(["--field"])
        .arg(&deb)
        .arg("Depends")
        .output()
        .unwrap();
    let depends = String::from_utf8_lossy(&fields.stdout);
    assert!(depends.contains("restic"), "{depends}");
    // The scripts read the tools' JSON with lib.sh's json_get, plain bash.
    assert!(!depends.contains("python"), "{depends}");

    let lintian = Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&lintian.stdout);
    assert!(
        !report.lines().any(|l| l.starts_with("E:")),
        "lintian errors:\n{report}{}",
        String::from_utf8_lossy(&lintian.stderr)
    );

    let tree = t.path().join("x");
    assert!(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tree)
        .status()
        .unwrap()
        .success());
    for b in binaries(&tree.join("usr")) {
        assert!(std::fs::metadata(&b).unwrap().len() <= 20 << 20, "{}", b.display());
    }
    assert_cmd::Command::new(tree.join("usr/bin/ailee_l2_verify"))
        .arg("--snapshot")
        .arg(vector("basic"))
        .expect(exits(0).prints("Verification OK."));
    sh(
        t.path(),
        &format!("{}:{}", tree.join("usr/bin").display(), system_path()),
        "ailee_init_node --data-dir ./n && ailee_init_reorg_db --path ./n/reorg_db --check",
    )
    .expect(exits(0));
}

/// The installed documents keep the clone's tree (README.md beside
/// RELIABILITY.md, BENCHMARKS.md and docs/), so the links between them, which
/// `tests/runbook.rs` resolves in the clone, resolve in the installed tree.
#[test]
fn installed_docs_keep_the_tree_their_links_name() {
    let (_t, prefix) = installed("p");
    let doc = prefix.join("share/doc/ailee-recovery");
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| Path::new("docs").join(e.unwrap().file_name()))
        .collect();
    docs.extend(["README.md", "RELIABILITY.md", "BENCHMARKS.md"].map(PathBuf::from));
    for f in &docs {
        assert_eq!(
            std::fs::read(doc.join(f)).ok(),
            std::fs::read(root().join(f)).ok(),
            "{} not installed as is",
            f.display()
        );
    }
}

/// The cron example as shipped (and as installed, with the prefix's bin/)
/// copied into a cron.d directory is read by cron: Debian's cron takes from
/// /etc/cron.d only the names `run-parts --list` takes (no dot: a file named
/// `ailee.cron` was skipped without a word). Every job line has the five
/// time fields, a user and a command.
#[test]
fn the_cron_example_copied_into_cron_d_is_read_by_cron() {
    let (t, prefix) = installed("prefix");
    let mut crons = Vec::new();
    for examples in [
        root().join("scripts/examples"),
        prefix.join("share/ailee-recovery/examples"),
    ] {
        // Every example that holds cron job lines.
        for e in std::fs::read_dir(&examples).unwrap() {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            if p.is_file()
                && text
                    .lines()
                    .any(|l| l.contains("ailee_monitor") && l.starts_with("*/5 "))
            {
                crons.push((p, text));
            }
        }
    }
    assert_eq!(
        crons.len(),
        2,
        "one cron example in the tree and one installed: {crons:?}"
    );
    for (p, text) in &crons {
        let cron_d = t
            .path()
            .join(format!("cron.d-{}", crons.iter().position(|c| &c.0 == p).unwrap()));
        std::fs::create_dir(&cron_d).unwrap();
        let name = p.file_name().unwrap();
        std::fs::copy(p, cron_d.join(name)).unwrap();
        let out = Command::new("run-parts")
            .arg("--list")
            .arg(&cron_d)
            .output()
            .expect("run-parts (debianutils)");
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{}\n", cron_d.join(name).display()),
            "cron would skip {}",
            p.display()
        );
        let jobs: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.contains('='))
            .collect();
        assert_eq!(jobs.len(), 2, "{text}");
        for j in jobs {
            let f: Vec<&str> = j.split_whitespace().collect();
            assert!(f.len() > 6 && f[5] == "ailee" && f[6].starts_with("ailee_"), "{j}");
        }
    }
}
