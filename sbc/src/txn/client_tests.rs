//! Client transaction tests: every transition and timer of figures 5 and 6,
//! on unreliable and reliable transports, driven with exact instants.

use std::time::{Duration, Instant};

use super::{ClientAction as A, ClientState as S, ClientTxn, Kind, TimerConfig};

const REQ: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\r\n";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn send() -> A {
    A::Send(REQ.to_vec())
}

fn start(kind: Kind, reliable: bool, cfg: TimerConfig) -> (ClientTxn, Instant) {
    let t0 = Instant::now();
    let (t, first) = ClientTxn::new(kind, REQ.to_vec(), reliable, cfg, t0);
    assert_eq!(first, vec![send()]);
    (t, t0)
}

/// Polls at each deadline up to `until` (ms after `t0`) or termination.
/// Returns (ms after `t0`, actions) for each poll.
fn run(t: &mut ClientTxn, t0: Instant, until: u64) -> Vec<(u64, Vec<A>)> {
    let mut log = Vec::new();
    while let Some(at) = t.next_deadline().filter(|&at| at <= t0 + ms(until)) {
        let acts = t.on_timer(at);
        assert!(!acts.is_empty(), "deadline with nothing to do");
        log.push((u64::try_from((at - t0).as_millis()).unwrap(), acts));
    }
    log
}

/// The expected log: a send at each of `sends`, then `last` at `end`.
fn sends_then(sends: &[u64], end: u64, last: Vec<A>) -> Vec<(u64, Vec<A>)> {
    let mut v: Vec<_> = sends.iter().map(|&s| (s, vec![send()])).collect();
    v.push((end, last));
    v
}

fn timeout() -> Vec<A> {
    vec![A::Timeout, A::Terminated]
}

#[test]
fn invite_unreliable_timer_a_doubles_then_timer_b() {
    let (mut t, t0) = start(Kind::Invite, false, TimerConfig::default());
    assert_eq!((t.state(), t.kind()), (S::Calling, Kind::Invite));
    assert_eq!(t.next_deadline(), Some(t0 + ms(500)));
    assert_eq!(t.on_timer(t0 + ms(499)), vec![]);
    let log = run(&mut t, t0, 100_000);
    assert_eq!(log, sends_then(&[500, 1500, 3500, 7500, 15500, 31500], 32000, timeout()));
    assert!(t.is_terminated());
    assert_eq!(t.next_deadline(), None);
    assert_eq!(t.on_timer(t0 + ms(64_000)), vec![]);
    assert_eq!(t.on_response(200, t0 + ms(64_000)), vec![]);
}

#[test]
fn invite_reliable_no_retransmits_timer_b() {
    let (mut t, t0) = start(Kind::Invite, true, TimerConfig::default());
    assert_eq!(run(&mut t, t0, 100_000), vec![(32000, timeout())]);
}

#[test]
fn late_poll_sends_once_and_keeps_schedule() {
    let (mut t, t0) = start(Kind::Invite, false, TimerConfig::default());
    // Missed 0.5, 1.5 and 3.5 s.
    assert_eq!(t.on_timer(t0 + ms(4000)), vec![send()]);
    assert_eq!(t.next_deadline(), Some(t0 + ms(7500)));
    // Polled long after B: the timeout wins, no pointless retransmission.
    assert_eq!(t.on_timer(t0 + ms(40_000)), timeout());
}

#[test]
fn invite_provisional_stops_a_and_b() {
    let (mut t, t0) = start(Kind::Invite, false, TimerConfig::default());
    assert_eq!(t.on_timer(t0 + ms(500)), vec![send()]);
    assert_eq!(t.on_response(100, t0 + ms(700)), vec![A::Deliver(100)]);
    assert_eq!(t.state(), S::Proceeding);
    assert_eq!(t.next_deadline(), None);
    assert_eq!(t.on_timer(t0 + ms(100_000)), vec![]);
    assert_eq!(t.on_response(180, t0 + ms(900)), vec![A::Deliver(180)]);
    assert_eq!(t.on_response(183, t0 + ms(950)), vec![A::Deliver(183)]);
    assert_eq!(t.state(), S::Proceeding);
    assert_eq!(t.on_response(200, t0 + ms(5000)), vec![A::Deliver(200), A::Terminated]);
    assert!(t.is_terminated());
}

