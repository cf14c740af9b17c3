//! MESSAGE store and forward (RFC 3428): what the proxy keeps for a user
//! who is not registered, or for a trunk that is DOWN, until it can be
//! delivered, expires or is refused for good.
//!
//! This module owns the stored messages and their durable log; the SIP
//! side (when to store, delivery as a UAC, retries) is the call layer's
//! (`crate::proxy`, `message.rs`). The log is a sequence of records: a
//! "stored" record per message (its id is the record's sequence number)
//! and a "done" record when it leaves (delivered, expired, failed).
//! Reopening the log replays it to rebuild the pending set. The backend
//! is a trait: [`MemoryLog`] (nothing survives a restart) or a durable
//! spool directory.
//!
//! Owned by the signaling thread; the metrics are read by the exporter.

mod record;
mod spool;
mod store;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub use record::{Kind, Outcome, Record, StoredMessage};
pub use spool::SpoolLog;
pub use store::{MessageStore, Refused};

/// Why the message log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The backend could not append or read.
    #[error("message log {op}: {detail}")]
    Backend {
        /// What was being done.
        op: &'static str,
        /// The backend's error.
        detail: String,
    },
    /// The log is full.
    #[error("message log full")]
    Full,
}

/// The durable log under a [`MessageStore`].
pub trait MessageLog: Send {
    /// Appends one record; returns its sequence number once it is durable.
    ///
    /// # Errors
    /// [`LogError::Full`] when over its size cap, else the backend's error.
    fn append(&mut self, record: &[u8]) -> Result<u64, LogError>;
    /// Every record still kept, oldest first.
    ///
    /// # Errors
    /// The backend's error.
    fn replay(&mut self) -> Result<Vec<(u64, Vec<u8>)>, LogError>;
    /// Records below `seq` are no longer needed (whole segments may go).
    ///
    /// # Errors
    /// The backend's error.
    fn release_below(&mut self, seq: u64) -> Result<(), LogError>;
}

/// A log in memory: nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryLog {
    records: Vec<(u64, Vec<u8>)>,
    next: u64,
}

impl MessageLog for MemoryLog {
    fn append(&mut self, record: &[u8]) -> Result<u64, LogError> {
        self.next += 1;
        self.records.push((self.next, record.to_vec()));
        Ok(self.next)
    }

    fn replay(&mut self) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        Ok(self.records.clone())
    }

    fn release_below(&mut self, seq: u64) -> Result<(), LogError> {
        self.records.retain(|(s, _)| *s >= seq);
        Ok(())
    }
}

/// Store-and-forward counters and the pending gauge.
#[derive(Debug, Default)]
pub struct MessageMetrics {
    /// Messages stored (answered 202).
    pub stored: AtomicU64,
    /// Stored messages delivered (2xx).
    pub delivered: AtomicU64,
    /// Stored messages that expired before delivery.
    pub expired: AtomicU64,
    /// Stored messages refused for good by the target (a final 3xx-6xx
    /// but 408), or that could not be stored in the log after all.
    pub failed: AtomicU64,
    /// MESSAGEs not stored because a cap was reached (answered 503 or 486).
    pub refused: AtomicU64,
    /// Delivery attempts that got no answer or a 5xx/408 (retried).
    pub retries: AtomicU64,
    /// Messages stored and not yet delivered, expired or failed.
    pub pending: AtomicU64,
}

impl MessageMetrics {
    /// Appends the Prometheus text.
    pub fn render(&self, o: &mut String) {
        for (name, kind, help, v) in [
            (
                "sbc_messages_stored_total",
                "counter",
                "MESSAGEs stored for an offline user or a DOWN trunk (202).",
                &self.stored,
            ),
            ("sbc_messages_delivered_total", "counter", "Stored MESSAGEs delivered (2xx).", &self.delivered),
            ("sbc_messages_expired_total", "counter", "Stored MESSAGEs that expired undelivered.", &self.expired),
            (
                "sbc_messages_failed_total",
                "counter",
                "Stored MESSAGEs refused for good by the target (final 3xx-6xx but 408).",
                &self.failed,
            ),
            ("sbc_messages_refused_total", "counter", "MESSAGEs not stored over a cap (503 or 486).", &self.refused),
            (
                "sbc_messages_retries_total",
                "counter",
                "Delivery attempts of stored MESSAGEs that will be retried (timeout, 408, 5xx).",
                &self.retries,
            ),
            ("sbc_messages_pending", "gauge", "Stored MESSAGEs waiting for delivery.", &self.pending),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", v.load(Relaxed));
        }
    }
}
