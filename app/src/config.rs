//! Command-line flags and environment, parsed once into typed settings. Names follow upstream
//! virtual-kubelet (`--nodename`, `--provider`, `KUBELET_PORT`, `VKUBELET_*`) and Nomad's own
//! environment (`NOMAD_ADDR`, `NOMAD_TOKEN`, ...).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Parser, ValueEnum};
use k8s_openapi::api::core::v1::Taint;
use vk_domain::node::NodeConfig;
use vk_domain::policy::{HostPattern, NamespaceSelector, ProbeGrant, Rule, Rules};
use vk_nomad::job;
use vk_nomad::policy::{NomadGrant, NomadPolicy};
use vk_nomad::{ClientConfig, ProviderConfig};

/// The Kubernetes version this kubelet speaks (the API it was built and tested against).
pub const KUBERNETES_VERSION: &str = "v1.36.3";

/// The default of `--volume-setup-image`: Docker Hub's busybox, which every Docker engine with
/// registry access can pull.
pub const DEFAULT_VOLUME_SETUP_IMAGE: &str = "busybox:1.37";

/// Backends this binary can run pods on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    /// HashiCorp Nomad.
    Nomad,
    /// Pods kept in this process's memory, Running at once (upstream's `mock`; for benchmarks and
    /// trials, see `vk_memory`).
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
///
/// Every setting is read from, in rising precedence: its default, the TOML file of `--config`
/// (provider settings in its `[nomad]` table), the TOML file of `--provider-config` (provider
/// settings at its top level), the environment, and the command line. See [`load`].
#[derive(Debug, Clone, Parser)]
#[command(name = "virtual-kubelet", version, about, args_override_self = true)]
pub struct Cli {
    /// TOML file with settings (keys as in `[file: ...]` below; provider settings in a `[nomad]`
    /// table).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// TOML file with the provider's settings at its top level (upstream virtual-kubelet's
    /// `--provider-config`); it wins over the `[nomad]` table of `--config`.
    #[arg(long)]
    pub provider_config: Option<PathBuf>,
    /// Backend that runs the pods: `nomad`, or `memory` (pods Running at once, nothing run; for
    /// demos, tests and benchmarks).
    #[arg(long, value_enum, default_value = "nomad")]
    pub provider: Provider,
    /// Name of the Node to register.
    #[arg(long, default_value = "virtual-kubelet")]
    pub nodename: String,
    /// Kubeconfig file. Without it: the in-cluster configuration when `KUBERNETES_SERVICE_HOST`
    /// is set, else `~/.kube/config`.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Where the in-cluster configuration reads the service account's `token`, `ca.crt` and
    /// `namespace` (the directory Kubernetes mounts in every pod).
    #[arg(long, default_value = "/var/run/secrets/kubernetes.io/serviceaccount")]
    pub service_account_dir: PathBuf,
    /// Kubeconfig holding a bootstrap token (the kubelet's flag): the node gets its client
    /// certificate (`system:node:<nodename>`) by a CertificateSigningRequest with it, keeps it in
    /// `--cert-dir` and renews it before it expires; the API server then knows the process as a
    /// node (the Node authorizer and NodeRestriction apply). Ignored when `--kubeconfig` is given.
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
    #[arg(long, default_value = "127.0.0.1")]
    pub internal_ip: std::net::IpAddr,
    /// Port of the kubelet API, published in the node status.
    #[arg(long, default_value_t = 10250, value_parser = clap::value_parser!(u16).range(1..))]
    pub kubelet_port: u16,
    /// Address the kubelet API listens on (its port is `--kubelet-port`).
    #[arg(long, default_value = "0.0.0.0")]
    pub kubelet_address: std::net::IpAddr,
    /// Serving certificate (PEM) of the kubelet API (the kubelet's `--tls-cert-file`). Without it,
    /// a self-signed certificate for the node's name and InternalIP is made at start.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// Key (PEM) of `--tls-cert-file`.
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA bundle (PEM) client certificates are verified against (the kubelet's
    /// `--client-ca-file`). Without it, the CA the kubeconfig trusts for the API server is used,
    /// which signs the API server's kubelet client certificate in most clusters.
    #[arg(long)]
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
    /// Maximum number of pods (capacity.pods).
    #[arg(long, default_value_t = 110, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pods: u32,
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
    #[arg(long, default_value = "virtual-kubelet.io/provider")]
    pub taint_key: String,
    /// Taint value (the provider's name when unset).
    #[arg(long)]
    pub taint_value: Option<String>,
    /// Taint effect.
    #[arg(long, default_value = "NoSchedule",
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
    /// How often the node status is written even when unchanged.
    #[arg(long, default_value = "1m", value_parser = parse_period)]
    pub node_status_report_interval: Duration,
    /// How long the start may take (pods listed from the API server and workloads from the
    /// backend) before the process gives up with exit code 1; 0 waits forever (upstream's flag).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub startup_timeout: Duration,
    /// How long in-flight work may take to finish after SIGTERM.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
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

    /// Nomad address, with or without scheme (`host:port` is taken as http).
    #[arg(long, default_value = "http://127.0.0.1:4646", value_parser = parse_nomad_addr)]
    pub nomad_addr: String,
    /// Nomad ACL token.
    #[arg(long)]
    pub nomad_token: Option<Redacted>,
    /// Nomad namespace jobs are registered in (the agent's default when unset).
    #[arg(long)]
    pub nomad_namespace: Option<String>,
    /// Nomad region (the agent's when unset).
    #[arg(long)]
    pub nomad_region: Option<String>,
    /// CA certificate (PEM) for Nomad's TLS.
    #[arg(long)]
    pub nomad_cacert: Option<PathBuf>,
    /// Client certificate (PEM) for Nomad's mutual TLS.
    #[arg(long)]
    pub nomad_client_cert: Option<PathBuf>,
    /// Client key (PEM) for Nomad's mutual TLS.
    #[arg(long)]
    pub nomad_client_key: Option<PathBuf>,
    /// Name Nomad's certificate is verified against (and sent as SNI), when it differs from the
    /// address's host.
    #[arg(long)]
    pub nomad_tls_server_name: Option<String>,
    /// Do not verify Nomad's certificate.
    #[arg(long, default_value = "false", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
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
    /// Annotation whose value chooses the task driver of one pod (read before
    /// `nomad.hashicorp.com/driver`).
    #[arg(long, default_value = "virtual-kubelet.io/nomad-driver")]
    pub driver_annotation: String,
    /// Task drivers pods of every namespace may choose by annotation besides `--nomad-driver`,
    /// comma-separated (`docker`, `raw_exec`, `exec`). Empty: none. `raw_exec` runs a pod's
    /// command on the Nomad client, unconfined, as the agent's user.
    #[arg(long, value_delimiter = ',', value_parser = parse_driver)]
    pub allowed_drivers: Vec<String>,
    /// Nomad namespaces pods may choose by annotation besides `--nomad-namespace`,
    /// comma-separated. Empty: none.
    #[arg(long, value_delimiter = ',', value_parser = parse_nomad_name)]
    pub allowed_nomad_namespaces: Vec<String>,
    /// Nomad regions pods may choose by annotation besides `--nomad-region`, comma-separated.
    /// Empty: none.
    #[arg(long, value_delimiter = ',', value_parser = parse_nomad_name)]
    pub allowed_regions: Vec<String>,
    /// Nomad node pools pods may choose by annotation, comma-separated. Empty: none (jobs go to
    /// the Nomad namespace's default pool).
    #[arg(long, value_delimiter = ',', value_parser = parse_node_pool)]
    pub allowed_node_pools: Vec<String>,
    /// Group network modes pods may choose by annotation besides `host`, comma-separated
    /// (`bridge`, `none`, `cni/<name>`). Empty: none.
    #[arg(long, value_delimiter = ',', value_parser = parse_network_mode)]
    pub allowed_network_modes: Vec<String>,
    /// Datacenters (Nomad patterns, `*` any run of characters) pods may name by annotation
    /// besides those of `--nomad-datacenters`, comma-separated. Empty: none.
    #[arg(long, value_delimiter = ',', value_parser = parse_datacenter)]
    pub allowed_datacenters: Vec<String>,
    /// The highest Nomad job priority pods may choose by annotation (1 to 100). Nomad's default,
    /// 50, keeps pods from pre-empting other Nomad work; lower priorities are always allowed.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub max_priority: u8,
    /// Directory on the Nomad clients holding `Localhost` seccomp profiles (the kubelet's
    /// `<root-dir>/seccomp`): a pod's `localhostProfile` is a path inside it.
    #[arg(long, default_value = "/var/lib/kubelet/seccomp", value_parser = parse_absolute)]
    pub seccomp_profile_root: String,
    /// Image of the task that makes a docker pod's emptyDir directories writable before its
    /// containers start (mode 0777, or owned by the pod's `fsGroup`, as the kubelet makes them):
    /// it runs `sh -c` with `mkdir`, `chgrp` and `chmod` as root, so busybox will do; the Nomad
    /// clients must be able to pull it. Empty: no such task, and Docker creates each emptyDir
    /// directory as root, mode 0755.
    #[arg(long, default_value = DEFAULT_VOLUME_SETUP_IMAGE)]
    pub volume_setup_image: String,
    /// Hosts a probe's `httpGet.host` or `tcpSocket.host` may name, comma-separated: addresses,
    /// networks (`10.0.0.0/8`) or DNS names. Empty (default): probes reach only the pod.
    /// Loopback, link-local, unspecified and multicast addresses are refused here and never dialled.
    #[arg(long, value_delimiter = ',', value_parser = HostPattern::parse)]
    pub allowed_probe_hosts: Vec<HostPattern>,
    /// TOML file of rules that widen what pods may choose for some Kubernetes namespaces,
    /// selected by name or label selector (see the README's "Security model").
    #[arg(long)]
    pub policy_file: Option<PathBuf>,
    /// The policy file's rules, read by [`load`] (not a flag).
    #[arg(skip)]
    pub policy_rules: Vec<PolicyRule>,
}

/// A rule of `--policy-file`: what the pods of the namespaces it selects may choose, besides what
/// the settings allow every namespace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyRule {
    /// Its name, shown in refusals.
    pub name: String,
    /// The namespaces it selects.
    pub namespaces: NamespaceSelector,
    /// What it allows on the Nomad side.
    pub nomad: NomadGrant,
    /// The hosts probes may name.
    pub probes: ProbeGrant,
}

