#!/usr/bin/env bash
# Validates the Dockerfile and docker-compose.yml without a Docker engine (there is none on our
# machines):
# - docker-compose.yml is loaded, interpolated and validated against the Compose specification by
#   the real `docker-compose config` (built by scripts/peers.sh), and the resolved model is checked:
#   the k3s, kubeconfig, nomad and virtual-kubelet services, the virtual kubelet built from
#   ./Dockerfile, the shared kubeconfig directory, the node's InternalIP wiring, and every flag
#   passed to the virtual kubelet known to the binary given as $1 (its `--help`);
# - the Dockerfile is parsed, converted to a build graph and linted by BuildKit's Dockerfile frontend
#   (`dockerfilecheck`, built by scripts/peers.sh), and the runtime image it describes is checked:
#   non-root user, ports, entrypoint; its Rust image is checked against Cargo.toml's rust-version.
# No image is built and no container runs.
#
# Usage: scripts/check-deploy.sh <path to the virtual-kubelet binary>
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
vk=${1:?usage: scripts/check-deploy.sh <virtual-kubelet binary>}

scripts/peers.sh compose
bin="$(scripts/peers.sh --dir)/compose-$(sed -n 's/^COMPOSE_VERSION=//p' scripts/peers.sh)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A project name, so nothing depends on the checkout's directory name; no daemon is asked.
compose() { "$bin/docker-compose" --project-name vk-nomad -f docker-compose.yml "$@"; }
"$bin/docker-compose" version
compose config --quiet
compose config --format json >"$tmp/model.json"
# The address variables reach both the network and the flag.
VK_SUBNET=10.99.0.0/24 VK_IP=10.99.0.7 compose config --format json >"$tmp/model-env.json"
"$vk" --help >"$tmp/help.txt"
"$bin/dockerfilecheck" Dockerfile >"$tmp/image.json"

# The checkers bite: a lint finding, a parse error and a Compose schema error each fail.
must_fail() {
  if "$@" >"$tmp/out" 2>&1; then
    echo "check-deploy: accepted, should not have: $*" >&2
    exit 1
  fi
  echo "check-deploy: rejected as it should: $(tail -n 1 "$tmp/out")"
}
printf 'FROM busybox:1.36 as build\n' >"$tmp/Dockerfile.casing"
must_fail "$bin/dockerfilecheck" "$tmp/Dockerfile.casing"
printf 'FROM busybox:1.36\nFROBNICATE x\n' >"$tmp/Dockerfile.parse"
must_fail "$bin/dockerfilecheck" "$tmp/Dockerfile.parse"
printf 'services:\n  a:\n    image: busybox\n    restart: sometimes\n    networks: {default: {ipv4_addr: x}}\n' \
  >"$tmp/compose.bad.yml"
must_fail "$bin/docker-compose" --project-name bad -f "$tmp/compose.bad.yml" config --quiet

python3 - "$tmp" "$PWD" <<'EOF'
import ipaddress, json, re, sys

tmp, root = sys.argv[1], sys.argv[2]
model = json.load(open(f"{tmp}/model.json"))
model_env = json.load(open(f"{tmp}/model-env.json"))
help_text = open(f"{tmp}/help.txt").read()
image = json.load(open(f"{tmp}/image.json"))
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def binds(svc):
    return {v["target"]: v for v in svc.get("volumes", [])}


def wiring(model):
    vk = model["services"]["virtual-kubelet"]
    ip = vk["networks"]["default"]["ipv4_address"]
    subnet = model["networks"]["default"]["ipam"]["config"][0]["subnet"]
    return vk["environment"]["VKUBELET_POD_IP"], ip, subnet


services = model["services"]
check(set(services) == {"k3s", "kubeconfig", "nomad", "virtual-kubelet"},
      f"services are k3s, kubeconfig, nomad, virtual-kubelet: {sorted(services)}")
k3s, init, nomad, vk = (services[s] for s in ("k3s", "kubeconfig", "nomad", "virtual-kubelet"))

# The virtual kubelet: built from ./Dockerfile, wired to k3s by the shared kubeconfig directory.
check(vk["build"]["context"] == root and vk["build"]["dockerfile"] == "Dockerfile",
      f"virtual-kubelet is built from ./Dockerfile: {vk['build']}")
shared = f"{root}/.compose"
check(binds(k3s).get("/output", {}).get("source") == shared
      and k3s["environment"].get("K3S_KUBECONFIG_OUTPUT") == "/output/kubeconfig.yaml",
      "k3s writes its kubeconfig into ./.compose")
check(binds(init).get("/output", {}).get("source") == shared
      and binds(init).get("/k3s", {}).get("source") == "k3s-data"
      and binds(k3s).get("/var/lib/rancher/k3s", {}).get("source") == "k3s-data"
      and "/output/vk.kubeconfig" in " ".join(init["command"])
      and "https://k3s:6443" in " ".join(init["command"])
      and "/output/client-ca.crt" in " ".join(init["command"]),
      "kubeconfig copies k3s's kubeconfig (for https://k3s:6443) and client CA into ./.compose")
