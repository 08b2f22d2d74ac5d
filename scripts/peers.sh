#!/usr/bin/env bash
# Builds the real test peers (etcd, the Kubernetes control plane and kubectl, the Nomad agent,
# metrics-server, the small `statscheck` helper that strictly decodes a kubelet /stats/summary
# document with the upstream Go types, and, for scripts/check-deploy.sh, the `docker-compose`
# binary and the small `dockerfilecheck` helper that lints the Dockerfile with BuildKit's frontend)
# from their Go modules at the versions pinned by the wrapper modules in scripts/peers/*/go.mod;
# for the benchmarks (bench/), upstream virtual-kubelet with its mock provider; and, for the image
# pull tests, the distribution registry with a small `htpasswd` helper; and the Helm CLI of the
# chart's checks.
#
# Binaries go to a cache outside the checkout:
#   ${VK_PEERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vk-nomad/peers}/<peer>-<version>/
# A peer whose binaries are all there is not built again. Go's module and build caches stay in their
# usual places ($GOMODCACHE, $GOCACHE), also outside the checkout.
#
# Usage: scripts/peers.sh [etcd|kubernetes|nomad|metrics-server|compose|virtual-kubelet-upstream|registry|helm]...
#        (no argument: all)
#        scripts/peers.sh --dir                                                 (print the cache root)
#        scripts/peers.sh --k8s-ldflags        (print the version ldflags of Kubernetes' builds)
set -euo pipefail

ETCD_VERSION=v3.6.14
K8S_VERSION=v1.36.3
NOMAD_VERSION=v1.11.3
# v0.8.1 is not served by the module proxy reachable here; v0.9.0 is built against k8s.io/* v0.36.
METRICS_SERVER_VERSION=v0.9.0
COMPOSE_VERSION=v2.40.3
# Upstream virtual-kubelet, the reference of the benchmarks: `cmd/virtual-kubelet` of this release
# registers the `mock` provider only.
VK_UPSTREAM_VERSION=v1.13.0
# The image registry of the pull tests (distribution v3), with `htpasswd` for its users.
REGISTRY_VERSION=v3.1.2
# The Helm CLI of the chart's checks (charts/virtual-kubelet-nomad).
HELM_VERSION=v4.3.2

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=${VK_PEERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vk-nomad/peers}

# The version variables of Kubernetes' builds (hack/lib/version.sh).
k8s_ldflags() {
  local v=${K8S_VERSION#v} flags="-s -w"
  local major=${v%%.*} rest=${v#*.}
  local minor=${rest%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

if [[ ${1:-} == --dir ]]; then
  echo "$root"
  exit 0
fi
if [[ ${1:-} == --k8s-ldflags ]]; then
  k8s_ldflags
  exit 0
fi

# A local toolchain only: a go.mod asking for a newer Go must fail here, not download one.
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:-} -buildvcs=false -trimpath"

# build <peer> <version> <module-dir> <cgo> <ldflags> <out-name>=<package>...
build() {
  local peer=$1 version=$2 dir=$3 cgo=$4 ldflags=$5
  shift 5
  local out="$root/$peer-$version"
  local missing=()
  for spec in "$@"; do
    [[ -x "$out/${spec%%=*}" ]] || missing+=("$spec")
  done
  if ((${#missing[@]} == 0)); then
    echo "peers: $peer $version already built in $out"
    return 0
  fi
  mkdir -p "$out"
  local start=$SECONDS
  echo "peers: building $peer $version (${missing[*]%%=*}) into $out ..."
  (
    cd "$here/peers/$dir"
    for spec in "${missing[@]}"; do
      local name=${spec%%=*} pkg=${spec#*=}
      local t=$SECONDS
      CGO_ENABLED=$cgo go build -ldflags "$ldflags" -o "$out/$name.tmp" "$pkg"
      mv "$out/$name.tmp" "$out/$name"
      echo "peers:   $name built in $((SECONDS - t)) s"
    done
  )
  echo "peers: $peer $version built in $((SECONDS - start)) s"
}


peers=("$@")
((${#peers[@]})) || peers=(etcd nomad kubernetes metrics-server compose virtual-kubelet-upstream registry helm)
for p in "${peers[@]}"; do
  case $p in
    etcd) build etcd "$ETCD_VERSION" etcd 0 "-s -w" etcd=go.etcd.io/etcd/server/v3 ;;
    nomad) build nomad "$NOMAD_VERSION" nomad 0 "-s -w" nomad=github.com/hashicorp/nomad ;;
    kubernetes)
      build kubernetes "$K8S_VERSION" kubernetes 0 "$(k8s_ldflags)" \
        kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
        kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
        kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
        kubectl=k8s.io/kubernetes/cmd/kubectl \
        statscheck=./statscheck
      ;;
    metrics-server)
      build metrics-server "$METRICS_SERVER_VERSION" metrics-server 0 \
        "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION" \
        metrics-server=sigs.k8s.io/metrics-server/cmd/metrics-server
      ;;
    compose)
      # docker-compose with the version flag of compose's Makefile (`make binary`), without its
      # `e2e` build tag (test hooks only); dockerfilecheck parses and lints the Dockerfile with the
      # BuildKit frontend that compose pins.
      build compose "$COMPOSE_VERSION" compose 0 \
        "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
        docker-compose=github.com/docker/compose/v2/cmd \
        dockerfilecheck=./dockerfilecheck
      ;;
    virtual-kubelet-upstream)
      # The version variables of upstream's Makefile (`VERSION`, `BUILD_TIME`).
      build virtual-kubelet-upstream "$VK_UPSTREAM_VERSION" virtual-kubelet-upstream 0 \
        "-s -w -X main.buildVersion=$VK_UPSTREAM_VERSION -X main.buildTime=1970-01-01T00:00:00Z" \
        virtual-kubelet=github.com/virtual-kubelet/virtual-kubelet/cmd/virtual-kubelet
      ;;
    registry)
      build registry "$REGISTRY_VERSION" registry 0 "-s -w" \
        registry=github.com/distribution/distribution/v3/cmd/registry \
        htpasswd=./htpasswd
      ;;
    helm)
      # The version variable of Helm's Makefile.
      build helm "$HELM_VERSION" helm 0 \
        "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
        helm=helm.sh/helm/v4/cmd/helm
      ;;
    *)
      echo "peers: unknown peer '$p' (etcd, kubernetes, nomad, metrics-server, compose," \
        "virtual-kubelet-upstream, registry, helm)" >&2
      exit 2
      ;;
  esac
done
