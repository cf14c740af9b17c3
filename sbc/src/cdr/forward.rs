//! The forwarder thread: sends spooled CDRs to PostgreSQL, in order, in
//! batches, exactly once.
//!
//! - Availability: the collector is probed (connect, then `SELECT 1`) every
//!   `probe_interval`, with the hysteresis of trunk health
//!   ([`crate::health::Health`]): DOWN after `down_after` consecutive
//!   failures (a failed batch counts as one), UP after `up_after`
//!   consecutive probe successes and the hold-down. While DOWN nothing is
//!   sent; only the probe runs, and the spool grows.
//! - Exactly once: every CDR carries its id ([`super::cdr_id`]); a batch is
//!   one `INSERT ... SELECT ... ON CONFLICT (id) DO NOTHING` in a
//!   transaction, and the spool's sent position moves only after the
//!   commit. A replay after a crash (committed, not yet marked sent) or the
//!   HA standby writing the same call inserts nothing twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

use super::CdrMetrics;
use crate::config::CdrPostgres;
use crate::health::{Health, State};
use crate::spool::Spool;

/// The table, created when missing. `{t}` is the configured name.
const CREATE: &str = "CREATE TABLE IF NOT EXISTS {t} (
    id          uuid PRIMARY KEY,
    received    bigint GENERATED ALWAYS AS IDENTITY,
    call_id     text NOT NULL,
    caller      text,
    callee      text,
    target      text,
    trunk       text,
    start_time  timestamptz NOT NULL,
    answer_time timestamptz,
    end_time    timestamptz NOT NULL,
    duration_s  double precision NOT NULL,
    end_reason  text NOT NULL,
    final_code  integer,
    codecs      jsonb,
    relay       jsonb,
    inserted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS {t}_end_time ON {t} (end_time)";

/// One batch: a JSON array of CDRs, inserted in array order.
const INSERT: &str = "INSERT INTO {t} (id, call_id, caller, callee, target, trunk, start_time, answer_time,
    end_time, duration_s, end_reason, final_code, codecs, relay)
SELECT (r->>'id')::uuid, r->>'call_id', r->>'from', r->>'to', r->>'target', r->>'trunk',
    to_timestamp((r->>'start')::float8), to_timestamp((r->>'answer')::float8),
    to_timestamp((r->>'end')::float8), coalesce((r->>'duration')::float8, 0),
    coalesce(r->>'end_reason', ''), (r->>'final_code')::int, r->'codecs', r->'relay'
FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS b(r, n)
ORDER BY n
ON CONFLICT (id) DO NOTHING";

/// What the forwarder thread needs.
pub struct Forwarder {
    /// The spool it reads from and marks sent.
    pub spool: Arc<Mutex<Spool>>,
    /// The collector.
    pub cfg: CdrPostgres,
    /// Counters.
    pub metrics: Arc<CdrMetrics>,
    /// Woken after each append.
    pub wake: mpsc::Receiver<()>,
    /// Set to stop.
    pub shutdown: Arc<AtomicBool>,
}

struct Conn {
    client: Client,
    table_ready: bool,
}

