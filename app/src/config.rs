//! The kubelet's settings, parsed once into typed values ([`KubeletArgs`]), and the loader that
//! layers them for any binary ([`load`]: defaults < `--config` file < `--provider-config` file <
//! environment < flags). Names follow upstream virtual-kubelet (`--nodename`, `KUBELET_PORT`,
//! `VKUBELET_*`); a binary flattens [`KubeletArgs`] beside its provider's own arguments and says
//! through [`Settings`] which of them are the provider's. Nothing here knows a backend.

mod load;
mod policy;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ValueEnum, ValueHint};
use k8s_openapi::api::core::v1::Taint;
use vk_domain::node::{NodeConfig, OutagePolicy};
use vk_domain::policy::{HostPattern, ProbeGrant, Rule, Rules};

pub use load::{
    Env, Invalid, LoadError, Loaded, NODE_SETTINGS, NodeOnly, Origin, Origins, Setting, Settings,
    command, load, load_from_process, settings,
};
pub use policy::{NoGrant, PolicyRule, RuleGrant};

/// The Kubernetes version this kubelet speaks (the API it was built and tested against).
pub const KUBERNETES_VERSION: &str = "v1.36.3";

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// The settings that say where the others are: read from the command line only.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "sources")]
pub struct Sources {
    /// TOML file with settings (keys as in `[file: ...]` below; the provider's settings in its
    /// table, such as `[nomad]`).
    #[arg(long, value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,
    /// TOML file with the provider's settings at its top level (upstream virtual-kubelet's
    /// `--provider-config`); it wins over the provider's table of `--config`.
    #[arg(long, value_hint = ValueHint::FilePath)]
    pub provider_config: Option<PathBuf>,
}

