#!/usr/bin/env bash
# The one test command: installs the system packages the tests need (when
# missing), builds the workspace, and runs every test.
#
#   scripts/test.sh            # all tests
#   scripts/test.sh -- NAME    # pass a filter through to cargo test
#
# Tests that need external peers (Kamailio, sipp, rtpengine, Redis) skip with a
# message when those are absent, except under CI=true, where they must run.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# Debian packages: name of package -> a binary it provides.
need_pkgs=()
check_pkg() { command -v "$2" >/dev/null 2>&1 || need_pkgs+=("$1"); }
check_pkg sip-tester sipp
check_pkg kamailio kamailio
check_pkg rtpengine-daemon rtpengine
check_pkg iproute2 ip
check_pkg redis-server redis-server
check_pkg redis-tools redis-cli
check_pkg redis-sentinel redis-sentinel
check_pkg ethtool ethtool
check_pkg procps sysctl
# A real phone: registers with digest and calls with media (tests/auth.rs).
check_pkg baresip baresip
# The realm tests put the carrier behind a NAT.
check_pkg iptables iptables
# A real phone for the TLS tests (baresip's core: no GUI, no video).
check_pkg baresip-core baresip
# The XDP program is compiled from source when clang and libbpf's headers are
# there; otherwise the checked-in object (verified by a test) is used.
check_pkg clang clang
[ -f /usr/include/bpf/bpf_helpers.h ] || need_pkgs+=(libbpf-dev)
# The CDR spool tests forward to a private PostgreSQL cluster (initdb, pg_ctl).
check_pkg postgresql pg_ctlcluster

# The package test verifies the systemd units offline.
check_pkg systemd systemd-analyze
# A real DNS server (NAPTR, SRV, A) for the RFC 3263 tests (tests/dns.rs).
check_pkg dnsmasq-base dnsmasq
# A real Prometheus and promtool for the shipped setup (sbc/tests/prometheus.rs).
check_pkg prometheus promtool

if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "warning: missing packages ${need_pkgs[*]} and cannot apt-get install them (not root?)" >&2
  fi
fi

# The package test builds the .deb with cargo-deb (a cargo subcommand from
# crates.io).
if ! command -v cargo-deb >/dev/null 2>&1; then
  log "installing cargo-deb"
  cargo install cargo-deb --locked --version 3.8.0 --quiet
fi

filter=()
if [ "${1:-}" = "--" ]; then shift; filter=("$@"); fi

log "build"
cargo build --workspace --all-targets --locked 2>&1 | tail -n 3

log "tests"
# One test binary at a time keeps the timing-sensitive relay tests off each
# other's cores on a 2-core machine; tests inside a binary still run in parallel.
cargo test --workspace --locked --no-fail-fast -- "${filter[@]}"

# A machine without clang must still build: xdp-prog then embeds the
# checked-in object, and its tests (the verdict table too) run against it.
# A target directory of its own leaves the main build's artifacts alone.
if [ "${#filter[@]}" -eq 0 ]; then
  log "xdp-prog without clang (the checked-in object)"
  CLANG=/nonexistent/clang XSBC_EXPECT_BPF_ORIGIN=checked-in CARGO_TARGET_DIR=target/no-clang \
    cargo test -p xdp-prog --locked --no-fail-fast
else
  log "skipping the no-clang build of xdp-prog (a test filter was given)"
fi
