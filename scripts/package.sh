#!/usr/bin/env bash
# Builds the Debian package `xsbc` (both programs, their systemd units and
# configuration in /etc/xsbc/) with cargo-deb.
#
#   scripts/package.sh                      # release build -> target/debian/xsbc_*.deb
#   scripts/package.sh --profile dev        # the debug binaries (quick; what the test uses)
#   scripts/package.sh --output DIR
#
# Needs cargo-deb (`cargo install cargo-deb --locked`). Prints the path of
# the package on its last line. What goes where: docs/packaging.md.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
output=target/debian
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --output) output=$2; shift 2 ;;
    *) echo "usage: $0 [--profile release|dev] [--output DIR]" >&2; exit 2 ;;
  esac
done
command -v cargo-deb >/dev/null || { echo "cargo-deb is missing: cargo install cargo-deb --locked" >&2; exit 2; }

cargo build --locked --profile "$profile" -p sbc -p media-relay --bins >&2

# /etc/xsbc/sbc.toml: the embedded default configuration (loopback, no
# root, no Redis), with the paths a service uses: the control socket in
# its runtime directory and the CDRs in its state directory.
mkdir -p target/package
sed -e 's#^socket = "/tmp/xsbc-sbc.sock"#socket = "/run/xsbc/sbc.sock"#' \
    -e 's#^file = "sbc-cdr.jsonl"#file = "/var/lib/xsbc/sbc-cdr.jsonl"#' \
    sbc/config/sbc.toml > target/package/sbc.toml
grep -q '^socket = "/run/xsbc/sbc.sock"' target/package/sbc.toml \
  && grep -q '^file = "/var/lib/xsbc/sbc-cdr.jsonl"' target/package/sbc.toml \
  || { echo "sbc/config/sbc.toml changed: update the paths in $0" >&2; exit 1; }

mkdir -p "$output"
# --no-build: the binaries were built above, with the chosen profile (cargo-deb
# maps the assets' target/release/ to it).
# A non-release build is for tests: compress fast, and spare them cargo-deb's
# warning that dev builds are not releases.
fast=(); [ "$profile" = release ] || fast=(--fast --quiet)
cargo deb --locked --no-build --profile "$profile" -p sbc --output "$output" "${fast[@]}" >&2
ls -t "$output"/xsbc_*.deb | head -n 1
