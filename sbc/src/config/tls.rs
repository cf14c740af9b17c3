//! The TLS keys: `[sip] tls_listen`, `tls_cert`, `tls_key` and the
//! connection bounds, `[[realm]] tls_listen`, and a trunk's
//! `transport = "tls"` with `ca_file`, `tls_cert`, `tls_key` and
//! `server_name`. Certificates and keys are read here, so a missing file,
//! bad PEM or a key that does not match is an error naming its key.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{invalid, ConfigError, File, Realm};
use crate::transport::tls::{self, Dial, Identity, Part, TlsSetup};
use crate::transport::Limits;

/// The listener's TLS settings and the bounds on stream connections.
#[derive(Debug, Clone)]
pub struct SipTls {
    /// `sip.tls_cert` and `sip.tls_key`, when given: served on the TLS
    /// ports, and presented to trunks that ask for a client certificate
    /// and have none of their own.
    pub identity: Option<Identity>,
    /// The listener's rustls configuration (with `identity`).
    pub server: Option<Arc<rustls::ServerConfig>>,
    /// `sip.max_connections`, `sip.max_connections_per_ip`,
    /// `sip.connection_idle_s`, `sip.tls_handshake_timeout_ms`.
    pub limits: Limits,
}

pub(super) fn default_handshake_ms() -> u64 {
    10_000
}
pub(super) fn default_max_connections() -> usize {
    1024
}
pub(super) fn default_max_connections_per_ip() -> usize {
    32
}
pub(super) fn default_message_deadline_ms() -> u64 {
    crate::transport::Limits::default().message_deadline.as_millis() as u64
}

pub(super) fn default_idle_s() -> u64 {
    300
}

/// Loads `{prefix}.tls_cert` / `{prefix}.tls_key` (both or neither).
fn identity(prefix: &str, cert: Option<&str>, key: Option<&str>) -> Result<Option<Identity>, ConfigError> {
    match (cert.filter(|c| !c.is_empty()), key.filter(|k| !k.is_empty())) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(format!("{prefix}.tls_key"), "required with tls_cert (a PEM private key)")),
        (None, Some(_)) => {
            Err(invalid(format!("{prefix}.tls_cert"), "required with tls_key (a PEM certificate chain)"))
        }
        (Some(c), Some(k)) => tls::load_identity(Path::new(c), Path::new(k)).map(Some).map_err(|(part, problem)| {
            let which = if part == Part::Cert { "tls_cert" } else { "tls_key" };
            invalid(format!("{prefix}.{which}"), problem)
        }),
    }
}

fn listen_addr(key: &str, value: Option<&str>) -> Result<Option<SocketAddr>, ConfigError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| invalid(key, format!("`{v}` is not ADDR:PORT"))),
    }
}

/// Reads the `[sip]` TLS keys and each realm's `tls_listen` into `realms`.
pub(super) fn parse_sip(f: &File, realms: &mut [Realm]) -> Result<SipTls, ConfigError> {
    let s = &f.sip;
    let identity = identity("sip", s.tls_cert.as_deref(), s.tls_key.as_deref())?;
    let sip_listen = listen_addr("sip.tls_listen", s.tls_listen.as_deref())?;
    if f.realm.is_empty() {
        if let Some(r) = realms.first_mut() {
            r.tls_listen = sip_listen;
        }
    } else {
        if sip_listen.is_some() {
            return Err(invalid("sip.tls_listen", "with [[realm]] tables, give each realm its own tls_listen"));
        }
        for (i, (raw, r)) in f.realm.iter().zip(realms.iter_mut()).enumerate() {
            r.tls_listen = listen_addr(&format!("realm[{i}].tls_listen"), raw.tls_listen.as_deref())?;
        }
    }
    for (i, r) in realms.iter().enumerate() {
        let Some(t) = r.tls_listen else { continue };
        let key = if f.realm.is_empty() { "sip.tls_listen".to_owned() } else { format!("realm[{i}].tls_listen") };
        if identity.is_none() {
            return Err(invalid("sip.tls_cert", format!("required when {key} is set (and sip.tls_key)")));
        }
        let clash = |a: SocketAddr| {
            a.port() == t.port() && (a.ip() == t.ip() || a.ip().is_unspecified() || t.ip().is_unspecified())
        };
        let other = realms
            .iter()
            .enumerate()
            .find(|(j, o)| (s.tcp && clash(o.listen)) || (*j != i && o.tls_listen.is_some_and(clash)));
        if let Some((_, o)) = other {
            return Err(invalid(key, format!("{t} is already the TCP or TLS port of realm `{}`", o.name)));
        }
    }
    if s.max_connections == 0 {
        return Err(invalid("sip.max_connections", "must be at least 1"));
    }
    if s.max_connections_per_ip == 0 {
        return Err(invalid("sip.max_connections_per_ip", "must be at least 1"));
    }
    if s.tls_handshake_timeout_ms == 0 || s.connection_idle_s == 0 {
        return Err(invalid("sip.tls_handshake_timeout_ms", "the handshake and idle timeouts must be above 0"));
    }
    if !(100..=s.connection_idle_s.saturating_mul(1000)).contains(&s.message_deadline_ms) {
        return Err(invalid(
            "sip.message_deadline_ms",
            "must be at least 100 and no longer than sip.connection_idle_s",
        ));
    }
    let server = match &identity {
        Some(id) => Some(tls::server_config(id).map_err(|e| invalid("sip.tls_key", e))?),
        None => None,
    };
    let limits = Limits {
        max_connections: s.max_connections,
        max_connections_per_ip: s.max_connections_per_ip,
        max_output: Limits::default().max_output,
        idle: Duration::from_secs(s.connection_idle_s),
        handshake: Duration::from_millis(s.tls_handshake_timeout_ms),
        message_deadline: Duration::from_millis(s.message_deadline_ms),
    };
    Ok(SipTls { identity, server, limits })
}

