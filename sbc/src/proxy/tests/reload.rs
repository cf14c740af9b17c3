//! Live reload ([`Proxy::reload`], [`Proxy::apply_reload`]): routes and
//! trunks change for new calls, established calls keep their trunk, a bad
//! or restart-only change keeps the running configuration.

use super::sip::{respond, Request};
use super::{only_to, Harness, CALLER, TRUNK_A, TRUNK_B};
use crate::config::Config;
use crate::proxy::ReloadError;
use crate::sip::Message;

/// Trunk `c`, added by the reloads below.
const TRUNK_C: &str = "127.0.0.1:5090";

/// The harness config (trunks `a`, `b`, route `a`, `b`) plus trunk `c`,
/// with the route now `c` alone.
fn with_c_routed() -> String {
    Harness::config().replace("trunks = [\"a\", \"b\"]", "trunks = [\"c\"]")
        + &format!("\n[[trunk]]\nname = \"c\"\naddress = \"{TRUNK_C}\"\nprobe = false\n")
}

/// The harness config with trunk `a` replaced by `c` (route `c`, `b`).
fn without_a() -> String {
    Harness::config()
        .replace(&format!("name = \"a\"\naddress = \"{TRUNK_A}\""), &format!("name = \"c\"\naddress = \"{TRUNK_C}\""))
        .replace("trunks = [\"a\", \"b\"]", "trunks = [\"c\", \"b\"]")
}

fn reload(h: &mut Harness, toml: &str) -> Result<crate::proxy::ReloadSummary, ReloadError> {
    let cfg = Config::from_toml(toml).unwrap();
    let now = h.now;
    h.proxy.reload(&cfg, now)
}

/// Sets up call `call_id` through the trunk at `trunk`: returns the INVITE
/// as the trunk got it and the 200 as the caller got it (ACK sent too).
fn establish(h: &mut Harness, call_id: &str, trunk: &str) -> (Message, Message) {
    let out = h.send(CALLER, &Request::new("INVITE", call_id).sdp(6000).build());
    let invite = only_to(&out, trunk).msg.clone();
    let out = h.send(trunk, &respond(&invite, 200, Some(7000)));
    let ok = only_to(&out, CALLER).msg.clone();
    let out = h.send(CALLER, &Request::new("ACK", call_id).in_dialog(&ok).build());
    assert_eq!(only_to(&out, trunk).method(), "ACK");
    (invite, ok)
}

fn trunk_row(h: &mut Harness, name: &str) -> String {
    let table = h.proxy.control("trunks");
    table.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{table}")).to_owned()
}

#[test]
fn a_new_trunk_and_route_take_new_calls_while_an_established_call_keeps_its_trunk() {
    let mut h = Harness::new();
    let (_, ok) = establish(&mut h, "r1", TRUNK_A);

    let summary = reload(&mut h, &with_c_routed()).unwrap();
    assert_eq!(summary.added, vec!["c".to_owned()]);
    assert!(summary.removed.is_empty() && summary.changed.is_empty(), "{summary:?}");
    assert_eq!(summary.to_string(), "trunks: +1 -0 ~0, routes: 1, users: 0 [+c]");

    // A new call goes to trunk c.
    let (_, ok2) = establish(&mut h, "r2", TRUNK_C);
    // The established call's BYE still goes to trunk a, and its 200 back.
    let out = h.send(CALLER, &Request::new("BYE", "r1").cseq(2).in_dialog(&ok).build());
    let bye = only_to(&out, TRUNK_A).msg.clone();
    assert_eq!(bye.method(), Some(&crate::sip::Method::Bye));
    let out = h.send(TRUNK_A, &respond(&bye, 200, None));
    assert_eq!(only_to(&out, CALLER).code(), 200);
    assert_eq!(h.gauge(|m| &m.dialogs), 1, "the call on c is up");
    let text = h.metrics.render();
    assert!(text.contains("sbc_trunk_calls_active{trunk=\"c\"} 1"), "the new trunk has its series: {text}");
    let out = h.send(CALLER, &Request::new("BYE", "r2").cseq(2).in_dialog(&ok2).build());
    assert_eq!(only_to(&out, TRUNK_C).method(), "BYE");
    let text = h.metrics.render();
    assert!(text.contains("sbc_trunk_attempts_total{trunk=\"c\",outcome=\"answered\"} 1"), "{text}");
}