/// A secret setting (the Nomad token): its `Debug` never shows the value, so printing the
/// settings never leaks it.
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

fn parse_nomad_addr(s: &str) -> Result<String, String> {
    vk_nomad::client::parse_address(s).map(|_| s.to_owned()).map_err(|e| e.to_string())
}

fn parse_prefix(s: &str) -> Result<String, String> {
    if vk_nomad::job::valid_prefix(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?}: up to 16 letters, digits, '-', '_' or '~'"))
    }
}

/// `s` when `valid`, else why not: `"x" is not <what>`.
fn accept(s: &str, valid: bool, what: &str) -> Result<String, String> {
    if valid { Ok(s.to_owned()) } else { Err(format!("{s:?} is not {what}")) }
}

fn parse_driver(s: &str) -> Result<String, String> {
    let ok = matches!(s, "docker" | "raw_exec" | "exec");
    accept(s, ok, "a task driver this node configures (docker, raw_exec, exec)")
}

fn parse_nomad_name(s: &str) -> Result<String, String> {
    let ok = job::valid_nomad_name(s);
    accept(s, ok, "a Nomad namespace or region name (letters, digits and '-')")
}

fn parse_node_pool(s: &str) -> Result<String, String> {
    accept(s, job::valid_node_pool(s), "a Nomad node pool name")
}

fn parse_network_mode(s: &str) -> Result<String, String> {
    accept(s, job::valid_network_mode(s), "a network mode (host, bridge, none, cni/<name>)")
}

fn parse_datacenter(s: &str) -> Result<String, String> {
    accept(s, job::valid_datacenter(s), "a Nomad datacenter name or pattern")
}

fn parse_absolute(s: &str) -> Result<String, String> {
    accept(s, s.starts_with('/') && !s.split('/').any(|p| p == ".."), "an absolute path")
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not key=value"))?;
    Ok((k.to_owned(), v.to_owned()))
}

/// Settings of the provider: the `[nomad]` table of `--config` and the top level of
/// `--provider-config` hold them, under their flag's name without `nomad-`.
const PROVIDER_SETTINGS: [&str; 23] = [
    "allowed_drivers",
    "allowed_nomad_namespaces",
    "allowed_regions",
    "allowed_node_pools",
    "allowed_network_modes",
    "allowed_datacenters",
    "max_priority",
    "seccomp_profile_root",
    "volume_setup_image",
    "nomad_addr",
    "nomad_token",
    "nomad_namespace",
    "nomad_region",
    "nomad_cacert",
    "nomad_client_cert",
    "nomad_client_key",
    "nomad_tls_server_name",
    "nomad_skip_verify",
    "nomad_datacenters",
    "nomad_driver",
    "nomad_max_requests",
    "job_prefix",
    "driver_annotation",
];

/// Environment variables with the names upstream virtual-kubelet and Nomad give them; every
/// other setting `s` is read from `VK_<S>` (upper case).
const ENV_NAMES: [(&str, &str); 19] = [
    ("nodename", "DEFAULT_NODE_NAME"),
    ("kubeconfig", "KUBECONFIG"),
    ("internal_ip", "VKUBELET_POD_IP"),
    ("kubelet_port", "KUBELET_PORT"),
    ("tls_cert_file", "APISERVER_CERT_LOCATION"),
    ("tls_private_key_file", "APISERVER_KEY_LOCATION"),
    ("client_ca_file", "APISERVER_CA_CERT_LOCATION"),
    ("taint_key", "VKUBELET_TAINT_KEY"),
    ("taint_value", "VKUBELET_TAINT_VALUE"),
    ("taint_effect", "VKUBELET_TAINT_EFFECT"),
    ("nomad_addr", "NOMAD_ADDR"),
    ("nomad_token", "NOMAD_TOKEN"),
    ("nomad_namespace", "NOMAD_NAMESPACE"),
    ("nomad_region", "NOMAD_REGION"),
    ("nomad_cacert", "NOMAD_CACERT"),
    ("nomad_client_cert", "NOMAD_CLIENT_CERT"),
    ("nomad_client_key", "NOMAD_CLIENT_KEY"),
    ("nomad_skip_verify", "NOMAD_SKIP_VERIFY"),
    ("nomad_tls_server_name", "NOMAD_TLS_SERVER_NAME"),
];

/// Settings read from the command line only (they say where the others are).
const FLAG_ONLY: [&str; 5] = ["config", "provider_config", "help", "version", "policy_rules"];

