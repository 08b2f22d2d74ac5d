//! The node's clients of the Kubernetes API, built from plain settings: the kubeconfig, else the
//! in-cluster configuration (client-go's `rest.InClusterConfig`), else `~/.kube/config`; or, with
//! a bootstrap kubeconfig, the node's own client certificate got by TLS bootstrap
//! ([`crate::identity`]). [`connect`] returns the ports' implementations on four clients, each
//! with its own connections and token bucket ([`crate::rate`]), so that no kind of traffic can
//! hold another back.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kube::Client;
use kube::config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio_util::sync::CancellationToken;

use crate::certificates::{Identity, Kind};
use crate::rate::RateLimit;
use crate::review::KubeAccessReview;
use crate::{KubeNodeApi, KubePodApi, identity};

/// Where the node's credentials come from and how fast it may talk to the API server.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The kubeconfig (`--kubeconfig`). Without it: the in-cluster configuration when
    /// `KUBERNETES_SERVICE_HOST` is set, else `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// A kubeconfig holding a bootstrap token (`--bootstrap-kubeconfig`), used when
    /// `kubeconfig` is `None`: the node's client certificate is got with it.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Where the in-cluster configuration reads the service account's `token`, `ca.crt` and
    /// `namespace`.
    pub service_account_dir: PathBuf,
    /// Where the node's certificates are kept (`--cert-dir`).
    pub cert_dir: PathBuf,
    /// The node's name: `system:node:<name>` of its certificates, the Events' source host.
    pub node_name: String,
    /// The node's addresses, subject alternative names of its serving certificate.
    pub addresses: Vec<IpAddr>,
    /// Pods, inputs, the heartbeat and reviews, each client its own bucket
    /// (`--kube-api-qps`, `--kube-api-burst`).
    pub limit: RateLimit,
    /// Events (`--event-qps`, `--event-burst`).
    pub event_limit: RateLimit,
}

/// What the node uses of the Kubernetes API: the ports on their own clients, the CA the API
/// server is trusted by, and the node's client certificate when it came by TLS bootstrap.
pub struct Cluster {
    /// The node's Lease and status: the kubelet's `HeartbeatClient`, so that a flood of pod or
    /// review traffic never delays a renewal.
    pub nodes: KubeNodeApi,
    /// Pods, their status and inputs; Events on a client of their own.
    pub pods: KubePodApi,
    /// TokenReviews and SubjectAccessReviews of the kubelet API.
    pub reviews: KubeAccessReview,
    /// The node's certificates renewed by CertificateSigningRequest.
    pub certificates: CertificateRequests,
    /// The CA certificates (DER) the clients trust for the API server.
    pub roots: Vec<Vec<u8>>,
    /// The node's client certificate, when it came by TLS bootstrap (`--bootstrap-kubeconfig`).
    pub identity: Option<Arc<Identity>>,
    /// The Leases of the replicas' leader election (`--leader-elect`): written with the pod's
    /// ServiceAccount when its token is mounted, else on the heartbeat client.
    pub leases: crate::election::Leases,
}

/// Asks the cluster for the node's certificates (on the pods' client).
#[derive(Clone)]
pub struct CertificateRequests {
    client: Client,
    node: String,
    addresses: Vec<IpAddr>,
    dir: PathBuf,
}

impl CertificateRequests {
    /// Keeps `identity` (a certificate of `kind`) renewed until `cancel` ([`identity::keep_renewed`]
    /// for the node, its addresses and its certificate directory).
    pub fn keep_renewed(
        &self,
        identity: Arc<Identity>,
        kind: Kind,
        cancel: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let this = self.clone();
        identity::keep_renewed(
            this.client,
            identity,
            kind,
            this.node,
            this.addresses,
            this.dir,
            cancel,
        )
    }
}

