//! Replaying saved fuzz corpora as ordinary tests on stable Rust.

use std::path::Path;

/// Runs `body` on every file of `corpus/<target>/` under `fuzz_dir`;
/// panics naming the file that makes `body` panic, or when the corpus is
/// empty (a replay that checks nothing must not pass).
pub fn replay(fuzz_dir: &Path, target: &str, body: fn(&[u8])) {
    let dir = fuzz_dir.join("corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if std::panic::catch_unwind(|| body(&data)).is_err() {
            panic!("{target}: {} panics", path.display());
        }
        n += 1;
    }
    assert!(n > 0, "{target}: empty corpus in {}", dir.display());
}
