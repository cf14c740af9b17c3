//! What `xdp-bench` runs: four ways of relaying the same RTP in one run,
//! in a network namespace lab this program builds and removes:
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
//!
//! This module holds the command line and the run; `lab` builds the
//! namespaces, `bpf` the in-kernel forwarder and the BPF sink, `steps` the
//! rate steps and their verdicts, `report` the tables.

mod bpf;
mod lab;
mod report;
mod steps;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::gen::{Pace, SinkMode};
use bpf::BpfSink;
use lab::Lab;
use steps::{run_path, Ctx, Figures};

/// `xdp-bench`'s command line.
#[derive(Parser, Debug)]
#[command(about = "AF_XDP vs socket datapath vs rtpengine vs in-kernel XDP, in a namespace lab")]
pub struct Args {
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

/// Builds the lab, measures every path `a.runs` times, removes the lab and
/// prints the tables.
#[must_use]
pub fn run(a: &Args) -> ExitCode {
    if let Some(c) = core_affinity::get_core_ids().and_then(|c| c.get(1).copied()) {
        core_affinity::set_for_current(c);
    }
    let lab = match Lab::new(a.coalesce_us) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("xdp-bench: cannot build the namespace lab (needs root, ip, ethtool): {e}");
            return ExitCode::FAILURE;
        }
    };
    // The limit holds while the file is open; the kernel drops it when the
    // file is closed, at the latest when the process exits.
    let _cpu_latency = match a.cpu_latency_us.map(media_relay::os::hold_cpu_latency).transpose() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("xdp-bench: --cpu-latency-us: {e}");
            return ExitCode::FAILURE;
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
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let cx = Ctx { a, sink: sink.as_ref() };
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
    report::print(a, &results);
    ExitCode::SUCCESS
}
