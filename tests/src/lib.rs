//! Test support: a local stack of the real peers (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler, a Nomad dev agent) on free loopback ports in a temporary directory, torn down
//! when dropped; the virtual kubelet as a child process; and fixtures.
//!
//! Used by the end-to-end tests (`tests/e2e.rs`) and by the README's run command
//! (`cargo run -p vk-tests --bin local-stack`).

pub mod deploy;
pub mod fixtures;
pub mod peers;
pub mod pki;
pub mod process;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, Client};

pub use crate::peers::Peers;
use crate::pki::Pki;
pub use crate::process::Process;

/// A free TCP port on 127.0.0.1 (bound, then released), never one this process handed out
/// before: with twenty virtual kubelets started at once, the kernel may give a port just released
/// to the next caller, and two processes of the stack would then race for it.
///
/// # Errors
/// No port could be bound.
pub fn free_port() -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if given.insert(port) {
            return Ok(port);
        }
    }
    anyhow::bail!("no port this process has not handed out already")
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

/// Fingerprinters that probe cloud metadata endpoints: slow or failing off-cloud.
const DENIED_FINGERPRINTERS: &str = "env_aws,env_gce,env_azure,env_digitalocean";

/// The image of the test containers on the docker driver (`scripts/images.sh` makes it offline
/// from Debian's busybox-static: a shell, `httpd`, `nc`, `wget`, `ip`, ...).
pub const BUSYBOX: &str = "vk-test/busybox:1.35";

/// [`BUSYBOX`] under a second tag (`scripts/images.sh`), for a pod whose image changes.
pub const BUSYBOX_NEXT: &str = "vk-test/busybox:next";

/// The infra (pause) image of bridge-mode allocations, made by `scripts/images.sh`.
pub const PAUSE: &str = "vk-test/pause:3.10";

/// The Nomad client's docker plugin and CNI settings in every agent here: the infra image is the
/// local pause image (nothing is pulled), images are never garbage-collected (Nomad could not pull
/// them back: no registry is reachable), the capabilities Docker grants by default plus
/// `net_admin` and `sys_time` for the capability tests, and Debian's CNI plugins for bridge mode.
fn docker_plugin() -> String {
    format!(
        "plugin \"docker\" {{\n  config {{\n    infra_image = \"{PAUSE}\"\n    gc {{\n      image = false\n    }}\n\
    allow_caps = [\"audit_write\", \"chown\", \"dac_override\", \"fowner\", \"fsetid\", \"kill\", \"mknod\", \"net_bind_service\", \"setfcap\", \"setgid\", \"setpcap\", \"setuid\", \"sys_chroot\", \"net_raw\", \"net_admin\", \"sys_time\"]\n  }}\n}}\n"
    )
}

/// Where Debian's containernetworking-plugins puts the CNI plugins.
const CNI_PATH: &str = "/usr/lib/cni";

/// The first line of every Nomad agent's configuration here: no look-up of
/// `checkpoint-api.hashicorp.com` at start (a DNS query leaving the machine; the tests send
/// nothing beyond 127.0.0.1 and what they made).
pub const NO_UPDATE_CHECK: &str = "disable_update_check = true\n";

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
    /// Whether Nomad runs as `nobody` (see `start_nomad`).
    nomad_as_nobody: bool,
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
}

#[derive(Debug, Clone)]
struct NomadAgent {
    name: String,
    cfg: PathBuf,
    data: PathBuf,
    idx: usize,
}

/// The front proxy's client certificate CN (kube-apiserver's `--requestheader-allowed-names`).
const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// The APIService metrics-server serves.
pub const METRICS_APISERVICE: &str = "v1beta1.metrics.k8s.io";

