//! `rtpgen`: sets up calls on an rtpengine-compatible relay over ng, sends
//! RTP through them, and prints relayed rate, loss, latency and jitter.
//!
//! ```text
//! rtpgen --ng 127.0.0.1:22222 --calls 100 --rate 50 --duration 10
//! rtpgen --ng 127.0.0.1:22222 --calls 500 --total-pps 100000
//! rtpgen --ng 127.0.0.1:22222 --ng-cycles 5
//! ```

use std::net::{SocketAddr, SocketAddrV4};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bench::gen::{run_step, sockets, Flow};
use bench::ng::{command, delete_call, setup_call, NgClient};
use clap::Parser;

/// RTP load generator and sink for rtpengine-compatible relays.
#[derive(Parser, Debug)]
struct Args {
    /// The relay's ng address.
    #[arg(long, default_value = "127.0.0.1:22222")]
    ng: SocketAddr,
    /// Calls to set up (two flows each).
    #[arg(long, default_value_t = 100)]
    calls: usize,
    /// Packets per second per flow (50 = G.711 at 20 ms).
    #[arg(long, default_value_t = 50)]
    rate: u64,
    /// Total packets per second instead of --rate.
    #[arg(long)]
    total_pps: Option<u64>,
    /// RTP payload bytes (160: 214-byte frames on the wire).
    #[arg(long, default_value_t = 160)]
    payload: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Measure ng offer+answer+delete cycles per second for this many seconds instead.
    #[arg(long)]
    ng_cycles: Option<u64>,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let mut ng = match NgClient::new(a.ng) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("rtpgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(secs) = a.ng_cycles {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut cycles = 0u64;
        let t0 = Instant::now();
        while Instant::now() < end {
            let ids: Vec<String> = (0..16).map(|k| format!("cyc-{}-{cycles}-{k}", std::process::id())).collect();
            let sdp = bench::ng::sdp(4000);
            let offers: Vec<_> = ids.iter().map(|id| command("offer", id, "a", None, Some(&sdp))).collect();
            let answers: Vec<_> = ids.iter().map(|id| command("answer", id, "a", Some("b"), Some(&sdp))).collect();
            let deletes: Vec<_> = ids.iter().map(|id| command("delete", id, "a", None, None)).collect();
            for batch in [offers, answers, deletes] {
                if let Err(e) = ng.pipeline(&batch) {
                    eprintln!("rtpgen: {e}");
                    return ExitCode::FAILURE;
                }
            }
            cycles += 16;
        }
        println!("ng offer+answer+delete cycles/s: {:.0}", cycles as f64 / t0.elapsed().as_secs_f64());
        return ExitCode::SUCCESS;
    }
    let socks = match sockets(4) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rtpgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let port = |i: usize| socks[i].local_addr().map(|a| a.port()).unwrap_or(0);
    let mut flows = Vec::new();
    let mut ids = Vec::new();
    for c in 0..a.calls {
        let id = format!("rtpgen-{}-{c}", std::process::id());
        let (sa, sb) = (c % 4, (c + 1) % 4);
        match setup_call(&mut ng, &id, port(sa), port(sb)) {
            Ok(p) => {
                flows.push(Flow { sock: sa, dest: SocketAddrV4::new([127, 0, 0, 1].into(), p.to_a) });
                flows.push(Flow { sock: sb, dest: SocketAddrV4::new([127, 0, 0, 1].into(), p.to_b) });
                ids.push(id);
            }
            Err(e) => {
                eprintln!("rtpgen: call {c}: {e}");
                break;
            }
        }
    }
    let pps = a.total_pps.unwrap_or(a.rate * flows.len() as u64);
    println!(
        "{} calls, {} flows, {pps} pps offered for {} s, payload {} B",
        ids.len(),
        flows.len(),
        a.duration,
        a.payload
    );
    let r = run_step(&socks, &flows, pps, Duration::from_secs(a.duration), a.payload, Duration::from_millis(500));
    println!(
        "sent {} received {} ({:.0} pps) loss {:.4}%  latency p50 {} us p99 {} us max {} us  jitter {:.1} us  flows with loss {}  silenced {}",
        r.sent, r.received, r.received_pps, r.loss * 100.0, r.p50_us, r.p99_us, r.max_us, r.jitter_us, r.flows_with_loss, r.silenced
    );
    for id in &ids {
        let _ = delete_call(&mut ng, id);
    }
    ExitCode::SUCCESS
}
