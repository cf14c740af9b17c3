//! `[auth]`: digest authentication of our users and the sources trusted
//! without it. Absent, nothing is authenticated (the sbc behaves as it
//! did before the section existed).

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::auth::digest::Algorithm;
use crate::auth::users::Users;

/// Validated `[auth]` settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The digest realm of our users (default: the first domain).
    pub realm: String,
    /// The users file (HA1 hashes), re-read on SIGHUP.
    pub users_file: Option<PathBuf>,
    /// The users read at start.
    pub users: Users,
    /// The nonce secret (`secret` or `secret_file`); `None`: from Redis
    /// when `[ha]` runs, else a random one per process.
    pub secret: Option<Secret>,
    /// How long a nonce is accepted.
    pub nonce_lifetime: Duration,
    /// Challenge algorithms, in the order offered.
    pub algorithms: Vec<Algorithm>,
    /// Source prefixes trusted without credentials (besides the trunks).
    pub trusted: Vec<IpNet>,
    /// Whether calls from untrusted sources to registered users need
    /// credentials too.
    pub require_for_inbound: bool,
    /// Most nonces whose nonce-count is remembered.
    pub max_nonces: usize,
}

/// Secret bytes, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl AuthConfig {
    /// The secret's shortest accepted length, bytes.
    pub const MIN_SECRET: usize = 16;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    #[serde(default)]
    realm: Option<String>,
    #[serde(default)]
    users_file: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_file: Option<String>,
    #[serde(default = "lifetime")]
    nonce_lifetime_s: u64,
    #[serde(default = "algorithms")]
    algorithms: Vec<String>,
    #[serde(default)]
    trusted: Vec<String>,
    #[serde(default)]
    require_for_inbound: bool,
    #[serde(default = "max_nonces")]
    max_nonces: usize,
}

fn lifetime() -> u64 {
    300
}
fn algorithms() -> Vec<String> {
    vec!["SHA-256".into(), "MD5".into()]
}
fn max_nonces() -> usize {
    1 << 20
}

