//! Command-line flags and environment, parsed once into typed settings. Names follow upstream
//! virtual-kubelet (`--nodename`, `--provider`, `KUBELET_PORT`, `VKUBELET_*`) and Nomad's own
//! environment (`NOMAD_ADDR`, `NOMAD_TOKEN`, ...).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use k8s_openapi::api::core::v1::Taint;
use vk_adapters::nomad::{ClientConfig, ProviderConfig};
use vk_domain::node::NodeConfig;

/// The Kubernetes version this kubelet speaks (the API it was built and tested against).
pub const KUBERNETES_VERSION: &str = "v1.36.3";

/// Backends this binary can run pods on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    /// HashiCorp Nomad.
    Nomad,
    /// Pods kept in this process's memory, Running at once (upstream's `mock`; for benchmarks and
    /// trials, see `vk_adapters::memory`).
    Memory,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// `virtual-kubelet`: a Kubernetes node whose pods run on HashiCorp Nomad.
#[derive(Debug, Clone, Parser)]
#[command(name = "virtual-kubelet", version, about, args_override_self = true)]
pub struct Cli {
    /// Backend that runs the pods.
    #[arg(long, value_enum)]
    pub provider: Provider,
    /// Name of the Node to register.
    #[arg(long, env = "DEFAULT_NODE_NAME", default_value = "virtual-kubelet")]
    pub nodename: String,
    /// Kubeconfig file. Without it: the in-cluster configuration when `KUBERNETES_SERVICE_HOST`
    /// is set, else `~/.kube/config`.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Where the in-cluster configuration reads the service account's `token`, `ca.crt` and
    /// `namespace` (the directory Kubernetes mounts in every pod).
    #[arg(long, default_value = "/var/run/secrets/kubernetes.io/serviceaccount")]
    pub service_account_dir: PathBuf,
    /// Operating system reported by the node.
    #[arg(long, default_value = "linux")]
    pub os: String,
    /// Architecture reported by the node (kubernetes.io/arch).
    #[arg(long, default_value = std::env::consts::ARCH)]
    pub arch: String,
    /// The node's InternalIP: where the API server reaches this kubelet.
    #[arg(long, env = "VKUBELET_POD_IP", default_value = "127.0.0.1")]
    pub internal_ip: String,
    /// Port of the kubelet API, published in the node status.
    #[arg(long, env = "KUBELET_PORT", default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Address the kubelet API listens on (its port is `--kubelet-port`).
    #[arg(long, default_value = "0.0.0.0")]
    pub kubelet_address: std::net::IpAddr,
    /// Serving certificate (PEM) of the kubelet API (the kubelet's `--tls-cert-file`; upstream's
    /// `APISERVER_CERT_LOCATION`). Without it, a self-signed certificate for the node's name and
    /// InternalIP is made at start.
    #[arg(long, env = "APISERVER_CERT_LOCATION", requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Key (PEM) of `--tls-cert-file` (upstream's `APISERVER_KEY_LOCATION`).
    #[arg(long, env = "APISERVER_KEY_LOCATION", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA bundle (PEM) client certificates are verified against (the kubelet's
    /// `--client-ca-file`; upstream's `APISERVER_CA_CERT_LOCATION`). Without it, the CA the
    /// kubeconfig trusts for the API server is used, which signs the API server's kubelet client
    /// certificate in most clusters.
    #[arg(long, env = "APISERVER_CA_CERT_LOCATION")]
    pub client_ca_file: Option<PathBuf>,
    /// Let requests without credentials through as `system:anonymous` (still authorized by a
    /// SubjectAccessReview). Off by default: they get 401.
    #[arg(long, default_value_t = false)]
    pub anonymous_auth: bool,
    /// Maximum number of pods (capacity.pods).
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Extra node label, `key=value`; repeatable.
    #[arg(long = "node-label", value_parser = parse_label)]
    pub node_labels: Vec<(String, String)>,
    /// Add `kubernetes.io/role=agent` (refused by NodeRestriction for system:node identities).
    #[arg(long)]
    pub role_label: bool,
    /// Register the node without a taint.
    #[arg(long)]
    pub disable_taint: bool,
    /// Taint key.
    #[arg(long, env = "VKUBELET_TAINT_KEY", default_value = "virtual-kubelet.io/provider")]
    pub taint_key: String,
    /// Taint value (the provider's name by default).
    #[arg(long, env = "VKUBELET_TAINT_VALUE")]
    pub taint_value: Option<String>,
    /// Taint effect.
    #[arg(long, env = "VKUBELET_TAINT_EFFECT", default_value = "NoSchedule",
          value_parser = ["NoSchedule", "PreferNoSchedule", "NoExecute"])]
    pub taint_effect: String,
    /// Workers processing pods concurrently.
    #[arg(long, default_value_t = 10)]
    pub pod_sync_workers: usize,
    /// API server requests per second (client-side token bucket, as the kubelet's
    /// `--kube-api-qps`); 0 for no limit.
    #[arg(long, default_value_t = 50.0)]
    pub kube_api_qps: f32,
    /// API server requests admitted at once before `--kube-api-qps` applies (the kubelet's
    /// `--kube-api-burst`).
    #[arg(long, default_value_t = 100)]
    pub kube_api_burst: u32,
    /// Where the process's own metrics, `/healthz` and `/readyz` are served (`host:port`, or
    /// `:port` for every address; upstream virtual-kubelet's flag and default).
    #[arg(long, default_value = ":10255", value_parser = crate::telemetry::parse_addr)]
    pub metrics_addr: std::net::SocketAddr,
    /// How often every workload is listed from the backend: a safety net under the changes the
    /// backend pushes (Nomad's event stream), which update pod status at once.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub status_interval: Duration,
    /// How often the node status is checked (and written when changed).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub node_status_interval: Duration,
    /// How often the node status is written even when unchanged.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub node_status_report_interval: Duration,
    /// How long in-flight work may take to finish after SIGTERM.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Annotation whose value chooses the task driver of one pod (read before
    /// `nomad.hashicorp.com/driver`).
    #[arg(long, default_value = "virtual-kubelet.io/nomad-driver")]
    pub driver_annotation: String,
    /// How often the files of running pods' ConfigMap, Secret, downward API and projected volumes
    /// are brought up to date.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub volume_refresh_interval: Duration,
    /// Log level (overridden by RUST_LOG).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Nomad address, with or without scheme.
    #[arg(long, env = "NOMAD_ADDR", default_value = "http://127.0.0.1:4646")]
    pub nomad_addr: String,
    /// Nomad ACL token.
    #[arg(long, env = "NOMAD_TOKEN", hide_env_values = true)]
    pub nomad_token: Option<String>,
    /// Nomad namespace jobs are registered in.
    #[arg(long, env = "NOMAD_NAMESPACE")]
    pub nomad_namespace: Option<String>,
    /// Nomad region.
    #[arg(long, env = "NOMAD_REGION")]
    pub nomad_region: Option<String>,
    /// CA certificate (PEM) for Nomad's TLS.
    #[arg(long, env = "NOMAD_CACERT")]
    pub nomad_cacert: Option<PathBuf>,
    /// Client certificate (PEM) for Nomad's mutual TLS.
    #[arg(long, env = "NOMAD_CLIENT_CERT")]
    pub nomad_client_cert: Option<PathBuf>,
    /// Client key (PEM) for Nomad's mutual TLS.
    #[arg(long, env = "NOMAD_CLIENT_KEY")]
    pub nomad_client_key: Option<PathBuf>,
    /// Do not verify Nomad's certificate.
    #[arg(long, env = "NOMAD_SKIP_VERIFY")]
    pub nomad_skip_verify: bool,
    /// Datacenters jobs may be placed in, comma-separated.
    #[arg(long, default_value = "*", value_delimiter = ',')]
    pub nomad_datacenters: Vec<String>,
    /// Task driver for pods without the driver annotation.
    #[arg(long, default_value = "docker")]
    pub nomad_driver: String,
    /// Nomad API requests in flight at most (the event stream and exec sessions not counted);
    /// 0 for no limit.
    #[arg(long, default_value_t = 32)]
    pub nomad_max_requests: usize,
    /// Prefix of the Nomad job IDs (up to 16 of `A-Za-z0-9_~-`, the characters of Nomad
    /// Variable paths).
    #[arg(long, default_value = "k8s-", value_parser = parse_prefix)]
    pub job_prefix: String,
}

