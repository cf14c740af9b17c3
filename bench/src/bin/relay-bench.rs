//! `relay-bench`: the same scenarios against `media-relay`, rtpengine
//! (userspace, `--table=-1`) and a bare `recvmmsg`/`sendmmsg` relay
//! (`bare-relay`, see [`bench::bare`]) in one run, side by side, with
//! ratios. The bare relay has no ng: it gets the same flows as fixed
//! forwards, and only its packet figures are measured.
//!
//! Each relay runs with one worker thread pinned to core 0; the generator
//! and sink run pinned to core 1. Frames are 214 bytes on the wire (G.711
//! 20 ms payloads), spread round robin over the flows. Figures are medians
//! over `--runs` runs. CPU per packet is the relay process's CPU time
//! (utime + stime, read from its CPU-time clock in nanoseconds) over a step,
//! divided by the packets relayed in it, at each relay's highest clean rate
//! and at `--cpu-at` (50k pps), where every relay should be clean and the
//! bare relay's figure is the floor the others are divided by.
//!
//! media-relay runs twice: with one interface, as the others, and with two
//! (`inside/127.0.0.1`, `outside/127.0.0.2`, each call's offer naming
//! `direction: [inside, outside]`), the callers' sockets on 127.0.0.1 and
//! the callees' on 127.0.0.2, so every packet crosses from one interface's
//! socket to the other's, as between two realms.
//!
//! ```text
//! cargo build --release -p media-relay -p bench
//! target/release/relay-bench                    # 3 runs, about 7 minutes
//! target/release/relay-bench --quick --runs 1   # about 75 seconds
//! ```

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bench::gen::{run_step, sockets, sockets_on, Flow, StepResult};
use bench::median;
use bench::ng::{cycle_rate, delete_call, setup_call_on, CycleTemplates, Legs, NgClient};
use bench::procfs::rss_kib;
use bench::spawn::{bin_beside, RelayProcess};
use clap::Parser;

/// Side-by-side relay benchmark.
#[derive(Parser, Debug)]
struct Args {
    /// Our relay binary (default: next to this executable).
    #[arg(long)]
    media_relay: Option<PathBuf>,
    /// rtpengine binary.
    #[arg(long, default_value = "/usr/bin/rtpengine")]
    rtpengine: PathBuf,
    /// The bare relay binary (default: next to this executable).
    #[arg(long)]
    bare_relay: Option<PathBuf>,
    /// Flows (two per call).
    #[arg(long, default_value_t = 100)]
    flows: usize,
    /// Runs per relay; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Short steps and fewer rates.
    #[arg(long)]
    quick: bool,
    /// The rate at which every relay's CPU per packet is also compared
    /// (added to the steps if it is not one of them). At the maximum rates
    /// the relays differ; this one each should relay cleanly.
    #[arg(long, default_value_t = 50_000)]
    cpu_at: u64,
    /// Sessions for the memory measurement.
    #[arg(long, default_value_t = 4000)]
    mem_sessions: usize,
    /// Only the ng cycle rate (no packets, no memory, no bare relay).
    #[arg(long)]
    ng_only: bool,
    /// Seconds of each ng cycle measurement (default: 1 with --quick, else 3).
    #[arg(long)]
    ng_secs: Option<f64>,
    /// Calls in flight for the windowed ng measurement.
    #[arg(long, default_value_t = 64)]
    ng_window: usize,
}

struct Relay {
    proc: RelayProcess,
    ng: SocketAddr,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Ours,
    /// media-relay with two interfaces, each call's legs on both.
    OursTwoIfaces,
    Rtpengine,
    Bare,
}

/// The two interfaces of [`Kind::OursTwoIfaces`], and where their legs are.
const TWO_IFACES: Legs<'static> =
    Legs { addr: [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)], direction: Some(["inside", "outside"]) };

fn start(kind: Kind, bin: &PathBuf, ng_port: u16) -> Result<Relay, String> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]).arg(bin).arg("--config-file=none");
    if kind == Kind::OursTwoIfaces {
        cmd.args(["--interface=inside/127.0.0.1", "--interface=outside/127.0.0.2"]);
    } else {
        cmd.arg("--interface=127.0.0.1");
    }
    cmd.args([
        &format!("--listen-ng=127.0.0.1:{ng_port}"),
        "--port-min=20000",
        "--port-max=60000",
        "--delete-delay=0",
        "--timeout=600",
        "--num-threads=1",
        "--foreground",
        "--log-level=3",
    ]);
    if kind != Kind::Rtpengine {
        cmd.arg("--metrics=off");
    } else {
        cmd.args(["--table=-1", "--log-stderr"]);
    }
    let child =
        cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
    let ng = SocketAddr::from(([127, 0, 0, 1], ng_port));
    let relay = Relay { proc: RelayProcess(child), ng };
    let mut c = NgClient::new(ng).map_err(|e| e.to_string())?;
    if !c.wait_ready(Duration::from_secs(10)) {
        return Err(format!("{} did not answer ng ping", bin.display()));
    }
    Ok(relay)
}

