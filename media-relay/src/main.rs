//! `media-relay`: the xsbc media relay, driven over the rtpengine-compatible
//! ng protocol. Accepts rtpengine's most common options under the same names.

use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use media_relay::config::{choice, log_filter, parse_listen, DatapathMode, Interface, RelayConfig, Scheduling};
use media_relay::ng::NgCounters;
use media_relay::relay::Relay;
use media_relay::{metrics, ng, os as sys};

/// xsbc media relay. Options named like rtpengine's behave like them.
#[derive(Parser, Debug)]
#[command(name = "media-relay", version, about)]
struct Cli {
    /// TOML configuration file (default: the embedded loopback config).
    #[arg(long)]
    config: Option<PathBuf>,
    /// rtpengine's config file option: `none` means built-in defaults; any
    /// other value is read as our TOML file.
    #[arg(long = "config-file")]
    config_file: Option<String>,
    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    check_config: bool,
    /// Media interface `[NAME/]ADDR[!ADVERTISED]`; repeat for several.
    #[arg(long = "interface", short = 'i')]
    interface: Vec<String>,
    /// ng control listen address (`ADDR:PORT` or a port on 127.0.0.1).
    #[arg(long = "listen-ng", short = 'n')]
    listen_ng: Option<String>,
    /// Lowest media port.
    #[arg(long = "port-min", short = 'm')]
    port_min: Option<u16>,
    /// Highest media port.
    #[arg(long = "port-max", short = 'M')]
    port_max: Option<u16>,
    /// Seconds without media before a call is deleted.
    #[arg(long, short = 'o')]
    timeout: Option<u64>,
    /// Seconds a deleted call lingers.
    #[arg(long = "delete-delay")]
    delete_delay: Option<u64>,
    /// Worker threads (`auto` or a number); rtpengine's `--num-threads` is an alias.
    #[arg(long, alias = "num-threads")]
    workers: Option<String>,
    /// Prometheus listen address, or `off`.
    #[arg(long)]
    metrics: Option<String>,
    /// Log level: rtpengine's 0..7 or a tracing filter (`info`, `debug`, ...).
    #[arg(long = "log-level", short = 'L')]
    log_level: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Only latch a leg to the address its SDP names (no NAT learning).
    #[arg(long)]
    strict_source: bool,
    /// Write the process id to this file.
    #[arg(long)]
    pidfile: Option<PathBuf>,
    /// Accepted for rtpengine compatibility: we always run in the foreground.
    #[arg(long, short = 'f')]
    foreground: bool,
    /// Accepted for rtpengine compatibility: we always log to stderr.
    #[arg(long = "log-stderr", short = 'E')]
    log_stderr: bool,
    /// rtpengine's kernel forwarding table. Only -1 (none) is meaningful here;
    /// any other value is ignored with a warning.
    #[arg(long, allow_negative_numbers = true)]
    table: Option<i64>,
    /// Datapath: `socket`, `xdp` (AF_XDP; exit if it cannot run) or `auto`.
    #[arg(long)]
    datapath: Option<String>,
    /// Interface to attach the XDP program to (AF_XDP datapath); repeat for several.
    #[arg(long = "xdp-interface")]
    xdp_interface: Vec<String>,
    /// AF_XDP: recompute UDP checksums (senders on this host via veth or loopback).
    #[arg(long = "xdp-full-checksum")]
    xdp_full_checksum: bool,
    /// Media workers' scheduling policy: `other`, `fifo` or `rr` (rtpengine's option name).
    #[arg(long)]
    scheduling: Option<String>,
    /// Real-time priority of the media workers, 1 to 99 (with `fifo` or `rr`).
    #[arg(long)]
    priority: Option<i64>,
    /// CPU wakeup latency limit held while running, in microseconds, or `off`.
    #[arg(long = "cpu-latency-us")]
    cpu_latency_us: Option<String>,
}

