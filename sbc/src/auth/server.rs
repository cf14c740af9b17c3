//! The server side of digest authentication: challenges for requests that
//! need credentials, and the check of the credentials that come back.
//!
//! Every failure (no credentials, an unknown user, a wrong password, a
//! forged nonce, a replayed nonce-count) gets the same answer: a fresh
//! challenge, one header per offered algorithm (SHA-256 first, RFC 8760),
//! with nothing that tells an unknown user from a wrong password. An
//! authentic but expired nonce gets the same challenge with `stale=true`.
//!
//! The clock: nonces carry wall-clock seconds so the other HA node can
//! check them, but the [`Authenticator`] reads no clock: it maps the
//! `Instant` passed in onto the Unix time it was given at creation.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::digest::{Algorithm, Challenge, Credentials};
use super::nonce::{NcCheck, NcTable, NonceCheck, NonceKey};
use super::users::Users;
use super::AuthMetrics;
use crate::config::AuthConfig;
use crate::sip::{Header, Message, Uri};

/// Which challenge: a registrar's (401, `WWW-Authenticate`/`Authorization`)
/// or a proxy's (407, `Proxy-Authenticate`/`Proxy-Authorization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 401.
    Registrar,
    /// 407.
    Proxy,
}

impl Kind {
    /// Status code and reason of the challenge.
    #[must_use]
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Self::Registrar => (401, "Unauthorized"),
            Self::Proxy => (407, "Proxy Authentication Required"),
        }
    }

    fn challenge_header(self) -> &'static str {
        match self {
            Self::Registrar => "WWW-Authenticate",
            Self::Proxy => "Proxy-Authenticate",
        }
    }

    fn credentials_header(self) -> &'static str {
        match self {
            Self::Registrar => "Authorization",
            Self::Proxy => "Proxy-Authorization",
        }
    }
}

/// The result of checking a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid credentials of this user.
    User(String),
    /// Answer with this challenge (status from [`Kind::status`], headers).
    Challenge(Vec<Header>),
}

/// Why a request is challenged, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Missing,
    Failed,
    Stale,
    Replay,
}

/// Checks digest credentials against the users file.
pub struct Authenticator {
    realm: String,
    algorithms: Vec<Algorithm>,
    users: Users,
    key: NonceKey,
    nc: NcTable,
    /// `Instant` ↔ Unix seconds.
    base: (Instant, u64),
    seed: u64,
    issued: u64,
}

impl Authenticator {
    /// An authenticator for `cfg` with nonce secret `secret`; `unix_now` is
    /// the wall-clock time (Unix seconds) at `now`, `seed` makes this
    /// process's nonces differ from the other node's.
    #[must_use]
    pub fn new(cfg: &AuthConfig, secret: &[u8], now: Instant, unix_now: u64, seed: u64) -> Self {
        Self {
            realm: cfg.realm.clone(),
            algorithms: cfg.algorithms.clone(),
            users: cfg.users.clone(),
            key: NonceKey::new(secret, cfg.nonce_lifetime.as_secs()),
            nc: NcTable::new(cfg.max_nonces),
            base: (now, unix_now),
            seed,
            issued: 0,
        }
    }

