//! One path's measurement: starting its relay, setting up its calls, and
//! the rate steps with their verdicts (clean, lossy, queueing, or limited
//! by the generator).

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use media_relay::bencode::Value;

use super::bpf::{kernel_fwd, BpfSink};
use super::lab::{pin_napi, port, udp, GenDrops, Lab};
use super::{Args, Path4, GEN_A, GEN_B, RELAY_A};
use crate::gen::{run_paced, Flow, StepResult};
use crate::ng::{reply_port, NgClient};
use crate::procfs::{cpu_ticks, CoreTicks};
use crate::spawn::{bin_beside, RelayProcess};

fn start_relay(lab: &Lab, path: Path4, a: &Args, dir: &Path) -> Result<RelayProcess, String> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.relay, "taskset", "-c", "0"]);
    match path {
        Path4::AfXdp | Path4::Socket => {
            let datapath = if path == Path4::AfXdp { "xdp" } else { "socket" };
            let cfg = dir.join(format!("relay-{datapath}.toml"));
            std::fs::write(
                &cfg,
                format!(
                    "[relay]\ninterfaces = [\"a/10.1.0.1\", \"b/10.2.0.1\"]\nlisten_ng = \"127.0.0.1:22222\"\n\
                     port_min = 30000\nport_max = 40000\nworkers = 1\ntimeout = 600\nmetrics = \"127.0.0.1:9101\"\n\
                     log_level = \"warn\"\nsocket_rcvbuf = 4194304\ndatapath = \"{datapath}\"\n\
                     xdp_interfaces = [\"ra\", \"rb\"]\nxdp_queues = 1\nworker_scheduling = \"{}\"\n{}",
                    a.scheduling,
                    if a.scheduling == "other" { String::new() } else { format!("worker_priority = {}\n", a.priority) }
                ),
            )
            .map_err(|e| e.to_string())?;
            let bin = bin_beside("media-relay", a.media_relay.as_deref());
            cmd.arg(bin).arg("--config").arg(cfg);
        }
        Path4::Rtpengine => {
            cmd.arg(&a.rtpengine).args([
                "--config-file=none",
                "--interface=a/10.1.0.1",
                "--interface=b/10.2.0.1",
                "--listen-ng=127.0.0.1:22222",
                "--port-min=30000",
                "--port-max=40000",
                "--num-threads=1",
                "--timeout=600",
                "--delete-delay=0",
                "--table=-1",
                "--foreground",
                "--log-stderr",
                "--log-level=3",
                &format!("--scheduling={}", a.scheduling),
            ]);
            if a.scheduling != "other" {
                cmd.arg(format!("--priority={}", a.priority));
            }
        }
        Path4::KernelXdp => return Err("no process".into()),
    }
    let log = std::fs::File::create(dir.join(format!("{}.log", path.key()))).map_err(|e| e.to_string())?;
    let child = cmd.stdout(Stdio::null()).stderr(log).spawn().map_err(|e| e.to_string())?;
    Ok(RelayProcess(child))
}

