//! `relay-bench`: the same scenarios against `media-relay` and rtpengine
//! (userspace, `--table=-1`) in one run, side by side, with ratios.
//!
//! Each relay runs with one worker thread pinned to core 0; the generator
//! and sink run pinned to core 1. Frames are 214 bytes on the wire (G.711
//! 20 ms payloads), spread round robin over the flows. Figures are medians
//! over `--runs` runs.
//!
//! ```text
//! cargo build --release -p media-relay -p bench
//! target/release/relay-bench            # about 3 minutes
//! target/release/relay-bench --quick    # about 40 seconds
//! ```

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench::gen::{run_step, sockets, Flow, StepResult};
use bench::ng::{command, delete_call, sdp, setup_call, NgClient};
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
    /// Flows (two per call).
    #[arg(long, default_value_t = 100)]
    flows: usize,
    /// Runs per relay; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Short steps and fewer rates.
    #[arg(long)]
    quick: bool,
    /// Sessions for the memory measurement.
    #[arg(long, default_value_t = 4000)]
    mem_sessions: usize,
}

struct Relay {
    child: Child,
    ng: SocketAddr,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Ours,
    Rtpengine,
}

fn start(kind: Kind, bin: &PathBuf, ng_port: u16) -> Result<Relay, String> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]).arg(bin).args([
        "--config-file=none",
        "--interface=127.0.0.1",
        &format!("--listen-ng=127.0.0.1:{ng_port}"),
        "--port-min=20000",
        "--port-max=60000",
        "--delete-delay=0",
        "--timeout=600",
        "--num-threads=1",
        "--foreground",
        "--log-level=3",
    ]);
    if kind == Kind::Ours {
        cmd.arg("--metrics=off");
    } else {
        cmd.args(["--table=-1", "--log-stderr"]);
    }
    let child =
        cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
    let ng = SocketAddr::from(([127, 0, 0, 1], ng_port));
    let relay = Relay { child, ng };
    let mut c = NgClient::new(ng).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ping = media_relay::bencode::Value::dict();
    ping.insert("command", media_relay::bencode::Value::str("ping"));
    while c.cmd(&ping).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{} did not answer ng ping", bin.display()));
        }
    }
    Ok(relay)
}

fn proc_cpu_ticks(pid: u32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // Fields after the ")" of the command name: utime is 14th, stime 15th overall.
    let rest = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
}

/// The relay process itself (taskset execs it, so the pid is the relay's).
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[derive(Default, Clone)]
struct Figures {
    max_pps: f64,
    generator_limited: bool,
    cpu_us_per_pkt: f64,
    p50_us: f64,
    p99_us: f64,
    lat_at_pps: f64,
    ng_cycles: f64,
    mem_per_session_b: f64,
    overload_silenced: usize,
    overload_flows_with_loss: usize,
    recovery_silenced: usize,
    overload_loss: f64,
}