fn v4(s: &UdpSocket) -> SocketAddrV4 {
    match s.local_addr() {
        Ok(SocketAddr::V4(a)) => a,
        _ => SocketAddrV4::new([127, 0, 0, 1].into(), 9),
    }
}

/// Starts the bare relay pinned to core 0 with the flows [`flows_for`]
/// sets up on the others: call `k` joins generator sockets `k` and `k + 1`,
/// one relay socket for each direction.
fn start_bare(bin: &PathBuf, socks: &[UdpSocket], nflows: usize) -> Result<(RelayProcess, Vec<Flow>), String> {
    let mut senders = Vec::new();
    let mut dests = Vec::new();
    for k in 0..nflows.div_ceil(2) {
        let (a, b) = (k % socks.len(), (k + 1) % socks.len());
        senders.extend([a, b]);
        dests.extend([v4(&socks[b]).to_string(), v4(&socks[a]).to_string()]);
    }
    let child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(bin)
        .arg(format!("--dest={}", dests.join(",")))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let mut relay = RelayProcess(child);
    let mut line = String::new();
    let stdout = relay.0.stdout.take().ok_or("no stdout")?;
    BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
    let ports: Vec<u16> = line.split_whitespace().filter_map(|p| p.parse().ok()).collect();
    if ports.len() != senders.len() {
        return Err(format!("{} printed {} ports for {} flows", bin.display(), ports.len(), senders.len()));
    }
    let flows = senders
        .into_iter()
        .zip(ports)
        .map(|(sock, p)| Flow { sock, dest: SocketAddrV4::new([127, 0, 0, 1].into(), p) })
        .collect();
    Ok((relay, flows))
}

/// CPU time of `pid` so far, microseconds.
fn cpu_time_us(pid: u32) -> f64 {
    bench::process_cpu_ns(pid).unwrap_or(0) as f64 / 1000.0
}

#[derive(Default, Clone)]
struct Figures {
    max_pps: f64,
    generator_limited: bool,
    cpu_us_per_pkt: f64,
    cpu_us_at_common: f64,
    p50_us: f64,
    p99_us: f64,
    lat_at_pps: f64,
    ng_cycles: f64,
    ng_windowed: f64,
    /// The relay's CPU time per cycle in each ng row, microseconds.
    ng_cpu_us: [f64; 2],
    mem_per_session_b: f64,
    overload_silenced: usize,
    overload_flows_with_loss: usize,
    recovery_silenced: usize,
    overload_loss: f64,
}

