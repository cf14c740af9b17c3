//! Load generation shared by `rtpgen` and `relay-bench`: an ng client that
//! sets up calls on any rtpengine-compatible relay, and an RTP generator and
//! sink that measures relayed rate, loss, latency and jitter.
//!
//! One generator socket serves many legs: the relays latch each leg to the
//! first source that sends to it (symmetric RTP), so sharing sockets is
//! legitimate and lets one core drive hundreds of thousands of packets per
//! second with `sendmmsg`/`recvmmsg`. Each packet carries its stream id,
//! sequence number and send time (CLOCK_MONOTONIC) in the payload.
//!
//! Also here: [`xdp`], the namespace lab and steps of `xdp-bench`;
//! [`spawn`] and [`procfs`], starting relays and reading their CPU and
//! memory; [`bare`], the bare relay `relay-bench` compares against.

pub mod bare;
pub mod gen;
pub mod ng;
pub mod procfs;
pub mod spawn;
mod sys;
pub mod xdp;

pub use sys::{enter_netns, process_cpu_ns};

/// Monotonic nanoseconds.
#[must_use]
pub fn now_ns() -> u64 {
    media_relay::os::monotonic_ns()
}

/// The median of the finite values of `v` (NaN if there are none).
#[must_use]
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
