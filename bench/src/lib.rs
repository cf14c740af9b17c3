//! Load generation shared by `rtpgen` and `relay-bench`: an ng client that
//! sets up calls on any rtpengine-compatible relay, and an RTP generator and
//! sink that measures relayed rate, loss, latency and jitter.
//!
//! One generator socket serves many legs: the relays latch each leg to the
//! first source that sends to it (symmetric RTP), so sharing sockets is
//! legitimate and lets one core drive hundreds of thousands of packets per
//! second with `sendmmsg`/`recvmmsg`. Each packet carries its stream id,
//! sequence number and send time (CLOCK_MONOTONIC) in the payload.

pub mod gen;
pub mod ng;
mod sys;

pub use sys::enter_netns;

/// Monotonic nanoseconds.
#[must_use]
pub fn now_ns() -> u64 {
    media_relay::sys::monotonic_ns()
}
