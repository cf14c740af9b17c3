//! The pending set: stored messages by id and by delivery queue, with the
//! caps, over a [`MessageLog`] that makes each change durable first.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::{LogError, MessageLog, Outcome, Record, StoredMessage};

/// Why a message was not stored.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// `max_messages` are stored.
    #[error("the message store is full")]
    Full,
    /// `max_per_target` are stored for this target.
    #[error("too many messages stored for this target")]
    TargetFull,
    /// The log could not take it.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Stored messages, in order per delivery queue.
pub struct MessageStore {
    log: Box<dyn MessageLog>,
    msgs: BTreeMap<u64, StoredMessage>,
    queues: HashMap<String, VecDeque<u64>>,
    max_total: usize,
    max_per_target: usize,
    /// The highest sequence number the log returned.
    last_seq: u64,
}

impl std::fmt::Debug for MessageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStore").field("pending", &self.msgs.len()).field("queues", &self.queues.len()).finish()
    }
}

impl MessageStore {
    /// An empty store over a log that holds nothing yet (nothing replayed).
    #[must_use]
    pub fn empty(log: Box<dyn MessageLog>, max_total: usize, max_per_target: usize) -> Self {
        Self { log, msgs: BTreeMap::new(), queues: HashMap::new(), max_total, max_per_target, last_seq: 0 }
    }

    /// Opens the store over `log`, replaying it: every message stored and
    /// not done is pending again, in its original order. Records that do
    /// not parse are skipped (and logged).
    ///
    /// # Errors
    /// The log's error on reading.
    pub fn open(mut log: Box<dyn MessageLog>, max_total: usize, max_per_target: usize) -> Result<Self, LogError> {
        let records = log.replay()?;
        let mut s = Self::empty(log, max_total, max_per_target);
        for (seq, bytes) in records {
            s.last_seq = s.last_seq.max(seq);
            match Record::decode(seq, &bytes) {
                Some(Record::Stored(m)) => s.insert(m),
                Some(Record::Done(id, _)) => {
                    s.remove(id);
                }
                None => tracing::warn!(seq, "message log: a record that does not parse is skipped"),
            }
        }
        s.release();
        Ok(s)
    }

    fn insert(&mut self, m: StoredMessage) {
        self.queues.entry(m.key.clone()).or_default().push_back(m.id);
        self.msgs.insert(m.id, m);
    }

    fn remove(&mut self, id: u64) -> Option<StoredMessage> {
        let m = self.msgs.remove(&id)?;
        if let Some(q) = self.queues.get_mut(&m.key) {
            q.retain(|i| *i != id);
            if q.is_empty() {
                self.queues.remove(&m.key);
            }
        }
        Some(m)
    }

    /// Lets the log drop what no pending message needs.
    fn release(&mut self) {
        let below = self.msgs.keys().next().copied().unwrap_or(self.last_seq + 1);
        if let Err(e) = self.log.release_below(below) {
            tracing::warn!(error = %e, "message log: cannot release old records");
        }
    }

    /// Stores `m` (durably, when the log is) and returns its id.
    ///
    /// # Errors
    /// A cap is reached, or the log refused it.
    pub fn store(&mut self, mut m: StoredMessage) -> Result<u64, Refused> {
        if self.msgs.len() >= self.max_total {
            return Err(Refused::Full);
        }
        if self.queues.get(&m.key).is_some_and(|q| q.len() >= self.max_per_target) {
            return Err(Refused::TargetFull);
        }
        let id = self.log.append(&Record::Stored(m.clone()).encode())?;
        self.last_seq = self.last_seq.max(id);
        m.id = id;
        self.insert(m);
        Ok(id)
    }

    /// Message `id` leaves the store with `outcome`. It is gone from the
    /// pending set even if the log cannot record it (then a restart
    /// delivers it again: at least once). Returns it.
    pub fn finish(&mut self, id: u64, outcome: Outcome) -> Option<StoredMessage> {
        let m = self.remove(id)?;
        match self.log.append(&Record::Done(id, outcome).encode()) {
            Ok(seq) => self.last_seq = self.last_seq.max(seq),
            Err(e) => tracing::warn!(id, error = %e, "message log: cannot record a message as done"),
        }
        self.release();
        Some(m)
    }