    /// The realm challenged for.
    #[must_use]
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Replaces the nonce secret (the pair's shared one, from Redis).
    /// Nonces issued with the old one are no longer accepted.
    pub fn set_secret(&mut self, secret: &[u8]) {
        self.key = NonceKey::new(secret, self.key.lifetime);
    }

    /// Replaces the users (SIGHUP).
    pub fn set_users(&mut self, users: Users) {
        self.users = users;
    }

    /// How many users.
    #[must_use]
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Whether `user` is one of the users.
    #[must_use]
    pub fn knows(&self, user: &str) -> bool {
        self.users.get(user).is_some()
    }

    fn unix(&self, now: Instant) -> u64 {
        self.base.1 + now.saturating_duration_since(self.base.0).as_secs()
    }

    /// Forgets the nonce-counts of expired nonces (call it now and then).
    pub fn expire(&mut self, now: Instant) {
        let oldest = self.unix(now).saturating_sub(self.key.lifetime);
        self.nc.expire(oldest);
    }

    /// The challenge headers for `kind`: one per algorithm, one nonce.
    pub fn challenge(&mut self, kind: Kind, stale: bool, now: Instant) -> Vec<Header> {
        self.issued = self.issued.wrapping_add(1);
        let unique = self.seed.wrapping_add(self.issued.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let nonce = self.key.issue(self.unix(now), unique, &self.realm);
        self.algorithms
            .iter()
            .map(|&algorithm| {
                let c = Challenge {
                    realm: self.realm.clone(),
                    nonce: nonce.clone(),
                    opaque: None,
                    algorithm,
                    qop_auth: true,
                    stale,
                };
                Header::new(kind.challenge_header(), &c.to_value())
            })
            .collect()
    }

    /// Our realm's credentials in `req`, if any.
    fn credentials(&self, req: &Message, kind: Kind) -> Option<Credentials> {
        req.headers_named(kind.credentials_header())
            .filter_map(|h| Credentials::parse(h.value()))
            .find(|c| c.realm == self.realm)
    }

    /// Checks `req`'s credentials for `kind`; counts the outcome in `m`.
    pub fn check(&mut self, req: &Message, kind: Kind, now: Instant, m: &AuthMetrics) -> Verdict {
        let why = match self.credentials(req, kind) {
            None => Why::Missing,
            Some(c) => match self.verify(req, &c, now) {
                Ok(()) => {
                    m.successes.fetch_add(1, Relaxed);
                    return Verdict::User(c.username);
                }
                Err(why) => why,
            },
        };
        match why {
            Why::Missing => {}
            Why::Failed => {
                m.failures.fetch_add(1, Relaxed);
            }
            Why::Stale => {
                m.stale.fetch_add(1, Relaxed);
            }
            Why::Replay => {
                m.replays.fetch_add(1, Relaxed);
            }
        }
        m.challenges.fetch_add(1, Relaxed);
        Verdict::Challenge(self.challenge(kind, why == Why::Stale, now))
    }

    fn verify(&mut self, req: &Message, c: &Credentials, now: Instant) -> Result<(), Why> {
        let method = req.method().map(|m| m.as_str().to_owned()).unwrap_or_default();
        if !self.algorithms.contains(&c.algorithm) || !same_uri(req.request_uri().unwrap_or_default(), &c.uri) {
            return Err(Why::Failed);
        }
        let (key, issued) = match self.key.check(&c.nonce, &self.realm, self.unix(now)) {
            NonceCheck::Invalid => return Err(Why::Failed),
            NonceCheck::Stale => {
                // RFC 7616 §3.3: stale means the digest was right but the
                // nonce old; a wrong password on an old nonce is a failure.
                return if self.password_ok(c, &method) { Err(Why::Stale) } else { Err(Why::Failed) };
            }
            NonceCheck::Fresh { key, issued } => (key, issued),
        };
        if !self.password_ok(c, &method) {
            return Err(Why::Failed);
        }
        let nc = match &c.qop {
            None => 0,
            Some(_) => c.nc().filter(|n| *n > 0).ok_or(Why::Failed)?,
        };
        match self.nc.check(key, issued, nc) {
            NcCheck::Accepted => Ok(()),
            NcCheck::Replay => Err(Why::Replay),
            NcCheck::Forgotten => Err(Why::Stale),
        }
    }

    /// Whether the response matches the user's HA1. An unknown user is
    /// checked against a made-up HA1, so both take the same work.
    fn password_ok(&self, c: &Credentials, method: &str) -> bool {
        const NOBODY: &str = "0000000000000000000000000000000000000000000000000000000000000000";
        match self.users.get(&c.username).and_then(|u| u.ha1(c.algorithm)) {
            Some(ha1) => c.verify(ha1, method),
            None => {
                let len = if c.algorithm == Algorithm::Md5 { 32 } else { 64 };
                let _ = c.verify(&NOBODY[..len], method);
                false
            }
        }
    }

    /// Removes the credentials for our realm (before forwarding); other
    /// realms' stay for the hops they are meant for.
    pub fn strip_own(&self, msg: &mut Message) {
        for name in ["Authorization", "Proxy-Authorization"] {
            if msg.headers_named(name).next().is_none() {
                continue;
            }
            let keep: Vec<Header> = msg
                .headers_named(name)
                .filter(|h| Credentials::parse(h.value()).is_none_or(|c| c.realm != self.realm))
                .cloned()
                .collect();
            msg.remove_all(name);
            for h in keep {
                msg.push_header(h);
            }
        }
    }

    /// How long a nonce lives.
    #[must_use]
    pub fn nonce_lifetime(&self) -> Duration {
        Duration::from_secs(self.key.lifetime)
    }
}

/// Whether the digest-uri is the Request-URI (RFC 3261 §22.4): same
/// scheme, user, host (any case) and port; parameters and headers aside.
/// A looser check would let a captured, unused credential be re-aimed at
/// another user of the same server (another number to call). sipp, which
/// answers with `sip:host:port` by default, is run with `-auth_uri`.
fn same_uri(ruri: &str, digest_uri: &str) -> bool {
    if ruri == digest_uri {
        return true;
    }
    match (Uri::parse(ruri), Uri::parse(digest_uri)) {
        (Ok(a), Ok(b)) => {
            a.scheme.eq_ignore_ascii_case(&b.scheme)
                && a.user == b.user
                && a.host.eq_ignore_ascii_case(&b.host)
                && a.port == b.port
        }
        _ => false,
    }
}
