//! `xdp-bench`: four ways of relaying the same RTP in one run, in a network
//! namespace lab this program builds and removes:
//!
//! ```text
//! netns gen:   ga 10.1.0.2 (senders)          gb 10.2.0.2 (sinks)
//!                 | veth                          | veth
//! netns relay: ra 10.1.0.1 ----- relay ----- rb 10.2.0.1
//! ```
//!
//! 1. `media-relay` on the `AF_XDP` datapath (one worker, core 0),
//! 2. `media-relay` on the socket datapath (one worker, core 0),
//! 3. rtpengine in userspace (`--table=-1`, one thread, core 0),
//! 4. an in-kernel XDP forwarder (`bench/bpf/fwd.bpf.c`: rewrite and
//!    redirect, no latching, no statistics), the floor.
//!
//! The generator runs on core 1 in `gen`: 100 one-way flows of 214-byte
//! frames (172-byte RTP), rates rising in steps; the highest step with
//! under 0.1 % loss is the path's figure. It sleeps whenever it is ahead of
//! schedule, so packets leave in small bursts, and after a stall of its
//! core it sends at most `--max-burst` (64) of what it owes at once and
//! skips the rest (counted). The sink (`--sink tc`, the
//! default) is a BPF program at `gb`'s tc ingress (`bench/bpf/sink.bpf.c`)
//! that counts each packet's latency and drops it, so no UDP receive path
//! runs for it:
//! a veth delivers in the sender's context, which would put that work on
//! the relay core. The relay side's kernel work runs on core 0: `ra`
//! receives through threaded NAPI pinned there (GRO on), so the XDP
//! programs, the kernel's receive path of the socket relays and the whole
//! in-kernel forwarder count against the relay core, not the generator's.
//! CPU per packet is given two ways: the relay process's own CPU time
//! (utime + stime: its syscalls, including the copy-mode AF_XDP transmit;
//! softirq work they trigger is charged to the core, not the process), and
//! the busy time of core 0 (all of the relay side, and anything else that
//! ran there). Runs repeat; medians are printed. Needs root, `ip`,
//! `ethtool`, `taskset`, clang (for the baseline and the BPF sink; without
//! it, `--sink thread` and no `kernel` path) and rtpengine (apt
//! `rtpengine-daemon`; without it, its column is empty).

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench::gen::{run_paced, Flow, Pace, SinkMode, StepResult};
use bench::ng::{reply_port, NgClient};
use clap::Parser;
use media_relay::bencode::Value;