    /// The first message of queue `key`.
    #[must_use]
    pub fn head(&self, key: &str) -> Option<&StoredMessage> {
        self.queues.get(key).and_then(|q| q.front()).and_then(|id| self.msgs.get(id))
    }

    /// A stored message.
    #[must_use]
    pub fn get(&self, id: u64) -> Option<&StoredMessage> {
        self.msgs.get(&id)
    }

    /// The queues with messages, in the order of their oldest message.
    #[must_use]
    pub fn keys(&self) -> Vec<String> {
        let mut heads: Vec<(u64, &String)> =
            self.queues.iter().filter_map(|(k, q)| q.front().map(|id| (*id, k))).collect();
        heads.sort_unstable();
        heads.into_iter().map(|(_, k)| k.clone()).collect()
    }

    /// Ids of the messages whose time to live has passed at `now_ms`.
    #[must_use]
    pub fn expired(&self, now_ms: u64) -> Vec<u64> {
        self.msgs.values().filter(|m| m.expires_ms <= now_ms).map(|m| m.id).collect()
    }

    /// Messages pending.
    #[must_use]
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Whether none is pending.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Kind, MemoryLog};
    use super::*;

    fn msg(key: &str, n: u32) -> StoredMessage {
        StoredMessage {
            id: 0,
            key: key.into(),
            kind: Kind::User,
            ruri: format!("sip:{key}"),
            from: "<sip:b@x>;tag=1".into(),
            to: format!("<sip:{key}>"),
            call_id: format!("c{n}"),
            cseq: n,
            content_type: None,
            stored_ms: 0,
            expires_ms: u64::from(n) * 10,
            body: format!("m{n}").into_bytes(),
        }
    }

    /// A log that survives "restarts" of the store by sharing its records.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<MemoryLog>>);

    impl MessageLog for Shared {
        fn append(&mut self, r: &[u8]) -> Result<u64, LogError> {
            self.0.lock().unwrap().append(r)
        }
        fn replay(&mut self) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
            self.0.lock().unwrap().replay()
        }
        fn release_below(&mut self, seq: u64) -> Result<(), LogError> {
            self.0.lock().unwrap().release_below(seq)
        }
    }

    #[test]
    fn queues_keep_order_caps_refuse_and_reopening_replays() {
        let log = Shared::default();
        let mut s = MessageStore::open(Box::new(log.clone()), 4, 2).unwrap();
        let a1 = s.store(msg("a", 1)).unwrap();
        let b1 = s.store(msg("b", 2)).unwrap();
        let a2 = s.store(msg("a", 3)).unwrap();
        assert!(matches!(s.store(msg("a", 4)), Err(Refused::TargetFull)));
        let c1 = s.store(msg("c", 5)).unwrap();
        assert!(matches!(s.store(msg("d", 6)), Err(Refused::Full)));
        assert_eq!(s.keys(), vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]);
        assert_eq!(s.head("a").map(|m| m.id), Some(a1));
        assert_eq!(s.expired(20), vec![a1, b1]);
        assert_eq!(s.finish(a1, Outcome::Delivered).map(|m| m.body), Some(b"m1".to_vec()));
        assert_eq!(s.head("a").map(|m| m.id), Some(a2));
        // Reopened over the same log: the same pending set, in order.
        let mut r = MessageStore::open(Box::new(log.clone()), 4, 2).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!((r.head("a").map(|m| m.id), r.head("b").map(|m| m.id)), (Some(a2), Some(b1)));
        assert_eq!(r.get(a2).map(|m| m.body.clone()), Some(b"m3".to_vec()));
        // Records no pending message needs are released.
        assert!(log.0.lock().unwrap().replay().unwrap().iter().all(|(seq, _)| *seq >= b1));
        r.finish(b1, Outcome::Expired);
        r.finish(a2, Outcome::Failed);
        r.finish(c1, Outcome::Delivered);
        assert!(r.is_empty());
        assert!(log.0.lock().unwrap().replay().unwrap().is_empty(), "nothing pending, nothing kept");
        assert!(MessageStore::open(Box::new(log), 4, 2).unwrap().is_empty());
    }
}
