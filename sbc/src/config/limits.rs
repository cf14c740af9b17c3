//! The `[limits]` section: message limits checked on every inbound SIP
//! message before it is parsed (see [`crate::sip::Limits`]).

use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::sip::Limits;

/// `[limits]` as written; absent keys take [`Limits::default`].
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    max_headers: Option<usize>,
    max_header_line: Option<usize>,
    max_vias: Option<usize>,
    max_body: Option<usize>,
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
}
