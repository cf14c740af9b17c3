//! Authentication: HTTP Digest for SIP, used both to check the sbc's own
//! users and to answer the challenges of carriers.
//!
//! - [`digest`]: the header syntax and the hashes.
//! - [`nonce`]: stateless nonces (HMAC of time and a secret) and the
//!   nonce-count replay table.
//! - [`users`]: the users file (HA1 hashes).
//! - [`server`]: the [`Authenticator`] that challenges requests and checks
//!   their credentials, sans I/O, time passed in.

pub mod digest;
pub mod nonce;
pub mod server;
pub mod users;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub use server::{Authenticator, Verdict};

/// Authentication counters. The signaling thread writes them; the
/// exporter reads them.
#[derive(Debug, Default)]
pub struct AuthMetrics {
    /// Challenges sent (401 and 407).
    pub challenges: AtomicU64,
    /// Credentials accepted.
    pub successes: AtomicU64,
    /// Credentials refused: wrong password, unknown user, bad nonce, bad uri.
    pub failures: AtomicU64,
    /// Authentic nonces past their lifetime (answered with `stale=true`).
    pub stale: AtomicU64,
    /// Replayed or non-increasing nonce-counts.
    pub replays: AtomicU64,
    /// REGISTERs refused because the user does not own the AOR.
    pub forbidden: AtomicU64,
    /// Users in the table.
    pub users: AtomicU64,
}

impl AuthMetrics {
    /// Appends the Prometheus text of these counters to `o`.
    pub fn render(&self, o: &mut String) {
        for (name, kind, help, v) in [
            ("sbc_auth_challenges_total", "counter", "Digest challenges sent (401 and 407).", &self.challenges),
            ("sbc_auth_successes_total", "counter", "Digest credentials accepted.", &self.successes),
            (
                "sbc_auth_failures_total",
                "counter",
                "Digest credentials refused (wrong password, unknown user, forged nonce).",
                &self.failures,
            ),
            ("sbc_auth_stale_nonces_total", "counter", "Authentic but expired nonces (stale=true).", &self.stale),
            ("sbc_auth_replays_total", "counter", "Replayed or non-increasing nonce-counts.", &self.replays),
            (
                "sbc_auth_forbidden_total",
                "counter",
                "REGISTERs refused because the user does not own the address-of-record.",
                &self.forbidden,
            ),
            ("sbc_auth_users", "gauge", "Users in the users file.", &self.users),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", v.load(Relaxed));
        }
    }
}
