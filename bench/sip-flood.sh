#!/usr/bin/env bash
# A SIP flood against the sbc, on both of its datapaths, and against
# Kamailio 5.6 with pike and htable (bench/kamailio-flood.cfg) driving
# rtpengine, through the same attack in the same run. Needs root (network
# namespaces, XDP).
#
#   bench/sip-flood.sh
#   DURATION=30 LEGIT_CPS=20 FLOOD_X=5 bench/sip-flood.sh
#
# The lab: four namespaces, a veth pair from the sbc's to each of the others.
#
#   legit   10.44.1.2 ═ fl-lg 10.44.1.1 ┐
#   attack  10.44.2.2 ═ fl-at 10.44.2.1 ├ sbc (SIP and media on 10.44.1.1)
#           10.44.2.3                   │
#   trunk   10.44.3.2 ═ fl-tr 10.44.3.1 ┘
#
# First the sbc's capacity in this lab is measured (calls with RTP, socket
# datapath, no attack). Then, for each system, for DURATION seconds:
# - the legitimate caller (sipp, calls of CALL_MS with RTP both ways) places
#   LEGIT_CPS calls per second to the trunk (a sipp UAS echoing RTP);
# - the flooder sends INVITEs and REGISTERs (new Call-IDs, an ordinary
#   User-Agent) at FLOOD_X times that capacity from 10.44.2.2;
# - the scanner sweeps OPTIONS with User-Agent friendly-scanner across
#   10.44.1.0/24, ports 5060-5062, from 10.44.2.3.
# Reported: the share of legitimate calls that completed, how many attack
# datagrams reached the SIP parser and how many died in XDP, and the CPU the
# system used. A benchmark, not a test: it prints numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-30}
LEGIT_CPS=${LEGIT_CPS:-20}
CALL_MS=${CALL_MS:-3000}
FLOOD_X=${FLOOD_X:-5}
SWEEP_PPS=${SWEEP_PPS:-2000}
CAP_RATES=${CAP_RATES:-"100 200 300 400 600 800 1000 1200"}
FIX=$ROOT/testkit/scenarios

[ "$(id -u)" -eq 0 ] || { echo "needs root (network namespaces, XDP)"; exit 2; }
for b in sipp kamailio rtpengine python3 ip; do
  command -v "$b" >/dev/null || { echo "missing $b (apt-get install sip-tester kamailio rtpengine-daemon iproute2)"; exit 2; }
done
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p sbc
SBC=$ROOT/target/release/sbc

WORK=$(mktemp -d /tmp/xsbc-flood.XXXXXX)
NS=(fl-sbc fl-legit fl-atk fl-trunk)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
}
trap cleanup EXIT

# ---- the lab
for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; ip netns add "$n"; ip -n "$n" link set lo up; done
link() { # DEV PEER_NS SBC_ADDR PEER_ADDR...
  local dev=$1 peer=$2 sbc_addr=$3; shift 3
  ip link add "$dev" netns fl-sbc type veth peer name eth0 netns "$peer"
  ip -n fl-sbc addr add "$sbc_addr/24" dev "$dev"
  ip -n fl-sbc link set "$dev" up
  for a in "$@"; do ip -n "$peer" addr add "$a/24" dev eth0; done
  ip -n "$peer" link set eth0 up
  ip -n "$peer" route add default via "$sbc_addr"
}
link fl-lg fl-legit 10.44.1.1 10.44.1.2
link fl-at fl-atk 10.44.2.1 10.44.2.2 10.44.2.3
link fl-tr fl-trunk 10.44.3.1 10.44.3.2
SBC_IP=10.44.1.1
in_ns() { local n=$1; shift; ip netns exec "$n" "$@"; }
# shellcheck source=bench/sip-lib.sh
. "$ROOT/bench/sip-lib.sh"   # wait_sip

# The caller's scenario with RTP (as in sip-cps.sh).
packets=$(( (CALL_MS - 500) / 20 ))
head -c $(( packets * 160 )) /dev/zero | tr '\0' '\325' > "$WORK/audio.al"
sed -e "s#@AUDIO@#$WORK/audio.al#" -e "s#@PAUSE_MS@#$CALL_MS#" "$FIX/uac_rtp.xml" > "$WORK/uac.xml"


