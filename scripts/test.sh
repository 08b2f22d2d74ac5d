#!/usr/bin/env bash
# The README's test command, and what CI runs (.ci/run): formatting, lints, unit tests, the
# Dockerfile and docker-compose.yml checks, the end-to-end tests on the real peers (built first
# if missing) and a Docker engine (scripts/docker.sh), the Kubernetes conformance selection, and
# the benchmarks at a tiny size. Build output stays outside the checkout:
# $CARGO_TARGET_DIR (default ~/.cache/vk-nomad/target), the Go caches, and the peers in
# ~/.cache/vk-nomad/peers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vk-nomad/target}
export CARGO_TERM_COLOR=never

scripts/peers.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Unit tests first; the end-to-end tests last (they run the virtual-kubelet binary: build it).
cargo test --workspace --locked --exclude vk-tests
# The decoders of untrusted bytes (SPDY frames, WebSocket channels, Nomad log frames), fuzzed for a
# bounded time: a crash fails the run.
scripts/fuzz.sh 30
cargo build --locked -p virtual-kubelet --bin virtual-kubelet
# The Dockerfile and docker-compose.yml, checked without a Docker engine (see the script).
scripts/check-deploy.sh "$CARGO_TARGET_DIR/debug/virtual-kubelet"
# The example provider (examples/timer-provider) runs in the end-to-end tests too.
cargo build --locked -p vk-example-provider
# A Docker engine (installed and started when missing) and the test images, made offline: pods of
# the end-to-end tests run in real containers on Nomad's docker driver.
scripts/docker.sh
scripts/images.sh
cargo test --locked -p vk-tests --test e2e
# The Kubernetes node conformance selection (README, "Kubernetes conformance specs"): e2e.test of
# the pinned Kubernetes against a stack whose only node is this one, on Nomad's docker driver; it
# prints the pass count and fails unless every selected spec passes (a failing spec is run twice).
scripts/conformance.sh --ci
# The benchmarks at a tiny size (10 pods, one run each, about a minute): the harness keeps working;
# no timing is asserted, and the report goes to a temporary file, not BENCHMARKS.md.
bench_out=$(mktemp --suffix=.md)
VK_BENCH_PROFILE=debug bench/run.sh --size tiny --out "$bench_out"
rm -f "$bench_out"
