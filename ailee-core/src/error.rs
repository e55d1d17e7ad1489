//! Typed errors of the core; binaries add context and map them to exit codes.

use crate::exit::ExitStatus;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OS error is part of the message, not a separate `source`, so a
    /// report of the error chain prints it once.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    #[error("No snapshots found in file: {0}")]
    NoSnapshots(PathBuf),
    #[error("{0}")]
    Usage(String),
    #[error("refusing to replace existing {0} (use --force)")]
    Exists(PathBuf),
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Integrity(String),
    /// The reorg database is locked, not a database, out of reach or damaged.
    #[error(transparent)]
    Db(#[from] crate::records::DbError),
    /// The node refused the request, answered with an RPC error, or sent a
    /// reply that failed validation (exit 1: the data was not read, nothing
    /// about the snapshot or the database follows).
    #[error("Bitcoin RPC {url}: {message}")]
    Rpc { url: String, message: String },
    /// The node is not ready to answer: nothing listening, the connection
    /// reset, no reply within the timeout, HTTP 503, or RPC warm-up (`-28`).
    /// `--wait` waits for it; otherwise as [`Error::Rpc`].
    #[error("Bitcoin RPC {url}: {message}")]
    RpcNotReady { url: String, message: String },
    /// `error` came after changes were committed; `written` says what they
    /// were (the exit status is `error`'s).
    #[error("{error}; {written}")]
    AfterWrites { error: Box<Error>, written: String },
    #[error("{0}")]
    Decode(#[from] crate::records::DecodeError),
    /// An error another process reported (e.g. the reorg database reader
    /// behind `ailee_l2_verify --reorg-db`), with the exit status it stands for.
    #[error("{message}")]
    Reported { message: String, status: ExitStatus },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    /// The exit status this error stands for.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Error::Interrupted => ExitStatus::Interrupted,
            Error::Reported { status, .. } => *status,
            Error::AfterWrites { error, .. } => error.exit_status(),
            Error::Integrity(_) | Error::Decode(_) => ExitStatus::Integrity,
            Error::Db(e) if e.is_damage() => ExitStatus::Integrity,
            _ => ExitStatus::Operational,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
