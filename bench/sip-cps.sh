#!/usr/bin/env bash
# Calls per second with media anchoring: the sbc (its embedded relay) against
# Kamailio 5.6 (tm, rr, rtpengine module) driving rtpengine (userspace), doing
# the same job on the same machine in one run. Also REGISTERs per second, and
# the sbc once more across two realms.
#
#   bench/sip-cps.sh                 # defaults below
#   RATES="50 100 200" STEP_S=10 CALL_MS=3000 bench/sip-cps.sh
#
# For each system, sipp places calls of CALL_MS with RTP both ways (sipp
# rtp_stream from the caller, -rtp_echo at the callee) at rising rates for
# STEP_S seconds each; the highest rate with at most 0.1 % failed calls is
# that system's capacity. Everything runs on 127.0.0.1; the systems are
# measured one after the other with the same sipp scenarios. This is a
# benchmark, not a test: it prints numbers.
#
# The two-realm run puts the caller in the sbc's `inside` realm (SIP and media
# on 127.0.0.1) and the trunk in its `outside` realm (127.0.0.2; every
# 127.0.0.0/8 address is local on Linux), so every call crosses realms: the
# Via and Contact are hidden, each side sees only the sbc's Record-Route
# entry for its realm, and the relay anchors each leg on its own realm's
# interface.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RATES=${RATES:-"25 50 100 150 200 300 400 600 800 1000"}
STEP_S=${STEP_S:-10}
CALL_MS=${CALL_MS:-3000}
REG_RATES=${REG_RATES:-"500 1000 2000 4000"}
FIX=$ROOT/testkit/scenarios

for b in sipp kamailio rtpengine; do
  command -v "$b" >/dev/null || { echo "missing $b (apt-get install sip-tester kamailio rtpengine-daemon)"; exit 2; }
done
cargo build --release -q -p sbc
SBC=$ROOT/target/release/sbc

