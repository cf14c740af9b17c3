//! The RTP generator and sink.
//!
//! Packets are RTP (version 2, PT 0) whose payload starts with the flow id,
//! the sequence number and the send time in nanoseconds. The sender paces a
//! total packet rate over all flows round robin; the receiver measures what
//! comes back through the relay.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use media_relay::os::RecvBatch;

use crate::now_ns;
use crate::sys::{send_many, MAX};

/// One direction of one call: packets leave socket `sock` for `dest`.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    /// Index of the sending socket.
    pub sock: usize,
    /// The relay port (or, for the baseline, the receiving socket).
    pub dest: SocketAddrV4,
}

/// What one step measured.
#[derive(Debug, Clone, Default)]
pub struct StepResult {
    /// Offered rate (packets/s).
    pub offered_pps: u64,
    /// Packets sent.
    pub sent: u64,
    /// Packets received back.
    pub received: u64,
    /// Received per second of sending.
    pub received_pps: f64,
    /// What the generator actually sent per second (it may fall short of
    /// the offered rate when its own core is the limit).
    pub sent_pps: f64,
    /// (sent - received) / sent.
    pub loss: f64,
    /// One-way latency percentiles through the relay, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Maximum.
    pub max_us: f64,
    /// Mean RFC 3550-style jitter over flows, microseconds.
    pub jitter_us: f64,
    /// Flows that received nothing in the last second of the step.
    pub silenced: usize,
    /// Flows that lost at least one packet.
    pub flows_with_loss: usize,
    /// Most packets the generator was ever behind its schedule: after a
    /// stall of its core it sends them back to back, so this is its largest
    /// burst (with a burst limit: its largest debt before the excess was
    /// skipped).
    pub max_lag: u64,
    /// Packets the schedule owed beyond the burst limit, never sent (a
    /// token bucket's overflow). They are not counted as sent or lost, and
    /// they lower `sent_pps`.
    pub skipped: u64,
    /// Flows in the step.
    pub flows: usize,
}

/// Binds `n` generator sockets on 127.0.0.1 with large buffers.
///
/// # Errors
/// Socket errors.
pub fn sockets(n: usize) -> std::io::Result<Vec<UdpSocket>> {
    sockets_on(Ipv4Addr::LOCALHOST, n)
}

/// Binds `n` generator sockets on `ip` with large buffers.
///
/// # Errors
/// Socket errors.
pub fn sockets_on(ip: Ipv4Addr, n: usize) -> std::io::Result<Vec<UdpSocket>> {
    (0..n)
        .map(|_| {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
            let _ = s.set_recv_buffer_size(8 << 20);
            let _ = s.set_send_buffer_size(8 << 20);
            s.bind(&SocketAddr::from((ip, 0)).into())?;
            s.set_nonblocking(true)?;
            Ok(s.into())
        })
        .collect()
}

fn packet(buf: &mut [u8], flow: u32, seq: u32, ts: u64) {
    buf[0] = 0x80;
    buf[1] = 0;
    buf[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    buf[4..8].copy_from_slice(&(seq.wrapping_mul(160)).to_be_bytes());
    buf[8..12].copy_from_slice(&flow.to_be_bytes());
    buf[12..16].copy_from_slice(&flow.to_be_bytes());
    buf[16..20].copy_from_slice(&seq.to_be_bytes());
    buf[20..28].copy_from_slice(&ts.to_be_bytes());
}

struct FlowRx {
    received: u64,
    last_arrival: u64,
    last_transit: i64,
    jitter: f64,
}

/// Where the sink runs during a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// Its own thread, which sleeps in `poll` when nothing is queued.
    Thread,
    /// In the sending thread, which drains the sockets whenever it is
    /// ahead of schedule and never sleeps while sending. Nobody waits on
    /// the sockets, so delivering a packet wakes no thread: the sink costs
    /// the relay's core no wakeup (a veth delivers in the sender's
    /// context, which is the relay's core in a namespace lab).
    Inline,
    /// Not here: something else counts what arrives (`xdp-bench`'s XDP
    /// sink). The step receives nothing; it waits out the drain so that
    /// packets in flight arrive before the caller reads its counts.
    Elsewhere,
}

/// How a step paces and where it receives.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Total packets per second over all flows.
    pub pps: u64,
    /// How long to send.
    pub dur: Duration,
    /// RTP payload bytes (160 for G.711 20 ms: 214-byte frames on the wire).
    pub payload: usize,
    /// How long to wait for stragglers after sending.
    pub drain: Duration,
    /// Where the sink runs.
    pub sink: SinkMode,
    /// The most the sender may owe its schedule (a token bucket's depth,
    /// at least 1: `Some(0)` is taken as 1). After a stall it owes more;
    /// it then sends this many at once and skips the rest, which is
    /// counted. A sender that cannot keep up at all still sends as fast as
    /// it can, skipping as it goes. `None`: everything owed is sent at
    /// once, so a stall of the generator's core of a few milliseconds
    /// becomes a burst of thousands of packets at memory speed.
    pub max_burst: Option<u64>,
}

