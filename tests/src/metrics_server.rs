//! metrics-server on demand: its objects (as in its own manifests), its process as the
//! `kube-system/metrics-server` ServiceAccount, and the wait for its APIService.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::{Process, Stack, free_port};

/// The APIService metrics-server serves.
pub const METRICS_APISERVICE: &str = "v1beta1.metrics.k8s.io";

/// metrics-server's objects, as in its own manifests (`manifests/base`): ServiceAccount, RBAC,
/// Service and APIService. The Service is an ExternalName one for `localhost`, which the
/// aggregator's (default) cluster-IP resolution dials as `https://localhost:<APIService port>`:
/// there is no kube-proxy here, and endpoint routing (`--enable-aggregator-routing`) would need
/// a non-loopback endpoint address, as Endpoints/EndpointSlice validation refuses 127.0.0.0/8.
fn metrics_server_manifest(port: u16) -> String {
    format!("{METRICS_SERVER_ACCESS}---\n{}", metrics_server_api(port))
}

/// metrics-server's identity and permissions: its ServiceAccount, the ClusterRoles that read
/// metrics (aggregated to view, edit and admin) and that it needs (nodes, pods, `nodes/metrics`),
/// and its bindings (to them, to `extension-apiserver-authentication-reader` and to
/// `system:auth-delegator`).
const METRICS_SERVER_ACCESS: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: metrics-server
  namespace: kube-system
  labels: {k8s-app: metrics-server}
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
  labels: {k8s-app: metrics-server}
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
  labels: {k8s-app: metrics-server}
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
  labels: {k8s-app: metrics-server}
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
  labels: {k8s-app: metrics-server}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:metrics-server
subjects:
- kind: ServiceAccount
  name: metrics-server
  namespace: kube-system
"#;

/// metrics-server's Service (an ExternalName one for `localhost`, see
/// [`metrics_server_manifest`]) and the APIService served through it on `port`.
fn metrics_server_api(port: u16) -> String {
    format!(
        r#"apiVersion: v1
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

impl Stack {
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
}
