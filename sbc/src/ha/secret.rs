//! The digest nonce secret the two nodes of a pair share when `[auth]`
//! configures none: the first node to ask stores a random one in Redis
//! (`SET NX`), and both read it back, so either node accepts the nonces
//! the other issued. Until Redis answers, each node uses its own random
//! secret (its nonces then work only with itself).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;

use super::redis::{Redis, Reply};
use super::HaConfig;

/// The Redis key under the pair's prefix.
#[must_use]
pub fn key(prefix: &str) -> Vec<u8> {
    format!("{prefix}:auth-secret").into_bytes()
}

/// Stores `candidate` under `key` unless a secret is there already, and
/// returns the one that is there now.
///
/// # Errors
/// Redis unreachable, or a reply that holds no secret.
pub fn shared(redis: &mut Redis, key: &[u8], candidate: &[u8]) -> io::Result<Vec<u8>> {
    let hex: String = candidate.iter().map(|b| format!("{b:02x}")).collect();
    let replies = redis.pipeline(&[
        vec![b"SET".to_vec(), key.to_vec(), hex.into_bytes(), b"NX".to_vec()],
        vec![b"GET".to_vec(), key.to_vec()],
    ])?;
    match replies.get(1) {
        Some(Reply::Bulk(Some(s))) if s.len() >= 16 => Ok(s.clone()),
        other => Err(io::Error::other(format!("no auth secret in Redis: {other:?}"))),
    }
}

/// Fetches the shared secret on a thread, retrying every second until
/// Redis answers or `shutdown`; the secret arrives on the receiver.
#[must_use]
pub fn fetch_in_background(cfg: &HaConfig, shutdown: Arc<AtomicBool>) -> Receiver<Vec<u8>> {
    let (tx, rx) = channel();
    let (addr, key) = (cfg.redis.clone(), key(&cfg.key_prefix));
    let spawned = std::thread::Builder::new().name("sbc-auth-secret".into()).spawn(move || {
        let mut redis = Redis::new(addr, Duration::from_millis(500));
        let candidate = crate::auth::nonce::random_secret();
        while !shutdown.load(Relaxed) {
            match shared(&mut redis, &key, &candidate) {
                Ok(s) => {
                    let _ = tx.send(s);
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "auth: waiting for Redis for the shared nonce secret"),
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "auth: cannot start the nonce secret thread; nonces stay per node");
    }
    rx
}
