//! The virtual kubelet application, whatever the backend: configuration, the node and pod
//! controllers, and the wiring of the Kubernetes adapters and a provider into them
//! ([`run_with_provider`]). A binary chooses the provider: `virtual-kubelet` (package
//! `virtual-kubelet`, `app/cli`) Nomad's or the memory one, `examples/timer-provider` its own.

pub mod build;
pub mod config;
mod held_pod;
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
use vk_kube::identity;
use vk_kubelet_api::server as kubelet;
use vk_ports::NodeApi as _;

use crate::config::{KubeletArgs, LogFormat, PolicyRule};

/// Sets up `tracing` once: level from `RUST_LOG` or `--log-level`, text or JSON lines on stderr
/// (text coloured only when stderr is a terminal, so that log files hold plain text).
pub fn init_tracing(cli: &KubeletArgs) {
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

/// The kubelet API's settings: serving certificate from files or self-signed, client CA from
/// `--client-ca-file` or the kubeconfig's CA; and the serving certificate to keep renewed when
/// the cluster signs it (`--rotate-server-certificates`).
fn kubelet_settings(
    cli: &KubeletArgs,
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
    // Answers being written get three quarters of the shutdown grace to finish (the API has
    // closed them before the process stops waiting); a followed log or an exec session (which
    // the client opens again) is ended after 5 s at most, so it does not hold a restart long.
    settings.drain = cli.shutdown_grace.mul_f64(0.75);
    settings.stream_drain = settings.drain.min(std::time::Duration::from_secs(5));
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

/// Why [`run_with_provider`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration cannot be used (a file named by a setting is unreadable or malformed, no
    /// API server credentials, a provider's settings unusable): found before any port is bound.
    #[error("{0:#}")]
    Config(anyhow::Error),
    /// Running failed: a port could not be bound, or the start took longer than
    /// `--startup-timeout`.
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

/// Runs the virtual kubelet on `provider` (any backend implementing the ports) until `cancel`
/// fires: registers the node, keeps its Lease and status, runs the pods bound to it, serves the
/// kubelet API and the process metrics; probes may name the hosts `--allowed-probe-hosts` and the
/// policy file's `rules` allow ([`KubeletArgs::probe_policy`]). Then lets
/// in-flight work finish within `--shutdown-grace`. Nothing is deleted on shutdown: pods keep
/// running on the backend and are adopted by the next start. This is the entry point of every
/// binary (see the README's "Write your own provider"); [`run_nodes`] runs several nodes.
///
/// # Errors
/// [`RunError::Config`]: the kubeconfig or in-cluster credentials, or the kubelet API's TLS files,
/// cannot be used (nothing is bound yet). [`RunError::Failed`]: a port cannot be bound, or the
/// start takes longer than `--startup-timeout`.
pub async fn run_with_provider<P, G>(
    cli: KubeletArgs,
    rules: &[PolicyRule<G>],
    provider: Arc<P>,
    cancel: CancellationToken,
) -> Result<(), RunError>
where
    P: vk_ports::Provider,
{
    run_nodes(vec![(cli, provider)], rules, cancel).await
}

/// One node of the process before it runs: its settings, backend and API server clients.
struct NodeParts<P> {
    cli: KubeletArgs,
    provider: Arc<P>,
    cluster: vk_kube::connect::Cluster,
    kubelet: kubelet::Settings,
    serving: Option<Arc<Identity>>,
    listener: tokio::net::TcpListener,
}

/// Runs several nodes in one process until `cancel` fires, each as [`run_with_provider`] runs
/// one: its own Node, Lease, status, capacity and taint (from its `provider`, scoped to it), its
/// own API server clients (its credentials) and its own kubelet API port. Shared by all: the
/// process metrics port and readiness (ready when every node's pods and workloads are listed),
/// the leader election (one Lease for the process, named after the first node unless
/// `--leader-elect-lease-name` says otherwise), the shutdown. The process-wide settings
/// (`--metrics-addr`, `--leader-elect*`, `--shutdown-grace`, `--startup-timeout`) are the first
/// node's; `nodes` are in the order of the `[[nodes]]` entries of `--config`
/// ([`config::Loaded::nodes`]).
///
/// # Errors
/// As [`run_with_provider`], for any node; [`RunError::Config`] for an empty `nodes`.
pub async fn run_nodes<P, G>(
    nodes: Vec<(KubeletArgs, Arc<P>)>,
    rules: &[PolicyRule<G>],
    cancel: CancellationToken,
) -> Result<(), RunError>
where
    P: vk_ports::Provider,
{
    let Some(process) = nodes.first().map(|(cli, _)| cli.clone()) else {
        return Err(RunError::Config(anyhow::anyhow!("no node to run")));
    };
    let mut parts = Vec::with_capacity(nodes.len());
    for (cli, provider) in nodes {
        let cluster = vk_kube::connect::connect(&cli.cluster())
            .await
            .with_context(|| format!("node {}", cli.nodename))
            .map_err(RunError::Config)?;
        let (kubelet, serving) = kubelet_settings(&cli, cluster.roots.clone())
            .with_context(|| format!("node {}", cli.nodename))
            .map_err(RunError::Config)?;
        let listener = bind_kubelet(&cli).await?;
        parts.push(NodeParts { cli, provider, cluster, kubelet, serving, listener });
    }
    let metrics = telemetry::install().map_err(RunError::Failed)?;
    telemetry::describe();
    if let Some(part) = parts.first() {
        part.provider.describe_metrics();
    }
    let metrics_listener = tokio::net::TcpListener::bind(process.metrics_addr)
        .await
        .with_context(|| format!("binding --metrics-addr {}", process.metrics_addr))
        .map_err(RunError::Failed)?;

    let mut started_nodes = Vec::with_capacity(parts.len());
    for part in parts {
        started_nodes.push(prepare_node(part, rules, &metrics).await);
    }
    // A standby replica is ready (to take over); the leader once every node's pods and jobs
    // are listed.
    let standing_by = Arc::new(std::sync::atomic::AtomicBool::new(process.leader_elect));
    let synced: Vec<Arc<dyn Fn() -> bool + Send + Sync>> =
        started_nodes.iter().map(|n| Arc::clone(&n.synced)).collect();
    let all_synced =
        Arc::new(move || synced.iter().all(|s| s())) as Arc<dyn Fn() -> bool + Send + Sync>;
    let ready = {
        let (all_synced, standing_by) = (Arc::clone(&all_synced), Arc::clone(&standing_by));
        Arc::new(move || standing_by.load(std::sync::atomic::Ordering::Relaxed) || all_synced())
            as Arc<dyn Fn() -> bool + Send + Sync>
    };
    let metrics_task =
        tokio::spawn(telemetry::serve(metrics_listener, metrics, ready, cancel.clone()));
    let first_name = started_nodes.first().map(|n| n.name.clone()).unwrap_or_default();
    let election = match (process.election(&first_name), started_nodes.first()) {
        (Some(settings), Some(first)) => match lead(&first.leases, &settings, &cancel).await? {
            Some(e) => Some(e),
            // Told to stop while standing by: nothing else was started.
            None => {
                drain(vec![metrics_task], process.shutdown_grace).await;
                return Ok(());
            }
        },
        _ => None,
    };
    standing_by.store(false, std::sync::atomic::Ordering::Relaxed);
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let election =
        election.map(|e| tokio::spawn(keep_leading(e, Arc::clone(&lost), cancel.clone())));
    let mut tasks = vec![metrics_task];
    for node in started_nodes {
        tasks.extend((node.start)(cancel.clone()));
    }

    let outcome = started(&process, all_synced.as_ref(), &cancel).await;
    cancel.cancel();
    drain(tasks, process.shutdown_grace).await;
    // The Lease is freed once this replica stopped writing: a standby takes over at once.
    if let Some(task) = election
        && let Ok(e) = task.await
    {
        e.release().await;
    }
    if lost.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(RunError::Failed(anyhow::anyhow!("this replica lost the leader Lease")));
    }
    outcome
}

/// A node ready to start: its name, the election's Leases client, whether its pods and
/// workloads are listed, and what starts its tasks (certificate renewals, node and pod
/// controllers, kubelet API; each ends with the token it is given).
struct PreparedNode {
    name: String,
    leases: vk_kube::election::Leases,
    synced: Arc<dyn Fn() -> bool + Send + Sync>,
    start: Box<dyn FnOnce(CancellationToken) -> Vec<tokio::task::JoinHandle<()>> + Send>,
}

/// Builds one node's controllers and kubelet API (nothing runs until its `start`): reads the
/// backend's and the API server's versions (a backend unreachable at start is retried later),
/// and the node's configuration.
async fn prepare_node<P, G>(
    part: NodeParts<P>,
    rules: &[PolicyRule<G>],
    metrics: &metrics_exporter_prometheus::PrometheusHandle,
) -> PreparedNode
where
    P: vk_ports::Provider,
{
    let NodeParts { cli, provider, cluster, mut kubelet, serving, listener } = part;
    kubelet.metrics = Some(kubelet::MetricsText({
        let metrics = metrics.clone();
        Arc::new(move || telemetry::render(&metrics))
    }));
    let probes = cli.probe_policy(rules);
    let runtime_version = match provider.runtime_version().await {
        Ok(v) => v,
        Err(e) => {
            warn!(node = %cli.nodename, error = %e, "the backend is unreachable at start; it is retried in the background");
            "unknown".into()
        }
    };
    let server_version = match cluster.nodes.server_version().await {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "the API server's version cannot be read; kubeletVersion is ours");
            None
        }
    };
    let node = cli.node_config(runtime_version, provider.version_name(), server_version.as_deref());
    info!(node = %node.name, runtime = %node.runtime_version, "starting virtual-kubelet");
    let (capacity_tx, capacity_rx) = tokio::sync::watch::channel(Default::default());
    let node_changed = Arc::new(tokio::sync::Notify::new());
    // Listed now, so that service link variables of the first pods come from a listed cache.
    let _ = cluster.pods.service_cache();
    let namespace_labels = probes.uses_labels();
    let pods = pod_controller::PodController::new(
        Arc::clone(&provider),
        Arc::new(cluster.pods),
        pod_controller::Settings {
            node_name: node.name.clone(),
            workers: cli.pod_sync_workers,
            status_interval: cli.full_resync_period,
            refresh_interval: cli.volume_refresh_interval,
            allocatable: capacity_rx,
            node_changed: Arc::clone(&node_changed),
            probe_policy: Arc::new(probes),
            namespace_labels,
            node_os: cli.os.clone(),
        },
    );
    let synced = {
        let pods = Arc::clone(&pods);
        Arc::new(move || pods.synced()) as Arc<dyn Fn() -> bool + Send + Sync>
    };
    let name = node.name.clone();
    let span = tracing::info_span!("node", name = %node.name);
    let (nodes_api, reviews, certificates, identity) =
        (cluster.nodes, cluster.reviews, cluster.certificates, cluster.identity);
    let start = move |cancel: CancellationToken| {
        use tracing::Instrument as _;
        let mut tasks = Vec::new();
        // The node's certificates renewed before they expire (each task ends with `cancel`).
        for (identity, kind) in
            [(identity.as_ref(), Kind::Client), (serving.as_ref(), Kind::Serving)]
        {
            if let Some(identity) = identity {
                let renewal = certificates.keep_renewed(Arc::clone(identity), kind, cancel.clone());
                tokio::spawn(renewal.instrument(span.clone()));
            }
        }
        tasks.push(tokio::spawn(
            node_controller::run(
                Arc::clone(&provider),
                Arc::new(nodes_api),
                node,
                node_controller::Timing {
                    status_interval: cli.node_status_interval,
                    report_interval: cli.node_status_report_interval,
                },
                capacity_tx,
                node_changed,
                cancel.clone(),
            )
            .instrument(span.clone()),
        ));
        let api = kubelet::Kubelet::new(
            provider,
            Arc::new(reviews),
            Arc::new(Index(Arc::clone(&pods))),
            kubelet,
        );
        tasks.push(serve_kubelet_api(listener, api, cancel.clone(), span.clone()));
        tasks.push(tokio::spawn(Arc::clone(&pods).run(cancel).instrument(span)));
        tasks
    };
    PreparedNode { name, leases: cluster.leases, synced, start: Box::new(start) }
}