/// metrics-server's objects, as in its own manifests (`manifests/base`): ServiceAccount, RBAC,
/// Service and APIService. The Service is an ExternalName one for `localhost`, which the
/// aggregator's (default) cluster-IP resolution dials as `https://localhost:<APIService port>`:
/// there is no kube-proxy here, and endpoint routing (`--enable-aggregator-routing`) would need
/// a non-loopback endpoint address, as Endpoints/EndpointSlice validation refuses 127.0.0.0/8.
fn metrics_server_manifest(port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: metrics-server
  namespace: kube-system
  labels: {{k8s-app: metrics-server}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:aggregated-metrics-reader
  labels:
    k8s-app: metrics-server
    rbac.authorization.k8s.io/aggregate-to-view: "true"
    rbac.authorization.k8s.io/aggregate-to-edit: "true"
    rbac.authorization.k8s.io/aggregate-to-admin: "true"
rules:
- apiGroups: ["metrics.k8s.io"]
  resources: ["pods", "nodes"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:metrics-server
  labels: {{k8s-app: metrics-server}}
rules:
- apiGroups: [""]
  resources: ["nodes/metrics"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["pods", "nodes"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: metrics-server-auth-reader
  namespace: kube-system
  labels: {{k8s-app: metrics-server}}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: extension-apiserver-authentication-reader
subjects:
- kind: ServiceAccount
  name: metrics-server
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: metrics-server:system:auth-delegator
  labels: {{k8s-app: metrics-server}}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:auth-delegator
subjects:
- kind: ServiceAccount
  name: metrics-server
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:metrics-server
  labels: {{k8s-app: metrics-server}}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:metrics-server
subjects:
- kind: ServiceAccount
  name: metrics-server
  namespace: kube-system
---
apiVersion: v1
kind: Service
metadata:
  name: metrics-server
  namespace: kube-system
  labels: {{k8s-app: metrics-server}}
spec:
  type: ExternalName
  externalName: localhost
  ports:
  - name: https
    port: {port}
    protocol: TCP
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: {METRICS_APISERVICE}
  labels: {{k8s-app: metrics-server}}
spec:
  service:
    name: metrics-server
    namespace: kube-system
    port: {port}
  group: metrics.k8s.io
  version: v1beta1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
"#
    )
}

fn kubeconfig(server: &str, ca: &Path, cert: &Path, key: &Path, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
users:\n- name: {user}\n  user:\n    client-certificate: {cert}\n    client-key: {key}\n\
contexts:\n- name: local\n  context:\n    cluster: local\n    user: {user}\ncurrent-context: local\n",
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    )
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
            nomad_as_nobody: false,
            metrics_server: tokio::sync::Mutex::new(None),
            nomad_data: Vec::new(),
        };
        if options.docker {
            tokio::task::spawn_blocking(check_docker).await??;
        }
        stack.start_nomad(options.nomad_server).context("starting Nomad")?;
        stack.start_control_plane().await.context("starting the control plane")?;
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

    async fn start_control_plane(&mut self) -> anyhow::Result<()> {
        let (etcd_client, etcd_peer) = (free_port()?, free_port()?);
        let mut etcd = Command::new(&self.peers.etcd);
        let client_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        etcd.args(["--name", "default", "--data-dir"])
            .arg(self.dir.join("etcd"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}"), "--log-level", "warn"])
            .args(["--quota-backend-bytes", "4294967296", "--unsafe-no-fsync"]);
        self.spawn("etcd", etcd)?;
        self.ready("etcd", &format!("{client_url}/health"), Duration::from_secs(30)).await?;

        let port = free_port()?;
        self.apiserver_url = format!("https://127.0.0.1:{port}");
        let serving = self.pki.server(
            "apiserver",
            &["127.0.0.1", "localhost", "10.96.0.1", "kubernetes", "kubernetes.default.svc"],
        )?;
        let sa_key = self.pki.key("service-account")?;
        let kubelet_client = self.pki.client(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            &["system:masters"],
        )?;
        let admin = self.pki.client("admin", "admin", &["system:masters"])?;
        // The front proxy's own CA and client identity, with which kube-apiserver's aggregator
        // calls aggregated API servers (metrics-server); they trust these X-Remote-* headers from
        // a client certificate of that CA with that name only.
        let front_proxy_ca = Pki::new(&self.dir.join("pki").join("front-proxy"))?;
        let front_proxy = front_proxy_ca.client("front-proxy-client", FRONT_PROXY_CLIENT, &[])?;
        std::fs::write(
            &self.admin_kubeconfig,
            kubeconfig(&self.apiserver_url, &self.pki.ca_path, &admin.cert, &admin.key, "admin"),
        )?;

        let mut api = Command::new(&self.peers.kube_apiserver);
        api.arg(format!("--etcd-servers={client_url}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", self.dir.join("apiserver").display()))
            .arg(format!("--tls-cert-file={}", serving.cert.display()))
            .arg(format!("--tls-private-key-file={}", serving.key.display()))
            .arg(format!("--client-ca-file={}", self.pki.ca_path.display()))
            .arg(format!("--service-account-key-file={}", sa_key.cert.display()))
            .arg(format!("--service-account-signing-key-file={}", sa_key.key.display()))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg("--api-audiences=https://kubernetes.default.svc.cluster.local")
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            .arg("--authorization-mode=Node,RBAC")
            .arg("--enable-admission-plugins=NodeRestriction")
            // Bootstrap tokens (Secrets of type bootstrap.kubernetes.io/token in kube-system)
            // authenticate a node's TLS bootstrap.
            .arg("--enable-bootstrap-token-auth=true")
            .arg("--kubelet-preferred-address-types=InternalIP")
            .arg(format!("--kubelet-client-certificate={}", kubelet_client.cert.display()))
            .arg(format!("--kubelet-client-key={}", kubelet_client.key.display()))
            .arg("--endpoint-reconciler-type=none")
            .arg(format!("--requestheader-client-ca-file={}", front_proxy_ca.ca_path.display()))
            .arg(format!("--requestheader-allowed-names={FRONT_PROXY_CLIENT}"))
            .arg("--requestheader-extra-headers-prefix=X-Remote-Extra-")
            .arg("--requestheader-group-headers=X-Remote-Group")
            .arg("--requestheader-username-headers=X-Remote-User")
            .arg(format!("--proxy-client-cert-file={}", front_proxy.cert.display()))
            .arg(format!("--proxy-client-key-file={}", front_proxy.key.display()))
            // Aggregated API servers are reached through ExternalName services (there is no
            // kube-proxy for cluster IPs, and endpoint routing refuses loopback endpoints): see
            // `start_metrics_server`. So the default cluster-IP resolution stays.
            .arg("--enable-aggregator-routing=false")
            .arg("--allow-privileged=true")
            .arg("--profiling=false")
            .arg("--v=1");
        let args: Vec<std::ffi::OsString> = api.get_args().map(ToOwned::to_owned).collect();
        self.apiserver = Some((self.peers.kube_apiserver.clone(), args, self.procs.len()));
        self.spawn("kube-apiserver", api)?;
        let url = format!("{}/readyz", self.apiserver_url);
        self.ready("kube-apiserver", &url, Duration::from_secs(120)).await?;

        let kcm_port = free_port()?;
        let mut kcm = Command::new(&self.peers.kube_controller_manager);
        kcm.arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()))
            .arg(format!("--authentication-kubeconfig={}", self.admin_kubeconfig.display()))
            .arg(format!("--authorization-kubeconfig={}", self.admin_kubeconfig.display()))
            .args(["--bind-address=127.0.0.1", "--leader-elect=false"])
            .arg(format!("--secure-port={kcm_port}"))
            .arg(format!("--cert-dir={}", self.dir.join("kcm").display()))
            .arg(format!("--service-account-private-key-file={}", sa_key.key.display()))
            .arg(format!("--root-ca-file={}", self.pki.ca_path.display()))
            .arg("--use-service-account-credentials=false")
            // The stack's CA signs the certificates CertificateSigningRequests ask for (nodes'
            // client and serving certificates), as in a kubeadm cluster.
            .arg(format!("--cluster-signing-cert-file={}", self.pki.ca_path.display()))
            .arg(format!(
                "--cluster-signing-key-file={}",
                self.pki.ca_path.with_file_name("ca.key").display()
            ))
            // A node that stops renewing its Lease goes Unknown after this long (default 50 s).
            .arg("--node-monitor-grace-period=20s")
            .arg("--node-monitor-period=2s")
            // The HPA controller (in the default controller set) acts every 5 s (default 15 s).
            .arg("--horizontal-pod-autoscaler-sync-period=5s")
            .arg("--v=1");
        self.spawn("kube-controller-manager", kcm)?;

        let sched_port = free_port()?;
        let mut sched = Command::new(&self.peers.kube_scheduler);
        sched
            .arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()))
            .arg(format!("--authentication-kubeconfig={}", self.admin_kubeconfig.display()))
            .arg(format!("--authorization-kubeconfig={}", self.admin_kubeconfig.display()))
            .args(["--bind-address=127.0.0.1", "--leader-elect=false"])
            .arg(format!("--secure-port={sched_port}"))
            .arg("--v=1");
        self.spawn("kube-scheduler", sched)?;
        self.ready(
            "kube-controller-manager",
            &format!("https://127.0.0.1:{kcm_port}/healthz"),
            Duration::from_secs(60),
        )
        .await?;
        self.ready(
            "kube-scheduler",
            &format!("https://127.0.0.1:{sched_port}/healthz"),
            Duration::from_secs(60),
        )
        .await?;
        Ok(())
    }

    fn start_nomad(&mut self, server: bool) -> anyhow::Result<()> {
        let (http, rpc, serf) = (free_port()?, free_port()?, free_port()?);
        self.nomad_addr = format!("http://127.0.0.1:{http}");
        self.nomad_rpc = rpc;
        // Under cgroup v2 a root Nomad agent may fail to create its cgroup (nomad#23476); as an
        // unprivileged user cgroups are simply off, which raw_exec does not need.
        // `VK_NOMAD_AS_NOBODY=1` forces this path (to try it on a cgroup v1 machine).
        self.nomad_as_nobody = std::env::var_os("VK_NOMAD_AS_NOBODY").is_some()
            || (running_as_root() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists());
        let mode = if server {
            "bind_addr = \"127.0.0.1\"\n\
advertise {\n  http = \"127.0.0.1\"\n  rpc = \"127.0.0.1\"\n  serf = \"127.0.0.1\"\n}\n\
server {\n  enabled = true\n  bootstrap_expect = 1\n  heartbeat_grace = \"3s\"\n  min_heartbeat_ttl = \"3s\"\n}\n\
plugin \"raw_exec\" {\n  config {\n    enabled = true\n  }\n}\n"
        } else {
            ""
        };
        let client = if server { "  enabled = true\n" } else { "" };
        let cfg = format!(
            "{NO_UPDATE_CHECK}ports {{\n  http = {http}\n  rpc = {rpc}\n  serf = {serf}\n}}\n{mode}\
client {{\n{client}  cni_path = \"{CNI_PATH}\"\n  options = {{\n    \"fingerprint.denylist\" = \"{DENIED_FINGERPRINTERS}\"\n  }}\n}}\n{docker}",
            docker = docker_plugin(),
        );
        let agent = self.nomad_agent("nomad", &cfg)?;
        let mut cmd = self.nomad_command(&agent);
        if !server {
            cmd.args(["-dev", "-bind=127.0.0.1"]);
        }
        self.procs.push(Process::spawn_group("nomad", cmd, &self.log("nomad"))?);
        self.nomad = Some(agent);
        Ok(())
    }

    /// Writes agent `name`'s configuration and makes its data directory (`<name>/data`: Nomad puts
    /// `alloc_mounts` beside its data directory, so both stay in `<name>/`).
    fn nomad_agent(&mut self, name: &str, cfg: &str) -> anyhow::Result<NomadAgent> {
        let home = self.dir.join(name);
        let data = home.join("data");
        std::fs::create_dir_all(&data)?;
        self.nomad_data.push(data.clone());
        let cfg_path = self.dir.join(format!("{name}.hcl"));
        std::fs::write(&cfg_path, cfg)?;
        if self.nomad_as_nobody {
            // nobody cannot reach the peers cache under /root: it runs a link (or copy) of the
            // binary from the stack's own directory, which nobody may read.
            let nomad = self.dir.join("nomad-bin");
            if !nomad.exists() && std::fs::hard_link(&self.peers.nomad, &nomad).is_err() {
                std::fs::copy(&self.peers.nomad, &nomad).context("copying the nomad binary")?;
            }
            for (args, path) in [
                (&["-R", "nobody:nogroup"][..], &home),
                (&["a+rx"][..], &self.dir),
                (&["a+rx"][..], &nomad),
            ] {
                let cmd = if args.len() == 2 { "chown" } else { "chmod" };
                let ok = Command::new(cmd).args(args).arg(path).status()?.success();
                anyhow::ensure!(ok, "{cmd} {args:?} {} failed", path.display());
            }
        }
        Ok(NomadAgent { name: name.to_owned(), cfg: cfg_path, data, idx: self.procs.len() })
    }

    fn nomad_command(&self, agent: &NomadAgent) -> Command {
        let mut cmd = if self.nomad_as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
                .arg(self.dir.join("nomad-bin"));
            c
        } else {
            Command::new(&self.peers.nomad)
        };
        cmd.args(["agent", "-log-level=INFO"])
            .arg(format!("-config={}", agent.cfg.display()))
            .arg(format!("-data-dir={}", agent.data.display()))
            // A CA bundle in the environment makes Nomad's AWS fingerprinter refuse to start.
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("NOMAD_ADDR")
            .env_remove("NOMAD_TOKEN");
        cmd
    }

    /// Stops the main Nomad agent (SIGTERM, as an operator's `systemctl stop` does). Its task
    /// executors, and so the tasks, keep running, as they do on a real client.
    ///
    /// # Errors
    /// The stack runs Nomad in `-dev` mode (its state would be lost), or has no Nomad.
    pub fn stop_nomad(&mut self) -> anyhow::Result<()> {
        let agent = self.nomad.clone().context("no Nomad agent")?;
        ensure!(self.nomad_rpc != 0, "no Nomad agent");
        let proc = self.procs.get_mut(agent.idx).context("no Nomad process")?;
        tokio::task::block_in_place(|| proc.terminate(Duration::from_secs(30)));
        Ok(())
    }

    /// Starts the main Nomad agent again with the same configuration and data directory, and
    /// waits until its node is ready again.
    ///
    /// # Errors
    /// Nomad failing to start or become ready within 120 s.
    pub async fn resume_nomad(&mut self) -> anyhow::Result<()> {
        let agent = self.nomad.clone().context("no Nomad agent")?;
        let log = self.log("nomad-resumed");
        self.procs[agent.idx] =
            Process::spawn_group(&agent.name, self.nomad_command(&agent), &log)?;
        self.wait_nomad(false).await
    }

    /// Starts an extra Nomad client agent named `name` in node pool `pool`, joined to the main
    /// agent (which must run with [`StackOptions::nomad_server`]); returns its handle for
    /// [`Stack::kill`]. Waits until the server lists it as ready.
    ///
    /// # Errors
    /// No server-mode agent; the client failing to start or register within 60 s.
    pub async fn start_nomad_client(&mut self, name: &str, pool: &str) -> anyhow::Result<usize> {
        let main = self.nomad.clone().context("no Nomad agent")?;
        let main_cfg = std::fs::read_to_string(&main.cfg)?;
        ensure!(main_cfg.contains("server {"), "extra clients need a server-mode Nomad");
        let (http, rpc, serf) = (free_port()?, free_port()?, free_port()?);
        let cfg = format!(
            "{NO_UPDATE_CHECK}name = \"{name}\"\nbind_addr = \"127.0.0.1\"\n\
ports {{\n  http = {http}\n  rpc = {rpc}\n  serf = {serf}\n}}\n\
advertise {{\n  http = \"127.0.0.1\"\n  rpc = \"127.0.0.1\"\n  serf = \"127.0.0.1\"\n}}\n\
client {{\n  enabled = true\n  node_pool = \"{pool}\"\n  servers = [\"127.0.0.1:{server}\"]\n\
  cni_path = \"{CNI_PATH}\"\n  options = {{\n    \"fingerprint.denylist\" = \"{DENIED_FINGERPRINTERS}\"\n  }}\n}}\n\
plugin \"raw_exec\" {{\n  config {{\n    enabled = true\n  }}\n}}\n{docker}",
            server = self.nomad_rpc,
            docker = docker_plugin(),
        );
        let agent = self.nomad_agent(name, &cfg)?;
        let idx = agent.idx;
        let cmd = self.nomad_command(&agent);
        self.procs.push(Process::spawn_group(name, cmd, &self.log(name))?);
        let url = format!("{}/v1/nodes", self.nomad_addr);
        let http = reqwest::Client::new();
        wait_for(
            &format!("Nomad client {name} ready"),
            Duration::from_secs(60),
            Duration::from_millis(500),
            || async {
                let nodes: serde_json::Value = http.get(&url).send().await?.json().await?;
                let ok = nodes
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|n| n["Name"] == name && n["Status"] == "ready");
                Ok(ok.then_some(()))
            },
        )
        .await
        .with_context(|| format!("Nomad client log: {}", self.log(name).display()))?;
        Ok(idx)
    }

    /// SIGKILLs the agent process `idx` (from [`Stack::start_nomad_client`]) alone: its tasks keep
    /// running, as on a machine cut off from the servers.
    pub fn kill(&mut self, idx: usize) {
        if let Some(p) = self.procs.get_mut(idx) {
            p.kill_leader();
        }
    }

    async fn wait_nomad(&mut self, docker: bool) -> anyhow::Result<()> {
        let url = format!("{}/v1/nodes", self.nomad_addr);
        self.ready("nomad", &url, Duration::from_secs(60)).await?;
        let http = reqwest::Client::new();
        // The agent was told not to look up checkpoint-api.hashicorp.com.
        let agent: serde_json::Value =
            http.get(format!("{}/v1/agent/self", self.nomad_addr)).send().await?.json().await?;
        ensure!(
            agent["config"]["DisableUpdateCheck"] == serde_json::Value::Bool(true),
            "the Nomad agent checks for updates: {}",
            agent["config"]["DisableUpdateCheck"]
        );
        let drivers: &[&str] = if docker { &["raw_exec", "docker"] } else { &["raw_exec"] };
        wait_for(
            &format!("a ready Nomad node with {}", drivers.join(" and ")),
            Duration::from_secs(60),
            Duration::from_millis(500),
            || async {
                let nodes: serde_json::Value = http.get(&url).send().await?.json().await?;
                let ok = nodes.as_array().into_iter().flatten().any(|n| {
                    n["Status"] == "ready"
                        && drivers
                            .iter()
                            .all(|d| n["Drivers"][d]["Healthy"] == serde_json::Value::Bool(true))
                });
                Ok(ok.then_some(()))
            },
        )
        .await
        .with_context(|| format!("Nomad log: {}", self.log("nomad").display()))
    }

    /// A kubeconfig for a virtual kubelet node: user `system:node:<node>` in group `system:nodes`,
    /// so the Node authorizer and NodeRestriction apply to it exactly as to a kubelet.
    ///
    /// # Errors
    /// Signing or writing failing.
    pub fn node_kubeconfig(&self, node: &str) -> anyhow::Result<PathBuf> {
        let pair = self.pki.client(
            &format!("node-{node}"),
            &format!("system:node:{node}"),
            &["system:nodes"],
        )?;
        let path = self.dir.join(format!("node-{node}.kubeconfig"));
        std::fs::write(
            &path,
            kubeconfig(&self.apiserver_url, &self.pki.ca_path, &pair.cert, &pair.key, node),
        )?;
        Ok(path)
    }

    /// An admin client.
    ///
    /// # Errors
    /// The kubeconfig being unusable.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let kc = kube::config::Kubeconfig::read_from(&self.admin_kubeconfig)?;
        let cfg =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?;
        Ok(Client::try_from(cfg)?)
    }

    /// Stops kube-apiserver (SIGTERM), keeps it down for `down`, and starts it again with the same
    /// flags, port and etcd data; returns once it is ready.
    ///
    /// # Errors
    /// It failing to start again or to become ready.
    pub async fn restart_apiserver(&mut self, down: Duration) -> anyhow::Result<()> {
        let (program, args, idx) = self.apiserver.clone().context("no kube-apiserver")?;
        let proc = self.procs.get_mut(idx).context("no kube-apiserver process")?;
        tokio::task::block_in_place(|| proc.terminate(Duration::from_secs(30)));
        tokio::time::sleep(down).await;
        let mut cmd = Command::new(program);
        cmd.args(args);
        let log = self.log("kube-apiserver-restarted");
        self.procs[idx] = Process::spawn("kube-apiserver", cmd, &log)?;
        let url = format!("{}/readyz", self.apiserver_url);
        self.ready("kube-apiserver", &url, Duration::from_secs(120)).await
    }

    /// Who the API server says `token` is (a SelfSubjectReview made with that bearer token).
    ///
    /// # Errors
    /// The request failing or being refused (an invalid token gives 401).
    pub async fn whoami(&self, token: &str) -> anyhow::Result<String> {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.pki.ca_path)?)?;
        let http = reqwest::Client::builder().add_root_certificate(ca).build()?;
        let r = http
            .post(format!(
                "{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
                self.apiserver_url
            ))
            .bearer_auth(token.trim())
            .json(&serde_json::json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"
            }))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "SelfSubjectReview: {}", r.status());
        let v: serde_json::Value = r.json().await?;
        Ok(v["status"]["userInfo"]["username"].as_str().unwrap_or_default().to_owned())
    }

    /// The API server's kubelet client certificate and key (`--kubelet-client-certificate`,
    /// CN `kube-apiserver-kubelet-client`), to call a kubelet as the API server does.
    pub fn kubelet_client_identity(&self) -> (PathBuf, PathBuf) {
        let dir = self.dir.join("pki");
        (dir.join("apiserver-kubelet-client.crt"), dir.join("apiserver-kubelet-client.key"))
    }

    /// An HTTPS client calling a kubelet as the API server does: its kubelet client certificate
    /// ([`Stack::kubelet_client_identity`]), the kubelet's serving certificate not verified.
    ///
    /// # Errors
    /// The certificate or key unreadable or unusable.
    pub fn kubelet_client(&self) -> anyhow::Result<reqwest::Client> {
        self.kubelet_client_with(reqwest::Client::builder())
    }

    /// [`Stack::kubelet_client`] from `builder` (for more settings, such as HTTP/1 only).
    ///
    /// # Errors
    /// As [`Stack::kubelet_client`].
    pub fn kubelet_client_with(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> anyhow::Result<reqwest::Client> {
        let (cert, key) = self.kubelet_client_identity();
        let mut pem = std::fs::read(cert)?;
        pem.extend(std::fs::read(key)?);
        Ok(builder
            .danger_accept_invalid_certs(true)
            .identity(reqwest::Identity::from_pem(&pem)?)
            .build()?)
    }

    /// Starts metrics-server (once: later calls return at once while it runs) as the
    /// `kube-system/metrics-server` ServiceAccount, with the objects its manifests make (RBAC, a
    /// Service, the `v1beta1.metrics.k8s.io` APIService), scraping the nodes' kubelet endpoints
    /// (`--kubelet-use-node-status-port`, `InternalIP` first, TLS unverified) every 10 s. Returns
    /// once the APIService is Available and `/apis/metrics.k8s.io/v1beta1/nodes` answers.
    ///
    /// # Errors
    /// kubectl failing, metrics-server exiting, or it not being available within 120 s; the
    /// error names its log.
    pub async fn start_metrics_server(&self) -> anyhow::Result<()> {
        let mut slot = self.metrics_server.lock().await;
        if let Some(p) = slot.as_mut()
            && p.exited().is_none()
        {
            return Ok(());
        }
        let port = free_port()?;
        let manifest = self.dir.join("metrics-server.yaml");
        std::fs::write(&manifest, metrics_server_manifest(port))?;
        self.kubectl(&["apply", "-f", &manifest.display().to_string()])?;
        let token = self.kubectl(&[
            "create",
            "token",
            "metrics-server",
            "--namespace=kube-system",
            "--duration=48h",
        ])?;
        let kubeconfig = self.dir.join("metrics-server.kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
users:\n- name: metrics-server\n  user:\n    token: {token}\n\
contexts:\n- name: local\n  context:\n    cluster: local\n    user: metrics-server\ncurrent-context: local\n",
                server = self.apiserver_url,
                ca = self.pki.ca_path.display(),
                token = token.trim(),
            ),
        )?;
        let kc = kubeconfig.display();
        let mut cmd = Command::new(&self.peers.metrics_server);
        cmd.arg(format!("--secure-port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--cert-dir={}", self.dir.join("metrics-server").display()))
            .arg(format!("--kubeconfig={kc}"))
            .arg(format!("--authentication-kubeconfig={kc}"))
            .arg(format!("--authorization-kubeconfig={kc}"))
            // Verifies the kubelet ports' certificates against the cluster's CA, as a production
            // metrics-server does (no --kubelet-insecure-tls): the nodes of Stack::virtual_kubelet
            // serve one the CA signed, a bootstrapped node one it got by CSR.
            .arg(format!("--kubelet-certificate-authority={}", self.pki.ca_path.display()))
            .arg("--kubelet-use-node-status-port")
            .arg("--kubelet-preferred-address-types=InternalIP,Hostname")
            .arg("--metric-resolution=10s")
            // It must be shorter than the resolution (default 10 s: metrics-server refuses it).
            .arg("--kubelet-request-timeout=5s")
            .arg("--v=2")
            .env_remove("KUBECONFIG");
        let log = self.log("metrics-server");
        let proc = slot.insert(Process::spawn("metrics-server", cmd, &log)?);
        let jsonpath = r#"jsonpath={.status.conditions[?(@.type=="Available")].status} {.status.conditions[?(@.type=="Available")].message}"#;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = proc.exited() {
                bail!(
                    "metrics-server exited ({status}); its log ({}) ends with:\n{}",
                    log.display(),
                    proc.tail(20)
                );
            }
            let available =
                self.kubectl(&["get", "apiservice", METRICS_APISERVICE, "-o", jsonpath]);
            let served = match &available {
                Ok(a) if a.starts_with("True") => {
                    self.kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"])
                }
                Ok(a) => Err(anyhow::anyhow!("APIService Available: {a}")),
                Err(e) => Err(anyhow::anyhow!("{e:#}")),
            };
            let last = match served {
                Ok(_) => return Ok(()),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "metrics-server not serving {METRICS_APISERVICE} after 120 s (last: {last}); \
its log: {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs kubectl with the admin kubeconfig; returns stdout.
    ///
    /// # Errors
    /// kubectl failing, with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.peers.kubectl)
            .arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()))
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("kubectl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Creates namespace `name` and waits for its `default` ServiceAccount (made by the
    /// controller manager), without which pods cannot be created.
    ///
    /// # Errors
    /// The API refusing, or the ServiceAccount not appearing within 30 s.
    pub async fn namespace(&self, name: &str) -> anyhow::Result<()> {
        let client = self.client().await?;
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        match Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let sas: Api<ServiceAccount> = Api::namespaced(client, name);
        wait_for(
            "the default ServiceAccount",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async { Ok(sas.get_opt("default").await?.map(|_| ())) },
        )
        .await
    }

    /// Waits (`timeout` at most) until node `node` reports Ready, read with kubectl.
    ///
    /// # Errors
    /// The timeout, with the last kubectl error.
    pub async fn wait_node_ready(&self, node: &str, timeout: Duration) -> anyhow::Result<()> {
        let jsonpath = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}";
        wait_for(&format!("node {node} Ready"), timeout, Duration::from_secs(1), || async {
            let s = self.kubectl(&["get", "node", node, "-o", jsonpath])?;
            Ok((s == "True").then_some(()))
        })
        .await
    }

    /// Starts `virtual-kubelet --provider nomad` as node `node` with its own node identity,
    /// pods on the raw_exec driver by default, and `extra` flags. Its kubelet port serves a
    /// certificate the stack's CA signed for 127.0.0.1 and the node's name (`<node>-serving.crt`),
    /// as a kubelet whose serving certificate the cluster issued: metrics-server verifies it.
    ///
    /// # Errors
    /// The binary missing or not starting.
    pub fn virtual_kubelet(&self, node: &str, extra: &[&str]) -> anyhow::Result<Process> {
        let kubeconfig = self.node_kubeconfig(node)?;
        let serving = self.pki.server(&format!("{node}-serving"), &["127.0.0.1", node])?;
        let mut cmd = self.virtual_kubelet_command(node)?;
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--tls-cert-file={}", serving.cert.display()))
            .arg(format!("--tls-private-key-file={}", serving.key.display()))
            .args(["--nomad-addr", &self.nomad_addr])
            .args(extra);
        let log = self.dir.join("logs").join(format!("virtual-kubelet-{node}.log"));
        started(node, &log);
        Process::spawn(&format!("virtual-kubelet-{node}"), cmd, &log)
    }

    /// Stops and purges, in every Nomad namespace, the jobs whose pods were bound to `nodes`
    /// (`Meta.k8s_node_name`): a test's pods outlive its virtual kubelets, and some of them spin
    /// (the HPA's load) and would take the CPU the next tests measure with. Returns how many.
    ///
    /// # Errors
    /// Nomad not answering the listing; a failed stop is skipped.
    pub async fn stop_jobs_of(&self, nodes: &[String]) -> anyhow::Result<usize> {
        let http = reqwest::Client::new();
        let jobs: Vec<serde_json::Value> = http
            .get(format!("{}/v1/jobs?meta=true&namespace=*", self.nomad_addr))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut stopped = 0;
        for j in jobs {
            let owned =
                j["Meta"]["k8s_node_name"].as_str().is_some_and(|n| nodes.iter().any(|m| m == n));
            let (Some(id), Some(ns)) = (j["ID"].as_str(), j["Namespace"].as_str()) else {
                continue;
            };
            if !owned {
                continue;
            }
            let r = http
                .delete(format!("{}/v1/job/{id}", self.nomad_addr))
                .query(&[("purge", "true"), ("namespace", ns)])
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                stopped += 1;
            }
        }
        Ok(stopped)
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
            .env("NOMAD_ADDR", &self.nomad_addr)
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
            .args(["--nomad-addr", &self.nomad_addr])
            .args(extra);
        let log = self.dir.join("logs").join(format!("virtual-kubelet-{node}.log"));
        started(node, &log);
        Process::spawn(&format!("virtual-kubelet-{node}"), cmd, &log)
    }

    /// A kubeconfig at `path` for this API server (trusting the stack's CA) that authenticates
    /// with bearer `token`.
    ///
    /// # Errors
    /// The write failing.
    pub fn token_kubeconfig(&self, path: &Path, token: &str) -> anyhow::Result<()> {
        let ca = self.pki.ca_path.display();
        let server = &self.apiserver_url;
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
users:\n- name: bootstrap\n  user:\n    token: {token}\n\
contexts:\n- name: local\n  context:\n    cluster: local\n    user: bootstrap\ncurrent-context: local\n"
            ),
        )?;
        Ok(())
    }

    /// A kubeconfig at `path` for this API server that authenticates with the client certificate
    /// and key in `cert` and `key` (which may be one file, as the kubelet keeps them).
    ///
    /// # Errors
    /// The write failing.
    pub fn certificate_kubeconfig(
        &self,
        path: &Path,
        cert: &Path,
        key: &Path,
    ) -> anyhow::Result<()> {
        let text = kubeconfig(&self.apiserver_url, &self.pki.ca_path, cert, key, "node");
        std::fs::write(path, text)?;
        Ok(())
    }

    /// The stack's CA certificate file (PEM).
    pub fn ca_path(&self) -> &Path {
        &self.pki.ca_path
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
        Ok(cmd)
    }

    /// A directory laid out as Kubernetes mounts a ServiceAccount in a pod: `token` (a
    /// TokenRequest for `namespace/service_account`, valid 1 h, from `kubectl create token`),
    /// `ca.crt` (the cluster CA) and `namespace`. Returns its path (under the stack directory).
    ///
    /// # Errors
    /// kubectl refusing (no such ServiceAccount) or a write failing.
    pub fn service_account_dir(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> anyhow::Result<PathBuf> {
        let token = self.kubectl(&[
            "create",
            "token",
            service_account,
            &format!("--namespace={namespace}"),
            "--duration=1h",
        ])?;
        let dir = self.dir.join("serviceaccounts").join(format!("{namespace}-{service_account}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("token"), token.trim())?;
        std::fs::copy(&self.pki.ca_path, dir.join("ca.crt"))?;
        std::fs::write(dir.join("namespace"), namespace)?;
        Ok(dir)
    }
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
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

/// The last `n` lines of each of `logs` (each line cut at 400 characters), headed by its path.
#[must_use]
pub fn log_tails<'a>(logs: impl IntoIterator<Item = &'a PathBuf>, n: usize) -> String {
    let mut out = String::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- the last lines of {}:\n", log.display()));
        for l in &lines[lines.len().saturating_sub(n)..] {
            let cut = l.char_indices().nth(400).map_or(l.len(), |(i, _)| i);
            out.push_str(&l[..cut]);
            out.push('\n');
        }
    }
    out
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
        remove_containers(&self.nomad_data);
        // Nomad's task executors outlive the agent; kill them and free their mounts so the
        // directory can be removed and no task keeps running after the stack.
        let marker = format!("{}/", self.dir.display());
        process::kill_processes_mentioning(&marker);
        process::unmount_below(&self.dir);
    }
}