fn ng_cmd(cmd: &str, call: &str, to: Option<&str>, sdp: Option<(&str, u16)>) -> Value {
    let mut d = Value::dict();
    d.insert("command", Value::str(cmd)).insert("call-id", Value::str(call)).insert("from-tag", Value::str("a"));
    if let Some(t) = to {
        d.insert("to-tag", Value::str(t));
    }
    if let Some((addr, port)) = sdp {
        let body = format!(
            "v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        );
        d.insert("sdp", Value::str(&body))
            .insert("ICE", Value::str("remove"))
            .insert("flags", Value::List(vec![Value::str("trust-address")]));
        // The caller is on interface a, the callee on b. Only the offer says
        // so: rtpengine reads an answer's direction the other way round.
        if cmd == "offer" {
            d.insert("direction", Value::List(vec![Value::str("a"), Value::str("b")]));
        }
    }
    d
}

/// Sets up one call per flow on the relay in `lab.relay`; returns the flows
/// (sender socket index, relay address to send to).
fn calls(lab: &Lab, senders: &[UdpSocket], sinks: &[UdpSocket], n: usize) -> Result<Vec<Flow>, String> {
    lab.enter(&lab.relay)?;
    let mut ng = NgClient::new(SocketAddr::from(([127, 0, 0, 1], 22222))).map_err(|e| e.to_string())?;
    if !ng.wait_ready(Duration::from_secs(15)) {
        return Err("the relay did not answer ng ping".into());
    }
    let mut flows = Vec::with_capacity(n);
    for k in 0..n {
        let (s, t) = (k % senders.len(), k % sinks.len());
        let id = format!("xb-{k}");
        let offer = ng.cmd(&ng_cmd("offer", &id, None, Some(("10.1.0.2", port(&senders[s])))))?;
        reply_port(&offer).ok_or_else(|| format!("offer failed: {offer:?}"))?;
        let answer = ng.cmd(&ng_cmd("answer", &id, Some("b"), Some(("10.2.0.2", port(&sinks[t])))))?;
        let to_a = reply_port(&answer).ok_or_else(|| format!("answer failed: {answer:?}"))?;
        flows.push(Flow { sock: s, dest: SocketAddrV4::new(RELAY_A.into(), to_a) });
    }
    lab.enter(&lab.gen)?;
    Ok(flows)
}

/// What one run of one path measured.
#[derive(Clone, Debug, Default)]
pub(super) struct Figures {
    /// Relay process and core 0 CPU per packet at `--cpu-at`.
    pub(super) cpu_at: Option<(f64, f64)>,
    /// p50 and p99 latency (µs) and loss at `--latency-at` (the step that
    /// counted: a retried step's second attempt).
    pub(super) lat_at: Option<(f64, f64, f64)>,
    pub(super) max_pps: f64,
    pub(super) generator_limited: bool,
    pub(super) relay_cpu_us: f64,
    pub(super) system_cpu_us: f64,
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
}

/// What every path's measurement shares.
pub(super) struct Ctx<'a> {
    pub(super) a: &'a Args,
    pub(super) sink: Option<&'a BpfSink>,
}

