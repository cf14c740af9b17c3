//! The location service: registered bindings per address-of-record, in
//! memory, with expiry. Time is passed in (`now`), never read here.
//!
//! Owned by the signaling thread; nothing else touches it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::transport::Proto;

/// Transport a binding was registered over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS.
    Tls,
}

impl Transport {
    /// The SIP transport a binding is reached over: over TCP and TLS, the
    /// connection it registered on (its `source`), never a new one.
    #[must_use]
    pub fn proto(self) -> Proto {
        match self {
            Self::Udp => Proto::Udp,
            Self::Tcp => Proto::Tcp,
            Self::Tls => Proto::Tls,
        }
    }

    /// Its name in replicated records.
    fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }

    fn from_name(s: &str) -> Self {
        match s {
            "tcp" => Self::Tcp,
            "tls" => Self::Tls,
            _ => Self::Udp,
        }
    }
}

impl From<Proto> for Transport {
    fn from(p: Proto) -> Self {
        match p {
            Proto::Udp => Self::Udp,
            Proto::Tcp => Self::Tcp,
            Proto::Tls => Self::Tls,
        }
    }
}

/// One registered contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI as registered (without the angle brackets).
    pub contact: String,
    /// Where the REGISTER came from: the phone is reached there (NAT).
    pub source: SocketAddr,
    /// Transport of the REGISTER.
    pub transport: Transport,
    /// Call-ID of the registering client (RFC 3261 10.3 step 7).
    pub call_id: String,
    /// CSeq of the last REGISTER that refreshed it.
    pub cseq: u32,
    /// When it expires.
    pub expires_at: Instant,
    /// q-value × 1000, for ordering (higher first).
    pub q: u16,
    /// The realm the REGISTER came in on: the phone is reached there.
    pub realm: usize,
}

impl Binding {
    /// Seconds left at `now`.
    #[must_use]
    pub fn remaining(&self, now: Instant) -> u64 {
        self.expires_at.saturating_duration_since(now).as_secs()
    }
}

/// Why a binding update was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    /// Same Call-ID with a CSeq that is not higher: an out-of-order REGISTER (RFC 3261 10.3 step 7).
    OutOfOrder,
}

/// All bindings, keyed by normalised address-of-record (`user@host`, lowercase host).
#[derive(Debug, Default)]
pub struct Location {
    aors: HashMap<String, Vec<Binding>>,
    /// AORs that have ever registered, so a call to one with no live binding
    /// gets 480 rather than 404.
    known: HashMap<String, Instant>,
    /// AORs changed since the last [`Location::take_changed`]; `None`
    /// unless an HA peer replicates them.
    changed: Option<HashSet<String>>,
    /// Bindings held, by the source address that registered them (for
    /// the registration caps), kept in step with `aors`.
    by_source: crate::caps::SourceCounts,
}

/// Adds (`add`) or takes away the bindings of `list` from `counts`.
fn tally(counts: &mut crate::caps::SourceCounts, list: Option<&Vec<Binding>>, add: bool) {
    for b in list.into_iter().flatten() {
        if add {
            counts.add(b.source.ip());
        } else {
            counts.remove(b.source.ip());
        }
    }
}

/// Normalises an AOR: the user part as is, the host lowercased.
#[must_use]
pub fn aor_key(user: Option<&str>, host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match user {
        Some(u) if !u.is_empty() => format!("{u}@{host}"),
        _ => host,
    }
}

impl Location {
    /// An empty location service.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or refreshes a binding (`expires > 0`) or removes it
    /// (`expires == 0`), matching contacts by URI.
    ///
    /// # Errors
    /// [`UpdateError::OutOfOrder`] for a stale CSeq from the same Call-ID.
    pub fn update(&mut self, aor: &str, b: Binding, expires: Duration, now: Instant) -> Result<(), UpdateError> {
        self.touch(aor);
        tally(&mut self.by_source, self.aors.get(aor), false);
        let result = self.apply(aor, b, expires, now);
        tally(&mut self.by_source, self.aors.get(aor), true);
        result
    }

