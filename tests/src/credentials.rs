//! Identities and credentials the stack hands out: kubeconfigs (admin, node, bearer token,
//! client certificate), ServiceAccount directories laid out as in a pod, the API server's kubelet
//! client identity, and who a token is to the API server.

use std::path::{Path, PathBuf};

use crate::Stack;

/// A kubeconfig's text: cluster `server` trusting `ca`, user `user` with client certificate
/// `cert` and key `key`.
pub(crate) fn kubeconfig(server: &str, ca: &Path, cert: &Path, key: &Path, user: &str) -> String {
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
}
