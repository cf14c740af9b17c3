//! The `[ha]` section: the pair's Redis, heartbeat and lease settings, and
//! its virtual IPs (`ha.vip` for the first realm, `ha.realm_vips` for the
//! others), checked against the realms' listen addresses and the relay's
//! media interfaces so that everything the pair serves moves with it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use media_relay::config::RelayConfig;
use serde::Deserialize;

use super::ha_redis::RedisKeys;
use super::{invalid, ConfigError, Realm};

/// The `[ha]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHa {
    node_id: String,
    #[serde(default)]
    redis: Option<String>,
    #[serde(default = "key_prefix")]
    key_prefix: String,
    vip: String,
    interface: String,
    #[serde(default)]
    realm_vips: Vec<RawRealmVip>,
    heartbeat: String,
    peer: String,
    #[serde(default = "lease_ms")]
    lease_ms: u64,
    #[serde(default = "check_interval_ms")]
    check_interval_ms: u64,
    #[serde(default = "stats_sync_ms")]
    stats_sync_ms: u64,
    #[serde(default)]
    redis_username: Option<String>,
    #[serde(default)]
    redis_password: Option<String>,
    #[serde(default)]
    redis_password_file: Option<String>,
    #[serde(default)]
    redis_tls: bool,
    #[serde(default)]
    redis_ca_file: Option<String>,
    #[serde(default)]
    sentinels: Vec<String>,
    #[serde(default)]
    master_name: Option<String>,
}

/// `[[ha.realm_vips]]` (or `realm_vips = [{ .. }]`): another realm's
/// virtual IP.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRealmVip {
    realm: String,
    vip: String,
    interface: String,
}

fn key_prefix() -> String {
    "xsbc".into()
}
fn lease_ms() -> u64 {
    120
}
fn check_interval_ms() -> u64 {
    30
}
fn stats_sync_ms() -> u64 {
    1000
}

/// `ADDR/PREFIX` on `dev`, for the keys `{key}.vip` and `{key}.interface`.
fn parse_vip(key: &str, vip: &str, dev: &str) -> Result<crate::ha::vip::Vip, ConfigError> {
    let vkey = format!("{key}.vip");
    let (ip, prefix) = vip.split_once('/').ok_or_else(|| invalid(&vkey, format!("`{vip}`: want ADDR/PREFIX")))?;
    let addr: IpAddr = ip.parse().map_err(|_| invalid(&vkey, format!("`{ip}` is not an IP address")))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| invalid(&vkey, format!("`{prefix}` is not a prefix length (0..={max})")))?;
    if dev.is_empty() || dev.contains('/') {
        return Err(invalid(format!("{key}.interface"), "name the interface the virtual IP goes on"));
    }
    Ok(crate::ha::vip::Vip { addr, prefix, dev: dev.to_owned() })
}

/// Each realm's virtual IP: `ha.vip` is the first realm's, `ha.realm_vips`
/// name the others. Every realm has one when there are several.
fn parse_realm_vips(
    h: &RawHa,
    vip: &crate::ha::vip::Vip,
    realms: &[Realm],
) -> Result<Vec<crate::ha::RealmVip>, ConfigError> {
    let mut out: Vec<crate::ha::RealmVip> = Vec::new();
    for (i, rv) in h.realm_vips.iter().enumerate() {
        let key = format!("ha.realm_vips[{i}]");
        let Some(k) = realms.iter().position(|r| r.name == rv.realm) else {
            let names: Vec<&str> = realms.iter().map(|r| r.name.as_str()).collect();
            return Err(invalid(
                format!("{key}.realm"),
                format!("no realm named `{}` (the realms are {names:?})", rv.realm),
            ));
        };
        if k == 0 {
            return Err(invalid(
                format!("{key}.realm"),
                format!("`{}` is the first realm: its virtual IP is ha.vip", rv.realm),
            ));
        }
        if out.iter().any(|o| o.realm == rv.realm) {
            return Err(invalid(format!("{key}.realm"), format!("realm `{}` is listed twice", rv.realm)));
        }
        let v = parse_vip(&key, &rv.vip, &rv.interface)?;
        // Two realms may share an address (on two ports), not disagree
        // about where it goes.
        if let Some(o) = std::iter::once(vip).chain(out.iter().map(|o| &o.vip)).find(|o| o.addr == v.addr && *o != &v) {
            return Err(invalid(
                format!("{key}.vip"),
                format!(
                    "{} is also a virtual IP as {}/{} on {}: give it once, the same way",
                    v.addr, o.addr, o.prefix, o.dev
                ),
            ));
        }
        out.push(crate::ha::RealmVip { realm: rv.realm.clone(), vip: v });
    }
    if let Some(r) = realms.iter().skip(1).find(|r| !out.iter().any(|o| o.realm == r.name)) {
        return Err(invalid(
            "ha.realm_vips",
            format!(
                "realm `{}` has no virtual IP: with [ha] every realm needs one (ha.vip is realm `{}`'s)",
                r.name, realms[0].name
            ),
        ));
    }
    Ok(out)
}

