//! Relay configuration: the TOML file, the rtpengine-compatible command-line
//! overrides, and validation with errors that name the offending key.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use xdp_prog::BanKey;

/// The configuration the binary embeds and uses when no file is given.
pub const DEFAULT_TOML: &str = include_str!("../config/media-relay.toml");

/// A configuration problem, naming the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        /// Path of the file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML did not parse or had an unknown key or a wrongly typed value.
    #[error("config: {0}")]
    Toml(String),
    /// A key has a value that is syntactically fine but not acceptable.
    #[error("config key `{key}`: {problem}")]
    Invalid {
        /// Dotted key name, e.g. `relay.port_min`.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// One media interface: a logical name, the local address sockets bind to,
/// and the address advertised in SDP (differs behind 1:1 NAT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Logical name, used by the ng `direction` key. `default` when unnamed.
    pub name: String,
    /// Address the relay's sockets bind to.
    pub local: IpAddr,
    /// Address written into SDP.
    pub advertised: IpAddr,
}

impl Interface {
    /// Parses rtpengine's `--interface` syntax: `[NAME/]ADDR[!ADVERTISED]`.
    ///
    /// # Errors
    /// Returns a message naming the part that is not an address.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (name, rest) = match spec.split_once('/') {
            Some((n, r)) if !n.is_empty() && n.parse::<IpAddr>().is_err() => (n.to_owned(), r),
            _ => ("default".to_owned(), spec),
        };
        let (local, adv) = match rest.split_once('!') {
            Some((l, a)) => (l, Some(a)),
            None => (rest, None),
        };
        let local: IpAddr = local
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| format!("`{local}` is not an IP address (want [NAME/]ADDR[!ADVERTISED])"))?;
        let advertised = match adv {
            Some(a) => a
                .trim_matches(|c| c == '[' || c == ']')
                .parse()
                .map_err(|_| format!("advertised address `{a}` is not an IP address"))?,
            None => local,
        };
        Ok(Self { name, local, advertised })
    }
}

/// A source prefix the XDP program drops: an entry of `relay.xdp_bans`, or a
/// ban made at runtime ([`crate::relay::Relay::xdp_ban`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BanPrefix {
    /// The network address (no bits set past the prefix).
    pub addr: IpAddr,
    /// Prefix length in the address's own family (at most 32 or 128).
    pub len: u8,
}

impl BanPrefix {
    /// `addr/len`, with the bits past the prefix cleared (`192.0.2.7/24`
    /// gives `192.0.2.0/24`).
    ///
    /// # Errors
    /// A length too long for the family, or an IPv6 prefix that contains
    /// `::ffff:0:0/96` (where the program matches IPv4 sources, so it would
    /// ban every IPv4 source too).
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, String> {
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let key = BanKey::new(addr, len).map_err(|_| format!("{addr}/{len}: the prefix length must be 0 to {max}"))?;
        // The program looks IPv4 sources up as IPv4-mapped IPv6 addresses,
        // so an IPv6 prefix this short would ban every IPv4 source too.
        let ipv4_space = IpAddr::V6(std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0));
        if addr.is_ipv6() && len < 96 && BanKey::new(ipv4_space, len).is_ok_and(|k| k == key) {
            return Err(format!(
                "{addr}/{len} contains ::ffff:0:0/96, where IPv4 sources are matched, so it would ban every IPv4 \
                 source too: give IPv4 and IPv6 prefixes separately (0.0.0.0/0 bans all IPv4)"
            ));
        }
        let (net, _) = key.prefix();
        // `prefix()` gives an IPv4-mapped prefix of /96 or longer back as
        // IPv4; keep the family the caller wrote.
        let addr = match (addr, net) {
            (IpAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => net,
        };
        Ok(Self { addr, len })
    }

    /// Exactly one host: `addr/32` or `addr/128`.
    #[must_use]
    pub const fn host(addr: IpAddr) -> Self {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, len }
    }

    /// The key of this prefix in the XDP `bans` map (IPv4 as IPv4-mapped,
    /// so `198.51.100.0/24` and `::ffff:198.51.100.0/120` are one key).
    #[must_use]
    pub fn key(&self) -> BanKey {
        BanKey::new(self.addr, self.len).unwrap_or_else(|_| BanKey::host(self.addr))
    }

    /// Parses `ADDR` (one host) or `ADDR/LEN`.
    ///
    /// # Errors
    /// Says what is wrong: not an address, a length too long for the
    /// family, or host bits set past the prefix (likely a typo).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (addr, len) = match spec.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (spec, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("`{spec}`: `{addr}` is not an IP address"))?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let too_long = || format!("`{spec}`: the prefix length must be 0 to {max}");
        let len = match len {
            None => max,
            Some(l) => l.parse::<u8>().map_err(|_| too_long())?,
        };
        // The map's own key clears the bits past the prefix.
        let key = BanKey::new(addr, len).map_err(|_| too_long())?;
        if key.addr != BanKey::host(addr).addr {
            let (net, net_len) = key.prefix();
            return Err(format!("`{spec}` has bits set past the prefix (the network is {net}/{net_len})"));
        }
        Self::new(addr, len).map_err(|problem| format!("`{spec}`: {problem}"))
    }
}

