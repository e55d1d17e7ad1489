//! A bounded sample of the kill campaign with the restic child in the
//! picture (`scripts/campaign_restic.sh`): ten runs on a 4 MB snapshot file,
//! which stop every victim (backup, `--verify`, `--verify --read-data`,
//! restore) and use every signal (SIGINT/SIGTERM to the tool and to its
//! process group, SIGKILL) while a restic child of it runs. The script exits
//! 0 only if no restic outlived its tool, every next hourly backup succeeded
//! and left no lock, `restic check` passed, every exit status was death by
//! the signal or success, and a stopped restore left each file wholly old or
//! wholly restored. The full campaign (`--runs 120`, 128 MB) is run by hand.

use ailee_recovery::{bash, bin, exits, root, Expecting};

#[test]
fn kill_campaign_with_the_restic_child_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let tools = bin("ailee_backup").parent().unwrap().to_path_buf();
    bash(r#""$0" "$@""#)
        .arg(root().join("scripts/campaign_restic.sh"))
        .args(["--runs", "10", "--size-mb", "4", "--check-every", "5", "--dir"])
        .arg(tmp.path().join("campaign"))
        .env("AILEE_BIN", tools)
        .env("HOME", tmp.path())
        .timeout(std::time::Duration::from_secs(600))
        .expect(exits(0));
}
