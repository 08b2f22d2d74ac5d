//! Test support: a local stack of the real peers (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler, a Nomad dev agent) on free loopback ports in a temporary directory, torn down
//! when dropped; the virtual kubelet as a child process; and fixtures.
//!
//! Used by the end-to-end tests (`tests/e2e.rs`) and by the README's run command
//! (`cargo run -p vk-tests --bin local-stack`).

pub mod deploy;
pub mod fixtures;
pub mod grpc_health;
pub mod peers;
pub mod pki;
pub mod process;

mod control_plane;
mod credentials;
mod docker;
mod metrics_server;
mod nomad;
pub mod nomad_acl;
mod nomad_cluster;
pub mod nomad_proxy;
mod virtual_kubelet;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

pub use crate::docker::{BUSYBOX, BUSYBOX_NEXT, PAUSE, check_docker};
pub use crate::metrics_server::METRICS_APISERVICE;
pub use crate::nomad::NO_UPDATE_CHECK;
use crate::nomad::NomadAgent;
pub use crate::peers::Peers;
use crate::pki::Pki;
pub use crate::process::{Process, log_tails};
pub use crate::virtual_kubelet::{STARTED, virtual_kubelet_bin};

/// A TCP port free now on every address, never one this process handed out before, and outside
/// the kernel's ephemeral range (`net.ipv4.ip_local_port_range`, 32768-60999 by default): the
/// local port of every outgoing connection is drawn from that range, so a port from it can be
/// taken by any connection of the busy stack (a log follow, an attacker's handshake) between the
/// check here and the bind of the process it is for (`Address already in use`). Ports are tried
/// from a point that differs per process and call, upwards from 10000.
///
/// # Errors
/// No port below the ephemeral range could be bound.
pub fn free_port() -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    const FIRST: u32 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    anyhow::ensure!(ephemeral > FIRST + 1000, "the ephemeral port range starts at {ephemeral}");
    let span = ephemeral - FIRST;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let start = (std::process::id().wrapping_mul(7919) ^ nanos) % span;
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for i in 0..span {
        let Ok(port) = u16::try_from(FIRST + (start + i) % span) else { continue };
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    anyhow::bail!(
        "no free port from {FIRST} to {ephemeral} this process has not handed out already"
    )
}

/// Waits until `check` returns `Ok(Some(v))`, polling every `every`, for at most `timeout`.
///
/// # Errors
/// A timeout, naming `what` and the last error seen.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("not yet");
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last: {last})");
        }
        tokio::time::sleep(every).await;
    }
}

/// The local stack.
pub struct Stack {
    /// Working directory (certificates, data, logs, kubeconfigs).
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// The peer binaries.
    pub peers: Peers,
    pki: Pki,
    /// `https://127.0.0.1:<port>` of kube-apiserver.
    pub apiserver_url: String,
    /// Admin kubeconfig (system:masters).
    pub admin_kubeconfig: PathBuf,
    /// `http://127.0.0.1:<port>` of the Nomad agent.
    pub nomad_addr: String,
    procs: Vec<Process>,
    /// kube-apiserver's program and arguments, and its place in `procs`, to restart it.
    apiserver: Option<(PathBuf, Vec<std::ffi::OsString>, usize)>,
    /// The main Nomad agent: its configuration and data directory, and its place in `procs`.
    nomad: Option<NomadAgent>,
    /// The main agent's RPC port (for extra clients of a server-mode agent).
    nomad_rpc: u16,
    /// The servers of a three-server cluster ([`StackOptions::nomad_cluster`]): HTTP address,
    /// RPC port and process ID of each.
    nomad_servers: Vec<nomad_cluster::Server>,
    /// Whether Nomad runs as `nobody` (see `start_nomad`).
    nomad_as_nobody: bool,
    /// Nomad's ACLs, when the stack runs them ([`StackOptions::nomad_acl`]): the management
    /// token the harness itself uses, and the token of `deploy/nomad-acl-policy.hcl` every
    /// virtual kubelet gets.
    nomad_acl: Option<nomad_acl::Tokens>,
    /// Whether Nomad runs with ACLs on ([`StackOptions::nomad_acl`]).
    nomad_acl_on: bool,
    /// metrics-server, once [`Stack::start_metrics_server`] started it (the lock also makes
    /// concurrent callers wait for one start).
    metrics_server: tokio::sync::Mutex<Option<Process>>,
    /// The data directory of every Nomad agent started: their `alloc/<id>` directories name the
    /// allocations whose containers are removed with the stack.
    nomad_data: Vec<PathBuf>,
}