/// Stands by until this replica holds the leader Lease of `settings`; `None` when `cancel`
/// fired first (the Lease then left to the others).
///
/// # Errors
/// [`RunError::Failed`] when the election cannot be entered (the Lease cannot be read or
/// created).
async fn lead(
    leases: &vk_kube::election::Leases,
    settings: &vk_kube::election::ElectionSettings,
    cancel: &CancellationToken,
) -> Result<Option<vk_kube::election::Election>, RunError> {
    let mut election = leases.elect(settings).await.map_err(|e| RunError::Failed(e.into()))?;
    info!(
        lease = %format!("{}/{}", settings.namespace, settings.name),
        identity = %settings.identity,
        "standing by until this replica holds the leader Lease"
    );
    tokio::select! {
        () = election.leading() => {
            info!(identity = %settings.identity, "this replica holds the leader Lease: running the node");
            Ok(Some(election))
        }
        () = cancel.cancelled() => {
            election.release().await;
            Ok(None)
        }
    }
}

/// While this replica leads: when the Lease is lost (another replica took it), records it in
/// `lost` and stops everything through `cancel`, so that two replicas never run the node at
/// once. Returns the election when `cancel` fires, for its release after the drain.
async fn keep_leading(
    mut election: vk_kube::election::Election,
    lost: Arc<std::sync::atomic::AtomicBool>,
    cancel: CancellationToken,
) -> vk_kube::election::Election {
    tokio::select! {
        () = election.lost() => {
            warn!("this replica lost the leader Lease: stopping");
            lost.store(true, std::sync::atomic::Ordering::Relaxed);
            cancel.cancel();
        }
        () = cancel.cancelled() => {}
    }
    election
}

