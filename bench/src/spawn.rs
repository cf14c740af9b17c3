//! Relay processes the benches start: where their binaries are,
//! and a child process that is killed when its handle goes.

use std::path::{Path, PathBuf};
use std::process::Child;

/// The binary `name` (`media-relay`, `bare-relay`): `explicit` if given,
/// else the one next to the running executable (they are built into the
/// same target directory).
#[must_use]
pub fn bin_beside(name: &str, explicit: Option<&Path>) -> PathBuf {
    explicit.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join(name)))
            .unwrap_or_else(|| PathBuf::from(name))
    })
}

/// A relay process, killed and reaped on drop.
pub struct RelayProcess(pub Child);

impl RelayProcess {
    /// Its process id (`taskset` and `ip netns exec` exec the relay, so this
    /// is the relay's own).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