#[test]
fn invite_2xx_in_calling_terminates() {
    let (mut t, t0) = start(Kind::Invite, false, TimerConfig::default());
    assert_eq!(t.on_response(200, t0 + ms(100)), vec![A::Deliver(200), A::Terminated]);
    assert_eq!(t.next_deadline(), None);
    assert_eq!(t.on_response(200, t0 + ms(200)), vec![]);
}

#[test]
fn invite_non_2xx_acks_and_absorbs_until_timer_d() {
    let (mut t, t0) = start(Kind::Invite, false, TimerConfig::default());
    assert_eq!(t.on_response(180, t0 + ms(200)), vec![A::Deliver(180)]);
    assert_eq!(t.on_response(486, t0 + ms(1000)), vec![A::Deliver(486), A::SendAck]);
    assert_eq!(t.state(), S::Completed);
    assert_eq!(t.next_deadline(), Some(t0 + ms(33_000)));
    // Retransmitted final: ACK again, the TU does not see it twice.
    assert_eq!(t.on_response(486, t0 + ms(1500)), vec![A::SendAck]);
    assert_eq!(t.on_response(486, t0 + ms(2500)), vec![A::SendAck]);
    // Stray provisional or 2xx in Completed: absorbed.
    assert_eq!(t.on_response(180, t0 + ms(2600)), vec![]);
    assert_eq!(t.on_response(200, t0 + ms(2700)), vec![]);
    assert_eq!(t.on_timer(t0 + ms(32_999)), vec![]);
    assert_eq!(run(&mut t, t0, 100_000), vec![(33_000, vec![A::Terminated])]);
    assert_eq!(t.on_response(486, t0 + ms(34_000)), vec![]);
}

#[test]
fn invite_non_2xx_from_calling_stops_retransmits() {
    let (mut t, t0) = start(Kind::Invite, false, TimerConfig::default());
    assert_eq!(t.on_response(603, t0 + ms(300)), vec![A::Deliver(603), A::SendAck]);
    assert_eq!(run(&mut t, t0, 100_000), vec![(32_300, vec![A::Terminated])]);
}

#[test]
fn invite_non_2xx_reliable_timer_d_is_zero() {
    let (mut t, t0) = start(Kind::Invite, true, TimerConfig::default());
    assert_eq!(t.on_response(486, t0 + ms(300)), vec![A::Deliver(486), A::SendAck, A::Terminated]);
    assert!(t.is_terminated());
}

#[test]
fn non_invite_unreliable_timer_e_capped_at_t2_then_f() {
    let (mut t, t0) = start(Kind::NonInvite, false, TimerConfig::default());
    assert_eq!((t.state(), t.kind()), (S::Trying, Kind::NonInvite));
    let sends = [500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500];
    assert_eq!(run(&mut t, t0, 100_000), sends_then(&sends, 32_000, timeout()));
}

#[test]
fn non_invite_proceeding_retransmits_every_t2_and_f_runs() {
    let (mut t, t0) = start(Kind::NonInvite, false, TimerConfig::default());
    assert_eq!(t.on_timer(t0 + ms(500)), vec![send()]);
    assert_eq!(t.on_response(100, t0 + ms(600)), vec![A::Deliver(100)]);
    assert_eq!(t.state(), S::Proceeding);
    // The E already armed (1.5 s) stands; after it, every T2.
    let sends = [1500, 5500, 9500, 13_500, 17_500, 21_500, 25_500, 29_500];
    assert_eq!(run(&mut t, t0, 100_000), sends_then(&sends, 32_000, timeout()));
}

