//! The one exit-code table of every tool (SPEC §2).

/// What a tool's run amounted to; the process exit code is its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitStatus {
    /// The job was done.
    Success = 0,
    /// Bad arguments, missing or unreadable input, I/O error, database locked
    /// or absent, RPC unreachable or refused, a node reply that fails validation.
    Operational = 1,
    /// The data was read and is wrong.
    Integrity = 2,
    /// A reorg deeper than the confirmation threshold: halt and re-anchor.
    DeepReorg = 3,
    /// Stopped by a signal before the work was committed. The process then
    /// dies by the signal itself (the shell reports 128 + the signal); this
    /// value is only the fallback when it cannot.
    Interrupted = 130,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The table printed at the end of every `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success
  1    operational error: bad arguments, missing or unreadable input, I/O error,
       database locked or absent, RPC unreachable or refused, a node reply
       that fails validation
  2    integrity failure: the data was read and is wrong
  3    deep reorg (ailee_resync_blocks): deeper than the confirmation threshold
  130  interrupted by SIGINT (143 SIGTERM, 129 SIGHUP): temporary files are
       removed and the tool dies by the signal; work already committed
       reports success instead";
