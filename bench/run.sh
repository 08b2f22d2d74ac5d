#!/usr/bin/env bash
# The benchmarks (issue 7): builds `virtual-kubelet` and `vk-bench` in release mode (and the peers,
# upstream virtual-kubelet v1.13.0 among them, through scripts/peers.sh), then runs the suite under
# `nice -n 19` and writes BENCHMARKS.md at the repository root (or --out).
#
# Usage: bench/run.sh [--size full|tiny] [--only P1,P2,...] [--out FILE]
#        VK_BENCH_PROFILE=debug bench/run.sh --size tiny ...   (reuse a debug build, as CI does)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# vk-bench finds the repository (scripts/peers.sh, BENCHMARKS.md) here, not where it was compiled.
export VK_REPO_ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vk-nomad/target}
profile=${VK_BENCH_PROFILE:-release}
flags=(--locked)
[[ $profile == release ]] && flags+=(--release)
scripts/peers.sh
nice -n 19 cargo build "${flags[@]}" -p virtual-kubelet -p vk-bench --bin virtual-kubelet --bin vk-bench
# vk-bench finds the virtual-kubelet binary beside itself.
exec nice -n 19 "$CARGO_TARGET_DIR/$profile/vk-bench" "$@"
