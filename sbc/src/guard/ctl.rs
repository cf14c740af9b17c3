//! `sbc ctl bans`, `sbc ctl ban ADDR[/LEN] [--for DURATION]` and
//! `sbc ctl unban ADDR[/LEN]`: the ban list and manual changes to it,
//! each change audited in the log.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use media_relay::config::BanPrefix;

use super::{Guard, Reason};

/// Parses a duration: `90`, `90s`, `10m`, `2h`, `1d` (at least a second,
/// at most a year).
///
/// # Errors
/// What is wrong with it.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration (e.g. 30s, 10m, 2h, 1d)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: the unit must be s, m, h or d")),
    };
    let secs = n.checked_mul(mult).filter(|v| (1..=365 * 86_400).contains(v));
    secs.map(Duration::from_secs).ok_or_else(|| format!("`{s}` must be between 1s and 365d"))
}

fn parse_net(spec: &str) -> Result<IpNet, String> {
    let p = BanPrefix::parse(spec)?;
    IpNet::new(p.addr, p.len).map_err(|e| format!("`{spec}`: {e}"))
}

impl Guard {
    /// Answers a ban command (`bans`, `ban ...`, `unban ...`), or `None`
    /// when `line` is not one.
    pub fn control(&mut self, line: &str, now: Instant) -> Option<String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        Some(match words.as_slice() {
            ["bans"] => self.table(now),
            ["ban", spec, rest @ ..] => {
                let time = match rest {
                    [] => None,
                    ["--for", d] => match parse_duration(d) {
                        Ok(d) => Some(d),
                        Err(e) => return Some(format!("error: {e}\n")),
                    },
                    _ => return Some("error: usage: ban ADDR[/LEN] [--for DURATION]\n".into()),
                };
                let net = match parse_net(spec) {
                    Ok(n) => n,
                    Err(e) => return Some(format!("error: {e}\n")),
                };
                match self.ban(net, Reason::Manual, time, now) {
                    Ok(b) => {
                        let secs = b.until.saturating_duration_since(now).as_secs();
                        tracing::warn!(who = "control socket", prefix = %b.net, duration_s = secs, "audit: operator banned {}", b.net);
                        format!("ok: {} banned for {secs}s\n", b.net)
                    }
                    Err(e) => {
                        tracing::warn!(who = "control socket", prefix = %net, "audit: operator ban refused: {e}");
                        format!("error: {e}\n")
                    }
                }
            }
            ["unban", spec] => {
                let net = match parse_net(spec) {
                    Ok(n) => n,
                    Err(e) => return Some(format!("error: {e}\n")),
                };
                match self.unban(net) {
                    Some(b) => {
                        tracing::warn!(who = "control socket", prefix = %b.net, reason = b.reason.as_str(), "audit: operator unbanned {}", b.net);
                        format!("ok: {} unbanned\n", b.net)
                    }
                    None => format!("error: {} is not banned\n", super::canonical(net)),
                }
            }
            ["ban" | "unban", ..] => "error: usage: ban ADDR[/LEN] [--for DURATION] | unban ADDR[/LEN]\n".into(),
            _ => return None,
        })
    }

    fn table(&self, now: Instant) -> String {
        let mut out = String::from("PREFIX                                     REASON       REMAINING_S  OFFENCES\n");
        for b in self.bans() {
            let left = b.until.saturating_duration_since(now).as_secs();
            let _ = writeln!(out, "{:<42} {:<12} {:<12} {}", b.net.to_string(), b.reason.as_str(), left, b.offences);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["", "s", "0s", "10x", "-5", "999999999999999999d", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
