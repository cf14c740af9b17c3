#!/usr/bin/env bash
# Calls per second with digest authentication: the sbc without [auth], the
# sbc with [auth], and Kamailio 5.6 (tm, rr, rtpengine module, auth module
# with the users' HA1 in an htable) driving rtpengine, in one run, with the
# same sipp scenarios. This is a benchmark, not a test: it prints numbers.
#
#   bench/sip-cps-auth.sh
#   RATES="50 100 200" STEP_S=10 CALL_MS=3000 bench/sip-cps-auth.sh
#
# Every call with authentication does the work a phone's call does: INVITE,
# 407 with a fresh nonce, ACK, INVITE with Proxy-Authorization (MD5,
# qop=auth, nc=1: sipp 3.6 answers only MD5, so both systems offer only
# MD5), then the call with RTP both ways (sipp rtp_stream at the caller,
# -rtp_echo at the callee) for CALL_MS, and BYE. Both systems check the
# nonce (HMAC, no per-nonce state until it is used), the response against
# the user's HA1, and the nonce-count (Kamailio: nonce_count=1). The call
# without authentication is the same call without the 407 round.
#
# The caller is on 127.0.0.2 and the callee (the sbc's trunk) on 127.0.0.3:
# the sbc trusts its trunks' addresses, so the caller must not share one.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RATES=${RATES:-"25 50 100 150 200 300 400 600 800 1000"}
STEP_S=${STEP_S:-10}
CALL_MS=${CALL_MS:-3000}
FIX=$ROOT/testkit/scenarios
UAC_IP=127.0.0.2
UAS_IP=127.0.0.3

for b in sipp kamailio rtpengine; do
  command -v "$b" >/dev/null || { echo "missing $b (apt-get install sip-tester kamailio rtpengine-daemon)"; exit 2; }
done
cargo build --release -q -p sbc
SBC=$ROOT/target/release/sbc

