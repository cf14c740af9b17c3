//! Who sent a request and which identity goes on with it, when `[auth]` is
//! configured (without it every function here lets everything through
//! untouched):
//!
//! - the trusted-source check: a trunk's address in the realm the request
//!   came from, or an `[auth] trusted` prefix;
//! - the digest gate: REGISTER to us is challenged with 401 and must come
//!   from the owner of the address-of-record; other out-of-dialog requests
//!   from untrusted sources are challenged with 407 when their From is one
//!   of our domains, when they would go to a trunk (toll fraud), or always
//!   with `require_for_inbound`;
//! - the header-following gate: an in-dialog request that matches no dialog
//!   but was routed through us (a backup standing in for a primary) goes
//!   where its own headers say only when it comes from a trunk, a trusted
//!   prefix or our HA/AlternatePath peers, or carries a user's credentials;
//!   such an ACK, which cannot be challenged, is dropped otherwise;
//! - our realm's credentials never leave: they are removed from initial
//!   requests, from in-dialog requests and from ACKs (RFC 3261 §22.1: the
//!   ACK for a 2xx repeats the INVITE's);
//! - RFC 3325 identity: P-Asserted-Identity and P-Preferred-Identity from
//!   untrusted sources are removed, an authenticated user's identity is
//!   asserted, and `Privacy: id` removes the assertion toward untrusted
//!   peers (trunks, being trusted, keep it and the Privacy header).

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::core::Core;
use super::dialog::Peer;
use super::register;
use super::routing::Target;
use super::Proxy;
use crate::auth::server::Kind;
use crate::auth::users::Users;
use crate::auth::{Authenticator, Verdict};
use crate::config::Config;
use crate::sip::{Header, Message};
use crate::txn::{Endpoint, ServerId};

const PAI: &str = "P-Asserted-Identity";
const PPI: &str = "P-Preferred-Identity";

/// Who sent an out-of-dialog request, as far as the gate knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Caller {
    /// The authenticated user, when credentials were checked.
    pub(super) user: Option<String>,
    /// A trusted source (or no `[auth]` at all: nothing is changed).
    pub(super) trusted: bool,
}

/// Whether `ip`, seen in realm `realm`, is a trusted source: the address
/// inside the `sources` of a trunk of that realm, or inside an `[auth]
/// trusted` prefix.
#[must_use]
pub(super) fn trusted_source(cfg: &Config, ip: IpAddr, realm: usize) -> bool {
    let ip = ip.to_canonical();
    cfg.auth.as_ref().is_some_and(|a| a.trusted.iter().any(|n| n.contains(&ip))) || cfg.trunk_at(ip, realm).is_some()
}

/// Whether a dialog-less in-dialog request from `from` may follow its own
/// headers without credentials: always without `[auth]`; with it, from a
/// trusted source ([`trusted_source`]), an AlternatePath backup or the HA
/// peer.
#[must_use]
pub(super) fn may_follow_headers(cfg: &Config, from: &Peer) -> bool {
    if cfg.auth.is_none() {
        return true;
    }
    let ip = from.addr.ip().to_canonical();
    let named = |e: &String| e.parse::<std::net::SocketAddr>().map(|a| a.ip()).or_else(|_| e.parse::<IpAddr>()).ok();
    trusted_source(cfg, ip, from.realm)
        || cfg.alternate_path.backups.iter().filter_map(named).any(|b| b.to_canonical() == ip)
        || cfg.ha.as_ref().is_some_and(|h| h.peer.ip().to_canonical() == ip)
}

/// Whether the request asks for its identity to be withheld (RFC 3325 §9.3).
fn privacy_id(msg: &Message) -> bool {
    msg.headers_named("privacy").flat_map(|h| h.value().split([';', ','])).any(|v| v.trim().eq_ignore_ascii_case("id"))
}

impl Core {
    /// Builds the authenticator of `cfg`'s `[auth]`, if any.
    pub(super) fn new_authenticator(cfg: &Config, seed: u64) -> Option<Authenticator> {
        let a = cfg.auth.as_ref()?;
        let secret = a.secret.as_ref().map_or_else(crate::auth::nonce::random_secret, |s| s.0.clone());
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Some(Authenticator::new(a, &secret, Instant::now(), unix, seed))
    }

    /// The REGISTER gate: true to go on to the registrar; otherwise the
    /// request was answered (401 with a challenge, or 403 when the
    /// authenticated user does not own the address-of-record: registering,
    /// removing with `Contact: *` and querying alike).
    pub(super) fn auth_register(&mut self, txn: &mut Endpoint, key: ServerId, msg: &mut Message, now: Instant) -> bool {
        let Some(a) = self.auth.as_mut() else { return true };
        match a.check(msg, Kind::Registrar, now, &self.metrics.auth) {
            Verdict::User(user) => {
                a.strip_own(msg);
                if register::owns(msg, &user) {
                    return true;
                }
                self.metrics.auth.forbidden.fetch_add(1, Relaxed);
                let aor = msg.to().map(|t| t.uri.to_string()).unwrap_or_default();
                crate::info_limited!(user, aor, "REGISTER refused: the user does not own the address-of-record");
                txn.reply(key, 403, "Forbidden", Vec::new(), now);
            }
            Verdict::Challenge(headers) => {
                let (code, reason) = Kind::Registrar.status();
                txn.reply(key, code, reason, headers, now);
            }
        }
        false
    }

