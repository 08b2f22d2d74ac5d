//! Nomad's settings: the `--nomad-*` flags and the policy settings of what pods may choose on
//! the Nomad side (`[nomad]` of `--config`, the top level of `--provider-config`), their value
//! parsers (the checks of `vk_nomad::job`), the Nomad keys of a policy-file rule, and the
//! conversion into `vk_nomad`'s [`ProviderConfig`]. Environment names follow Nomad's own
//! (`NOMAD_ADDR`, `NOMAD_TOKEN`, ...).

use std::path::PathBuf;

use clap::ValueHint;
use clap::builder::BoolishValueParser;
use vk_app::config::{Invalid, Origins, PolicyRule, Redacted, RuleGrant, accept};
use vk_domain::policy::{Rule, Rules};
use vk_nomad::job;
use vk_nomad::policy::{NomadGrant, NomadPolicy};
use vk_nomad::{ClientConfig, ProviderConfig};

/// The default of `--volume-setup-image`: Docker Hub's busybox, which every Docker engine with
/// registry access can pull.
pub(crate) const DEFAULT_VOLUME_SETUP_IMAGE: &str = "busybox:1.37";

/// The Nomad provider's settings: the clap group `nomad`, which is also their table in the
/// `--config` file (`Settings::PROVIDER_TABLE`); `nomad_addr` is `nomad.addr` there.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "nomad")]
pub(crate) struct NomadArgs {
    /// Nomad address, with or without scheme (`host:port` is taken as http); several, separated
    /// by commas (the servers of one cluster, or client agents), are tried in turn: a request
    /// that cannot connect to one goes to the next, which later requests keep using.
    #[arg(long, env = "NOMAD_ADDR", default_value = "http://127.0.0.1:4646",
          value_parser = parse_nomad_addr)]
    pub(crate) nomad_addr: String,
    /// Nomad ACL token.
    #[arg(long, env = "NOMAD_TOKEN", hide_env_values = true)]
    pub(crate) nomad_token: Option<Redacted>,
    /// Nomad namespace jobs are registered in (the agent's default when unset).
    #[arg(long, env = "NOMAD_NAMESPACE")]
    pub(crate) nomad_namespace: Option<String>,
    /// Nomad region (the agent's when unset).
    #[arg(long, env = "NOMAD_REGION")]
    pub(crate) nomad_region: Option<String>,
    /// CA certificate (PEM) for Nomad's TLS.
    #[arg(long, env = "NOMAD_CACERT", value_hint = ValueHint::FilePath)]
    pub(crate) nomad_cacert: Option<PathBuf>,
    /// Directory of CA certificates (PEM files) for Nomad's TLS.
    #[arg(long, env = "NOMAD_CAPATH", value_hint = ValueHint::DirPath)]
    pub(crate) nomad_capath: Option<PathBuf>,
    /// HTTP basic authentication for every request to Nomad, `user` or `user:password` (for a
    /// proxy in front of Nomad).
    #[arg(long, env = "NOMAD_HTTP_AUTH", hide_env_values = true)]
    pub(crate) nomad_http_auth: Option<Redacted>,
    /// Client certificate (PEM) for Nomad's mutual TLS.
    #[arg(long, env = "NOMAD_CLIENT_CERT", value_hint = ValueHint::FilePath)]
    pub(crate) nomad_client_cert: Option<PathBuf>,
    /// Client key (PEM) for Nomad's mutual TLS.
    #[arg(long, env = "NOMAD_CLIENT_KEY", value_hint = ValueHint::FilePath)]
    pub(crate) nomad_client_key: Option<PathBuf>,
    /// Name Nomad's certificate is verified against (and sent as SNI), when it differs from the
    /// address's host.
    #[arg(long, env = "NOMAD_TLS_SERVER_NAME")]
    pub(crate) nomad_tls_server_name: Option<String>,
    /// Do not verify Nomad's certificate.
    #[arg(long, env = "NOMAD_SKIP_VERIFY", default_value = "false",
          value_parser = BoolishValueParser::new(), num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub(crate) nomad_skip_verify: bool,
    /// Datacenters jobs may be placed in (Nomad patterns, `*` any run of characters),
    /// comma-separated: with `--nomad-node-pool`, the Nomad nodes the node's capacity is read
    /// from.
    #[arg(long, default_value = "*", value_delimiter = ',', value_parser = parse_datacenter)]
    pub(crate) nomad_datacenters: Vec<String>,
    /// Node pool of the jobs of pods that name none by annotation, and of the Nomad nodes the
    /// node's capacity is read from (`all`: every pool). Unset: jobs name no pool (Nomad's
    /// default), and the capacity is the `default` pool's.
    #[arg(long, value_parser = parse_node_pool)]
    pub(crate) nomad_node_pool: Option<String>,
    /// Task driver for pods without the driver annotation.
    #[arg(long, default_value = "docker")]
    pub(crate) nomad_driver: String,
    /// Nomad API requests in flight at most (the event stream and exec sessions not counted);
    /// 0 for no limit.
    #[arg(long, default_value_t = 32)]
    pub(crate) nomad_max_requests: usize,
    /// Prefix of the Nomad job IDs (up to 16 of `A-Za-z0-9_~-`, the characters of Nomad
    /// Variable paths).
    #[arg(long, default_value = "k8s-", value_parser = parse_prefix)]
    pub(crate) job_prefix: String,
    /// Annotation whose value chooses the task driver of one pod (read before
    /// `nomad.hashicorp.com/driver`).
    #[arg(long, default_value = "virtual-kubelet.io/nomad-driver")]
    pub(crate) driver_annotation: String,
    /// Task drivers pods of every namespace may choose by annotation besides `--nomad-driver`,
    /// comma-separated (`docker`, `raw_exec`, `exec`). Empty: none. `raw_exec` runs a pod's
    /// command on the Nomad client, unconfined, as the agent's user.
    #[arg(long, value_delimiter = ',', value_parser = parse_driver)]
    pub(crate) allowed_drivers: Vec<String>,
    /// Nomad namespaces pods may choose by annotation besides `--nomad-namespace`,
    /// comma-separated. Empty: none.
    #[arg(long, value_delimiter = ',', value_parser = parse_nomad_name)]
    pub(crate) allowed_nomad_namespaces: Vec<String>,
    /// Nomad regions pods may choose by annotation besides `--nomad-region`, comma-separated.
    /// Empty: none.
    #[arg(long, value_delimiter = ',', value_parser = parse_nomad_name)]
    pub(crate) allowed_regions: Vec<String>,
    /// Nomad node pools pods may choose by annotation, comma-separated. Empty: none (jobs go to
    /// the Nomad namespace's default pool).
    #[arg(long, value_delimiter = ',', value_parser = parse_node_pool)]
    pub(crate) allowed_node_pools: Vec<String>,
    /// Group network modes pods may choose by annotation besides `host`, comma-separated
    /// (`bridge`, `none`, `cni/<name>`). Empty: none.
    #[arg(long, value_delimiter = ',', value_parser = parse_network_mode)]
    pub(crate) allowed_network_modes: Vec<String>,
    /// Datacenters (Nomad patterns, `*` any run of characters) pods may name by annotation
    /// besides those of `--nomad-datacenters`, comma-separated. Empty: none.
    #[arg(long, value_delimiter = ',', value_parser = parse_datacenter)]
    pub(crate) allowed_datacenters: Vec<String>,
    /// The highest Nomad job priority pods may choose by annotation (1 to 100). Nomad's default,
    /// 50, keeps pods from pre-empting other Nomad work; lower priorities are always allowed.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub(crate) max_priority: u8,
    /// Directory on the Nomad clients holding `Localhost` seccomp profiles (the kubelet's
    /// `<root-dir>/seccomp`): a pod's `localhostProfile` is a path inside it.
    #[arg(long, default_value = "/var/lib/kubelet/seccomp", value_parser = parse_absolute)]
    pub(crate) seccomp_profile_root: String,
    /// Image of the task that makes a docker pod's emptyDir directories writable before its
    /// containers start (mode 0777, or owned by the pod's `fsGroup`, as the kubelet makes them):
    /// it runs `sh -c` with `mkdir`, `chgrp` and `chmod` as root, so busybox will do; the Nomad
    /// clients must be able to pull it. Empty: no such task, and Docker creates each emptyDir
    /// directory as root, mode 0755.
    #[arg(long, default_value = DEFAULT_VOLUME_SETUP_IMAGE)]
    pub(crate) volume_setup_image: String,
}

