//! The tests of `relay_udp.rs` again, with the relay on the AF_XDP
//! datapath: each relay runs in a network namespace of its own with the XDP
//! program on that namespace's loopback (generic mode) and one AF_XDP
//! socket on its queue; the test thread enters the namespace, so its
//! sockets, ng client and metrics scrapes meet the relay there. Every packet
//! a test sends to the relay is steered by XDP to the worker, which
//! rewrites it and sends it out of the loopback's TX ring.
//!
//! Needs root; without it each test says so and runs on sockets, except
//! under `CI=true`, where it fails.
#![allow(clippy::unwrap_used, reason = "test harness: a failed unwrap is a failed test")]

/// Read by `relay_udp.rs` as `crate::DATAPATH`.
const DATAPATH: &str = "xdp";

#[path = "relay_udp.rs"]
mod cases;
