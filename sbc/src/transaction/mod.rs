//! RFC 3261 §17 transactions as sans-I/O state machines.
//!
//! The machines never read the clock (every entry point takes `now`) and
//! never build or parse messages: they hold the bytes to retransmit and
//! return actions for the caller to carry out. Client: [`ClientTxn`];
//! server: [`ServerTxn`].

mod client;
mod server;

use std::time::Duration;

pub use client::{ClientAction, ClientState, ClientTxn};
pub use server::{ServerAction, ServerState, ServerTxn};

/// RFC 3261 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate (500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self { t1: Duration::from_millis(500), t2: Duration::from_secs(4), t4: Duration::from_secs(5) }
    }
}

impl TimerConfig {
    /// 64 × T1: timers B, F, H and J.
    #[must_use]
    pub fn t1x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// INVITE or non-INVITE transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// INVITE.
    Invite,
    /// Everything else (ACK never has a transaction of its own).
    NonInvite,
}

/// Whether a Via branch carries the RFC 3261 magic cookie. The bare cookie
/// `z9hG4bK` still counts (RFC 4475 badbranch).
#[must_use]
pub fn is_rfc3261_branch(branch: &str) -> bool {
    branch.starts_with("z9hG4bK")
}
