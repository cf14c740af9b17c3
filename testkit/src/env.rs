//! Skip or fail. Under `CI=true` every test must run, so a missing tool or
//! privilege is a failure; elsewhere the test prints `SKIPPED: <why>` on
//! stderr (where `cargo test` shows it) and returns.

use std::fs;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `CI=true` (or `1`) in the environment: required tools must be present.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1" | "TRUE" | "True"))
}

/// Prints `SKIPPED: {why}`, or panics with `why` under `CI=true`.
pub fn skip(why: &str) {
    assert!(!in_ci(), "CI=true but {why}");
    // Straight to stderr: libtest captures `println!` of passing tests.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// Whether this process runs as root (uid 0).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// Finds an executable by name in `$PATH` and the usual sbin directories
/// (Kamailio lives in /usr/sbin, often not in a non-root `$PATH`).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false))
}

/// A binary the test needs: `None` (with a SKIPPED line) when it is missing,
/// and a panic instead under `CI=true`.
pub fn require_binary(name: &str) -> Option<PathBuf> {
    let found = find_binary(name);
    if found.is_none() {
        skip(&format!("{name} is not installed"));
    }
    found
}

/// Whether the test can run as root with every tool in `tools` installed;
/// says why not (and fails under `CI=true`). `what` names the test.
pub fn require_root_and(what: &str, tools: &[&str]) -> bool {
    if !is_root() {
        skip(&format!("{what}: needs root for network namespaces"));
        return false;
    }
    for tool in tools {
        if find_binary(tool).is_none() {
            skip(&format!("{what}: `{tool}` is not installed"));
            return false;
        }
    }
    true
}

/// Whether `program --version` runs and succeeds (e.g. `redis-server`).
pub fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