/// The environment variable setting `id` is read from.
pub fn env_name(id: &str) -> String {
    ENV_NAMES
        .iter()
        .find(|(k, _)| *k == id)
        .map_or_else(|| format!("VK_{}", id.to_uppercase()), |(_, e)| (*e).to_owned())
}

/// The key of setting `id` in the `--config` file: `nomad.<name>` for provider settings.
pub fn file_key(id: &str) -> String {
    if PROVIDER_SETTINGS.contains(&id) {
        format!("nomad.{}", id.strip_prefix("nomad_").unwrap_or(id))
    } else {
        id.to_owned()
    }
}

/// The process environment, or any map standing in for it (tests pass their own instead of
/// changing the process's).
#[derive(Debug, Clone, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// The process's environment (variables whose name or value is not UTF-8 are left out).
    pub fn from_process() -> Self {
        Self(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        )
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl<const N: usize> From<[(&str, &str); N]> for Env {
    fn from(vars: [(&str, &str); N]) -> Self {
        Self(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The command line.
    Flag,
    /// This environment variable.
    Env(String),
    /// The TOML file of `--config`.
    File(PathBuf),
    /// The TOML file of `--provider-config`.
    ProviderFile(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag => f.write_str("the command line"),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::File(path) | Origin::ProviderFile(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// A setting refused, named with its value and where that came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key} = {value:?} (from {origin}): {reason}")]
pub struct Invalid {
    /// The setting: its key (`nomad.addr`), flag (`--nomad-addr`) or variable (`NOMAD_ADDR`), as
    /// it was given.
    pub key: String,
    /// The value given (`<redacted>` for the Nomad token).
    pub value: String,
    /// Where it came from.
    pub origin: Origin,
    /// Why it was refused.
    pub reason: String,
}

/// Why [`load`] returned no settings.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `--help` or `--version` was asked for (the text is in the error), or a flag is unknown
    /// or malformed (clap's message names it).
    #[error(transparent)]
    Flags(#[from] clap::Error),
    /// A setting is refused.
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

impl LoadError {
    /// Exit code 78 (`EX_CONFIG` of sysexits.h) for an invalid configuration, from any source.
    pub const EXIT_CODE: u8 = 78;

    /// Prints the error (or the help or version text) and exits: 0 for `--help` and
    /// `--version`, [`LoadError::EXIT_CODE`] otherwise.
    pub fn exit(self) -> ! {
        match self {
            LoadError::Flags(e)
                if matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                ) =>
            {
                e.exit()
            }
            LoadError::Flags(e) => {
                let _ = e.print();
            }
            LoadError::Invalid(e) => eprintln!("virtual-kubelet: {e}"),
        }
        std::process::exit(i32::from(Self::EXIT_CODE))
    }
}

/// The command with its help completed: every setting says its environment variable and file key
/// (`[env: NOMAD_ADDR] [file: nomad.addr]`).
pub fn command() -> clap::Command {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let ids: Vec<String> = cmd
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .filter(|id| !FLAG_ONLY.contains(&id.as_str()))
        .collect();
    for id in ids {
        let more = format!("[env: {}] [file: {}]", env_name(&id), file_key(&id));
        cmd = cmd.mut_arg(&id, |a| {
            let help = a.get_help().map(ToString::to_string).unwrap_or_default();
            let a = a.help(format!("{help} {more}"));
            match a.get_long_help().map(ToString::to_string) {
                Some(long) => a.long_help(format!("{long}\n{more}")),
                None => a,
            }
        });
    }
    cmd
}

/// Reads the settings: defaults < `--config` < `--provider-config` < `env` < `args` (the first
/// of `args` is the program name). Every value, wherever it comes from, goes through the flag's
/// own parser, and files named by a setting must exist, so that a bad value stops the process
/// before anything starts.
///
/// # Errors
/// - [`LoadError::Flags`] for `--help`, `--version`, an unknown flag or a bad value on the command
///   line;
/// - [`LoadError::Invalid`] for a bad value from a file or the environment (naming its key or
///   variable, the value and the file), an unreadable or malformed file, an unknown key in a
///   file, a certificate without its key, or a file setting naming a file that does not exist.
pub fn load<I, T>(args: I, env: &Env) -> Result<Cli, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cmd = command();
    let matches = cmd.clone().try_get_matches_from(args)?;
    let given = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    // Layer by layer, lowest first: each value replaces the one below.
    let mut values: BTreeMap<String, (Vec<String>, Origin)> = BTreeMap::new();
    if let Some(path) = matches.get_one::<PathBuf>("config") {
        for (id, vals) in read_file(path, false)? {
            values.insert(id, (vals, Origin::File(path.clone())));
        }
    }
    if let Some(path) = matches.get_one::<PathBuf>("provider_config") {
        for (id, vals) in read_file(path, true)? {
            values.insert(id, (vals, Origin::ProviderFile(path.clone())));
        }
    }
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if FLAG_ONLY.contains(&id) {
            continue;
        }
        if given(id) {
            let raw = matches
                .get_raw(id)
                .into_iter()
                .flatten()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            values.insert(id.to_owned(), (raw, Origin::Flag));
        } else if let Some(v) = env.get(&env_name(id)) {
            let vals = if arg.get_action().takes_values()
                && matches!(arg.get_action(), clap::ArgAction::Append)
            {
                v.split(',').map(str::to_owned).collect()
            } else {
                vec![v.to_owned()]
            };
            values.insert(id.to_owned(), (vals, Origin::Env(env_name(id))));
        }
    }
    // Every value through its flag's parser, so the error names where it came from.
    let mut argv = vec!["virtual-kubelet".to_owned()];
    for (id, flag) in [("config", "--config"), ("provider_config", "--provider-config")] {
        if let Some(path) = matches.get_one::<PathBuf>(id) {
            argv.push(format!("{flag}={}", path.display()));
        }
    }
    for (id, (vals, origin)) in &values {
        let Some(arg) = cmd.get_arguments().find(|a| a.get_id() == id.as_str()) else {
            continue;
        };
        let long = arg.get_long().unwrap_or(id.as_str());
        for v in vals {
            if *origin != Origin::Flag {
                cmd.clone()
                    .try_get_matches_from(["virtual-kubelet".to_owned(), format!("--{long}={v}")])
                    .map_err(|e| invalid(id, v, origin, &clap_reason(&e)))?;
            }
            argv.push(format!("--{long}={v}"));
        }
    }
    let mut cli = Cli::try_parse_from(&argv).map_err(|e| Invalid {
        key: "(settings)".into(),
        value: argv[1..].join(" "),
        origin: Origin::Flag,
        reason: clap_reason(&e),
    })?;
    check(&cli, &values)?;
    if let Some(path) = &cli.policy_file {
        let origin = values.get("policy_file").map_or(Origin::Flag, |(_, o)| o.clone());
        cli.policy_rules = read_policy_file(path).map_err(|reason| {
            invalid("policy_file", &path.display().to_string(), &origin, &reason)
        })?;
    }
    Ok(cli)
}

/// [`load`] from the process's arguments and environment; on an error prints it and exits (0 for
/// `--help` and `--version`, 78 otherwise; see [`LoadError::exit`]). For `main` functions.
pub fn load_from_process() -> Cli {
    load(std::env::args_os(), &Env::from_process()).unwrap_or_else(|e| e.exit())
}

/// Checks across settings, and that files named by settings exist.
fn check(cli: &Cli, values: &BTreeMap<String, (Vec<String>, Origin)>) -> Result<(), Invalid> {
    let origin = |id: &str| values.get(id).map_or(Origin::Flag, |(_, o)| o.clone());
    let files = [
        ("kubeconfig", &cli.kubeconfig),
        ("tls_cert_file", &cli.tls_cert_file),
        ("tls_private_key_file", &cli.tls_private_key_file),
        ("client_ca_file", &cli.client_ca_file),
        ("nomad_cacert", &cli.nomad_cacert),
        ("nomad_client_cert", &cli.nomad_client_cert),
        ("nomad_client_key", &cli.nomad_client_key),
        ("policy_file", &cli.policy_file),
    ];
    for (id, path) in files {
        if let Some(p) = path
            && !p.is_file()
        {
            return Err(invalid(id, &p.display().to_string(), &origin(id), "no such file"));
        }
    }
    let pairs = [
        (
            "tls_cert_file",
            cli.tls_cert_file.is_some(),
            "tls_private_key_file",
            cli.tls_private_key_file.is_some(),
        ),
        (
            "nomad_client_cert",
            cli.nomad_client_cert.is_some(),
            "nomad_client_key",
            cli.nomad_client_key.is_some(),
        ),
    ];
    for (a, has_a, b, has_b) in pairs {
        if has_a != has_b {
            let (set, unset) = if has_a { (a, b) } else { (b, a) };
            let value = values.get(set).map(|(v, _)| v.join(",")).unwrap_or_default();
            return Err(invalid(
                set,
                &value,
                &origin(set),
                &format!("needs {} too", key_for(unset, &origin(set))),
            ));
        }
    }
    Ok(())
}

/// `id` as its origin names it: the flag, the variable or the file key.
fn key_for(id: &str, origin: &Origin) -> String {
    match origin {
        Origin::Flag => format!("--{}", id.replace('_', "-")),
        Origin::Env(_) => env_name(id),
        Origin::File(_) => file_key(id),
        Origin::ProviderFile(_) => file_key(id).trim_start_matches("nomad.").to_owned(),
    }
}

fn invalid(id: &str, value: &str, origin: &Origin, reason: &str) -> Invalid {
    let value = if id == "nomad_token" { "<redacted>".to_owned() } else { value.to_owned() };
    Invalid { key: key_for(id, origin), value, origin: origin.clone(), reason: reason.to_owned() }
}

/// The reason in a clap error, without its "error:" prefix and usage hints.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.render().to_string();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"))
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The settings of a TOML file as (setting, values). `provider`: the file is
/// `--provider-config`, whose top level holds the provider's settings.
fn read_file(
    path: &std::path::Path,
    provider: bool,
) -> Result<Vec<(String, Vec<String>)>, Invalid> {
    let key = if provider { "--provider-config" } else { "--config" };
    let refuse = |value: String, reason: String| Invalid {
        key: key.to_owned(),
        value,
        origin: Origin::Flag,
        reason,
    };
    let table = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml).required(true))
        .build()
        .and_then(|c| c.try_deserialize::<config::Map<String, config::Value>>())
        .map_err(|e| refuse(path.display().to_string(), e.to_string()))?;
    let mut out = Vec::new();
    let origin = if provider {
        Origin::ProviderFile(path.to_path_buf())
    } else {
        Origin::File(path.to_path_buf())
    };
    let cmd = <Cli as clap::CommandFactory>::command();
    let mut take = |file_key: String, id: String, value: config::Value| -> Result<(), Invalid> {
        let known = cmd.get_arguments().any(|a| a.get_id() == id.as_str())
            && !FLAG_ONLY.contains(&id.as_str())
            && PROVIDER_SETTINGS.contains(&id.as_str())
                == (provider || file_key.starts_with("nomad."));
        if !known {
            return Err(Invalid {
                key: file_key,
                value: value.to_string(),
                origin: origin.clone(),
                reason: "unknown setting".into(),
            });
        }
        let vals =
            strings(value).map_err(|(value, reason)| invalid(&id, &value, &origin, &reason))?;
        out.push((id, vals));
        Ok(())
    };
    for (k, v) in table {
        if provider {
            take(k.clone(), provider_id(&k), v)?;
        } else if k == "nomad" {
            let inner = v.clone().into_table().map_err(|_| Invalid {
                key: k.clone(),
                value: v.to_string(),
                origin: origin.clone(),
                reason: "must be a table of the provider's settings".into(),
            })?;
            for (k2, v2) in inner {
                take(format!("nomad.{k2}"), provider_id(&k2), v2)?;
            }
        } else {
            take(k.clone(), k, v)?;
        }
    }
    Ok(out)
}

/// The rules of a policy file (TOML, one `[[rule]]` table each):
///
/// ```toml
/// [[rule]]
/// name = "infra"                          # shown in refusals
/// namespaces = ["infra"]                  # Kubernetes namespaces by name, and/or
/// selector = { matchLabels = { "example.com/trust" = "high" } }   # a metav1.LabelSelector
/// allowed_drivers = ["raw_exec"]          # every key of a flag `--allowed-*`, and max_priority
/// max_priority = 80
/// ```
///
/// # Errors
/// A message naming the rule and the key: unreadable or malformed file, an unknown key, a rule
/// without a name or selecting nothing, a value its flag would refuse.
fn read_policy_file(path: &std::path::Path) -> Result<Vec<PolicyRule>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        rule: Vec<RawRule>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawRule {
        name: String,
        #[serde(default)]
        namespaces: Vec<String>,
        selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
        #[serde(default)]
        allowed_drivers: Vec<String>,
        #[serde(default)]
        allowed_nomad_namespaces: Vec<String>,
        #[serde(default)]
        allowed_regions: Vec<String>,
        #[serde(default)]
        allowed_node_pools: Vec<String>,
        #[serde(default)]
        allowed_network_modes: Vec<String>,
        #[serde(default)]
        allowed_datacenters: Vec<String>,
        max_priority: Option<u8>,
        #[serde(default)]
        allowed_probe_hosts: Vec<String>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let file: File = toml::from_str(&text).map_err(|e| e.to_string())?;
    let mut names = std::collections::BTreeSet::new();
    file.rule
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let at = |key: &str| format!("rule {} ({:?}): {key}", i + 1, r.name);
            if r.name.trim().is_empty() {
                return Err(format!("rule {}: name is empty", i + 1));
            }
            if !names.insert(r.name.clone()) {
                return Err(format!("{}: a rule of that name comes earlier", at("name")));
            }
            let each = |key: &str,
                        vals: &[String],
                        parse: fn(&str) -> Result<String, String>|
             -> Result<Vec<String>, String> {
                vals.iter().map(|v| parse(v).map_err(|e| format!("{}: {e}", at(key)))).collect()
            };
            let namespaces = NamespaceSelector {
                names: r.namespaces.iter().cloned().collect(),
                labels: r.selector.clone(),
            };
            namespaces.check().map_err(|e| format!("{}: {e}", at("namespaces, selector")))?;
            if let Some(p) = r.max_priority.filter(|p| !(1..=100).contains(p)) {
                return Err(format!("{}: {p} is not a priority (1 to 100)", at("max_priority")));
            }
            Ok(PolicyRule {
                name: r.name.clone(),
                namespaces,
                nomad: NomadGrant {
                    drivers: each("allowed_drivers", &r.allowed_drivers, parse_driver)?,
                    namespaces: each(
                        "allowed_nomad_namespaces",
                        &r.allowed_nomad_namespaces,
                        parse_nomad_name,
                    )?,
                    regions: each("allowed_regions", &r.allowed_regions, parse_nomad_name)?,
                    node_pools: each("allowed_node_pools", &r.allowed_node_pools, parse_node_pool)?,
                    network_modes: each(
                        "allowed_network_modes",
                        &r.allowed_network_modes,
                        parse_network_mode,
                    )?,
                    datacenters: each(
                        "allowed_datacenters",
                        &r.allowed_datacenters,
                        parse_datacenter,
                    )?,
                    max_priority: r.max_priority,
                },
                probes: ProbeGrant {
                    hosts: r
                        .allowed_probe_hosts
                        .iter()
                        .map(|h| {
                            HostPattern::parse(h)
                                .map_err(|e| format!("{}: {e}", at("allowed_probe_hosts")))
                        })
                        .collect::<Result<_, _>>()?,
                },
            })
        })
        .collect()
}