impl Forwarder {
    /// Starts the thread.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new().name("sbc-cdr-fwd".into()).spawn(move || self.run())
    }

    fn run(self) {
        let mut health = Health::new(self.cfg.thresholds);
        let mut conn: Option<Conn> = None;
        let mut last_probe: Option<Instant> = None;
        self.metrics.collector_up(true);
        while !self.shutdown.load(Ordering::Relaxed) {
            let now = Instant::now();
            let probe_due = last_probe.is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.probe_interval);
            let mut wait = self.cfg.probe_interval;
            let mut linger = false;
            let transition = match health.state() {
                State::Up => match self.send_batch(&mut conn) {
                    Ok(n) if n > 0 => {
                        health.on_call_ok();
                        // A full batch: more are waiting. A partial one:
                        // let the next gather for `batch_delay`.
                        wait = if n >= self.cfg.batch { Duration::ZERO } else { self.cfg.batch_delay };
                        linger = n < self.cfg.batch;
                        None
                    }
                    Ok(_) if probe_due => {
                        last_probe = Some(now);
                        match self.probe(&mut conn) {
                            Ok(()) => health.on_probe_ok("SELECT 1", now),
                            Err(e) => health.on_failure(&e, now),
                        }
                    }
                    Ok(_) => None,
                    Err(e) => {
                        self.metrics.failed();
                        conn = None;
                        last_probe = Some(now);
                        tracing::warn!(error = %e, "CDR batch not forwarded; retried");
                        health.on_failure(&e, now)
                    }
                },
                State::Down if probe_due => {
                    last_probe = Some(now);
                    match self.probe(&mut conn) {
                        Ok(()) => health.on_probe_ok("SELECT 1", now),
                        Err(e) => {
                            conn = None;
                            health.on_failure(&e, now)
                        }
                    }
                }
                State::Down => None,
            };
            if let Some(t) = transition {
                tracing::warn!(state = t.to.as_str(), reason = %t.reason, "CDR collector");
                self.metrics.collector_up(t.to == State::Up);
                if t.to == State::Up {
                    continue;
                }
            }
            if linger {
                // Appends wake the thread; they wait for the delay's end.
                let until = Instant::now() + wait;
                while !self.shutdown.load(Ordering::Relaxed) {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    let _ = self.wake.recv_timeout(left);
                }
            } else if !wait.is_zero() {
                let left = last_probe.map_or(wait, |t| wait.saturating_sub(t.elapsed()));
                let _ = self.wake.recv_timeout(left.max(Duration::from_millis(5)));
            }
        }
    }

    fn connect(&self) -> Result<Conn, String> {
        let mut cfg: postgres::Config = self.cfg.conninfo.parse().map_err(|e| format!("{e}"))?;
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(Duration::from_secs(5));
        }
        cfg.keepalives(true).keepalives_idle(Duration::from_secs(10));
        let mut client = cfg.connect(NoTls).map_err(|e| format!("connect: {e}"))?;
        client
            .batch_execute("SET statement_timeout = '30s'; SET client_min_messages = warning")
            .map_err(|e| format!("{e}"))?;
        Ok(Conn { client, table_ready: false })
    }

    /// Connect when needed, then `SELECT 1`.
    fn probe(&self, conn: &mut Option<Conn>) -> Result<(), String> {
        if conn.is_none() {
            *conn = Some(self.connect()?);
        }
        let c = conn.as_mut().ok_or("no connection")?;
        if let Err(e) = c.client.simple_query("SELECT 1") {
            *conn = None;
            return Err(format!("SELECT 1: {e}"));
        }
        Ok(())
    }

    /// Sends the next batch; returns how many CDRs it committed.
    fn send_batch(&self, conn: &mut Option<Conn>) -> Result<usize, String> {
        let batch = {
            let s = self.spool.lock().map_err(|_| "spool lock poisoned")?;
            s.read_from(s.sent(), self.cfg.batch).map_err(|e| e.to_string())?
        };
        let Some(&(last, _)) = batch.last() else { return Ok(0) };
        let mut body = String::with_capacity(batch.iter().map(|r| r.1.len() + 1).sum::<usize>() + 2);
        body.push('[');
        let mut n = 0;
        for (seq, rec) in &batch {
            if !is_cdr(rec) {
                tracing::error!(seq, "spool record is not a CDR; skipped");
                self.metrics.skipped(1);
                continue;
            }
            if n > 0 {
                body.push(',');
            }
            body.push_str(std::str::from_utf8(rec).unwrap_or("null"));
            n += 1;
        }
        body.push(']');
        if n > 0 {
            if conn.is_none() {
                *conn = Some(self.connect()?);
            }
            let c = conn.as_mut().ok_or("no connection")?;
            if !c.table_ready {
                c.client.batch_execute(&CREATE.replace("{t}", &self.cfg.table)).map_err(|e| format!("create: {e}"))?;
                c.table_ready = true;
            }
            let sql = INSERT.replace("{t}", &self.cfg.table);
            let mut tx = c.client.transaction().map_err(|e| format!("begin: {e}"))?;
            tx.execute(sql.as_str(), &[&body]).map_err(|e| format!("insert: {e}"))?;
            tx.commit().map_err(|e| format!("commit: {e}"))?;
        }
        let mut s = self.spool.lock().map_err(|_| "spool lock poisoned")?;
        if let Err(e) = s.set_sent(last + 1) {
            // Committed: a replay after this inserts nothing twice.
            tracing::error!(error = %e, "CDR spool sent position not saved");
        }
        self.metrics.observe(&s.stats());
        drop(s);
        self.metrics.forwarded(n as u64);
        Ok(batch.len())
    }
}

/// A spool record the INSERT accepts: a JSON object whose `id` is a UUID
/// and with the fields the table requires.
fn is_cdr(rec: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(rec) else { return false };
    let uuid = v.get("id").and_then(|i| i.as_str()).is_some_and(|s| {
        s.len() == 36
            && s.chars()
                .enumerate()
                .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
    });
    uuid && v.get("call_id").is_some_and(serde_json::Value::is_string)
        && v.get("start").is_some_and(serde_json::Value::is_number)
        && v.get("end").is_some_and(serde_json::Value::is_number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cdrs_pass() {
        let id = super::super::cdr_id("c", "t", 1.0);
        let good = format!(r#"{{"id":"{id}","call_id":"c","start":1.0,"end":2.5}}"#);
        assert!(is_cdr(good.as_bytes()));
        assert!(!is_cdr(b"not json"));
        assert!(!is_cdr(br#"{"id":"x","call_id":"c","start":1,"end":2}"#));
        assert!(!is_cdr(format!(r#"{{"id":"{id}","start":1,"end":2}}"#).as_bytes()));
    }
}
