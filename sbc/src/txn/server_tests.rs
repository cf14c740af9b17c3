//! Server transaction tests: every transition and timer of figures 7 and 8,
//! on unreliable and reliable transports, driven with exact instants.

use std::time::{Duration, Instant};

use super::{Kind, ServerAction as A, ServerState as S, ServerTxn, TimerConfig};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn resp(code: u16) -> Vec<u8> {
    format!("SIP/2.0 {code} X\r\n\r\n").into_bytes()
}

fn send(code: u16) -> A {
    A::Send(resp(code))
}

fn start(kind: Kind, reliable: bool, cfg: TimerConfig) -> (ServerTxn, Instant) {
    let t0 = Instant::now();
    (ServerTxn::new(kind, reliable, cfg, t0), t0)
}

/// Polls at each deadline up to `until` (ms after `t0`) or termination.
fn run(t: &mut ServerTxn, t0: Instant, until: u64) -> Vec<(u64, Vec<A>)> {
    let mut log = Vec::new();
    while let Some(at) = t.next_deadline().filter(|&at| at <= t0 + ms(until)) {
        let acts = t.on_timer(at);
        assert!(!acts.is_empty(), "deadline with nothing to do");
        log.push((u64::try_from((at - t0).as_millis()).unwrap(), acts));
    }
    log
}

fn resends(code: u16, at: &[u64]) -> Vec<(u64, Vec<A>)> {
    at.iter().map(|&s| (s, vec![send(code)])).collect()
}

/// Sends 100 then `code` at `t0`.
fn trying_then(t: &mut ServerTxn, t0: Instant, code: u16) {
    assert_eq!(t.send_response(100, resp(100), t0), vec![send(100)]);
    assert_eq!(t.send_response(code, resp(code), t0), vec![send(code)]);
}

#[test]
fn invite_non_2xx_timer_g_until_ack_then_timer_i() {
    let (mut t, t0) = start(Kind::Invite, false, TimerConfig::default());
    assert_eq!((t.state(), t.kind()), (S::Proceeding, Kind::Invite));
    assert_eq!(t.next_deadline(), None);
    // No response yet: the retransmitted INVITE is absorbed.
    assert_eq!(t.on_request_retransmission(t0), vec![]);
    assert_eq!(t.send_response(100, resp(100), t0), vec![send(100)]);
    assert_eq!(t.on_request_retransmission(t0 + ms(10)), vec![send(100)]);
    assert_eq!(t.send_response(180, resp(180), t0), vec![send(180)]);
    assert_eq!(t.on_request_retransmission(t0 + ms(20)), vec![send(180)]);
    assert_eq!(t.last_final_code(), None);

    assert_eq!(t.send_response(486, resp(486), t0), vec![send(486)]);
    assert_eq!((t.state(), t.last_final_code()), (S::Completed, Some(486)));
    assert_eq!(t.on_timer(t0 + ms(499)), vec![]);
    assert_eq!(run(&mut t, t0, 12_000), resends(486, &[500, 1500, 3500, 7500, 11_500]));
    assert_eq!(t.on_request_retransmission(t0 + ms(11_600)), vec![send(486)]);
    // Nothing more can be sent once final.
    assert_eq!(t.send_response(200, resp(200), t0 + ms(11_700)), vec![]);

    assert_eq!(t.on_ack(t0 + ms(12_000)), vec![]);
    assert_eq!(t.state(), S::Confirmed);
    assert_eq!(t.next_deadline(), Some(t0 + ms(17_000)));
    // ACK and INVITE retransmissions are absorbed in Confirmed.
    assert_eq!(t.on_ack(t0 + ms(12_100)), vec![]);
    assert_eq!(t.on_request_retransmission(t0 + ms(12_200)), vec![]);
    assert_eq!(run(&mut t, t0, 100_000), vec![(17_000, vec![A::Terminated])]);
    assert!(t.is_terminated());
    assert_eq!(t.on_ack(t0 + ms(18_000)), vec![]);
}

#[test]
fn invite_timer_h_without_ack() {
    let (mut t, t0) = start(Kind::Invite, false, TimerConfig::default());
    trying_then(&mut t, t0, 486);
    let mut want = resends(486, &[500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]);
    want.push((32_000, vec![A::Timeout, A::Terminated]));
    assert_eq!(run(&mut t, t0, 100_000), want);
    assert_eq!(t.next_deadline(), None);
}

#[test]
fn invite_reliable_no_g_timer_i_zero() {
    let (mut t, t0) = start(Kind::Invite, true, TimerConfig::default());
    trying_then(&mut t, t0, 503);
    assert_eq!(t.next_deadline(), Some(t0 + ms(32_000)));
    assert_eq!(t.on_request_retransmission(t0 + ms(100)), vec![send(503)]);
    assert_eq!(t.on_ack(t0 + ms(200)), vec![A::Terminated]);

    // H still applies on reliable transports.
    let (mut t, t0) = start(Kind::Invite, true, TimerConfig::default());
    trying_then(&mut t, t0, 503);
    assert_eq!(run(&mut t, t0, 100_000), vec![(32_000, vec![A::Timeout, A::Terminated])]);
}

