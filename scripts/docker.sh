#!/usr/bin/env bash
# Makes sure a Docker engine answers on this machine, for the end-to-end tests on Nomad's docker
# driver and for `scripts/local-stack.sh`:
# - installs Debian's docker.io, containernetworking-plugins (CNI, for Nomad's bridge networking)
#   and busybox-static (the offline base of the test images, scripts/images.sh) when missing;
# - starts `dockerd` when no daemon answers, with its state in a cache directory outside the
#   checkout (${VK_DOCKER_DIR:-~/.cache/vk-nomad/docker}: images survive between runs), and waits
#   for it (30 s at most);
# - leaves a daemon it did not start alone, and never stops the one it started.
# Prints how long it took. Needs root (apt-get, dockerd), as the machines of this project run.
set -euo pipefail
start=$SECONDS
dir=${VK_DOCKER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vk-nomad/docker}

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
# busybox-static's binary is the one the test images carry: a dynamic busybox would need its libc.
if [[ ! -x /bin/busybox ]] || ldd /bin/busybox >/dev/null 2>&1; then
  missing+=(busybox-static)
fi
if ((${#missing[@]} > 0)); then
  echo "docker: installing ${missing[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

answers() { docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; }
if answers; then
  echo "docker: an engine answers ($(docker info --format '{{.ServerVersion}} {{.Driver}} cgroup {{.CgroupVersion}}')); left as it is"
else
  mkdir -p "$dir"
  echo "docker: starting dockerd (state in $dir, log $dir/dockerd.log) ..."
  # setsid: the daemon outlives this script and the test run's process group.
  setsid dockerd --data-root "$dir/data" --exec-root /run/vk-docker --pidfile /run/vk-docker.pid \
    -H unix:///var/run/docker.sock >>"$dir/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 60); do
    answers && break
    sleep 0.5
  done
  if ! answers; then
    echo "docker: dockerd did not answer within 30 s; its log:" >&2
    tail -20 "$dir/dockerd.log" >&2
    exit 1
  fi
  echo "docker: dockerd $(docker info --format '{{.ServerVersion}} {{.Driver}} cgroup {{.CgroupVersion}}') answers"
fi
echo "docker: ready in $((SECONDS - start)) s"