/// Sends `pps` packets per second over `flows` for `dur`, waits `drain`,
/// and reports what came back. `payload` is the RTP payload size (160 for
/// G.711 20 ms: 214-byte frames on the wire). The caller pins the thread.
#[must_use]
pub fn run_step(
    socks: &[UdpSocket],
    flows: &[Flow],
    pps: u64,
    dur: Duration,
    payload: usize,
    drain: Duration,
) -> StepResult {
    run_paced(socks, flows, &Pace { pps, dur, payload, drain, sink: SinkMode::Thread, max_burst: None })
}

/// Runs one step as `pace` says: [`run_step`] with the sink anywhere and
/// optionally a burst limit.
#[must_use]
pub fn run_paced(socks: &[UdpSocket], flows: &[Flow], pace: &Pace) -> StepResult {
    let &Pace { pps, dur, payload, drain, sink: mode, max_burst } = pace;
    let payload = payload.max(16);
    let stop = AtomicBool::new(false);
    let nflows = flows.len();
    let (sink, sent, end, max_lag, skipped) = std::thread::scope(|scope| {
        let rx = (mode == SinkMode::Thread).then(|| {
            scope.spawn(|| {
                let mut sink = Sink::new(nflows);
                sink.run_until(socks, || stop.load(Ordering::Relaxed));
                sink
            })
        });
        let mut inline = (mode == SinkMode::Inline).then(|| Sink::new(nflows));
        let dur_ns = u64::try_from(dur.as_nanos()).unwrap_or(u64::MAX);
        let mut bufs = vec![vec![0u8; 12 + payload]; MAX * socks.len()];
        let mut seqs = vec![0u32; nflows];
        let start = now_ns();
        let mut schedule = Schedule::new(pps, max_burst);
        let mut next_flow = 0usize;
        loop {
            let elapsed = now_ns().saturating_sub(start);
            if elapsed >= dur_ns {
                break;
            }
            let owed = schedule.owed(elapsed);
            if owed == 0 {
                // Ahead of schedule: receive, or yield the core to the receiver.
                match inline.as_mut() {
                    Some(sink) => {
                        sink.drain(socks);
                    }
                    None => std::thread::sleep(Duration::from_micros(20)),
                }
                continue;
            }
            let want = usize::try_from(owed.min(MAX as u64)).unwrap_or(MAX);
            // Group this batch by source socket.
            let mut per_sock: Vec<Vec<usize>> = vec![Vec::new(); socks.len()];
            for k in 0..want {
                let f = (next_flow + k) % nflows;
                per_sock[flows[f].sock].push(f);
            }
            next_flow = (next_flow + want) % nflows;
            let ts = now_ns();
            for (si, fl) in per_sock.iter().enumerate() {
                if fl.is_empty() {
                    continue;
                }
                let base = si * MAX;
                for (j, &f) in fl.iter().enumerate() {
                    seqs[f] = seqs[f].wrapping_add(1);
                    packet(&mut bufs[base + j], f as u32, seqs[f], ts);
                }
                let pkts: Vec<(&[u8], SocketAddrV4)> =
                    fl.iter().enumerate().map(|(j, &f)| (bufs[base + j].as_slice(), flows[f].dest)).collect();
                // What a full socket buffer refuses still counts as sent
                // (and so as lost).
                let _ = send_many(socks[si].as_raw_fd(), &pkts);
                schedule.sent += fl.len() as u64;
            }
        }
        let end = now_ns();
        let sink = match (inline, rx) {
            (Some(mut sink), _) => {
                let until = end.saturating_add(u64::try_from(drain.as_nanos()).unwrap_or(u64::MAX));
                sink.run_until(socks, || now_ns() >= until);
                sink
            }
            (None, Some(rx)) => {
                std::thread::sleep(drain);
                stop.store(true, Ordering::Relaxed);
                rx.join().unwrap_or_else(|_| Sink::new(0))
            }
            (None, None) => {
                std::thread::sleep(drain);
                Sink::new(0)
            }
        };
        (sink, schedule.sent, end, schedule.max_lag, schedule.skipped)
    });
    let Sink { flows: flows_rx, hist, .. } = sink;
    let received: u64 = flows_rx.iter().map(|f| f.received).sum();
    let silenced = flows_rx.iter().filter(|f| f.last_arrival + 1_000_000_000 < end).count();
    let per_flow_sent = sent / nflows.max(1) as u64;
    let flows_with_loss = flows_rx.iter().filter(|f| f.received + 1 < per_flow_sent).count();
    let with_rx: Vec<&FlowRx> = flows_rx.iter().filter(|f| f.received > 1).collect();
    let jitter_us = if with_rx.is_empty() {
        0.0
    } else {
        with_rx.iter().map(|f| f.jitter).sum::<f64>() / with_rx.len() as f64 / 1000.0
    };
    StepResult {
        offered_pps: pps,
        sent,
        received,
        received_pps: received as f64 / dur.as_secs_f64(),
        sent_pps: sent as f64 / dur.as_secs_f64(),
        loss: if sent == 0 { 0.0 } else { sent.saturating_sub(received) as f64 / sent as f64 },
        p50_us: hist.value_at_quantile(0.5) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
        max_us: hist.max() as f64,
        jitter_us,
        silenced,
        flows_with_loss,
        max_lag,
        skipped,
        flows: nflows,
    }
}