/// With `[ha]`, each realm listens on its virtual IP and its media
/// interface is bound to it (or to a wildcard), so that both move with the
/// pair. Without realms, every relay interface is bound to `ha.vip`.
fn check_ha_bindings(
    vip: &crate::ha::vip::Vip,
    realm_vips: &[crate::ha::RealmVip],
    realms: &[Realm],
    relay: &RelayConfig,
) -> Result<(), ConfigError> {
    // The one-realm shorthand (`sip.listen`) is the only realm without a
    // named media interface.
    let shorthand = realms.len() == 1 && realms[0].media.is_none();
    let vip_of = |r: &Realm| realm_vips.iter().find(|v| v.realm == r.name).map_or(vip.addr, |v| v.vip.addr);
    for (k, r) in realms.iter().enumerate() {
        let ip = vip_of(r);
        if r.listen.ip() != ip && !r.listen.ip().is_unspecified() {
            return Err(if shorthand {
                invalid("sip.listen", format!("with [ha], SIP must listen on the virtual IP {ip}"))
            } else {
                invalid(
                    format!("realm[{k}].listen"),
                    format!("with [ha], realm `{}` must listen on its virtual IP {ip} (not {})", r.name, r.listen.ip()),
                )
            });
        }
    }
    for i in &relay.interfaces {
        if i.local.is_unspecified() {
            continue;
        }
        if shorthand {
            if i.local != vip.addr {
                return Err(invalid(
                    "relay.interfaces",
                    format!("with [ha], media must be bound to the virtual IP {} (not {})", vip.addr, i.local),
                ));
            }
            continue;
        }
        let users: Vec<&Realm> = realms.iter().filter(|r| r.media.as_deref() == Some(i.name.as_str())).collect();
        if let Some(r) = users.iter().find(|r| vip_of(r) != i.local) {
            return Err(invalid(
                "relay.interfaces",
                format!(
                    "with [ha], `{}` (the media of realm `{}`) must be bound to the realm's virtual IP {} (not {})",
                    i.name,
                    r.name,
                    vip_of(r),
                    i.local
                ),
            ));
        }
        if users.is_empty() && !realms.iter().any(|r| vip_of(r) == i.local) {
            return Err(invalid(
                "relay.interfaces",
                format!("with [ha], media must be bound to a virtual IP (`{}` is on {})", i.name, i.local),
            ));
        }
    }
    Ok(())
}

pub(super) fn parse_ha(
    h: RawHa,
    realms: &[Realm],
    relay: &mut RelayConfig,
) -> Result<crate::ha::HaConfig, ConfigError> {
    if h.node_id.is_empty() || h.node_id.contains([' ', ':']) {
        return Err(invalid("ha.node_id", "must be a non-empty name without spaces or colons"));
    }
    let addr = |key: &str, v: &str| -> Result<SocketAddr, ConfigError> {
        v.parse().map_err(|_| invalid(key, format!("`{v}` is not ADDR:PORT")))
    };
    let redis = super::ha_redis::parse_redis(&RedisKeys {
        redis: h.redis.as_deref(),
        username: h.redis_username.as_deref(),
        password: h.redis_password.as_deref(),
        password_file: h.redis_password_file.as_deref(),
        tls: h.redis_tls,
        ca_file: h.redis_ca_file.as_deref(),
        sentinels: &h.sentinels,
        master_name: h.master_name.as_deref(),
    })?;
    let heartbeat = addr("ha.heartbeat", &h.heartbeat)?;
    let peer = addr("ha.peer", &h.peer)?;
    let vip = parse_vip("ha", &h.vip, &h.interface)?;
    let realm_vips = parse_realm_vips(&h, &vip, realms)?;
    if h.check_interval_ms < 10 {
        return Err(invalid("ha.check_interval_ms", "must be at least 10"));
    }
    if h.lease_ms < 3 * h.check_interval_ms {
        return Err(invalid("ha.lease_ms", "must be at least 3 times ha.check_interval_ms"));
    }
    if h.stats_sync_ms < h.check_interval_ms {
        return Err(invalid("ha.stats_sync_ms", "must be at least ha.check_interval_ms"));
    }
    check_ha_bindings(&vip, &realm_vips, realms, relay)?;
    relay.freebind = true;
    Ok(crate::ha::HaConfig {
        node_id: h.node_id,
        redis,
        key_prefix: h.key_prefix,
        vip,
        realm_vips,
        heartbeat,
        peer,
        lease: Duration::from_millis(h.lease_ms),
        interval: Duration::from_millis(h.check_interval_ms),
        stats_sync: Duration::from_millis(h.stats_sync_ms),
    })
}
