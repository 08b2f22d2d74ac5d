#!/usr/bin/env bash
# Runs the Kubernetes v1.36.3 e2e specs of a node (sig-node NodeConformance/Conformance and the
# sig-storage volume plugins a kubelet implements) against the virtual kubelet on a local stack,
# offline:
# 1. builds `e2e.test` (`go test -c k8s.io/kubernetes/test/e2e`) and `agnhost` from the wrapper
#    module scripts/peers/conformance, and a static BusyBox 1.37.0 from its upstream source
#    (Debian's unpatched orig tarball, SHA-256 checked: Debian's own build drops environment
#    variables named like `data-1` from `sh`, which upstream's, and the real test image, keep),
#    into
#      ${VK_PEERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vk-nomad/peers}/conformance-v1.36.3/
#    (once: present binaries are not built again);
# 2. makes sure a Docker engine answers (scripts/docker.sh) with the stack's images
#    (scripts/images.sh), and makes, from busybox-static and those binaries, the test images the
#    specs name (test/utils/image/manifest.go of v1.36.3), under their exact names, so nothing is
#    ever pulled:
#      registry.k8s.io/e2e-test-images/busybox:1.37.0-1  that BusyBox, its applets in /bin
#      registry.k8s.io/e2e-test-images/agnhost:2.63.0    /agnhost (ENTRYPOINT, CMD pause), /agnhost-2,
#        and :2.55 (AgnhostPrev, the same image)       the busybox tree, /bin/bash (runs busybox sh),
#                                                        /usr/bin/curl (busybox wget, one URL),
#                                                        /uploads, porter's localhost.crt/.key, user
#                                                        user-defined-in-image (1000) in group
#                                                        group-defined-in-image (50000)
#      registry.k8s.io/e2e-test-images/nginx:1.15-4      stand-ins (nginx, NginxNew): the busybox tree
#        and :1.27-0                                     serving /usr/share/nginx/html with
#                                                        `httpd -f -p 80`; the chosen specs only need a
#                                                        long-running container with a shell
#      registry.k8s.io/e2e-test-images/nonroot:1.5       the busybox tree, USER 1234
#      registry.k8s.io/e2e-test-images/nonewprivs:1.4   the busybox tree, /usr/local/bin/nnp (set-user-ID
#                                                        root, from test/images/nonewprivs), CMD nnp
#      registry.k8s.io/pause:3.10.2                      the static pause (scripts/images/pause.c),
#                                                        USER 65535:65535
#    Each is labelled with the SHA-256 of what it is made from and made again only on change (as
#    scripts/images.sh does); v1.36.3's manifest has no httpd image any more;
# 3. builds the virtual kubelet and `tests/src/bin/conformance.rs`, which starts the stack, the
#    virtual kubelet on Nomad's docker driver as the only (untainted) node, runs e2e.test with the
#    focus below and writes the reports and summary.txt (one line per spec) to the report directory
#    it prints; exits with e2e.test's status.
#
# Usage: scripts/conformance.sh [FOCUS-REGEX] [-- E2E.TEST-FLAGS...]
#        scripts/conformance.sh --prepare          (steps 1 and 2 only)
#        scripts/conformance.sh --ci               (the selection scripts/test.sh runs: the set's
#                                                   [Conformance] specs less those that cannot apply
#                                                   to a node backed by Nomad, CI_SKIP below; 4
#                                                   processes, a failing spec run 3 times, 30 min at
#                                                   most; fails unless all pass)
#   FOCUS-REGEX  --ginkgo.focus (default: the set above, see DEFAULT_FOCUS in the binary)
#   VK_CONFORMANCE_SKIP     --ginkgo.skip (default: \[Serial\]|\[Disruptive\]|\[Slow\]|\[Feature:)
#   VK_CONFORMANCE_TIMEOUT  --ginkgo.timeout (default: 3h)
#   VK_CONFORMANCE_PROCS    parallel Ginkgo processes (default: 1; above 1 through the ginkgo CLI,
#                           built beside e2e.test)
#   VK_CONFORMANCE_REPORTS  report directory (default: a new one under
#                           ${XDG_CACHE_HOME:-$HOME/.cache}/vk-nomad/conformance/)
# Needs root (Docker, Nomad's docker driver), Go and cargo; nothing leaves 127.0.0.1 but Go module
# downloads through the configured proxy on the first build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$SECONDS

