//! The virtual kubelet as a child process: with a node identity of its own, in-cluster (as a
//! ServiceAccount), or by TLS bootstrap; the binary found beside the tests; and the record of the
//! ones a test started ([`STARTED`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::bail;

use crate::docker::BUSYBOX;
use crate::{Process, Stack, free_port};

impl Stack {
    /// Starts `virtual-kubelet --provider nomad` as node `node` with its own node identity,
    /// pods on the raw_exec driver by default, and `extra` flags. Its kubelet port serves a
    /// certificate the stack's CA signed for 127.0.0.1 and the node's name (`<node>-serving.crt`),
    /// as a kubelet whose serving certificate the cluster issued: metrics-server verifies it.
    ///
    /// # Errors
    /// The binary missing or not starting.
    pub fn virtual_kubelet(&self, node: &str, extra: &[&str]) -> anyhow::Result<Process> {
        self.virtual_kubelet_replica(node, node, None, extra)
    }

    /// A serving certificate the stack's CA signed for node `node` (names 127.0.0.1 and the
    /// node's name), as the cluster issues a kubelet's: its certificate and key files.
    ///
    /// # Errors
    /// The files cannot be written.
    pub fn node_serving_certificate(&self, node: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let pair = self.pki.server(&format!("{node}-serving"), &["127.0.0.1", node])?;
        Ok((pair.cert, pair.key))
    }

    /// As [`Stack::virtual_kubelet`], logging to `virtual-kubelet-<log>.log` (a second replica
    /// of the same node keeps a log of its own), and with `sa_dir`, a ServiceAccount's files
    /// (see [`Stack::service_account_dir`]) and the API server as `KUBERNETES_SERVICE_HOST` and
    /// `_PORT`, as a pod that mounts its token has them.
    ///
    /// # Errors
    /// As [`Stack::virtual_kubelet`].
    pub fn virtual_kubelet_replica(
        &self,
        node: &str,
        log: &str,
        sa_dir: Option<&Path>,
        extra: &[&str],
    ) -> anyhow::Result<Process> {
        self.virtual_kubelet_full(node, log, sa_dir, extra, &[])
    }