/// Offer+answer+delete cycles per second, 16 calls at a time: their 16
/// offers at once, then the 16 answers, then the 16 deletes, each step
/// waiting for every reply.
fn ng_cycles(ng: SocketAddr, legs: &Legs, secs: f64) -> Result<f64, String> {
    let mut c = NgClient::new(ng).map_err(|e| e.to_string())?;
    let templates = CycleTemplates::new(legs, 4000, 4000);
    let mut bodies = vec![Vec::new(); 16];
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        for step in 0..3 {
            for (k, b) in bodies.iter_mut().enumerate() {
                b.clear();
                templates.write(step, &format!("cyc-{n}-{k}"), b);
            }
            c.pipeline_ok(&bodies)?;
        }
        n += 16;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

fn mem_per_session(relay: &Relay, legs: &Legs, n: usize) -> Result<f64, String> {
    let mut c = NgClient::new(relay.ng).map_err(|e| e.to_string())?;
    let before = rss_kib(relay.proc.pid());
    let ids: Vec<String> = (0..n).map(|k| format!("mem-{k}")).collect();
    for id in &ids {
        setup_call_on(&mut c, id, legs, 4000, 4002)?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(relay.proc.pid());
    for id in &ids {
        let _ = delete_call(&mut c, id);
    }
    Ok((after.saturating_sub(before) * 1024) as f64 / n as f64)
}

/// Sets up the calls of `nflows` flows. With both legs on one address,
/// call `k` joins generator sockets `k` and `k + 1`; with two, the first
/// half of `socks` (on the callers' address) and the second half (on the
/// callees') take turns, and each leg must be anchored on the relay
/// interface at its own address (as [`TWO_IFACES`] has them).
fn flows_for(
    relay: &Relay,
    socks: &[UdpSocket],
    legs: &Legs,
    nflows: usize,
) -> Result<(Vec<Flow>, Vec<String>), String> {
    let mut c = NgClient::new(relay.ng).map_err(|e| e.to_string())?;
    let mut flows = Vec::new();
    let mut ids = Vec::new();
    let port = |i: usize| socks[i].local_addr().map(|a| a.port()).unwrap_or(0);
    let half = socks.len() / 2;
    for k in 0..nflows.div_ceil(2) {
        let id = format!("flow-call-{k}");
        let (a, b) = if legs.addr[0] == legs.addr[1] {
            (k % socks.len(), (k + 1) % socks.len())
        } else {
            (k % half, half + (k / half + k) % half)
        };
        let p = setup_call_on(&mut c, &id, legs, port(a), port(b))?;
        if legs.direction.is_some() && (*p.to_a.ip(), *p.to_b.ip()) != (legs.addr[0], legs.addr[1]) {
            return Err(format!("{id}: legs anchored at {} and {}, not on two interfaces", p.to_a, p.to_b));
        }
        flows.push(Flow { sock: a, dest: p.to_a });
        flows.push(Flow { sock: b, dest: p.to_b });
        ids.push(id);
    }
    Ok((flows, ids))
}

fn measure(kind: Kind, bin: &PathBuf, a: &Args, ng_port: u16) -> Result<Figures, String> {
    let (socks, legs) = if kind == Kind::OursTwoIfaces {
        let mut s = sockets_on(TWO_IFACES.addr[0], 2).map_err(|e| e.to_string())?;
        s.extend(sockets_on(TWO_IFACES.addr[1], 2).map_err(|e| format!("sockets on {}: {e}", TWO_IFACES.addr[1]))?);
        (s, TWO_IFACES)
    } else {
        (sockets(4).map_err(|e| e.to_string())?, Legs::LOOPBACK)
    };
    let mut fig = Figures { cpu_us_at_common: f64::NAN, ..Figures::default() };
    let (proc, flows) = if kind == Kind::Bare {
        // No ng, no sessions: only the packet figures.
        (fig.ng_cycles, fig.ng_windowed, fig.mem_per_session_b) = (f64::NAN, f64::NAN, f64::NAN);
        fig.ng_cpu_us = [f64::NAN; 2];
        start_bare(bin, &socks, a.flows)?
    } else {
        let relay = start(kind, bin, ng_port)?;
        let secs = a.ng_secs.unwrap_or(if a.quick { 1.0 } else { 3.0 });
        // The relay's CPU time over each row, per cycle: what a cycle
        // costs the relay, whatever else the machine runs.
        let pid = relay.proc.pid();
        let per_cycle =
            |rate: f64, cpu0: f64, t0: Instant| (cpu_time_us(pid) - cpu0) / (rate * t0.elapsed().as_secs_f64());
        let (cpu0, t0) = (cpu_time_us(pid), Instant::now());
        fig.ng_cycles = ng_cycles(relay.ng, &legs, secs)?;
        fig.ng_cpu_us[0] = per_cycle(fig.ng_cycles, cpu0, t0);
        let (cpu0, t0) = (cpu_time_us(pid), Instant::now());
        fig.ng_windowed = cycle_rate(relay.ng, &legs, secs, a.ng_window)?;
        fig.ng_cpu_us[1] = per_cycle(fig.ng_windowed, cpu0, t0);
        if a.ng_only {
            return Ok(fig);
        }
        let sessions = if a.quick { a.mem_sessions / 4 } else { a.mem_sessions };
        fig.mem_per_session_b = mem_per_session(&relay, &legs, sessions)?;
        let (flows, _ids) = flows_for(&relay, &socks, &legs, a.flows)?;
        (relay.proc, flows)
    };
    let pid = proc.pid();
    let step = Duration::from_secs(if a.quick { 2 } else { 4 });
    let drain = Duration::from_millis(400);
    let mut rates: Vec<u64> = if a.quick {
        vec![50_000, 100_000, 150_000, 200_000]
    } else {
        vec![25_000, 50_000, 100_000, 150_000, 200_000, 250_000, 300_000]
    };
    if !rates.contains(&a.cpu_at) {
        rates.push(a.cpu_at);
        rates.sort_unstable();
    }
    // Warm-up latches every leg.
    let _ = run_step(&socks, &flows, 10_000, Duration::from_millis(500), 160, drain);
    let mut best: Option<StepResult> = None;
    // No clean step: no figure.
    let mut best_cpu = f64::NAN;
    let mut at_100k: Option<StepResult> = None;
    for &pps in &rates {
        let t0 = cpu_time_us(pid);
        let r = run_step(&socks, &flows, pps, step, 160, drain);
        let cpu_us = (cpu_time_us(pid) - t0).max(0.0) / r.received.max(1) as f64;
        eprintln!(
            "  {kind:?} {pps:>7} pps offered, {:>8.0} sent: received {:>8.0} pps, loss {:.4}%, p50 {} us, p99 {} us, cpu {:.2} us/pkt",
            r.sent_pps,
            r.received_pps,
            r.loss * 100.0,
            r.p50_us,
            r.p99_us,
            cpu_us
        );
        if pps == 100_000 {
            at_100k = Some(r.clone());
        }
        if pps == a.cpu_at && r.loss < 0.001 {
            fig.cpu_us_at_common = cpu_us;
        }
        let short = r.sent_pps < 0.95 * pps as f64;
        if r.loss < 0.001 {
            best_cpu = cpu_us;
            best = Some(r);
        } else {
            break;
        }
        if short {
            // The generator's core is the limit: higher offers mean nothing.
            fig.generator_limited = true;
            break;
        }
    }
    let best = best.unwrap_or_default();
    fig.max_pps = best.received_pps;
    fig.cpu_us_per_pkt = best_cpu;
    let lat = at_100k.filter(|r| r.loss < 0.001).unwrap_or_else(|| best.clone());
    fig.p50_us = lat.p50_us;
    fig.p99_us = lat.p99_us;
    fig.lat_at_pps = lat.offered_pps as f64;
    // Overload: twice the highest clean offered rate, generator flat out
    // (it sends in bursts when it falls behind), then back to half.
    let over = (best.offered_pps.max(50_000) * 2).min(600_000);
    let o = run_step(&socks, &flows, over, step, 160, drain);
    let rec = run_step(&socks, &flows, (fig.max_pps as u64 / 2).max(10_000), step, 160, drain);
    eprintln!(
        "  {kind:?} overload {over} pps: loss {:.1}%, flows with loss {}/{}, silenced {}; recovery: loss {:.4}%, silenced {}",
        o.loss * 100.0,
        o.flows_with_loss,
        o.flows,
        o.silenced,
        rec.loss * 100.0,
        rec.silenced
    );
    fig.overload_loss = o.loss;
    fig.overload_flows_with_loss = o.flows_with_loss;
    fig.overload_silenced = o.silenced;
    fig.recovery_silenced = rec.silenced;
    Ok(fig)
}

fn baseline_latency(quick: bool) -> Result<(f64, f64), String> {
    // The same generator straight to its own sockets: the path without a relay.
    let socks = sockets(4).map_err(|e| e.to_string())?;
    let flows: Vec<Flow> = (0..100)
        .map(|k| {
            let dest =
                socks[(k + 1) % 4].local_addr().map_or(SocketAddrV4::new([127, 0, 0, 1].into(), 9), |a| match a {
                    SocketAddr::V4(v) => v,
                    SocketAddr::V6(_) => SocketAddrV4::new([127, 0, 0, 1].into(), 9),
                });
            Flow { sock: k % 4, dest }
        })
        .collect();
    let r = run_step(
        &socks,
        &flows,
        100_000,
        Duration::from_secs(if quick { 2 } else { 4 }),
        160,
        Duration::from_millis(300),
    );
    Ok((r.p50_us, r.p99_us))
}

/// Measures `kind`, or says why not (the run goes on without it).
fn measure_or_skip(kind: Kind, bin: &PathBuf, a: &Args, ng_port: u16) -> Option<Figures> {
    measure(kind, bin, a, ng_port).inspect_err(|e| eprintln!("relay-bench: {kind:?}: {e}")).ok()
}

/// A figure for the table: "-" where a relay has none.
fn cell(v: f64) -> String {
    if v.is_nan() {
        "-".to_owned()
    } else {
        format!("{v:.1}")
    }
}

/// `a / b`, or "n/a".
fn ratio(a: f64, b: f64) -> String {
    if a.is_nan() || b.is_nan() || b == 0.0 {
        String::from("n/a")
    } else {
        format!("{:.2}x", a / b)
    }
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let ours = bin_beside("media-relay", a.media_relay.as_deref());
    let bare = bin_beside("bare-relay", a.bare_relay.as_deref());
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if let Some(c) = cores.get(1).or(cores.first()) {
        core_affinity::set_for_current(*c);
    }
    let have_rtpengine = a.rtpengine.exists();
    if !have_rtpengine {
        eprintln!("rtpengine not found at {}: no rtpengine column", a.rtpengine.display());
    }
    let have_bare = bare.exists();
    if !have_bare {
        eprintln!("bare-relay not found at {}: no bare column", bare.display());
    }
    // Per run: media-relay, media-relay on two interfaces, rtpengine, bare.
    let mut runs: Vec<[Option<Figures>; 4]> = Vec::new();
    for run in 0..a.runs.max(1) {
        eprintln!("run {}/{}", run + 1, a.runs);
        let o = match measure(Kind::Ours, &ours, &a, 22301) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("relay-bench: media-relay: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let two = measure_or_skip(Kind::OursTwoIfaces, &ours, &a, 22303);
        let r = have_rtpengine.then(|| measure_or_skip(Kind::Rtpengine, &a.rtpengine, &a, 22302)).flatten();
        let b = (have_bare && !a.ng_only).then(|| measure_or_skip(Kind::Bare, &bare, &a, 0)).flatten();
        runs.push([Some(o), two, r, b]);
    }
    let (base50, base99) = baseline_latency(a.quick).unwrap_or((f64::NAN, f64::NAN));
    let med = |f: &dyn Fn(&Figures) -> f64, which: usize| -> f64 {
        median(runs.iter().filter_map(|r| r[which].as_ref().map(f)).collect())
    };
    let row = |name: &str, f: &dyn Fn(&Figures) -> f64| {
        let (o, t, r, b) = (med(f, 0), med(f, 1), med(f, 2), med(f, 3));
        println!(
            "{name:<44} {:>12} {:>12} {:>12} {:>12} {:>8} {:>8}",
            cell(o),
            cell(t),
            cell(r),
            cell(b),
            ratio(o, r),
            ratio(t, o)
        );
    };
    println!();
    println!("relay-bench: {} flows, 214-byte frames, one worker core each, medians of {} run(s)", a.flows, runs.len());
    println!(
        "{:<44} {:>12} {:>12} {:>12} {:>12} {:>8} {:>8}",
        "", "media-relay", "2 ifaces", "rtpengine", "bare", "ours/rt", "2if/1if"
    );
    row("max relayed pps per core (<0.1% loss)", &|f| f.max_pps);
    row("  ...generator-limited runs (the real max is higher)", &|f| f64::from(u8::from(f.generator_limited)));
    row("CPU us per packet (at that rate)", &|f| f.cpu_us_per_pkt);
    row(&format!("CPU us per packet at {}k pps", a.cpu_at / 1000), &|f| f.cpu_us_at_common);
    row("latency p50 us (through relay)", &|f| f.p50_us);
    row("latency p99 us (through relay)", &|f| f.p99_us);
    row("  ...measured at pps", &|f| f.lat_at_pps);
    row("ng offer+answer+delete cycles/s, 16 per batch", &|f| f.ng_cycles);
    row(&format!("ng offer+answer+delete cycles/s, {} in flight", a.ng_window), &|f| f.ng_windowed);
    row("  ...relay CPU us per cycle, 16 per batch", &|f| f.ng_cpu_us[0]);
    row(&format!("  ...relay CPU us per cycle, {} in flight", a.ng_window), &|f| f.ng_cpu_us[1]);
    row("relay memory per session, bytes (RSS delta)", &|f| f.mem_per_session_b);
    row("overload 2x: loss %", &|f| f.overload_loss * 100.0);
    row("overload 2x: flows with loss", &|f| f.overload_flows_with_loss as f64);
    row("overload 2x: silenced flows", &|f| f.overload_silenced as f64);
    row("after overload: silenced flows", &|f| f.recovery_silenced as f64);
    println!(
        "{:<44} {base50:>12.1} (p99 {base99:.1}) without any relay, at 100k pps",
        "baseline latency p50 us, same generator"
    );
    println!("\nCPU per packet against the bare recvmmsg/sendmmsg relay (same flows, same run):");
    for (name, f) in [
        (format!("at {}k pps", a.cpu_at / 1000), (|f: &Figures| f.cpu_us_at_common) as fn(&Figures) -> f64),
        ("at each relay's max rate".to_owned(), |f: &Figures| f.cpu_us_per_pkt),
    ] {
        let (o, t, r, b) = (med(&f, 0), med(&f, 1), med(&f, 2), med(&f, 3));
        println!(
            "  {name:<26} media-relay/bare {:>6}, on 2 interfaces/bare {:>6}, rtpengine/bare {:>6}",
            ratio(o, b),
            ratio(t, b),
            ratio(r, b)
        );
    }
    std::process::ExitCode::SUCCESS
}
