//! The tables `xdp-bench` prints: medians per path, each run's maximum,
//! ratios against the socket datapath, and latency above the in-kernel
//! floor.

use super::steps::Figures;
use super::{Args, Path4};
use crate::median;

/// Prints the results of every run, `results[i]` for `Path4::ALL[i]`.
pub(super) fn print(a: &Args, results: &[Vec<Figures>]) {
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
}