/// Waits, at most `grace` (`--shutdown-grace`), for the tasks told to stop to finish their
/// in-flight work.
async fn drain(tasks: Vec<tokio::task::JoinHandle<()>>, grace: std::time::Duration) {
    info!(?grace, "shutting down: finishing in-flight work");
    let all = async {
        for task in tasks {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(grace, all).await.is_err() {
        warn!("in-flight work did not finish within the shutdown grace period");
    }
    info!("stopped");
}

/// Binds a node's kubelet API port (`--kubelet-address`:`--kubelet-port`) before anything is
/// started (a taken port stops the process before it touches anything).
///
/// # Errors
/// [`RunError::Failed`] naming the address that cannot be bound.
async fn bind_kubelet(cli: &KubeletArgs) -> Result<tokio::net::TcpListener, RunError> {
    let kubelet_addr = std::net::SocketAddr::new(cli.kubelet_address, cli.kubelet_port);
    tokio::net::TcpListener::bind(kubelet_addr)
        .await
        .with_context(|| {
            format!("binding the kubelet API of node {} on {kubelet_addr}", cli.nodename)
        })
        .map_err(RunError::Failed)
}

/// Serves the kubelet API on `listener` until `cancel` (then drains it), in a task of its own.
fn serve_kubelet_api<P, R, I>(
    listener: tokio::net::TcpListener,
    api: Arc<kubelet::Kubelet<P, R, I>>,
    cancel: CancellationToken,
    span: tracing::Span,
) -> tokio::task::JoinHandle<()>
where
    P: vk_kubelet_api::Backend,
    R: vk_ports::AccessReview,
    I: vk_ports::PodIndex + 'static,
{
    use tracing::Instrument as _;
    tokio::spawn(
        async move {
            if let Err(e) =
                kubelet::serve(listener, api, async move { cancel.cancelled().await }).await
            {
                warn!(error = %e, "the kubelet API stopped");
            }
        }
        .instrument(span),
    )
}

/// Waits for `cancel`; gives up with [`RunError::Failed`] when the pods and workloads (of every
/// node: `synced`) are not listed within `--startup-timeout` (0: no limit).
async fn started(
    cli: &KubeletArgs,
    synced: &(dyn Fn() -> bool + Send + Sync),
    cancel: &CancellationToken,
) -> Result<(), RunError> {
    if !cli.startup_timeout.is_zero() {
        let synced = async {
            while !synced() {
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
