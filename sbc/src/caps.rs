//! Caps on the state one source, and everyone together, may hold: bindings,
//! server transactions, dialogs, media sessions and INVITEs outstanding
//! toward trunks (the `max_*` keys of `[limits]`).
//!
//! [`Caps`] holds the configured values; [`SourceCounts`] is the counter
//! each owner of that state (the location service, the transaction layer,
//! the dialog table, the trunk layer) keeps next to it and updates on every
//! insert and every removal, so the count cannot drift from the state. A
//! source is its IP address: ports are free for an attacker to vary.

use std::collections::HashMap;
use std::net::IpAddr;

/// The configured caps (`[limits]`). Every value is at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Live bindings in total.
    pub max_registrations: usize,
    /// Live contacts of one address-of-record.
    pub max_contacts_per_aor: usize,
    /// Live bindings registered from one source address.
    pub max_registrations_per_source: usize,
    /// Server transactions in total.
    pub max_transactions: usize,
    /// Server transactions of requests from one source address.
    pub max_transactions_per_source: usize,
    /// Dialogs (early and confirmed) in total.
    pub max_dialogs: usize,
    /// Dialogs whose caller is one source address.
    pub max_dialogs_per_source: usize,
    /// Calls with an offer anchored at the relay, in total.
    pub max_media_sessions: usize,
    /// Calls with an offer anchored at the relay, from one source address.
    pub max_media_sessions_per_source: usize,
    /// INVITE branches from one source address waiting for a trunk's final
    /// response.
    pub max_trunk_invites_per_source: usize,
    /// Seconds in the Retry-After of a 503 over a cap.
    pub retry_after_s: u32,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            max_registrations: 100_000,
            max_contacts_per_aor: 10,
            max_registrations_per_source: 1_000,
            max_transactions: 100_000,
            max_transactions_per_source: 5_000,
            max_dialogs: 100_000,
            max_dialogs_per_source: 10_000,
            max_media_sessions: 50_000,
            max_media_sessions_per_source: 10_000,
            max_trunk_invites_per_source: 1_000,
            retry_after_s: 5,
        }
    }
}

/// Which cap refused something (the `cap` label of
/// `sbc_caps_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// `max_registrations`.
    Registrations,
    /// `max_contacts_per_aor`.
    ContactsPerAor,
    /// `max_registrations_per_source`.
    RegistrationsPerSource,
    /// `max_transactions`.
    Transactions,
    /// `max_transactions_per_source`.
    TransactionsPerSource,
    /// `max_dialogs`.
    Dialogs,
    /// `max_dialogs_per_source`.
    DialogsPerSource,
    /// `max_media_sessions`.
    MediaSessions,
    /// `max_media_sessions_per_source`.
    MediaSessionsPerSource,
    /// `max_trunk_invites_per_source`.
    TrunkInvitesPerSource,
}

impl Cap {
    /// Every cap, in metric order.
    pub const ALL: [Self; 10] = [
        Self::Registrations,
        Self::ContactsPerAor,
        Self::RegistrationsPerSource,
        Self::Transactions,
        Self::TransactionsPerSource,
        Self::Dialogs,
        Self::DialogsPerSource,
        Self::MediaSessions,
        Self::MediaSessionsPerSource,
        Self::TrunkInvitesPerSource,
    ];

    /// The metric label: the config key without `max_`.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Registrations => "registrations",
            Self::ContactsPerAor => "contacts_per_aor",
            Self::RegistrationsPerSource => "registrations_per_source",
            Self::Transactions => "transactions",
            Self::TransactionsPerSource => "transactions_per_source",
            Self::Dialogs => "dialogs",
            Self::DialogsPerSource => "dialogs_per_source",
            Self::MediaSessions => "media_sessions",
            Self::MediaSessionsPerSource => "media_sessions_per_source",
            Self::TrunkInvitesPerSource => "trunk_invites_per_source",
        }
    }

    /// Its index in [`ALL`](Self::ALL).
    #[must_use]
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }
}

/// How many of something each source holds, and the total. An entry
/// whose count falls to zero is removed, so the map holds only sources
/// with live state.
#[derive(Debug, Default, Clone)]
pub struct SourceCounts {
    per: HashMap<IpAddr, usize>,
    total: usize,
}

impl SourceCounts {
    /// Counts one more for `ip`.
    pub fn add(&mut self, ip: IpAddr) {
        *self.per.entry(ip).or_insert(0) += 1;
        self.total += 1;
    }

    /// Counts one less for `ip` (nothing if it holds none).
    pub fn remove(&mut self, ip: IpAddr) {
        if let Some(n) = self.per.get_mut(&ip) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.per.remove(&ip);
            }
        }
    }

    /// What `ip` holds.
    #[must_use]
    pub fn of(&self, ip: IpAddr) -> usize {
        self.per.get(&ip).copied().unwrap_or(0)
    }

    /// What everyone holds.
    #[must_use]
    pub fn total(&self) -> usize {
        self.total
    }

    /// Sources holding anything.
    #[must_use]
    pub fn sources(&self) -> usize {
        self.per.len()
    }

    /// Whether `more` more for `ip` stay within `max_total` and `max_per`;
    /// else the cap they would break (`total_cap` or `per_cap`).
    ///
    /// # Errors
    /// The cap that refuses.
    pub fn admit(&self, ip: IpAddr, more: usize, limits: (usize, usize), caps: (Cap, Cap)) -> Result<(), Cap> {
        if self.of(ip) + more > limits.1 {
            return Err(caps.1);
        }
        if self.total + more > limits.0 {
            return Err(caps.0);
        }
        Ok(())
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.per.clear();
        self.total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_go_up_and_back_to_zero() {
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let mut c = SourceCounts::default();
        let caps = (Cap::Dialogs, Cap::DialogsPerSource);
        c.add(a);
        c.add(a);
        c.add(b);
        assert_eq!((c.of(a), c.of(b), c.total(), c.sources()), (2, 1, 3, 2));
        assert_eq!(c.admit(a, 1, (10, 2), caps), Err(Cap::DialogsPerSource));
        assert_eq!(c.admit(b, 1, (3, 2), caps), Err(Cap::Dialogs));
        assert_eq!(c.admit(b, 1, (4, 2), caps), Ok(()));
        c.remove(a);
        c.remove(a);
        c.remove(a);
        c.remove(b);
        assert_eq!((c.total(), c.sources()), (0, 0), "never below zero, empty entries gone");
    }

    #[test]
    fn labels_are_the_keys() {
        for c in Cap::ALL {
            assert_eq!(Cap::ALL[c.index()], c);
            assert!(!c.label().starts_with("max_"));
        }
    }
}