/// A trunk's TLS keys, as written.
pub(super) struct TrunkKeys<'a> {
    pub(super) ca_file: Option<&'a str>,
    pub(super) tls_cert: Option<&'a str>,
    pub(super) tls_key: Option<&'a str>,
    pub(super) server_name: Option<&'a str>,
}

/// How to dial trunk `i` over TLS (`tls`: its transport is TLS; the keys
/// are refused otherwise). `listener`: the certificate presented when the
/// trunk has none of its own.
pub(super) fn trunk_dial(
    i: usize,
    tls: bool,
    address: SocketAddr,
    k: &TrunkKeys<'_>,
    listener: Option<&Identity>,
) -> Result<Option<Dial>, ConfigError> {
    let key = |name: &str| format!("trunk[{i}].{name}");
    let given =
        [("ca_file", k.ca_file), ("tls_cert", k.tls_cert), ("tls_key", k.tls_key), ("server_name", k.server_name)];
    if !tls {
        if let Some((name, _)) = given.iter().find(|(_, v)| v.is_some_and(|v| !v.is_empty())) {
            return Err(invalid(key(name), "only for transport = \"tls\""));
        }
        return Ok(None);
    }
    let own = identity(&format!("trunk[{i}]"), k.tls_cert, k.tls_key)?;
    let roots = match k.ca_file.filter(|c| !c.is_empty()) {
        Some(path) => Some(tls::roots_from(Path::new(path)).map_err(|e| invalid(key("ca_file"), e))?),
        None => None,
    };
    let config = tls::client_config(roots, own.as_ref().or(listener)).map_err(|e| invalid(key("tls_key"), e))?;
    let name = tls::server_name(k.server_name, address).map_err(|e| invalid(key("server_name"), e))?;
    Ok(Some(Dial { config, name }))
}

impl super::Config {
    /// What the transport needs for TLS: the listener's configuration and
    /// how to dial each TLS trunk.
    ///
    /// # Errors
    /// When the default client configuration cannot be built.
    pub fn tls_setup(&self) -> Result<TlsSetup, String> {
        let dial = self.trunks.iter().filter_map(|t| t.tls.clone().map(|d| (t.address, d))).collect();
        Ok(TlsSetup {
            server: self.tls.server.clone(),
            dial,
            default_client: tls::client_config(None, self.tls.identity.as_ref())?,
        })
    }

