//! The BPF side of the lab: compiling `bench/bpf/*.bpf.c`, the in-kernel
//! forwarder (the floor) and the BPF sink that counts latency at `gb`.

use std::net::{SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::lab::{ethtool_k, port, Lab};
use super::{GEN_B, RELAY_A, RELAY_B};
use crate::gen::{Flow, StepResult};

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
pub(super) struct BpfSink {
    ebpf: aya::Ebpf,
}

/// `sink.bpf.c`'s linear range, in microseconds.
const SINK_LINEAR: u32 = 16_384;

impl BpfSink {
    /// `at_tc`: at `gb`'s tc ingress (with GRO on, so `gb` still runs
    /// NAPI and takes the in-kernel forwarder's redirected frames);
    /// otherwise as its XDP program.
    pub(super) fn attach(lab: &Lab, dir: &Path, at_tc: bool) -> Result<Self, String> {
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
    pub(super) fn read(&self) -> Vec<u64> {
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
    pub(super) fn bucket_us(i: usize) -> f64 {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        if i < SINK_LINEAR {
            f64::from(i.max(1))
        } else {
            f64::from(SINK_LINEAR) * 2f64.powi(i32::try_from(i - SINK_LINEAR).unwrap_or(i32::MAX))
        }
    }

    /// Replaces the step's receive figures with what the sink counted
    /// between the two readings.
    pub(super) fn step_result(before: &[u64], after: &[u64], mut r: StepResult, step: Duration) -> StepResult {
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
pub(super) fn kernel_fwd(
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

#[cfg(test)]
mod tests {
    use super::*;

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
