//! The `[guard]` section: per-source rate limits and automatic bans,
//! enforced before any SIP parsing (see [`crate::guard`]).

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::{invalid, ConfigError};

/// The User-Agent substrings banned on first sight when
/// `guard.scanner_user_agents` is not given (matched case-insensitively).
pub const DEFAULT_SCANNERS: [&str; 7] =
    ["friendly-scanner", "sipvicious", "sipcli", "VaxSIPUserAgent", "sundayddr", "pplsip", "iWar"];

/// A token bucket: `per_s` tokens a second, at most `burst` saved up.
/// `per_s == 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate (messages a second); 0: no limit.
    pub per_s: u32,
    /// Bucket depth (messages at once).
    pub burst: u32,
}

/// Validated `[guard]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// Rate limits and automatic bans on (manual bans work either way).
    pub enabled: bool,
    /// Every SIP request from one source address.
    pub requests: RateLimit,
    /// INVITEs from one source address.
    pub invite: RateLimit,
    /// REGISTERs from one source address.
    pub register: RateLimit,
    /// The window of `ban_after_rate_drops` and `malformed_per_window`.
    pub window: Duration,
    /// A source whose requests were dropped over a rate limit this many
    /// times within `window` is banned (0: never).
    pub ban_after_rate_drops: u32,
    /// Failed digest authentications (wrong password, unknown user) and
    /// REGISTERs refused with 403/404 within `auth_window` that ban a
    /// source (0: never).
    pub auth_failures: u32,
    /// The window of `auth_failures`.
    pub auth_window: Duration,
    /// Lower-cased User-Agent substrings banned on first sight.
    pub scanner_user_agents: Vec<String>,
    /// Unparseable or limit-refused messages within `window` that ban a
    /// source (0: never).
    pub malformed_per_window: u32,
    /// A first ban's length; each repeat doubles it.
    pub ban_time: Duration,
    /// The longest automatic ban.
    pub max_ban_time: Duration,
    /// Prefixes never banned (neither automatically nor by `sbc ctl ban`)
    /// and never rate limited.
    pub never_ban: Vec<IpNet>,
    /// Trunks' source addresses are neither rate limited nor banned
    /// automatically.
    pub exempt_trunks: bool,
    /// Sources with rate state at most (the oldest are forgotten first).
    pub max_sources: usize,
    /// Bans at most (past it, the one expiring soonest is lifted).
    pub max_bans: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            requests: RateLimit { per_s: 1000, burst: 2000 },
            invite: RateLimit { per_s: 300, burst: 600 },
            register: RateLimit { per_s: 200, burst: 400 },
            window: Duration::from_secs(10),
            ban_after_rate_drops: 500,
            auth_failures: 10,
            auth_window: Duration::from_secs(60),
            scanner_user_agents: DEFAULT_SCANNERS.iter().map(|s| s.to_ascii_lowercase()).collect(),
            malformed_per_window: 50,
            ban_time: Duration::from_secs(600),
            max_ban_time: Duration::from_secs(86_400),
            never_ban: Vec::new(),
            exempt_trunks: true,
            max_sources: 65_536,
            max_bans: 65_536,
        }
    }
}

impl GuardConfig {
    /// Whether `ip` is in `never_ban`.
    #[must_use]
    pub fn is_never_ban(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.never_ban.iter().any(|n| n.contains(&ip))
    }
}

/// `[guard]` as written; absent keys take [`GuardConfig::default`].
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGuard {
    enabled: Option<bool>,
    requests_per_s: Option<u32>,
    burst: Option<u32>,
    invite_per_s: Option<u32>,
    invite_burst: Option<u32>,
    register_per_s: Option<u32>,
    register_burst: Option<u32>,
    window_s: Option<u64>,
    ban_after_rate_drops: Option<u32>,
    auth_failures: Option<u32>,
    auth_window_s: Option<u64>,
    scanner_user_agents: Option<Vec<String>>,
    malformed_per_window: Option<u32>,
    ban_time_s: Option<u64>,
    max_ban_time_s: Option<u64>,
    never_ban: Option<Vec<String>>,
    exempt_trunks: Option<bool>,
    max_sources: Option<usize>,
    max_bans: Option<usize>,
}

fn rate(key: &str, per_s: Option<u32>, burst: Option<u32>, d: RateLimit) -> Result<RateLimit, ConfigError> {
    let per_s = per_s.unwrap_or(d.per_s);
    // A changed rate with no burst given gets twice the rate.
    let burst = burst.unwrap_or(if per_s == d.per_s { d.burst } else { per_s.saturating_mul(2) });
    if per_s > 0 && burst == 0 {
        return Err(invalid(format!("guard.{key}"), "must be at least 1 when the rate is on"));
    }
    Ok(RateLimit { per_s, burst })
}