/// How the stack runs Nomad.
#[derive(Debug, Clone, Copy, Default)]
pub struct StackOptions {
    /// Run Nomad as a real server and client (`bootstrap_expect = 1`) whose state survives a
    /// restart with the same data directory, instead of `-dev` (server state in memory). Needed to
    /// stop and start Nomad ([`Stack::stop_nomad`]) and to add clients
    /// ([`Stack::start_nomad_client`]). Heartbeats are short (3 s TTL and grace) so that a client
    /// that dies is `down` within seconds.
    pub nomad_server: bool,
    /// Pods will run on Nomad's docker driver: the Docker engine must answer and the test images
    /// ([`BUSYBOX`], [`PAUSE`]) be there (`scripts/docker.sh`, `scripts/images.sh`), and the stack
    /// waits until the Nomad node reports the driver healthy.
    pub docker: bool,
    /// Nomad runs with ACLs on (`acl { enabled = true }`, bootstrapped at start): the harness's
    /// own requests carry the management token ([`Stack::nomad_http`]), and every virtual
    /// kubelet gets a token of `deploy/nomad-acl-policy.hcl` alone (with `alloc-node-exec`, since
    /// its pods run on raw_exec, and the `default` namespace's rights in `apps` too).
    pub nomad_acl: bool,
    /// Nomad runs as a cluster of three servers (raft, no client) and two clients in pool
    /// `default`, instead of one agent: [`Stack::nomad_addr`] is the first client's address (it
    /// forwards to whichever server leads), and every virtual kubelet gets the three servers'
    /// addresses as its `--nomad-addr` list.
    pub nomad_cluster: bool,
}

impl Stack {
    /// Builds the peers if needed and starts the stack, waiting until each peer is ready.
    /// Set `VK_KEEP_STACK=1` to keep the working directory after the stack is dropped.
    ///
    /// # Errors
    /// A peer failing to build, start or become ready; the error names its log file.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(StackOptions::default()).await
    }

    /// As [`Stack::start`], with `options`.
    ///
    /// # Errors
    /// As [`Stack::start`].
    pub async fn start_with(options: StackOptions) -> anyhow::Result<Self> {
        let peers = tokio::task::spawn_blocking(Peers::ensure).await??;
        let tmp = tempfile::Builder::new().prefix("vk-stack-").tempdir()?;
        let dir = tmp.path().to_owned();
        let keep = std::env::var_os("VK_KEEP_STACK").is_some();
        let (tmp, dir) = if keep { (None, tmp.keep()) } else { (Some(tmp), dir) };
        std::fs::create_dir_all(dir.join("logs"))?;
        let pki = Pki::new(&dir.join("pki"))?;
        let mut stack = Self {
            apiserver_url: String::new(),
            admin_kubeconfig: dir.join("admin.kubeconfig"),
            nomad_addr: String::new(),
            dir,
            _tmp: tmp,
            peers,
            pki,
            procs: Vec::new(),
            apiserver: None,
            nomad: None,
            nomad_rpc: 0,
            nomad_servers: Vec::new(),
            nomad_as_nobody: false,
            nomad_acl: None,
            nomad_acl_on: options.nomad_acl,
            metrics_server: tokio::sync::Mutex::new(None),
            nomad_data: Vec::new(),
        };
        if options.docker {
            tokio::task::spawn_blocking(check_docker).await??;
        }
        if options.nomad_cluster {
            stack.start_nomad_servers().context("starting Nomad's servers")?;
        } else {
            stack.start_nomad(options.nomad_server).context("starting Nomad")?;
        }
        stack.start_control_plane().await.context("starting the control plane")?;
        if options.nomad_cluster {
            stack.start_cluster_clients().await?;
        }
        stack.wait_nomad(options.docker).await?;
        Ok(stack)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    fn spawn(&mut self, name: &str, cmd: Command) -> anyhow::Result<()> {
        let log = self.log(name);
        self.procs.push(Process::spawn(name, cmd, &log)?);
        Ok(())
    }

    /// Where each peer's log is, one per line, for failure messages.
    pub fn logs(&self) -> String {
        let mut logs: Vec<String> =
            self.procs.iter().map(|p| format!("  {}: {}", p.name, p.log.display())).collect();
        let ms = self.log("metrics-server");
        if ms.exists() {
            logs.push(format!("  metrics-server: {}", ms.display()));
        }
        logs.join("\n")
    }

    async fn ready(&mut self, name: &str, url: &str, timeout: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.procs.iter_mut().find(|p| p.name == name)
                && let Some(status) = p.exited()
            {
                bail!(
                    "{name} exited ({status}); its log ({}) ends with:\n{}",
                    p.log.display(),
                    p.tail(20)
                );
            }
            if let Ok(r) = http.get(url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{name} not ready at {url} after {timeout:?}; log: {}",
                    self.log(name).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(mut p) = self.metrics_server.get_mut().take() {
            p.kill();
        }
        // Stop in reverse order: schedulers and controllers before the API server and etcd.
        while let Some(mut p) = self.procs.pop() {
            p.kill();
        }
        // Containers outlive the Nomad agent that started them: remove those of its allocations.
        docker::remove_containers(&self.nomad_data);
        // Nomad's task executors outlive the agent; kill them and free their mounts so the
        // directory can be removed and no task keeps running after the stack.
        let marker = format!("{}/", self.dir.display());
        process::kill_processes_mentioning(&marker);
        process::unmount_below(&self.dir);
    }
}