# calls NAME RATE SECONDS -> "successful placed" (legit caller -> trunk)
calls() {
  local d=$WORK/$1; mkdir -p "$d"
  local total=$(( $2 * $3 )) limit=$(( $2 * (CALL_MS / 1000 + 3) ))
  ( cd "$d" && exec ip netns exec fl-trunk sipp -sf "$FIX/uas_echo.xml" -i 10.44.3.2 -p 5070 -mi 10.44.3.2 -mp 36000 \
      -rtp_echo -nostdin -timeout $(( $3 + 90 ))s >/dev/null 2>&1 ) &
  local uas=$!
  sleep 0.3
  ( cd "$d" && timeout $(( $3 + CALL_MS / 1000 + 60 )) ip netns exec fl-legit \
      sipp -sf "$WORK/uac.xml" "$SBC_IP:5060" -s 1000 -i 10.44.1.2 -p 5071 -mi 10.44.1.2 \
      -r "$2" -m "$total" -l "$limit" -nostdin -timeout $(( $3 + 45 ))s -trace_stat -stf stats.csv \
      >/dev/null 2>&1 ) || true
  kill "$uas" 2>/dev/null || true; wait "$uas" 2>/dev/null || true
  python3 - "$d/stats.csv" "$total" <<'PY'
import csv,sys
try:
    rows=list(csv.reader(open(sys.argv[1]),delimiter=';'))
    h=rows[0]; ok=int(rows[-1][h.index("SuccessfulCall(C)")])
except Exception:
    ok=0
print(ok, sys.argv[2])
PY
}

metrics() { in_ns fl-sbc python3 -c "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9100/metrics',timeout=5).read().decode())" 2>/dev/null || true; }
# metric NAME_WITH_LABELS FILE -> the sum of the matching samples (0 if none)
metric() { awk -v m="$1" 'index($0, m) == 1 { s += $NF } END { printf "%d\n", s + 0 }' "$2"; }

sbc_config() { # DATAPATH
cat <<EOF
[sip]
listen = "$SBC_IP:5060"
domains = ["$SBC_IP"]
log_level = "warn"
[[trunk]]
name = "uas"
address = "10.44.3.2:5070"
sources = ["10.44.3.2"]
probe = false
[[route]]
prefix = ""
trunks = ["uas"]
[health]
interval_ms = 0
[cdr]
file = "$WORK/cdr-$1.jsonl"
[metrics]
listen = "127.0.0.1:9100"
[control]
socket = "off"
[guard]
never_ban = ["10.44.3.2"]
[relay]
interfaces = ["$SBC_IP"]
listen_ng = "off"
port_min = 40000
port_max = 49999
workers = 1
timeout = 60
metrics = "off"
EOF
if [ "$1" = xdp ]; then
  printf 'datapath = "xdp"\nxdp_interfaces = ["fl-lg", "fl-at", "fl-tr"]\nxdp_full_checksum = true\n'
else
  printf 'datapath = "socket"\n'
fi
}

start_sbc() { # DATAPATH
  sbc_config "$1" > "$WORK/sbc-$1.toml"
  # `ip netns exec` execs the program: $! is the sbc itself.
  ip netns exec fl-sbc "$SBC" run --config "$WORK/sbc-$1.toml" >/dev/null 2>"$WORK/sbc-$1.log" & SBC_PID=$!
  PIDS+=("$SBC_PID")
  wait_sip 5060 "$SBC_IP" 10.44.1.2 fl-legit
}

# ---- capacity (socket datapath, no attack)
echo "== the sbc's capacity in this lab (calls with RTP, 5 s per rate, socket datapath)" >&2
start_sbc socket
CAP=0
for r in $CAP_RATES; do
  read -r ok total < <(calls "cap-$r" "$r" 5)
  printf '  %5s cps: %5d of %5d\n' "$r" "$ok" "$total" >&2
  if [ $(( (total - ok) * 1000 )) -le "$total" ]; then CAP=$r; else break; fi
done
kill "$SBC_PID"; wait "$SBC_PID" 2>/dev/null || true
[ "$CAP" -gt 0 ] || CAP=100
FLOOD_PPS=$(( CAP * FLOOD_X ))
echo "  capacity $CAP calls/s; the flood sends $FLOOD_PPS INVITE+REGISTER/s" >&2

# attack_run NAME PIDS... : the legitimate calls under attack; prints one row
attack_run() {
  local name=$1; shift
  local cpu0; cpu0=$(cpu_s "$@")
  in_ns fl-atk python3 "$ROOT/bench/flood-gen.py" flood 10.44.2.2 "$SBC_IP:5060" "$FLOOD_PPS" "$(( DURATION + 2 ))" \
    > "$WORK/$name-flood.sent" 2>&1 &
  local f=$!
  in_ns fl-atk python3 "$ROOT/bench/flood-gen.py" sweep 10.44.2.3 10.44.1.0/24 5060,5061,5062 "$SWEEP_PPS" \
    "$(( DURATION + 2 ))" > "$WORK/$name-sweep.sent" 2>&1 &
  local s=$!
  sleep 1
  read -r ok total < <(calls "$name-legit" "$LEGIT_CPS" "$DURATION")
  wait "$f" "$s" || true
  local cpu1; cpu1=$(cpu_s "$@")
  ATTACK_SENT=$(( $(cat "$WORK/$name-flood.sent") + $(cat "$WORK/$name-sweep.sent") ))
  LEGIT_OK=$ok; LEGIT_TOTAL=$total
  CPU=$(python3 -c "print('%.1f' % ($cpu1 - $cpu0))")
}

