//! The test kit: what the integration tests of `media-relay`, `sbc` and
//! `xdp-prog` share. Only tests depend on it (as a dev-dependency), and it
//! depends on none of our crates, so their types exist once in a test.
//!
//! | module | owns |
//! | --- | --- |
//! | [`env`] | skip-or-fail: `CI=true` must run, elsewhere a missing tool or privilege skips with `SKIPPED: ...` |
//! | [`dir`] | [`TestDir`], a scratch directory kept when a test fails |
//! | [`process`] | [`ChildGuard`], a spawned process always stopped and reaped, its logs in files |
//! | [`ports`] | free UDP/TCP ports and port ranges on loopback |
//! | [`bencode`] | a small bencode codec of its own (independent of the relay's) |
//! | [`ng`] | [`NgClient`] (unique cookies, retries) and [`NgTap`], a recording ng proxy |
//! | [`sip`] | an OPTIONS probe: is a SIP server up |
//! | [`metrics`] | Prometheus text scraping |
//! | [`sipp`] | the sipp harness: [`Sipp`], its command builder, scenarios and statistics |
//! | [`netns`] | network namespaces and veth pairs, named per process, removed on drop |
//! | [`realms`] | the two-realm lab: inside, sbc and outside namespaces (and a NAT) with isolation checked |
//! | [`capture`] | live captures of an interface (`AF_PACKET`) and reading IP/UDP/TCP/SIP out of frames |
//! | [`pcap`] | pcap files: reading, writing, a synthetic RTP stream |
//! | [`postgres`] | a private PostgreSQL cluster per test (initdb, pg_ctl start/stop, psql) |
//! | [`udp`] | receiving several datagrams with a timeout |
//! | `sys` | the only `unsafe`: setns, kill, `AF_PACKET` (send, capture) and `AF_XDP` sockets |
#![allow(clippy::missing_panics_doc, reason = "test helpers panic on a failed setup step by design")]

pub mod bencode;
pub mod capture;
pub mod dir;
pub mod env;
pub mod fuzz;
pub mod metrics;
pub mod netns;
pub mod ng;
pub mod pcap;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod realms;
pub mod sip;
pub mod sipp;
mod sys;
pub mod udp;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use dir::TestDir;
pub use env::{find_binary, in_ci, is_root, require_binary, skip};
pub use netns::Netns;
pub use ng::{NgClient, NgExchange, NgTap};
pub use process::ChildGuard;
pub use sipp::Sipp;
pub use sys::{unbound_xdp_socket, PacketSocket};

/// Polls `cond` every `every` until it returns true or `timeout` passes.
/// Returns whether it became true.
pub fn wait_until(timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// `<pid>-<nanos>-<n>`: unique within this machine's concurrently running
/// test processes (scratch dirs, ng cookies, SIP tags).
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{}-{}", std::process::id(), nanos, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Runs `f` on a thread of its own and waits for it, re-raising its panic.
/// Network namespaces are per thread: a test that enters one does so on
/// such a thread, so the harness's own threads never move.
pub fn in_own_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match std::thread::spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
