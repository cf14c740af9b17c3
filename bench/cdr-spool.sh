#!/usr/bin/env bash
# The CDR spool: what it costs in calls per second, and how fast the
# forwarder moves CDRs into PostgreSQL. One run, ROUNDS rounds of each:
#
#   bench/cdr-spool.sh                     # defaults below
#   ROUNDS=5 CDRS=100000 bench/cdr-spool.sh
#
# 1. Calls per second (the sip-cps.sh method: sipp calls of CALL_MS with RTP
#    both ways at rising RATES for STEP_S each; capacity = highest rate with
#    at most 0.1 % failed), for the sbc writing CDRs
#    - to the JSON-lines file only (no spool), and
#    - to the spool first (fdatasync per CDR) and the JSON-lines file, with
#      the forwarder sending them to a running PostgreSQL.
#    The two configurations alternate within each round.
# 2. Forwarder throughput: a spool of CDRS records (copies of a real CDR
#    from step 1, each with its own id) is written, an sbc starts on it
#    with PostgreSQL up, and the time from the first forwarded batch to the
#    last one gives CDRs per second committed into PostgreSQL.
#
# PostgreSQL is a private cluster (initdb + pg_ctl under /tmp, run as the
# `postgres` user when root, fsync on: a real commit). Prints medians.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
RATES=${RATES:-"100 200 300 400 500 600 800"}
STEP_S=${STEP_S:-5}
CALL_MS=${CALL_MS:-1000}
CDRS=${CDRS:-50000}
BATCH=${BATCH:-500}
FIX=$ROOT/testkit/scenarios

command -v sipp >/dev/null || { echo "missing sipp (apt-get install sip-tester)"; exit 2; }
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PGBIN/initdb" ] || { echo "missing PostgreSQL (apt-get install postgresql)"; exit 2; }
cargo build --release -q -p sbc
SBC=$ROOT/target/release/sbc

WORK=$(mktemp -d /tmp/xsbc-cdrbench.XXXXXX)
chmod 755 "$WORK"
PGDIR=$WORK/pg
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

# shellcheck source=bench/sip-lib.sh
. "$ROOT/bench/sip-lib.sh"
make_uac

mkdir -p "$PGDIR"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$PGDIR"
as_pg "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w \
  -o "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1" start >/dev/null
CONNINFO="host=127.0.0.1 port=$PGPORT user=postgres dbname=postgres"
psql_c() { "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -At -c "$1"; }

# sbc_conf NAME SPOOL(yes/no) -> a config file path
sbc_conf() {
  local f=$WORK/sbc-$1.toml
  sbc_toml 127.0.0.1 127.0.0.1:9109 > "$f"
  if [ "$2" = yes ]; then
    python3 - "$f" "$WORK/spool-$1" "$CONNINFO" "$BATCH" <<'PY'
import sys
f, d, c, b = sys.argv[1:]
s = open(f).read()
s = s.replace("[cdr]\n", '[cdr]\nspool_dir = "%s"\npostgres = "%s"\nbatch = %s\n' % (d, c, b), 1)
open(f, "w").write(s)
PY
  fi
  echo "$f"
}

metric() { # NAME -> value from the sbc's /metrics
  python3 - "$1" <<'PY'
import sys, urllib.request
t = urllib.request.urlopen("http://127.0.0.1:9109/metrics", timeout=2).read().decode()
v = [l.split()[-1] for l in t.splitlines() if l.startswith(sys.argv[1] + " ")]
print(v[0] if v else "nan")
PY
}

# CPU seconds (user + system, clock-tick resolution) used so far by PID.
cpu_ticks_s() { python3 -c 'import os,sys; f=open("/proc/%s/stat" % sys.argv[1]).read().rsplit(")",1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK"))' "$1"; }

median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:]]; print("%g" % statistics.median(v) if v else "n/a")' "$@"; }

