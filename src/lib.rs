//! Test support for the workspace's integration tests (`tests/`).
//!
//! The tests run the real binaries. `assert_cmd` only finds binaries of the
//! package under test (assert-rs/assert_cmd#164), so [`bin`] builds every
//! tool of the workspace once, with the same profile and target directory as
//! the running test, and returns its path: no reliance on build order.
//! [`cmd`] scrubs the environment so a developer's settings change nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The node's reference vectors (`../shared/vectors`).
pub fn vectors() -> PathBuf {
    root().join("../shared/vectors")
}

/// A vector file by name (`basic` → `../shared/vectors/basic.dat`).
pub fn vector(name: &str) -> PathBuf {
    vectors().join(format!("{name}.dat"))
}

fn profile_dir() -> PathBuf {
    // target/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Path of a workspace binary, built (once per test process) if needed.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let dir = profile_dir();
    let built = BUILT.get_or_init(|| {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let mut c = Command::new(cargo);
        c.args(["build", "--workspace", "--bins", "--quiet"])
            .current_dir(root());
        if dir.file_name().is_some_and(|n| n == "release") {
            c.arg("--release");
        }
        if let Some(target) = dir.parent() {
            c.env("CARGO_TARGET_DIR", target);
        }
        match c.status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("cargo build --bins failed: {s}")),
            Err(e) => Err(format!("cannot run cargo: {e}")),
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    dir.join(name)
}

/// A command for a workspace binary with a scrubbed environment.
pub fn cmd(name: &str) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(bin(name));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C");
    c
}

/// A scrubbed `bash -c` for runbook procedures, with the tools on `PATH`.
pub fn bash(script: &str) -> assert_cmd::Command {
    let tools = bin("ailee_l2_verify").parent().expect("bin dir").to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(tools).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH");
    let mut c = assert_cmd::Command::new("bash");
    c.env_clear()
        .env("PATH", path)
        .env("LC_ALL", "C")
        .args(["-euo", "pipefail", "-c", script]);
    c
}