impl std::fmt::Display for BanPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Validated relay configuration.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Media interfaces; the first is the default.
    pub interfaces: Vec<Interface>,
    /// Where the ng control protocol listens (UDP). `None` disables it.
    pub listen_ng: Option<SocketAddr>,
    /// Lowest port of the media range (inclusive).
    pub port_min: u16,
    /// Highest port of the media range (inclusive).
    pub port_max: u16,
    /// Number of worker threads.
    pub workers: usize,
    /// Delete a session after this long with no media in either direction.
    pub timeout: Duration,
    /// Keep a deleted call this long before freeing it (rtpengine's delete-delay).
    pub delete_delay: Duration,
    /// Latch each leg to the first source that sends to it (symmetric RTP for NAT).
    pub nat: bool,
    /// Prometheus `/metrics` listen address. `None` disables it.
    pub metrics: Option<SocketAddr>,
    /// tracing filter, e.g. `info` or `media_relay=debug`.
    pub log_level: String,
    /// SO_RCVBUF for each media socket, bytes (0 = kernel default).
    pub socket_rcvbuf: usize,
    /// Maximum number of cached ng replies.
    pub ng_cache_size: usize,
    /// How long a cached ng reply is kept.
    pub ng_cache_age: Duration,
    /// Maximum number of concurrent calls (0 = limited only by ports).
    pub max_sessions: usize,
    /// Bind media sockets with `IP_FREEBIND`, so they can be bound to an
    /// address this host does not hold yet (an HA pair's virtual IP). Not a
    /// file key: the sbc sets it when `[ha]` is configured.
    pub freebind: bool,
    /// UDP ports whose datagrams the `AF_XDP` datapath steers to its workers
    /// and hands to the signaling plane (see [`crate::sip_handoff`]). Not a
    /// file key: the sbc sets its SIP port.
    pub sip_ports: Vec<u16>,
    /// Which datapath moves media: sockets, `AF_XDP`, or `AF_XDP` when possible.
    pub datapath: DatapathMode,
    /// Interfaces the XDP program is attached to (`AF_XDP` datapath).
    pub xdp_interfaces: Vec<String>,
    /// `AF_XDP` rx queues (one worker each); 0 = every rx queue of the interfaces.
    pub xdp_queues: usize,
    /// Recompute UDP checksums instead of updating them (senders on the same
    /// host, over veth or loopback, hand over partial checksums).
    pub xdp_full_checksum: bool,
    /// Whether the `AF_XDP` sockets use the driver's zero-copy mode.
    pub xdp_zero_copy: ZeroCopy,
    /// Source prefixes the XDP program drops before anything else sees them.
    pub xdp_bans: Vec<BanPrefix>,
    /// Scheduling policy of the media workers.
    pub worker_scheduling: Scheduling,
    /// CPU wakeup latency limit held while the relay runs, in microseconds
    /// (`/dev/cpu_dma_latency`); `None`: no limit.
    pub cpu_latency_us: Option<u32>,
    /// Foreign packets per second from one source to one latched media port
    /// past which the source is reported as flooding
    /// ([`crate::relay::Relay::take_flood_sources`]); 0 disables.
    pub flood_ban_pps: u32,
    /// Whether the XDP program drops UDP to the media port range's ports
    /// that have no session (on the media interfaces' addresses).
    pub xdp_drop_no_session: bool,
    /// An answered call whose media flows one way only for this long is
    /// flagged as one-way audio (`relay.one_way_after_s`; 0 disables).
    pub one_way_after: Duration,
}

/// `relay.xdp_zero_copy`: how the `AF_XDP` sockets move frames between the
/// NIC and the relay's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    /// Zero-copy where every interface's driver supports it, copy mode
    /// otherwise.
    #[default]
    Auto,
    /// Zero-copy or nothing: a driver without it is an error (so `datapath =
    /// "auto"` falls back to sockets, and `"xdp"` exits).
    On,
    /// Copy mode even where the driver supports zero-copy (a way around
    /// driver bugs).
    Off,
}

