//! The `[[trunk]]` keys with which the sbc authenticates to a carrier:
//! `username` with `password` or `password_file` (digest credentials for
//! the carrier's 401/407 challenges), and `register`, `register_expires`,
//! `register_domain` (registering to the carrier). Checked here, with
//! errors that name the key; never printed with the password.

use std::fmt;
use std::net::SocketAddr;

use super::{invalid, ConfigError};

/// Digest credentials of a trunk, and its registration when it has one.
#[derive(Clone, PartialEq, Eq)]
pub struct TrunkAuth {
    /// The user name the carrier gave us.
    pub username: String,
    /// The password (from `password`, or the first line of `password_file`).
    pub password: String,
    /// Registering to the carrier, when `register = true`.
    pub register: Option<TrunkRegister>,
}

impl fmt::Debug for TrunkAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrunkAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("register", &self.register)
            .finish()
    }
}

/// How the sbc registers to a carrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkRegister {
    /// The host of the AOR `sip:username@domain` and of the REGISTER's
    /// Request-URI (default: the trunk's address).
    pub domain: String,
    /// The Expires asked for, seconds.
    pub expires: u32,
}

/// The raw keys, as `[[trunk]]` holds them.
pub(super) struct RawTrunkAuth<'a> {
    pub(super) username: Option<&'a str>,
    pub(super) password: Option<&'a str>,
    pub(super) password_file: Option<&'a str>,
    pub(super) register: bool,
    pub(super) register_expires: Option<u32>,
    pub(super) register_domain: Option<&'a str>,
}

/// Shortest and longest `register_expires` accepted, seconds.
const EXPIRES: std::ops::RangeInclusive<u32> = 60..=86_400;
/// `register_expires` when not given.
const DEFAULT_EXPIRES: u32 = 3600;

/// `host[:port]` of a trunk address as it appears in a SIP URI (the port
/// left out when it is 5060).
fn uri_host(a: SocketAddr) -> String {
    let host = match a {
        SocketAddr::V4(v) => v.ip().to_string(),
        SocketAddr::V6(v) => format!("[{}]", v.ip()),
    };
    if a.port() == 5060 {
        host
    } else {
        format!("{host}:{}", a.port())
    }
}