    fn apply(&mut self, aor: &str, mut b: Binding, expires: Duration, now: Instant) -> Result<(), UpdateError> {
        let list = self.aors.entry(aor.to_owned()).or_default();
        list.retain(|x| x.expires_at > now);
        if let Some(pos) = list.iter().position(|x| x.contact == b.contact) {
            let old = &list[pos];
            if old.call_id == b.call_id && b.cseq <= old.cseq {
                return Err(UpdateError::OutOfOrder);
            }
            if expires.is_zero() {
                list.remove(pos);
            } else {
                b.expires_at = now + expires;
                list[pos] = b;
            }
        } else if !expires.is_zero() {
            b.expires_at = now + expires;
            list.push(b);
        }
        self.known.insert(aor.to_owned(), now);
        if list.is_empty() {
            self.aors.remove(aor);
        }
        Ok(())
    }

    /// Removes every binding of an AOR (`Contact: *` with `Expires: 0`).
    pub fn remove_all(&mut self, aor: &str, now: Instant) {
        self.touch(aor);
        tally(&mut self.by_source, self.aors.remove(aor).as_ref(), false);
        self.known.insert(aor.to_owned(), now);
    }

    /// Live bindings of an AOR, highest q first, then most recent.
    #[must_use]
    pub fn lookup(&self, aor: &str, now: Instant) -> Vec<Binding> {
        let mut v: Vec<Binding> =
            self.aors.get(aor).map(|l| l.iter().filter(|b| b.expires_at > now).cloned().collect()).unwrap_or_default();
        v.sort_by(|a, b| b.q.cmp(&a.q).then(b.expires_at.cmp(&a.expires_at)));
        v
    }

    /// Whether this AOR has ever registered.
    #[must_use]
    pub fn is_known(&self, aor: &str) -> bool {
        self.known.contains_key(aor) || self.aors.contains_key(aor)
    }

    /// Drops expired bindings. Returns how many were removed.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        let counts = &mut self.by_source;
        self.aors.retain(|_, l| {
            let before = l.len();
            l.retain(|b| {
                let live = b.expires_at > now;
                if !live {
                    counts.remove(b.source.ip());
                }
                live
            });
            n += before - l.len();
            !l.is_empty()
        });
        n
    }

    /// Number of bindings (expired ones count until [`expire`](Self::expire)).
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_source.total()
    }

    /// Bindings registered from `ip` (expired ones count until [`expire`](Self::expire)).
    #[must_use]
    pub fn from_source(&self, ip: std::net::IpAddr) -> usize {
        self.by_source.of(ip)
    }

    /// Whether `contact` is bound to `aor` now (a refresh, not a new binding).
    #[must_use]
    pub fn has_contact(&self, aor: &str, contact: &str, now: Instant) -> bool {
        self.aors.get(aor).is_some_and(|l| l.iter().any(|b| b.contact == contact && b.expires_at > now))
    }

    /// Whether there are no bindings.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.aors.is_empty()
    }
}

/// One binding as replicated to an HA peer (wall-clock expiry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingRecord {
    /// Contact URI.
    pub contact: String,
    /// Source address of the REGISTER.
    pub source: SocketAddr,
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
    /// Call-ID of the REGISTER.
    pub call_id: String,
    /// CSeq of the REGISTER.
    pub cseq: u32,
    /// Expiry, Unix seconds.
    pub expires: f64,
    /// q × 1000.
    pub q: u16,
    /// Realm index.
    #[serde(default)]
    pub realm: usize,
}

/// Replication (HA): which AORs changed, their bindings as records, and
/// installing records taken over from the peer.
impl Location {
    /// Starts recording which AORs change.
    pub fn track_changes(&mut self) {
        if self.changed.is_none() {
            self.changed = Some(HashSet::new());
        }
    }

    fn touch(&mut self, aor: &str) {
        if let Some(c) = self.changed.as_mut() {
            if !c.contains(aor) {
                c.insert(aor.to_owned());
            }
        }
    }

    /// The AORs changed since the last call.
    pub fn take_changed(&mut self) -> Vec<String> {
        self.changed.as_mut().map(|c| c.drain().collect()).unwrap_or_default()
    }

