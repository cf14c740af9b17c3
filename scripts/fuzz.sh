#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for SECONDS each (default 60),
# growing its corpus in fuzz/corpus/<target>/. Needs the nightly toolchain
# and cargo-fuzz (`cargo install cargo-fuzz`).
#
#   scripts/fuzz.sh              # every target, 60 s each
#   scripts/fuzz.sh 300 sdp ng   # only these targets, 300 s each
#
# A crash is saved under fuzz/artifacts/<target>/ and stops the run; turn it
# into a regression test by copying it into fuzz/corpus/<target>/ (replayed
# on stable by `cargo test`, see docs/testing.md) and fix the parser. After
# a long run, minimise the corpus before committing it:
#   cargo +nightly fuzz cmin -O <target>
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs="${1:-60}"
shift || true
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
  printf '\n== %s (%ss)\n' "$t" "$secs"
  mkdir -p "corpus/$t"
  # -max_len keeps inputs near datagram size; rss limit guards against
  # inputs that make a parser allocate without bound.
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
    -max_total_time="$secs" -max_len=4096 -rss_limit_mb=1024 -print_final_stats=1
done
