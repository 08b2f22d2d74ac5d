//! The real peers' binaries, built by `scripts/peers.sh` into a cache outside the checkout.

use std::path::{Path, PathBuf};
use std::process::Command;

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
}

/// The repository root (where `scripts/peers.sh` is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_owned).unwrap_or_default()
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
        };
        for p in [
            &peers.etcd,
            &peers.kube_apiserver,
            &peers.kube_controller_manager,
            &peers.kube_scheduler,
            &peers.kubectl,
            &peers.nomad,
        ] {
            if !p.is_file() {
                bail!("peer binary {} is missing after scripts/peers.sh", p.display());
            }
        }
        Ok(peers)
    }
}
