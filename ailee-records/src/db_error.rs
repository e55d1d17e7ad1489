//! The errors of the reorg database: what opening or reading it can meet.
//! Raised by the database crate (`ailee-db`, which links RocksDB); named here
//! so that the core can tell an integrity failure (a damaged database) from an
//! operational one without linking RocksDB, and so that the tools' reports
//! (`ailee_init_reorg_db --check`, `ailee_restore`) can match on them.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum DbError {
    /// Another process holds the database's lock (the node is probably running).
    Locked { path: PathBuf },
    /// What is at `path` is not a reorg database; `why` says what it is.
    NotADatabase { path: PathBuf, why: String },
    /// RocksDB failed for a reason that is not damage (I/O, permission, a
    /// database that kept changing under a read-only view).
    Engine { path: PathBuf, message: String },
    /// RocksDB read the database and found it damaged (its `Corruption`
    /// kind: checksum, file size, missing file, bad CURRENT or MANIFEST).
    Corrupt { path: PathBuf, message: String },
}

impl DbError {
    /// Whether the database itself is damaged (an integrity failure), not
    /// merely out of reach.
    pub fn is_damage(&self) -> bool {
        matches!(self, DbError::Corrupt { .. })
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Locked { path } => write!(
                f,
                "{}: the database is locked by another process — the AILEE node is probably running. \
                 Stop it first (systemctl stop ailee-node), or use the read-only check, which works while it runs. \
                 Do not delete LOCK: RocksDB's lock is released by the kernel when its holder exits.",
                path.display()
            ),
            DbError::NotADatabase { path, why } => write!(f, "{}: {why}", path.display()),
            DbError::Engine { path, message } => write!(f, "{}: RocksDB: {message}", path.display()),
            DbError::Corrupt { path, message } => write!(
                f,
                "{}: the database is damaged (RocksDB: {message}). Do not run the node on it: \
                 rebuild it from the Bitcoin node (runbook Procedure 3) or restore a backup",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DbError {}