    /// The live bindings of `aor` as records (`None`: none left).
    #[must_use]
    pub fn export(&self, aor: &str, now: Instant, wall: SystemTime) -> Option<Vec<BindingRecord>> {
        let base = wall.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let list: Vec<BindingRecord> = self
            .aors
            .get(aor)?
            .iter()
            .filter(|b| b.expires_at > now)
            .map(|b| BindingRecord {
                contact: b.contact.clone(),
                source: b.source,
                transport: b.transport.name().into(),
                call_id: b.call_id.clone(),
                cseq: b.cseq,
                expires: base + b.expires_at.saturating_duration_since(now).as_secs_f64(),
                q: b.q,
                realm: b.realm,
            })
            .collect();
        (!list.is_empty()).then_some(list)
    }

    /// Every AOR with live bindings.
    #[must_use]
    pub fn aors(&self) -> Vec<String> {
        self.aors.keys().cloned().collect()
    }

    /// Replaces the bindings of `aor` with records from the peer; expired
    /// ones are dropped.
    pub fn import(&mut self, aor: &str, records: &[BindingRecord], now: Instant, wall: SystemTime) {
        let base = wall.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let list: Vec<Binding> = records
            .iter()
            .filter(|r| r.expires > base)
            .map(|r| Binding {
                contact: r.contact.clone(),
                source: r.source,
                transport: Transport::from_name(&r.transport),
                call_id: r.call_id.clone(),
                cseq: r.cseq,
                expires_at: now + Duration::from_secs_f64((r.expires - base).min(86_400.0)),
                q: r.q,
                realm: r.realm,
            })
            .collect();
        self.known.insert(aor.to_owned(), now);
        tally(&mut self.by_source, self.aors.remove(aor).as_ref(), false);
        if !list.is_empty() {
            tally(&mut self.by_source, Some(&list), true);
            self.aors.insert(aor.to_owned(), list);
        }
    }

    /// Removes the bindings registered over a connection that has closed
    /// (RFC 5626: the flow failed; the phone registers again over a new
    /// one). Returns how many were removed.
    pub fn remove_flow(&mut self, realm: usize, transport: Transport, source: SocketAddr) -> usize {
        let mut n = 0;
        let mut touched = Vec::new();
        for (aor, list) in &mut self.aors {
            let before = list.len();
            list.retain(|b| !(b.realm == realm && b.transport == transport && b.source == source));
            for _ in list.len()..before {
                self.by_source.remove(source.ip());
            }
            if list.len() != before {
                n += before - list.len();
                touched.push(aor.clone());
            }
        }
        for aor in touched {
            self.touch(&aor);
            if self.aors.get(&aor).is_some_and(Vec::is_empty) {
                self.aors.remove(&aor);
            }
        }
        n
    }

    /// Forgets every binding (a node that stopped being active).
    pub fn clear(&mut self) {
        self.aors.clear();
        self.by_source.clear();
        if let Some(c) = self.changed.as_mut() {
            c.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(contact: &str, call_id: &str, cseq: u32) -> Binding {
        Binding {
            contact: contact.into(),
            source: "192.0.2.1:5060".parse().unwrap(),
            transport: Transport::Udp,
            call_id: call_id.into(),
            cseq,
            expires_at: Instant::now(),
            q: 1000,
            realm: 0,
        }
    }

    #[test]
    fn export_import_round_trip() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut a = Location::new();
        a.track_changes();
        a.update("bob@x", b("sip:bob@10.0.0.9:5064", "c1", 1), Duration::from_secs(300), t0).unwrap();
        assert_eq!(a.take_changed(), vec!["bob@x".to_owned()]);
        let recs = a.export("bob@x", t0, wall).unwrap();
        let mut b2 = Location::new();
        // The peer imports 10 s later by its own clocks.
        let t1 = t0 + Duration::from_secs(10);
        b2.import("bob@x", &recs, t1, wall);
        let got = b2.lookup("bob@x", t1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].contact, "sip:bob@10.0.0.9:5064");
        assert!((299..=300).contains(&got[0].remaining(t1)), "{}", got[0].remaining(t1));
        // An expired record is not installed.
        let mut old = recs.clone();
        old[0].expires -= 400.0;
        b2.import("bob@x", &old, t1, wall);
        assert!(b2.lookup("bob@x", t1).is_empty());
        assert!(b2.is_known("bob@x"));
        a.remove_all("bob@x", t0);
        assert!(a.export("bob@x", t0, wall).is_none());
    }

