//! Lexical helpers shared by the SIP parsers: character classes, quoted
//! strings, whitespace, and comma-separated list splitting (RFC 3261 25.1).
//!
//! All positions are byte offsets. Every delimiter is ASCII, so slicing a
//! `&str` at a returned offset is always on a char boundary.

/// `token` characters of RFC 3261 25.1.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Whether `s` is a non-empty `token`.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// SP or HT.
pub(crate) fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Trims SP and HT (not other Unicode whitespace) from both ends.
pub(crate) fn trim_wsp(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// Offset of the first non-SP/HT byte at or after `i`.
pub(crate) fn skip_wsp(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(|&b| is_wsp(b)) {
        i += 1;
    }
    i
}

/// End (exclusive) of the run of bytes matching `f` starting at `i`.
pub(crate) fn take_while(s: &[u8], mut i: usize, f: impl Fn(u8) -> bool) -> usize {
    while s.get(i).is_some_and(|&b| f(b)) {
        i += 1;
    }
    i
}

/// Parses the quoted string that starts at `start` (which must be `"`).
/// Returns its unescaped content and the offset just after the closing quote,
/// or `None` when it is unterminated.
pub(crate) fn quoted(s: &str, start: usize) -> Option<(String, usize)> {
    let b = s.as_bytes();
    if b.get(start) != Some(&b'"') {
        return None;
    }
    let mut out = Vec::new();
    let mut i = start + 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => return Some((String::from_utf8_lossy(&out).into_owned(), i + 1)),
            b'\\' => {
                let &n = b.get(i + 1)?;
                if n == b'\r' || n == b'\n' {
                    return None;
                }
                out.push(n);
                i += 2;
            }
            b'\r' | b'\n' => return None,
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    None
}

/// Writes `s` as a quoted string, escaping `"`, `\` and control characters.
pub(crate) fn write_quoted(f: &mut std::fmt::Formatter<'_>, s: &str) -> std::fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        if c == '"' || c == '\\' || (c.is_ascii_control() && c != '\t') {
            write!(f, "\\{c}")?;
        } else {
            write!(f, "{c}")?;
        }
    }
    f.write_str("\"")
}

/// Splits a header value on commas outside quoted strings and `<...>`.
/// Returns trimmed `(start, end)` ranges, empty elements included.
pub(crate) fn split_list(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quote = false;
    let mut in_angle = false;
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if in_quote {
            match c {
                b'\\' => i += 1,
                b'"' => in_quote = false,
                _ => {}
            }
        } else {
            match c {
                b'"' => in_quote = true,
                b'<' => in_angle = true,
                b'>' => in_angle = false,
                b',' if !in_angle => {
                    out.push(trim_range(b, start, i));
                    start = i + 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    out.push(trim_range(b, start, b.len()));
    out
}

/// `start..end` without leading and trailing SP/HT.
fn trim_range(b: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    while start < end && b.get(start).is_some_and(|&c| is_wsp(c)) {
        start += 1;
    }
    while end > start && b.get(end - 1).is_some_and(|&c| is_wsp(c)) {
        end -= 1;
    }
    (start, end)
}

/// Parses a run of ASCII digits as a `u64`, saturating at `u64::MAX`
/// (overlarge values are then refused by the caller's range check).
pub(crate) fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |acc, b| acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))))
}

/// Parses digits into a `u32`, `None` if not digits or larger than `u32::MAX`.
pub(crate) fn parse_u32(s: &str) -> Option<u32> {
    parse_digits(s).and_then(|v| u32::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<&str> {
        split_list(s).into_iter().map(|(a, b)| &s[a..b]).collect()
    }

    #[test]
    fn split_respects_quotes_and_angles() {
        assert_eq!(
            split(r#""Bell, A" <sip:a@b>;x="1,2", <sip:c,d@e> , f"#),
            vec![r#""Bell, A" <sip:a@b>;x="1,2""#, "<sip:c,d@e>", "f"]
        );
        assert_eq!(split(r#""a\",b", c"#), vec![r#""a\",b""#, "c"]);
        assert_eq!(split(";;,;,,"), vec![";;", ";", "", ""]);
        assert_eq!(split(""), vec![""]);
    }

    #[test]
    fn quoted_strings() {
        assert_eq!(quoted(r#""J \\\"" x"#, 0), Some((r#"J \""#.to_owned(), 8)));
        assert_eq!(quoted(r#""open"#, 0), None);
        assert_eq!(quoted("\"a\\", 0), None);
    }

    #[test]
    fn digits() {
        assert_eq!(parse_u32("0068"), Some(68));
        assert_eq!(parse_u32("4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32("4294967296"), None);
        assert_eq!(parse_u32("36893488147419103232"), None);
        assert_eq!(parse_u32("-1"), None);
        assert_eq!(parse_u32(""), None);
    }
}