K8S_VERSION=v1.36.3
AGNHOST_VERSION=2.63.0
REG=registry.k8s.io
E2E_REG=$REG/e2e-test-images

# The CI selection (--ci): the set's [Conformance] specs ...
CI_FOCUS='\[sig-node\].*\[Conformance\]|\[sig-storage\] (ConfigMap|Secrets|Downward API|Projected|EmptyDir).*\[Conformance\]'
# ... less the default skip and what cannot apply to a node backed by Nomad (README, "Kubernetes
# conformance specs", says why for each): in-place resize, ephemeral containers, image volumes,
# the kubelet-managed /etc/hosts of hostNetwork pods.
CI_SKIP='\[Serial\]|\[Disruptive\]|\[Slow\]|\[Feature:|Pod InPlace Resize|Ephemeral Containers|ImageVolume|KubeletManagedEtcHosts'

prepare_only=false
ci=false
focus=()
extra=()
while (($#)); do
  case $1 in
    --prepare) prepare_only=true ;;
    --ci) ci=true ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *)
      ((${#focus[@]} == 0)) || { echo "conformance: one focus regex only (got '$1')" >&2; exit 2; }
      focus=(--focus "$1")
      ;;
  esac
  shift
done

export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -buildvcs=false -trimpath"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vk-nomad/target}
out="$(scripts/peers.sh --dir)/conformance-$K8S_VERSION"
# The version variables of Kubernetes' builds, as scripts/peers.sh sets them.
ldflags=$(scripts/peers.sh --k8s-ldflags)


# --- 1. e2e.test and agnhost ------------------------------------------------------------------
mkdir -p "$out"
(
  cd scripts/peers/conformance
  export CGO_ENABLED=0
  if [[ ! -x $out/e2e.test ]]; then
    t=$SECONDS
    echo "conformance: building e2e.test $K8S_VERSION into $out ..."
    go test -c -ldflags "$ldflags" -o "$out/e2e.test.tmp" k8s.io/kubernetes/test/e2e
    mv "$out/e2e.test.tmp" "$out/e2e.test"
    echo "conformance:   e2e.test built in $((SECONDS - t)) s"
  fi
  if [[ ! -x $out/agnhost ]]; then
    t=$SECONDS
    echo "conformance: building agnhost $AGNHOST_VERSION into $out ..."
    # As test/images/agnhost/Makefile and image-util.sh build it.
    go build -ldflags "-s -w -X main.Version=$AGNHOST_VERSION" -o "$out/agnhost.tmp" \
      k8s.io/kubernetes/test/images/agnhost
    mv "$out/agnhost.tmp" "$out/agnhost"
    echo "conformance:   agnhost built in $((SECONDS - t)) s"
  fi
  if [[ ! -x $out/nnp ]]; then
    go build -o "$out/nnp.tmp" k8s.io/kubernetes/test/images/nonewprivs
    mv "$out/nnp.tmp" "$out/nnp"
  fi
  if [[ ! -x $out/ginkgo ]]; then
    # The Ginkgo CLI, for parallel runs (VK_CONFORMANCE_PROCS), at the suite's Ginkgo version.
    go build -o "$out/ginkgo.tmp" github.com/onsi/ginkgo/v2/ginkgo
    mv "$out/ginkgo.tmp" "$out/ginkgo"
  fi
)
# Upstream BusyBox, as the real busybox test image has it (defconfig, static; `tc` left out: it
# needs kernel headers with CBQ).
BUSYBOX_VERSION=1.37.0
BUSYBOX_SHA256=3311dff32e746499f4df0d5df04d7eb396382d7e108bb9250e7b519b837043a4
bb=$out/busybox-$BUSYBOX_VERSION
if [[ ! -x $bb ]]; then
  t=$SECONDS
  echo "conformance: building busybox $BUSYBOX_VERSION into $out ..."
  src=$(mktemp -d)
  curl -fsSL -o "$src/busybox.tar.bz2" \
    "http://deb.debian.org/debian/pool/main/b/busybox/busybox_$BUSYBOX_VERSION.orig.tar.bz2"
  echo "$BUSYBOX_SHA256  $src/busybox.tar.bz2" | sha256sum -c --quiet -
  tar -C "$src" -xjf "$src/busybox.tar.bz2"
  (
    cd "$src/busybox-$BUSYBOX_VERSION"
    make defconfig >/dev/null
    sed -i 's/^# CONFIG_STATIC is not set/CONFIG_STATIC=y/; s/^CONFIG_TC=y/# CONFIG_TC is not set/' .config
    make -j"$(nproc)" busybox >"$src/build.log" 2>&1 || { tail -20 "$src/build.log" >&2; exit 1; }
  )
  cp "$src/busybox-$BUSYBOX_VERSION/busybox" "$bb.tmp"
  mv "$bb.tmp" "$bb"
  rm -rf "$src"
  echo "conformance:   busybox built in $((SECONDS - t)) s"
fi
echo "conformance: e2e.test, agnhost and busybox in $out"

# --- 2. Docker and the images ------------------------------------------------------------------
scripts/docker.sh
scripts/images.sh

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
self=$(sha256sum scripts/conformance.sh | cut -c1-64)

# made <key> <tag>...: every tag exists with that content key.
made() {
  local key=$1 tag
  shift
  for tag in "$@"; do
    [[ $(docker image inspect --format '{{index .Config.Labels "vk-test.content"}}' "$tag" 2>/dev/null) == "$key" ]] ||
      return 1
  done
}

# import <key> <rootfs-dir> <tags (space-separated)> <docker-import -c change>...
import() {
  local key=$1 root=$2 tags=$3
  shift 3
  local changes=(-c "LABEL vk-test.content=$key") c tag first=
  for c in "$@"; do changes+=(-c "$c"); done
  for tag in $tags; do
    if [[ -z $first ]]; then
      first=$tag
      tar --numeric-owner --owner=0 --group=0 -C "$root" -c . |
        docker import "${changes[@]}" - "$tag" >/dev/null
    else
      docker tag "$first" "$tag"
    fi
    echo "conformance: made image $tag"
  done
}

# busybox_tree <dir>: busybox-static with every applet linked in /bin (as `busybox --install -s
# /bin` lays them out), /usr/bin/env, the accounts of the busybox image, /tmp, /root, /home, /var.
busybox_tree() {
  local root=$1 applet
  mkdir -p "$root"/{bin,etc,home,root,tmp,usr/bin,usr/sbin,var/spool/mail,var/www}
  chmod 1777 "$root/tmp"
  chmod 700 "$root/root"
  cp "$bb" "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
  done
  ln -s /bin/env "$root/usr/bin/env"
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
EOF
}

path_env='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
bb_key=$(cat <(echo "$self") "$bb" | sha256sum | cut -c1-64)

tags="$E2E_REG/busybox:1.37.0-1"
if made "$bb_key" $tags; then
  echo "conformance: $tags is up to date"
else
  busybox_tree "$work/busybox"
  import "$bb_key" "$work/busybox" "$tags" "$path_env" 'CMD ["sh"]'
fi

tags="$E2E_REG/agnhost:$AGNHOST_VERSION $E2E_REG/agnhost:2.55"
porter=$(cd scripts/peers/conformance && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/test/images/agnhost/porter
key=$(cat <(echo "$self") "$bb" "$out/agnhost" "$porter/localhost.crt" "$porter/localhost.key" |
  sha256sum | cut -c1-64)
if made "$key" $tags; then
  echo "conformance: $tags are up to date"
else
  root=$work/agnhost
  busybox_tree "$root"
  cp "$out/agnhost" "$root/agnhost"
  ln -s agnhost "$root/agnhost-2"
  mkdir -p "$root/uploads"
  cp "$porter/localhost.crt" "$porter/localhost.key" "$root/"
  # Alpine's bash is there in the real image (probe specs run `/bin/bash -c`): busybox's ash.
  printf '#!/bin/sh\nexec /bin/sh "$@"\n' >"$root/bin/bash"
  chmod 755 "$root/bin/bash"
  # Alpine's curl is there too (the lifecycle hook specs' exec hooks run `curl <url>`): a GET of
  # the one URL to stdout, by busybox's wget; options are ignored.
  printf '%s\n' '#!/bin/sh' 'url=' 'for a; do case $a in -*) ;; *) url=$a ;; esac; done' \
    'exec wget -q -O- "$url"' >"$root/usr/bin/curl"
  chmod 755 "$root/usr/bin/curl"
  echo 'user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh' >>"$root/etc/passwd"
  printf 'user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n' \
    >>"$root/etc/group"
  mkdir -p "$root/home/user-defined-in-image"
  import "$key" "$root" "$tags" "$path_env" 'EXPOSE 80 8080 8081 9376 5000' \
    'ENTRYPOINT ["/agnhost"]' 'CMD ["pause"]'
fi

tags="$E2E_REG/nginx:1.15-4 $E2E_REG/nginx:1.27-0"
if made "$bb_key" $tags; then
  echo "conformance: $tags are up to date"
else
  root=$work/nginx
  busybox_tree "$root"
  mkdir -p "$root/usr/share/nginx/html"
  echo '<html><body><h1>Welcome to nginx!</h1></body></html>' >"$root/usr/share/nginx/html/index.html"
  import "$bb_key" "$root" "$tags" "$path_env" 'EXPOSE 80' \
    'CMD ["httpd", "-f", "-p", "80", "-h", "/usr/share/nginx/html"]'
fi

tags="$E2E_REG/nonroot:1.5"
if made "$bb_key" $tags; then
  echo "conformance: $tags is up to date"
else
  busybox_tree "$work/nonroot"
  import "$bb_key" "$work/nonroot" "$tags" "$path_env" 'USER 1234' 'CMD ["sh"]'
fi

tags="$E2E_REG/nonewprivs:1.4"
key=$(cat <(echo "$self") "$bb" "$out/nnp" | sha256sum | cut -c1-64)
if made "$key" $tags; then
  echo "conformance: $tags is up to date"
else
  busybox_tree "$work/nnp"
  mkdir -p "$work/nnp/usr/local/bin"
  cp "$out/nnp" "$work/nnp/usr/local/bin/nnp"
  chmod 4755 "$work/nnp/usr/local/bin/nnp"
  import "$key" "$work/nnp" "$tags" "$path_env" 'CMD ["nnp"]'
fi

tags="$REG/pause:3.10.2"
key=$(cat <(echo "$self") scripts/images/pause.c | sha256sum | cut -c1-64)
if made "$key" $tags; then
  echo "conformance: $tags is up to date"
else
  mkdir -p "$work/pause"
  gcc -static -O2 -o "$work/pause/pause" scripts/images/pause.c
  strip "$work/pause/pause"
  import "$key" "$work/pause" "$tags" 'USER 65535:65535' 'ENTRYPOINT ["/pause"]'
fi
echo "conformance: binaries and images ready in $((SECONDS - start)) s"
$prepare_only && exit 0

# --- 3. The run --------------------------------------------------------------------------------
cargo build --locked -p virtual-kubelet --bin virtual-kubelet -p vk-tests --bin conformance
reports=${VK_CONFORMANCE_REPORTS:-${XDG_CACHE_HOME:-$HOME/.cache}/vk-nomad/conformance/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$reports"
echo "conformance: reports go to $reports"
if $ci; then
  ((${#focus[@]} == 0)) || { echo "conformance: --ci takes no focus" >&2; exit 2; }
  focus=(--focus "$CI_FOCUS")
  : "${VK_CONFORMANCE_SKIP:=$CI_SKIP}" "${VK_CONFORMANCE_TIMEOUT:=30m}" "${VK_CONFORMANCE_PROCS:=4}"
  extra_flake=(--flake-attempts 3)
else
  extra_flake=()
fi
args=(--e2e-test "$out/e2e.test" --report-dir "$reports" "${focus[@]}" "${extra_flake[@]}")
[[ -n ${VK_CONFORMANCE_SKIP:-} ]] && args+=(--skip "$VK_CONFORMANCE_SKIP")
[[ -n ${VK_CONFORMANCE_TIMEOUT:-} ]] && args+=(--timeout "$VK_CONFORMANCE_TIMEOUT")
[[ -n ${VK_CONFORMANCE_PROCS:-} ]] && args+=(--procs "$VK_CONFORMANCE_PROCS")
status=0
"$CARGO_TARGET_DIR/debug/conformance" "${args[@]}" -- "${extra[@]}" || status=$?
echo "conformance: JUnit report $reports/junit_01.xml, summary $reports/summary.txt" \
  "(exit $status, $((SECONDS - start)) s in all)"
# The pass count, last: what CI's log shows.
grep '^total:' "$reports/summary.txt" | sed 's/^/conformance: /' || true
exit "$status"