    #[test]
    fn add_refresh_expire_remove() {
        let t0 = Instant::now();
        let mut l = Location::new();
        let aor = aor_key(Some("alice"), "Example.COM");
        assert_eq!(aor, "alice@example.com");
        l.update(&aor, b("sip:alice@10.0.0.1", "c1", 1), Duration::from_secs(60), t0).unwrap();
        l.update(&aor, b("sip:alice@10.0.0.2", "c2", 1), Duration::from_secs(120), t0).unwrap();
        assert_eq!(l.lookup(&aor, t0).len(), 2, "several contacts per AOR");
        // At 61 s the first has expired.
        let t61 = t0 + Duration::from_secs(61);
        let live = l.lookup(&aor, t61);
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].contact, "sip:alice@10.0.0.2");
        assert_eq!(live[0].remaining(t61), 59);
        // Refresh extends; a stale CSeq from the same Call-ID is refused.
        l.update(&aor, b("sip:alice@10.0.0.2", "c2", 2), Duration::from_secs(300), t61).unwrap();
        assert_eq!(l.lookup(&aor, t61)[0].remaining(t61), 300);
        assert_eq!(
            l.update(&aor, b("sip:alice@10.0.0.2", "c2", 2), Duration::from_secs(300), t61),
            Err(UpdateError::OutOfOrder)
        );
        // Expires 0 removes one contact.
        l.update(&aor, b("sip:alice@10.0.0.2", "c2", 3), Duration::ZERO, t61).unwrap();
        assert!(l.lookup(&aor, t61).is_empty());
        assert!(l.is_known(&aor), "a call now gets 480, not 404");
        assert!(!l.is_known("bob@example.com"));
    }

    #[test]
    fn a_closed_flow_removes_its_bindings_only() {
        let t0 = Instant::now();
        let mut l = Location::new();
        let flow: SocketAddr = "192.0.2.1:40001".parse().unwrap();
        let over = |contact: &str, transport: Transport, source: SocketAddr| Binding {
            transport,
            source,
            ..b(contact, contact, 1)
        };
        l.update("a@x", over("sip:a@1;transport=tls", Transport::Tls, flow), Duration::from_secs(60), t0).unwrap();
        l.update("a@x", over("sip:a@2", Transport::Udp, flow), Duration::from_secs(60), t0).unwrap();
        l.update("b@x", over("sip:b@1;transport=tcp", Transport::Tcp, flow), Duration::from_secs(60), t0).unwrap();
        assert_eq!(l.remove_flow(0, Transport::Tls, flow), 1);
        assert_eq!(l.lookup("a@x", t0).len(), 1, "the UDP binding from the same address stays");
        assert_eq!(l.remove_flow(0, Transport::Tcp, flow), 1);
        assert!(l.lookup("b@x", t0).is_empty() && l.is_known("b@x"), "480, not 404, from now on");
        assert_eq!(l.remove_flow(1, Transport::Udp, flow), 0, "another realm's flow");
    }

    #[test]
    fn star_removes_all_and_expire_sweeps() {
        let t0 = Instant::now();
        let mut l = Location::new();
        l.update("a@x", b("sip:a@1", "c", 1), Duration::from_secs(10), t0).unwrap();
        l.update("a@x", b("sip:a@2", "c", 2), Duration::from_secs(10), t0).unwrap();
        l.update("b@x", b("sip:b@1", "d", 1), Duration::from_secs(100), t0).unwrap();
        assert_eq!(l.from_source("192.0.2.1".parse().unwrap()), 3);
        l.remove_all("a@x", t0);
        assert!(l.lookup("a@x", t0).is_empty());
        assert_eq!(l.len(), 1);
        assert_eq!(l.from_source("192.0.2.1".parse().unwrap()), 1);
        assert_eq!(l.expire(t0 + Duration::from_secs(101)), 1);
        assert!(l.is_empty());
        assert_eq!((l.len(), l.from_source("192.0.2.1".parse().unwrap())), (0, 0));
    }
}