/// The virtual kubelet's own settings, whatever the backend: a binary flattens them into its
/// arguments (`#[command(flatten)]`) and reads them with [`load`]. Each setting is read from, in
/// rising precedence: its default, the TOML file of `--config`, the TOML file of
/// `--provider-config` (provider settings only), the environment (the variable declared with the
/// flag, else `VK_<NAME>`), and the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeletArgs {
    /// Where the other settings are.
    #[command(flatten)]
    pub sources: Sources,
    /// Name of the Node to register.
    #[arg(long, env = "DEFAULT_NODE_NAME", default_value = "virtual-kubelet")]
    pub nodename: String,
    /// Kubeconfig file. Without it: the in-cluster configuration when `KUBERNETES_SERVICE_HOST`
    /// is set, else `~/.kube/config`.
    #[arg(long, env = "KUBECONFIG", value_hint = ValueHint::FilePath)]
    pub kubeconfig: Option<PathBuf>,
    /// Where the in-cluster configuration reads the service account's `token`, `ca.crt` and
    /// `namespace` (the directory Kubernetes mounts in every pod).
    #[arg(long, default_value = "/var/run/secrets/kubernetes.io/serviceaccount")]
    pub service_account_dir: PathBuf,
    /// Kubeconfig holding a bootstrap token (the kubelet's flag): the node gets its client
    /// certificate (`system:node:<nodename>`) by a CertificateSigningRequest with it, keeps it in
    /// `--cert-dir` and renews it before it expires; the API server then knows the process as a
    /// node (the Node authorizer and NodeRestriction apply). Ignored when `--kubeconfig` is given.
    // Not a `FilePath` that must exist: it is read only without `--kubeconfig`.
    #[arg(long)]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Where the node's certificates are kept (`kubelet-client-current.pem`,
    /// `kubelet-server-current.pem`, the kubelet's names).
    #[arg(long, default_value = "/var/lib/virtual-kubelet/pki")]
    pub cert_dir: PathBuf,
    /// Serve the kubelet API with a certificate the cluster signs (`kubernetes.io/kubelet-serving`,
    /// the kubelet's `serverTLSBootstrap`), asked for at start and renewed before it expires;
    /// self-signed until it is approved and signed. Ignored with `--tls-cert-file`.
    #[arg(long, default_value = "false", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub rotate_server_certificates: bool,
    /// Operating system reported by the node (kubernetes.io/os).
    #[arg(long, default_value = "linux")]
    pub os: String,
    /// Architecture reported by the node (kubernetes.io/arch).
    #[arg(long, default_value = std::env::consts::ARCH)]
    pub arch: String,
    /// The node's InternalIP: where the API server reaches this kubelet.
    #[arg(long, env = "VKUBELET_POD_IP", default_value = "127.0.0.1")]
    pub internal_ip: std::net::IpAddr,
    /// Port of the kubelet API, published in the node status.
    #[arg(long, env = "KUBELET_PORT", default_value_t = 10250, value_parser = clap::value_parser!(u16).range(1..))]
    pub kubelet_port: u16,
    /// Address the kubelet API listens on (its port is `--kubelet-port`).
    #[arg(long, default_value = "0.0.0.0")]
    pub kubelet_address: std::net::IpAddr,
    /// Serving certificate (PEM) of the kubelet API (the kubelet's `--tls-cert-file`). Without it,
    /// a self-signed certificate for the node's name and InternalIP is made at start.
    #[arg(long, env = "APISERVER_CERT_LOCATION", value_hint = ValueHint::FilePath)]
    pub tls_cert_file: Option<PathBuf>,
    /// Key (PEM) of `--tls-cert-file`.
    #[arg(long, env = "APISERVER_KEY_LOCATION", value_hint = ValueHint::FilePath)]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA bundle (PEM) client certificates are verified against (the kubelet's
    /// `--client-ca-file`). Without it, the CA the kubeconfig trusts for the API server is used,
    /// which signs the API server's kubelet client certificate in most clusters.
    #[arg(long, env = "APISERVER_CA_CERT_LOCATION", value_hint = ValueHint::FilePath)]
    pub client_ca_file: Option<PathBuf>,
    /// Let requests without credentials through as `system:anonymous` (still authorized by a
    /// SubjectAccessReview). Off by default: they get 401.
    #[arg(long, default_value = "false", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub anonymous_auth: bool,
    /// Review only JWT-shaped bearer tokens (three base64url parts: ServiceAccount and OIDC
    /// tokens); any other token is answered 401 without a TokenReview. Tokens over 8 KiB are
    /// always refused so.
    #[arg(long, default_value = "true", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub authentication_token_jwt_only: bool,
    /// Connections the kubelet API holds open at once (also kept below the open-file limit).
    /// Beyond it the oldest connection that has not authenticated a request is closed, or the
    /// new one refused when all have.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub kubelet_max_connections: u32,
    /// Connections the kubelet API holds open at once from one peer address (the API server is
    /// one peer for every `kubectl` user).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub kubelet_max_connections_per_peer: u32,
    /// Connections that have not yet authenticated a request (TLS handshake and first headers
    /// under way) held at once; a new one closes the oldest of the peer holding the most.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub kubelet_max_unauthenticated_connections: u32,
    /// Time a client has to send a request's headers, counted from when the server waits for
    /// them: also how long an idle keep-alive connection stays open (Go's `ReadHeaderTimeout`).
    #[arg(long, default_value = "15s", value_parser = parse_period)]
    pub kubelet_header_read_timeout: Duration,
    /// Bytes of a request's line and headers (more is answered 431).
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(8192..))]
    pub kubelet_max_header_bytes: u32,
    /// Bytes of a WebSocket message or frame of exec, attach and port-forward sessions.
    #[arg(long, default_value_t = 1_048_576, value_parser = clap::value_parser!(u32).range(4096..))]
    pub kubelet_max_websocket_message_bytes: u32,
    /// Streams open at once in one SPDY port-forward session (two per forwarded connection).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(2..))]
    pub kubelet_max_spdy_streams: u32,
    /// Maximum number of pods (capacity.pods). Unset: what the backend's machines hold, a
    /// kubelet's 110 per machine (for Nomad, per ready, eligible client), or 110 when the backend
    /// cannot tell.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pods: Option<u32>,
    /// Extra node label, `key=value`; repeatable (comma-separated in the environment).
    #[arg(long = "node-label", value_parser = parse_label)]
    pub node_labels: Vec<(String, String)>,
    /// Add `kubernetes.io/role=agent` (refused by NodeRestriction for system:node identities).
    #[arg(long, default_value = "false", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub role_label: bool,
    /// Register the node without a taint.
    #[arg(long, default_value = "false", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub disable_taint: bool,
    /// Taint key.
    #[arg(long, env = "VKUBELET_TAINT_KEY", default_value = "virtual-kubelet.io/provider")]
    pub taint_key: String,
    /// Taint value (the provider's name, `NodeProvider::version_name`, when unset).
    #[arg(long, env = "VKUBELET_TAINT_VALUE")]
    pub taint_value: Option<String>,
    /// Taint effect.
    #[arg(long, env = "VKUBELET_TAINT_EFFECT", default_value = "NoSchedule",
          value_parser = ["NoSchedule", "PreferNoSchedule", "NoExecute"])]
    pub taint_effect: String,
    /// Workers processing pods concurrently.
    #[arg(long, default_value_t = 10, value_parser = parse_workers)]
    pub pod_sync_workers: usize,
    /// API server requests per second (client-side token bucket, as the kubelet's
    /// `--kube-api-qps`); 0 for no limit.
    #[arg(long, default_value_t = 50.0, value_parser = parse_qps)]
    pub kube_api_qps: f32,
    /// API server requests admitted at once before `--kube-api-qps` applies (the kubelet's
    /// `--kube-api-burst`).
    #[arg(long, default_value_t = 100)]
    pub kube_api_burst: u32,
    /// Events published per second (the kubelet's `--event-qps`), through a client and a token
    /// bucket of their own so that they never hold status writes; 0 for no limit. Events beyond
    /// 1000 waiting are dropped, as client-go's broadcaster drops them.
    #[arg(long, default_value_t = 50.0, value_parser = parse_qps)]
    pub event_qps: f32,
    /// Events published at once before `--event-qps` applies (the kubelet's `--event-burst`).
    #[arg(long, default_value_t = 100)]
    pub event_burst: u32,
    /// Where the process's own metrics, `/healthz` and `/readyz` are served, without
    /// authentication (`host:port`, or `:port` for every address). Loopback by default: the
    /// same metrics are on the kubelet port for callers allowed `nodes/metrics`; listening on
    /// every address needs a NetworkPolicy (`deploy/base/networkpolicy.yaml`).
    #[arg(long, default_value = "127.0.0.1:10255", value_parser = crate::telemetry::parse_addr)]
    pub metrics_addr: std::net::SocketAddr,
    /// How often every workload is listed from the backend (upstream's full resync): a safety
    /// net under the changes the backend pushes (Nomad's event stream), which update pod status
    /// at once.
    #[arg(long, alias = "status-interval", default_value = "30s", value_parser = parse_period)]
    pub full_resync_period: Duration,
    /// How often the node status is checked (and written when changed).
    #[arg(long, default_value = "10s", value_parser = parse_period)]
    pub node_status_interval: Duration,
    /// What the node says while the backend does not answer: `keep-pods` keeps `Ready=True`
    /// (its pods are not evicted; `BackendUnreachable=True` and `allocatable.pods` 0 keep new
    /// pods away), `not-ready` writes `Ready=False` (pods are evicted after their
    /// `tolerationSeconds`, 300 s by default).
    #[arg(long, default_value = "keep-pods", value_parser = ["keep-pods", "not-ready"])]
    pub backend_outage: String,
    /// How often the node status is written even when unchanged.
    #[arg(long, default_value = "1m", value_parser = parse_period)]
    pub node_status_report_interval: Duration,
    /// How long the start may take (pods listed from the API server and workloads from the
    /// backend) before the process gives up with exit code 1; 0 waits forever (upstream's flag).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub startup_timeout: Duration,
    /// How long in-flight work may take to finish after SIGTERM: kubelet API answers being
    /// written get three quarters of it, followed logs and exec, attach and port-forward
    /// sessions 5 s of it at most.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Run as one of several replicas of this node: only the replica holding the leader Lease
    /// runs the node (its Lease, status, pods and kubelet API); the others stand by, `/readyz`
    /// 200, and the first to take the Lease once it is released (on SIGTERM) or expires runs
    /// it. A replica that loses the Lease exits with code 1.
    #[arg(long, default_value = "false", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub leader_elect: bool,
    /// How long a leader that stopped renewing keeps the Lease: the most a standby waits after
    /// the leader died (whole seconds, at least 3; the leader renews when a third is left).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// Name of the leader Lease; unset: `virtual-kubelet-<nodename>`.
    #[arg(long)]
    pub leader_elect_lease_name: Option<String>,
    /// Namespace of the leader Lease; unset: the ServiceAccount's namespace in a cluster
    /// (`<--service-account-dir>/namespace`), else `default`. The Lease is written with the
    /// ServiceAccount's token when one is mounted (a node identity may write no Lease but its
    /// node's), else with the process's own credentials.
    #[arg(long)]
    pub leader_elect_lease_namespace: Option<String>,
    /// How often the files of running pods' ConfigMap, Secret, downward API and projected volumes
    /// are brought up to date.
    #[arg(long, default_value = "20s", value_parser = parse_period)]
    pub volume_refresh_interval: Duration,
    /// Log level or `tracing` filter directives (`RUST_LOG` wins when set).
    #[arg(long, default_value = "info", value_parser = parse_filter)]
    pub log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Hosts a probe's `httpGet.host` or `tcpSocket.host` may name, comma-separated: addresses,
    /// networks (`10.0.0.0/8`) or DNS names. Empty (default): probes reach only the pod.
    /// Loopback, link-local, unspecified and multicast addresses are refused here and never dialled.
    #[arg(long, value_delimiter = ',', value_parser = HostPattern::parse)]
    pub allowed_probe_hosts: Vec<HostPattern>,
    /// TOML file of rules that widen what pods may choose for some Kubernetes namespaces,
    /// selected by name or label selector (see the README's "Security model").
    #[arg(long, value_hint = ValueHint::FilePath)]
    pub policy_file: Option<PathBuf>,
}