    /// Whether any realm serves TLS or any trunk is reached over it.
    #[must_use]
    pub fn uses_tls(&self) -> bool {
        self.realms.iter().any(|r| r.tls_listen.is_some()) || self.trunks.iter().any(|t| t.tls.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, DEFAULT_TOML};

    struct Files {
        dir: std::path::PathBuf,
    }

    impl Files {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("xsbc-cfg-tls-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let a = rcgen::generate_simple_self_signed(vec!["sbc.example".into()]).unwrap();
            let b = rcgen::generate_simple_self_signed(vec!["other.example".into()]).unwrap();
            std::fs::write(dir.join("cert.pem"), a.cert.pem()).unwrap();
            std::fs::write(dir.join("key.pem"), a.signing_key.serialize_pem()).unwrap();
            std::fs::write(dir.join("other.key"), b.signing_key.serialize_pem()).unwrap();
            std::fs::write(dir.join("junk.pem"), "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
            Self { dir }
        }

        fn p(&self, name: &str) -> String {
            self.dir.join(name).display().to_string()
        }

        fn config(&self, sip: &str, trunk: &str) -> String {
            DEFAULT_TOML
                .replace("[sip]\n", &format!("[sip]\n{sip}\n"))
                .replace("transport = \"udp\"\n", &format!("{trunk}\n"))
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn tls_keys_parse() {
        let f = Files::new("ok");
        let sip = format!(
            "tls_listen = \"127.0.0.1:5061\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\nmax_connections = 7\nmax_connections_per_ip = 3",
            f.p("cert.pem"),
            f.p("key.pem")
        );
        let trunk = format!("transport = \"tls\"\nca_file = \"{}\"\nserver_name = \"sbc.example\"", f.p("cert.pem"));
        let c = Config::from_toml(&f.config(&sip, &trunk)).unwrap();
        assert_eq!(c.realms[0].tls_listen, Some("127.0.0.1:5061".parse().unwrap()));
        assert_eq!(c.tls.limits.max_connections, 7);
        assert_eq!(c.tls.limits.max_connections_per_ip, 3);
        let defaults = Config::embedded_default().unwrap().tls.limits;
        assert_eq!((defaults.max_connections_per_ip, defaults.max_output), (32, 1 << 20));
        assert_eq!(defaults.message_deadline, std::time::Duration::from_secs(5));
        assert_eq!(c.tls.limits.handshake, std::time::Duration::from_secs(10));
        assert!(c.tls.server.is_some() && c.uses_tls());
        let setup = c.tls_setup().unwrap();
        assert_eq!(setup.dial(c.trunks[0].address).name.to_str(), "sbc.example");
        assert!(c.is_local_host("127.0.0.1", Some(5061)), "the TLS port names us too");
        assert!(!Config::embedded_default().unwrap().uses_tls());
    }

    #[test]
    fn tls_errors_name_the_key() {
        let f = Files::new("err");
        let listen = "tls_listen = \"127.0.0.1:5061\"";
        let ident = |c: &str, k: &str| format!("tls_cert = \"{}\"\ntls_key = \"{}\"", f.p(c), f.p(k));
        for (sip, trunk, key, words) in [
            (listen.to_owned(), String::new(), "sip.tls_cert", "required when sip.tls_listen"),
            (format!("{listen}\n{}", ident("missing.pem", "key.pem")), String::new(), "sip.tls_cert", "cannot read"),
            (format!("{listen}\n{}", ident("junk.pem", "key.pem")), String::new(), "sip.tls_cert", "PEM"),
            (format!("{listen}\n{}", ident("cert.pem", "junk.pem")), String::new(), "sip.tls_key", "private key"),
            (format!("{listen}\n{}", ident("cert.pem", "other.key")), String::new(), "sip.tls_key", "does not match"),
            (format!("tls_cert = \"{}\"", f.p("cert.pem")), String::new(), "sip.tls_key", "required with tls_cert"),
            ("tls_listen = \"nowhere\"".to_owned(), String::new(), "sip.tls_listen", "not ADDR:PORT"),
            (
                format!("tls_listen = \"127.0.0.1:5060\"\n{}", ident("cert.pem", "key.pem")),
                String::new(),
                "sip.tls_listen",
                "already the TCP",
            ),
            (String::new(), "ca_file = \"x.pem\"".to_owned(), "trunk[0].ca_file", "only for transport"),
            (String::new(), "transport = \"sctp\"".to_owned(), "trunk[0].transport", "udp, tcp or tls"),
            (
                String::new(),
                format!("transport = \"tls\"\nca_file = \"{}\"", f.p("junk.pem")),
                "trunk[0].ca_file",
                "PEM",
            ),
            (
                String::new(),
                format!("transport = \"tls\"\ntls_cert = \"{}\"\ntls_key = \"{}\"", f.p("cert.pem"), f.p("other.key")),
                "trunk[0].tls_key",
                "does not match",
            ),
            (String::new(), "transport = \"tls\"\nserver_name = \"a b\"".to_owned(), "trunk[0].server_name", "DNS"),
            ("max_connections_per_ip = 0".to_owned(), String::new(), "sip.max_connections_per_ip", "at least 1"),
            ("message_deadline_ms = 50".to_owned(), String::new(), "sip.message_deadline_ms", "at least 100"),
            (
                "connection_idle_s = 2\nmessage_deadline_ms = 3000".to_owned(),
                String::new(),
                "sip.message_deadline_ms",
                "connection_idle_s",
            ),
        ] {
            let e = Config::from_toml(&f.config(&sip, &trunk)).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(words), "want {key} / {words}: {e}");
        }
    }
}
