//! The virtual kubelet application: configuration, the node and pod controllers, and the wiring
//! of adapters into them. `main.rs` only parses flags and calls [`run`].

pub mod config;
mod held_pod;
pub mod identity;
pub mod inputs;
pub mod node_controller;
pub mod pod_controller;
pub mod prober;
pub mod queue;
pub mod telemetry;

use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vk_kube::certificates::{Identity, Kind};
use vk_kube::review::KubeAccessReview;
use vk_kube::{KubeNodeApi, KubePodApi};
use vk_kubelet_api::server as kubelet;
use vk_memory::{MemoryConfig, MemoryProvider};
use vk_nomad::NomadProvider;

use crate::config::{Cli, LogFormat, Provider};

/// Sets up `tracing` once: level from `RUST_LOG` or `--log-level`, text or JSON lines on stderr
/// (text coloured only when stderr is a terminal, so that log files hold plain text).
pub fn init_tracing(cli: &Cli) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The kube clients of one process, each with its own connections and token bucket, so that
/// no kind of traffic can hold another back.
struct Clients {
    /// Pods, their status, inputs (`--kube-api-qps`).
    pods: kube::Client,
    /// Events (`--event-qps`).
    events: kube::Client,
    /// The node's Lease and status: the kubelet's `HeartbeatClient`, so that a flood of pod or
    /// review traffic never delays a renewal (`--kube-api-qps` again, a bucket of its own).
    heartbeat: kube::Client,
    /// TokenReviews and SubjectAccessReviews of the kubelet API (`--kube-api-qps`, a bucket of
    /// its own, behind the API's own review turns).
    reviews: kube::Client,
    /// The CA certificates (DER) they trust for the API server.
    roots: Vec<Vec<u8>>,
    /// The node's client certificate, when it came by TLS bootstrap (`--bootstrap-kubeconfig`).
    identity: Option<std::sync::Arc<Identity>>,
}

