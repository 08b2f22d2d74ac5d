#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a bounded time: the SPDY frame and header-block
# decoder, the WebSocket channel decoder and the Nomad log-frame decoder. A crash fails the run and
# leaves its input in fuzz/artifacts/.
#
# cargo-fuzz is installed into ~/.cargo/bin when missing. It runs on the stable toolchain with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags), with the address sanitizer. Build output goes to
# ${VK_FUZZ_TARGET_DIR:-~/.cache/vk-nomad/target-fuzz}, outside the checkout.
#
# Usage: scripts/fuzz.sh [seconds per target, default 30]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
seconds=${1:-30}
export CARGO_TARGET_DIR=${VK_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vk-nomad/target-fuzz}
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
  echo "fuzz: $target for ${seconds}s"
  if ! cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 >"$CARGO_TARGET_DIR/$target.log" 2>&1; then
    tail -n 40 "$CARGO_TARGET_DIR/$target.log" >&2
    echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  tail -n 1 "$CARGO_TARGET_DIR/$target.log"
done