impl ZeroCopy {
    /// The config names of the modes.
    pub const NAMES: [(&'static str, Self); 3] = [("auto", Self::Auto), ("on", Self::On), ("off", Self::Off)];
}

/// `relay.worker_scheduling` and `relay.worker_priority`: how the kernel
/// schedules the media workers. A real-time policy keeps ordinary
/// processes on the workers' cores from delaying packets (the scheduler
/// can otherwise hold a runnable worker back for milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheduling {
    /// The default time-sharing policy (`SCHED_OTHER`).
    #[default]
    Other,
    /// `SCHED_FIFO` at this priority (1 to 99).
    Fifo(u8),
    /// `SCHED_RR` at this priority (1 to 99).
    RoundRobin(u8),
}

/// Why a policy and priority pair was refused.
#[derive(Debug)]
pub struct SchedulingError {
    /// The priority (not the policy) is wrong.
    pub priority: bool,
    /// What is wrong.
    pub problem: String,
}

impl Scheduling {
    /// A policy name (`other`, `fifo`, `rr`; rtpengine's `default` and
    /// `none` mean `other`) and an optional priority (default 10).
    ///
    /// # Errors
    /// An unknown policy, a priority outside 1..=99, or a priority without a
    /// real-time policy.
    pub fn parse(policy: &str, priority: Option<i64>) -> Result<Self, SchedulingError> {
        let prio = match priority {
            None => 10,
            Some(p) => u8::try_from(p)
                .ok()
                .filter(|p| (1..=99).contains(p))
                .ok_or_else(|| SchedulingError { priority: true, problem: format!("{p} is out of range (1..=99)") })?,
        };
        match policy {
            "other" | "default" | "none" if priority.is_some() => Err(SchedulingError {
                priority: true,
                problem: "a priority only applies to the \"fifo\" and \"rr\" policies".into(),
            }),
            "other" | "default" | "none" => Ok(Self::Other),
            "fifo" => Ok(Self::Fifo(prio)),
            "rr" => Ok(Self::RoundRobin(prio)),
            other => Err(SchedulingError {
                priority: false,
                problem: format!("`{other}` is not \"other\", \"fifo\" or \"rr\""),
            }),
        }
    }
}

/// `relay.datapath`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatapathMode {
    /// UDP sockets with `recvmmsg`/`sendmmsg`.
    Socket,
    /// `AF_XDP`; the relay exits with the reason if it cannot run.
    Xdp,
    /// `AF_XDP` when it can run, else sockets (the reason is logged).
    Auto,
}