#[test]
fn non_invite_final_absorbs_until_timer_k() {
    let (mut t, t0) = start(Kind::NonInvite, false, TimerConfig::default());
    assert_eq!(t.on_response(180, t0 + ms(100)), vec![A::Deliver(180)]);
    assert_eq!(t.on_response(200, t0 + ms(1000)), vec![A::Deliver(200)]);
    assert_eq!(t.state(), S::Completed);
    assert_eq!(t.next_deadline(), Some(t0 + ms(6000)));
    assert_eq!(t.on_response(200, t0 + ms(2000)), vec![]);
    assert_eq!(t.on_response(404, t0 + ms(2000)), vec![]);
    assert_eq!(run(&mut t, t0, 100_000), vec![(6000, vec![A::Terminated])]);
}

#[test]
fn non_invite_error_final_from_trying() {
    let (mut t, t0) = start(Kind::NonInvite, false, TimerConfig::default());
    // Non-INVITE finals are never ACKed.
    assert_eq!(t.on_response(404, t0 + ms(100)), vec![A::Deliver(404)]);
    assert_eq!(run(&mut t, t0, 100_000), vec![(5100, vec![A::Terminated])]);
}

#[test]
fn non_invite_reliable() {
    let (mut t, t0) = start(Kind::NonInvite, true, TimerConfig::default());
    assert_eq!(t.next_deadline(), Some(t0 + ms(32_000)));
    assert_eq!(t.on_response(100, t0 + ms(100)), vec![A::Deliver(100)]);
    assert_eq!(t.next_deadline(), Some(t0 + ms(32_000)));
    assert_eq!(t.on_response(200, t0 + ms(200)), vec![A::Deliver(200), A::Terminated]);

    let (mut t, t0) = start(Kind::NonInvite, true, TimerConfig::default());
    assert_eq!(t.on_response(100, t0 + ms(100)), vec![A::Deliver(100)]);
    assert_eq!(run(&mut t, t0, 100_000), vec![(32_000, timeout())]);
}

#[test]
fn timeout_override_fires_before_any_response() {
    let (mut t, t0) = start(Kind::Invite, false, TimerConfig::default());
    t.set_timeout_override(ms(2000));
    assert_eq!(run(&mut t, t0, 100_000), sends_then(&[500, 1500], 2000, timeout()));

    let (mut t, t0) = start(Kind::NonInvite, true, TimerConfig::default());
    t.set_timeout_override(ms(2000));
    assert_eq!(run(&mut t, t0, 100_000), vec![(2000, timeout())]);

    // Set after some time has passed: still measured from creation.
    let (mut t, t0) = start(Kind::Invite, true, TimerConfig::default());
    assert_eq!(t.on_timer(t0 + ms(1000)), vec![]);
    t.set_timeout_override(ms(1500));
    assert_eq!(run(&mut t, t0, 100_000), vec![(1500, timeout())]);
}

#[test]
fn timeout_override_never_beyond_b() {
    let (mut t, t0) = start(Kind::Invite, true, TimerConfig::default());
    t.set_timeout_override(ms(60_000));
    assert_eq!(run(&mut t, t0, 100_000), vec![(32_000, timeout())]);
}

#[test]
fn timeout_override_cancelled_by_provisional() {
    let (mut t, t0) = start(Kind::Invite, false, TimerConfig::default());
    t.set_timeout_override(ms(2000));
    assert_eq!(t.on_response(100, t0 + ms(1000)), vec![A::Deliver(100)]);
    assert_eq!(t.next_deadline(), None);
    assert_eq!(t.on_timer(t0 + ms(2000)), vec![]);
    // Setting it once a response has arrived does nothing.
    t.set_timeout_override(ms(3000));
    assert_eq!(t.next_deadline(), None);

    let (mut t, t0) = start(Kind::NonInvite, true, TimerConfig::default());
    t.set_timeout_override(ms(2000));
    assert_eq!(t.on_response(100, t0 + ms(1000)), vec![A::Deliver(100)]);
    assert_eq!(run(&mut t, t0, 100_000), vec![(32_000, timeout())]);
}

