//! `;name=value` parameter lists, shared by URIs, name-addrs and Vias.
//!
//! Names keep their case and are compared case-insensitively. Values are kept
//! as written: a quoted value keeps its quotes, escapes (`%xx`) stay escaped.

use std::fmt;

use super::scan::{is_token_byte, is_wsp, quoted, skip_wsp, take_while};

/// A parameter list: `(name, value)` in order; `None` for a bare `;lr`.
pub type Params = Vec<(String, Option<String>)>;

/// The value of parameter `name` (case-insensitive): `Some(None)` for a
/// parameter without value, `None` when absent.
pub(crate) fn find<'a>(params: &'a Params, name: &str) -> Option<Option<&'a str>> {
    params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref())
}

/// Sets parameter `name`, replacing its first occurrence in place or
/// appending it.
pub(crate) fn set(params: &mut Params, name: &str, value: Option<&str>) {
    let value = value.map(str::to_owned);
    match params.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        Some(slot) => slot.1 = value,
        None => params.push((name.to_owned(), value)),
    }
}

/// Removes every parameter called `name`.
pub(crate) fn remove(params: &mut Params, name: &str) {
    params.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
}

/// Writes `;name=value` for each parameter.
pub(crate) fn write(f: &mut fmt::Formatter<'_>, params: &Params) -> fmt::Result {
    for (n, v) in params {
        match v {
            Some(v) => write!(f, ";{n}={v}")?,
            None => write!(f, ";{n}")?,
        }
    }
    Ok(())
}

/// Bytes allowed in an unquoted header parameter value: a token, a host or
/// an IPv6 reference (`received=2001:db8::1`, `maddr=[::1]`), liberally.
fn is_value_byte(b: u8) -> bool {
    !(b <= b' ' || b == 0x7f || b";,\"<>\\".contains(&b))
}

/// Parses header parameters (`*( SEMI generic-param )` with optional
/// whitespace around `;` and `=`) from `s[i..]` to the end of `s`.
/// Fails on an empty name (`;;`), an empty value (`a=`) or trailing text.
pub(crate) fn parse_header_params(s: &str, mut i: usize) -> Option<Params> {
    let b = s.as_bytes();
    let mut out = Params::new();
    loop {
        i = skip_wsp(b, i);
        match b.get(i) {
            None => return Some(out),
            Some(b';') => i += 1,
            Some(_) => return None,
        }
        i = skip_wsp(b, i);
        let name_end = take_while(b, i, is_token_byte);
        let name = s.get(i..name_end).filter(|n| !n.is_empty())?;
        i = skip_wsp(b, name_end);
        if b.get(i) == Some(&b'=') {
            i = skip_wsp(b, i + 1);
            let end = if b.get(i) == Some(&b'"') { quoted(s, i)?.1 } else { take_while(b, i, is_value_byte) };
            let value = s.get(i..end).filter(|v| !v.is_empty())?;
            out.push((name.to_owned(), Some(value.to_owned())));
            i = end;
        } else {
            out.push((name.to_owned(), None));
        }
        // A parameter must be followed by whitespace, `;` or the end.
        if b.get(i).is_some_and(|&c| !(is_wsp(c) || c == b';')) {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, Option<&str>)]) -> Params {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), v.map(str::to_owned))).collect()
    }

    #[test]
    fn parses_with_whitespace_and_quotes() {
        assert_eq!(parse_header_params(" ;   tag    = 1918181833n", 0), Some(p(&[("tag", Some("1918181833n"))])));
        assert_eq!(
            parse_header_params(r#";x="a;b\"c";lr ; received=2001:db8::1"#, 0),
            Some(p(&[("x", Some(r#""a;b\"c""#)), ("lr", None), ("received", Some("2001:db8::1"))]))
        );
        assert_eq!(parse_header_params("", 0), Some(Params::new()));
    }

    #[test]
    fn rejects_empty_and_junk() {
        assert_eq!(parse_header_params(";;;;", 0), None);
        assert_eq!(parse_header_params(";a=", 0), None);
        assert_eq!(parse_header_params(";a b", 0), None);
        assert_eq!(parse_header_params("x", 0), None);
        assert_eq!(parse_header_params(r#";a="open"#, 0), None);
    }

    #[test]
    fn find_set_remove() {
        let mut ps = p(&[("Tag", Some("1")), ("lr", None)]);
        assert_eq!(find(&ps, "tag"), Some(Some("1")));
        assert_eq!(find(&ps, "LR"), Some(None));
        assert_eq!(find(&ps, "x"), None);
        set(&mut ps, "tag", Some("2"));
        set(&mut ps, "rport", Some("5060"));
        remove(&mut ps, "lr");
        assert_eq!(ps, p(&[("Tag", Some("2")), ("rport", Some("5060"))]));
    }
}