impl DatapathMode {
    /// The config names of the modes.
    pub const NAMES: [(&'static str, Self); 3] = [("socket", Self::Socket), ("xdp", Self::Xdp), ("auto", Self::Auto)];
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    relay: RawRelay,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    interfaces: Vec<String>,
    listen_ng: String,
    port_min: u16,
    port_max: u16,
    workers: Workers,
    timeout: u64,
    #[serde(default)]
    delete_delay: u64,
    #[serde(default = "yes")]
    nat: bool,
    metrics: String,
    #[serde(default = "info")]
    log_level: String,
    #[serde(default)]
    socket_rcvbuf: usize,
    #[serde(default = "cache_size")]
    ng_cache_size: usize,
    #[serde(default = "cache_age")]
    ng_cache_age: u64,
    #[serde(default)]
    max_sessions: usize,
    #[serde(default = "auto")]
    datapath: String,
    #[serde(default)]
    xdp_interfaces: Vec<String>,
    #[serde(default)]
    xdp_queues: usize,
    #[serde(default)]
    xdp_full_checksum: bool,
    #[serde(default = "auto")]
    xdp_zero_copy: String,
    #[serde(default)]
    xdp_bans: Vec<String>,
    #[serde(default = "scheduling_other")]
    worker_scheduling: String,
    #[serde(default)]
    worker_priority: Option<i64>,
    #[serde(default)]
    cpu_latency_us: Option<toml::Value>,
    #[serde(default = "flood_ban_pps")]
    flood_ban_pps: u32,
    #[serde(default = "yes")]
    xdp_drop_no_session: bool,
    #[serde(default = "one_way_after_s")]
    one_way_after_s: u64,
}

/// Default of `relay.one_way_after_s`.
const fn one_way_after_s() -> u64 {
    10
}

/// Default of `relay.flood_ban_pps`: far above a misdirected stream's 50
/// packets a second, far below a flood.
fn flood_ban_pps() -> u32 {
    500
}

fn scheduling_other() -> String {
    "other".into()
}

/// The option named `value`, or what is wrong with it (naming every option).
///
/// # Errors
/// `value` names none of `options`.
pub fn choice<T: Copy>(value: &str, options: &[(&str, T)]) -> Result<T, String> {
    if let Some((_, v)) = options.iter().find(|(name, _)| *name == value) {
        return Ok(*v);
    }
    let names: Vec<String> = options.iter().map(|(name, _)| format!("\"{name}\"")).collect();
    let list = match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.concat(),
    };
    Err(format!("`{value}` is not {list}"))
}

/// Most a CPU latency limit may be: above a second, it limits nothing.
const CPU_LATENCY_MAX_US: i64 = 1_000_000;

/// `relay.cpu_latency_us`: `"off"` (or absent) or microseconds.
fn parse_cpu_latency(v: Option<&toml::Value>) -> Result<Option<u32>, String> {
    match v {
        None => Ok(None),
        Some(toml::Value::String(s)) if s == "off" => Ok(None),
        Some(toml::Value::Integer(n)) if (0..=CPU_LATENCY_MAX_US).contains(n) => Ok(u32::try_from(*n).ok()),
        Some(toml::Value::Integer(n)) => {
            Err(format!("{n} is out of range (0..={CPU_LATENCY_MAX_US} microseconds, or \"off\")"))
        }
        Some(toml::Value::Float(x)) => Err(format!("{x} is not a whole number of microseconds")),
        Some(other) => Err(format!("`{other}` is neither \"off\" nor a whole number of microseconds (unquoted)")),
    }
}

/// A CPU latency limit given as text (a command-line option): `off` or
/// microseconds.
///
/// # Errors
/// What is wrong with `s`.
pub fn cpu_latency_from_str(s: &str) -> Result<Option<u32>, String> {
    match s.parse::<i64>() {
        Ok(n) => parse_cpu_latency(Some(&toml::Value::Integer(n))),
        Err(_) => parse_cpu_latency(Some(&toml::Value::String(s.to_owned()))),
    }
}

/// `"auto"`: the default of `relay.datapath` and `relay.xdp_zero_copy`.
fn auto() -> String {
    "auto".to_owned()
}

fn yes() -> bool {
    true
}
fn info() -> String {
    "info".to_owned()
}
fn cache_size() -> usize {
    10_000
}
fn cache_age() -> u64 {
    30
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Workers {
    Count(i64),
    Word(String),
}

impl RelayConfig {
    /// Loads and validates a TOML file.
    ///
    /// # Errors
    /// Names the key and the problem.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::from_toml(&text)
    }

    /// Parses and validates TOML text.
    ///
    /// # Errors
    /// Names the key and the problem.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        let r = file.relay;
        let mut interfaces = Vec::with_capacity(r.interfaces.len());
        for spec in &r.interfaces {
            interfaces.push(
                Interface::parse(spec).map_err(|problem| ConfigError::Invalid { key: "relay.interfaces", problem })?,
            );
        }
        let workers = match r.workers {
            Workers::Word(w) if w == "auto" => 0,
            Workers::Word(w) => {
                return Err(ConfigError::Invalid {
                    key: "relay.workers",
                    problem: format!("`{w}` is neither \"auto\" nor a number"),
                })
            }
            Workers::Count(n) if (1..=1024).contains(&n) => usize::try_from(n).unwrap_or(1),
            Workers::Count(n) => {
                return Err(ConfigError::Invalid {
                    key: "relay.workers",
                    problem: format!("{n} is out of range (1..=1024, or \"auto\")"),
                })
            }
        };
        let datapath = choice(&r.datapath, &DatapathMode::NAMES)
            .map_err(|problem| ConfigError::Invalid { key: "relay.datapath", problem })?;
        let xdp_zero_copy = choice(&r.xdp_zero_copy, &ZeroCopy::NAMES)
            .map_err(|problem| ConfigError::Invalid { key: "relay.xdp_zero_copy", problem })?;
        let worker_scheduling =
            Scheduling::parse(&r.worker_scheduling, r.worker_priority).map_err(|e| ConfigError::Invalid {
                key: if e.priority { "relay.worker_priority" } else { "relay.worker_scheduling" },
                problem: e.problem,
            })?;
        let cpu_latency_us = parse_cpu_latency(r.cpu_latency_us.as_ref())
            .map_err(|problem| ConfigError::Invalid { key: "relay.cpu_latency_us", problem })?;
        let xdp_bans = r
            .xdp_bans
            .iter()
            .map(|b| BanPrefix::parse(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|problem| ConfigError::Invalid { key: "relay.xdp_bans", problem })?;
        let mut cfg = Self {
            interfaces,
            listen_ng: parse_listen("relay.listen_ng", &r.listen_ng)?,
            port_min: r.port_min,
            port_max: r.port_max,
            workers,
            timeout: Duration::from_secs(r.timeout),
            delete_delay: Duration::from_secs(r.delete_delay),
            nat: r.nat,
            metrics: parse_listen("relay.metrics", &r.metrics)?,
            log_level: r.log_level,
            socket_rcvbuf: r.socket_rcvbuf,
            ng_cache_size: r.ng_cache_size,
            ng_cache_age: Duration::from_secs(r.ng_cache_age),
            max_sessions: r.max_sessions,
            freebind: false,
            sip_ports: Vec::new(),
            datapath,
            xdp_interfaces: r.xdp_interfaces,
            xdp_queues: r.xdp_queues,
            xdp_full_checksum: r.xdp_full_checksum,
            xdp_zero_copy,
            xdp_bans,
            worker_scheduling,
            cpu_latency_us,
            flood_ban_pps: r.flood_ban_pps,
            xdp_drop_no_session: r.xdp_drop_no_session,
            one_way_after: Duration::from_secs(r.one_way_after_s),
        };
        cfg.resolve_workers();
        cfg.validate()?;
        Ok(cfg)
    }

    /// The embedded default configuration.
    ///
    /// # Panics
    /// Never in practice: a unit test checks the embedded file validates.
    #[must_use]
    pub fn embedded_default() -> Self {
        #[expect(clippy::expect_used, reason = "the embedded default is validated by a unit test")]
        Self::from_toml(DEFAULT_TOML).expect("embedded default config is valid")
    }

    /// Replaces `workers = 0` ("auto") with the number of available cores.
    pub fn resolve_workers(&mut self) {
        if self.workers == 0 {
            self.workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        }
    }

    /// Checks cross-key constraints.
    ///
    /// # Errors
    /// Names the key and the problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interfaces.is_empty() {
            return Err(ConfigError::Invalid {
                key: "relay.interfaces",
                problem: "at least one interface address is needed".into(),
            });
        }
        if self.port_min < 1024 {
            return Err(ConfigError::Invalid {
                key: "relay.port_min",
                problem: format!("{} is below 1024", self.port_min),
            });
        }
        if self.port_max <= self.port_min || u32::from(self.port_max) - u32::from(self.port_min) < 3 {
            return Err(ConfigError::Invalid {
                key: "relay.port_max",
                problem: format!(
                    "{} leaves no room for one RTP/RTCP pair above port_min {}",
                    self.port_max, self.port_min
                ),
            });
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::Invalid { key: "relay.timeout", problem: "must be at least 1 second".into() });
        }
        if self.datapath == DatapathMode::Xdp && self.xdp_interfaces.is_empty() {
            return Err(ConfigError::Invalid {
                key: "relay.xdp_interfaces",
                problem: "datapath = \"xdp\" needs at least one interface name".into(),
            });
        }
        if self.xdp_interfaces.iter().any(|i| i.is_empty() || i.len() > 15 || i.contains('/')) {
            return Err(ConfigError::Invalid {
                key: "relay.xdp_interfaces",
                problem: "interface names are 1 to 15 characters, without `/`".into(),
            });
        }
        if !self.xdp_bans.is_empty() && self.datapath == DatapathMode::Socket {
            return Err(ConfigError::Invalid {
                key: "relay.xdp_bans",
                problem: "bans are enforced by the XDP program: they need datapath = \"xdp\" or \"auto\"".into(),
            });
        }
        if !self.xdp_bans.is_empty() && self.xdp_interfaces.is_empty() {
            return Err(ConfigError::Invalid {
                key: "relay.xdp_bans",
                problem: "bans are enforced by the XDP program on relay.xdp_interfaces, and none is set".into(),
            });
        }
        if self.xdp_bans.len() > xdp_prog::BANS_MAX_ENTRIES as usize {
            return Err(ConfigError::Invalid {
                key: "relay.xdp_bans",
                problem: format!(
                    "{} prefixes, more than the {} the XDP program holds",
                    self.xdp_bans.len(),
                    xdp_prog::BANS_MAX_ENTRIES
                ),
            });
        }
        if self.xdp_queues > 64 {
            return Err(ConfigError::Invalid {
                key: "relay.xdp_queues",
                problem: format!("{} is more than the 64 queues the XSKMAP holds", self.xdp_queues),
            });
        }
        if self.ng_cache_size == 0 {
            return Err(ConfigError::Invalid {
                key: "relay.ng_cache_size",
                problem: "must be at least 1 (retransmitted commands must not run twice)".into(),
            });
        }
        Ok(())
    }

    /// Looks up an interface by logical name.
    #[must_use]
    pub fn interface(&self, name: &str) -> Option<usize> {
        self.interfaces.iter().position(|i| i.name == name)
    }
}