/// [`Clients`] for the kubeconfig (or in-cluster configuration, or the node's certificate got
/// with `--bootstrap-kubeconfig`).
async fn kube_client(cli: &Cli) -> anyhow::Result<Clients> {
    let limit = vk_kube::rate::RateLimit { qps: cli.kube_api_qps, burst: cli.kube_api_burst };
    let event_limit = vk_kube::rate::RateLimit { qps: cli.event_qps, burst: cli.event_burst };
    if let (None, Some(path)) = (&cli.kubeconfig, &cli.bootstrap_kubeconfig) {
        let kc = kube::config::Kubeconfig::read_from(path)
            .with_context(|| format!("reading --bootstrap-kubeconfig {}", path.display()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?;
        let bootstrap = vk_kube::client(config.clone(), limit)?;
        let identity =
            identity::client_certificate(&bootstrap, &cli.nodename, &cli.cert_dir).await?;
        let with = |l| vk_kube::client_with_identity(&config, l, Arc::clone(&identity));
        return Ok(Clients {
            events: with(event_limit)?,
            heartbeat: with(limit)?,
            reviews: with(limit)?,
            pods: with(limit)?,
            roots: config.root_cert.clone().unwrap_or_default(),
            identity: Some(identity),
        });
    }
    let config = match (&cli.kubeconfig, in_cluster(cli)?) {
        (Some(path), _) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?
        }
        (None, Some(config)) => config,
        (None, None) => kube::Config::infer()
            .await
            .context("no kubeconfig given, KUBERNETES_SERVICE_HOST unset and no ~/.kube/config")?,
    };
    let roots = config.root_cert.clone().unwrap_or_default();
    Ok(Clients {
        identity: None,
        events: vk_kube::client(config.clone(), event_limit)?,
        heartbeat: vk_kube::client(config.clone(), limit)?,
        reviews: vk_kube::client(config.clone(), limit)?,
        pods: vk_kube::client(config, limit)?,
        roots,
    })
}

/// The in-cluster configuration, as client-go's `rest.InClusterConfig`: the API server at
/// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, the service account's `token`
/// (re-read as the kubelet rotates it) and `ca.crt` from `--service-account-dir`. `None` when
/// `KUBERNETES_SERVICE_HOST` is unset (not running in a pod).
fn in_cluster(cli: &Cli) -> anyhow::Result<Option<kube::Config>> {
    let (Ok(host), Ok(port)) =
        (std::env::var("KUBERNETES_SERVICE_HOST"), std::env::var("KUBERNETES_SERVICE_PORT"))
    else {
        return Ok(None);
    };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    let url: http::Uri = format!("https://{host}:{port}")
        .parse()
        .with_context(|| format!("KUBERNETES_SERVICE_HOST {host:?} / _PORT {port:?}"))?;
    let dir = &cli.service_account_dir;
    let ca = dir.join("ca.crt");
    let pem = std::fs::read(&ca).with_context(|| format!("reading {}", ca.display()))?;
    let mut config = kube::Config::new(url);
    config.root_cert =
        Some(kubelet::pem_certificates(&pem).with_context(|| format!("reading {}", ca.display()))?);
    config.auth_info.token_file = Some(dir.join("token").display().to_string());
    config.default_namespace = std::fs::read_to_string(dir.join("namespace"))
        .map(|ns| ns.trim().to_owned())
        .unwrap_or_else(|_| "default".into());
    Ok(Some(config))
}

/// The kubelet API's settings: serving certificate from files or self-signed, client CA from
/// `--client-ca-file` or the kubeconfig's CA; and the serving certificate to keep renewed when
/// the cluster signs it (`--rotate-server-certificates`).
fn kubelet_settings(
    cli: &Cli,
    kube_roots: Vec<Vec<u8>>,
) -> anyhow::Result<(kubelet::Settings, Option<Arc<Identity>>)> {
    let cert = match (&cli.tls_cert_file, &cli.tls_private_key_file) {
        (Some(c), Some(k)) => kubelet::ServingCert {
            cert_pem: std::fs::read_to_string(c)
                .with_context(|| format!("reading --tls-cert-file {}", c.display()))?,
            key_pem: std::fs::read_to_string(k)
                .with_context(|| format!("reading --tls-private-key-file {}", k.display()))?,
        },
        _ => {
            let ips = vec![cli.internal_ip];
            kubelet::self_signed(&cli.nodename, &ips)?
        }
    };
    let serving = match (&cli.tls_cert_file, cli.rotate_server_certificates) {
        (None, true) => {
            let fallback = vk_kube::certificates::Issued::from_pem(&cert.cert_pem, &cert.key_pem)?;
            Some(identity::serving_certificate(&cli.cert_dir, fallback)?)
        }
        _ => None,
    };
    let mut settings = kubelet::Settings::new(&cli.nodename, cert);
    settings.serving = serving.clone().map(|i| i as kubelet::ServingResolver);
    settings.client_ca = match &cli.client_ca_file {
        Some(f) => {
            let pem = std::fs::read(f)
                .with_context(|| format!("reading --client-ca-file {}", f.display()))?;
            kubelet::pem_certificates(&pem)
                .with_context(|| format!("--client-ca-file {}", f.display()))?
        }
        None => kube_roots,
    };
    settings.anonymous = cli.anonymous_auth;
    // Open connections and sessions get 5 s, or three quarters of a shorter shutdown grace, to
    // finish: the API has closed them before the process stops waiting, and a followed log or an
    // exec session (which the client opens again) does not hold a restart for long.
    settings.drain = cli.shutdown_grace.mul_f64(0.75).min(std::time::Duration::from_secs(5));
    let defaults = kubelet::Limits::default();
    let open_files = open_file_limit();
    let reserve = 256;
    let max_connections = usize::try_from(cli.kubelet_max_connections).unwrap_or(usize::MAX);
    let room = open_files.saturating_sub(reserve).max(64);
    if max_connections > room {
        warn!(
            max_connections,
            open_files,
            "--kubelet-max-connections is above what the open-file limit leaves; using {room}"
        );
    }
    settings.limits = kubelet::Limits {
        max_connections: max_connections.min(room),
        max_connections_per_peer: cli.kubelet_max_connections_per_peer as usize,
        max_unauthenticated: cli.kubelet_max_unauthenticated_connections as usize,
        header_read_timeout: cli.kubelet_header_read_timeout,
        max_header_bytes: cli.kubelet_max_header_bytes as usize,
        jwt_only: cli.authentication_token_jwt_only,
        max_websocket_message_bytes: cli.kubelet_max_websocket_message_bytes as usize,
        max_spdy_streams: cli.kubelet_max_spdy_streams as usize,
        ..defaults
    };
    kubelet::check(&settings)?;
    Ok((settings, serving))
}

/// The process's open-file limit after raising the soft limit to the hard one (as Go programs
/// do at start since Go 1.19): each kubelet API connection holds a descriptor.
fn open_file_limit() -> usize {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => usize::try_from(n).unwrap_or(usize::MAX),
        Err(e) => {
            warn!(error = %e, "cannot read the open-file limit; assuming 1024");
            1024
        }
    }
}