WORK=$(mktemp -d /tmp/xsbc-sipcps.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# shellcheck source=bench/sip-lib.sh
. "$ROOT/bench/sip-lib.sh"
make_uac

cat > "$WORK/reg.xml" <<'EOF'
<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register">
  <send retrans="500"><![CDATA[
      REGISTER sip:[remote_ip] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:u[call_number]@[remote_ip]>;tag=[call_number]
      To: <sip:u[call_number]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:u[call_number]@[local_ip]:[local_port]>
      Expires: 600
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <recv response="200"/>
</scenario>
EOF

register_rate() { # NAME PORT -> highest REGISTER/s with no failures
  local best=0
  for r in $REG_RATES; do
    local d=$WORK/$1-reg-$r; mkdir -p "$d"
    local total=$(( r * 5 ))
    ( cd "$d" && sipp -sf "$WORK/reg.xml" 127.0.0.1:"$2" -i 127.0.0.1 -p 5072 -r "$r" -m "$total" -nostdin \
        -timeout 60s -trace_stat -stf stats.csv >/dev/null 2>&1 ) || true
    read -r ok bad < <(python3 - "$d/stats.csv" "$total" <<'PY'
import csv,sys
rows=list(csv.reader(open(sys.argv[1]),delimiter=';'))
h=rows[0]; last=rows[-1]
ok=int(last[h.index("SuccessfulCall(C)")]); print(ok, int(sys.argv[2])-ok)
PY
)
    printf '  %-10s %5s reg/s: %6d ok %5d failed\n' "$1" "$r" "$ok" "$bad" >&2
    if [ "$bad" -le $(( total / 1000 )) ]; then best=$r; else break; fi
  done
  echo "$best"
}

echo "== sbc (embedded relay)" >&2
sbc_toml 127.0.0.1 off > "$WORK/sbc.toml"
"$SBC" run --config "$WORK/sbc.toml" 2>"$WORK/sbc.log" & PIDS+=($!)
wait_sip 5060
SBC_CPS=$(capacity sbc 5060 "$WORK/uac.xml" 127.0.0.1 127.0.0.1)
SBC_REG=$(register_rate sbc 5060)
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

echo "== sbc across two realms (caller inside on 127.0.0.1, trunk outside on 127.0.0.2)" >&2
# The same configuration with two realms: the sip.listen shorthand becomes
# two [[realm]] tables, the trunk moves to the outside realm, and the relay
# gets one named interface per realm.
python3 - "$WORK/sbc.toml" > "$WORK/sbc-realms.toml" <<'PY'
import sys
s = open(sys.argv[1]).read()
s = s.replace('listen = "127.0.0.1:5060"\n', '', 1)
s = s.replace('[[trunk]]', '[[realm]]\nname = "inside"\nlisten = "127.0.0.1:5060"\nmedia = "inside"\n'
              '[[realm]]\nname = "outside"\nlisten = "127.0.0.2:5060"\nmedia = "outside"\n[[trunk]]', 1)
s = s.replace('address = "127.0.0.1:5070"', 'address = "127.0.0.2:5070"\nrealm = "outside"', 1)
s = s.replace('interfaces = ["127.0.0.1"]', 'interfaces = ["inside/127.0.0.1", "outside/127.0.0.2"]', 1)
print(s, end="")
PY
"$SBC" run --config "$WORK/sbc-realms.toml" 2>"$WORK/sbc-realms.log" & PIDS+=($!)
wait_sip 5060
# One traced call first: each side must see only its own realm's sbc
# address in the Via, Contact, Record-Route/Route and SDP lines it receives
# (else the calls would not cross realms, or would leak).
d=$WORK/sbc-realms-trace; mkdir -p "$d"
( cd "$d" && exec sipp -sf "$FIX/uas_echo.xml" -i 127.0.0.2 -p 5070 -mi 127.0.0.2 -mp 36000 -rtp_echo \
    -m 1 -nostdin -timeout 30s -trace_msg -message_file uas.log >/dev/null 2>&1 ) &
uas=$!
sleep 0.3
( cd "$d" && sipp -sf "$WORK/uac.xml" 127.0.0.1:5060 -s 1000 -i 127.0.0.1 -p 5071 -mi 127.0.0.1 -m 1 -nostdin \
    -timeout 30s -trace_msg -message_file uac.log >/dev/null 2>&1 ) || true
wait "$uas" 2>/dev/null || true
python3 - "$d/uac.log" 127.0.0.1 127.0.0.2 "$d/uas.log" 127.0.0.2 127.0.0.1 <<'PY' >&2 || REALMS_NOTE=" (CHECK FAILED: see $d)"
import re, sys
bad = 0
for log, own, other in (sys.argv[1:4], sys.argv[4:7]):
    text = open(log, errors="replace").read()
    got = [m for m in re.split(r"^-{10,}.*$", text, flags=re.M) if "message received" in m.strip()[:40]]
    lines = [l.strip() for m in got for l in m.splitlines()]
    checked = [l for l in lines if l.lower().startswith(("via:", "contact:", "c=", "o="))]
    leaks = [l for l in checked if other in l]
    rr = [l for l in lines if l.lower().startswith(("record-route:", "route:")) and other in l]
    print("  %s: %d messages received; Via/Contact/SDP lines naming %s: %d of %d; Record-Route lines: %d"
          % (log.rsplit("/", 1)[1], len(got), other, len(leaks), len(checked), len(rr)))
    bad += len(leaks) + len(rr) + (not any(own in l for l in checked if l.lower().startswith("contact:")))
sys.exit(1 if bad else 0)
PY
REALMS_CPS=$(capacity sbc-realms 5060 "$WORK/uac.xml" 127.0.0.1 127.0.0.2)
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

echo "== Kamailio + rtpengine" >&2
rtpengine --config-file=none --table=-1 --interface=127.0.0.1 --listen-ng=127.0.0.1:22299 \
  --port-min=40000 --port-max=59999 --delete-delay=0 --foreground --log-stderr --log-level=3 \
  --num-threads=1 2>"$WORK/rtpengine.log" & PIDS+=($!)
sed -e "s/@SIP_PORT@/5061/" -e "s/@NG_PORT@/22299/" -e "s/@UAS_PORT@/5070/" -e "s/^debug=2/debug=1/" \
  "$ROOT/media-relay/tests/fixtures/kamailio.cfg.tmpl" > "$WORK/kamailio.cfg"
sleep 0.5
kamailio -f "$WORK/kamailio.cfg" -P "$WORK/kam.pid" -Y "$WORK" -w "$WORK" -E -DD -m 64 -M 8 >/dev/null 2>"$WORK/kamailio.log" & PIDS+=($!)
wait_sip 5061
KAM_CPS=$(capacity kamailio 5061 "$WORK/uac.xml" 127.0.0.1 127.0.0.1)

# A capacity at the highest rate tried is marked "+": the real one is higher.
echo
echo "calls of ${CALL_MS} ms with RTP both ways, ${STEP_S} s per rate, pass = at most 0.1 % failed"
printf '%-36s %10s %10s %8s\n' "" "sbc" "kamailio" "ratio"
printf '%-36s %10s %10s %8s\n' "max calls/s (media anchored)" "$(top "$RATES" "$SBC_CPS")" "$(top "$RATES" "$KAM_CPS")" \
  "$(ratio "$SBC_CPS" "$KAM_CPS")"
printf '%-36s %10s %10s %8s  (two realms / one realm)%s\n' "max calls/s across two realms" \
  "$(top "$RATES" "$REALMS_CPS")" "" "$(ratio "$REALMS_CPS" "$SBC_CPS")" "${REALMS_NOTE:-}"
printf '%-36s %10s\n' "REGISTERs/s (sbc)" "$(top "$REG_RATES" "$SBC_REG")"
echo "(+: passed the highest rate tried; the real figure is higher)"
echo "(rates tried: $RATES; work dir $WORK)"