/// Why [`connect`] built no clients. Each is found before the node binds a port.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A kubeconfig file cannot be read or parsed.
    #[error("reading {flag} {}", path.display())]
    Kubeconfig {
        /// `kubeconfig` or `--bootstrap-kubeconfig`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        #[source]
        source: KubeconfigError,
    },
    /// A kubeconfig cannot be turned into a client configuration (no current context, a file it
    /// names unreadable).
    #[error(transparent)]
    Config(#[from] KubeconfigError),
    /// The in-cluster configuration cannot be read (its address or the service account's CA).
    #[error("{what}")]
    InCluster {
        /// What was being read.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No configuration at all.
    #[error("no kubeconfig given, KUBERNETES_SERVICE_HOST unset and no ~/.kube/config")]
    Missing(#[source] InferConfigError),
    /// A client cannot be built (TLS material, proxy settings).
    #[error(transparent)]
    Client(#[from] kube::Error),
    /// TLS bootstrap did not give the node a client certificate.
    #[error(transparent)]
    Bootstrap(#[from] identity::BootstrapError),
}

/// The node's [`Cluster`] for `settings`: from the kubeconfig, or the in-cluster configuration,
/// or the node's certificate got with the bootstrap kubeconfig (which waits for the CSR to be
/// signed, up to 15 minutes), or `~/.kube/config`. Nothing is asked of the API server otherwise.
/// Starts the Events' publishing task: call it inside a Tokio runtime.
///
/// # Errors
/// [`ConnectError`], naming the file or variable that cannot be used.
pub async fn connect(settings: &Settings) -> Result<Cluster, ConnectError> {
    let limit = settings.limit;
    if let (None, Some(path)) = (&settings.kubeconfig, &settings.bootstrap_kubeconfig) {
        let config = from_kubeconfig("--bootstrap-kubeconfig", path).await?;
        let bootstrap = crate::client(config.clone(), limit)?;
        let identity =
            identity::client_certificate(&bootstrap, &settings.node_name, &settings.cert_dir)
                .await?;
        let with = |l| crate::client_with_identity(&config, l, Arc::clone(&identity));
        let heartbeat = with(limit)?;
        let clients = Clients {
            events: with(settings.event_limit)?,
            leases: leases_client(settings, &heartbeat)?,
            heartbeat,
            reviews: with(limit)?,
            pods: with(limit)?,
        };
        let roots = config.root_cert.clone().unwrap_or_default();
        return Ok(clients.into_cluster(settings, roots, Some(identity)));
    }
    let config = match (&settings.kubeconfig, in_cluster(&settings.service_account_dir)?) {
        (Some(path), _) => from_kubeconfig("kubeconfig", path).await?,
        (None, Some(config)) => config,
        (None, None) => kube::Config::infer().await.map_err(ConnectError::Missing)?,
    };
    let roots = config.root_cert.clone().unwrap_or_default();
    let heartbeat = crate::client(config.clone(), limit)?;
    let clients = Clients {
        events: crate::client(config.clone(), settings.event_limit)?,
        leases: leases_client(settings, &heartbeat)?,
        heartbeat,
        reviews: crate::client(config.clone(), limit)?,
        pods: crate::client(config, limit)?,
    };
    Ok(clients.into_cluster(settings, roots, None))
}

/// The four clients of one process, each with its own connections and token bucket.
struct Clients {
    /// Pods, their status, inputs, and the node's CSRs (`--kube-api-qps`).
    pods: Client,
    /// Events (`--event-qps`).
    events: Client,
    /// The node's Lease and status (`--kube-api-qps` again, a bucket of its own).
    heartbeat: Client,
    /// TokenReviews and SubjectAccessReviews of the kubelet API (`--kube-api-qps`, a bucket of
    /// its own, behind the API's own review turns).
    reviews: Client,
    /// The leader election's Leases ([`leases_client`]).
    leases: Client,
}

/// The client of the leader election's Leases (`--leader-elect`): the pod's ServiceAccount when
/// its token is in `--service-account-dir` and the process runs in a cluster, since a node
/// identity may write no Lease but its node's (NodeRestriction); else `heartbeat`.
///
/// # Errors
/// [`ConnectError`] when the ServiceAccount's files are there but cannot be used.
fn leases_client(settings: &Settings, heartbeat: &Client) -> Result<Client, ConnectError> {
    if settings.service_account_dir.join("token").is_file()
        && let Some(config) = in_cluster(&settings.service_account_dir)?
    {
        return Ok(crate::client(config, settings.limit)?);
    }
    Ok(heartbeat.clone())
}

impl Clients {
    fn into_cluster(
        self,
        settings: &Settings,
        roots: Vec<Vec<u8>>,
        identity: Option<Arc<Identity>>,
    ) -> Cluster {
        Cluster {
            leases: crate::election::Leases { client: self.leases },
            nodes: KubeNodeApi::new(self.heartbeat),
            pods: KubePodApi::new(self.pods.clone(), self.events, &settings.node_name),
            reviews: KubeAccessReview::new(self.reviews),
            certificates: CertificateRequests {
                client: self.pods,
                node: settings.node_name.clone(),
                addresses: settings.addresses.clone(),
                dir: settings.cert_dir.clone(),
            },
            roots,
            identity,
        }
    }
}

/// The client configuration of the kubeconfig at `path` (`flag` names it in errors).
async fn from_kubeconfig(flag: &'static str, path: &Path) -> Result<kube::Config, ConnectError> {
    let kc = Kubeconfig::read_from(path).map_err(|source| ConnectError::Kubeconfig {
        flag,
        path: path.to_path_buf(),
        source,
    })?;
    Ok(kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?)
}

/// The in-cluster configuration, as client-go's `rest.InClusterConfig`: the API server at
/// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT` (read from the process's
/// environment, as client-go reads it), the service account's `token` (re-read as the kubelet
/// rotates it) and `ca.crt` from `dir`. `None` when `KUBERNETES_SERVICE_HOST` is unset (not
/// running in a pod).
///
/// # Errors
/// [`ConnectError::InCluster`]: the address is not a URI, or `ca.crt` is unreadable or holds no
/// certificate.
pub fn in_cluster(dir: &Path) -> Result<Option<kube::Config>, ConnectError> {
    let (Ok(host), Ok(port)) =
        (std::env::var("KUBERNETES_SERVICE_HOST"), std::env::var("KUBERNETES_SERVICE_PORT"))
    else {
        return Ok(None);
    };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    let url = format!("https://{host}:{port}").parse().map_err(|e| ConnectError::InCluster {
        what: format!("KUBERNETES_SERVICE_HOST {host:?} / _PORT {port:?}"),
        source: Box::new(e),
    })?;
    let ca = dir.join("ca.crt");
    let reading =
        |source| ConnectError::InCluster { what: format!("reading {}", ca.display()), source };
    let pem = std::fs::read(&ca).map_err(|e| reading(Box::new(e)))?;
    let mut config = kube::Config::new(url);
    config.root_cert = Some(pem_certificates(&pem).map_err(|e| reading(e.into()))?);
    config.auth_info.token_file = Some(dir.join("token").display().to_string());
    config.default_namespace = std::fs::read_to_string(dir.join("namespace"))
        .map(|ns| ns.trim().to_owned())
        .unwrap_or_else(|_| "default".into());
    Ok(Some(config))
}

/// The certificates (DER) of a PEM bundle; at least one.
fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in the PEM".into());
    }
    Ok(certs)
}
