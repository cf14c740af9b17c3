//! The durable [`MessageLog`]: a [`Spool`](crate::spool::Spool) directory
//! of its own (`[messages] spool_dir`). Every record is on disk before
//! `append` returns (fdatasync), so a MESSAGE answered 202 survives
//! `kill -9` and a power cut. The spool's "sent" position is the oldest
//! pending message: the segments below it are deleted.

use std::path::Path;

use super::{LogError, MessageLog};
use crate::spool::{Spool, SpoolError, SpoolOptions, SyncMode};

/// Records read per batch on replay.
const BATCH: usize = 1024;

/// A message log in a spool directory.
pub struct SpoolLog(Spool);

fn backend(op: &'static str, e: &SpoolError) -> LogError {
    LogError::Backend { op, detail: e.to_string() }
}

impl SpoolLog {
    /// Opens (creating) the spool in `dir`, at most `max_bytes` on disk.
    ///
    /// # Errors
    /// The directory or a segment cannot be read or written.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, LogError> {
        let opts = SpoolOptions {
            segment_bytes: (max_bytes / 16).clamp(64 << 10, 4 << 20),
            max_bytes,
            sync: SyncMode::Always,
        };
        Spool::open(dir, opts).map(Self).map_err(|e| backend("open", &e))
    }
}

impl MessageLog for SpoolLog {
    fn append(&mut self, record: &[u8]) -> Result<u64, LogError> {
        match self.0.append(record) {
            Ok(seq) => Ok(seq),
            Err(SpoolError::Full { .. }) => Err(LogError::Full),
            Err(e) => Err(backend("append", &e)),
        }
    }

    fn replay(&mut self) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        let mut out = Vec::new();
        let mut from = self.0.sent();
        loop {
            let batch = self.0.read_from(from, BATCH).map_err(|e| backend("read", &e))?;
            let Some(last) = batch.last().map(|(s, _)| *s) else { break };
            out.extend(batch);
            from = last + 1;
        }
        Ok(out)
    }

    fn release_below(&mut self, seq: u64) -> Result<(), LogError> {
        self.0.set_sent(seq).map_err(|e| backend("release", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Kind, MessageStore, Outcome, StoredMessage};
    use super::*;

    fn msg(n: u32) -> StoredMessage {
        StoredMessage {
            id: 0,
            key: "user:bob@127.0.0.1".into(),
            kind: Kind::User,
            ruri: "sip:bob@127.0.0.1".into(),
            from: "<sip:a@127.0.0.1>;tag=1".into(),
            to: "<sip:bob@127.0.0.1>".into(),
            call_id: format!("c{n}"),
            cseq: n,
            content_type: Some("text/plain".into()),
            stored_ms: 0,
            expires_ms: u64::MAX,
            body: vec![b'x'; 2000],
        }
    }

    #[test]
    fn a_reopened_spool_gives_back_the_pending_messages_and_drops_old_segments() {
        let dir = std::env::temp_dir().join(format!("xsbc-msgspool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let open = || MessageStore::open(Box::new(SpoolLog::open(&dir, 1 << 20).unwrap()), 1000, 1000).unwrap();
        let mut s = open();
        let ids: Vec<u64> = (1..=200).map(|n| s.store(msg(n)).unwrap()).collect();
        for id in &ids[..150] {
            s.finish(*id, Outcome::Delivered);
        }
        let segments = || {
            std::fs::read_dir(&dir)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("seg-"))
                .count()
        };
        let before = segments();
        drop(s);
        let mut s = open();
        assert_eq!(s.len(), 50);
        assert_eq!(s.head("user:bob@127.0.0.1").map(|m| m.call_id.clone()), Some("c151".into()));
        for id in &ids[150..] {
            s.finish(*id, Outcome::Delivered);
        }
        assert!(segments() < before || before == 1, "delivered messages' segments go");
        drop(s);
        assert!(open().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