JSON_CPS=(); SPOOL_CPS=(); FWD_RATE=(); JSON_CPU=(); SPOOL_CPU=()
for round in $(seq 1 "$ROUNDS"); do
  for mode in json spool; do
    echo "== round $round: calls/s, CDRs to $mode" >&2
    rm -rf "$WORK/spool-$mode-$round"
    conf=$(sbc_conf "$mode-$round" "$([ "$mode" = spool ] && echo yes || echo no)")
    "$SBC" run --config "$conf" 2>"$WORK/sbc-$mode-$round.log" & PIDS+=($!)
    wait_sip 5060
    cps=$(capacity "$mode-$round" 5060 "$WORK/uac.xml" 127.0.0.1 127.0.0.1)
    if [ "$mode" = spool ]; then
      # Every CDR of the run reached PostgreSQL.
      for _ in $(seq 1 100); do [ "$(metric sbc_cdr_spool_records)" = 0 ] && break; sleep 0.1; done
      echo "  spool drained: $(metric sbc_cdr_forwarded_total) CDRs forwarded, $(metric sbc_cdr_spool_records) left" >&2
      SPOOL_CPS+=("$cps")
    else
      JSON_CPS+=("$cps")
    fi
    # The sbc's CPU time per call placed (steadier than the capacity on a
    # shared machine).
    ms=$(python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) * 1000 / max(1, int(sys.argv[2]))))' \
      "$(cpu_ticks_s "${PIDS[-1]}")" "$(cat "$WORK/$mode-$round.calls")")
    if [ "$mode" = spool ]; then SPOOL_CPU+=("$ms"); else JSON_CPU+=("$ms"); fi
    kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
  done

  echo "== round $round: forwarder, $CDRS CDRs into PostgreSQL" >&2
  sp=$WORK/spool-fwd-$round
  python3 - "$WORK/cdr.jsonl" "$sp" "$CDRS" "$round" <<'PY'
import json, os, struct, sys, time, uuid, zlib
src, d, n, rnd = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
tmpl = json.loads(open(src).readline())
os.makedirs(d, exist_ok=True)
seg, size, now = None, 0, int(time.time() * 1000)
for seq in range(1, n + 1):
    if seg is None or size > 4 << 20:
        if seg: seg.close()
        seg, size = open(os.path.join(d, "seg-%020d.spool" % seq), "wb"), 0
    tmpl["id"] = str(uuid.uuid4()); tmpl["call_id"] = "bench-%s-%d@127.0.0.1" % (rnd, seq)
    p = json.dumps(tmpl, separators=(",", ":")).encode()
    body = struct.pack("<QQ", seq, now) + p
    ln = struct.pack("<I", len(p))
    rec = ln + struct.pack("<I", zlib.crc32(ln + body)) + body
    seg.write(rec); size += len(rec)
seg.close()
PY
  conf=$(sbc_conf "fwd-$round" yes)
  "$SBC" run --config "$conf" 2>"$WORK/sbc-fwd-$round.log" & PIDS+=($!)
  wait_sip 5060
  q="FROM cdr WHERE call_id LIKE 'bench-$round-%'"
  for _ in $(seq 1 600); do [ "$(psql_c "SELECT count(*) $q")" -ge "$CDRS" ] && break; sleep 0.2; done
  # inserted_at is each batch's transaction start: from the first batch's
  # start to the last one's, all but the last batch were committed.
  rate=$(psql_c "SELECT round((count(*) - $BATCH) / nullif(extract(epoch FROM max(inserted_at) - min(inserted_at)), 0)) $q")
  echo "  ${rate:-0} CDRs/s ($(psql_c "SELECT count(*) $q") rows)" >&2
  FWD_RATE+=("${rate:-0}")
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
done

J=$(median "${JSON_CPS[@]}"); S=$(median "${SPOOL_CPS[@]}"); F=$(median "${FWD_RATE[@]}")
echo
echo "calls of ${CALL_MS} ms with RTP, ${STEP_S} s per rate (rates $RATES), $ROUNDS rounds, medians"
printf '%-44s %10s   (rounds: %s)\n' "max calls/s, CDRs to JSON lines only" "$(top "$RATES" "$J")" "${JSON_CPS[*]}"
printf '%-44s %10s   (rounds: %s)\n' "max calls/s, spool (fdatasync) + forwarder" "$(top "$RATES" "$S")" "${SPOOL_CPS[*]}"
printf '%-44s %10s\n' "ratio spool / JSON only" "$(ratio "$S" "$J")"
JC=$(median "${JSON_CPU[@]}"); SC=$(median "${SPOOL_CPU[@]}")
printf '%-44s %10s   (rounds: %s)\n' "sbc CPU ms per call, JSON lines only" "$JC" "${JSON_CPU[*]}"
printf '%-44s %10s   (rounds: %s)\n' "sbc CPU ms per call, spool + forwarder" "$SC" "${SPOOL_CPU[*]}"
printf '%-44s %10s\n' "ratio spool / JSON only" "$(ratio "$SC" "$JC")"
printf '%-44s %10s   (rounds: %s; %s CDRs, batch %s)\n' "forwarder CDRs/s into PostgreSQL" "$F" "${FWD_RATE[*]}" "$CDRS" "$BATCH"
echo "(+: passed the highest rate tried; work dir $WORK)"