/// The setting a provider key names (`addr` -> `nomad_addr`, `job_prefix` -> `job_prefix`).
fn provider_id(key: &str) -> String {
    if PROVIDER_SETTINGS.contains(&key) { key.to_owned() } else { format!("nomad_{key}") }
}

/// A TOML value as the strings a flag would take: scalars as they read, arrays one value per
/// element, a table as `key=value` pairs (node labels).
fn strings(value: config::Value) -> Result<Vec<String>, (String, String)> {
    use config::ValueKind;
    let shown = value.to_string();
    match value.kind {
        ValueKind::Array(items) => items
            .into_iter()
            .map(|v| match v.kind {
                ValueKind::Array(_) | ValueKind::Table(_) | ValueKind::Nil => {
                    Err((shown.clone(), "must be a list of strings".to_owned()))
                }
                _ => Ok(v.to_string()),
            })
            .collect(),
        ValueKind::Table(t) => t
            .into_iter()
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .map(|(k, v)| match v.kind {
                ValueKind::Array(_) | ValueKind::Table(_) | ValueKind::Nil => {
                    Err((shown.clone(), "must be a table of key = \"value\"".to_owned()))
                }
                _ => Ok(format!("{k}={v}")),
            })
            .collect(),
        ValueKind::Nil => Err((shown, "has no value".into())),
        _ => Ok(vec![shown]),
    }
}

