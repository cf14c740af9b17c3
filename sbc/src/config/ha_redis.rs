//! The `[ha]` keys that say how to reach Redis: one server (`redis`, as
//! `ADDR:PORT` or a `redis://` / `rediss://` URL) or the sentinels of a
//! replicated one (`sentinels`, `master_name`), with AUTH
//! (`redis_username`, `redis_password` or `redis_password_file`) and TLS
//! (`redis_tls`, `redis_ca_file`).

use std::net::SocketAddr;

use redis::{ConnectionAddr, IntoConnectionInfo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::{invalid, ConfigError};
use crate::ha::redis::{Endpoint, RedisTarget};

/// The keys as written.
pub(super) struct RedisKeys<'a> {
    pub redis: Option<&'a str>,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub password_file: Option<&'a str>,
    pub tls: bool,
    pub ca_file: Option<&'a str>,
    pub sentinels: &'a [String],
    pub master_name: Option<&'a str>,
}

/// `redis` as a URL: the server, whether it wants TLS, and the user and
/// password in it.
type FromUrl = (Endpoint, bool, Option<String>, Option<String>);

fn parse_url(url: &str) -> Result<FromUrl, ConfigError> {
    let info = url.into_connection_info().map_err(|e| invalid("ha.redis", format!("`{url}`: {e}")))?;
    let (endpoint, tls) = match info.addr() {
        ConnectionAddr::Tcp(h, p) => (Endpoint::Direct(h.clone(), *p), false),
        ConnectionAddr::TcpTls { host, port, insecure: false, .. } => (Endpoint::Direct(host.clone(), *port), true),
        _ => return Err(invalid("ha.redis", format!("`{url}`: want redis://HOST:PORT or rediss://HOST:PORT"))),
    };
    let r = info.redis_settings();
    if r.db() != 0 {
        return Err(invalid("ha.redis", "a database number is not supported (use ha.key_prefix)"));
    }
    Ok((endpoint, tls, r.username().map(str::to_owned), r.password().map(str::to_owned)))
}

fn endpoint(k: &RedisKeys) -> Result<FromUrl, ConfigError> {
    match (k.redis, k.sentinels.is_empty()) {
        (Some(_), false) => Err(invalid("ha.sentinels", "give ha.redis or ha.sentinels, not both")),
        (None, true) => Err(invalid(
            "ha.redis",
            "missing: give the Redis server (ADDR:PORT or a redis:// URL), or ha.sentinels with ha.master_name",
        )),
        (Some(u), true) if u.starts_with("redis://") || u.starts_with("rediss://") => parse_url(u),
        (Some(a), true) => {
            let a: SocketAddr = a
                .parse()
                .map_err(|_| invalid("ha.redis", format!("`{a}` is not ADDR:PORT (or a redis:// or rediss:// URL)")))?;
            Ok((Endpoint::Direct(a.ip().to_string(), a.port()), false, None, None))
        }
        (None, false) => {
            let mut sentinels = Vec::new();
            for (i, s) in k.sentinels.iter().enumerate() {
                let a: SocketAddr =
                    s.parse().map_err(|_| invalid(format!("ha.sentinels[{i}]"), format!("`{s}` is not ADDR:PORT")))?;
                sentinels.push(a);
            }
            let master_name = k
                .master_name
                .filter(|m| !m.is_empty() && !m.contains(char::is_whitespace))
                .ok_or_else(|| invalid("ha.master_name", "with ha.sentinels, name the master (e.g. \"mymaster\")"))?;
            Ok((Endpoint::Sentinel { sentinels, master_name: master_name.to_owned() }, false, None, None))
        }
    }
}

