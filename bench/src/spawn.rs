//! Relay processes the benches start: where the `media-relay` binary is,
//! and a child process that is killed when its handle goes.

use std::path::{Path, PathBuf};
use std::process::Child;

/// The `media-relay` binary: `explicit` if given, else the one next to the
/// running executable (both are built into the same target directory).
#[must_use]
pub fn media_relay_bin(explicit: Option<&Path>) -> PathBuf {
    explicit.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("media-relay")))
            .unwrap_or_else(|| PathBuf::from("media-relay"))
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