WORK=$(mktemp -d /tmp/xsbc-sipcps-auth.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# shellcheck source=bench/sip-lib.sh
. "$ROOT/bench/sip-lib.sh"
make_uac
# The same call with the 407 round first (sipp is told the Request-URI as
# its digest-uri with -auth_uri: by default it uses the proxy's address,
# which the sbc refuses): the first INVITE (CSeq 1) is
# challenged and ACKed, the second (CSeq 2) carries the credentials; the ACK
# and BYE of the call then use CSeq 2 and 3.
python3 - "$WORK/uac.xml" > "$WORK/uac-auth.xml" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
start = s.index("<send retrans=\"500\">")
end = s.index("</send>", start) + len("</send>")
invite = s[start:end]
authed = invite.replace("CSeq: 1 INVITE", "CSeq: 2 INVITE").replace(
    "Contact: <sip:uac@[local_ip]:[local_port]>",
    "Contact: <sip:uac@[local_ip]:[local_port]>\n      [authentication username=alice password=alice-pw]", 1)
# The caller is alice of our domain (the realm is the From domain for Kamailio).
first = invite
challenge = """
  <recv response="100" optional="true"/>
  <recv response="407" auth="true"/>
  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: xsbc-uac <sip:uac@[local_ip]:[local_port]>;tag=[pid]xsbcUac[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"""
rest = s[end:].replace("CSeq: 1 ACK", "CSeq: 2 ACK").replace("CSeq: 2 BYE", "CSeq: 3 BYE")
out = s[:start] + first + challenge + authed + rest
# Everyone's From is alice@<the proxy's domain>, so the realm is that domain.
out = out.replace("<sip:uac@[local_ip]:[local_port]>;tag=", "<sip:alice@[remote_ip]>;tag=")
print(out, end="")
PY

"$SBC" passwd alice --realm 127.0.0.1 <<<"alice-pw" > "$WORK/users.txt"
HA1=$(cut -d: -f3 "$WORK/users.txt")
sbc_toml "$UAS_IP" 127.0.0.1:9199 > "$WORK/sbc.toml"
{ cat "$WORK/sbc.toml"; printf '[auth]\nusers_file = "%s"\nsecret = "0123456789abcdef0123"\nalgorithms = ["MD5"]\n' "$WORK/users.txt"; } \
  > "$WORK/sbc-auth.toml"

echo "== sbc without [auth]" >&2
"$SBC" run --config "$WORK/sbc.toml" 2>"$WORK/sbc.log" & PIDS+=($!)
wait_sip 5060
SBC_CPS=$(capacity sbc 5060 "$WORK/uac.xml" "$UAC_IP" "$UAS_IP")
SBC_CPU=$(cpu_s "${PIDS[-1]}")
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

echo "== sbc with [auth] (407 round on every call)" >&2
"$SBC" run --config "$WORK/sbc-auth.toml" 2>"$WORK/sbc-auth.log" & PIDS+=($!)
wait_sip 5060
AUTH_CPS=$(UAC_EXTRA="-auth_uri 1000@127.0.0.1:5060" capacity sbc-auth 5060 "$WORK/uac-auth.xml" "$UAC_IP" "$UAS_IP")
AUTH_CPU=$(cpu_s "${PIDS[-1]}")
AUTH_METRICS=$(curl -s http://127.0.0.1:9199/metrics | grep -E '^sbc_auth_(challenges|successes|failures|replays)_total' | tr '\n' ' ' || true)
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

echo "== Kamailio + rtpengine with the auth module" >&2
rtpengine --config-file=none --table=-1 --interface=127.0.0.1 --listen-ng=127.0.0.1:22299 \
  --port-min=40000 --port-max=59999 --delete-delay=0 --foreground --log-stderr --log-level=3 \
  --num-threads=1 2>"$WORK/rtpengine.log" & PIDS+=($!)
# The interop fixture with the auth module in front of every initial INVITE.
python3 - "$ROOT/media-relay/tests/fixtures/kamailio.cfg.tmpl" "$HA1" "$UAS_IP" > "$WORK/kamailio.cfg" <<'PY'
import sys
s = open(sys.argv[1]).read()
s = s.replace("@SIP_PORT@", "5061").replace("@NG_PORT@", "22299").replace("@UAS_PORT@", "5070")
s = s.replace("debug=2", "debug=1").replace("sip:127.0.0.1:5070", "sip:%s:5070" % sys.argv[3])
s = s.replace('loadmodule "rtpengine.so"', 'loadmodule "rtpengine.so"\nloadmodule "auth.so"\nloadmodule "htable.so"\n'
  'modparam("auth", "secret", "0123456789abcdef0123")\nmodparam("auth", "nonce_count", 1)\n'
  'modparam("auth", "qop", "auth")\nmodparam("auth", "nonce_expire", 300)\n'
  'modparam("htable", "htable", "users=>size=8;")\n')
s = s.replace('    if (is_method("INVITE")) {\n        record_route();',
  '    if (is_method("INVITE")) {\n'
  '        if (!pv_proxy_authenticate("$fd", "$sht(users=>$fU)", "1")) {\n'
  '            proxy_challenge("$fd", "1");\n            exit;\n        }\n'
  '        consume_credentials();\n        record_route();', 1)
s += '\nevent_route[htable:mod-init] {\n    $sht(users=>alice) = "%s";\n}\n' % sys.argv[2]
print(s, end="")
PY
sleep 0.5
kamailio -f "$WORK/kamailio.cfg" -P "$WORK/kam.pid" -Y "$WORK" -w "$WORK" -E -DD -m 64 -M 8 >/dev/null 2>"$WORK/kamailio.log" & PIDS+=($!)
wait_sip 5061
KAM_CPS=$(UAC_EXTRA="-auth_uri 1000@127.0.0.1:5061" capacity kamailio-auth 5061 "$WORK/uac-auth.xml" "$UAC_IP" "$UAS_IP")
# Every Kamailio process (main, children, timers) and rtpengine.
KAM_CPU=$(cpu_s $(pgrep -f "kamailio -f $WORK/kamailio.cfg") "${PIDS[-2]}")

echo
echo "calls of ${CALL_MS} ms with RTP both ways, ${STEP_S} s per rate, pass = at most 0.1 % failed"
printf '%-40s %10s\n' "sbc, no auth: max calls/s" "$(top "$RATES" "$SBC_CPS")"
printf '%-40s %10s  (auth / no auth: %s)\n' "sbc, digest auth: max calls/s" "$(top "$RATES" "$AUTH_CPS")" \
  "$(ratio "$AUTH_CPS" "$SBC_CPS")"
printf '%-40s %10s  (sbc / kamailio, both with auth: %s)\n' "kamailio + rtpengine, auth: max calls/s" \
  "$(top "$RATES" "$KAM_CPS")" "$(ratio "$AUTH_CPS" "$KAM_CPS")"
# CPU per call over every step (failed calls included): the process CPU
# time, in whole seconds from ps, over the calls placed.
per_call() { python3 -c "import sys; c,n=float(sys.argv[1]),float(sys.argv[2]); print('%.2f'%(1000*c/n) if n else 'n/a')" "$1" "$2"; }
printf '%-40s %10s %10s %10s\n' "CPU ms per call placed (all steps)" "sbc" "sbc-auth" "kamailio"
printf '%-40s %10s %10s %10s  (kamailio: all its processes + rtpengine)\n' "" \
  "$(per_call "$SBC_CPU" "$(cat "$WORK/sbc.calls")")" "$(per_call "$AUTH_CPU" "$(cat "$WORK/sbc-auth.calls")")" \
  "$(per_call "$KAM_CPU" "$(cat "$WORK/kamailio-auth.calls")")"
echo "sbc auth counters at the end: $AUTH_METRICS"
echo "(+: passed the highest rate tried; the real figure is higher)"
echo "(rates tried: $RATES; work dir $WORK)"