/// The pod controller as the kubelet API's pod index.
struct Index<P, K>(Arc<pod_controller::PodController<P, K>>);

impl<P: vk_ports::Provider, K: vk_ports::PodApi + vk_ports::InputsApi> vk_ports::PodIndex
    for Index<P, K>
{
    fn pod(&self, key: &vk_domain::pod::PodKey) -> Option<vk_ports::IndexedPod> {
        self.0.pod(key)
    }

    fn pods(&self) -> Vec<vk_ports::IndexedPod> {
        self.0.pods()
    }
}

/// Why [`run`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration cannot be used (a file named by a setting is unreadable or malformed, no
    /// API server credentials): found before any port is bound.
    #[error("{0:#}")]
    Config(anyhow::Error),
    /// Running failed: a port could not be bound, or the start took longer than
    /// `--startup-timeout`.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

/// Runs the virtual kubelet with the provider `--provider` names until `cancel` fires, then lets
/// in-flight work finish within `--shutdown-grace`. Nothing is deleted on shutdown: pods keep
/// running on the backend and are adopted by the next start.
///
/// # Errors
/// As [`run_with_provider`]; [`RunError::Config`] too when the provider's settings are unusable
/// (Nomad address or TLS files).
pub async fn run(cli: Cli, cancel: CancellationToken) -> Result<(), RunError> {
    match cli.provider {
        Provider::Nomad => {
            let provider = NomadProvider::new(cli.nomad())
                .context("Nomad settings")
                .map_err(RunError::Config)?;
            run_with_provider(cli, Arc::new(provider), cancel).await
        }
        Provider::Memory => {
            let config = MemoryConfig::new(&cli.nodename, cli.internal_ip.to_string());
            run_with_provider(cli, Arc::new(MemoryProvider::new(config)), cancel).await
        }
    }
}

