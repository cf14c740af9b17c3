//! `sbc`: the xsbc session border controller.
//!
//! `sbc run [--config FILE]` starts it (the embedded loopback config when no
//! file is given); `sbc check-config --config FILE` validates a file.

use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use media_relay::ng::NgCounters;
use media_relay::relay::Relay;
use sbc::cdr::CdrWriter;
use sbc::config::{Config, ConfigError};
use sbc::error::Error;
use sbc::ha::{ToHa, ToProxy};
use sbc::metrics::SbcMetrics;
use sbc::proxy::Proxy;
use sbc::transport::{Proto, Transport};

/// xsbc session border controller.
#[derive(Parser, Debug)]
#[command(name = "sbc", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the SBC.
    Run {
        /// TOML configuration (default: the embedded loopback config).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log as JSON lines.
        #[arg(long)]
        log_json: bool,
    },
    /// Validate a configuration file and exit.
    CheckConfig {
        /// TOML configuration to check (default: the embedded one).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Talk to a running sbc: `trunks`, `trunk NAME up|down|auto`, `calls`, `call CALLID`, `relays`, `ha`,
    /// `failover`, `bans`, `ban ADDR[/LEN] [--for DURATION]`, `unban ADDR[/LEN]`, `reload`.
    Ctl {
        /// The control socket (default: `control.socket` of the config).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Config whose `control.socket` to use.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The command words (`--for` of `ban` included).
        #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// Read a password from stdin and print the users file line for USER.
    Passwd {
        /// The user name.
        user: String,
        /// The digest realm (default: `auth.realm` of the config, else its first domain).
        #[arg(long)]
        realm: Option<String>,
        /// Config whose realm to use (default: the embedded one).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn load(path: Option<&PathBuf>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::from_file(p),
        None => Config::embedded_default(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::CheckConfig { config } => match load(config.as_ref()) {
            Ok(c) => {
                println!(
                    "configuration OK: SIP on {} ({}), {} trunk(s), {} route(s), media ports {}-{}{}",
                    c.listen,
                    if c.tcp { "UDP+TCP" } else { "UDP" },
                    c.trunks.len(),
                    c.routes.len(),
                    c.relay.port_min,
                    c.relay.port_max,
                    c.ha.as_ref().map_or(String::new(), |h| format!(
                        ", HA node `{}` (VIP {}, Redis {}, peer {})",
                        h.node_id,
                        sbc::ha::vip::list(h.vips()),
                        h.redis,
                        h.peer
                    ))
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sbc: configuration error: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Ctl { socket, config, words } => {
            let path = match socket {
                Some(p) => p,
                None => match load(config.as_ref()).map(|c| c.control_socket) {
                    Ok(Some(p)) => p,
                    Ok(None) => {
                        eprintln!("sbc ctl: the configuration has no control.socket");
                        return ExitCode::from(2);
                    }
                    Err(e) => {
                        eprintln!("sbc ctl: configuration error: {e}");
                        return ExitCode::from(2);
                    }
                },
            };
            match sbc::control::request(&path, &words.join(" ")) {
                Ok(reply) => {
                    print!("{reply}");
                    if reply.starts_with("error") {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("sbc ctl: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Passwd { user, realm, config } => passwd(&user, realm, config.as_ref()),
        Cmd::Run { config, log_json } => {
            let cfg = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("sbc: configuration error: {e}");
                    return ExitCode::from(2);
                }
            };
            media_relay::logging::init(&cfg.log_level, log_json);
            if let Err(e) = media_relay::os::block_signals() {
                tracing::warn!(error = %e, "could not block termination signals");
            }
            match run(cfg, config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("sbc: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `sbc passwd`: the users file line for `user`, the password read from stdin.
fn passwd(user: &str, realm: Option<String>, config: Option<&PathBuf>) -> ExitCode {
    let realm = match realm {
        Some(r) => r,
        None => match load(config) {
            Ok(c) => c.auth.map(|a| a.realm).or_else(|| c.domains.first().cloned()).unwrap_or_default(),
            Err(e) => {
                eprintln!("sbc passwd: configuration error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    if user.is_empty() || user.contains([':', '"', '\\']) || realm.is_empty() || realm.contains(':') {
        eprintln!("sbc passwd: the user and realm may not be empty or hold `:`");
        return ExitCode::from(2);
    }
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut password) {
        eprintln!("sbc passwd: reading the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = password.strip_suffix('\n').unwrap_or(&password);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("sbc passwd: empty password");
        return ExitCode::from(2);
    }
    println!("{}", sbc::auth::users::line_for(user, &realm, password));
    ExitCode::SUCCESS
}

/// Reads the users file again (SIGHUP), on the signal thread: the new
/// table goes to the signaling thread; a bad file keeps the old one.
fn reload_users(auth: &sbc::config::AuthConfig, to_proxy: &std::sync::mpsc::Sender<sbc::auth::users::Users>) {
    let Some(path) = &auth.users_file else {
        tracing::info!("SIGHUP: no auth.users_file to reload");
        return;
    };
    match sbc::auth::users::Users::load(path, &auth.realm) {
        Ok(users) => {
            tracing::info!(users = users.len(), file = %path.display(), "SIGHUP: users file reloaded");
            let _ = to_proxy.send(users);
        }
        Err(e) => tracing::error!(file = %path.display(), "SIGHUP: users file not reloaded, the old table stays: {e}"),
    }
}

/// Sends what the proxy has to send, and hands the transport's failures
/// back to it (RFC 3261 §18.4): a send over TCP or TLS that fails at once,
/// connections that failed with messages queued, and peers' connections
/// that closed. Those end transactions, whose failover makes more to send,
/// so this goes round until nothing is left (a bounded number of times).
/// `flush_media` runs before a batch made by those failures goes out (the
/// caller has flushed for what was there before), so that the relay has
/// the sessions their SDP advertises.
fn send_all(proxy: &mut Proxy, transport: &mut Transport, now: Instant, flush_media: &dyn Fn()) {
    // Whether failures were handed to the proxy since the last flush.
    let mut reported = false;
    for _ in 0..16 {
        let (flows, undelivered) = (transport.take_closed_flows(), transport.take_undelivered());
        reported |= !flows.is_empty() || !undelivered.is_empty();
        for flow in flows {
            proxy.flow_closed(flow);
        }
        for u in undelivered {
            proxy.transport_error(u.dest, u.proto, u.realm, now);
        }
        let out = proxy.drain_output();
        if out.is_empty() {
            return;
        }
        if std::mem::take(&mut reported) {
            flush_media();
        }
        for o in out {
            if let Err(e) = transport.send(&o, now) {
                sbc::info_limited!(dest = %o.dest, proto = o.proto.via_name(), error = %e, "SIP send failed");
                // A datagram that cannot go now is retransmitted or times
                // out as before; a stream destination is a transport error.
                if o.proto.reliable() {
                    proxy.transport_error(o.dest, o.proto, o.realm, now);
                    reported = true;
                }
            }
        }
    }
}

/// A configuration file read again for a reload, on its way to the
/// signaling thread (with where to send the `sbc ctl reload` reply).
struct Reload {
    loaded: Result<Config, ConfigError>,
    origin: &'static str,
    reply: Option<std::sync::mpsc::Sender<String>>,
}

/// Reads `path` again for a reload off the signaling thread (the users
/// file may be large) and hands the result to it.
fn spawn_reload_read(
    path: PathBuf,
    origin: &'static str,
    reply: Option<std::sync::mpsc::Sender<String>>,
    to_proxy: std::sync::mpsc::Sender<Reload>,
) {
    // The signaling loop polls the channel at least every 100 ms.
    let read = move || {
        let loaded = Config::from_file(&path);
        let _ = to_proxy.send(Reload { loaded, origin, reply });
    };
    if let Err(e) = std::thread::Builder::new().name("sbc-reload".into()).spawn(read) {
        tracing::error!(error = %e, "configuration not reloaded: cannot start the reader thread");
    }
}

fn run(cfg: Config, cfg_path: Option<PathBuf>) -> Result<(), Error> {
    let cfg = Arc::new(cfg);
    let listens: Vec<_> = cfg.realms.iter().map(|r| r.listen).collect();
    let mut transport = Transport::bind_realms(&listens, cfg.tcp, cfg.max_message_size, cfg.ha.is_some())
        .map_err(|source| Error::BindSip { addr: cfg.listen, source })?;
    transport.set_limits(cfg.tls.limits);
    let acl_cfg = Arc::clone(&cfg);
    transport.set_admission(Box::new(move |realm, ip| {
        acl_cfg.acls.get(realm).is_none_or(|a| a.is_open() || a.permits(ip, acl_cfg.trunk_at(ip, realm).is_some()))
    }));
    if cfg.uses_tls() {
        let tls_listens: Vec<_> = cfg.realms.iter().map(|r| r.tls_listen).collect();
        let addr = tls_listens.iter().flatten().next().copied().unwrap_or(cfg.listen);
        let setup = cfg.tls_setup().map_err(|e| Error::BindSip { addr, source: std::io::Error::other(e) })?;
        transport
            .enable_tls(&tls_listens, setup, cfg.ha.is_some())
            .map_err(|source| Error::BindSip { addr, source })?;
    }
    let metrics_sock = match cfg.metrics {
        Some(a) => Some(TcpListener::bind(a).map_err(|source| Error::BindMetrics { addr: a, source })?),
        None => None,
    };
    let ng_sock = match cfg.relay.listen_ng {
        Some(a) => Some(UdpSocket::bind(a).map_err(|source| Error::BindNg { addr: a, source })?),
        None => None,
    };
    let mut cdr = CdrWriter::open(cfg.cdr_file.as_deref()).map_err(|source| Error::OpenCdr { source })?;
    let relay = Relay::start(cfg.relay.clone())?;
    // Remote relays over ng, when `[[media_relay]]` lists any.
    let pool = if cfg.media_relays.is_empty() {
        None
    } else {
        let p = sbc::relays::RelayPool::new(&cfg.media_relays, cfg.health.thresholds)
            .map_err(|e| media_relay::control::RelayError::Datapath(format!("media relays: {e}")))?;
        Some(Arc::new(p))
    };
    let names: Vec<String> = cfg.trunks.iter().map(|t| t.name.clone()).collect();
    let metrics = Arc::new(SbcMetrics::new(&names));
    let control = match &cfg.control_socket {
        Some(p) => Some(sbc::control::Server::bind(p)?),
        None => None,
    };
    let ngc = Arc::new(NgCounters::default());
    let shutdown = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    if let Some(sp) = &cfg.cdr_spool {
        let (c, t) = sbc::cdr::start_spool(cdr, sp, &metrics.cdr, &shutdown)
            .map_err(|e| Error::OpenCdr { source: std::io::Error::other(e) })?;
        cdr = c;
        threads.extend(t);
    }
    let ha_status = cfg.ha.as_ref().map(|_| Arc::new(sbc::ha::HaStatus::default()));
    if let Some(l) = metrics_sock {
        let (m, r, n, s) = (Arc::clone(&metrics), Arc::clone(&relay), Arc::clone(&ngc), Arc::clone(&shutdown));
        let hs = ha_status.clone();
        let pm = pool.clone();
        threads.push(
            std::thread::Builder::new()
                .name("sbc-metrics".into())
                .spawn(move || {
                    let render = || {
                        m.render()
                            + &media_relay::metrics::render(&r, &n)
                            + &hs.as_ref().map(|h| h.render()).unwrap_or_default()
                            + &pm.as_ref().map(|p| p.render_metrics()).unwrap_or_default()
                    };
                    media_relay::metrics::serve_with(&l, &render, &s);
                })
                .map_err(|source| Error::Spawn { name: "sbc-metrics", source })?,
        );
    }
    if let Some(sock) = ng_sock {
        let (r, c, s) = (Arc::clone(&relay), Arc::clone(&ngc), Arc::clone(&shutdown));
        let (size, age) = (cfg.relay.ng_cache_size, cfg.relay.ng_cache_age);
        threads.push(
            std::thread::Builder::new()
                .name("sbc-ng".into())
                .spawn(move || {
                    if let Err(e) = media_relay::ng::serve(sock, r.as_ref(), &c, size, age, &s) {
                        tracing::error!(error = %e, "ng server stopped");
                    }
                })
                .map_err(|source| Error::Spawn { name: "sbc-ng", source })?,
        );
    }
    let (users_tx, users_rx) = std::sync::mpsc::channel();
    let (reload_tx, reload_rx) = std::sync::mpsc::channel::<Reload>();
    {
        let s = Arc::clone(&shutdown);
        let auth = cfg.auth.clone();
        let (path, to_proxy) = (cfg_path.clone(), reload_tx.clone());
        std::thread::Builder::new()
            .name("sbc-signals".into())
            .spawn(move || loop {
                let sig = media_relay::os::wait_for_signal();
                if sig == 1 {
                    if let Some(p) = &path {
                        spawn_reload_read(p.clone(), "SIGHUP", None, to_proxy.clone());
                        continue;
                    }
                    match &auth {
                        Some(a) => reload_users(a, &users_tx),
                        None => {
                            tracing::info!("SIGHUP: running the embedded configuration, there is no file to reload")
                        }
                    }
                    continue;
                }
                tracing::info!(signal = sig, "shutting down");
                s.store(true, Ordering::Relaxed);
                return;
            })
            .map_err(|source| Error::Spawn { name: "sbc-signals", source })?;
    }
    let media: Arc<dyn media_relay::control::MediaControl> = match &pool {
        Some(p) => {
            threads.push(
                sbc::relays::spawn_probes(Arc::clone(p), Arc::clone(&shutdown))
                    .map_err(|source| Error::Spawn { name: "sbc-relay-probe", source })?,
            );
            let names: Vec<&str> = cfg.media_relays.iter().map(|r| r.name.as_str()).collect();
            tracing::info!(relays = ?names, "media on remote relays over ng");
            Arc::clone(p) as Arc<dyn media_relay::control::MediaControl>
        }
        None => relay.clone(),
    };
    let mut proxy = Proxy::new(Arc::clone(&cfg), media, Arc::clone(&metrics), cdr);
    proxy.open_message_spool()?;
    // Bans also go into the XDP program on the AF_XDP datapath, and the
    // relay's media-flood reports become bans.
    proxy.guard_mut().set_enforcer(Arc::clone(&relay) as Arc<dyn sbc::guard::BanEnforcer>);
    if let Some(a) = &cfg.auth {
        tracing::info!(realm = %a.realm, users = a.users.len(), "digest authentication on");
    }
    // The source guard's bans are checked on every SIP datagram and at
    // TCP/TLS accept, before anything is copied or parsed.
    let bans = proxy.guard().shared();
    let guard_metrics = Arc::clone(&metrics);
    transport.set_guard(Box::new(move |ip| {
        let allowed = !bans.is_banned(ip);
        if !allowed {
            guard_metrics.guard.dropped(sbc::guard::DropReason::Banned);
        }
        allowed
    }));
    // With HA, bans are replicated through Redis and loaded at start.
    let ban_replica = match &cfg.ha {
        Some(h) => {
            let r = sbc::guard::replica::BanReplica::spawn(h.redis.clone(), &h.key_prefix, Arc::clone(&shutdown))
                .map_err(|source| Error::Spawn { name: "sbc-bans", source })?;
            proxy.guard_mut().track_changes();
            proxy.guard_mut().load_asked(Instant::now());
            r.request_load();
            Some(r)
        }
        None => None,
    };
    // Without a configured secret, an HA pair shares one through Redis.
    let secret_rx = match (&cfg.ha, &cfg.auth) {
        (Some(h), Some(a)) if a.secret.is_none() => {
            Some(sbc::ha::secret::fetch_in_background(h, Arc::clone(&shutdown)))
        }
        _ => None,
    };
    // One waker for the signaling thread's poll, shared by the HA thread and
    // the AF_XDP workers' SIP handoff (mio allows one per poll).
    let mut sip_rings = relay.sip_handoff().take_consumers();
    let waker = if cfg.ha.is_some() || !sip_rings.is_empty() {
        Some(transport.waker().map_err(|source| Error::Waker { source })?)
    } else {
        None
    };
    if let (Some(w), false) = (&waker, sip_rings.is_empty()) {
        let w = Arc::clone(w);
        relay.sip_handoff().set_waker(Box::new(move || {
            let _ = w.wake();
        }));
        tracing::info!(workers = sip_rings.len(), "SIP on the AF_XDP datapath is handed over from the media workers");
    }
    // High availability: a thread that replicates state and owns the lease.
    let mut ha_link: Option<(std::sync::mpsc::Sender<ToHa>, std::sync::mpsc::Receiver<ToProxy>)> = None;
    if let (Some(hc), Some(status)) = (&cfg.ha, &ha_status) {
        proxy.track_changes();
        let (to_ha, from_proxy) = std::sync::mpsc::channel();
        let (to_proxy, from_ha) = std::sync::mpsc::channel();
        // Created above whenever `[ha]` is configured.
        let waker =
            waker.clone().ok_or_else(|| Error::Waker { source: std::io::Error::other("no signaling waker") })?;
        let links = sbc::ha::Links {
            relay: Arc::clone(&relay),
            to_proxy,
            wake_proxy: Arc::new(move || {
                let _ = waker.wake();
            }),
            from_proxy,
            shutdown: Arc::clone(&shutdown),
        };
        let node = sbc::ha::Node::new(hc.clone(), links, Arc::clone(status))
            .map_err(|source| Error::BindHeartbeat { addr: hc.heartbeat, source })?;
        threads.push(
            std::thread::Builder::new()
                .name("sbc-ha".into())
                .spawn(move || node.run())
                .map_err(|source| Error::Spawn { name: "sbc-ha", source })?,
        );
        proxy.set_active(false);
        ha_link = Some((to_ha, from_ha));
    }
    let vips = cfg.ha.as_ref().map_or_else(String::new, |h| sbc::ha::vip::list(h.vips()));
    tracing::info!(listen = %cfg.listen, tcp = cfg.tcp, ha = cfg.ha.is_some(), vips = %vips, "sbc started");
    let control_rx = control.map(|c| c.spawn(Arc::clone(&shutdown)));
    let mut inbound = Vec::new();
    let mut dropped_seen = 0u64;
    while !shutdown.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = proxy
            .next_deadline()
            .map_or(Duration::from_millis(100), |d| d.saturating_duration_since(now))
            .min(Duration::from_millis(100));
        if let Err(e) = transport.poll(Some(wait), &mut inbound, now) {
            tracing::error!(error = %e, "SIP transport poll failed");
            std::thread::sleep(Duration::from_millis(10));
        }
        for ring in &mut sip_rings {
            while let Ok(d) = ring.pop() {
                // The realm whose SIP socket the datagram was addressed to.
                // The XDP program steers by port alone: a datagram for an
                // address no realm listens on (a scanner sweeping the
                // subnet through us) is dropped and counted, as the kernel
                // would have dropped it on the socket datapath.
                let Some(realm) = cfg.realms.iter().position(|r| r.listen == d.dst).or_else(|| {
                    cfg.realms.iter().position(|r| {
                        r.listen.port() == d.dst.port()
                            && (r.listen.ip().is_unspecified() || r.listen.ip() == d.dst.ip())
                    })
                }) else {
                    metrics.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(src = %d.src, dst = %d.dst, "SIP handed over for an address no realm listens on: dropped");
                    continue;
                };
                let data = d.payload().to_vec();
                inbound.push(sbc::transport::Inbound { data, src: d.src, proto: Proto::Udp, realm });
            }
        }
        while let Ok(users) = users_rx.try_recv() {
            proxy.set_users(users);
        }
        while let Ok(r) = reload_rx.try_recv() {
            let reply = proxy.apply_reload(r.loaded, r.origin, Instant::now());
            let new_cfg = Arc::clone(proxy.config());
            // `relay.timeout` and `relay.max_sessions` of the embedded relay.
            relay.set_tunables(&new_cfg.relay);
            transport.set_admission(Box::new(move |realm, ip| {
                new_cfg
                    .acls
                    .get(realm)
                    .is_none_or(|a| a.is_open() || a.permits(ip, new_cfg.trunk_at(ip, realm).is_some()))
            }));
            if let Some(tx) = r.reply {
                let _ = tx.send(reply);
            }
        }
        if let Some(Ok(secret)) = secret_rx.as_ref().map(std::sync::mpsc::Receiver::try_recv) {
            tracing::info!("auth: using the pair's shared nonce secret");
            proxy.set_auth_secret(&secret);
        }
        for m in inbound.drain(..) {
            proxy.handle(m, Instant::now());
        }
        // One wakeup for the relay workers per batch of SIP messages.
        media_relay::control::MediaControl::flush(relay.as_ref());
        if let Some(rx) = &control_rx {
            while let Ok((line, reply)) = rx.try_recv() {
                match (line.split_whitespace().next(), &ha_link) {
                    (Some("failover"), Some((to_ha, _))) => {
                        let _ = to_ha.send(ToHa::Failover(reply));
                    }
                    (Some("ha"), Some((to_ha, _))) => {
                        let _ = to_ha.send(ToHa::Status(reply));
                    }
                    (Some("relays"), _) => {
                        let _ = reply.send(pool.as_ref().map_or_else(
                            || "error: no [[media_relay]] in the configuration (media on the embedded relay)\n".into(),
                            |p| p.table(),
                        ));
                    }
                    (Some("reload"), _) => match &cfg_path {
                        Some(p) => spawn_reload_read(p.clone(), "sbc ctl reload", Some(reply), reload_tx.clone()),
                        None => {
                            let _ = reply
                                .send("error: the sbc runs the embedded configuration: no file to reload\n".into());
                        }
                    },
                    (Some("failover" | "ha"), None) => {
                        let _ = reply.send("error: no [ha] section in the configuration\n".into());
                    }
                    _ => {
                        let _ = reply.send(proxy.control(&line));
                    }
                }
            }
        }
        if let Some((to_ha, from_ha)) = &ha_link {
            while let Ok(m) = from_ha.try_recv() {
                match m {
                    ToProxy::Import { dialogs, bindings, reply } => {
                        let now = Instant::now();
                        proxy.import_bindings(&bindings, now);
                        // The phones' TCP and TLS connections ended with the
                        // old active: their bindings go as for a closed
                        // connection, and their addresses are never dialled.
                        let lost = transport.lose_flows(&proxy.binding_flows(now), now);
                        if lost > 0 {
                            tracing::info!(flows = lost, "HA: connections held by the old active are gone");
                        }
                        let _ = reply.send(proxy.import_dialogs(&dialogs, now));
                    }
                    ToProxy::SetActive(active) => {
                        if !active {
                            proxy.stand_down();
                        } else if let Some(r) = &ban_replica {
                            // The bans the old active placed.
                            proxy.guard_mut().load_asked(Instant::now());
                            r.request_load();
                        }
                        proxy.set_active(active);
                    }
                    ToProxy::DumpAll(reply) => {
                        let now = Instant::now();
                        let _ = reply
                            .send(sbc::ha::Dump { dialogs: proxy.dump_dialogs(), bindings: proxy.dump_bindings(now) });
                    }
                }
            }
            let dialogs = proxy.take_dialog_changes();
            let bindings = proxy.take_binding_changes(Instant::now());
            if !dialogs.is_empty() || !bindings.is_empty() {
                let _ = to_ha.send(ToHa::Changes { dialogs, bindings });
            }
        }
        if let Some(r) = &ban_replica {
            for c in proxy.guard_mut().take_changes() {
                r.send(c);
            }
            if let Some(records) = r.try_loaded() {
                proxy.guard_mut().import(&records, Instant::now());
            }
        }
        let now = Instant::now();
        proxy.on_timer(now);
        media_relay::control::MediaControl::flush(relay.as_ref());
        send_all(&mut proxy, &mut transport, now, &|| media_relay::control::MediaControl::flush(relay.as_ref()));
        sbc::metrics::ConnMetrics::store(&metrics.conns, transport.connections(), &transport.stats);
        for (realm, drops) in transport.rx_queue_drops().enumerate() {
            metrics.rx_queue_drops(realm, drops);
        }
        let d = transport.drops.oversize + transport.drops.bad_framing;
        if d > dropped_seen {
            metrics.dropped.fetch_add(d - dropped_seen, Ordering::Relaxed);
            dropped_seen = d;
        }
    }
    shutdown.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    relay.shutdown();
    Ok(())
}