/// Parses a listen address. Accepts `ADDR:PORT`, `[V6]:PORT`, a bare port
/// (loopback, as rtpengine does), or `off`/empty to disable.
///
/// # Errors
/// Names `key` and the text that did not parse.
pub fn parse_listen(key: &'static str, text: &str) -> Result<Option<SocketAddr>, ConfigError> {
    let t = text.trim();
    if t.is_empty() || t == "off" || t == "none" {
        return Ok(None);
    }
    if let Ok(port) = t.parse::<u16>() {
        return Ok(Some(SocketAddr::from(([127, 0, 0, 1], port))));
    }
    t.parse::<SocketAddr>()
        .map(Some)
        .map_err(|_| ConfigError::Invalid { key, problem: format!("`{t}` is not ADDR:PORT, a port, or \"off\"") })
}

/// Maps rtpengine's syslog-style numeric `--log-level` (0..7) or a name to a
/// tracing filter.
#[must_use]
pub fn log_filter(level: &str) -> String {
    match level.trim() {
        "0" | "1" | "2" | "3" => "error".into(),
        "4" => "warn".into(),
        "5" | "6" => "info".into(),
        "7" => "debug".into(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_on_loopback() {
        let c = RelayConfig::embedded_default();
        assert!(c.interfaces[0].local.is_loopback());
        assert!(c.listen_ng.is_some_and(|a| a.ip().is_loopback()));
        assert!(c.metrics.is_some_and(|a| a.ip().is_loopback()));
        assert!(c.workers >= 1);
        assert_eq!(c.timeout, Duration::from_secs(60));
    }

    #[test]
    fn interface_syntax() {
        let i = Interface::parse("ext/10.0.0.1!203.0.113.9").unwrap();
        assert_eq!(i.name, "ext");
        assert_eq!(i.local, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(i.advertised, "203.0.113.9".parse::<IpAddr>().unwrap());
        let i = Interface::parse("::1").unwrap();
        assert_eq!(i.name, "default");
        assert!(Interface::parse("eth0").is_err());
    }

    #[test]
    fn errors_name_the_key() {
        let bad = DEFAULT_TOML.replace("port_min = 30000", "port_min = 80");
        let e = RelayConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("relay.port_min"), "{e}");
        let bad = DEFAULT_TOML.replace("workers = \"auto\"", "workers = \"many\"");
        let e = RelayConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("relay.workers"), "{e}");
        let bad = DEFAULT_TOML.replace("listen_ng = \"127.0.0.1:22222\"", "listen_ng = \"nowhere\"");
        let e = RelayConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("relay.listen_ng"), "{e}");
        let bad = DEFAULT_TOML.replace("[relay]", "[relay]\nbogus = 1");
        let e = RelayConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn xdp_bans_are_prefixes_or_hosts_and_need_the_xdp_program() {
        assert!(RelayConfig::embedded_default().xdp_bans.is_empty());
        let with = |bans: &str| {
            DEFAULT_TOML.replace("xdp_interfaces = []", &format!("xdp_interfaces = [\"eth0\"]\nxdp_bans = {bans}"))
        };
        let c = RelayConfig::from_toml(&with(r#"["203.0.113.0/24", "198.51.100.7", "2001:db8::/32", "2000::/3"]"#))
            .unwrap();
        let shown: Vec<String> = c.xdp_bans.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["203.0.113.0/24", "198.51.100.7/32", "2001:db8::/32", "2000::/3"]);
        let mapped = RelayConfig::from_toml(&with(r#"["::ffff:198.51.100.0/120"]"#)).unwrap();
        assert_eq!(mapped.xdp_bans[0].to_string(), "::ffff:198.51.100.0/120", "an IPv4 /24 written IPv4-mapped");
        for (bad, says) in [
            ("203.0.113.7/24", "the network is 203.0.113.0/24"),
            ("2001:db8::1/64", "the network is 2001:db8::/64"),
            ("203.0.113.0/33", "0 to 32"),
            ("2001:db8::/129", "0 to 128"),
            ("10.0.0.0/x", "0 to 32"),
            ("example.com", "not an IP address"),
            ("::/0", "every IPv4 source"),
            ("::/80", "every IPv4 source"),
            ("::ffff:198.51.100.7/120", "the network is 198.51.100.0/24"),
        ] {
            let e = RelayConfig::from_toml(&with(&format!("[\"{bad}\"]"))).unwrap_err().to_string();
            assert!(e.contains("relay.xdp_bans") && e.contains(bad) && e.contains(says), "{bad}: {e}");
        }
        let socket = with(r#"["203.0.113.0/24"]"#).replace("datapath = \"auto\"", "datapath = \"socket\"");
        let e = RelayConfig::from_toml(&socket).unwrap_err().to_string();
        assert!(e.contains("relay.xdp_bans") && e.contains("datapath"), "{e}");
        let nowhere = with(r#"["203.0.113.0/24"]"#).replace("xdp_interfaces = [\"eth0\"]", "xdp_interfaces = []");
        let e = RelayConfig::from_toml(&nowhere).unwrap_err().to_string();
        assert!(e.contains("relay.xdp_bans") && e.contains("xdp_interfaces"), "{e}");
    }

    #[test]
    fn flood_limit_and_no_session_drops() {
        let c = RelayConfig::embedded_default();
        assert_eq!((c.flood_ban_pps, c.xdp_drop_no_session), (500, true));
        let set = DEFAULT_TOML.replace("[relay]", "[relay]\nflood_ban_pps = 0\nxdp_drop_no_session = false");
        let c = RelayConfig::from_toml(&set).unwrap();
        assert_eq!((c.flood_ban_pps, c.xdp_drop_no_session), (0, false));
        let bad = DEFAULT_TOML.replace("[relay]", "[relay]\nflood_ban_pps = -1");
        let e = RelayConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("flood_ban_pps"), "{e}");
    }

    #[test]
    fn ban_prefixes_from_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let p = BanPrefix::new(ip("203.0.113.77"), 24).unwrap();
        assert_eq!(p, BanPrefix::parse("203.0.113.0/24").unwrap(), "host bits cleared");
        assert_eq!(BanPrefix::host(ip("198.51.100.7")), BanPrefix::parse("198.51.100.7").unwrap());
        assert_eq!(BanPrefix::host(ip("2001:db8::1")).to_string(), "2001:db8::1/128");
        assert_eq!(BanPrefix::new(ip("2001:db8::1"), 48).unwrap().to_string(), "2001:db8::/48");
        let mapped = BanPrefix::new(ip("::ffff:198.51.100.7"), 120).unwrap();
        assert_eq!(mapped.to_string(), "::ffff:198.51.100.0/120");
        assert_eq!(mapped.key(), BanPrefix::parse("198.51.100.0/24").unwrap().key(), "one map key");
        assert!(BanPrefix::new(ip("192.0.2.1"), 33).unwrap_err().contains("0 to 32"));
        assert!(BanPrefix::new(ip("::"), 0).unwrap_err().contains("every IPv4 source"));
        let set: std::collections::HashSet<BanPrefix> = [p, BanPrefix::new(p.addr, p.len).unwrap()].into();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn datapath_keys() {
        let c = RelayConfig::embedded_default();
        assert_eq!(c.datapath, DatapathMode::Auto);
        assert!(c.xdp_interfaces.is_empty());
        let set = |datapath: &str, ifaces: &str| {
            DEFAULT_TOML
                .replace("datapath = \"auto\"", &format!("datapath = \"{datapath}\""))
                .replace("xdp_interfaces = []", &format!("xdp_interfaces = {ifaces}"))
        };
        let xdp = set("xdp", "[\"veth0\", \"veth1\"]").replace("[relay]", "[relay]\nxdp_queues = 2");
        let c = RelayConfig::from_toml(&xdp).unwrap();
        assert_eq!((c.datapath, c.xdp_interfaces.len(), c.xdp_queues), (DatapathMode::Xdp, 2, 2));
        let e = RelayConfig::from_toml(&set("dpdk", "[]")).unwrap_err().to_string();
        assert!(e.contains("relay.datapath"), "{e}");
        let e = RelayConfig::from_toml(&set("xdp", "[]")).unwrap_err().to_string();
        assert!(e.contains("relay.xdp_interfaces"), "{e}");
        let e = RelayConfig::from_toml(&set("auto", "[\"a/b\"]")).unwrap_err().to_string();
        assert!(e.contains("relay.xdp_interfaces"), "{e}");
        let rt = DEFAULT_TOML.replace("[relay]", "[relay]\nworker_scheduling = \"fifo\"\nworker_priority = 40");
        assert_eq!(RelayConfig::from_toml(&rt).unwrap().worker_scheduling, Scheduling::Fifo(40));
        let rr = DEFAULT_TOML.replace("[relay]", "[relay]\nworker_scheduling = \"rr\"");
        assert_eq!(RelayConfig::from_toml(&rr).unwrap().worker_scheduling, Scheduling::RoundRobin(10));
        assert_eq!(RelayConfig::embedded_default().worker_scheduling, Scheduling::Other);
        for (bad, key) in [
            ("worker_scheduling = \"deadline\"", "relay.worker_scheduling"),
            ("worker_scheduling = \"fifo\"\nworker_priority = 100", "relay.worker_priority"),
            ("worker_scheduling = \"fifo\"\nworker_priority = 0", "relay.worker_priority"),
            ("worker_priority = 5", "relay.worker_priority"),
        ] {
            let e = RelayConfig::from_toml(&DEFAULT_TOML.replace("[relay]", &format!("[relay]\n{bad}"))).unwrap_err();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
        let bad = DEFAULT_TOML.replace("[relay]", "[relay]\nxdp_queues = 65");
        let e = RelayConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("relay.xdp_queues"), "{e}");

        assert_eq!(RelayConfig::embedded_default().xdp_zero_copy, ZeroCopy::Auto);
        for (v, want) in [("auto", ZeroCopy::Auto), ("on", ZeroCopy::On), ("off", ZeroCopy::Off)] {
            let c = DEFAULT_TOML.replace("xdp_zero_copy = \"auto\"", &format!("xdp_zero_copy = \"{v}\""));
            assert_eq!(RelayConfig::from_toml(&c).unwrap().xdp_zero_copy, want);
        }
        assert_eq!(choice("xdp", &DatapathMode::NAMES), Ok(DatapathMode::Xdp));
        assert_eq!(choice("dpdk", &DatapathMode::NAMES), Err("`dpdk` is not \"socket\", \"xdp\" or \"auto\"".into()));
        assert_eq!(choice("x", &[("a", 1), ("b", 2)]), Err("`x` is not \"a\" or \"b\"".into()));
        assert_eq!(choice("x", &[("a", 1)]), Err("`x` is not \"a\"".into()));
        let bad = DEFAULT_TOML.replace("xdp_zero_copy = \"auto\"", "xdp_zero_copy = \"yes\"");
        let e = RelayConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("relay.xdp_zero_copy") && e.contains("`yes`"), "{e}");
    }

    #[test]
    fn cpu_latency_is_off_or_bounded_microseconds() {
        assert_eq!(RelayConfig::embedded_default().cpu_latency_us, None);
        let with = |v: &str| DEFAULT_TOML.replace("cpu_latency_us = \"off\"", &format!("cpu_latency_us = {v}"));
        assert_eq!(RelayConfig::from_toml(&with("0")).unwrap().cpu_latency_us, Some(0));
        assert_eq!(RelayConfig::from_toml(&with("50")).unwrap().cpu_latency_us, Some(50));
        assert_eq!(RelayConfig::from_toml(&with("1000000")).unwrap().cpu_latency_us, Some(1_000_000));
        assert_eq!(RelayConfig::from_toml(&with("\"off\"")).unwrap().cpu_latency_us, None);
        assert_eq!(cpu_latency_from_str("off"), Ok(None));
        assert_eq!(cpu_latency_from_str("20"), Ok(Some(20)));
        assert!(cpu_latency_from_str("-5").unwrap_err().contains("out of range"));
        assert!(cpu_latency_from_str("soon").unwrap_err().contains("`\"soon\"`"));
        for (bad, says) in
            [("-1", "out of range"), ("1000001", "out of range"), ("\"low\"", "`\"low\"`"), ("1.5", "1.5")]
        {
            let e = RelayConfig::from_toml(&with(bad)).unwrap_err().to_string();
            assert!(e.contains("relay.cpu_latency_us") && e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen("k", "2223").unwrap(), Some("127.0.0.1:2223".parse().unwrap()));
        assert_eq!(parse_listen("k", "off").unwrap(), None);
        assert!(parse_listen("k", "[::1]:9").unwrap().is_some());
    }
}