fn parse_prefix(s: &str) -> Result<String, String> {
    if vk_adapters::nomad::job::valid_prefix(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?}: up to 16 letters, digits, '-', '_' or '~'"))
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not key=value"))?;
    Ok((k.to_owned(), v.to_owned()))
}

impl Cli {
    /// The node as configured; `runtime_version` comes from the backend.
    pub fn node_config(&self, runtime_version: String) -> NodeConfig {
        let provider = match self.provider {
            Provider::Nomad => "nomad",
            Provider::Memory => "memory",
        };
        NodeConfig {
            name: self.nodename.clone(),
            os: self.os.clone(),
            arch: self.arch_label(),
            labels: self.node_labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            role_label: self.role_label,
            taint: (!self.disable_taint).then(|| Taint {
                key: self.taint_key.clone(),
                value: Some(self.taint_value.clone().unwrap_or_else(|| provider.to_owned())),
                effect: self.taint_effect.clone(),
                time_added: None,
            }),
            kubelet_port: self.kubelet_port,
            max_pods: self.max_pods,
            internal_ip: self.internal_ip.clone(),
            hostname: self.nodename.clone(),
            kubelet_version: format!("{KUBERNETES_VERSION}-vk-nomad-{}", env!("CARGO_PKG_VERSION")),
            runtime_version,
        }
    }