#[derive(Parser, Debug)]
#[command(about = "AF_XDP vs socket datapath vs rtpengine vs in-kernel XDP, in a namespace lab")]
struct Args {
    /// The media-relay binary (default: next to this one).
    #[arg(long)]
    media_relay: Option<PathBuf>,
    /// rtpengine binary.
    #[arg(long, default_value = "/usr/bin/rtpengine")]
    rtpengine: PathBuf,
    /// Repetitions of the whole comparison (medians are printed).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds per rate step.
    #[arg(long, default_value_t = 3.0)]
    step: f64,
    /// Flows (one call each, one direction).
    #[arg(long, default_value_t = 100)]
    flows: usize,
    /// Offered rates, packets per second.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "50000,75000,100000,125000,150000,175000,200000,225000,250000,275000,300000,350000,400000,500000"
    )]
    rates: Vec<u64>,
    /// The rate at which CPU per packet is also compared (every path should
    /// pass it; CPU per packet falls as the rate rises).
    #[arg(long, default_value_t = 50_000)]
    cpu_at: u64,
    /// The rate at which latency is compared, each path against the
    /// in-kernel forwarder's (the harness's floor).
    #[arg(long, default_value_t = 100_000)]
    latency_at: u64,
    /// A step whose median one-way latency exceeds this many milliseconds
    /// fails like a lossy one: the path is relaying slower than packets
    /// arrive and its socket buffers are filling, which a longer step would
    /// turn into loss.
    #[arg(long, default_value_t = 20.0)]
    max_queue_ms: f64,
    /// Scheduling policy of the relays' media threads (`other`, or `fifo`
    /// at `--priority`): media-relay's
    /// `relay.worker_scheduling`, rtpengine's `--scheduling`. The default
    /// is `other`: in this lab `fifo` starves the kernel's deferred receive
    /// work on the relay core, which costs the socket datapath packets.
    #[arg(long, default_value = "other")]
    scheduling: String,
    /// Real-time priority of the media threads with `--scheduling fifo`.
    /// The NAPI thread that feeds them runs at 50: below it, every arrival
    /// preempts the worker; above it, NAPI runs only while the worker
    /// sleeps, so it delivers in batches.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u8).range(1..=99))]
    priority: u8,
    /// `SCHED_FIFO` priority of `ra`'s NAPI thread, as an interrupt would
    /// preempt the relay; 0 leaves it at the normal policy, as the kernel
    /// starts threaded NAPI.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=99))]
    napi_priority: u8,
    /// Where the sink receives. `tc` (the default): a BPF program at the
    /// tc ingress of the sinks' veth `gb` (`bpf/sink.bpf.c`) reads each
    /// packet's send time, counts its latency and drops it, so no IP or UDP
    /// receive path or socket runs for the sink; on a real network that
    /// work is another host's, but a veth delivers in the sender's context,
    /// the relay's core. `xdp`: the same program as `gb`'s XDP program,
    /// which makes the veth copy every sk_buff it receives into a page with
    /// XDP headroom first (only the in-kernel forwarder sends XDP frames).
    /// `thread`: its own thread on core 1, which sleeps in `poll`, so
    /// deliveries wake it (the wakeup is sent from the relay's core) and its
    /// wakeup delay is part of every latency figure. `inline`: the
    /// generator's thread receives whenever it is ahead of schedule and
    /// never sleeps while sending, so nothing is woken; one thread then
    /// sends and receives, which caps the harness near 200k pps.
    #[arg(long, default_value = "tc", value_parser = ["inline", "thread", "xdp", "tc"])]
    sink: String,
    /// Interrupt moderation on the relay's receiving veth `ra`, in
    /// microseconds (`gro_flush_timeout`, with `napi_defer_hard_irqs` 2).
    /// 0, the default, leaves it off: every packet that finds NAPI idle
    /// wakes the NAPI thread.
    #[arg(long, default_value_t = 0)]
    coalesce_us: u64,
    /// Hold a CPU latency limit (`/dev/cpu_dma_latency`, in microseconds)
    /// for the whole run, every path alike, like tuned's latency profiles:
    /// idle cores then poll or take only shallow idle states
    /// instead of halting, so a packet does not wait for its core to wake.
    /// In a VM an idle vCPU that halts is descheduled by the host, and
    /// waking it can take hundreds of microseconds. Not set by default.
    #[arg(long)]
    cpu_latency_us: Option<u32>,
    /// The most packets the generator may owe its schedule (a token
    /// bucket's depth). After a stall of its core it sends that many at
    /// once and skips the rest of what it owes; skipped packets are
    /// counted and lower the sent rate (a step that sends under 95 % of
    /// the offered rate is repeated once, then marks the harness as the
    /// limit). The generator's core stalls for milliseconds on a shared VM;
    /// without a bucket (`0`) it then sends thousands of packets at once,
    /// faster than any core relays them, into `ra`'s 256-packet veth ring.
    /// 64, the default, is one batch of the generator's loop.
    #[arg(long, default_value_t = 64)]
    max_burst: u64,
    /// Keep the scratch directory (configs, relay logs).
    #[arg(long)]
    keep: bool,
    /// Paths to measure: afxdp, socket, rtpengine, kernel.
    #[arg(long, value_delimiter = ',', default_value = "afxdp,socket,rtpengine,kernel")]
    paths: Vec<String>,
}

impl Args {
    fn pace(&self, pps: u64, dur: Duration, drain: Duration) -> Pace {
        Pace {
            pps,
            dur,
            payload: PAYLOAD,
            drain,
            sink: self.sink_mode(),
            max_burst: (self.max_burst > 0).then_some(self.max_burst),
        }
    }

