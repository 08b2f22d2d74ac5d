#!/usr/bin/env bash
# The README's "run it" command: builds the peers (first time only), makes sure a Docker engine
# answers and the images are made (offline), builds the virtual kubelet, and runs it on a local
# stack with an example pod in a real container. Build output stays outside the checkout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vk-nomad/target}
scripts/peers.sh
scripts/docker.sh
scripts/images.sh
cargo build -p virtual-kubelet -p vk-tests --bins
exec "$CARGO_TARGET_DIR/debug/local-stack" "$@"