#[test]
fn transport_error_terminates() {
    let (mut t, t0) = start(Kind::Invite, false, TimerConfig::default());
    assert_eq!(t.on_transport_error(t0), vec![A::TransportError, A::Terminated]);
    assert_eq!(t.next_deadline(), None);
    assert_eq!(t.on_transport_error(t0), vec![]);

    // Failing to send the ACK in Completed.
    let (mut t, t0) = start(Kind::Invite, false, TimerConfig::default());
    assert_eq!(t.on_response(500, t0 + ms(10)), vec![A::Deliver(500), A::SendAck]);
    assert_eq!(t.on_transport_error(t0 + ms(10)), vec![A::TransportError, A::Terminated]);

    let (mut t, t0) = start(Kind::NonInvite, false, TimerConfig::default());
    assert_eq!(t.on_response(100, t0 + ms(10)), vec![A::Deliver(100)]);
    assert_eq!(t.on_transport_error(t0 + ms(600)), vec![A::TransportError, A::Terminated]);
    assert!(t.is_terminated());
}

#[test]
fn transport_error_on_a_reliable_transport_ends_at_once_whatever_the_failover_timer() {
    for kind in [Kind::Invite, Kind::NonInvite] {
        let (mut t, t0) = start(kind, true, TimerConfig::default());
        t.set_timeout_override(ms(2000));
        // Before any timer: a connect refused or a failed TLS handshake.
        assert_eq!(t.on_transport_error(t0 + ms(5)), vec![A::TransportError, A::Terminated], "{kind:?}");
        assert_eq!((t.state(), t.next_deadline()), (S::Terminated, None));
        assert!(t.on_timer(t0 + ms(2000)).is_empty(), "no timeout follows");
        assert!(t.on_response(200, t0 + ms(10)).is_empty(), "nor a late response");
    }
}

#[test]
fn out_of_range_codes_ignored() {
    let (mut t, t0) = start(Kind::Invite, false, TimerConfig::default());
    assert_eq!(t.on_response(99, t0), vec![]);
    assert_eq!(t.on_response(700, t0), vec![]);
    assert_eq!(t.on_response(0, t0), vec![]);
    assert_eq!(t.state(), S::Calling);
}

#[test]
fn config_is_honoured() {
    let cfg = TimerConfig { t1: ms(100), t2: ms(400), t4: ms(1000) };
    let (mut t, t0) = start(Kind::Invite, false, cfg);
    assert_eq!(run(&mut t, t0, 100_000), sends_then(&[100, 300, 700, 1500, 3100, 6300], 6400, timeout()));

    let (mut t, t0) = start(Kind::NonInvite, false, cfg);
    let sends = [100, 300, 700, 1100, 1500, 1900, 2300, 2700, 3100, 3500, 3900, 4300, 4700, 5100, 5500, 5900, 6300];
    assert_eq!(run(&mut t, t0, 100_000), sends_then(&sends, 6400, timeout()));

    // K is T4.
    let (mut t, t0) = start(Kind::NonInvite, false, cfg);
    assert_eq!(t.on_response(200, t0 + ms(50)), vec![A::Deliver(200)]);
    assert_eq!(run(&mut t, t0, 100_000), vec![(1050, vec![A::Terminated])]);

    // D stays at least 32 s, and grows with T1 beyond that.
    let (mut t, t0) = start(Kind::Invite, false, cfg);
    assert_eq!(t.on_response(486, t0), vec![A::Deliver(486), A::SendAck]);
    assert_eq!(t.next_deadline(), Some(t0 + ms(32_000)));
    let slow = TimerConfig { t1: ms(1000), ..cfg };
    let (mut t, t0) = start(Kind::Invite, false, slow);
    assert_eq!(t.on_response(486, t0), vec![A::Deliver(486), A::SendAck]);
    assert_eq!(t.next_deadline(), Some(t0 + ms(64_000)));
}

#[test]
fn request_bytes_kept() {
    let (t, _) = start(Kind::Invite, false, TimerConfig::default());
    assert_eq!(t.request(), REQ);
}
