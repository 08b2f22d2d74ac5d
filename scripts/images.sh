#!/usr/bin/env bash
# Builds, offline, the container images the end-to-end tests and the local stack use, and imports
# them into the Docker engine (scripts/docker.sh starts one). Nothing is pulled from a registry.
#   vk-test/busybox:1.35  busybox-static's binary (Debian) with its applets, /etc/passwd (root,
#                         nobody), /tmp: the image of most test containers.
#   vk-test/busybox:next  the same image under a second tag, for tests that change a pod's image.
#   vk-test/pause:3.10    a static pause process (scripts/images/pause.c): the infra container
#                         Nomad's docker driver starts to hold a bridge-mode allocation's network
#                         namespace (the Nomad client's `infra_image`).
# Each image is labelled with the SHA-256 of what it is made from (this script and its inputs);
# an image whose label matches is not made again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
start=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# made <tag> <key>: the image exists with that content key.
made() {
  [[ $(docker image inspect --format '{{index .Config.Labels "vk-test.content"}}' "$1" 2>/dev/null) == "$2" ]]
}

# import <tag> <key> <rootfs-dir> <docker-import -c change>...
import() {
  local tag=$1 key=$2 root=$3
  shift 3
  local changes=(-c "LABEL vk-test.content=$key")
  for c in "$@"; do changes+=(-c "$c"); done
  tar --numeric-owner --owner=0 --group=0 -C "$root" -c . | docker import "${changes[@]}" - "$tag" >/dev/null
  echo "images: made $tag"
}

self=$(sha256sum images.sh | cut -c1-64)

busybox=vk-test/busybox:1.35
key=$(cat <(echo "$self") /bin/busybox | sha256sum | cut -c1-64)
if made "$busybox" "$key"; then
  echo "images: $busybox is up to date"
else
  root=$work/busybox
  mkdir -p "$root"/{bin,etc,tmp,root,usr/bin,var}
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
  done
  ln -s /bin/env "$root/usr/bin/env"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  import "$busybox" "$key" "$root" \
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'CMD ["/bin/sh"]'
fi
docker tag "$busybox" vk-test/busybox:next

pause=vk-test/pause:3.10
key=$(cat <(echo "$self") images/pause.c | sha256sum | cut -c1-64)
if made "$pause" "$key"; then
  echo "images: $pause is up to date"
else
  root=$work/pause
  mkdir -p "$root"
  gcc -static -O2 -o "$root/pause" images/pause.c
  strip "$root/pause"
  import "$pause" "$key" "$root" 'ENTRYPOINT ["/pause"]'
fi
echo "images: ready in $((SECONDS - start)) s"