declare -A ROW
for dp in socket xdp; do
  echo "== sbc, $dp datapath, under attack" >&2
  start_sbc "$dp"
  metrics > "$WORK/sbc-$dp-before.prom"
  attack_run "sbc-$dp" "$SBC_PID"
  metrics > "$WORK/sbc-$dp-after.prom"
  kill "$SBC_PID"; wait "$SBC_PID" 2>/dev/null || true
  m="$WORK/sbc-$dp-after.prom"
  # Requests that reached the parser, less the legitimate ones (INVITE, ACK
  # and BYE per call placed, and the readiness OPTIONS).
  parsed=$(( $(metric 'sbc_sip_requests_total' "$m") + $(metric 'sbc_sip_parse_errors_total' "$m") \
    + $(metric 'sbc_sip_limit_refused_total' "$m") - 3 * LEGIT_TOTAL - $(metric 'sbc_sip_requests_total{method="OPTIONS"}' "$WORK/sbc-$dp-before.prom") ))
  [ "$parsed" -ge 0 ] || parsed=0
  xdp=$(( $(metric 'media_relay_xdp_packets_total{verdict="dropped_banned"' "$m") ))
  ROW[$dp]="$LEGIT_OK $LEGIT_TOTAL $ATTACK_SENT $parsed $xdp $CPU"
  grep -E '^sbc_guard|^sbc_caps' "$m" | sed 's/^/    /' >&2 || true
done

echo "== Kamailio 5.6 (pike, htable) + rtpengine, under attack" >&2
ip netns exec fl-sbc rtpengine --config-file=none --table=-1 --interface="$SBC_IP" --listen-ng=127.0.0.1:22299 \
  --port-min=40000 --port-max=49999 --delete-delay=0 --foreground --log-stderr --log-level=3 \
  --num-threads=1 2>"$WORK/rtpengine.log" & RTPE=$!; PIDS+=("$RTPE")
sed -e "s/@CHILDREN@/4/" -e "s/@SIP_IP@/$SBC_IP/" -e "s/@NG_PORT@/22299/" -e "s/@TRUNK_IP@/10.44.3.2/" -e "s#@CTL@#$WORK/kamailio.ctl#" \
  "$ROOT/bench/kamailio-flood.cfg" > "$WORK/kamailio.cfg"
sleep 0.5
ip netns exec fl-sbc kamailio -f "$WORK/kamailio.cfg" -P "$WORK/kam.pid" -Y "$WORK" -w "$WORK" -E -DD -m 128 -M 16 \
  >/dev/null 2>"$WORK/kamailio.log" & KAM=$!; PIDS+=("$KAM")
wait_sip 5060 "$SBC_IP" 10.44.1.2 fl-legit
# Kamailio's processes: the main one and its children.
KPIDS="$KAM $(pgrep -P "$KAM" | tr '\n' ' ')"
# shellcheck disable=SC2086
attack_run kamailio $KPIDS $RTPE
# Kamailio parses every request that reaches it (pike and htable run on
# parsed requests): its core statistics, less the legitimate ones.
rcv=$(ip netns exec fl-sbc kamcmd -s "unix:$WORK/kamailio.ctl" stats.get_statistics rcv_requests 2>/dev/null \
  | awk -F'= ' '/rcv_requests =/ { print $2 + 0 }')
kparsed=$(( ${rcv:-0} - 3 * LEGIT_TOTAL ))
[ "$kparsed" -ge 0 ] || kparsed=0
ROW[kam]="$LEGIT_OK $LEGIT_TOTAL $ATTACK_SENT $kparsed 0 $CPU"

echo
echo "legitimate calls: $LEGIT_CPS/s for ${DURATION} s, ${CALL_MS} ms with RTP both ways; attack: INVITE+REGISTER at" \
  "${FLOOD_X}x the sbc's capacity ($FLOOD_PPS/s) and an OPTIONS sweep at $SWEEP_PPS/s"
printf '%-22s %12s %12s %14s %14s %10s\n' "" "legit calls" "completed" "attack parsed" "died in XDP" "CPU s"
for k in socket xdp kam; do
  read -r ok total sent parsed xdp cpu <<<"${ROW[$k]}"
  label=$([ "$k" = kam ] && echo "kamailio+pike" || echo "sbc ($k)")
  pct=$(python3 -c "print('%.1f %%' % (100.0 * $ok / $total if $total else 0))")
  printf '%-22s %12s %12s %14s %14s %10s\n' "$label" "$ok/$total" "$pct" "$parsed/$sent" "$xdp" "$cpu"
done
echo "(work dir $WORK)"
