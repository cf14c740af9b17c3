//! Stateless server nonces and the nonce-count replay table.
//!
//! A nonce is `hex(issued || unique) || hex(HMAC-SHA256(secret, issued ||
//! unique || realm))[..32]`: `issued` is the wall-clock second it was made
//! (8 bytes), `unique` 8 bytes that differ between nonces. Any node with the
//! secret checks a nonce without having stored it, so both HA nodes accept
//! each other's. A nonce older than the lifetime is *stale*: authentic, but
//! answered with a new challenge with `stale=true`.
//!
//! [`NcTable`] remembers, per nonce in use, the highest nonce-count seen, so
//! a replayed or non-increasing count is refused. It holds only nonces that
//! came with valid credentials, forgets them once they expire, and is
//! bounded: when full, the oldest entry goes and every nonce issued no later
//! than it counts as stale from then on (a forgotten nonce is never
//! accepted again).

use std::collections::{HashMap, VecDeque};

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Hex digits of the `issued || unique` part.
const HEAD: usize = 32;
/// Hex digits of the (truncated) MAC.
const TAG: usize = 32;

/// What a nonce turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours and within its lifetime; `key` identifies it in [`NcTable`].
    Fresh {
        /// The nonce's identity.
        key: u128,
        /// When it was issued (Unix seconds).
        issued: u64,
    },
    /// Ours but past its lifetime.
    Stale,
    /// Not made with our secret, or malformed.
    Invalid,
}

/// Makes and checks nonces with one secret.
#[derive(Clone)]
pub struct NonceKey {
    secret: Vec<u8>,
    /// Lifetime in seconds.
    pub lifetime: u64,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NonceKey(lifetime {} s)", self.lifetime)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl NonceKey {
    /// A key from `secret`, nonces living `lifetime` seconds.
    #[must_use]
    pub fn new(secret: &[u8], lifetime: u64) -> Self {
        Self { secret: secret.to_vec(), lifetime }
    }

    fn mac(&self, head: &[u8; 16], realm: &str) -> HmacSha256 {
        // HMAC takes keys of any length.
        let mut m = HmacSha256::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!("any key length"));
        m.update(head);
        m.update(realm.as_bytes());
        m
    }

    /// A nonce issued at `now` (Unix seconds) for `realm`; `unique` must
    /// differ between the nonces of one second.
    #[must_use]
    pub fn issue(&self, now: u64, unique: u64, realm: &str) -> String {
        let mut head = [0u8; 16];
        head[..8].copy_from_slice(&now.to_be_bytes());
        head[8..].copy_from_slice(&unique.to_be_bytes());
        let tag = self.mac(&head, realm).finalize().into_bytes();
        let mut s = hex(&head);
        s.push_str(&hex(&tag)[..TAG]);
        s
    }

    /// Checks a nonce for `realm` at `now` (Unix seconds).
    #[must_use]
    pub fn check(&self, nonce: &str, realm: &str, now: u64) -> NonceCheck {
        if nonce.len() != HEAD + TAG || !nonce.is_ascii() {
            return NonceCheck::Invalid;
        }
        let Ok(key) = u128::from_str_radix(&nonce[..HEAD], 16) else { return NonceCheck::Invalid };
        let mut tag = [0u8; TAG / 2];
        for (i, t) in tag.iter_mut().enumerate() {
            let Ok(b) = u8::from_str_radix(&nonce[HEAD + 2 * i..HEAD + 2 * i + 2], 16) else {
                return NonceCheck::Invalid;
            };
            *t = b;
        }
        let head = key.to_be_bytes();
        if self.mac(&head, realm).verify_truncated_left(&tag).is_err() {
            return NonceCheck::Invalid;
        }
        let issued = u64::try_from(key >> 64).unwrap_or(u64::MAX);
        // A nonce from the future (the other node's clock a little ahead) is fine.
        if now.saturating_sub(issued) >= self.lifetime {
            NonceCheck::Stale
        } else {
            NonceCheck::Fresh { key, issued }
        }
    }
}

/// 32 random bytes from the kernel, for a nonce secret nobody configured.
#[must_use]
pub fn random_secret() -> Vec<u8> {
    use std::io::Read as _;
    let mut b = vec![0u8; 32];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok();
    if !ok {
        // No /dev/urandom: the hasher's random keys, then the time.
        use std::hash::{BuildHasher as _, Hasher as _};
        for chunk in b.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
            );
            chunk.copy_from_slice(&h.finish().to_be_bytes()[..chunk.len()]);
        }
    }
    b
}

/// What the replay table says about a nonce-count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NcCheck {
    /// Higher than any seen for this nonce: accepted and remembered.
    Accepted,
    /// Not higher than one already seen: a replay.
    Replay,
    /// The nonce was forgotten to keep the table bounded: ask again.
    Forgotten,
}

/// The highest nonce-count seen per nonce, bounded in size.
#[derive(Debug)]
pub struct NcTable {
    highest: HashMap<u128, u32>,
    /// Nonces in the order first seen, with their issue time.
    order: VecDeque<(u64, u128)>,
    /// Nonces issued at or before this second and not in the table were
    /// evicted: never accepted again.
    floor: Option<u64>,
    cap: usize,
}