fn parse_nomad_addr(s: &str) -> Result<String, String> {
    vk_nomad::client::parse_addresses(s).map(|_| s.to_owned()).map_err(|e| e.to_string())
}

fn parse_prefix(s: &str) -> Result<String, String> {
    if job::valid_prefix(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?}: up to 16 letters, digits, '-', '_' or '~'"))
    }
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

impl NomadArgs {
    /// The Nomad provider's settings for node `node_name`, with the policy file's `rules`.
    pub(crate) fn provider_config(
        &self,
        node_name: &str,
        rules: &[PolicyRule<NomadGrant>],
    ) -> ProviderConfig {
        ProviderConfig {
            client: ClientConfig {
                address: self.nomad_addr.clone(),
                token: self.nomad_token.clone().map(|t| t.0),
                namespace: self.nomad_namespace.clone(),
                region: self.nomad_region.clone(),
                ca_cert: self.nomad_cacert.clone(),
                ca_path: self.nomad_capath.clone(),
                http_auth: self.nomad_http_auth.clone().map(|a| a.0),
                client_cert: self.nomad_client_cert.clone(),
                client_key: self.nomad_client_key.clone(),
                skip_verify: self.nomad_skip_verify,
                tls_server_name: self.nomad_tls_server_name.clone(),
                max_concurrent_requests: self.nomad_max_requests,
                ..ClientConfig::default()
            },
            node_name: node_name.to_owned(),
            job_prefix: self.job_prefix.clone(),
            datacenters: self.nomad_datacenters.clone(),
            node_pool: self.nomad_node_pool.clone(),
            default_driver: self.nomad_driver.clone(),
            driver_annotation: self.driver_annotation.clone(),
            policy: self.policy(rules),
            seccomp_profile_root: self.seccomp_profile_root.clone(),
            volume_setup_image: Some(self.volume_setup_image.clone()).filter(|i| !i.is_empty()),
        }
    }

