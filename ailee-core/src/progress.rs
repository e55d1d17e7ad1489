//! Progress reporting for long loops; binaries draw it (indicatif), the core
//! only counts.

/// Receives progress of a long operation, in bytes or items.
pub trait Progress: Send + Sync {
    fn set_total(&self, _total: u64) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}

/// Reports nowhere.
pub struct NoProgress;

impl Progress for NoProgress {}