fn measure(flows: &[Flow], socks: &[UdpSocket], pid: Option<u32>, cx: &Ctx, label: &str) -> Figures {
    let a = cx.a;
    let step = Duration::from_secs_f64(a.step);
    let drain = Duration::from_millis(300);
    // Warm-up: latches every leg, resolves the neighbours.
    let _ = run_paced(socks, flows, &a.pace(5_000, Duration::from_millis(800), drain));
    let mut fig = Figures::default();
    let mut rates: Vec<u64> = a.rates.clone();
    for extra in [a.cpu_at, a.latency_at] {
        if !rates.contains(&extra) {
            rates.push(extra);
        }
    }
    rates.sort_unstable();
    let mut retried = false;
    let mut i = 0;
    while i < rates.len() {
        let pps = rates[i];
        pin_napi(a.napi_priority);
        // The sink's histogram is read outside the timed window.
        let h0 = cx.sink.map(BpfSink::read);
        let (p0, [s0, c0], t0, e0) = (pid.map_or(0, cpu_ticks), CoreTicks::read(), Instant::now(), GenDrops::read());
        let mut r: StepResult = run_paced(socks, flows, &a.pace(pps, step, drain));
        let (p1, [s1, c1], e1, elapsed) = (pid.map_or(0, cpu_ticks), CoreTicks::read(), GenDrops::read(), t0.elapsed());
        if let (Some(sink), Some(h0)) = (cx.sink, h0) {
            r = BpfSink::step_result(&h0, &sink.read(), r, step);
        }
        let gd = e1.since(e0);
        let (core0_busy, core0_steal) = s1.shares(s0, elapsed.as_secs_f64());
        let (core1_busy, core1_steal) = c1.shares(c0, elapsed.as_secs_f64());
        let got = r.received.max(1) as f64;
        let relay_cpu = (p1 - p0) as f64 * 10_000.0 / got;
        let system_cpu = s1.busy.saturating_sub(s0.busy) as f64 * 10_000.0 / got;
        if pps == a.cpu_at && r.loss < 0.001 && r.p50_us <= a.max_queue_ms * 1000.0 {
            fig.cpu_at = Some((relay_cpu, system_cpu));
        }
        // A step that relayed nothing has no latency to report.
        if pps == a.latency_at && r.received > 0 {
            fig.lat_at = Some((r.p50_us, r.p99_us, r.loss));
        }
        eprintln!(
            "  {label:<22} {pps:>7} offered, {:>8.0} sent/s: {:>8.0} relayed/s, loss {:.4}%, p50 {} us, p99 {} us, \
             relay cpu {relay_cpu:.2} us/pkt, core 0 {system_cpu:.2} us/pkt, core 0 {:.0}% busy, core 1 {:.0}%, stolen {:.0}%/{:.0}%, dropped by sinks {}, at ra's ring {}, at gb {}, generator's largest debt {}, skipped {}",
            r.sent_pps,
            r.received_pps,
            r.loss * 100.0,
            r.p50_us,
            r.p99_us,
            core0_busy * 100.0,
            core1_busy * 100.0,
            core0_steal * 100.0,
            core1_steal * 100.0,
            gd.sinks,
            gd.ra_ring,
            gd.gb_rx,
            r.max_lag,
            r.skipped,
        );
        let queueing = r.p50_us > a.max_queue_ms * 1000.0;
        if queueing {
            eprintln!("  {label:<22} {pps:>7}: median latency over {} ms, counted as over capacity", a.max_queue_ms);
        }
        if r.loss >= 0.001 || queueing {
            // One noisy step (a shared machine) is repeated once.
            if retried {
                // The harness was the limit if (socket sinks, on the
                // generator's core) most of the loss was the sinks' sockets
                // overflowing. Otherwise the relay side lost what was sent,
                // even if the generator fell short of the offered rate.
                let lost = r.sent.saturating_sub(r.received);
                if lost > 0 && gd.sinks * 2 >= lost {
                    fig.generator_limited = true;
                }
                break;
            }
            retried = true;
            continue;
        }
        fig = Figures {
            cpu_at: fig.cpu_at,
            lat_at: fig.lat_at,
            max_pps: r.received_pps,
            generator_limited: false,
            relay_cpu_us: relay_cpu,
            system_cpu_us: system_cpu,
            p50_us: r.p50_us,
            p99_us: r.p99_us,
        };
        if r.sent_pps < 0.95 * pps as f64 {
            // The generator fell behind (skipping what it owed after
            // stalls): a clean step, but short of the offered rate. Once
            // more, as a noisy step would be; then the harness is the limit.
            if !retried {
                retried = true;
                continue;
            }
            fig.generator_limited = true;
            break;
        }
        retried = false;
        i += 1;
    }
    fig
}

/// Measures `path` once: its relay (or the in-kernel forwarder), its
/// calls, its steps.
pub(super) fn run_path(lab: &Lab, path: Path4, cx: &Ctx, dir: &Path) -> Result<Figures, String> {
    let a = cx.a;
    lab.enter(&lab.gen)?;
    let senders: Vec<UdpSocket> = (0..4).map(|_| udp(GEN_A)).collect::<Result<_, _>>()?;
    let sinks: Vec<UdpSocket> = (0..4).map(|_| udp(GEN_B)).collect::<Result<_, _>>()?;
    let mut socks = senders;
    let sink_start = socks.len();
    socks.extend(sinks);
    let (sender_socks, sink_socks) = socks.split_at(sink_start);
    let fig = if path == Path4::KernelXdp {
        let (progs, flows) = kernel_fwd(lab, dir, sink_socks, a.flows, cx.sink.is_some())?;
        let f = measure(&flows, &socks, None, cx, path.label());
        drop(progs);
        f
    } else {
        if path == Path4::Rtpengine && !a.rtpengine.exists() {
            return Err(format!("{} not found", a.rtpengine.display()));
        }
        let relay = start_relay(lab, path, a, dir)?;
        let flows = calls(lab, sender_socks, sink_socks, a.flows)?;
        let f = measure(&flows, &socks, Some(relay.pid()), cx, path.label());
        drop(relay);
        f
    };
    // Let the relay's ports and XDP attachments go before the next path.
    std::thread::sleep(Duration::from_millis(300));
    Ok(fig)
}