fn ng_cycles(ng: SocketAddr, secs: f64) -> Result<f64, String> {
    let mut c = NgClient::new(ng).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut n = 0u64;
    let body = sdp(4000);
    while t0.elapsed().as_secs_f64() < secs {
        let ids: Vec<String> = (0..16).map(|k| format!("cyc-{n}-{k}")).collect();
        let offers: Vec<_> = ids.iter().map(|id| command("offer", id, "a", None, Some(&body))).collect();
        let answers: Vec<_> = ids.iter().map(|id| command("answer", id, "a", Some("b"), Some(&body))).collect();
        let deletes: Vec<_> = ids.iter().map(|id| command("delete", id, "a", None, None)).collect();
        for b in [offers, answers, deletes] {
            c.pipeline(&b)?;
        }
        n += 16;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

fn mem_per_session(relay: &Relay, n: usize) -> Result<f64, String> {
    let mut c = NgClient::new(relay.ng).map_err(|e| e.to_string())?;
    let before = rss_kib(relay.child.id());
    let ids: Vec<String> = (0..n).map(|k| format!("mem-{k}")).collect();
    for id in &ids {
        setup_call(&mut c, id, 4000, 4002)?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(relay.child.id());
    for id in &ids {
        let _ = delete_call(&mut c, id);
    }
    Ok((after.saturating_sub(before) * 1024) as f64 / n as f64)
}

fn flows_for(relay: &Relay, socks: &[std::net::UdpSocket], nflows: usize) -> Result<(Vec<Flow>, Vec<String>), String> {
    let mut c = NgClient::new(relay.ng).map_err(|e| e.to_string())?;
    let mut flows = Vec::new();
    let mut ids = Vec::new();
    let port = |i: usize| socks[i].local_addr().map(|a| a.port()).unwrap_or(0);
    for k in 0..nflows.div_ceil(2) {
        let id = format!("flow-call-{k}");
        let (a, b) = (k % socks.len(), (k + 1) % socks.len());
        let p = setup_call(&mut c, &id, port(a), port(b))?;
        flows.push(Flow { sock: a, dest: SocketAddrV4::new([127, 0, 0, 1].into(), p.to_a) });
        flows.push(Flow { sock: b, dest: SocketAddrV4::new([127, 0, 0, 1].into(), p.to_b) });
        ids.push(id);
    }
    Ok((flows, ids))
}

fn measure(kind: Kind, bin: &PathBuf, a: &Args, ng_port: u16) -> Result<Figures, String> {
    let relay = start(kind, bin, ng_port)?;
    let pid = relay.child.id();
    let mut fig = Figures { ng_cycles: ng_cycles(relay.ng, if a.quick { 1.0 } else { 3.0 })?, ..Figures::default() };
    fig.mem_per_session_b = mem_per_session(&relay, if a.quick { a.mem_sessions / 4 } else { a.mem_sessions })?;
    let socks = sockets(4).map_err(|e| e.to_string())?;
    let (flows, _ids) = flows_for(&relay, &socks, a.flows)?;
    let step = Duration::from_secs(if a.quick { 2 } else { 4 });
    let drain = Duration::from_millis(400);
    let rates: &[u64] = if a.quick {
        &[50_000, 100_000, 150_000, 200_000]
    } else {
        &[25_000, 50_000, 100_000, 150_000, 200_000, 250_000, 300_000]
    };
    // Warm-up latches every leg.
    let _ = run_step(&socks, &flows, 10_000, Duration::from_millis(500), 160, drain);
    let mut best: Option<StepResult> = None;
    let mut best_cpu = 0.0;
    let mut at_100k: Option<StepResult> = None;
    for &pps in rates {
        let t0 = proc_cpu_ticks(pid);
        let r = run_step(&socks, &flows, pps, step, 160, drain);
        let ticks = proc_cpu_ticks(pid).saturating_sub(t0) as f64;
        let cpu_us = ticks * 10_000.0 / r.received.max(1) as f64;
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

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let ours = a.media_relay.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("media-relay")))
            .unwrap_or_else(|| PathBuf::from("media-relay"))
    });
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if let Some(c) = cores.get(1).or(cores.first()) {
        core_affinity::set_for_current(*c);
    }
    let have_rtpengine = a.rtpengine.exists();
    if !have_rtpengine {
        eprintln!("rtpengine not found at {}: printing our column only", a.rtpengine.display());
    }
    let mut runs: Vec<(Figures, Option<Figures>)> = Vec::new();
    for run in 0..a.runs.max(1) {
        eprintln!("run {}/{}", run + 1, a.runs);
        let o = match measure(Kind::Ours, &ours, &a, 22301) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("relay-bench: media-relay: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let r = if have_rtpengine {
            match measure(Kind::Rtpengine, &a.rtpengine, &a, 22302) {
                Ok(f) => Some(f),
                Err(e) => {
                    eprintln!("relay-bench: rtpengine: {e}");
                    None
                }
            }
        } else {
            None
        };
        runs.push((o, r));
    }
    let (base50, base99) = baseline_latency(a.quick).unwrap_or((f64::NAN, f64::NAN));
    let med = |f: &dyn Fn(&Figures) -> f64, theirs: bool| -> f64 {
        median(runs.iter().filter_map(|(o, r)| if theirs { r.as_ref().map(f) } else { Some(f(o)) }).collect())
    };
    let row = |name: &str, f: &dyn Fn(&Figures) -> f64, higher_better: bool| {
        let (o, r) = (med(f, false), med(f, true));
        let ratio = if r.is_nan() || r == 0.0 { String::from("n/a") } else { format!("{:.2}x", o / r) };
        let _ = higher_better;
        println!("{name:<44} {o:>12.1} {r:>12.1} {ratio:>8}");
    };
    println!();
    println!("relay-bench: {} flows, 214-byte frames, one worker core each, medians of {} run(s)", a.flows, runs.len());
    println!("{:<44} {:>12} {:>12} {:>8}", "", "media-relay", "rtpengine", "ours/rt");
    row("max relayed pps per core (<0.1% loss)", &|f| f.max_pps, true);
    row("  ...generator-limited runs (the real max is higher)", &|f| f64::from(u8::from(f.generator_limited)), false);
    row("CPU us per packet (at that rate)", &|f| f.cpu_us_per_pkt, false);
    row("latency p50 us (through relay)", &|f| f.p50_us, false);
    row("latency p99 us (through relay)", &|f| f.p99_us, false);
    row("  ...measured at pps", &|f| f.lat_at_pps, true);
    row("ng offer+answer+delete cycles/s", &|f| f.ng_cycles, true);
    row("relay memory per session, bytes (RSS delta)", &|f| f.mem_per_session_b, false);
    row("overload 2x: loss %", &|f| f.overload_loss * 100.0, false);
    row("overload 2x: flows with loss", &|f| f.overload_flows_with_loss as f64, false);
    row("overload 2x: silenced flows", &|f| f.overload_silenced as f64, false);
    row("after overload: silenced flows", &|f| f.recovery_silenced as f64, false);
    println!(
        "{:<44} {base50:>12.1} (p99 {base99:.1}) without any relay, at 100k pps",
        "baseline latency p50 us, same generator"
    );
    std::process::ExitCode::SUCCESS
}