check(binds(vk).get("/kube", {}).get("source") == shared and binds(vk)["/kube"].get("read_only"),
      "virtual-kubelet mounts ./.compose read-only at /kube")
check(vk["depends_on"]["kubeconfig"]["condition"] == "service_completed_successfully",
      "virtual-kubelet starts once the kubeconfig is written")
args = vk["command"]
check("--kubeconfig=/kube/vk.kubeconfig" in args and "--client-ca-file=/kube/client-ca.crt" in args
      and "--provider=nomad" in args, f"virtual-kubelet flags: {args}")
check("--nomad-addr=http://host.docker.internal:4646" in args
      and "host.docker.internal=host-gateway" in vk.get("extra_hosts", []),
      "virtual-kubelet reaches Nomad on the host's network")

# The node's InternalIP: the virtual kubelet's fixed address, inside the stack network.
for name, m in (("default", model), ("VK_SUBNET/VK_IP", model_env)):
    env_ip, net_ip, subnet = wiring(m)
    check(env_ip == net_ip and ipaddress.ip_address(net_ip) in ipaddress.ip_network(subnet),
          f"{name}: VKUBELET_POD_IP {env_ip} = ipv4_address {net_ip} in {subnet}")
check(wiring(model_env)[1] == "10.99.0.7", "VK_IP overrides the address")
check(all("networks" not in s or "default" in s["networks"] for n, s in services.items()
          if n != "nomad"), "k3s and the virtual kubelet share the default network")

# k3s: the API server dials the virtual kubelet straight and accepts its self-signed certificate.
check("--egress-selector-mode=disabled" in k3s["command"]
      and "--kube-apiserver-arg=kubelet-certificate-authority=" in k3s["command"]
      and "--tls-san=k3s" in k3s["command"], f"k3s server flags: {k3s['command']}")

# Nomad: a dev agent with the host's Docker engine.
check(nomad["command"][:2] == ["agent", "-dev"] and nomad.get("network_mode") == "host"
      and binds(nomad).get("/var/run/docker.sock", {}).get("source") == "/var/run/docker.sock"
      and binds(nomad).get("/tmp", {}).get("source") == "/tmp" and nomad.get("privileged"),
      "nomad: dev agent on the host network with the Docker socket and /tmp")
check((nomad.get("environment") or {}).get("CHECKPOINT_DISABLE") == "1",
      "nomad: no update check at start (CHECKPOINT_DISABLE)")

# The dev agent has no CNI plugins: pods may ask for the host's network instead of bridge mode.
check("--allowed-network-modes=host" in args,
      "the virtual kubelet lets pods choose network mode host (no CNI in the dev agent)")

# Every flag given to the virtual kubelet, and VKUBELET_POD_IP, are the binary's.
known = set(re.findall(r"(--[a-z0-9-]+)", help_text))
unknown = [a.split("=")[0] for a in args if a.split("=")[0] not in known]
check(not unknown, f"virtual-kubelet knows the flags passed (unknown: {unknown})")
# (within the --internal-ip entry: no other flag's line in between)
check(re.search(r"--internal-ip <\w+>(?:(?!\n +--).)*\[env: VKUBELET_POD_IP[]=]", help_text, re.S)
      is not None,
      "VKUBELET_POD_IP sets --internal-ip")

# The image the Dockerfile describes.
cfg = image["config"]
check(cfg.get("User") == "65532:65532", f"runtime user is non-root: {cfg.get('User')}")
check(set(cfg.get("ExposedPorts", {})) == {"10250/tcp", "10255/tcp"},
      f"exposed ports: {sorted(cfg.get('ExposedPorts', {}))}")
check(cfg.get("Entrypoint") == ["/usr/local/bin/virtual-kubelet"],
      f"entrypoint: {cfg.get('Entrypoint')}")
dockerfile = open(f"{root}/Dockerfile").read()
cargo = open(f"{root}/Cargo.toml").read()
rust = re.search(r"^FROM rust:(\d+)\.(\d+)", dockerfile, re.M)
need = re.search(r'^rust-version = "(\d+)\.(\d+)"', cargo, re.M)
check(rust is not None and need is not None
      and tuple(map(int, rust.groups())) >= tuple(map(int, need.groups())),
      f"builder Rust {rust and rust.group(0)} >= rust-version {need and need.group(0)}")
check("cargo build --release --locked -p virtual-kubelet --bin virtual-kubelet" in dockerfile,
      "the builder builds the release binary from Cargo.lock")

if failures:
    sys.exit(f"check-deploy: {len(failures)} check(s) failed")
print(f"check-deploy: docker-compose.yml and Dockerfile ok ({image['buildSteps']} build steps)")
EOF
