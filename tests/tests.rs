//! The integration tests: one test crate (ripgrep's layout), a module per
//! tool or area, over the shared support in `src/lib.rs` (the real regtest
//! node, the workspace's binaries, the fake RPC server and the proxy).
//!
//! One module or one test: `cargo test --release --test integration chain::`,
//! `cargo test --release --test integration backup::journal::`.

mod ambiguous_root;
#[path = "backup/main.rs"]
mod backup;
mod chain;
mod crash;
mod create_anchor;
mod db_check;
mod file_tools;
mod hostile;
mod install;
mod metrics;
mod reorg_db;
mod resync;
mod rpc_faults;
mod rpc_hardening;
mod runbook;
mod runbook_caveats;
mod verify;
mod verify_db;