#[test]
fn a_removed_trunk_serves_its_calls_in_dialog_but_gets_no_new_ones() {
    let mut h = Harness::new();
    let (invite, _) = establish(&mut h, "r3", TRUNK_A);

    let summary = reload(&mut h, &without_a()).unwrap();
    assert_eq!((summary.added.clone(), summary.removed.clone()), (vec!["c".to_owned()], vec!["a".to_owned()]));
    assert!(trunk_row(&mut h, "a").contains("RETIRED"), "{}", h.proxy.control("trunks"));
    // New calls: c, then b; never a.
    let out = h.send(CALLER, &Request::new("INVITE", "r4").sdp(6002).build());
    let first = only_to(&out, TRUNK_C).msg.clone();
    let out = h.send(TRUNK_C, &respond(&first, 503, None));
    assert!(out.iter().all(|s| s.dest != super::addr(TRUNK_A)), "{out:#?}");
    let second = only_to(&out, TRUNK_B).msg.clone();
    let out = h.send(TRUNK_B, &respond(&second, 503, None));
    assert_eq!(only_to(&out, CALLER).code(), 503, "a is not tried after c and b");

    // The carrier behind the removed trunk hangs up the established call:
    // its BYE (to the Contact the sbc gave it) reaches the caller.
    let contact = invite.header("contact").unwrap().to_owned();
    let uri = contact.trim_start_matches('<').split('>').next().unwrap().to_owned();
    let bye = format!(
        "BYE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {TRUNK_A};branch=z9hG4bK-bye-r3\r\nMax-Forwards: 70\r\n\
         Route: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:1000@127.0.0.1>;tag=b1\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n",
        invite.header("from").unwrap(),
        invite.header("call-id").unwrap()
    );
    let out = h.send(TRUNK_A, bye.as_bytes());
    let fwd = only_to(&out, CALLER);
    assert_eq!(fwd.method(), "BYE", "{out:#?}");
    assert_eq!(h.gauge(|m| &m.dialogs), 0);

    // Reloading the same file again changes nothing more.
    let again = reload(&mut h, &without_a()).unwrap();
    assert_eq!(again.to_string(), "trunks: +0 -0 ~0, routes: 1, users: 0");
}

#[test]
fn a_bad_file_keeps_the_running_configuration_and_says_why() {
    let mut h = Harness::new();
    let bad = Harness::config().replace("trunks = [\"a\", \"b\"]", "trunks = [\"a\", \"nope\"]");
    let now = h.now;
    let reply = h.proxy.apply_reload(Config::from_toml(&bad), "test", now);
    assert!(reply.starts_with("error: configuration not reloaded"), "{reply}");
    assert!(reply.contains("route[0].trunks") || reply.contains("nope"), "names the key: {reply}");
    let reply = h.proxy.apply_reload(Config::from_toml("[sip]\nlisten = 5"), "test", now);
    assert!(reply.starts_with("error:"), "{reply}");
    assert_eq!(h.metrics.reloads.counts(), (0, 2));
    establish(&mut h, "r5", TRUNK_A);

    let reply = h.proxy.apply_reload(Config::from_toml(&with_c_routed()), "test", now);
    assert!(reply.starts_with("ok: configuration reloaded: trunks: +1"), "{reply}");
    assert_eq!(h.metrics.reloads.counts(), (1, 2));
    let text = h.metrics.render();
    assert!(text.contains("sbc_config_reloads_total{result=\"error\"} 2"), "{text}");
    assert!(!text.contains("sbc_config_last_reload_success_timestamp_seconds 0\n"), "{text}");
}