impl Cli {
    /// The node as configured; `runtime_version` and the backend's `version_name` (in
    /// `kubeletVersion`, `v1.36.3-vk-<name>-<version>`) come from the backend.
    pub fn node_config(&self, runtime_version: String, version_name: &str) -> NodeConfig {
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
            internal_ip: self.internal_ip.to_string(),
            hostname: self.nodename.clone(),
            kubelet_version: format!(
                "{KUBERNETES_VERSION}-vk-{version_name}-{}",
                env!("CARGO_PKG_VERSION")
            ),
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
                token: self.nomad_token.clone().map(|t| t.0),
                namespace: self.nomad_namespace.clone(),
                region: self.nomad_region.clone(),
                ca_cert: self.nomad_cacert.clone(),
                client_cert: self.nomad_client_cert.clone(),
                client_key: self.nomad_client_key.clone(),
                skip_verify: self.nomad_skip_verify,
                tls_server_name: self.nomad_tls_server_name.clone(),
                max_concurrent_requests: self.nomad_max_requests,
                ..ClientConfig::default()
            },
            node_name: self.nodename.clone(),
            job_prefix: self.job_prefix.clone(),
            datacenters: self.nomad_datacenters.clone(),
            default_driver: self.nomad_driver.clone(),
            driver_annotation: self.driver_annotation.clone(),
            policy: self.nomad_policy(),
            seccomp_profile_root: self.seccomp_profile_root.clone(),
            volume_setup_image: Some(self.volume_setup_image.clone()).filter(|i| !i.is_empty()),
        }
    }

    /// What pods may choose on the Nomad side: the `--allowed-*` settings and `--max-priority`
    /// for every namespace, widened by the policy file's rules.
    pub fn nomad_policy(&self) -> NomadPolicy {
        Rules {
            base: NomadGrant {
                drivers: self.allowed_drivers.clone(),
                namespaces: self.allowed_nomad_namespaces.clone(),
                regions: self.allowed_regions.clone(),
                node_pools: self.allowed_node_pools.clone(),
                network_modes: self.allowed_network_modes.clone(),
                datacenters: self.allowed_datacenters.clone(),
                max_priority: Some(self.max_priority),
            },
            rules: self
                .policy_rules
                .iter()
                .map(|r| Rule {
                    name: r.name.clone(),
                    namespaces: r.namespaces.clone(),
                    grant: r.nomad.clone(),
                })
                .collect(),
        }
    }

    /// The hosts probes may name: `--allowed-probe-hosts` for every namespace, widened by the
    /// policy file's rules.
    pub fn probe_policy(&self) -> Rules<ProbeGrant> {
        Rules {
            base: ProbeGrant { hosts: self.allowed_probe_hosts.clone() },
            rules: self
                .policy_rules
                .iter()
                .map(|r| Rule {
                    name: r.name.clone(),
                    namespaces: r.namespaces.clone(),
                    grant: r.probes.clone(),
                })
                .collect(),
        }
    }

    /// Whether pods' namespace labels must be read: some policy-file rule selects by label.
    pub fn policy_uses_labels(&self) -> bool {
        self.policy_rules.iter().any(|r| r.namespaces.labels.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with(args: &[&str], env: &Env) -> Result<Cli, LoadError> {
        load(std::iter::once("virtual-kubelet").chain(args.iter().copied()), env)
    }

    fn ok(args: &[&str], env: &Env) -> Cli {
        match load_with(args, env) {
            Ok(cli) => cli,
            Err(e) => panic!("{e}"),
        }
    }

    fn refused(args: &[&str], env: &Env) -> Invalid {
        match load_with(args, env) {
            Err(LoadError::Invalid(e)) => e,
            Err(LoadError::Flags(e)) => panic!("a flag error instead: {e}"),
            Ok(cli) => panic!("accepted: {cli:?}"),
        }
    }

    /// A TOML file in a directory kept as long as the returned guard.
    fn toml(text: &str) -> (tempfile::TempDir, PathBuf, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vk.toml");
        std::fs::write(&path, text).unwrap();
        let shown = path.display().to_string();
        (dir, path, shown)
    }

    #[test]
    fn defaults_follow_upstream() {
        let cli = ok(&[], &Env::default());
        assert_eq!(cli.provider, Provider::Nomad);
        assert_eq!(cli.nodename, "virtual-kubelet");
        assert_eq!(cli.metrics_addr, "127.0.0.1:10255".parse().unwrap());
        assert_eq!(cli.full_resync_period, Duration::from_secs(30));
        assert_eq!(cli.startup_timeout, Duration::ZERO);
        let node = cli.node_config("nomad://1.11.3".into(), "nomad");
        let taint = node.taint.unwrap();
        assert_eq!(
            (taint.key.as_str(), taint.value.as_deref(), taint.effect.as_str()),
            ("virtual-kubelet.io/provider", Some("nomad"), "NoSchedule")
        );
        assert_eq!(node.kubelet_port, 10250);
        assert!(node.kubelet_version.starts_with("v1.36.3-vk-nomad-"));
        let nomad = cli.nomad();
        assert_eq!(nomad.job_prefix, "k8s-");
        assert_eq!(nomad.client.address, "http://127.0.0.1:4646");
        assert_eq!(nomad.datacenters, ["*"]);
    }

    #[test]
    fn flags_and_upstream_aliases() {
        let cli = ok(
            &[
                "--disable-taint",
                "--node-label",
                "a=b",
                "--node-label=c=d",
                "--role-label",
                "--status-interval",
                "5s",
                "--nomad-datacenters",
                "dc1,dc2",
            ],
            &Env::default(),
        );
        let node = cli.node_config(String::new(), "nomad");
        assert!(node.taint.is_none());
        assert_eq!((node.labels["a"].as_str(), node.labels["c"].as_str()), ("b", "d"));
        assert!(node.role_label);
        assert_eq!(cli.full_resync_period, Duration::from_secs(5));
        assert_eq!(cli.nomad_datacenters, ["dc1", "dc2"]);
    }

    #[test]
    fn every_upstream_and_nomad_variable_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, "x").unwrap();
            p.display().to_string()
        };
        let (kc, cert, key, ca, ncert, nkey, nca) = (
            file("kc"),
            file("cert"),
            file("key"),
            file("ca"),
            file("ncert"),
            file("nkey"),
            file("nca"),
        );
        let env = Env::from([
            ("DEFAULT_NODE_NAME", "vk-env"),
            ("KUBECONFIG", kc.as_str()),
            ("VKUBELET_POD_IP", "10.1.2.3"),
            ("KUBELET_PORT", "11250"),
            ("APISERVER_CERT_LOCATION", cert.as_str()),
            ("APISERVER_KEY_LOCATION", key.as_str()),
            ("APISERVER_CA_CERT_LOCATION", ca.as_str()),
            ("VKUBELET_TAINT_KEY", "example.com/nomad"),
            ("VKUBELET_TAINT_VALUE", "yes"),
            ("VKUBELET_TAINT_EFFECT", "NoExecute"),
            ("NOMAD_ADDR", "nomad.example:4646"),
            ("NOMAD_TOKEN", "s3cr3t"),
            ("NOMAD_NAMESPACE", "apps"),
            ("NOMAD_REGION", "eu"),
            ("NOMAD_CACERT", nca.as_str()),
            ("NOMAD_CLIENT_CERT", ncert.as_str()),
            ("NOMAD_CLIENT_KEY", nkey.as_str()),
            ("NOMAD_SKIP_VERIFY", "1"),
            ("NOMAD_TLS_SERVER_NAME", "server.eu.nomad"),
        ]);
        let cli = ok(&[], &env);
        assert_eq!(cli.nodename, "vk-env");
        assert_eq!(cli.kubeconfig.as_deref(), Some(std::path::Path::new(&kc)));
        assert_eq!(cli.internal_ip.to_string(), "10.1.2.3");
        assert_eq!(cli.kubelet_port, 11250);
        assert_eq!(cli.tls_cert_file.as_deref(), Some(std::path::Path::new(&cert)));
        assert_eq!(cli.tls_private_key_file.as_deref(), Some(std::path::Path::new(&key)));
        assert_eq!(cli.client_ca_file.as_deref(), Some(std::path::Path::new(&ca)));
        let taint = cli.node_config(String::new(), "nomad").taint.unwrap();
        assert_eq!(
            (taint.key.as_str(), taint.value.as_deref(), taint.effect.as_str()),
            ("example.com/nomad", Some("yes"), "NoExecute")
        );
        let nomad = cli.nomad().client;
        assert_eq!(nomad.address, "nomad.example:4646");
        assert_eq!(nomad.token.as_deref(), Some("s3cr3t"));
        assert_eq!(nomad.namespace.as_deref(), Some("apps"));
        assert_eq!(nomad.region.as_deref(), Some("eu"));
        assert_eq!(nomad.ca_cert.as_deref(), Some(std::path::Path::new(&nca)));
        assert_eq!(nomad.client_cert.as_deref(), Some(std::path::Path::new(&ncert)));
        assert_eq!(nomad.client_key.as_deref(), Some(std::path::Path::new(&nkey)));
        assert!(nomad.skip_verify);
        assert_eq!(nomad.tls_server_name.as_deref(), Some("server.eu.nomad"));
        // The token never shows in the settings' Debug.
        assert!(!format!("{cli:?}").contains("s3cr3t"));
    }

    #[test]
    fn other_settings_have_vk_variables() {
        let env = Env::from([
            ("VK_POD_SYNC_WORKERS", "3"),
            ("VK_NOMAD_DATACENTERS", "dc1,dc2"),
            ("VK_NODE_LABELS", "a=b,c=d"),
            ("VK_PROVIDER", "nomad"),
            ("VK_DISABLE_TAINT", "true"),
            ("VK_FULL_RESYNC_PERIOD", "2m"),
            ("VK_METRICS_ADDR", ":9100"),
        ]);
        let cli = ok(&[], &env);
        assert_eq!(cli.pod_sync_workers, 3);
        assert_eq!(cli.nomad_datacenters, ["dc1", "dc2"]);
        assert_eq!(cli.node_labels, [("a".into(), "b".into()), ("c".into(), "d".into())]);
        assert!(cli.disable_taint);
        assert_eq!(cli.full_resync_period, Duration::from_secs(120));
        assert_eq!(cli.metrics_addr.port(), 9100);
    }

    #[test]
    fn layers_in_order_defaults_file_provider_file_env_flags() {
        let (_d1, config, config_s) = toml(
            r#"
            nodename = "from-file"
            kubelet_port = 1111
            max_pods = 20
            pod_sync_workers = 4
            disable_taint = true
            node_labels = { tier = "edge", zone = "a" }
            [nomad]
            addr = "http://file:4646"
            driver = "exec"
            datacenters = ["dc1", "dc2"]
            region = "file-region"
            "#,
        );
        let (_d2, provider, provider_s) = toml(
            r#"
            addr = "http://provider-file:4646"
            region = "provider-region"
            job_prefix = "pf-"
            "#,
        );
        let env = Env::from([
            ("KUBELET_PORT", "2222"),
            ("VK_MAX_PODS", "30"),
            ("NOMAD_REGION", "env-region"),
        ]);
        let cli = ok(
            &["--config", &config_s, "--provider-config", &provider_s, "--kubelet-port", "3333"],
            &env,
        );
        assert_eq!(cli.config.as_deref(), Some(config.as_path()));
        assert_eq!(cli.provider_config.as_deref(), Some(provider.as_path()));
        assert_eq!(cli.nodename, "from-file", "file over default");
        assert_eq!(cli.pod_sync_workers, 4, "file over default");
        assert!(cli.disable_taint, "file over default");
        assert_eq!(cli.max_pods, 30, "environment over file");
        assert_eq!(cli.kubelet_port, 3333, "flag over environment over file");
        assert_eq!(cli.node_labels, [("tier".into(), "edge".into()), ("zone".into(), "a".into())]);
        let nomad = cli.nomad();
        assert_eq!(nomad.client.address, "http://provider-file:4646", "provider file over [nomad]");
        assert_eq!(nomad.client.region.as_deref(), Some("env-region"), "environment over files");
        assert_eq!(nomad.default_driver, "exec");
        assert_eq!(nomad.datacenters, ["dc1", "dc2"]);
        assert_eq!(nomad.job_prefix, "pf-");
        // A flag turns a file's true back to false.
        let cli = ok(&["--config", &config_s, "--disable-taint=false"], &Env::default());
        assert!(!cli.disable_taint);
    }

    #[test]
    fn every_invalid_value_is_named_with_its_origin() {
        let env = |k: &str, v: &str| Env::from([(k, v)]);
        let e = |k: &str| Origin::Env(k.to_owned());
        for (vars, key, value, reason) in [
            (env("KUBELET_PORT", "abc"), "KUBELET_PORT", "abc", "invalid digit"),
            (env("KUBELET_PORT", "0"), "KUBELET_PORT", "0", "not in 1..=65535"),
            (env("VK_POD_SYNC_WORKERS", "0"), "VK_POD_SYNC_WORKERS", "0", "at least 1"),
            (env("VK_MAX_PODS", "-1"), "VK_MAX_PODS", "-1", "not in 1.."),
            (
                env("VKUBELET_TAINT_EFFECT", "Sometimes"),
                "VKUBELET_TAINT_EFFECT",
                "Sometimes",
                "possible values",
            ),
            (env("VK_PROVIDER", "docker"), "VK_PROVIDER", "docker", "possible values"),
            (env("VK_FULL_RESYNC_PERIOD", "0s"), "VK_FULL_RESYNC_PERIOD", "0s", "longer than 0"),
            (env("VK_SHUTDOWN_GRACE", "soon"), "VK_SHUTDOWN_GRACE", "soon", "expected number"),
            (env("VK_LOG_LEVEL", "info,a=[b"), "VK_LOG_LEVEL", "info,a=[b", "invalid"),
            (env("VK_LOG_FORMAT", "xml"), "VK_LOG_FORMAT", "xml", "possible values"),
            (env("VKUBELET_POD_IP", "node-1"), "VKUBELET_POD_IP", "node-1", "invalid IP address"),
            (env("VK_METRICS_ADDR", "10255"), "VK_METRICS_ADDR", "10255", "not host:port"),
            (env("VK_KUBELET_ADDRESS", "any"), "VK_KUBELET_ADDRESS", "any", "invalid IP address"),
            (env("VK_JOB_PREFIX", "a.b"), "VK_JOB_PREFIX", "a.b", "up to 16"),
            (env("VK_KUBE_API_QPS", "NaN"), "VK_KUBE_API_QPS", "NaN", "0 or more"),
            (env("VK_KUBE_API_BURST", "lots"), "VK_KUBE_API_BURST", "lots", "invalid digit"),
            (env("VK_NODE_LABELS", "a=b,c"), "VK_NODE_LABELS", "c", "not key=value"),
            (
                env("NOMAD_ADDR", "unix:///run/nomad.sock"),
                "NOMAD_ADDR",
                "unix:///run/nomad.sock",
                "http or https",
            ),
            (env("NOMAD_SKIP_VERIFY", "maybe"), "NOMAD_SKIP_VERIFY", "maybe", "invalid value"),
            (env("VK_NOMAD_MAX_REQUESTS", "-2"), "VK_NOMAD_MAX_REQUESTS", "-2", "invalid digit"),
            (
                env("KUBECONFIG", "/nonexistent/kubeconfig"),
                "KUBECONFIG",
                "/nonexistent/kubeconfig",
                "no such file",
            ),
            (
                env("APISERVER_CA_CERT_LOCATION", "/nonexistent/ca"),
                "APISERVER_CA_CERT_LOCATION",
                "/nonexistent/ca",
                "no such file",
            ),
            (
                env("NOMAD_CACERT", "/nonexistent/ca"),
                "NOMAD_CACERT",
                "/nonexistent/ca",
                "no such file",
            ),
        ] {
            let got = refused(&[], &vars);
            assert_eq!(
                (got.key.as_str(), got.value.as_str(), &got.origin),
                (key, value, &e(key)),
                "{got}"
            );
            assert!(got.reason.contains(reason), "{key}: {got}");
            assert!(got.to_string().contains(key) && got.to_string().contains(value), "{got}");
        }
    }

    #[test]
    fn a_certificate_needs_its_key() {
        let (_d, cert, cert_s) = toml("not read");
        let got = refused(&[], &Env::from([("APISERVER_CERT_LOCATION", cert_s.as_str())]));
        assert_eq!(got.key, "APISERVER_CERT_LOCATION");
        assert_eq!(got.value, cert.display().to_string());
        assert!(got.reason.contains("needs APISERVER_KEY_LOCATION"), "{got}");
        let got = refused(&["--nomad-client-key", &cert_s], &Env::default());
        assert_eq!(got.key, "--nomad-client-key");
        assert!(got.reason.contains("needs --nomad-client-cert"), "{got}");
    }

    #[test]
    fn bad_files_are_named() {
        // A value of the wrong kind, in each file.
        let (_d, _p, config) = toml("kubelet_port = 70000\n");
        let got = refused(&["--config", &config], &Env::default());
        assert_eq!((got.key.as_str(), got.value.as_str()), ("kubelet_port", "70000"), "{got}");
        assert!(
            matches!(got.origin, Origin::File(_)) && got.to_string().contains(&config),
            "{got}"
        );
        let (_d, _p, config) = toml("[nomad]\naddr = \"unix:///x\"\n");
        let got = refused(&["--config", &config], &Env::default());
        assert_eq!((got.key.as_str(), got.value.as_str()), ("nomad.addr", "unix:///x"), "{got}");
        let (_d, _p, provider) = toml("max_requests = \"many\"\n");
        let got = refused(&["--provider-config", &provider], &Env::default());
        assert_eq!((got.key.as_str(), got.value.as_str()), ("max_requests", "many"), "{got}");
        assert!(matches!(got.origin, Origin::ProviderFile(_)), "{got}");
        // Unknown keys, at each level.
        for (text, key) in [
            ("nodenam = \"x\"\n", "nodenam"),
            ("[nomad]\nadress = \"x\"\n", "nomad.adress"),
            ("addr = \"x\"\n", "addr"),
            ("config = \"other.toml\"\n", "config"),
        ] {
            let (_d, _p, config) = toml(text);
            let got = refused(&["--config", &config], &Env::default());
            assert_eq!((got.key.as_str(), got.reason.as_str()), (key, "unknown setting"), "{got}");
        }
        let (_d, _p, provider) = toml("nodename = \"x\"\n");
        let got = refused(&["--provider-config", &provider], &Env::default());
        assert_eq!((got.key.as_str(), got.reason.as_str()), ("nodename", "unknown setting"));
        // Shapes a setting cannot take.
        let (_d, _p, config) = toml("nomad = 3\n");
        let got = refused(&["--config", &config], &Env::default());
        assert_eq!(got.key, "nomad");
        let (_d, _p, config) = toml("node_labels = { a = { b = \"c\" } }\n");
        let got = refused(&["--config", &config], &Env::default());
        assert_eq!(got.key, "node_labels");
        assert!(got.reason.contains("key = \"value\""), "{got}");
        // The token is never shown, even refused.
        let (_d, _p, config) = toml("[nomad]\ntoken = [\"s3cr3t\", [1]]\n");
        let got = refused(&["--config", &config], &Env::default());
        assert_eq!((got.key.as_str(), got.value.as_str()), ("nomad.token", "<redacted>"));
        // Not TOML, and no file at all.
        let (_d, _p, config) = toml("nodename = \n");
        let got = refused(&["--config", &config], &Env::default());
        assert_eq!((got.key.as_str(), got.value.as_str()), ("--config", config.as_str()));
        let got = refused(&["--config", "/nonexistent/vk.toml"], &Env::default());
        assert_eq!((got.key.as_str(), got.value.as_str()), ("--config", "/nonexistent/vk.toml"));
    }

    #[test]
    fn bad_flags_are_clap_errors_naming_the_flag() {
        for (args, flag) in [
            (&["--provider", "docker"][..], "--provider"),
            (&["--taint-effect", "Sometimes"][..], "--taint-effect"),
            (&["--node-label", "novalue"][..], "--node-label"),
            (&["--full-resync-period", "soon"][..], "--full-resync-period"),
            (&["--pod-sync-workers", "0"][..], "--pod-sync-workers"),
            (&["--no-such-flag"][..], "--no-such-flag"),
        ] {
            match load_with(args, &Env::default()) {
                Err(LoadError::Flags(e)) => {
                    assert!(e.to_string().contains(flag), "{flag}: {e}");
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }

    /// The policy's settings: a fresh install allows nothing; each flag, variable and file key
    /// widens the base grant; bad values are refused naming where they came from.
    #[test]
    fn policy_settings_start_closed_and_are_checked() {
        let none = ok(&[], &Env::default());
        let p = none.nomad_policy();
        assert_eq!(p.base, NomadGrant { max_priority: Some(50), ..NomadGrant::default() });
        assert!(p.rules.is_empty() && none.probe_policy().base.hosts.is_empty());
        assert!(!none.policy_uses_labels());
        assert_eq!(none.seccomp_profile_root, "/var/lib/kubelet/seccomp");
        let (_d, path, _) = toml("[nomad]\nallowed_drivers = [\"exec\"]\nmax_priority = 70\n");
        let env = Env::from([
            ("VK_ALLOWED_NODE_POOLS", "gpu,spot"),
            ("VK_ALLOWED_PROBE_HOSTS", "10.0.0.0/8,db.internal"),
        ]);
        let cli =
            ok(&["--config", path.to_str().unwrap(), "--allowed-network-modes", "bridge"], &env);
        let g = cli.nomad_policy().base;
        assert_eq!(g.drivers, ["exec"]);
        assert_eq!(g.max_priority, Some(70));
        assert_eq!(g.node_pools, ["gpu", "spot"]);
        assert_eq!(g.network_modes, ["bridge"]);
        assert_eq!(cli.probe_policy().base.hosts.len(), 2);
        for (flag, value, reason) in [
            ("--allowed-drivers", "qemu", "not a task driver"),
            ("--allowed-nomad-namespaces", "a/b", "not a Nomad namespace"),
            ("--allowed-node-pools", "pool one", "not a Nomad node pool"),
            ("--allowed-network-modes", "overlay", "not a network mode"),
            ("--allowed-datacenters", "dc 1", "not a Nomad datacenter"),
            ("--max-priority", "101", "101"),
            ("--allowed-probe-hosts", "169.254.169.254", "never probed"),
            ("--allowed-probe-hosts", "127.0.0.0/8", "never probed"),
            ("--seccomp-profile-root", "profiles", "not an absolute path"),
        ] {
            let env = Env::from([(env_name(&flag[2..].replace('-', "_")).as_str(), value)]);
            let e = refused(&[], &env);
            assert!(e.reason.contains(reason), "{flag}={value}: {e}");
        }
    }

    #[test]
    fn the_policy_file_holds_rules_by_name_and_label() {
        let (_d, path, shown) = toml(
            r#"
[[rule]]
name = "infra"
namespaces = ["infra", "ops"]
allowed_drivers = ["raw_exec"]
allowed_probe_hosts = ["10.1.0.0/16"]

[[rule]]
name = "trusted"
selector = { matchLabels = { "example.com/trust" = "high" }, matchExpressions = [{ key = "tier", operator = "In", values = ["a"] }] }
allowed_nomad_namespaces = ["trusted"]
max_priority = 80
"#,
        );
        let cli = ok(&["--policy-file", &shown], &Env::default());
        assert!(cli.policy_uses_labels());
        let p = cli.nomad_policy();
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.rules[0].grant.drivers, ["raw_exec"]);
        assert_eq!(p.rules[1].grant.max_priority, Some(80));
        let labels: BTreeMap<String, String> = [
            ("example.com/trust".to_owned(), "high".to_owned()),
            ("tier".to_owned(), "a".to_owned()),
        ]
        .into();
        let applicable = p.for_namespace("web", Some(&labels));
        assert_eq!(applicable.rules, ["trusted"]);
        assert_eq!(p.for_namespace("ops", None).rules, ["infra"]);
        assert_eq!(cli.probe_policy().for_namespace("infra", None).grants.len(), 2);
        drop(path);
        for (text, reason) in [
            (
                "[[rule]]\nname = \"x\"\nallowed_drivers = [\"docker\"]\n",
                "namespace names or a label selector",
            ),
            (
                "[[rule]]\nname = \"x\"\nnamespaces = [\"a\"]\nallowed_drivers = [\"qemu\"]\n",
                "rule 1 (\"x\"): allowed_drivers: \"qemu\"",
            ),
            ("[[rule]]\nname = \"x\"\nnamespaces = [\"a\"]\nmax_priority = 0\n", "max_priority: 0"),
            (
                "[[rule]]\nname = \"x\"\nnamespaces = [\"a\"]\nallowed_probe_hosts = [\"localhost\"]\n",
                "allowed_probe_hosts",
            ),
            ("[[rule]]\nname = \"x\"\nselector = {}\n", "every namespace"),
            (
                "[[rule]]\nname = \"x\"\nselector = { matchExpressions = [{ key = \"a\", operator = \"Gt\", values = [\"1\"] }] }\n",
                "not a selector operator",
            ),
            (
                "[[rule]]\nname = \"x\"\nnamespaces = [\"a\"]\nallowed_drivrs = [\"exec\"]\n",
                "unknown field",
            ),
            (
                "[[rule]]\nname = \"x\"\nnamespaces = [\"a\"]\n[[rule]]\nname = \"x\"\nnamespaces = [\"b\"]\n",
                "comes earlier",
            ),
            ("rule = 3\n", "invalid type"),
        ] {
            let (_d, _path, shown) = toml(text);
            let e = refused(&["--policy-file", &shown], &Env::default());
            assert_eq!((e.key.as_str(), e.value.as_str()), ("--policy-file", shown.as_str()));
            assert!(e.reason.contains(reason), "{text}: {e}");
        }
        let missing = refused(&["--policy-file", "/nonexistent/policy.toml"], &Env::default());
        assert!(missing.reason.contains("no such file"), "{missing}");
    }

    /// Every setting, its default and its environment variable, in `--help` and in the README's
    /// table (so neither can fall behind the code).
    #[test]
    fn help_and_readme_list_every_setting() {
        let help = command().render_long_help().to_string();
        let readme = include_str!("../../README.md");
        for arg in command().get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let long = format!("--{}", arg.get_long().unwrap_or(id));
            assert!(help.contains(&long), "{long} missing from --help");
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{long}`")))
                .unwrap_or_else(|| panic!("no README configuration row starts with `{long}`"));
            if !FLAG_ONLY.contains(&id) {
                let env = env_name(id);
                assert!(help.contains(&format!("[env: {env}]")), "{env} missing from --help");
                assert!(row.contains(&format!("`{env}`")), "README row of {long} lacks `{env}`");
                assert!(
                    row.contains(&format!("`{}`", file_key(id))),
                    "README row of {long} lacks its file key"
                );
            }
            for default in arg.get_default_values() {
                let d = default.to_string_lossy();
                if id != "arch" {
                    assert!(
                        row.contains(&format!("`{d}`")),
                        "README row of {long} lacks its default `{d}`"
                    );
                }
            }
        }
    }
}