/// Checks that a Docker engine answers and that the test images are there.
///
/// # Errors
/// Either missing, with the commands that make them.
pub fn check_docker() -> anyhow::Result<()> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", BUSYBOX, PAUSE])
        .output()
        .context("running docker (scripts/docker.sh installs it)")?;
    ensure!(
        out.status.success(),
        "the Docker engine or the test images are missing ({}): run scripts/docker.sh and scripts/images.sh",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Removes (`docker rm -f`) the containers of the allocations found under the Nomad data
/// directories `data` (`alloc/<alloc ID>/`; Nomad labels each container, pause containers too,
/// `com.hashicorp.nomad.alloc_id`). Best effort: no Docker, nothing to do.
fn remove_containers(data: &[PathBuf]) {
    let allocs: std::collections::HashSet<String> = data
        .iter()
        .filter_map(|d| std::fs::read_dir(d.join("alloc")).ok())
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    if allocs.is_empty() {
        return;
    }
    // Every Nomad container with its allocation: label filters of one key are ANDed by Docker,
    // so the allocations are matched here.
    let Ok(out) = Command::new("docker")
        .args(["ps", "-a", "--filter", "label=com.hashicorp.nomad.alloc_id"])
        .args(["--format", "{{.ID}} {{.Label \"com.hashicorp.nomad.alloc_id\"}}"])
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, alloc)| allocs.contains(*alloc))
        .map(|(id, _)| id.to_owned())
        .collect();
    for chunk in ids.chunks(100) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v"])
            .args(chunk)
            .stdout(std::process::Stdio::null())
            .status();
    }
}
