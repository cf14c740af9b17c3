//! The proxy's side of high availability: exporting dialog changes,
//! importing dialogs on takeover, and standing down.
//!
//! A dialog's record also carries the per-call state the proxy keeps in
//! indexes outside the dialog: the Call-ID shown to a `callid_rewrite`
//! trunk (the edge's map) and the CSeq offsets toward a carrier that
//! challenged (the call layer's). Importing a record rebuilds both, so the
//! new active maps and renumbers the call's messages as the old one did.

use std::time::{Instant, SystemTime};

use super::dialog::{Dialog, DialogRecord};
use super::Proxy;

impl Proxy {
    /// Starts recording dialog changes for replication.
    pub fn track_changes(&mut self) {
        self.core.dialogs.track_changes();
        self.edge.track_changes();
        self.core.location.track_changes();
    }

    /// Registrations changed since the last call: `(aor, Some(json))` with
    /// the live bindings, `(aor, None)` when none are left.
    pub fn take_binding_changes(&mut self, now: Instant) -> Vec<(String, Option<String>)> {
        let wall = SystemTime::now();
        self.core
            .location
            .take_changed()
            .into_iter()
            .map(|aor| {
                let json = self.core.location.export(&aor, now, wall).and_then(|r| serde_json::to_string(&r).ok());
                (aor, json)
            })
            .collect()
    }

    /// Every AOR with live bindings, as `(aor, json)`.
    #[must_use]
    pub fn dump_bindings(&self, now: Instant) -> Vec<(String, String)> {
        let wall = SystemTime::now();
        self.core
            .location
            .aors()
            .into_iter()
            .filter_map(|aor| {
                let r = self.core.location.export(&aor, now, wall)?;
                serde_json::to_string(&r).ok().map(|j| (aor, j))
            })
            .collect()
    }

    /// Installs registrations taken over from the peer. Returns how many AORs.
    pub fn import_bindings(&mut self, records: &[(String, String)], now: Instant) -> usize {
        let wall = SystemTime::now();
        let mut n = 0;
        for (aor, text) in records {
            match serde_json::from_str::<Vec<crate::location::BindingRecord>>(text) {
                Ok(r) => {
                    self.core.location.import(aor, &r, now, wall);
                    n += 1;
                }
                Err(e) => tracing::warn!(%aor, error = %e, "HA: skipping a registration record that does not parse"),
            }
        }
        // Installing is not a change to replicate back.
        let _ = self.core.location.take_changed();
        self.core.update_gauges(&self.txn);
        n
    }

    /// Dialogs changed since the last call: `(call_id, Some(json))` for a
    /// live dialog, `(call_id, None)` for one that ended. A dialog whose
    /// Call-ID the edge mapped since is written again.
    pub fn take_dialog_changes(&mut self) -> Vec<(String, Option<String>)> {
        for call_id in self.edge.take_fresh() {
            self.core.dialogs.mark_changed(&call_id);
        }
        let ids = self.core.dialogs.take_changed();
        ids.into_iter()
            .map(|id| {
                let json = self.core.dialogs.get(&id).and_then(|d| serde_json::to_string(&self.dialog_record(d)).ok());
                (id, json)
            })
            .collect()
    }

    /// Every live dialog as `(call_id, json)`.
    #[must_use]
    pub fn dump_dialogs(&self) -> Vec<(String, String)> {
        self.core
            .dialogs
            .iter()
            .filter_map(|d| serde_json::to_string(&self.dialog_record(d)).ok().map(|j| (d.call_id.clone(), j)))
            .collect()
    }

    /// The replicated record of a dialog: its trunk by name, the Call-ID a
    /// `callid_rewrite` trunk knows it by, and its senders' CSeq offsets.
    fn dialog_record(&self, d: &Dialog) -> DialogRecord {
        let trunk = d.trunk.and_then(|i| self.core.cfg.trunks.get(i)).map(|t| t.name.as_str());
        let mut r = d.record(trunk);
        r.external_call_id = self.edge.external_of(&d.call_id).map(str::to_owned);
        r.cseq_offsets = self.core.carrier.offsets_of(&d.call_id, d.sender_tags());
        // A late offer places the call after the dialog was made.
        if r.relay.is_none() {
            r.relay = self.core.media.placement(&d.call_id);
        }
        r
    }

    /// Installs dialogs taken over from the peer (JSON records). Dialogs
    /// already here are kept. Returns how many were installed; records that
    /// do not parse are logged and skipped.
    pub fn import_dialogs(&mut self, records: &[String], now: Instant) -> usize {
        let wall = SystemTime::now();
        let mut n = 0;
        for text in records {
            let r: DialogRecord = match serde_json::from_str(text) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "HA: skipping a dialog record that does not parse");
                    continue;
                }
            };
            if self.core.dialogs.get(&r.call_id).is_some() {
                continue;
            }
            let trunk = r.trunk.as_deref().and_then(|name| self.core.cfg.trunks.iter().position(|t| t.name == name));
            if let Some(i) = trunk {
                self.core.trunk_take(i, now);
            }
            // The per-call state kept in indexes: the Call-ID mapping at the
            // edge and the CSeq offsets toward carriers.
            if let Some(external) = &r.external_call_id {
                self.edge.adopt(&r.call_id, external, now);
            }
            for (tag, offset) in &r.cseq_offsets {
                self.core.carrier.restore_offset(&r.call_id, tag, *offset, now);
            }
            // The call's media stays on its remote relay.
            if let Some(relay) = &r.relay {
                self.core.media.place(&r.call_id, relay);
            }
            self.core.dialogs.insert(Dialog::from_record(&r, trunk, now, wall));
            n += 1;
        }
        self.core.update_gauges(&self.txn);
        n
    }

    /// Forgets every call and transaction without ending them (no CDR, no
    /// media delete): the node is no longer active and the new active owns
    /// them.
    pub fn stand_down(&mut self) {
        let trunks: Vec<usize> = self.core.dialogs.iter().filter_map(|d| d.trunk).collect();
        for i in trunks {
            self.core.trunk_release(i);
        }
        self.core.dialogs.clear();
        self.core.location.clear();
        self.txn.clear();
        self.core.forwards.clear();
        self.core.trunk_invites.clear();
        self.core.probes.clear();
        self.core.dns_trunks.clear_probes();
        self.core.update_gauges(&self.txn);
    }

    /// Whether this node serves (sends trunk probes). A standby keeps quiet:
    /// answers to its probes would reach the active node, which holds the
    /// address they are sent from.
    pub fn set_active(&mut self, active: bool) {
        self.core.active = active;
    }
}