pub(super) fn parse_redis(k: &RedisKeys) -> Result<RedisTarget, ConfigError> {
    if k.master_name.is_some() && k.sentinels.is_empty() {
        return Err(invalid("ha.master_name", "only with ha.sentinels"));
    }
    let (endpoint, url_tls, url_user, url_password) = endpoint(k)?;
    if url_user.is_some() && k.username.is_some() {
        return Err(invalid("ha.redis_username", "the user is in the ha.redis URL already"));
    }
    let password = match (k.password, k.password_file) {
        (Some(_), Some(_)) => {
            return Err(invalid("ha.redis_password", "give ha.redis_password or ha.redis_password_file, not both"))
        }
        (Some(p), None) => Some(p.to_owned()),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| invalid("ha.redis_password_file", format!("reading {f}: {e}")))?;
            let p = text.trim_end_matches(['\r', '\n']).to_owned();
            if p.is_empty() {
                return Err(invalid("ha.redis_password_file", format!("{f} is empty")));
            }
            Some(p)
        }
        (None, None) => None,
    };
    if password.is_some() && url_password.is_some() {
        return Err(invalid("ha.redis_password", "the password is in the ha.redis URL already"));
    }
    let password = password.or(url_password).filter(|p| !p.is_empty());
    let username = k.username.map(str::to_owned).or(url_user).filter(|u| !u.is_empty());
    if username.is_some() && password.is_none() {
        return Err(invalid("ha.redis_username", "needs ha.redis_password or ha.redis_password_file"));
    }
    let tls = k.tls || url_tls;
    let ca_pem = match k.ca_file {
        None => None,
        Some(_) if !tls => {
            return Err(invalid("ha.redis_ca_file", "needs ha.redis_tls = true (or a rediss:// URL in ha.redis)"))
        }
        Some(f) => {
            let pem = std::fs::read(f).map_err(|e| invalid("ha.redis_ca_file", format!("reading {f}: {e}")))?;
            let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).count();
            if certs == 0 {
                return Err(invalid("ha.redis_ca_file", format!("{f} holds no PEM certificate")));
            }
            Some(pem)
        }
    };
    Ok(RedisTarget { endpoint, username, password, tls, ca_pem })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(redis: Option<&'static str>) -> RedisKeys<'static> {
        RedisKeys {
            redis,
            username: None,
            password: None,
            password_file: None,
            tls: false,
            ca_file: None,
            sentinels: &[],
            master_name: None,
        }
    }

    fn err_key(k: &RedisKeys) -> String {
        match parse_redis(k) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_address_and_urls() {
        let t = parse_redis(&keys(Some("10.0.0.1:6379"))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.endpoint, Endpoint::Direct("10.0.0.1".into(), 6379));
        assert!(!t.tls && t.password.is_none());
        let t = parse_redis(&keys(Some("rediss://sbc:s3cret@redis.example:6380"))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.endpoint, Endpoint::Direct("redis.example".into(), 6380));
        assert!(t.tls);
        assert_eq!((t.username.as_deref(), t.password.as_deref()), (Some("sbc"), Some("s3cret")));
        assert_eq!(err_key(&keys(Some("nowhere"))), "ha.redis");
        assert_eq!(err_key(&keys(Some("redis://h:1/3"))), "ha.redis");
        assert_eq!(err_key(&keys(None)), "ha.redis");
    }

    #[test]
    fn auth_keys() {
        let dir = std::env::temp_dir().join(format!("xsbc-redis-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let f = dir.join("pw");
        std::fs::write(&f, "from-file\n").unwrap_or_else(|e| panic!("{e}"));
        let path: &'static str = Box::leak(f.to_string_lossy().into_owned().into_boxed_str());
        let t =
            parse_redis(&RedisKeys { username: Some("sbc"), password_file: Some(path), ..keys(Some("127.0.0.1:1")) })
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.username.as_deref(), t.password.as_deref()), (Some("sbc"), Some("from-file")));
        let both = RedisKeys { password: Some("x"), password_file: Some(path), ..keys(Some("127.0.0.1:1")) };
        assert_eq!(err_key(&both), "ha.redis_password");
        assert_eq!(err_key(&RedisKeys { username: Some("u"), ..keys(Some("127.0.0.1:1")) }), "ha.redis_username");
        let missing = RedisKeys { password_file: Some("/nonexistent/pw"), ..keys(Some("127.0.0.1:1")) };
        assert_eq!(err_key(&missing), "ha.redis_password_file");
        let ca_no_tls = RedisKeys { ca_file: Some(path), ..keys(Some("127.0.0.1:1")) };
        assert_eq!(err_key(&ca_no_tls), "ha.redis_ca_file");
        let ca_not_pem = RedisKeys { ca_file: Some(path), tls: true, ..keys(Some("127.0.0.1:1")) };
        assert_eq!(err_key(&ca_not_pem), "ha.redis_ca_file");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sentinel_keys() {
        let s: &'static [String] = Box::leak(vec!["127.0.0.1:26379".to_owned(), "127.0.0.1:26380".to_owned()].into());
        let t = parse_redis(&RedisKeys { sentinels: s, master_name: Some("mymaster"), ..keys(None) })
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(&t.endpoint, Endpoint::Sentinel { sentinels, master_name }
            if sentinels.len() == 2 && master_name == "mymaster"));
        assert_eq!(err_key(&RedisKeys { sentinels: s, ..keys(None) }), "ha.master_name");
        assert_eq!(
            err_key(&RedisKeys { sentinels: s, master_name: Some("m"), ..keys(Some("1.2.3.4:1")) }),
            "ha.sentinels"
        );
        assert_eq!(err_key(&RedisKeys { master_name: Some("m"), ..keys(Some("1.2.3.4:1")) }), "ha.master_name");
        let bad: &'static [String] = Box::leak(vec!["nowhere".to_owned()].into());
        assert_eq!(err_key(&RedisKeys { sentinels: bad, master_name: Some("m"), ..keys(None) }), "ha.sentinels[0]");
    }
}