/// A secret setting (a token): its `Debug` never shows the value, so printing the settings
/// never leaks it. Declare its flag with `hide_env_values = true` so that [`load`] never shows
/// it in an error either.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Redacted {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

fn parse_workers(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("at least 1 worker is needed".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_qps(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(q) if q.is_finite() && q >= 0.0 => Ok(q),
        Ok(_) => Err("must be a number of requests per second, 0 or more".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A period that drives a loop: a duration above zero.
fn parse_period(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s).map(|_| s.to_owned()).map_err(|e| e.to_string())
}

/// `s` when `valid`, else why not: `"x" is not <what>`.
///
/// # Errors
/// `"x" is not <what>` when not `valid`.
pub fn accept(s: &str, valid: bool, what: &str) -> Result<String, String> {
    if valid { Ok(s.to_owned()) } else { Err(format!("{s:?} is not {what}")) }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not key=value"))?;
    Ok((k.to_owned(), v.to_owned()))
}

impl KubeletArgs {
    /// The node as configured; `runtime_version` and the backend's `version_name` (in
    /// `kubeletVersion`, `v1.36.3-vk-<name>-<version>`, and the taint's value unless
    /// `--taint-value` is given) come from the backend.
    ///
    /// `server_version` is the API server's (`gitVersion`): `kubeletVersion` is never newer
    /// ([`vk_domain::node::kubelet_base_version`]).
    pub fn node_config(
        &self,
        runtime_version: String,
        version_name: &str,
        server_version: Option<&str>,
    ) -> NodeConfig {
        NodeConfig {
            name: self.nodename.clone(),
            os: self.os.clone(),
            arch: self.arch_label(),
            labels: self.node_labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            role_label: self.role_label,
            taint: (!self.disable_taint).then(|| Taint {
                key: self.taint_key.clone(),
                value: Some(self.taint_value.clone().unwrap_or_else(|| version_name.to_owned())),
                effect: self.taint_effect.clone(),
                time_added: None,
            }),
            kubelet_port: self.kubelet_port,
            max_pods: self.max_pods,
            internal_ip: self.internal_ip.to_string(),
            hostname: self.nodename.clone(),
            // `<Kubernetes served>-vk-<backend>-<version>+<commit>` (semver build metadata).
            kubelet_version: format!(
                "{}-vk-{version_name}-{}+{}",
                vk_domain::node::kubelet_base_version(KUBERNETES_VERSION, server_version),
                crate::build::VERSION,
                crate::build::COMMIT
            ),
            runtime_version,
            outage: if self.backend_outage == "not-ready" {
                OutagePolicy::NotReady
            } else {
                OutagePolicy::KeepPods
            },
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

    /// The hosts probes may name: `--allowed-probe-hosts` for every namespace, widened by the
    /// policy file's `rules` (as [`load`] read them).
    pub fn probe_policy<G>(&self, rules: &[PolicyRule<G>]) -> Rules<ProbeGrant> {
        Rules {
            base: ProbeGrant { hosts: self.allowed_probe_hosts.clone() },
            rules: rules
                .iter()
                .map(|r| Rule {
                    name: r.name.clone(),
                    namespaces: r.namespaces.clone(),
                    grant: r.probes.clone(),
                })
                .collect(),
        }
    }

    /// The leader election of `--leader-elect` for node `node`: the Lease `virtual-kubelet-<node>`
    /// (or `--leader-elect-lease-name`) in `--leader-elect-lease-namespace` (or the
    /// ServiceAccount's namespace, or `default`), this replica named `<hostname>_<pid>`; `None`
    /// without `--leader-elect`.
    pub fn election(&self, node: &str) -> Option<vk_kube::election::ElectionSettings> {
        if !self.leader_elect {
            return None;
        }
        let namespace = self
            .leader_elect_lease_namespace
            .as_deref()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .or_else(|| {
                let file = self.service_account_dir.join("namespace");
                std::fs::read_to_string(file).ok().map(|n| n.trim().to_owned())
            })
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let name = self
            .leader_elect_lease_name
            .as_deref()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("virtual-kubelet-{node}"));
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "virtual-kubelet".to_owned());
        let duration =
            std::time::Duration::from_secs(self.leader_elect_lease_duration.as_secs().max(3));
        Some(vk_kube::election::ElectionSettings {
            namespace,
            name,
            identity: format!("{host}_{}", std::process::id()),
            duration,
            grace: duration / 3,
        })
    }

    /// Where the node's credentials come from and how fast it may talk to the API server.
    pub fn cluster(&self) -> vk_kube::connect::Settings {
        use vk_kube::rate::RateLimit;
        vk_kube::connect::Settings {
            kubeconfig: self.kubeconfig.clone(),
            bootstrap_kubeconfig: self.bootstrap_kubeconfig.clone(),
            service_account_dir: self.service_account_dir.clone(),
            cert_dir: self.cert_dir.clone(),
            node_name: self.nodename.clone(),
            addresses: vec![self.internal_ip],
            limit: RateLimit { qps: self.kube_api_qps, burst: self.kube_api_burst },
            event_limit: RateLimit { qps: self.event_qps, burst: self.event_burst },
        }
    }

    /// Checks across settings: the serving certificate needs its key.
    ///
    /// # Errors
    /// [`Invalid`] naming the setting given without its pair, as it was given.
    pub fn check(&self, origins: &Origins<'_>) -> Result<(), Invalid> {
        origins.check_pair(
            ("tls_cert_file", self.tls_cert_file.is_some()),
            ("tls_private_key_file", self.tls_private_key_file.is_some()),
        )
    }
}