/// The sender's schedule: `pps` packets per second from time 0, optionally
/// through a token bucket `max_burst` deep.
#[derive(Debug, Clone)]
struct Schedule {
    pps: u64,
    max_burst: Option<u64>,
    /// Packets handed to the kernel (or lost to a full socket buffer).
    sent: u64,
    /// Packets owed beyond the bucket's depth, given up.
    skipped: u64,
    /// The largest debt seen, before any was given up.
    max_lag: u64,
}

impl Schedule {
    fn new(pps: u64, max_burst: Option<u64>) -> Self {
        Self { pps, max_burst: max_burst.map(|b| b.max(1)), sent: 0, skipped: 0, max_lag: 0 }
    }

    /// Packets to send now, `elapsed_ns` into the step. With a bucket, a
    /// debt deeper than it is cut to its depth and the rest skipped.
    fn owed(&mut self, elapsed_ns: u64) -> u64 {
        let due = u64::try_from(u128::from(self.pps) * u128::from(elapsed_ns) / 1_000_000_000).unwrap_or(u64::MAX);
        let owed = due.saturating_sub(self.sent + self.skipped);
        self.max_lag = self.max_lag.max(owed);
        match self.max_burst {
            Some(cap) if owed > cap => {
                self.skipped += owed - cap;
                cap
            }
            _ => owed,
        }
    }
}

#[expect(clippy::expect_used, reason = "fixed, valid histogram bounds")]
fn new_hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Per-flow counts and the latency histogram of what came back.
struct Sink {
    flows: Vec<FlowRx>,
    hist: Histogram<u64>,
    batch: RecvBatch,
}

impl Sink {
    fn new(nflows: usize) -> Self {
        Self {
            flows: (0..nflows).map(|_| FlowRx { received: 0, last_arrival: 0, last_transit: 0, jitter: 0.0 }).collect(),
            hist: new_hist(),
            batch: RecvBatch::new(),
        }
    }

    /// One non-blocking receive on every socket; returns the packets taken.
    fn drain(&mut self, socks: &[UdpSocket]) -> usize {
        let mut got = 0;
        for s in socks {
            let n = self.batch.recv(s.as_raw_fd()).unwrap_or(0);
            got += n;
            let now = now_ns();
            for i in 0..n {
                let Some(p) = self.batch.packet(i) else { continue };
                if p.len() < 28 {
                    continue;
                }
                let id = u32::from_be_bytes([p[12], p[13], p[14], p[15]]) as usize;
                let ts = u64::from_be_bytes([p[20], p[21], p[22], p[23], p[24], p[25], p[26], p[27]]);
                let Some(f) = self.flows.get_mut(id) else { continue };
                f.received += 1;
                f.last_arrival = now;
                let transit = now as i64 - ts as i64;
                if f.received > 1 {
                    let d = (transit - f.last_transit).unsigned_abs() as f64;
                    f.jitter += (d - f.jitter) / 16.0;
                }
                f.last_transit = transit;
                let _ = self.hist.record((now.saturating_sub(ts) / 1000).max(1));
            }
        }
        got
    }

