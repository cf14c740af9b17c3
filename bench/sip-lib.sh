# Shared by the calls-per-second benchmarks (sip-cps.sh, sip-cps-auth.sh):
# sourced after the caller has set WORK, FIX, RATES, STEP_S and CALL_MS.

# A raw A-law payload file for rtp_stream (160 bytes per 20 ms) and the
# caller's scenario $WORK/uac.xml playing it for CALL_MS.
make_uac() {
  local packets=$(( (CALL_MS - 500) / 20 ))
  head -c $(( packets * 160 )) /dev/zero | tr '\0' '\325' > "$WORK/audio.al"
  sed -e "s#@AUDIO@#$WORK/audio.al#" -e "s#@PAUSE_MS@#$CALL_MS#" "$FIX/uac_rtp.xml" > "$WORK/uac.xml"
}

# sbc_toml UAS_IP METRICS_LISTEN -> the benchmarks' sbc config on stdout:
# SIP on 127.0.0.1:5060, every call routed to the trunk at UAS_IP:5070, one
# relay worker on 127.0.0.1.
sbc_toml() {
cat <<EOF
[sip]
listen = "127.0.0.1:5060"
domains = ["127.0.0.1"]
log_level = "warn"
[[trunk]]
name = "uas"
address = "$1:5070"
probe = false
[[route]]
prefix = ""
trunks = ["uas"]
[health]
interval_ms = 0
[cdr]
file = "$WORK/cdr.jsonl"
[metrics]
listen = "$2"
[control]
socket = "off"
[relay]
interfaces = ["127.0.0.1"]
listen_ng = "off"
port_min = 40000
port_max = 59999
workers = 1
timeout = 60
metrics = "off"
[guard]
# The capacity runs measure the proxy, not the guard: its limits sit far
# above the rates tried (its per-message check is still paid), so the
# two-realm run's caller (127.0.0.1, not a trunk there) is never limited.
requests_per_s = 1000000
invite_per_s = 1000000
register_per_s = 1000000
EOF
}

# wait_sip PORT [HOST [FROM [NETNS]]]: waits until HOST:PORT (127.0.0.1)
# answers an OPTIONS sent from FROM (127.0.0.1), inside NETNS when given.
wait_sip() {
  local port=$1 host=${2:-127.0.0.1} from=${3:-127.0.0.1} ns=${4:-}
  local run=(); [ -z "$ns" ] || run=(ip netns exec "$ns")
  for _ in $(seq 1 100); do
    "${run[@]}" python3 - "$host" "$port" "$from" <<'PY' && return 0
import socket,sys
host,port,src=sys.argv[1],int(sys.argv[2]),sys.argv[3]
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(0.2); s.bind((src,0))
p=s.getsockname()[1]
m=("OPTIONS sip:%s:%d SIP/2.0\r\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bKw%d\r\nMax-Forwards: 70\r\nFrom: <sip:w@%s>;tag=1\r\nTo: <sip:%s>\r\nCall-ID: w%d\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"%(host,port,src,p,p,src,host,p)).encode()
s.sendto(m,(host,port))
try:
    d=s.recv(4096); sys.exit(0 if d.startswith(b"SIP/2.0 200") else 1)
except Exception: sys.exit(1)
PY
    sleep 0.1
  done
  echo "SIP on $host:$port never answered" >&2; return 1
}

# run_rate NAME PROXY_PORT RATE SCENARIO UAC_IP UAS_IP -> prints "successful failed"
run_rate() {
  local name=$1 port=$2 rate=$3 sf=$4 uac_ip=$5 uas_ip=$6 d=$WORK/$1-$3
  mkdir -p "$d"
  local total=$(( rate * STEP_S ))
  local limit=$(( rate * (CALL_MS / 1000 + 3) ))
  ( cd "$d" && exec sipp -sf "$FIX/uas_echo.xml" -i "$uas_ip" -p 5070 -mi "$uas_ip" -mp 36000 -rtp_echo \
      -m "$total" -nostdin -timeout $(( STEP_S + 60 ))s >/dev/null 2>&1 ) &
  local uas=$!
  sleep 0.3
  # sipp's own -timeout does not always end it: now and then, with every
  # call done, the caller never exits. The outer timeout stops it (SIGTERM:
  # it still writes its final statistics).
  # UAC_EXTRA: more sipp options for the caller (word-split on purpose).
  # shellcheck disable=SC2086
  ( cd "$d" && timeout $(( STEP_S + CALL_MS / 1000 + 90 )) \
      sipp -sf "$sf" 127.0.0.1:"$port" -s 1000 -i "$uac_ip" -p 5071 -mi "$uac_ip" ${UAC_EXTRA:-} \
      -r "$rate" -m "$total" -l "$limit" -nostdin -timeout $(( STEP_S + 60 ))s \
      -trace_stat -stf stats.csv >/dev/null 2>&1 ) || true
  kill "$uas" 2>/dev/null || true; wait "$uas" 2>/dev/null || true
  # Last line of sipp's stats: its SuccessfulCall(C) column; every other
  # call placed failed.
  python3 - "$d/stats.csv" "$total" <<'PY'
import csv,sys
try:
    rows=list(csv.reader(open(sys.argv[1]),delimiter=';'))
    h=rows[0]; last=rows[-1]; ok=int(last[h.index("SuccessfulCall(C)")])
except Exception:
    ok=0
print(ok, int(sys.argv[2])-ok)
PY
}

# capacity NAME PORT SCENARIO UAC_IP UAS_IP -> highest rate with <= 0.1%
# failures; the calls placed go to $WORK/NAME.calls
capacity() {
  local best=0 placed=0
  for r in $RATES; do
    read -r ok bad < <(run_rate "$1" "$2" "$r" "$3" "$4" "$5")
    local total=$(( ok + bad ))
    placed=$(( placed + total )); echo "$placed" > "$WORK/$1.calls"
    printf '  %-14s %5s cps: %6d ok %5d failed\n' "$1" "$r" "$ok" "$bad" >&2
    if [ $(( bad * 1000 )) -le "$total" ]; then best=$r; else break; fi
  done
  echo "$best"
}

# CPU seconds (user + system) used so far by the processes PIDS... and their
# threads, from /proc (to the clock tick).
cpu_s() {
  local t=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && t=$(( t + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat") ))
  done
  python3 -c "import os,sys; print(int(sys.argv[1]) / os.sysconf('SC_CLK_TCK'))" "$t"
}

ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print('%.2f'%(a/b) if b else 'n/a')" "$1" "$2"; }

# The rate, with `+` when it is the last step (the capacity may be higher).
top() { local last; for last in $1; do :; done; if [ "$2" = "$last" ]; then echo "$2+"; else echo "$2"; fi; }
