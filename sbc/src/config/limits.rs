//! The `[limits]` section: message limits checked on every inbound SIP
//! message before it is parsed (see [`crate::sip::Limits`]), and the caps
//! on the state sources may hold (see [`crate::caps::Caps`]).

use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::caps::Caps;
use crate::sip::Limits;

/// `[limits]` as written; absent keys take [`Limits::default`].
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    max_headers: Option<usize>,
    max_header_line: Option<usize>,
    max_vias: Option<usize>,
    max_body: Option<usize>,
    max_registrations: Option<usize>,
    max_contacts_per_aor: Option<usize>,
    max_registrations_per_source: Option<usize>,
    max_transactions: Option<usize>,
    max_transactions_per_source: Option<usize>,
    max_dialogs: Option<usize>,
    max_dialogs_per_source: Option<usize>,
    max_media_sessions: Option<usize>,
    max_media_sessions_per_source: Option<usize>,
    max_trunk_invites_per_source: Option<usize>,
    cap_retry_after_s: Option<u32>,
}

/// The caps of the section; absent keys take [`Caps::default`]. Each must
/// be at least 1, and a per-source cap no larger than its total.
pub(super) fn parse_caps(r: &RawLimits) -> Result<Caps, ConfigError> {
    let d = Caps::default();
    let c = Caps {
        max_registrations: r.max_registrations.unwrap_or(d.max_registrations),
        max_contacts_per_aor: r.max_contacts_per_aor.unwrap_or(d.max_contacts_per_aor),
        max_registrations_per_source: r.max_registrations_per_source.unwrap_or(d.max_registrations_per_source),
        max_transactions: r.max_transactions.unwrap_or(d.max_transactions),
        max_transactions_per_source: r.max_transactions_per_source.unwrap_or(d.max_transactions_per_source),
        max_dialogs: r.max_dialogs.unwrap_or(d.max_dialogs),
        max_dialogs_per_source: r.max_dialogs_per_source.unwrap_or(d.max_dialogs_per_source),
        max_media_sessions: r.max_media_sessions.unwrap_or(d.max_media_sessions),
        max_media_sessions_per_source: r.max_media_sessions_per_source.unwrap_or(d.max_media_sessions_per_source),
        max_trunk_invites_per_source: r.max_trunk_invites_per_source.unwrap_or(d.max_trunk_invites_per_source),
        retry_after_s: r.cap_retry_after_s.unwrap_or(d.retry_after_s),
    };
    let all = [
        ("max_registrations", c.max_registrations),
        ("max_contacts_per_aor", c.max_contacts_per_aor),
        ("max_registrations_per_source", c.max_registrations_per_source),
        ("max_transactions", c.max_transactions),
        ("max_transactions_per_source", c.max_transactions_per_source),
        ("max_dialogs", c.max_dialogs),
        ("max_dialogs_per_source", c.max_dialogs_per_source),
        ("max_media_sessions", c.max_media_sessions),
        ("max_media_sessions_per_source", c.max_media_sessions_per_source),
        ("max_trunk_invites_per_source", c.max_trunk_invites_per_source),
    ];
    if let Some((k, _)) = all.iter().find(|(_, v)| *v == 0) {
        return Err(invalid(format!("limits.{k}"), "must be at least 1"));
    }
    for (per, total) in [
        ("max_registrations_per_source", "max_registrations"),
        ("max_transactions_per_source", "max_transactions"),
        ("max_dialogs_per_source", "max_dialogs"),
        ("max_media_sessions_per_source", "max_media_sessions"),
    ] {
        let v = |k: &str| all.iter().find(|(n, _)| *n == k).map_or(0, |(_, v)| *v);
        if v(per) > v(total) {
            return Err(invalid(format!("limits.{per}"), format!("must not exceed limits.{total}")));
        }
    }
    if !(1..=3600).contains(&c.retry_after_s) {
        return Err(invalid("limits.cap_retry_after_s", "must be between 1 and 3600"));
    }
    Ok(c)
}

/// Checks the section against `max_message_size` (`sip.max_message_size`).
pub(super) fn parse_limits(r: &RawLimits, max_message_size: usize) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let l = Limits {
        max_headers: r.max_headers.unwrap_or(d.max_headers),
        max_header_line: r.max_header_line.unwrap_or(d.max_header_line),
        max_vias: r.max_vias.unwrap_or(d.max_vias),
        max_body: r.max_body.unwrap_or(d.max_body.min(max_message_size)),
    };
    if !(10..=crate::sip::MAX_HEADERS).contains(&l.max_headers) {
        return Err(invalid("limits.max_headers", format!("must be between 10 and {}", crate::sip::MAX_HEADERS)));
    }
    if !(256..=crate::sip::MAX_LINE).contains(&l.max_header_line) {
        return Err(invalid("limits.max_header_line", format!("must be between 256 and {}", crate::sip::MAX_LINE)));
    }
    // More hops than Max-Forwards can allow (255) cannot be legitimate.
    if !(1..=255).contains(&l.max_vias) {
        return Err(invalid("limits.max_vias", "must be between 1 and 255"));
    }
    if l.max_body > max_message_size {
        return Err(invalid("limits.max_body", "must not exceed sip.max_message_size"));
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Limits, ConfigError> {
        let r: RawLimits = toml::from_str(t).map_err(|e| ConfigError::Toml(e.to_string()))?;
        parse_limits(&r, 65535)
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(parse("").ok(), Some(Limits::default()));
        let l = parse("max_headers = 50\nmax_header_line = 1000\nmax_vias = 5\nmax_body = 100").ok();
        assert_eq!(l, Some(Limits { max_headers: 50, max_header_line: 1000, max_vias: 5, max_body: 100 }));
    }

    #[test]
    fn errors_name_the_key() {
        for (t, key) in [
            ("max_headers = 5", "limits.max_headers"),
            ("max_header_line = 100", "limits.max_header_line"),
            ("max_vias = 0", "limits.max_vias"),
            ("max_vias = 256", "limits.max_vias"),
            ("max_body = 70000", "limits.max_body"),
        ] {
            let e = parse(t).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(key), "{t}: {e}");
        }
        assert!(parse("max_bogus = 1").is_err());
    }

    fn caps(t: &str) -> Result<Caps, ConfigError> {
        let r: RawLimits = toml::from_str(t).map_err(|e| ConfigError::Toml(e.to_string()))?;
        parse_caps(&r)
    }

    #[test]
    fn caps_defaults_overrides_and_errors() {
        assert_eq!(caps("").ok(), Some(Caps::default()));
        let c = caps("max_registrations_per_source = 50\nmax_dialogs = 7\nmax_dialogs_per_source = 7").unwrap();
        assert_eq!((c.max_registrations_per_source, c.max_dialogs, c.max_dialogs_per_source), (50, 7, 7));
        assert_eq!(c.max_transactions, Caps::default().max_transactions);
        for (t, key) in [
            ("max_transactions = 0", "limits.max_transactions"),
            ("max_contacts_per_aor = 0", "limits.max_contacts_per_aor"),
            ("max_dialogs = 5\nmax_dialogs_per_source = 6", "limits.max_dialogs_per_source"),
            ("cap_retry_after_s = 0", "limits.cap_retry_after_s"),
        ] {
            let e = caps(t).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(key), "{t}: {e}");
        }
    }
}
