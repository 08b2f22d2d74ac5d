//! The real peers' binaries, built by `scripts/peers.sh` into a cache outside the checkout.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// Paths of the peer binaries.
#[derive(Debug, Clone)]
pub struct Peers {
    /// etcd.
    pub etcd: PathBuf,
    /// kube-apiserver.
    pub kube_apiserver: PathBuf,
    /// kube-controller-manager.
    pub kube_controller_manager: PathBuf,
    /// kube-scheduler.
    pub kube_scheduler: PathBuf,
    /// kubectl.
    pub kubectl: PathBuf,
    /// nomad.
    pub nomad: PathBuf,
    /// metrics-server.
    pub metrics_server: PathBuf,
    /// `statscheck`: strictly decodes a `/stats/summary` document (stdin) into the upstream
    /// `k8s.io/kubelet/pkg/apis/stats/v1alpha1.Summary` and checks the fields consumers need; see
    /// [`Peers::check_stats_summary`].
    pub statscheck: PathBuf,
    /// Upstream virtual-kubelet v1.13.0 (`cmd/virtual-kubelet`, whose only provider is `mock`): the
    /// reference of the benchmarks (`bench/`).
    pub virtual_kubelet_upstream: PathBuf,
    /// The distribution v3.1.2 image registry (`registry serve <config>`), for the pull tests.
    pub registry: PathBuf,
    /// `htpasswd <user> <password>`: one bcrypt line for the registry's htpasswd file.
    pub htpasswd: PathBuf,
    /// The Helm v4.3.2 CLI, for `charts/virtual-kubelet-nomad`.
    pub helm: PathBuf,
}

/// The repository root: the first directory holding `scripts/peers.sh` above `VK_REPO_ROOT`, the
/// running package's `CARGO_MANIFEST_DIR` (cargo sets it for `cargo test` and `cargo run`) or the
/// working directory, in that order; else where this crate was compiled.
///
/// Found at run time because build caches are shared between checkouts: cargo does not rebuild a
/// workspace member that moved, so a path baked in at compile time can name another checkout.
pub fn repo_root() -> PathBuf {
    let starts = [
        std::env::var_os("VK_REPO_ROOT").map(PathBuf::from),
        std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
        std::env::current_dir().ok(),
    ];
    starts
        .into_iter()
        .flatten()
        .find_map(|start| {
            start.ancestors().find(|d| d.join("scripts/peers.sh").is_file()).map(Path::to_owned)
        })
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_owned).unwrap_or_default()
        })
}

impl Peers {
    /// Runs `scripts/peers.sh` (which builds only what is missing) and returns the binaries.
    ///
    /// # Errors
    /// The script failing, or a binary missing afterwards.
    pub fn ensure() -> anyhow::Result<Self> {
        let script = repo_root().join("scripts/peers.sh");
        let status = Command::new("bash")
            .arg(&script)
            .status()
            .with_context(|| format!("running {}", script.display()))?;
        if !status.success() {
            bail!("{} failed ({status})", script.display());
        }
        let out = Command::new("bash").arg(&script).arg("--dir").output()?;
        let root = PathBuf::from(String::from_utf8(out.stdout)?.trim());
        let k8s = root.join("kubernetes-v1.36.3");
        let peers = Self {
            etcd: root.join("etcd-v3.6.14/etcd"),
            kube_apiserver: k8s.join("kube-apiserver"),
            kube_controller_manager: k8s.join("kube-controller-manager"),
            kube_scheduler: k8s.join("kube-scheduler"),
            kubectl: k8s.join("kubectl"),
            nomad: root.join("nomad-v1.11.3/nomad"),
            metrics_server: root.join("metrics-server-v0.9.0/metrics-server"),
            statscheck: k8s.join("statscheck"),
            virtual_kubelet_upstream: root.join("virtual-kubelet-upstream-v1.13.0/virtual-kubelet"),
            registry: root.join("registry-v3.1.2/registry"),
            htpasswd: root.join("registry-v3.1.2/htpasswd"),
            helm: root.join("helm-v4.3.2/helm"),
        };
        for p in [
            &peers.etcd,
            &peers.kube_apiserver,
            &peers.kube_controller_manager,
            &peers.kube_scheduler,
            &peers.kubectl,
            &peers.nomad,
            &peers.metrics_server,
            &peers.statscheck,
            &peers.virtual_kubelet_upstream,
            &peers.registry,
            &peers.htpasswd,
            &peers.helm,
        ] {
            if !p.is_file() {
                bail!("peer binary {} is missing after scripts/peers.sh", p.display());
            }
        }
        Ok(peers)
    }

    /// Runs `statscheck` on `summary` (a kubelet `/stats/summary` JSON document): it must decode
    /// strictly (no unknown fields) into the upstream Go type, and carry `node.nodeName`, each
    /// pod's `podRef` name/namespace/uid, and each container's name, `startTime`, `cpu.time`,
    /// `cpu.usageCoreNanoSeconds`, `memory.time` and `memory.workingSetBytes`. With `node_usage`
    /// the node's CPU and memory usage are required too. Returns its report (`ok: ...`).
    ///
    /// # Errors
    /// The document failing the check, with every problem statscheck printed.
    pub fn check_stats_summary(&self, summary: &[u8], node_usage: bool) -> anyhow::Result<String> {
        let mut cmd = Command::new(&self.statscheck);
        if node_usage {
            cmd.arg("-node-usage");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.statscheck.display()))?;
        child.stdin.take().context("statscheck stdin")?.write_all(summary)?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "the stats summary fails statscheck ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }
}
