//! Shared by this crate's integration tests: packet builders, and loading
//! the program or skipping when not privileged. Namespaces, the `AF_XDP`
//! socket and the skip-or-fail rule come from `testkit`.
#![allow(dead_code, reason = "shared by several test crates, each using a part")]

pub mod packets;

use std::fmt::Write as _;

use aya::Ebpf;

/// Loads the program, or `None` (after printing `SKIPPED: ...`) when the
/// kernel says EPERM. With `CI=true` a missing privilege fails instead.
pub fn load_or_skip(test: &str) -> Option<Ebpf> {
    match xdp_prog::load() {
        Ok(ebpf) => Some(ebpf),
        Err(e) if e.is_permission_denied() => {
            testkit::skip(&format!("{test}: loading XDP needs root or CAP_BPF+CAP_NET_ADMIN ({})", chain(&e)));
            None
        }
        Err(e) => panic!("loading the XDP program: {}", chain(&e)),
    }
}

/// An error with all its sources, e.g. to show the verifier log.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let _ = write!(out, ": {e}");
        next = e.source();
    }
    out
}