    /// `kubernetes.io/arch` uses Go's names.
    fn arch_label(&self) -> String {
        match self.arch.as_str() {
            "x86_64" => "amd64".into(),
            "aarch64" => "arm64".into(),
            other => other.to_owned(),
        }
    }

    /// The Nomad provider's settings.
    pub fn nomad(&self) -> ProviderConfig {
        ProviderConfig {
            client: ClientConfig {
                address: self.nomad_addr.clone(),
                token: self.nomad_token.clone(),
                namespace: self.nomad_namespace.clone(),
                region: self.nomad_region.clone(),
                ca_cert: self.nomad_cacert.clone(),
                client_cert: self.nomad_client_cert.clone(),
                client_key: self.nomad_client_key.clone(),
                skip_verify: self.nomad_skip_verify,
                max_concurrent_requests: self.nomad_max_requests,
                ..ClientConfig::default()
            },
            node_name: self.nodename.clone(),
            job_prefix: self.job_prefix.clone(),
            datacenters: self.nomad_datacenters.clone(),
            default_driver: self.nomad_driver.clone(),
            driver_annotation: self.driver_annotation.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("virtual-kubelet").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_follow_upstream() {
        let cli = parse(&["--provider", "nomad", "--nodename", "vk"]).unwrap();
        let node = cli.node_config("nomad://1.11.3".into());
        let taint = node.taint.unwrap();
        assert_eq!(
            (taint.key.as_str(), taint.value.as_deref(), taint.effect.as_str()),
            ("virtual-kubelet.io/provider", Some("nomad"), "NoSchedule")
        );
        assert_eq!(node.kubelet_port, 10250);
        assert!(node.kubelet_version.starts_with("v1.36.3-vk-nomad-"));
        assert_eq!(cli.nomad().job_prefix, "k8s-");
    }

    #[test]
    fn taint_can_be_disabled_and_labels_added() {
        let cli = parse(&[
            "--provider",
            "nomad",
            "--disable-taint",
            "--node-label",
            "a=b",
            "--role-label",
        ])
        .unwrap();
        let node = cli.node_config(String::new());
        assert!(node.taint.is_none());
        assert_eq!(node.labels["a"], "b");
        assert!(node.role_label);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--provider", "docker"]).is_err());
        assert!(parse(&["--provider", "nomad", "--taint-effect", "Sometimes"]).is_err());
        assert!(parse(&["--provider", "nomad", "--node-label", "novalue"]).is_err());
        assert!(parse(&["--provider", "nomad", "--status-interval", "soon"]).is_err());
    }
}
