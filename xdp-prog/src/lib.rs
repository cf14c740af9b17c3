//! The xsbc XDP program and everything userspace shares with it.
//!
//! The program (`src/xsbc.bpf.c`) drops banned sources, steers media and SIP
//! to `AF_XDP` sockets and passes the rest to the kernel. Its maps are the only
//! interface between it and userspace; this crate owns their names
//! ([`MAP_XSKS`], ...), the `#[repr(C)]` key/value types ([`MediaKey`], ...),
//! the per-CPU counter indexes ([`Counter`]), one typed wrapper per map
//! ([`MediaPorts`], [`Bans`], [`SipPorts`], [`RelayPorts`], [`Xsks`],
//! [`Counters`]) and the
//! compiled object ([`XDP_OBJECT`]).
//!
//! Addresses use one 16-byte form for both families: IPv4 is stored
//! IPv4-mapped (`::ffff:a.b.c.d`), so a single LPM trie holds IPv4 and IPv6
//! bans (an IPv4 /N is stored as /N+96). Ports in map keys are host order.
//!
//! ```no_run
//! # fn main() -> Result<(), xdp_prog::Error> {
//! let mut ebpf = xdp_prog::load()?;
//! let mut media = xdp_prog::MediaPorts::take(&mut ebpf)?;
//! media.insert("192.0.2.10:30000".parse().unwrap(), xdp_prog::MediaValue::new(7))?;
//! xdp_prog::attach(&mut ebpf, "eth0", aya::programs::XdpMode::Driver)?;
//! # Ok(()) }
//! ```

mod counters;
mod error;
mod loader;
mod maps;
mod object;
mod sys;
mod types;

pub use counters::{Counter, CounterSnapshot, Counters, COUNTER_COUNT};
pub use error::Error;
pub use loader::{attach, load, load_with, program};
pub use maps::{Bans, MediaPorts, RelayPorts, SipPorts, Xsks};
pub use object::{XDP_OBJECT, XDP_OBJECT_ORIGIN};
pub use types::{BanKey, BanValue, MediaKey, MediaValue, PortRange};

/// Name of the XDP program (the C function) in [`XDP_OBJECT`].
pub const PROGRAM_NAME: &str = "xsbc_xdp";

/// `BPF_MAP_TYPE_XSKMAP`: rx queue index -> `AF_XDP` socket. See [`Xsks`].
pub const MAP_XSKS: &str = "xsks";
/// `BPF_MAP_TYPE_HASH`: [`MediaKey`] -> [`MediaValue`]. See [`MediaPorts`].
pub const MAP_MEDIA_PORTS: &str = "media_ports";
/// `BPF_MAP_TYPE_LPM_TRIE`: [`BanKey`] -> [`BanValue`]. See [`Bans`].
pub const MAP_BANS: &str = "bans";
/// Entries [`MAP_BANS`] holds (`max_entries` in the C source).
pub const BANS_MAX_ENTRIES: u32 = 65_536;
/// `BPF_MAP_TYPE_HASH`: UDP port (`u16`, host order) -> flags (`u32`). See [`SipPorts`].
pub const MAP_SIP_PORTS: &str = "sip_ports";
/// `BPF_MAP_TYPE_PERCPU_ARRAY`: [`Counter`] index -> `u64`. See [`Counters`].
pub const MAP_COUNTERS: &str = "counters";
/// `BPF_MAP_TYPE_HASH`: local address (`[u8; 16]`) -> [`PortRange`]. See [`RelayPorts`].
pub const MAP_RELAY_PORTS: &str = "relay_ports";
/// Entries [`MAP_RELAY_PORTS`] holds (`max_entries` in the C source).
pub const RELAY_PORTS_MAX_ENTRIES: u32 = 64;

/// Every map of the program, for checks that walk them all.
pub const MAP_NAMES: [&str; 6] = [MAP_XSKS, MAP_MEDIA_PORTS, MAP_BANS, MAP_SIP_PORTS, MAP_COUNTERS, MAP_RELAY_PORTS];