/// Runs the virtual kubelet on `provider` (any backend implementing the ports) until `cancel`
/// fires: registers the node, keeps its Lease and status, runs the pods bound to it, serves the
/// kubelet API and the process metrics. This is the entry point for other providers (see the
/// README's "Write your own provider"); `cli.provider` is not looked at.
///
/// # Errors
/// [`RunError::Config`]: the kubeconfig or in-cluster credentials, or the kubelet API's TLS files,
/// cannot be used (nothing is bound yet). [`RunError::Failed`]: a port cannot be bound, or the
/// start takes longer than `--startup-timeout`.
pub async fn run_with_provider<P>(
    cli: Cli,
    provider: Arc<P>,
    cancel: CancellationToken,
) -> Result<(), RunError>
where
    P: vk_ports::Provider,
{
    let clients = kube_client(&cli).await.map_err(RunError::Config)?;
    let client = clients.pods.clone();
    let (mut kubelet_settings, serving) =
        kubelet_settings(&cli, clients.roots.clone()).map_err(RunError::Config)?;
    let metrics = telemetry::install().map_err(RunError::Failed)?;
    kubelet_settings.metrics = Some(kubelet::MetricsText({
        let metrics = metrics.clone();
        Arc::new(move || metrics.render())
    }));
    let metrics_listener = tokio::net::TcpListener::bind(cli.metrics_addr)
        .await
        .with_context(|| format!("binding --metrics-addr {}", cli.metrics_addr))
        .map_err(RunError::Failed)?;
    let kubelet_addr = std::net::SocketAddr::new(cli.kubelet_address, cli.kubelet_port);
    let kubelet_listener = tokio::net::TcpListener::bind(kubelet_addr)
        .await
        .with_context(|| format!("binding the kubelet API on {kubelet_addr}"))
        .map_err(RunError::Failed)?;
    let runtime_version = match provider.runtime_version().await {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "the backend is unreachable at start; it is retried in the background");
            "unknown".into()
        }
    };
    let node = cli.node_config(runtime_version, provider.version_name());
    info!(node = %node.name, runtime = %node.runtime_version, "starting virtual-kubelet");

    // The node's certificates renewed before they expire (each task ends with `cancel`).
    let renewals: Vec<(Arc<Identity>, Kind)> = clients
        .identity
        .iter()
        .map(|i| (Arc::clone(i), Kind::Client))
        .chain(serving.iter().map(|i| (Arc::clone(i), Kind::Serving)))
        .collect();
    for (identity, kind) in renewals {
        tokio::spawn(identity::keep_renewed(
            clients.pods.clone(),
            identity,
            kind,
            cli.nodename.clone(),
            vec![cli.internal_ip],
            cli.cert_dir.clone(),
            cancel.clone(),
        ));
    }

    let (capacity_tx, capacity_rx) = tokio::sync::watch::channel(Default::default());
    let node_changed = Arc::new(tokio::sync::Notify::new());
    let node_task = tokio::spawn(node_controller::run(
        Arc::clone(&provider),
        Arc::new(KubeNodeApi::new(clients.heartbeat.clone())),
        node.clone(),
        node_controller::Timing {
            status_interval: cli.node_status_interval,
            report_interval: cli.node_status_report_interval,
        },
        capacity_tx,
        Arc::clone(&node_changed),
        cancel.clone(),
    ));
    let pod_api = KubePodApi::new(client.clone(), clients.events.clone(), &node.name);
    // Listed now, so that service link variables of the first pods come from a listed cache.
    let _ = pod_api.service_cache();
    let pods = pod_controller::PodController::new(
        Arc::clone(&provider),
        Arc::new(pod_api),
        pod_controller::Settings {
            node_name: node.name.clone(),
            workers: cli.pod_sync_workers,
            status_interval: cli.full_resync_period,
            refresh_interval: cli.volume_refresh_interval,
            allocatable: capacity_rx,
            node_changed,
            probe_policy: Arc::new(cli.probe_policy()),
            namespace_labels: cli.policy_uses_labels(),
            node_os: cli.os.clone(),
        },
    );
    let ready = {
        let pods = Arc::clone(&pods);
        Arc::new(move || pods.synced()) as Arc<dyn Fn() -> bool + Send + Sync>
    };
    let metrics_task =
        tokio::spawn(telemetry::serve(metrics_listener, metrics, ready, cancel.clone()));
    let api = kubelet::Kubelet::new(
        provider,
        Arc::new(KubeAccessReview::new(clients.reviews.clone())),
        Arc::new(Index(Arc::clone(&pods))),
        kubelet_settings,
    );
    let kubelet_task = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if let Err(e) =
                kubelet::serve(kubelet_listener, api, async move { cancel.cancelled().await }).await
            {
                warn!(error = %e, "the kubelet API stopped");
            }
        })
    };
    let pod_task = tokio::spawn(Arc::clone(&pods).run(cancel.clone()));

    let outcome = started(&cli, &pods, &cancel).await;
    cancel.cancel();
    info!(grace = ?cli.shutdown_grace, "shutting down: finishing in-flight work");
    let all = async {
        let _ = node_task.await;
        let _ = pod_task.await;
        let _ = metrics_task.await;
        let _ = kubelet_task.await;
    };
    if tokio::time::timeout(cli.shutdown_grace, all).await.is_err() {
        warn!("in-flight work did not finish within the shutdown grace period");
    }
    info!("stopped");
    outcome
}

/// Waits for `cancel`; gives up with [`RunError::Failed`] when the pods and workloads are not
/// listed within `--startup-timeout` (0: no limit).
async fn started<P: vk_ports::Provider, K: vk_ports::PodApi + vk_ports::InputsApi>(
    cli: &Cli,
    pods: &pod_controller::PodController<P, K>,
    cancel: &CancellationToken,
) -> Result<(), RunError> {
    if !cli.startup_timeout.is_zero() {
        let synced = async {
            while !pods.synced() {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            done = tokio::time::timeout(cli.startup_timeout, synced) => {
                if done.is_err() {
                    return Err(RunError::Failed(anyhow::anyhow!(
                        "not started within --startup-timeout {:?}: the pods or the backend's workloads are not listed yet",
                        cli.startup_timeout
                    )));
                }
                info!("started");
            }
        }
    }
    cancel.cancelled().await;
    Ok(())
}

/// A token cancelled on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
            _ = term.recv() => info!("SIGTERM received"),
        }
        t.cancel();
    });
    token
}