#[test]
fn invite_2xx_terminates() {
    let (mut t, t0) = start(Kind::Invite, false, TimerConfig::default());
    assert_eq!(t.send_response(100, resp(100), t0), vec![send(100)]);
    assert_eq!(t.send_response(200, resp(200), t0 + ms(10)), vec![send(200), A::Terminated]);
    assert_eq!(t.last_final_code(), Some(200));
    assert_eq!(t.next_deadline(), None);
    assert_eq!(t.on_request_retransmission(t0 + ms(20)), vec![]);
    assert_eq!(t.send_response(200, resp(200), t0 + ms(30)), vec![]);
    assert_eq!(t.on_ack(t0 + ms(40)), vec![]);
}

#[test]
fn late_poll_resends_once() {
    let (mut t, t0) = start(Kind::Invite, false, TimerConfig::default());
    trying_then(&mut t, t0, 486);
    assert_eq!(t.on_timer(t0 + ms(9000)), vec![send(486)]);
    assert_eq!(t.next_deadline(), Some(t0 + ms(11_500)));
    assert_eq!(t.on_timer(t0 + ms(50_000)), vec![A::Timeout, A::Terminated]);
}

#[test]
fn non_invite_unreliable_timer_j() {
    let (mut t, t0) = start(Kind::NonInvite, false, TimerConfig::default());
    assert_eq!((t.state(), t.kind()), (S::Trying, Kind::NonInvite));
    assert_eq!(t.on_request_retransmission(t0), vec![]);
    assert_eq!(t.send_response(100, resp(100), t0), vec![send(100)]);
    assert_eq!(t.state(), S::Proceeding);
    assert_eq!(t.on_request_retransmission(t0 + ms(500)), vec![send(100)]);
    assert_eq!(t.send_response(200, resp(200), t0 + ms(1000)), vec![send(200)]);
    assert_eq!((t.state(), t.last_final_code()), (S::Completed, Some(200)));
    // No retransmission of its own: only when the request comes again.
    assert_eq!(t.next_deadline(), Some(t0 + ms(33_000)));
    assert_eq!(t.on_request_retransmission(t0 + ms(1500)), vec![send(200)]);
    assert_eq!(t.on_ack(t0 + ms(1600)), vec![]);
    assert_eq!(t.send_response(404, resp(404), t0 + ms(1700)), vec![]);
    assert_eq!(run(&mut t, t0, 100_000), vec![(33_000, vec![A::Terminated])]);
}

#[test]
fn non_invite_final_from_trying() {
    let (mut t, t0) = start(Kind::NonInvite, false, TimerConfig::default());
    assert_eq!(t.send_response(404, resp(404), t0), vec![send(404)]);
    assert_eq!(t.state(), S::Completed);
    assert_eq!(t.on_request_retransmission(t0 + ms(1)), vec![send(404)]);
}

#[test]
fn non_invite_reliable_timer_j_zero() {
    let (mut t, t0) = start(Kind::NonInvite, true, TimerConfig::default());
    assert_eq!(t.send_response(100, resp(100), t0), vec![send(100)]);
    assert_eq!(t.send_response(200, resp(200), t0), vec![send(200), A::Terminated]);
    assert!(t.is_terminated());
}

#[test]
fn transport_error_terminates() {
    let (mut t, t0) = start(Kind::Invite, false, TimerConfig::default());
    trying_then(&mut t, t0, 486);
    assert_eq!(t.on_transport_error(t0 + ms(500)), vec![A::TransportError, A::Terminated]);
    assert_eq!(t.next_deadline(), None);
    assert_eq!(t.on_transport_error(t0 + ms(600)), vec![]);
}

#[test]
fn out_of_range_codes_ignored() {
    let (mut t, t0) = start(Kind::Invite, false, TimerConfig::default());
    assert_eq!(t.send_response(99, resp(99), t0), vec![]);
    assert_eq!(t.send_response(700, resp(700), t0), vec![]);
    assert_eq!(t.state(), S::Proceeding);
    assert_eq!(t.on_request_retransmission(t0), vec![]);
}

#[test]
fn config_is_honoured() {
    let cfg = TimerConfig { t1: ms(100), t2: ms(400), t4: ms(1000) };
    let (mut t, t0) = start(Kind::Invite, false, cfg);
    trying_then(&mut t, t0, 486);
    let g: Vec<u64> = [100, 300, 700].into_iter().chain((1100..6400).step_by(400)).collect();
    let mut want = resends(486, &g);
    want.push((6400, vec![A::Timeout, A::Terminated]));
    assert_eq!(run(&mut t, t0, 100_000), want);

    // I is T4.
    let (mut t, t0) = start(Kind::Invite, false, cfg);
    trying_then(&mut t, t0, 486);
    assert_eq!(t.on_ack(t0 + ms(150)), vec![]);
    assert_eq!(run(&mut t, t0, 100_000), vec![(1150, vec![A::Terminated])]);

    // J is 64·T1.
    let (mut t, t0) = start(Kind::NonInvite, false, cfg);
    assert_eq!(t.send_response(200, resp(200), t0), vec![send(200)]);
    assert_eq!(run(&mut t, t0, 100_000), vec![(6400, vec![A::Terminated])]);
}
