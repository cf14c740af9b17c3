//! [`TestDir`]: a scratch directory per test, kept when the test fails.

use std::fs;
use std::path::{Path, PathBuf};

/// A uniquely named scratch directory under `std::env::temp_dir()`.
///
/// Removed on drop when the test passed; kept (and its path printed) when
/// the thread is panicking or `XSBC_KEEP_TMP` is set.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates `<tmp>/xsbc-<label>-<pid>-<nanos>-<n>`.
    pub fn new(label: &str) -> TestDir {
        let path = std::env::temp_dir().join(format!("xsbc-{label}-{}", crate::unique_suffix()));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create scratch dir {}: {e}", path.display()));
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(name)`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the directory; returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(name);
        fs::write(&p, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
        p
    }

    /// The text of `name` inside the directory, empty if it does not exist.
    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.join(name)).unwrap_or_default()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("XSBC_KEEP_TMP").is_some() {
            eprintln!("[test] keeping scratch dir {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