/// Checks trunk `i`'s authentication keys (`address` is its parsed
/// address). `None` when the trunk has no credentials.
pub(super) fn parse(i: usize, raw: &RawTrunkAuth<'_>, address: SocketAddr) -> Result<Option<TrunkAuth>, ConfigError> {
    let key = |k: &str| format!("trunk[{i}].{k}");
    let password = match (raw.password, raw.password_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(key("password_file"), "give either password or password_file, not both"));
        }
        (Some(p), None) => Some(p.to_owned()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(key("password_file"), format!("reading `{path}`: {e}")))?;
            let first = text.lines().next().unwrap_or_default().trim_end_matches('\r');
            if first.is_empty() {
                return Err(invalid(key("password_file"), format!("the first line of `{path}` is empty")));
            }
            Some(first.to_owned())
        }
        (None, None) => None,
    };
    let username = raw.username.filter(|u| !u.is_empty());
    let (username, password) = match (username, password) {
        (Some(u), Some(p)) => (u, p),
        (None, None) => {
            if raw.register {
                return Err(invalid(key("register"), "registering needs username and password (or password_file)"));
            }
            if raw.register_expires.is_some() || raw.register_domain.is_some() {
                return Err(invalid(key("register_expires"), "only with register = true"));
            }
            if raw.username.is_some() {
                return Err(invalid(key("username"), "is empty"));
            }
            return Ok(None);
        }
        (Some(_), None) => return Err(invalid(key("password"), "username is given: give password or password_file")),
        (None, Some(_)) => return Err(invalid(key("username"), "a password is given: give the user name too")),
    };
    if username.contains(['@', ':', ' ', '<', '>', '"', ';']) {
        return Err(invalid(
            key("username"),
            format!("`{username}`: want a SIP user name (no @ : ; < > \" or spaces)"),
        ));
    }
    let register = if raw.register {
        let expires = raw.register_expires.unwrap_or(DEFAULT_EXPIRES);
        if !EXPIRES.contains(&expires) {
            return Err(invalid(
                key("register_expires"),
                format!("{expires}: want {} to {} seconds", EXPIRES.start(), EXPIRES.end()),
            ));
        }
        let domain = match raw.register_domain {
            None | Some("") => uri_host(address),
            Some(d) if d.contains(['@', ' ', '<', '>', '"', ';']) => {
                return Err(invalid(key("register_domain"), format!("`{d}`: want host[:port]")));
            }
            Some(d) => d.to_owned(),
        };
        Some(TrunkRegister { domain, expires })
    } else {
        if raw.register_expires.is_some() || raw.register_domain.is_some() {
            return Err(invalid(key("register_expires"), "only with register = true"));
        }
        None
    };
    Ok(Some(TrunkAuth { username: username.to_owned(), password, register }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>() -> RawTrunkAuth<'a> {
        RawTrunkAuth {
            username: Some("acme"),
            password: Some("s3cret"),
            password_file: None,
            register: false,
            register_expires: None,
            register_domain: None,
        }
    }

    fn addr() -> SocketAddr {
        "192.0.2.9:5060".parse().unwrap()
    }

    #[test]
    fn credentials_and_registration_parse() {
        let a = parse(0, &raw(), addr()).unwrap().unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str(), &a.register), ("acme", "s3cret", &None));
        assert!(!format!("{a:?}").contains("s3cret"), "the password never shows in Debug");
        let r = RawTrunkAuth { register: true, ..raw() };
        let reg = parse(0, &r, "192.0.2.9:5080".parse().unwrap()).unwrap().unwrap().register.unwrap();
        assert_eq!((reg.domain.as_str(), reg.expires), ("192.0.2.9:5080", 3600));
        let r = RawTrunkAuth {
            register: true,
            register_expires: Some(600),
            register_domain: Some("sip.carrier.test"),
            ..raw()
        };
        let reg = parse(0, &r, addr()).unwrap().unwrap().register.unwrap();
        assert_eq!((reg.domain.as_str(), reg.expires), ("sip.carrier.test", 600));
        let none = RawTrunkAuth { username: None, password: None, ..raw() };
        assert_eq!(parse(0, &none, addr()).unwrap(), None);
    }

    #[test]
    fn the_password_file_gives_its_first_line() {
        let dir = std::env::temp_dir().join(format!("xsbc-trunk-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pw");
        std::fs::write(&path, "from-file\r\nsecond line\n").unwrap();
        let p = path.to_str().unwrap();
        let r = RawTrunkAuth { password: None, password_file: Some(p), ..raw() };
        assert_eq!(parse(0, &r, addr()).unwrap().unwrap().password, "from-file");
        std::fs::write(&path, "\nx\n").unwrap();
        let e = parse(0, &r, addr()).unwrap_err().to_string();
        assert!(e.contains("trunk[0].password_file") && e.contains("empty"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = parse(0, &r, addr()).unwrap_err().to_string();
        assert!(e.contains("trunk[0].password_file") && e.contains("reading"), "{e}");
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn errors_name_the_key() {
        let both = RawTrunkAuth { password_file: Some("/nonexistent"), ..raw() };
        let no_pw = RawTrunkAuth { password: None, ..raw() };
        let no_user = RawTrunkAuth { username: None, ..raw() };
        let reg_alone = RawTrunkAuth { username: None, password: None, register: true, ..raw() };
        let exp_alone = RawTrunkAuth { register_expires: Some(600), ..raw() };
        let short = RawTrunkAuth { register: true, register_expires: Some(5), ..raw() };
        let bad_user = RawTrunkAuth { username: Some("a@b"), ..raw() };
        for (r, key) in [
            (both, "trunk[3].password_file"),
            (no_pw, "trunk[3].password"),
            (no_user, "trunk[3].username"),
            (reg_alone, "trunk[3].register"),
            (exp_alone, "trunk[3].register_expires"),
            (short, "trunk[3].register_expires"),
            (bad_user, "trunk[3].username"),
        ] {
            let e = parse(3, &r, addr()).unwrap_err().to_string();
            assert!(e.contains(key), "want {key}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }
}