fn build_config(cli: &Cli) -> Result<RelayConfig, String> {
    let file = cli.config.clone().or_else(|| cli.config_file.as_ref().filter(|f| *f != "none").map(PathBuf::from));
    let mut cfg = match file {
        Some(p) => RelayConfig::from_file(&p).map_err(|e| e.to_string())?,
        None => RelayConfig::embedded_default(),
    };
    if !cli.interface.is_empty() {
        cfg.interfaces = cli
            .interface
            .iter()
            .map(|s| Interface::parse(s).map_err(|e| format!("--interface: {e}")))
            .collect::<Result<_, _>>()?;
    }
    if let Some(l) = &cli.listen_ng {
        cfg.listen_ng = parse_listen("--listen-ng", l).map_err(|e| e.to_string())?;
    }
    if let Some(p) = cli.port_min {
        cfg.port_min = p;
    }
    if let Some(p) = cli.port_max {
        cfg.port_max = p;
    }
    if let Some(t) = cli.timeout {
        cfg.timeout = Duration::from_secs(t);
    }
    if let Some(d) = cli.delete_delay {
        cfg.delete_delay = Duration::from_secs(d);
    }
    if let Some(w) = &cli.workers {
        cfg.workers = match w.as_str() {
            "auto" => 0,
            n => n
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| format!("--workers: `{n}` is neither \"auto\" nor a number in 1..=1024"))?,
        };
        cfg.resolve_workers();
    }
    if let Some(m) = &cli.metrics {
        cfg.metrics = parse_listen("--metrics", m).map_err(|e| e.to_string())?;
    }
    if let Some(l) = &cli.log_level {
        cfg.log_level = log_filter(l);
    }
    if cli.strict_source {
        cfg.nat = false;
    }
    if let Some(d) = &cli.datapath {
        cfg.datapath = choice(d, &DatapathMode::NAMES).map_err(|p| format!("--datapath: {p}"))?;
    }
    if !cli.xdp_interface.is_empty() {
        cfg.xdp_interfaces.clone_from(&cli.xdp_interface);
    }
    if cli.xdp_full_checksum {
        cfg.xdp_full_checksum = true;
    }
    if let Some(policy) = &cli.scheduling {
        cfg.worker_scheduling = Scheduling::parse(policy, cli.priority)
            .map_err(|e| format!("{}: {}", if e.priority { "--priority" } else { "--scheduling" }, e.problem))?;
    } else if cli.priority.is_some() {
        return Err("--priority: needs --scheduling=fifo or --scheduling=rr".into());
    }
    if let Some(v) = &cli.cpu_latency_us {
        cfg.cpu_latency_us =
            media_relay::config::cpu_latency_from_str(v).map_err(|p| format!("--cpu-latency-us: {p}"))?;
    }
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match build_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("media-relay: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!("configuration OK: {cfg:#?}");
        return ExitCode::SUCCESS;
    }
    let log_reload = media_relay::logging::init_reloadable(&cfg.log_level, cli.log_json);
    if let Some(t) = cli.table.filter(|t| *t >= 0) {
        tracing::warn!(table = t, "--table: in-kernel forwarding is not supported; relaying in userspace");
    }
    let _ = (cli.foreground, cli.log_stderr);
    if let Err(e) = sys::block_signals() {
        tracing::warn!(error = %e, "could not block termination signals; Ctrl-C will kill without cleanup");
    }
    match run(&cfg, &cli, &log_reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("media-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: &RelayConfig, cli: &Cli, log_reload: &media_relay::logging::LogReload) -> Result<(), String> {
    // Bind the control sockets first, so a port clash fails before anything starts.
    let ng_sock = match cfg.listen_ng {
        Some(a) => Some(UdpSocket::bind(a).map_err(|e| format!("binding ng control socket {a}: {e}"))?),
        None => None,
    };
    let metrics_sock = match cfg.metrics {
        Some(a) => Some(TcpListener::bind(a).map_err(|e| format!("binding metrics listener {a}: {e}"))?),
        None => None,
    };
    if let Some(p) = &cli.pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .map_err(|e| format!("writing pidfile {}: {e}", p.display()))?;
    }
    let relay = Relay::start(cfg.clone()).map_err(|e| e.to_string())?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let ngc = Arc::new(NgCounters::default());
    let mut threads = Vec::new();
    if let Some(sock) = ng_sock {
        tracing::info!(addr = %cfg.listen_ng.map(|a| a.to_string()).unwrap_or_default(), "ng control protocol listening");
        let (r, c, s) = (Arc::clone(&relay), Arc::clone(&ngc), Arc::clone(&shutdown));
        let (size, age) = (cfg.ng_cache_size, cfg.ng_cache_age);
        threads.push(
            std::thread::Builder::new()
                .name("mr-ng".into())
                .spawn(move || {
                    if let Err(e) = ng::serve(sock, r.as_ref(), &c, size, age, &s) {
                        tracing::error!(error = %e, "ng server stopped");
                    }
                })
                .map_err(|e| format!("spawning ng thread: {e}"))?,
        );
    }
    if let Some(l) = metrics_sock {
        tracing::info!(addr = %cfg.metrics.map(|a| a.to_string()).unwrap_or_default(), "metrics listening on /metrics");
        let (r, c, s) = (Arc::clone(&relay), Arc::clone(&ngc), Arc::clone(&shutdown));
        threads.push(
            std::thread::Builder::new()
                .name("mr-metrics".into())
                .spawn(move || metrics::serve(&l, &r, &c, &s))
                .map_err(|e| format!("spawning metrics thread: {e}"))?,
        );
    }
    let mut running = cfg.clone();
    loop {
        let sig = sys::wait_for_signal();
        if sig == libc_sighup() {
            reload(&mut running, cli, &relay, log_reload);
            continue;
        }
        tracing::info!(signal = sig, "shutting down");
        break;
    }
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    relay.shutdown();
    if let Some(p) = &cli.pidfile {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// SIGHUP: reads the file (and flags) again. Only `relay.log_level`,
/// `relay.timeout` and `relay.max_sessions` change at run time; a change
/// to any other key, or a bad file, keeps the running configuration.
fn reload(running: &mut RelayConfig, cli: &Cli, relay: &Relay, log_reload: &media_relay::logging::LogReload) {
    let new = match build_config(cli) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: configuration not reloaded, the running one stays: {e}");
            return;
        }
    };
    if let Some(key) = media_relay::relay::restart_key(running, &new) {
        tracing::error!(
            key,
            "SIGHUP: configuration not reloaded, the running one stays: config key `{key}` changed: it needs a restart"
        );
        return;
    }
    if new.log_level != running.log_level {
        if let Err(e) = log_reload(&new.log_level) {
            tracing::error!("SIGHUP: configuration not reloaded, the running one stays: relay.log_level: {e}");
            return;
        }
    }
    relay.set_tunables(&new);
    tracing::info!(
        log_level = %new.log_level,
        timeout_s = new.timeout.as_secs(),
        max_sessions = new.max_sessions,
        "SIGHUP: configuration reloaded"
    );
    *running = new;
}

const fn libc_sighup() -> i32 {
    1
}
