//! The Kubernetes control plane of the stack: etcd, kube-apiserver (restartable),
//! kube-controller-manager and kube-scheduler; and the admin's access to it (a client, kubectl,
//! namespaces, node readiness).

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::credentials::kubeconfig;
use crate::pki::{Pair, Pki};
use crate::{Process, Stack, free_port, wait_for};

/// The front proxy's client certificate CN (kube-apiserver's `--requestheader-allowed-names`).
const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

impl Stack {
    /// Starts etcd, kube-apiserver, then kube-controller-manager and kube-scheduler, waiting
    /// until each is ready.
    pub(crate) async fn start_control_plane(&mut self) -> anyhow::Result<()> {
        let client_url = self.start_etcd().await?;
        let sa_key = self.start_apiserver(&client_url).await?;
        self.start_controllers(&sa_key).await
    }

    /// Starts etcd and waits until it is healthy; returns its client URL.
    async fn start_etcd(&mut self) -> anyhow::Result<String> {
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
        Ok(client_url)
    }

    /// Starts kube-apiserver on etcd at `client_url` (writing the admin kubeconfig) and waits
    /// until it is ready; returns the ServiceAccount signing key pair.
    async fn start_apiserver(&mut self, client_url: &str) -> anyhow::Result<Pair> {
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
        Ok(sa_key)
    }

    /// Starts kube-controller-manager (signing with `sa_key` and the stack's CA) and
    /// kube-scheduler, and waits until both are healthy.
    async fn start_controllers(&mut self, sa_key: &Pair) -> anyhow::Result<()> {
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
}
