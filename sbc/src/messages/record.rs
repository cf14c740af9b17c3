//! A stored message and the two log records: "stored" (a JSON header line,
//! then the body bytes as they came) and "done" (a JSON line).

use serde::{Deserialize, Serialize};

/// Why a message waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A user of our domains who is not registered: delivered to a binding
    /// when one registers.
    User,
    /// A request routed to trunks that are all DOWN: delivered along the
    /// route once one is UP.
    Trunk,
}

/// How a stored message left the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The target answered 2xx.
    Delivered,
    /// Its time to live passed.
    Expired,
    /// The target refused it for good.
    Failed,
}

/// A message waiting for its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Its id: the sequence number of its "stored" record (0 until stored).
    #[serde(skip)]
    pub id: u64,
    /// The delivery queue it is in (in order within one queue).
    pub key: String,
    /// Why it waits.
    pub kind: Kind,
    /// The Request-URI it came with.
    pub ruri: String,
    /// From, To and Call-ID header values as they came.
    pub from: String,
    /// To.
    pub to: String,
    /// Call-ID.
    pub call_id: String,
    /// The CSeq number it came with.
    pub cseq: u32,
    /// Content-Type, when it had one.
    pub content_type: Option<String>,
    /// When it was stored, ms since the Unix epoch.
    pub stored_ms: u64,
    /// When it expires, ms since the Unix epoch.
    pub expires_ms: u64,
    /// The body.
    #[serde(skip)]
    pub body: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
enum Header {
    Stored(StoredMessage),
    Done { id: u64, outcome: Outcome },
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A message was stored.
    Stored(StoredMessage),
    /// Message `id` left the store.
    Done(u64, Outcome),
}

impl Record {
    /// The record's bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let (header, body) = match self {
            Self::Stored(m) => (Header::Stored(m.clone()), m.body.as_slice()),
            Self::Done(id, outcome) => (Header::Done { id: *id, outcome: *outcome }, &[][..]),
        };
        let mut out = serde_json::to_vec(&header).unwrap_or_default();
        out.push(b'\n');
        out.extend_from_slice(body);
        out
    }

    /// Parses a record read back as sequence number `seq` (the id of a
    /// stored message). `None` for bytes that are not a record.
    #[must_use]
    pub fn decode(seq: u64, bytes: &[u8]) -> Option<Self> {
        let nl = bytes.iter().position(|b| *b == b'\n')?;
        match serde_json::from_slice::<Header>(&bytes[..nl]).ok()? {
            Header::Stored(mut m) => {
                m.id = seq;
                m.body = bytes[nl + 1..].to_vec();
                Some(Self::Stored(m))
            }
            Header::Done { id, outcome } => Some(Self::Done(id, outcome)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_binary_bodies() {
        let m = StoredMessage {
            id: 0,
            key: "user:alice@example.com".into(),
            kind: Kind::User,
            ruri: "sip:alice@example.com".into(),
            from: "<sip:bob@example.com>;tag=1".into(),
            to: "<sip:alice@example.com>".into(),
            call_id: "c1".into(),
            cseq: 7,
            content_type: Some("text/plain".into()),
            stored_ms: 1,
            expires_ms: 2,
            body: b"hi\n\0\xff there".to_vec(),
        };
        let back = Record::decode(42, &Record::Stored(m.clone()).encode()).unwrap();
        assert_eq!(back, Record::Stored(StoredMessage { id: 42, ..m }));
        let done = Record::Done(42, Outcome::Expired);
        assert_eq!(Record::decode(43, &done.encode()), Some(done));
        assert_eq!(Record::decode(1, b"garbage"), None);
        assert_eq!(Record::decode(1, b"{\"t\":\"nope\"}\n"), None);
    }
}