/// Validates `[auth]`; reads the users file and the secret file.
pub(super) fn parse_auth(raw: RawAuth, domains: &[String]) -> Result<AuthConfig, ConfigError> {
    let realm = match raw.realm {
        Some(r) if r.is_empty() || r.contains(['"', ':', '\\']) => {
            return Err(invalid("auth.realm", format!("`{r}` is empty or holds `\"`, `:` or `\\`")));
        }
        Some(r) => r,
        None => domains.first().cloned().unwrap_or_default(),
    };
    let secret = match (raw.secret, raw.secret_file) {
        (Some(_), Some(_)) => return Err(invalid("auth.secret", "give auth.secret or auth.secret_file, not both")),
        (Some(s), None) => Some(("auth.secret", s.into_bytes())),
        (None, Some(p)) => {
            let text =
                std::fs::read_to_string(&p).map_err(|e| invalid("auth.secret_file", format!("reading {p}: {e}")))?;
            Some(("auth.secret_file", text.trim().as_bytes().to_vec()))
        }
        (None, None) => None,
    };
    if let Some((key, s)) = &secret {
        if s.len() < AuthConfig::MIN_SECRET {
            return Err(invalid(*key, format!("at least {} bytes, please (random)", AuthConfig::MIN_SECRET)));
        }
    }
    if !(10..=86_400).contains(&raw.nonce_lifetime_s) {
        return Err(invalid("auth.nonce_lifetime_s", "between 10 and 86400 seconds"));
    }
    let mut algs = Vec::new();
    for a in &raw.algorithms {
        let alg = Algorithm::parse(a)
            .ok_or_else(|| invalid("auth.algorithms", format!("`{a}`: want \"SHA-256\" and/or \"MD5\"")))?;
        if !algs.contains(&alg) {
            algs.push(alg);
        }
    }
    if algs.is_empty() {
        return Err(invalid("auth.algorithms", "list at least one of \"SHA-256\", \"MD5\""));
    }
    let mut trusted = Vec::new();
    for (i, t) in raw.trusted.iter().enumerate() {
        let net = t
            .parse::<IpNet>()
            .or_else(|_| t.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| invalid(format!("auth.trusted[{i}]"), format!("`{t}` is not ADDR/PREFIX or ADDR")))?;
        trusted.push(net.trunc());
    }
    if raw.max_nonces < 1024 {
        return Err(invalid("auth.max_nonces", "at least 1024"));
    }
    let users_file = raw.users_file.filter(|p| !p.is_empty()).map(PathBuf::from);
    let users = match &users_file {
        Some(p) => Users::load(p, &realm).map_err(|e| invalid("auth.users_file", format!("{}: {e}", p.display())))?,
        None => Users::default(),
    };
    Ok(AuthConfig {
        realm,
        users_file,
        users,
        secret: secret.map(|(_, s)| Secret(s)),
        nonce_lifetime: Duration::from_secs(raw.nonce_lifetime_s),
        algorithms: algs,
        trusted,
        require_for_inbound: raw.require_for_inbound,
        max_nonces: raw.max_nonces,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, DEFAULT_TOML};

    fn with_auth(lines: &str) -> Result<Config, String> {
        Config::from_toml(&format!("{DEFAULT_TOML}\n[auth]\n{lines}\n")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_errors_name_the_key() {
        let c = with_auth("").unwrap();
        let a = c.auth.unwrap();
        assert_eq!(a.realm, "127.0.0.1", "the first domain");
        assert_eq!(a.nonce_lifetime.as_secs(), 300);
        assert_eq!(a.algorithms.len(), 2);
        assert!(a.secret.is_none() && a.users.is_empty() && !a.require_for_inbound);
        let c = with_auth("secret = \"0123456789abcdef-hidden\"").unwrap();
        assert_eq!(c.auth.as_ref().unwrap().secret.as_ref().unwrap().0, b"0123456789abcdef-hidden");
        assert!(!format!("{c:?}").contains("hidden"), "Debug never shows the secret");
        assert!(Config::embedded_default().unwrap().auth.is_none());
        let a = with_auth("trusted = [\"10.1.2.3\", \"192.0.2.77/24\"]").unwrap().auth.unwrap();
        assert_eq!(a.trusted[1].to_string(), "192.0.2.0/24");
        assert!(a.trusted[0].contains(&"10.1.2.3".parse::<std::net::IpAddr>().unwrap()));
        for (lines, key) in [
            ("secret = \"short\"", "auth.secret"),
            ("secret = \"0123456789abcdef\"\nsecret_file = \"/x\"", "auth.secret"),
            ("secret_file = \"/nonexistent/xsbc-secret\"", "auth.secret_file"),
            ("nonce_lifetime_s = 1", "auth.nonce_lifetime_s"),
            ("algorithms = [\"SHA-512\"]", "auth.algorithms"),
            ("algorithms = []", "auth.algorithms"),
            ("trusted = [\"10.0.0.0/99\"]", "auth.trusted[0]"),
            ("users_file = \"/nonexistent/xsbc-users\"", "auth.users_file"),
            ("realm = \"a:b\"", "auth.realm"),
            ("max_nonces = 5", "auth.max_nonces"),
        ] {
            let e = with_auth(lines).unwrap_err();
            assert!(e.contains(key), "{lines}: {e}");
        }
        let bad = std::env::temp_dir().join(format!("xsbc-badusers-{}.txt", std::process::id()));
        std::fs::write(&bad, "# ok\nalice:127.0.0.1:nothex:\n").unwrap();
        let e = with_auth(&format!("users_file = \"{}\"", bad.display())).unwrap_err();
        let _ = std::fs::remove_file(&bad);
        assert!(e.contains("auth.users_file") && e.contains("line 2"), "{e}");
    }
}