    /// What pods may choose on the Nomad side: the `--allowed-*` settings and `--max-priority`
    /// for every namespace, widened by the policy file's `rules`.
    pub(crate) fn policy(&self, rules: &[PolicyRule<NomadGrant>]) -> NomadPolicy {
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
            rules: rules
                .iter()
                .map(|r| Rule {
                    name: r.name.clone(),
                    namespaces: r.namespaces.clone(),
                    grant: r.grant.clone(),
                })
                .collect(),
        }
    }

    /// Checks across Nomad's settings: the client certificate needs its key.
    ///
    /// # Errors
    /// [`Invalid`] naming the setting given without its pair, as it was given.
    pub(crate) fn check(&self, origins: &Origins<'_>) -> Result<(), Invalid> {
        origins.check_pair(
            ("nomad_client_cert", self.nomad_client_cert.is_some()),
            ("nomad_client_key", self.nomad_client_key.is_some()),
        )
    }
}

/// The Nomad keys of a policy-file rule: every key of a flag `--allowed-*` but the probe hosts,
/// and `max_priority`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct NomadRuleKeys {
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
}

impl RuleGrant for NomadRuleKeys {
    type Grant = NomadGrant;

    fn into_grant(self) -> Result<NomadGrant, String> {
        if let Some(p) = self.max_priority.filter(|p| !(1..=100).contains(p)) {
            return Err(format!("max_priority: {p} is not a priority (1 to 100)"));
        }
        let each = |key: &str,
                    vals: Vec<String>,
                    parse: fn(&str) -> Result<String, String>|
         -> Result<Vec<String>, String> {
            vals.iter().map(|v| parse(v).map_err(|e| format!("{key}: {e}"))).collect()
        };
        Ok(NomadGrant {
            drivers: each("allowed_drivers", self.allowed_drivers, parse_driver)?,
            namespaces: each(
                "allowed_nomad_namespaces",
                self.allowed_nomad_namespaces,
                parse_nomad_name,
            )?,
            regions: each("allowed_regions", self.allowed_regions, parse_nomad_name)?,
            node_pools: each("allowed_node_pools", self.allowed_node_pools, parse_node_pool)?,
            network_modes: each(
                "allowed_network_modes",
                self.allowed_network_modes,
                parse_network_mode,
            )?,
            datacenters: each("allowed_datacenters", self.allowed_datacenters, parse_datacenter)?,
            max_priority: self.max_priority,
        })
    }
}