#[test]
fn a_trunk_kept_by_name_keeps_its_state_unless_its_address_changed() {
    let mut h = Harness::new();
    assert!(h.proxy.control("trunk b down").starts_with("ok"));
    // b is kept; a change of its cap is a change, not a new trunk.
    let capped = with_c_routed()
        .replace("probe = false\n\n[[trunk]]\nname = \"c\"", "probe = false\nmax_calls = 5\n\n[[trunk]]\nname = \"c\"");
    let summary = reload(&mut h, &capped).unwrap();
    assert_eq!(summary.changed, vec!["b".to_owned()], "{summary:?}");
    let row = trunk_row(&mut h, "b");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!((cols[2], cols[3]), ("DOWN", "DOWN"), "still forced DOWN: {row}");
    // Moved elsewhere: fresh state.
    let moved = capped.replace(&format!("address = \"{TRUNK_B}\""), "address = \"127.0.0.1:5081\"");
    let summary = reload(&mut h, &moved).unwrap();
    assert_eq!(summary.changed, vec!["b".to_owned()]);
    let row = trunk_row(&mut h, "b");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!((cols[1], cols[2], cols[3]), ("127.0.0.1:5081", "UP", "-"), "fresh state: {row}");
}

#[test]
fn a_listen_change_is_refused_naming_the_key_and_nothing_changes() {
    let mut h = Harness::new();
    let toml = with_c_routed().replace("listen = \"127.0.0.1:5060\"", "listen = \"127.0.0.1:5061\"");
    assert_eq!(reload(&mut h, &toml), Err(ReloadError::NeedsRestart("sip.listen".into())));
    let toml =
        with_c_routed().replace("[metrics]\nlisten = \"127.0.0.1:9102\"", "[metrics]\nlisten = \"127.0.0.1:9103\"");
    assert_eq!(reload(&mut h, &toml), Err(ReloadError::NeedsRestart("metrics.listen".into())));
    let now = h.now;
    let reply = h.proxy.apply_reload(Config::from_toml(&toml), "test", now);
    assert!(reply.contains("`metrics.listen`") && reply.contains("needs a restart"), "{reply}");
    let toml = with_c_routed().replace("port_min = 40000", "port_min = 41000");
    assert_eq!(reload(&mut h, &toml), Err(ReloadError::NeedsRestart("relay.port_min".into())));
    // Routes as before: trunk a.
    establish(&mut h, "r6", TRUNK_A);
    // The relay's timeout may change.
    let toml = Harness::config().replace("timeout = 60", "timeout = 30");
    assert_eq!(reload(&mut h, &toml).map(|s| s.to_string()), Ok("trunks: +0 -0 ~0, routes: 1, users: 0".into()));
    assert_eq!(h.proxy.config().relay.timeout, std::time::Duration::from_secs(30));
}

#[test]
fn guard_lists_and_acls_follow_the_reload() {
    let mut h = Harness::new();
    let ip = super::addr(CALLER).ip();
    assert!(!h.proxy.guard().exempt(ip));
    let toml = Harness::config() + "\n[guard]\nnever_ban = [\"192.0.2.0/24\"]\n";
    reload(&mut h, &toml).unwrap();
    assert!(h.proxy.guard().exempt(ip), "never_ban reloaded");
    assert_eq!(h.proxy.config().guard.never_ban.len(), 1);

    // The realm's ACL: the caller is denied after the reload (403, counted),
    // and admitted again after the next one.
    let deny = Harness::config().replace("[sip]\n", "[sip]\ndeny = [\"192.0.2.0/24\"]\n");
    reload(&mut h, &deny).unwrap();
    let out = h.send(CALLER, &Request::new("INVITE", "r7").sdp(6000).build());
    assert_eq!(only_to(&out, CALLER).code(), 403, "{out:#?}");
    assert_eq!(h.metrics.acl_denied_count(0), 1);
    reload(&mut h, &Harness::config()).unwrap();
    establish(&mut h, "r8", TRUNK_A);
}