    /// As [`Stack::virtual_kubelet`], with the environment variables `env` set too (after the
    /// harness's own: a `NOMAD_TOKEN` there wins).
    ///
    /// # Errors
    /// As [`Stack::virtual_kubelet`].
    pub fn virtual_kubelet_with_env(
        &self,
        node: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Process> {
        self.virtual_kubelet_full(node, node, None, extra, env)
    }

    /// [`Stack::virtual_kubelet_replica`] with `env`.
    fn virtual_kubelet_full(
        &self,
        node: &str,
        log: &str,
        sa_dir: Option<&Path>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Process> {
        let kubeconfig = self.node_kubeconfig(node)?;
        let (cert, key) = self.node_serving_certificate(node)?;
        let mut cmd = self.virtual_kubelet_command(node)?;
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--tls-cert-file={}", cert.display()))
            .arg(format!("--tls-private-key-file={}", key.display()))
            .args(["--nomad-addr", &self.vk_nomad_addr()])
            .args(extra)
            .envs(env.iter().copied());
        if let Some(dir) = sa_dir {
            let port = self.apiserver_url.rsplit(':').next().unwrap_or_default().to_owned();
            cmd.arg(format!("--service-account-dir={}", dir.display()))
                .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
                .env("KUBERNETES_SERVICE_PORT", port);
        }
        let log = self.dir.join("logs").join(format!("virtual-kubelet-{log}.log"));
        started(node, &log);
        Process::spawn(&format!("virtual-kubelet-{node}"), cmd, &log)
    }

    /// Starts `virtual-kubelet --provider nomad` as node `node` the way it runs in a pod: no
    /// kubeconfig, `KUBERNETES_SERVICE_HOST`/`_PORT` naming the API server and the ServiceAccount
    /// files in `sa_dir` (see [`Stack::service_account_dir`]); Nomad's address as `NOMAD_ADDR` (as
    /// the Deployment's Secret gives it), raw_exec and free ports as [`Stack::virtual_kubelet`],
    /// then `extra` flags (later flags override earlier ones) and `env` (which may replace
    /// `NOMAD_ADDR`). `log` names the log file (`logs/virtual-kubelet-<log>.log`).
    ///
    /// # Errors
    /// The binary missing or not starting.
    pub fn virtual_kubelet_in_cluster(
        &self,
        node: &str,
        sa_dir: &Path,
        extra: &[&str],
        env: &[(String, String)],
        log: &str,
    ) -> anyhow::Result<Process> {
        let port = self.apiserver_url.rsplit(':').next().unwrap_or_default().to_owned();
        let mut cmd = self.virtual_kubelet_command(node)?;
        cmd.arg(format!("--service-account-dir={}", sa_dir.display()))
            .args(extra)
            .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            .env("KUBERNETES_SERVICE_PORT", port)
            .env("NOMAD_ADDR", self.vk_nomad_addr())
            .envs(env.iter().map(|(k, v)| (k, v)));
        let path = self.dir.join("logs").join(format!("virtual-kubelet-{log}.log"));
        started(node, &path);
        Process::spawn(&format!("virtual-kubelet-{log}"), cmd, &path)
    }

    /// Starts `virtual-kubelet --provider nomad` as node `node` with no credentials of its own
    /// but the bootstrap kubeconfig at `bootstrap` (a bootstrap token): it gets its client
    /// certificate by TLS bootstrap into `cert_dir`; then as [`Stack::virtual_kubelet`].
    ///
    /// # Errors
    /// The binary missing or not starting.
    pub fn virtual_kubelet_bootstrapped(
        &self,
        node: &str,
        bootstrap: &Path,
        cert_dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Process> {
        let mut cmd = self.virtual_kubelet_command(node)?;
        cmd.arg(format!("--bootstrap-kubeconfig={}", bootstrap.display()))
            .arg(format!("--cert-dir={}", cert_dir.display()))
            .args(["--nomad-addr", &self.vk_nomad_addr()])
            .args(extra);
        let log = self.dir.join("logs").join(format!("virtual-kubelet-{node}.log"));
        started(node, &log);
        Process::spawn(&format!("virtual-kubelet-{node}"), cmd, &log)
    }

    /// The command line shared by [`Stack::virtual_kubelet`] and
    /// [`Stack::virtual_kubelet_in_cluster`]: node name, raw_exec, the offline busybox as the
    /// volume setup image, free ports, debug logs; nothing inherited that would choose the API server or Nomad (`KUBECONFIG` would
    /// win over the in-cluster configuration, `KUBERNETES_SERVICE_*` over `~/.kube/config`).
    fn virtual_kubelet_command(&self, node: &str) -> anyhow::Result<Command> {
        let mut cmd = Command::new(virtual_kubelet_bin()?);
        cmd.args(["--provider", "nomad", "--nodename", node])
            .args(["--nomad-driver", "raw_exec", "--internal-ip", "127.0.0.1"])
            // Docker pods' emptyDir directories are prepared with the offline busybox image.
            .args(["--volume-setup-image", BUSYBOX])
            .args(["--kubelet-port", &free_port()?.to_string()])
            // Many virtual kubelets run side by side: none may take the default metrics port.
            .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port()?)])
            .env("RUST_LOG", "info,virtual_kubelet=debug,vk_app=debug,vk_kube=debug,vk_kubelet_api=debug,vk_nomad=debug,vk_memory=debug")
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env_remove("NOMAD_ADDR")
            .env_remove("NOMAD_TOKEN");
        // With Nomad's ACLs on, the token of deploy/nomad-acl-policy.hcl (a test may give
        // another with `--nomad-token`, which wins over the environment).
        if let Some(token) = self.node_token() {
            cmd.env("NOMAD_TOKEN", token);
        }
        Ok(cmd)
    }
}

/// The `virtual-kubelet` binary: `$VK_BIN`, or the one built beside this test binary
/// (`cargo build -p virtual-kubelet` puts it in the same target directory).
///
/// # Errors
/// It cannot be found.
pub fn virtual_kubelet_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("VK_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("virtual-kubelet");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "virtual-kubelet binary not found near {}; run `cargo build -p virtual-kubelet` first or set VK_BIN",
        exe.display()
    )
}

tokio::task_local! {
    /// The virtual kubelets a test started (in the test's own task), as (node, log file): a
    /// failing test shows their last lines (CI keeps the output, not the stack's directory), and
    /// the jobs of their pods are stopped when the test ends ([`Stack::stop_jobs_of`]).
    pub static STARTED: std::cell::RefCell<Vec<(String, PathBuf)>>;
}

/// Notes `node` and its `log` in [`STARTED`] when the caller runs inside its scope.
fn started(node: &str, log: &Path) {
    let _ = STARTED.try_with(|l| l.borrow_mut().push((node.to_owned(), log.to_path_buf())));
}