    /// Receives, sleeping in `poll` when nothing is queued, until `done`
    /// says so at a moment when nothing was queued.
    fn run_until(&mut self, socks: &[UdpSocket], done: impl Fn() -> bool) {
        let fds: Vec<std::os::fd::RawFd> = socks.iter().map(AsRawFd::as_raw_fd).collect();
        loop {
            if self.drain(socks) == 0 {
                if done() {
                    break;
                }
                crate::sys::wait_readable(&fds, 5);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends straight from one loopback socket to another (no relay).
    fn on_loopback(pace: &Pace) -> StepResult {
        let socks = sockets(2).expect("loopback sockets");
        let SocketAddr::V4(dest) = socks[1].local_addr().expect("local address") else {
            unreachable!("bound to 127.0.0.1")
        };
        let flows: Vec<Flow> = (0..8).map(|_| Flow { sock: 0, dest }).collect();
        run_paced(&socks, &flows, pace)
    }

    /// 4k pps for 500 ms, the sink in `sink`.
    fn gentle(sink: SinkMode, max_burst: Option<u64>) -> Pace {
        Pace {
            pps: 4_000,
            dur: Duration::from_millis(500),
            payload: 160,
            drain: Duration::from_millis(200),
            sink,
            max_burst,
        }
    }

    fn loopback(mode: SinkMode) -> StepResult {
        on_loopback(&gentle(mode, None))
    }

    #[test]
    fn both_sink_modes_count_every_packet_and_measure_latency() {
        for mode in [SinkMode::Thread, SinkMode::Inline] {
            let r = loopback(mode);
            assert!(r.sent >= 1_500, "{mode:?}: sent only {}", r.sent);
            assert_eq!(r.received, r.sent, "{mode:?}: {r:?}");
            assert_eq!(r.flows_with_loss, 0, "{mode:?}: {r:?}");
            assert!(r.p99_us >= r.p50_us, "{mode:?}: {r:?}");
            // Received while sending, not only in the drain after the step
            // (which would make the early packets' latency about 500 ms).
            assert!(r.p99_us < 250_000.0, "{mode:?}: {r:?}");
            // It only sends what it owes, so it owed at least one packet
            // each time, and never more than the whole step.
            assert!((1..=r.sent).contains(&r.max_lag), "{mode:?}: {r:?}");
            assert_eq!(r.skipped, 0, "{mode:?}: no bucket, nothing skipped: {r:?}");
        }
    }

    #[test]
    fn schedule_sends_a_stall_s_debt_at_once_without_a_bucket() {
        let mut s = Schedule::new(100_000, None);
        assert_eq!(s.owed(0), 0);
        assert_eq!(s.owed(100_000), 10, "10 packets due after 100 us");
        s.sent += 10;
        assert_eq!(s.owed(150_000), 5);
        s.sent += 5;
        // A 10 ms stall: everything owed goes out back to back.
        assert_eq!(s.owed(10_150_000), 1_000);
        s.sent += 1_000;
        assert_eq!((s.skipped, s.max_lag), (0, 1_000));
        assert_eq!(s.owed(10_150_000), 0);
    }

    #[test]
    fn schedule_with_a_bucket_skips_the_debt_beyond_its_depth() {
        let mut s = Schedule::new(100_000, Some(64));
        assert_eq!(s.owed(100_000), 10, "below the depth, nothing is skipped");
        s.sent += 10;
        assert_eq!(s.owed(10_100_000), 64, "a 10 ms stall sends one bucket");
        assert_eq!((s.skipped, s.max_lag), (1_000 - 64, 1_000));
        s.sent += 64;
        // The schedule counts the skipped packets as done: it does not try
        // to catch up with them later.
        assert_eq!(s.owed(10_100_000), 0);
        assert_eq!(s.owed(10_200_000), 10);
        s.sent += 10;
        assert_eq!(s.sent + s.skipped, 1_020, "the rate over the whole schedule still counts every slot");
    }

    /// A rate no generator reaches: it is always behind.
    fn impossible(max_burst: Option<u64>) -> StepResult {
        on_loopback(&Pace {
            pps: 20_000_000,
            dur: Duration::from_millis(20),
            drain: Duration::from_millis(100),
            ..gentle(SinkMode::Thread, max_burst)
        })
    }

    #[test]
    fn behind_schedule_a_bucket_skips_and_no_bucket_piles_up_debt() {
        // 20 ms at 20M pps: 400,000 packets due, far more than one core
        // sends in that time.
        let r = impossible(Some(8));
        assert!(r.skipped > 0, "{r:?}");
        assert!(r.max_lag > 8, "the debt before the cut is reported: {r:?}");
        assert!(r.sent > 0 && r.sent + r.skipped <= 400_000, "{r:?}");
        assert!(r.received <= r.sent, "{r:?}");
        let r = impossible(None);
        assert_eq!(r.skipped, 0, "{r:?}");
        assert!(r.max_lag > 64, "without a bucket the debt only grows: {r:?}");
    }

    #[test]
    fn a_bucketed_step_on_loopback_loses_nothing_and_keeps_the_rate() {
        let r = on_loopback(&gentle(SinkMode::Thread, Some(64)));
        assert_eq!(r.received, r.sent, "{r:?}");
        assert!(r.max_lag >= 1, "{r:?}");
        // At 4k pps a 20 us sleep owes about one packet: skipping needs a
        // stall of 16 ms, so almost every slot is sent.
        assert!(r.sent + r.skipped >= 1_900 && r.sent >= 1_500, "{r:?}");
    }
}