    fn sink_mode(&self) -> SinkMode {
        match self.sink.as_str() {
            "thread" => SinkMode::Thread,
            "xdp" | "tc" => SinkMode::Elsewhere,
            _ => SinkMode::Inline,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path4 {
    AfXdp,
    Socket,
    Rtpengine,
    KernelXdp,
}

impl Path4 {
    const ALL: [Self; 4] = [Self::AfXdp, Self::Socket, Self::Rtpengine, Self::KernelXdp];

    fn key(self) -> &'static str {
        match self {
            Self::AfXdp => "afxdp",
            Self::Socket => "socket",
            Self::Rtpengine => "rtpengine",
            Self::KernelXdp => "kernel",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::AfXdp => "media-relay AF_XDP",
            Self::Socket => "media-relay socket",
            Self::Rtpengine => "rtpengine --table=-1",
            Self::KernelXdp => "in-kernel XDP fwd",
        }
    }
}

const GEN_A: [u8; 4] = [10, 1, 0, 2];
const GEN_B: [u8; 4] = [10, 2, 0, 2];
const RELAY_A: [u8; 4] = [10, 1, 0, 1];
const RELAY_B: [u8; 4] = [10, 2, 0, 1];
/// RTP payload: with its 12-byte header, 172 bytes of UDP payload and
/// 214-byte Ethernet frames.
const PAYLOAD: usize = 160;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// `ethtool -K DEV FEATURE on|off` inside namespace `ns`; whether it worked.
fn ethtool_k(ns: &str, dev: &str, feature: &str, on: bool) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ethtool", "-K", dev, feature, if on { "on" } else { "off" }])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The two namespaces, removed on drop.
struct Lab {
    gen: String,
    relay: String,
}

impl Lab {
    fn new(coalesce_us: u64) -> Result<Self, String> {
        let id = std::process::id();
        let lab = Self { gen: format!("xbench-gen-{id}"), relay: format!("xbench-relay-{id}") };
        ip(&["netns", "add", &lab.gen])?;
        ip(&["netns", "add", &lab.relay])?;
        let (g, r) = (lab.gen.as_str(), lab.relay.as_str());
        ip(&["-n", r, "link", "add", "ra", "type", "veth", "peer", "name", "ga", "netns", g])?;
        ip(&["-n", r, "link", "add", "rb", "type", "veth", "peer", "name", "gb", "netns", g])?;
        ip(&["-n", r, "addr", "add", "10.1.0.1/24", "dev", "ra"])?;
        ip(&["-n", r, "addr", "add", "10.2.0.1/24", "dev", "rb"])?;
        ip(&["-n", g, "addr", "add", "10.1.0.2/24", "dev", "ga"])?;
        ip(&["-n", g, "addr", "add", "10.2.0.2/24", "dev", "gb"])?;
        for (ns, dev) in [(r, "ra"), (r, "rb"), (r, "lo"), (g, "ga"), (g, "gb"), (g, "lo")] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        // Full UDP checksums from the generator, as from a NIC (a veth would
        // otherwise hand over CHECKSUM_PARTIAL frames).
        for dev in ["ga", "gb"] {
            if !ethtool_k(g, dev, "tx", false) {
                return Err(format!("ethtool -K {dev} tx off failed (is ethtool installed?)"));
            }
        }
        // The relay core carries the relay side's kernel work for every path:
        // with GRO on, `ra` receives through NAPI, and threaded NAPI puts
        // that in a kthread pinned to core 0 (see `pin_napi`) instead of
        // the generator's core, where a veth would otherwise run it.
        let ok = ethtool_k(r, "ra", "gro", true)
            && Command::new("ip")
                .args(["netns", "exec", r, "sh", "-c", "echo 1 > /sys/class/net/ra/threaded"])
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            return Err("threaded NAPI on ra (ethtool -K ra gro on; /sys/class/net/ra/threaded) failed".into());
        }
        if coalesce_us > 0 {
            // Interrupt moderation, as a NIC does it: after a poll that found
            // packets, `ra`'s NAPI is not re-armed by each new packet but
            // polled again when the timer fires. Without it, every packet
            // that finds NAPI idle wakes the NAPI thread.
            let set = format!(
                "echo {} > /sys/class/net/ra/gro_flush_timeout && echo 2 > /sys/class/net/ra/napi_defer_hard_irqs",
                coalesce_us * 1000
            );
            let ok =
                Command::new("ip").args(["netns", "exec", r, "sh", "-c", &set]).status().is_ok_and(|s| s.success());
            if !ok {
                return Err("interrupt moderation on ra (/sys/class/net/ra/gro_flush_timeout) failed".into());
            }
        }
        Ok(lab)
    }

    fn enter(&self, ns: &str) -> Result<(), String> {
        bench::enter_netns(&format!("/run/netns/{ns}")).map_err(|e| format!("entering {ns}: {e}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.gen]);
        let _ = ip(&["netns", "del", &self.relay]);
    }
}

fn udp(addr: [u8; 4]) -> Result<UdpSocket, String> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).map_err(|e| e.to_string())?;
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.bind(&SocketAddr::from((addr, 0)).into()).map_err(|e| e.to_string())?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(s.into())
}

fn port(s: &UdpSocket) -> u16 {
    s.local_addr().map(|a| a.port()).unwrap_or(0)
}

/// A relay process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_relay(lab: &Lab, path: Path4, a: &Args, dir: &Path) -> Result<Proc, String> {
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
            let bin = a.media_relay.clone().unwrap_or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|p| p.parent().map(|d| d.join("media-relay")))
                    .unwrap_or_else(|| PathBuf::from("media-relay"))
            });
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
    Ok(Proc(child))
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
    let mut ping = Value::dict();
    ping.insert("command", Value::str("ping"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while ng.cmd(&ping).is_err() {
        if Instant::now() > deadline {
            return Err("the relay did not answer ng ping".into());
        }
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

/// Compiles `bench/bpf/{name}.bpf.c` into `dir`.
fn compile_bpf(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf").join(format!("{name}.bpf.c"));
    let obj = dir.join(format!("{name}.bpf.o"));
    let mut clang = Command::new("clang");
    clang.args(["-O2", "-g", "-Wall", "-target", "bpf"]);
    for inc in ["/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu"] {
        if Path::new(inc).exists() {
            clang.arg(format!("-I{inc}"));
        }
    }
    let out = clang.arg("-c").arg(&src).arg("-o").arg(&obj).output().map_err(|e| format!("clang: {e}"))?;
    if !out.status.success() {
        return Err(format!("clang: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(obj)
}

/// Loads `prog` from `obj` and attaches it to `dev` in `ns` (native mode).
fn attach_xdp(lab: &Lab, obj: &Path, prog: &str, ns: &str, dev: &str) -> Result<aya::Ebpf, String> {
    lab.enter(ns)?;
    let mut ebpf = aya::Ebpf::load_file(obj).map_err(|e| format!("loading {}: {e}", obj.display()))?;
    let p: &mut aya::programs::Xdp =
        ebpf.program_mut(prog).ok_or("no program")?.try_into().map_err(|e| format!("{e}"))?;
    p.load().map_err(|e| format!("loading {prog}: {e}"))?;
    p.attach(dev, aya::programs::XdpMode::Driver).map_err(|e| format!("attaching {prog} to {dev}: {e}"))?;
    Ok(ebpf)
}

/// The BPF sink on `gb` (XDP or tc ingress): a latency histogram per CPU (see `bpf/sink.bpf.c`
/// for the buckets), read between steps.
struct BpfSink {
    ebpf: aya::Ebpf,
}

/// `sink.bpf.c`'s linear range, in microseconds.
const SINK_LINEAR: u32 = 16_384;

impl BpfSink {
    /// `at_tc`: at `gb`'s tc ingress (with GRO on, so `gb` still runs
    /// NAPI and takes the in-kernel forwarder's redirected frames);
    /// otherwise as its XDP program.
    fn attach(lab: &Lab, dir: &Path, at_tc: bool) -> Result<Self, String> {
        let obj = compile_bpf(dir, "sink")?;
        if !at_tc {
            let ebpf = attach_xdp(lab, &obj, "sink_xdp", &lab.gen, "gb")?;
            lab.enter(&lab.gen)?;
            return Ok(Self { ebpf });
        }
        if !ethtool_k(&lab.gen, "gb", "gro", true) {
            return Err("ethtool -K gb gro on failed".into());
        }
        lab.enter(&lab.gen)?;
        // Kernels before 6.6 attach tc programs through a clsact qdisc
        // (newer ones use tcx and need none); it may exist already.
        let _ = aya::programs::tc::qdisc_add_clsact("gb");
        let mut ebpf = aya::Ebpf::load_file(&obj).map_err(|e| format!("loading {}: {e}", obj.display()))?;
        let p: &mut aya::programs::SchedClassifier =
            ebpf.program_mut("sink_tc").ok_or("no program sink_tc")?.try_into().map_err(|e| format!("{e}"))?;
        p.load().map_err(|e| format!("loading sink_tc: {e}"))?;
        p.attach("gb", aya::programs::TcAttachType::Ingress).map_err(|e| format!("attaching sink_tc to gb: {e}"))?;
        Ok(Self { ebpf })
    }

    /// The histogram summed over CPUs.
    fn read(&self) -> Vec<u64> {
        let hist = self
            .ebpf
            .map("sink_hist")
            .ok_or_else(|| "no sink_hist map".to_owned())
            .and_then(|m| aya::maps::PerCpuArray::<_, u64>::try_from(m).map_err(|e| e.to_string()));
        match hist {
            Ok(hist) => (0..hist.len()).map(|i| hist.get(&i, 0).map_or(0, |v| v.iter().sum())).collect(),
            Err(e) => {
                eprintln!("xdp-bench: reading the sink's histogram: {e}");
                Vec::new()
            }
        }
    }

    /// The lower bound of bucket `i`, in microseconds (above 16 ms a
    /// quantile reads up to 2x low).
    fn bucket_us(i: usize) -> f64 {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        if i < SINK_LINEAR {
            f64::from(i.max(1))
        } else {
            f64::from(SINK_LINEAR) * 2f64.powi(i32::try_from(i - SINK_LINEAR).unwrap_or(i32::MAX))
        }
    }

    /// Replaces the step's receive figures with what the sink counted
    /// between the two readings.
    fn step_result(before: &[u64], after: &[u64], mut r: StepResult, step: Duration) -> StepResult {
        let delta: Vec<u64> = after.iter().zip(before).map(|(a, b)| a.saturating_sub(*b)).collect();
        let received: u64 = delta.iter().sum();
        let quantile = |q: f64| {
            let want = (received as f64 * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in delta.iter().enumerate() {
                seen += n;
                if seen >= want {
                    return Self::bucket_us(i);
                }
            }
            0.0
        };
        r.received = received;
        r.received_pps = received as f64 / step.as_secs_f64();
        r.loss = if r.sent == 0 { 0.0 } else { r.sent.saturating_sub(received) as f64 / r.sent as f64 };
        (r.p50_us, r.p99_us) = if received == 0 { (0.0, 0.0) } else { (quantile(0.5), quantile(0.99)) };
        r
    }
}

/// The in-kernel forwarder: compiles and attaches `fwd.bpf.c` on `ra`, the
/// do-nothing program on `gb` unless a BPF sink is there, and installs one
/// entry per flow.
fn kernel_fwd(
    lab: &Lab,
    dir: &Path,
    sinks: &[UdpSocket],
    n: usize,
    bpf_sink: bool,
) -> Result<(Vec<aya::Ebpf>, Vec<Flow>), String> {
    let obj = compile_bpf(dir, "fwd")?;
    // A veth only accepts redirected frames when its peer runs NAPI: with
    // an XDP program, or with GRO on (the tc sink turns it on).
    let pass = if bpf_sink { None } else { Some(attach_xdp(lab, &obj, "pass", &lab.gen, "gb")?) };
    let mut fwd = attach_xdp(lab, &obj, "fwd_xdp", &lab.relay, "ra")?;
    let snap = media_relay::afxdp::neigh::read_snapshot().map_err(|e| e.to_string())?;
    let rb = snap.link_by_name("rb").ok_or("no rb")?.clone();
    lab.enter(&lab.gen)?;
    let snap_gen = media_relay::afxdp::neigh::read_snapshot().map_err(|e| e.to_string())?;
    let gb_mac = snap_gen.link_by_name("gb").ok_or("no gb")?.mac;
    let mut map: aya::maps::HashMap<_, u32, [u8; 28]> =
        aya::maps::HashMap::try_from(fwd.map_mut("fwd").ok_or("no fwd map")?).map_err(|e| e.to_string())?;
    let mut flows = Vec::with_capacity(n);
    for k in 0..n {
        let relay_port = 30000 + 2 * u16::try_from(k).unwrap_or(0);
        let sink = port(&sinks[k % sinks.len()]);
        let mut v = [0u8; 28];
        v[0..4].copy_from_slice(&rb.index.to_ne_bytes());
        v[4..10].copy_from_slice(&rb.mac);
        v[10..16].copy_from_slice(&gb_mac);
        v[16..20].copy_from_slice(&RELAY_B);
        v[20..24].copy_from_slice(&GEN_B);
        v[24..26].copy_from_slice(&(relay_port + 1).to_be_bytes());
        v[26..28].copy_from_slice(&sink.to_be_bytes());
        map.insert(u32::from(relay_port), v, 0).map_err(|e| e.to_string())?;
        flows.push(Flow { sock: k % 4, dest: SocketAddrV4::new(RELAY_A.into(), relay_port) });
    }
    Ok((std::iter::once(fwd).chain(pass).collect(), flows))
}

/// Pins the NAPI kthreads of `ra` (re-created when an XDP program is
/// attached) to core 0, the relay's core, at `SCHED_FIFO` `priority` (0:
/// the normal policy).
fn pin_napi(priority: u8) {
    let Ok(dir) = std::fs::read_dir("/proc") else { return };
    for e in dir.filter_map(Result::ok) {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim().starts_with("napi/ra-") {
            let pid = e.file_name().to_string_lossy().into_owned();
            let _ = Command::new("taskset").args(["-pc", "0", &pid]).stdout(Stdio::null()).status();
            // Like a NIC interrupt on the relay core: it preempts the worker.
            let policy = if priority == 0 { "-o" } else { "-f" };
            let _ =
                Command::new("chrt").args([policy, "-p", &priority.to_string(), &pid]).stdout(Stdio::null()).status();
        }
    }
}

/// Packets the generator's namespace dropped: the sinks' sockets
/// overflowed (`RcvbufErrors`: the harness's core fell behind), or `ga`
/// found `ra`'s receive ring full (its transmit drops: the relay core's
/// NAPI fell behind, as a NIC's ring overflows).
#[derive(Clone, Copy, Debug, Default)]
struct GenDrops {
    sinks: u64,
    ra_ring: u64,
    /// `gb`'s receive drops (with a BPF sink: its ring or backlog was full).
    gb_rx: u64,
}

impl GenDrops {
    /// Reads the counters of the calling thread's namespace.
    fn read() -> Self {
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default();
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
        let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
        let sinks = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "RcvbufErrors")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        // `ga: rx bytes packets errs drop fifo frame compressed multicast
        // tx bytes packets errs drop ...`: the transmit drops are the 12th.
        let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap_or_default();
        let field = |ifname: &str, i: usize| -> u64 {
            dev.lines()
                .find_map(|l| l.trim_start().strip_prefix(ifname))
                .and_then(|r| r.split_whitespace().nth(i))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Self { sinks, ra_ring: field("ga:", 11), gb_rx: field("gb:", 3) }
    }

    fn since(self, before: Self) -> Self {
        Self {
            sinks: self.sinks.saturating_sub(before.sinks),
            ra_ring: self.ra_ring.saturating_sub(before.ra_ring),
            gb_rx: self.gb_rx.saturating_sub(before.gb_rx),
        }
    }
}

/// Ticks of a core: busy (user, nice, system, irq, softirq) and stolen
/// (the hypervisor ran something else while this vCPU wanted to run).
#[derive(Clone, Copy, Debug, Default)]
struct CoreTicks {
    busy: u64,
    steal: u64,
}

impl CoreTicks {
    /// Cores 0 and 1, from one read of `/proc/stat`.
    fn read() -> [Self; 2] {
        let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let core = |tag: &str| s.lines().find(|l| l.starts_with(tag)).map_or_else(Self::default, Self::parse);
        [core("cpu0 "), core("cpu1 ")]
    }

    /// `cpuN user nice system idle iowait irq softirq steal guest guest_nice`
    fn parse(line: &str) -> Self {
        let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        let f = |i: usize| v.get(i).copied().unwrap_or(0);
        Self { busy: f(0) + f(1) + f(2) + f(5) + f(6), steal: f(7) }
    }

    /// Busy and stolen shares of `secs` since `before`.
    fn shares(self, before: Self, secs: f64) -> (f64, f64) {
        // Ticks are 10 ms (USER_HZ 100).
        let share = |t: u64| t as f64 / (secs * 100.0);
        (share(self.busy.saturating_sub(before.busy)), share(self.steal.saturating_sub(before.steal)))
    }
}

fn proc_ticks(pid: u32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    let rest = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
}

#[derive(Clone, Debug, Default)]
struct Figures {
    /// Relay process and core 0 CPU per packet at `--cpu-at`.
    cpu_at: Option<(f64, f64)>,
    /// p50 and p99 latency (µs) and loss at `--latency-at` (the step that
    /// counted: a retried step's second attempt).
    lat_at: Option<(f64, f64, f64)>,
    max_pps: f64,
    generator_limited: bool,
    relay_cpu_us: f64,
    system_cpu_us: f64,
    p50_us: f64,
    p99_us: f64,
}

struct Ctx<'a> {
    a: &'a Args,
    sink: Option<&'a BpfSink>,
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
        let (p0, [s0, c0], t0, e0) = (pid.map_or(0, proc_ticks), CoreTicks::read(), Instant::now(), GenDrops::read());
        let mut r: StepResult = run_paced(socks, flows, &a.pace(pps, step, drain));
        let (p1, [s1, c1], e1, elapsed) =
            (pid.map_or(0, proc_ticks), CoreTicks::read(), GenDrops::read(), t0.elapsed());
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

fn run_path(lab: &Lab, path: Path4, cx: &Ctx, dir: &Path) -> Result<Figures, String> {
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
        let f = measure(&flows, &socks, Some(relay.0.id()), cx, path.label());
        drop(relay);
        f
    };
    // Let the relay's ports and XDP attachments go before the next path.
    std::thread::sleep(Duration::from_millis(300));
    Ok(fig)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    if let Some(c) = core_affinity::get_core_ids().and_then(|c| c.get(1).copied()) {
        core_affinity::set_for_current(c);
    }
    let lab = match Lab::new(a.coalesce_us) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("xdp-bench: cannot build the namespace lab (needs root, ip, ethtool): {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // The limit holds while the file is open; the kernel drops it when the
    // file is closed, at the latest when the process exits.
    let _cpu_latency = match a.cpu_latency_us.map(media_relay::sys::hold_cpu_latency).transpose() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("xdp-bench: --cpu-latency-us: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let dir = std::env::temp_dir().join(format!("xdp-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    // The BPF sinks are the ones that receive outside the generator.
    let sink = if a.sink_mode() == SinkMode::Elsewhere {
        match BpfSink::attach(&lab, &dir, a.sink == "tc") {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("xdp-bench: cannot attach the sink program to gb (needs clang; or use --sink thread): {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let cx = Ctx { a: &a, sink: sink.as_ref() };
    let mut results: Vec<Vec<Figures>> = vec![Vec::new(); 4];
    for run in 0..a.runs {
        eprintln!("run {}/{}", run + 1, a.runs);
        for (i, path) in Path4::ALL.iter().enumerate() {
            if !a.paths.iter().any(|p| p == path.key()) {
                continue;
            }
            match run_path(&lab, *path, &cx, &dir) {
                Ok(f) => results[i].push(f),
                Err(e) => eprintln!("  {}: {e}", path.label()),
            }
        }
    }
    drop(sink);
    drop(lab);
    if a.keep {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }

    println!(
        "\n{} runs, {} flows, 214-byte frames, {}{}, relay on core 0 (media threads: {}; ra's NAPI thread: {}), {} \
         (medians)\n",
        a.runs,
        a.flows,
        if a.max_burst == 0 { "no burst limit".to_owned() } else { format!("bursts up to {}", a.max_burst) },
        a.cpu_latency_us.map_or(String::new(), |us| format!(", CPU latency limit {us} us")),
        if a.scheduling == "other" { "SCHED_OTHER".to_owned() } else { format!("{} {}", a.scheduling, a.priority) },
        if a.napi_priority == 0 { "SCHED_OTHER".to_owned() } else { format!("fifo {}", a.napi_priority) },
        match a.sink.as_str() {
            "xdp" => "generator on core 1, sink in XDP on gb",
            "tc" => "generator on core 1, sink at tc ingress on gb",
            "inline" => "generator and sink in one thread on core 1",
            _ => "generator and sink threads on core 1",
        }
    );
    println!(
        "{:<22} {:>14} {:>12} {:>12} {:>9} {:>9} {:>18} {:>18}",
        "path",
        "max pps <0.1%",
        "relay us/pkt",
        "core0 us/pkt",
        "p50 us",
        "p99 us",
        format!("relay us/pkt@{}k", a.cpu_at / 1000),
        format!("core0 us/pkt@{}k", a.cpu_at / 1000)
    );
    let med = |i: usize, f: fn(&Figures) -> f64| median(results[i].iter().map(f).collect());
    for (i, path) in Path4::ALL.iter().enumerate() {
        if results[i].is_empty() {
            println!("{:<22} {:>16}", path.label(), "n/a");
            continue;
        }
        let limited = results[i].iter().filter(|f| f.generator_limited).count() * 2 > results[i].len();
        let pps = med(i, |f| f.max_pps);
        let relay_cpu =
            if *path == Path4::KernelXdp { "-".to_owned() } else { format!("{:.2}", med(i, |f| f.relay_cpu_us)) };
        let at_relay = med(i, |f| f.cpu_at.map_or(f64::NAN, |c| c.0));
        let at_relay = if *path == Path4::KernelXdp { "-".to_owned() } else { format!("{at_relay:.2}") };
        println!(
            "{:<22} {:>14} {:>12} {:>12.2} {:>9.0} {:>9.0} {:>18} {:>18.2}",
            path.label(),
            format!("{}{:.0}k", if limited { ">=" } else { "" }, pps / 1000.0),
            relay_cpu,
            med(i, |f| f.system_cpu_us),
            med(i, |f| f.p50_us),
            med(i, |f| f.p99_us),
            at_relay,
            med(i, |f| f.cpu_at.map_or(f64::NAN, |c| c.1)),
        );
    }
    // The spread: on a shared machine one run's maximum can differ from the
    // next by a whole rate step.
    println!("\nmax pps <0.1% in each run:");
    for (i, path) in Path4::ALL.iter().enumerate() {
        if results[i].is_empty() {
            continue;
        }
        let runs: Vec<String> = results[i]
            .iter()
            .map(|f| format!("{}{:.0}k", if f.generator_limited { ">=" } else { "" }, f.max_pps / 1000.0))
            .collect();
        println!("  {:<22} {}", path.label(), runs.join("  "));
    }
    if results[1].is_empty() {
        println!("\n(no ratios: they are against the socket datapath, which --paths left out)");
    } else {
        let base = med(1, |f| f.max_pps);
        let base_cpu = med(1, |f| f.cpu_at.map_or(f64::NAN, |c| c.0));
        let base_core = med(1, |f| f.cpu_at.map_or(f64::NAN, |c| c.1));
        println!(
            "\nratios against the socket datapath (max pps; relay process and core 0 CPU per packet at {}k):",
            a.cpu_at / 1000
        );
        for (i, path) in Path4::ALL.iter().enumerate() {
            if results[i].is_empty() || i == 1 {
                continue;
            }
            let cpu = if *path == Path4::KernelXdp {
                "-".to_owned()
            } else {
                format!("{:.2}x", med(i, |f| f.cpu_at.map_or(f64::NAN, |c| c.0)) / base_cpu)
            };
            let core = med(i, |f| f.cpu_at.map_or(f64::NAN, |c| c.1)) / base_core;
            println!(
                "  {:<22} pps {:.2}x, relay CPU {cpu}, core 0 CPU {core:.2}x",
                path.label(),
                med(i, |f| f.max_pps) / base
            );
        }
    }
    // Latency at one rate, against the floor: the in-kernel forwarder
    // crosses the same veths and generator, so what a path adds is its
    // figure minus the floor's.
    let lat = |i: usize, k: fn(&(f64, f64, f64)) -> f64| {
        median(results[i].iter().map(|f| f.lat_at.as_ref().map_or(f64::NAN, k)).collect())
    };
    let floor = (lat(3, |l| l.0), lat(3, |l| l.1));
    println!("\nlatency at {}k pps (medians; above the in-kernel floor):", a.latency_at / 1000);
    for (i, path) in Path4::ALL.iter().enumerate() {
        if results[i].is_empty() {
            continue;
        }
        let (p50, p99, loss) = (lat(i, |l| l.0), lat(i, |l| l.1), lat(i, |l| l.2));
        let each: Vec<String> =
            results[i].iter().map(|f| f.lat_at.map_or("-".to_owned(), |l| format!("{:.0}", l.1))).collect();
        if p99.is_nan() {
            println!("  {:<22} n/a (nothing relayed at this rate)", path.label());
            continue;
        }
        let above = if *path == Path4::KernelXdp || floor.1.is_nan() {
            String::new()
        } else if loss >= 0.001 {
            // Past its maximum the figure is queueing, not the path's latency.
            ", over its maximum at this rate".to_owned()
        } else {
            format!(", above the floor p50 {:+.0} us, p99 {:+.0} us", p50 - floor.0, p99 - floor.1)
        };
        println!(
            "  {:<22} p50 {p50:.0} us, p99 {p99:.0} us{above}; loss {:.3} %; p99 in each run: {}",
            path.label(),
            loss * 100.0,
            each.join(" ")
        );
    }
    println!(
        "\n'>=' marks a figure where the generator's core, not the relay, was the limit (twice in a row it \
         relayed a step cleanly but sent under 95 % of the offered rate, or, with socket sinks, most lost packets \
         overflowed the sinks' sockets)."
    );
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_ticks_leave_idle_iowait_and_steal_out_of_busy() {
        let t0 = CoreTicks::parse("cpu0 100 5 50 1000 7 3 20 9 0 0");
        assert_eq!((t0.busy, t0.steal), (178, 9));
        let t1 = CoreTicks::parse("cpu0 200 5 100 1100 9 3 40 59 0 0");
        // Over 2 s (200 ticks): 170 busy ticks, 50 stolen.
        let (busy, steal) = t1.shares(t0, 2.0);
        assert!((busy - 0.85).abs() < 1e-9, "{busy}");
        assert!((steal - 0.25).abs() < 1e-9, "{steal}");
        // A short or garbled line reads as zeros rather than failing.
        assert_eq!(CoreTicks::parse("cpu0 1 2").busy, 3);
        assert_eq!(CoreTicks::parse("cpu0").steal, 0);
    }

    #[test]
    fn sink_buckets_are_microseconds_then_powers_of_two() {
        assert!((BpfSink::bucket_us(0) - 1.0).abs() < f64::EPSILON, "0 µs reads as 1, as the socket sink records it");
        assert!((BpfSink::bucket_us(37) - 37.0).abs() < f64::EPSILON);
        assert!((BpfSink::bucket_us(16_383) - 16_383.0).abs() < f64::EPSILON);
        assert!((BpfSink::bucket_us(16_384) - 16_384.0).abs() < f64::EPSILON);
        assert!((BpfSink::bucket_us(16_385) - 32_768.0).abs() < f64::EPSILON);
        assert!((BpfSink::bucket_us(16_387) - 131_072.0).abs() < f64::EPSILON);
    }

    #[test]
    fn a_step_counts_what_the_sink_saw_between_readings() {
        let mut before = vec![0u64; 16_416];
        before[10] = 500; // an earlier step's packets
        let mut after = before.clone();
        after[20] += 980; // 98 % at 20 µs
        after[200] += 15; // 1.5 % at 200 µs
        after[16_386] += 5; // 0.5 % in [65536, 131072) µs
        let step = Duration::from_secs(2);
        let sent = StepResult { sent: 1_010, ..StepResult::default() };
        let r = BpfSink::step_result(&before, &after, sent, step);
        assert_eq!(r.received, 1_000);
        assert!((r.received_pps - 500.0).abs() < 1e-9, "{r:?}");
        assert!((r.loss - 10.0 / 1_010.0).abs() < 1e-12, "{r:?}");
        assert!((r.p50_us - 20.0).abs() < f64::EPSILON, "{r:?}");
        assert!((r.p99_us - 200.0).abs() < f64::EPSILON, "{r:?}");
        // Nothing arrived: no latency, all lost.
        let r = BpfSink::step_result(&after, &after, StepResult { sent: 10, ..StepResult::default() }, step);
        assert_eq!((r.received, r.p50_us, r.p99_us), (0, 0.0, 0.0));
        assert!((r.loss - 1.0).abs() < f64::EPSILON);
    }
}
