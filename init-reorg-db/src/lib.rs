//! The modes of `ailee_init_reorg_db`, each a function over the database
//! crate returning what it found: [`create`], [`check`], [`copy`],
//! [`get_anchor`] and [`serve`] (the reader behind `ailee_l2_verify
//! --reorg-db`, [`ailee_db::reader`]). The binary picks the mode and renders
//! the result.

use ailee_core::records::AnchorRecord;
use ailee_core::records::DbError;
use ailee_core::Error;
use ailee_db::reorgdb::{CheckReport, Mode, ReorgDb};
use anyhow::Context;
use std::path::Path;

fn open(path: &Path) -> anyhow::Result<ReorgDb> {
    ReorgDb::open(path, Mode::ReadOnly).context("cannot open reorg database")
}

/// Creates an empty database the node can open (never over anything).
pub fn create(path: &Path) -> anyhow::Result<()> {
    ReorgDb::create(path).context("cannot create reorg database")?;
    Ok(())
}

/// Checks an existing database read-only, listing `recent` reorg events.
pub fn check(path: &Path, recent: usize) -> anyhow::Result<CheckReport> {
    Ok(open(path)?.check(recent)?)
}

/// Writes a consistent copy to `dest` and checks the copy; returns the
/// number of records copied.
pub fn copy(path: &Path, dest: &Path) -> anyhow::Result<u64> {
    let db = open(path)?;
    let n = db.copy_to(dest).context("cannot copy the reorg database")?;
    drop(db);
    let copy = ReorgDb::open(dest, Mode::ReadOnly)?;
    let r = copy.check(0)?;
    if !r.healthy() {
        let why = r.errors.first().cloned().or(r.counter_mismatch).unwrap_or_default();
        return Err(Error::Integrity(format!("The copy does not check: {why}")).into());
    }
    Ok(n)
}

/// The record of one anchor; none is a usage error (exit 1).
pub fn get_anchor(path: &Path, hash: &str) -> anyhow::Result<AnchorRecord> {
    open(path)?
        .anchor(hash)?
        .ok_or_else(|| Error::Usage(format!("No anchor {hash} in {}", path.display())).into())
}

/// The reader: answers questions from `input` on `output` until the end of
/// `input` (see [`ailee_db::reader`]).
pub fn serve(path: &Path, input: impl std::io::BufRead, output: impl std::io::Write) -> anyhow::Result<()> {
    Ok(ailee_db::reader::serve(&open(path)?, input, output)?)
}

/// What kind of problem an error is, for the `--json` error document:
/// `corrupt`, `locked`, `unreadable`, `absent`, `not_a_database`,
/// `interrupted` or `error`.
pub fn problem_of(e: &anyhow::Error, path: &Path) -> &'static str {
    match e.chain().find_map(|c| c.downcast_ref::<Error>()) {
        Some(Error::Db(DbError::Corrupt { .. }) | Error::Decode(_) | Error::Integrity(_)) => "corrupt",
        Some(Error::Db(DbError::Locked { .. })) => "locked",
        Some(Error::Db(DbError::NotADatabase { .. }))
            if std::fs::read_dir(path).is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied) =>
        {
            "unreadable"
        }
        Some(Error::Db(DbError::NotADatabase { .. })) if std::fs::symlink_metadata(path).is_err() => "absent",
        Some(Error::Db(DbError::NotADatabase { .. })) => "not_a_database",
        Some(Error::Io { .. } | Error::Db(DbError::Engine { .. })) => "unreadable",
        Some(Error::Interrupted) => "interrupted",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ailee_records::reader::{Answer, Reply};

    #[test]
    fn create_check_copy_and_serve_without_a_process() {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("db");
        create(&db).unwrap();
        assert!(create(&db).is_err(), "an existing database is never touched");
        let r = check(&db, 10).unwrap();
        assert!(r.healthy());
        assert_eq!(r.blocks, 0);
        assert_eq!(copy(&db, &t.path().join("copy")).unwrap(), 0);
        let e = get_anchor(&db, "ab").unwrap_err();
        assert_eq!(e.to_string(), format!("No anchor ab in {}", db.display()));
        let mut out = Vec::new();
        serve(&db, &b"ab\nblock:5\n"[..], &mut out).unwrap();
        let answers: Vec<Answer> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(answers, [Answer::absent("ab"), Answer::absent("block:5")]);
        assert_eq!(answers[1].block_reply(), Ok(Reply::Absent));
    }

    #[test]
    fn problems_are_named() {
        let t = tempfile::tempdir().unwrap();
        let absent = t.path().join("none");
        let e = check(&absent, 1).unwrap_err();
        assert_eq!(problem_of(&e, &absent), "absent");
        let long = format!("{}\n", "a".repeat(70_000));
        create(&t.path().join("db")).unwrap();
        let e = serve(&t.path().join("db"), long.as_bytes(), Vec::new()).unwrap_err();
        assert_eq!(problem_of(&e, &absent), "error");
    }
}