impl NcTable {
    /// A table of at most `cap` nonces.
    #[must_use]
    pub fn new(cap: usize) -> Self {
        Self { highest: HashMap::new(), order: VecDeque::new(), floor: None, cap: cap.max(1) }
    }

    /// Nonces remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.highest.len()
    }

    /// Whether it is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.highest.is_empty()
    }

    /// Drops the nonces issued before `oldest_alive` (Unix seconds): they
    /// are stale and refused by their time anyway.
    pub fn expire(&mut self, oldest_alive: u64) {
        while let Some(&(issued, key)) = self.order.front() {
            if issued >= oldest_alive {
                break;
            }
            self.order.pop_front();
            self.highest.remove(&key);
        }
    }

    /// Records nonce-count `nc` (0 without qop: the nonce is single use)
    /// for a fresh nonce.
    pub fn check(&mut self, key: u128, issued: u64, nc: u32) -> NcCheck {
        if let Some(h) = self.highest.get_mut(&key) {
            if nc <= *h {
                return NcCheck::Replay;
            }
            *h = nc;
            return NcCheck::Accepted;
        }
        if self.floor.is_some_and(|f| issued <= f) {
            return NcCheck::Forgotten;
        }
        while self.highest.len() >= self.cap {
            let Some((t, old)) = self.order.pop_front() else { break };
            self.highest.remove(&old);
            self.floor = Some(self.floor.map_or(t, |f| f.max(t)));
        }
        if self.floor.is_some_and(|f| issued <= f) {
            return NcCheck::Forgotten;
        }
        self.highest.insert(key, nc);
        self.order.push_back((issued, key));
        NcCheck::Accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_checked_by_mac_and_time() {
        let k = NonceKey::new(b"0123456789abcdef", 300);
        let n = k.issue(1_000_000, 7, "example.com");
        assert_eq!(n.len(), 64);
        assert!(matches!(k.check(&n, "example.com", 1_000_000), NonceCheck::Fresh { issued: 1_000_000, .. }));
        assert!(matches!(k.check(&n, "example.com", 1_000_299), NonceCheck::Fresh { .. }));
        assert_eq!(k.check(&n, "example.com", 1_000_300), NonceCheck::Stale);
        assert_eq!(k.check(&n, "other.com", 1_000_000), NonceCheck::Invalid, "bound to the realm");
        let other = NonceKey::new(b"another secret!!", 300);
        assert_eq!(other.check(&n, "example.com", 1_000_000), NonceCheck::Invalid, "bound to the secret");
        // A shared secret: the other node accepts it.
        assert!(matches!(
            NonceKey::new(b"0123456789abcdef", 300).check(&n, "example.com", 1_000_001),
            NonceCheck::Fresh { .. }
        ));
        // Tampered time, tampered tag, junk.
        let forged = format!("{:016x}{}", 2_000_000u64, &n[16..]);
        assert_eq!(k.check(&forged, "example.com", 2_000_000), NonceCheck::Invalid);
        let mut t = n.clone().into_bytes();
        t[63] = if t[63] == b'0' { b'1' } else { b'0' };
        assert_eq!(k.check(std::str::from_utf8(&t).unwrap(), "example.com", 1_000_000), NonceCheck::Invalid);
        assert_eq!(k.check("xyz", "example.com", 1_000_000), NonceCheck::Invalid);
        assert_eq!(k.check(&"é".repeat(32), "example.com", 1_000_000), NonceCheck::Invalid);
        assert_ne!(k.issue(1_000_000, 8, "example.com"), n, "unique per nonce");
    }

    #[test]
    fn nc_table_refuses_replays_and_stays_bounded() {
        let mut t = NcTable::new(3);
        assert_eq!(t.check(1, 100, 1), NcCheck::Accepted);
        assert_eq!(t.check(1, 100, 1), NcCheck::Replay);
        assert_eq!(t.check(1, 100, 2), NcCheck::Accepted);
        assert_eq!(t.check(1, 100, 1), NcCheck::Replay, "non-increasing");
        assert_eq!(t.check(2, 101, 0), NcCheck::Accepted);
        assert_eq!(t.check(2, 101, 0), NcCheck::Replay, "without qop a nonce is single use");
        assert_eq!(t.check(3, 102, 1), NcCheck::Accepted);
        // Full: nonce 1 (issued at 100) goes, and is never accepted again.
        assert_eq!(t.check(4, 103, 1), NcCheck::Accepted);
        assert_eq!(t.len(), 3);
        assert_eq!(t.check(1, 100, 3), NcCheck::Forgotten);
        assert_eq!(t.check(5, 100, 1), NcCheck::Forgotten, "issued no later than a forgotten one");
        // Expiry empties it.
        t.expire(104);
        assert!(t.is_empty());
        for i in 0..1000u128 {
            let _ = t.check(1000 + i, 200 + u64::try_from(i).unwrap(), 1);
        }
        assert_eq!(t.len(), 3, "a flood cannot grow it");
    }
}