/// Checks the section.
pub(super) fn parse_guard(r: RawGuard) -> Result<GuardConfig, ConfigError> {
    let d = GuardConfig::default();
    let secs = |key: &str, v: Option<u64>, dflt: Duration| -> Result<Duration, ConfigError> {
        match v {
            None => Ok(dflt),
            Some(0) => Err(invalid(format!("guard.{key}"), "must be at least 1 second")),
            Some(s) if s > 365 * 86_400 => Err(invalid(format!("guard.{key}"), "must be at most a year")),
            Some(s) => Ok(Duration::from_secs(s)),
        }
    };
    let never_ban = r
        .never_ban
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| invalid("guard.never_ban", format!("`{s}` is not an address or ADDR/LEN")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let scanners = match r.scanner_user_agents {
        None => d.scanner_user_agents,
        Some(list) => {
            if let Some(bad) = list.iter().find(|s| s.trim().is_empty()) {
                return Err(invalid("guard.scanner_user_agents", format!("`{bad}`: an empty entry matches everyone")));
            }
            list.iter().map(|s| s.trim().to_ascii_lowercase()).collect()
        }
    };
    let g = GuardConfig {
        enabled: r.enabled.unwrap_or(d.enabled),
        requests: rate("burst", r.requests_per_s, r.burst, d.requests)?,
        invite: rate("invite_burst", r.invite_per_s, r.invite_burst, d.invite)?,
        register: rate("register_burst", r.register_per_s, r.register_burst, d.register)?,
        window: secs("window_s", r.window_s, d.window)?,
        ban_after_rate_drops: r.ban_after_rate_drops.unwrap_or(d.ban_after_rate_drops),
        auth_failures: r.auth_failures.unwrap_or(d.auth_failures),
        auth_window: secs("auth_window_s", r.auth_window_s, d.auth_window)?,
        scanner_user_agents: scanners,
        malformed_per_window: r.malformed_per_window.unwrap_or(d.malformed_per_window),
        ban_time: secs("ban_time_s", r.ban_time_s, d.ban_time)?,
        max_ban_time: secs("max_ban_time_s", r.max_ban_time_s, d.max_ban_time)?,
        never_ban,
        exempt_trunks: r.exempt_trunks.unwrap_or(d.exempt_trunks),
        max_sources: r.max_sources.unwrap_or(d.max_sources),
        max_bans: r.max_bans.unwrap_or(d.max_bans),
    };
    if g.max_ban_time < g.ban_time {
        return Err(invalid("guard.max_ban_time_s", "must be at least guard.ban_time_s"));
    }
    if !(16..=10_000_000).contains(&g.max_sources) {
        return Err(invalid("guard.max_sources", "must be between 16 and 10000000"));
    }
    if !(16..=10_000_000).contains(&g.max_bans) {
        return Err(invalid("guard.max_bans", "must be between 16 and 10000000"));
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<GuardConfig, ConfigError> {
        let r: RawGuard = toml::from_str(t).map_err(|e| ConfigError::Toml(e.to_string()))?;
        parse_guard(r)
    }

    #[test]
    fn defaults_and_overrides() {
        let d = parse("").ok();
        assert_eq!(d, Some(GuardConfig::default()));
        let d = GuardConfig::default();
        assert!(d.enabled && d.never_ban.is_empty());
        assert!(d.scanner_user_agents.contains(&"friendly-scanner".to_string()));
        assert!(d.scanner_user_agents.contains(&"vaxsipuseragent".to_string()), "lower-cased");
        // The README quickstart and a single sipp at 200 calls/s (INVITE,
        // ACK, BYE) from one address pass the defaults.
        assert!(d.invite.per_s >= 200 && d.requests.per_s >= 3 * 200);
        let g = parse(
            "requests_per_s = 10\ninvite_per_s = 2\ninvite_burst = 3\nnever_ban = [\"10.0.0.0/8\", \"2001:db8::1\"]\n\
             scanner_user_agents = [\"EvilBot\"]\nban_time_s = 5\nmax_ban_time_s = 40\nenabled = false",
        )
        .ok();
        let g = g.as_ref();
        assert_eq!(g.map(|g| g.requests), Some(RateLimit { per_s: 10, burst: 20 }), "burst follows a new rate");
        assert_eq!(g.map(|g| g.invite), Some(RateLimit { per_s: 2, burst: 3 }));
        assert_eq!(g.map(|g| g.scanner_user_agents.clone()), Some(vec!["evilbot".to_string()]));
        assert!(g.is_some_and(|g| g.is_never_ban("10.1.2.3".parse().unwrap())));
        assert!(g.is_some_and(|g| g.is_never_ban("::ffff:10.1.2.3".parse().unwrap())), "v4-mapped");
        assert!(g.is_some_and(|g| !g.is_never_ban("11.1.2.3".parse().unwrap())));
        assert!(g.is_some_and(|g| !g.enabled));
    }

    #[test]
    fn errors_name_the_key() {
        for (t, key) in [
            ("never_ban = [\"nope\"]", "guard.never_ban"),
            ("ban_time_s = 0", "guard.ban_time_s"),
            ("ban_time_s = 100\nmax_ban_time_s = 50", "guard.max_ban_time_s"),
            ("requests_per_s = 5\nburst = 0", "guard.burst"),
            ("scanner_user_agents = [\" \"]", "guard.scanner_user_agents"),
            ("max_sources = 1", "guard.max_sources"),
            ("window_s = 0", "guard.window_s"),
            ("bogus_key = 1", "bogus_key"),
        ] {
            let e = parse(t).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(key), "{t}: {e}");
        }
    }
}