    /// The gate of an out-of-dialog request from `from` that would go to a
    /// trunk when `to_trunk`: `None` when it was answered with a challenge.
    pub(super) fn auth_request(
        &mut self,
        txn: &mut Endpoint,
        key: ServerId,
        msg: &mut Message,
        from: Peer,
        to_trunk: bool,
        now: Instant,
    ) -> Option<Caller> {
        let Some(a) = self.auth.as_mut() else { return Some(Caller { user: None, trusted: true }) };
        let cfg = &self.cfg;
        let trusted = trusted_source(cfg, from.addr.ip(), from.realm);
        let from_ours = msg.from().is_some_and(|f| cfg.is_local_host(&f.uri.host, None));
        let require = cfg.auth.as_ref().is_some_and(|c| c.require_for_inbound);
        if trusted || !(from_ours || to_trunk || require) {
            a.strip_own(msg);
            return Some(Caller { user: None, trusted });
        }
        match a.check(msg, Kind::Proxy, now, &self.metrics.auth) {
            Verdict::User(user) => {
                a.strip_own(msg);
                Some(Caller { user: Some(user), trusted: false })
            }
            Verdict::Challenge(headers) => {
                let (code, reason) = Kind::Proxy.status();
                tracing::debug!(src = %from.addr, to_trunk, from_ours, "challenged");
                txn.reply(key, code, reason, headers, now);
                None
            }
        }
    }

    /// The gate of an in-dialog request that matches no dialog and would go
    /// where its headers say: true to go on (our realm's credentials then
    /// removed), false when it was answered with a 407. Whatever the
    /// destination, an untrusted source must authenticate: the headers,
    /// not our routing, chose it.
    pub(super) fn auth_dialogless(
        &mut self,
        txn: &mut Endpoint,
        key: ServerId,
        msg: &mut Message,
        from: Peer,
        now: Instant,
    ) -> bool {
        if may_follow_headers(&self.cfg, &from) {
            self.strip_credentials(msg);
            return true;
        }
        let Some(a) = self.auth.as_mut() else { return true };
        match a.check(msg, Kind::Proxy, now, &self.metrics.auth) {
            Verdict::User(user) => {
                a.strip_own(msg);
                tracing::debug!(user, src = %from.addr, "dialog-less in-dialog request authenticated");
                true
            }
            Verdict::Challenge(headers) => {
                let (code, reason) = Kind::Proxy.status();
                crate::info_limited!(src = %from.addr, "dialog-less in-dialog request from an untrusted source challenged");
                txn.reply(key, code, reason, headers, now);
                false
            }
        }
    }

    /// Removes our realm's credentials from a request that goes on.
    pub(super) fn strip_credentials(&self, msg: &mut Message) {
        if let Some(a) = self.auth.as_ref() {
            a.strip_own(msg);
        }
    }

    /// Sets the identity headers of an initial request going to `targets`.
    pub(super) fn apply_identity(&self, msg: &mut Message, caller: &Caller, targets: &[Target]) {
        if self.auth.is_none() {
            return;
        }
        if !caller.trusted {
            msg.remove_all(PAI);
            msg.remove_all(PPI);
        }
        if let Some(user) = &caller.user {
            let domain = self.identity_domain();
            msg.push_header(Header::new(PAI, &format!("<sip:{user}@{domain}>")));
        }
        let toward_trusted = !targets.is_empty()
            && targets.iter().all(|t| t.trunk.is_some() || trusted_source(&self.cfg, t.dest.ip(), t.realm));
        if !toward_trusted && privacy_id(msg) {
            msg.remove_all(PAI);
        }
    }

    /// An in-dialog request from an untrusted source loses the identity
    /// headers it asserted itself.
    pub(super) fn identity_in_dialog(&self, msg: &mut Message, from: Peer) {
        if self.auth.is_some() && !trusted_source(&self.cfg, from.addr.ip(), from.realm) {
            msg.remove_all(PAI);
            msg.remove_all(PPI);
        }
    }

    /// The domain asserted identities are in: the realm when it is one of
    /// our domains, else the first domain.
    fn identity_domain(&self) -> &str {
        let realm = self.auth.as_ref().map_or("", Authenticator::realm);
        if self.cfg.domains.iter().any(|d| d == realm) {
            realm
        } else {
            self.cfg.domains.first().map_or("localhost", String::as_str)
        }
    }
}

impl Proxy {
    /// Replaces the nonce secret with the HA pair's shared one.
    pub fn set_auth_secret(&mut self, secret: &[u8]) {
        if let Some(a) = self.core.auth.as_mut() {
            a.set_secret(secret);
        }
    }

    /// Replaces the users table (SIGHUP); returns how many users it holds.
    pub fn set_users(&mut self, users: Users) -> usize {
        let n = users.len();
        if let Some(a) = self.core.auth.as_mut() {
            a.set_users(users);
            self.core.metrics.auth.users.store(n as u64, Relaxed);
        }
        n
    }
}
