//! Edge policy keys: source ACLs per realm (`allow`, `deny`, `acl_action`
//! on `[[realm]]`, or on `[sip]` for the one-realm form), trunk IP
//! authentication (`sources`), the SRTP policy (`media_security` on trunks
//! and routes) and topology hiding (`topology_hiding`, `callid_rewrite`,
//! `strip_headers` on trunks), with the checks that tie them together.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::{invalid, Config, ConfigError, File, Trunk};

/// What happens to a message from a source an ACL denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AclAction {
    /// Requests (not ACK) get a stateless 403; responses are dropped.
    #[default]
    Reject,
    /// Nothing is sent back.
    Drop,
}

/// A realm's source prefix lists: deny wins over allow, an empty allow
/// list allows every source, and a trunk's `sources` are allowed in its
/// realm.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    /// Prefixes allowed (empty: all).
    pub allow: Vec<IpNet>,
    /// Prefixes denied.
    pub deny: Vec<IpNet>,
    /// The answer to a denied source.
    pub action: AclAction,
}

impl Acl {
    /// Whether the realm accepts messages from `ip`; `trunk` says whether
    /// `ip` is one of the realm's trunk sources.
    #[must_use]
    pub fn permits(&self, ip: IpAddr, trunk: bool) -> bool {
        let ip = ip.to_canonical();
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || trunk || self.allow.iter().any(|n| n.contains(&ip))
    }

    /// Whether this ACL lets everything through (nothing to check).
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// The media a trunk or route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaSecurity {
    /// Plain RTP or SRTP.
    #[default]
    Any,
    /// Offers must be SRTP (SDES `a=crypto` or DTLS `a=fingerprint`): else 488.
    Srtp,
}

/// A trunk's edge policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrunkPolicy {
    /// Source prefixes its requests come from (default: its address as a
    /// single host). A request is from the trunk only when its source is here.
    pub sources: Vec<IpNet>,
    /// SRTP policy of calls to and from it.
    pub media_security: MediaSecurity,
    /// It sees only our Via, Record-Route and Contact, never an internal address.
    pub topology_hiding: bool,
    /// The Call-ID toward it is an opaque one, mapped back on the way in.
    pub callid_rewrite: bool,
    /// Headers removed from every message to it (lower case).
    pub strip_headers: Vec<String>,
}

/// The raw policy keys of one `[[trunk]]`.
pub(super) struct RawTrunkPolicy<'a> {
    pub(super) sources: Option<&'a [String]>,
    pub(super) media_security: Option<&'a str>,
    pub(super) topology_hiding: bool,
    pub(super) callid_rewrite: bool,
    pub(super) strip_headers: &'a [String],
}

/// Headers `strip_headers` may not remove (SIP needs them), full and compact.
const NEEDED: [&str; 20] = [
    "via",
    "v",
    "from",
    "f",
    "to",
    "t",
    "call-id",
    "i",
    "cseq",
    "contact",
    "m",
    "route",
    "record-route",
    "max-forwards",
    "content-length",
    "l",
    "content-type",
    "c",
    "content-encoding",
    "e",
];

fn prefix(key: &str, s: &str) -> Result<IpNet, ConfigError> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| invalid(key, format!("`{s}` is not an address or ADDR/PREFIX")))
}

fn prefixes(key: &str, list: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    list.iter().map(|s| prefix(key, s)).collect()
}

/// Parses `media_security` at `key`.
pub(super) fn media_security(key: &str, v: Option<&str>) -> Result<MediaSecurity, ConfigError> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("" | "any") => Ok(MediaSecurity::Any),
        Some("srtp") => Ok(MediaSecurity::Srtp),
        Some(other) => Err(invalid(key, format!("`{other}`: want \"any\" or \"srtp\""))),
    }
}

