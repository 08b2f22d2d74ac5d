#!/usr/bin/env bash
# Makes sure a Docker engine answers on this machine, for the end-to-end tests on Nomad's docker
# driver and for `scripts/local-stack.sh`:
# - installs Debian's docker.io, containernetworking-plugins (CNI, for Nomad's bridge networking)
#   and busybox-static (the offline base of the test images, scripts/images.sh) when missing;
# - starts `dockerd` when no daemon answers, with its state in a cache directory outside the
#   checkout (${VK_DOCKER_DIR:-~/.cache/vk-nomad/docker}: images survive between runs), and waits
#   for it (120 s at most). What an earlier run of it left behind when its machine stopped under it
#   goes first: shims of containers that no longer run (their state in the exec root, which a
#   container restart of the machine keeps; containerd cleans each up at start, one by one, and with
#   hundreds of them it missed dockerd's own deadline) and, once the daemon answers, the containers
#   (only the end-to-end tests make containers in this daemon's data root, and none runs now);
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
  exec_root=/run/vk-docker
  # alive: a process that is not a zombie (a killed daemon nobody reaped still passes kill -0).
  alive() { [[ -r /proc/$1/stat ]] && [[ $(awk '{print $3}' "/proc/$1/stat") != Z ]]; }
  if [[ -f /run/vk-docker.pid ]] && alive "$(cat /run/vk-docker.pid)"; then
    echo "docker: the dockerd this script started ($(cat /run/vk-docker.pid)) does not answer; stopping it" >&2
    kill "$(cat /run/vk-docker.pid)" || true
    for _ in $(seq 40); do alive "$(cat /run/vk-docker.pid)" || break; sleep 0.5; done
  fi
  # dockerd refuses to start while its pid file names a process, even a zombie.
  rm -f /run/vk-docker.pid
  # Shims still alive from a daemon that is gone hold containers nobody manages: stop them, then
  # drop the runtime state that would make containerd clean each up at start.
  pkill -f "containerd-shim.*$exec_root/" 2>/dev/null || true
  if [[ -d $exec_root ]]; then
    stale=$(find "$exec_root" -mindepth 5 -maxdepth 5 -path '*io.containerd.runtime.v2.task/*' 2>/dev/null | wc -l)
    echo "docker: removing the runtime state of an earlier dockerd ($stale task(s))"
    # Network namespaces of its containers are bind mounts under it: unmount first, deepest first.
    awk -v root="$exec_root/" 'index($2, root) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount -l
    rm -rf "$exec_root"
  fi
  echo "docker: starting dockerd (state in $dir, log $dir/dockerd.log) ..."
  # setsid: the daemon outlives this script and the test run's process group.
  setsid dockerd --data-root "$dir/data" --exec-root "$exec_root" --pidfile /run/vk-docker.pid \
    -H unix:///var/run/docker.sock >>"$dir/dockerd.log" 2>&1 </dev/null &
  daemon=$!
  for _ in $(seq 240); do
    answers && break
    alive "$daemon" || break
    sleep 0.5
  done
  if ! answers; then
    echo "docker: dockerd did not answer within 120 s (or exited); its log:" >&2
    tail -20 "$dir/dockerd.log" >&2
    exit 1
  fi
  echo "docker: dockerd $(docker info --format '{{.ServerVersion}} {{.Driver}} cgroup {{.CgroupVersion}}') answers"
  leftovers=$(docker ps -aq)
  if [[ -n $leftovers ]]; then
    echo "docker: removing $(wc -l <<<"$leftovers") container(s) an earlier run left in $dir"
    docker rm -f $leftovers >/dev/null
  fi
fi
echo "docker: ready in $((SECONDS - start)) s"