/// Parses a trunk's policy keys (`key` is `trunk[i]`).
pub(super) fn trunk_policy(
    key: &str,
    raw: &RawTrunkPolicy<'_>,
    address: SocketAddr,
) -> Result<TrunkPolicy, ConfigError> {
    let sources = match raw.sources {
        None => vec![IpNet::from(address.ip().to_canonical())],
        Some([]) => return Err(invalid(format!("{key}.sources"), "list at least one prefix (or leave it out)")),
        Some(list) => prefixes(&format!("{key}.sources"), list)?,
    };
    let mut strip_headers = Vec::with_capacity(raw.strip_headers.len());
    for h in raw.strip_headers {
        let h = h.trim().to_ascii_lowercase();
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.!%*+`'~".contains(&b)) {
            return Err(invalid(format!("{key}.strip_headers"), format!("`{h}` is not a header name")));
        }
        if NEEDED.contains(&h.as_str()) {
            return Err(invalid(format!("{key}.strip_headers"), format!("`{h}` is needed by SIP itself")));
        }
        strip_headers.push(h);
    }
    Ok(TrunkPolicy {
        sources,
        media_security: media_security(&format!("{key}.media_security"), raw.media_security)?,
        topology_hiding: raw.topology_hiding,
        callid_rewrite: raw.callid_rewrite,
        strip_headers,
    })
}

/// The ACL of each realm: `[sip]` keys for the one-realm form, else each
/// `[[realm]]`'s.
pub(super) fn parse_acls(f: &File, realms: usize) -> Result<Vec<Acl>, ConfigError> {
    let one = |key: &str, allow: &[String], deny: &[String], action: Option<&str>| -> Result<Acl, ConfigError> {
        let action = match action.map(str::to_ascii_lowercase).as_deref() {
            None | Some("" | "reject") => AclAction::Reject,
            Some("drop") => AclAction::Drop,
            Some(other) => {
                return Err(invalid(format!("{key}.acl_action"), format!("`{other}`: want \"reject\" or \"drop\"")))
            }
        };
        Ok(Acl {
            allow: prefixes(&format!("{key}.allow"), allow)?,
            deny: prefixes(&format!("{key}.deny"), deny)?,
            action,
        })
    };
    if f.realm.is_empty() {
        return Ok(vec![one("sip", &f.sip.allow, &f.sip.deny, f.sip.acl_action.as_deref())?]);
    }
    if !f.sip.allow.is_empty() || !f.sip.deny.is_empty() || f.sip.acl_action.is_some() {
        return Err(invalid("sip.allow", "with [[realm]] tables, give allow, deny and acl_action on each realm"));
    }
    let acls = f
        .realm
        .iter()
        .enumerate()
        .map(|(i, r)| one(&format!("realm[{i}]"), &r.allow, &r.deny, r.acl_action.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    debug_assert_eq!(acls.len(), realms);
    Ok(acls)
}

/// Topology hiding and AlternatePath cannot both be on: AlternatePath
/// advertises the backups in every Via and Record-Route.
pub(super) fn check_conflicts(trunks: &[Trunk], alternate_path: bool) -> Result<(), ConfigError> {
    if let Some((i, _)) = trunks.iter().enumerate().find(|(_, t)| t.policy.topology_hiding) {
        if alternate_path {
            return Err(invalid(
                format!("trunk[{i}].topology_hiding"),
                "conflicts with alternate_path.enabled (AlternatePath advertises the backup addresses in Via and \
                 Record-Route): turn one of them off",
            ));
        }
    }
    Ok(())
}

impl Config {
    /// The trunk of realm `realm` whose `sources` hold `ip`: a request from
    /// `ip` is from that trunk (IP authentication), and only then.
    #[must_use]
    pub fn trunk_at(&self, ip: IpAddr, realm: usize) -> Option<usize> {
        let ip = ip.to_canonical();
        self.trunks.iter().position(|t| t.realm == realm && t.policy.sources.iter().any(|n| n.contains(&ip)))
    }

    /// The trunk a peer is: the one whose address it is, else the one whose
    /// sources hold its address ([`trunk_at`](Self::trunk_at)).
    #[must_use]
    pub fn trunk_of(&self, addr: SocketAddr, realm: usize) -> Option<usize> {
        let canon = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        self.trunks
            .iter()
            .position(|t| t.realm == realm && (t.address == addr || t.address == canon))
            .or_else(|| self.trunk_at(addr.ip(), realm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_TOML;

    fn with_trunk_keys(keys: &str) -> String {
        DEFAULT_TOML.replace("weight = 1\n", &format!("weight = 1\n{keys}\n"))
    }

    #[test]
    fn trunk_keys_parse_with_defaults() {
        let c = Config::embedded_default().unwrap();
        let p = &c.trunks[0].policy;
        assert_eq!(p.sources, vec!["127.0.0.1/32".parse::<IpNet>().unwrap()], "its address as a single host");
        assert_eq!((p.media_security, p.topology_hiding, p.callid_rewrite), (MediaSecurity::Any, false, false));
        assert_eq!(c.acls, vec![Acl::default()]);
        let c = Config::from_toml(&with_trunk_keys(
            "sources = [\"198.51.100.0/24\", \"2001:db8::1\"]\nmedia_security = \"srtp\"\ntopology_hiding = true\n\
             callid_rewrite = true\nstrip_headers = [\"User-Agent\", \"Server\"]",
        ))
        .unwrap();
        let p = &c.trunks[0].policy;
        assert_eq!(p.sources.len(), 2);
        assert_eq!(p.media_security, MediaSecurity::Srtp);
        assert!(p.topology_hiding && p.callid_rewrite);
        assert_eq!(p.strip_headers, ["user-agent", "server"]);
        assert_eq!(c.trunk_at("198.51.100.77".parse().unwrap(), 0), Some(0));
        assert_eq!(c.trunk_at("::ffff:198.51.100.77".parse().unwrap(), 0), Some(0), "v4-mapped sources match");
        assert_eq!(c.trunk_at("127.0.0.1".parse().unwrap(), 0), None, "sources replace the address");
        assert_eq!(c.trunk_at("198.51.100.77".parse().unwrap(), 1), None, "another realm");
        assert_eq!(c.trunk_of("127.0.0.1:5070".parse().unwrap(), 0), Some(0), "its own address still names it");
    }

    #[test]
    fn acls_parse_and_deny_wins() {
        let toml = DEFAULT_TOML.replace(
            "[sip]\n",
            "[sip]\nallow = [\"192.0.2.0/24\", \"10.1.2.3\"]\ndeny = [\"192.0.2.66\"]\nacl_action = \"drop\"\n",
        );
        let c = Config::from_toml(&toml).unwrap();
        let acl = &c.acls[0];
        assert_eq!(acl.action, AclAction::Drop);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(acl.permits(ip("192.0.2.1"), false) && acl.permits(ip("10.1.2.3"), false));
        assert!(!acl.permits(ip("192.0.2.66"), false), "deny wins over allow");
        assert!(!acl.permits(ip("192.0.2.66"), true), "even for a trunk source");
        assert!(!acl.permits(ip("198.51.100.1"), false), "not on a non-empty allow list");
        assert!(acl.permits(ip("198.51.100.1"), true), "a trunk's sources are allowed in its realm");
        assert!(acl.permits(ip("::ffff:192.0.2.1"), false));
        assert!(Acl::default().permits(ip("203.0.113.9"), false), "an empty allow list allows all");
    }

    #[test]
    fn policy_errors_name_the_key() {
        for (toml, key) in [
            (with_trunk_keys("sources = [\"nope\"]"), "trunk[0].sources"),
            (with_trunk_keys("sources = []"), "trunk[0].sources"),
            (with_trunk_keys("media_security = \"maybe\""), "trunk[0].media_security"),
            (with_trunk_keys("strip_headers = [\"Via\"]"), "trunk[0].strip_headers"),
            (with_trunk_keys("strip_headers = [\"m\"]"), "trunk[0].strip_headers"),
            (with_trunk_keys("strip_headers = [\"a b\"]"), "trunk[0].strip_headers"),
            (DEFAULT_TOML.replace("[sip]\n", "[sip]\ndeny = [\"10.0.0.0/33\"]\n"), "sip.deny"),
            (DEFAULT_TOML.replace("[sip]\n", "[sip]\nacl_action = \"ignore\"\n"), "sip.acl_action"),
            (
                DEFAULT_TOML
                    .replace("trunks = [\"local-trunk\"]", "trunks = [\"local-trunk\"]\nmedia_security = \"x\""),
                "route[0].media_security",
            ),
        ] {
            let e = Config::from_toml(&toml).unwrap_err().to_string();
            assert!(e.contains(key), "want {key}: {e}");
        }
    }

    #[test]
    fn realm_acls_are_given_on_each_realm() {
        let realms = |inside: &str, sip: &str| {
            DEFAULT_TOML
                .replace("[sip]\nlisten = \"127.0.0.1:5060\"", &format!("[sip]\n{sip}"))
                .replace(
                    "[registrar]",
                    &format!(
                        "[[realm]]\nname = \"inside\"\nlisten = \"127.0.0.1:5060\"\nmedia = \"inside\"\n{inside}\n\
                         [[realm]]\nname = \"outside\"\nlisten = \"127.0.0.2:5060\"\nmedia = \"outside\"\n[registrar]"
                    ),
                )
                .replace("interfaces = [\"127.0.0.1\"]", "interfaces = [\"inside/127.0.0.1\", \"outside/127.0.0.2\"]")
        };
        let c = Config::from_toml(&realms("deny = [\"10.0.0.0/8\"]\nacl_action = \"drop\"", "")).unwrap();
        assert_eq!(c.acls.len(), 2);
        assert_eq!((c.acls[0].deny.len(), c.acls[0].action), (1, AclAction::Drop));
        assert!(c.acls[1].is_open(), "the outside has none");
        let e = Config::from_toml(&realms("", "allow = [\"10.0.0.0/8\"]")).unwrap_err().to_string();
        assert!(e.contains("sip.allow") && e.contains("each realm"), "{e}");
        let e = Config::from_toml(&realms("deny = [\"x\"]", "")).unwrap_err().to_string();
        assert!(e.contains("realm[0].deny"), "{e}");
    }

    #[test]
    fn topology_hiding_and_alternate_path_conflict() {
        let alternate =
            |t: String| t.replace("enabled = false\nbackups = []", "enabled = true\nbackups = [\"127.0.0.2:5060\"]");
        let toml = alternate(with_trunk_keys("topology_hiding = true"));
        let e = Config::from_toml(&toml).unwrap_err().to_string();
        assert!(e.contains("trunk[0].topology_hiding") && e.contains("alternate_path.enabled"), "{e}");
        let ok = alternate(with_trunk_keys("topology_hiding = false"));
        assert!(Config::from_toml(&ok).is_ok());
    }
}
