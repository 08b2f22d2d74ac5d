//! The ports of the hexagon: traits the application is written against.
//!
//! - A backend (Nomad in `vk-nomad`, memory in `vk-memory`; anyone's in their own crate)
//!   implements one trait per caller, so that each part of the application sees only what it
//!   uses: [`PodProvider`], the pods' lifecycle (the pod controller; upstream virtual-kubelet's
//!   `PodLifecycleHandler`, with the pod status pulled as a [`RuntimePod`] so that the kubelet's
//!   status rules live once, in `vk-domain`); [`ProbeTarget`], what a probe runs and restarts
//!   (the prober); [`PodNetwork`], a connection to a pod's port (probes and port-forward);
//!   [`PodStreams`], logs, exec and attach (the kubelet API); [`StatsProvider`], resource usage
//!   (`/stats/summary`, `/metrics/resource`); and [`NodeProvider`], the node it makes up.
//!   Everything but the lifecycle and the node has defaults that answer `Unsupported`, so a
//!   backend starts with empty `impl` blocks. [`Provider`] names them all.
//! - [`NodeApi`] and [`PodApi`] are the Kubernetes API as a kubelet uses it, implemented over
//!   kube-rs in `vk-kube`.
//!
//! Ports leak no infrastructure: no HTTP client, no kube client, no `anyhow` (STYLE 10).

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use futures::Stream;
use futures::channel::mpsc;
use vk_domain::inputs::ServiceInfo;
use vk_domain::jiff::Timestamp;
use vk_domain::k8s_openapi::api::coordination::v1::Lease;
use vk_domain::k8s_openapi::api::core::v1::{Node, NodeStatus, Pod, PodStatus};
use vk_domain::kubelet_auth::{NodeAccess, UserInfo};
use vk_domain::logs::LogOptions;
use vk_domain::node::NodeCapacity;
use vk_domain::pod::PodKey;
use vk_domain::runtime::{RuntimePod, WorkloadId};
use vk_domain::stats::Usage;
use vk_domain::workload::WorkloadSpec;

pub use vk_domain;

/// Errors a backend returns. Variants say what the caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The workload does not exist (any more). Deleting it is then done.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request cannot succeed as written; retrying will not help.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The backend refused a concurrent change; retry after re-reading.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend could not be reached or answered with a transient error; retry with backoff.
    #[error("backend unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The backend cannot do this at all.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl ProviderError {
    /// A low-cardinality label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::InvalidInput(_) => "invalid_input",
            Self::Conflict(_) => "conflict",
            Self::Unavailable { .. } => "unavailable",
            Self::Unsupported(_) => "unsupported",
        }
    }
}

/// Something a backend tells without being asked (upstream's `PodNotifier`, generalised).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The workload of this pod (or one of its placements) changed, at `at` when the backend says:
    /// read it again.
    Pod {
        /// The pod.
        key: PodKey,
        /// When the backend made the change.
        at: Option<Timestamp>,
    },
    /// The backend's machines changed (added, drained, down): read the node's capacity again.
    Node,
    /// Changes may have been missed (the feed restarted): list everything again.
    Resync,
}

/// The lifecycle of the pods a backend runs (the pod controller's port). Implementations must be
/// idempotent: every method may be called again for the same pod after a crash, a restart or a
/// retry.
pub trait PodProvider: Send + Sync + 'static {
    /// Starts the workload for `spec`, recording the pod's key, UID and this node's name with it
    /// so that [`PodProvider::list_pods`] can return it as a [`RuntimePod`].
    ///
    /// # Errors
    /// - [`ProviderError::InvalidInput`] when the pod cannot be translated or the backend refuses
    ///   the workload (for example a driver it does not have), with the reason;
    /// - [`ProviderError::Conflict`] when the workload's ID is held by something this node does
    ///   not own (it is never taken over);
    /// - [`ProviderError::Unavailable`] when the backend cannot be reached.
    fn create_pod(
        &self,
        spec: &WorkloadSpec,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Brings the files of a running workload up to date with `spec`: the files of its ConfigMap,
    /// Secret, downward API and projected volumes (service-account tokens included) change in
    /// place, without restarting containers, as a kubelet's volume sync does. The environment is
    /// left alone (it never changes in a running container), and so are the images (see
    /// [`PodProvider::replace_images`]). Nothing is done when nothing changed.
    ///
    /// # Errors
    /// `NotFound` when there is no such workload, `InvalidInput` when `spec` cannot be translated,
    /// `Unavailable` when the backend cannot be reached.
    fn refresh_files(
        &self,
        spec: &WorkloadSpec,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Runs the images `spec` names in place of those the workload runs, the one change
    /// Kubernetes allows to a running pod's containers (`spec.containers[*].image`): each
    /// container whose image changed is restarted with it, keeping its restart count (the
    /// kubelet's). Nothing is done when no image changed.
    ///
    /// # Errors
    /// As [`PodProvider::refresh_files`]; by default `Unsupported` (the app then leaves the
    /// workload as it is and says so).
    fn replace_images(
        &self,
        spec: &WorkloadSpec,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send {
        let _ = spec;
        async {
            Err(ProviderError::Unsupported(
                "this backend cannot replace a running container's image".into(),
            ))
        }
    }

    /// Lets init container `container` of workload `id` start. Backends that cannot order init
    /// containers themselves hold every init container after the first until it is released; the
    /// caller releases one once those before it have completed (or, for a sidecar, started).
    /// Releasing twice is harmless.
    ///
    /// # Errors
    /// `NotFound` when there is no such workload, `Unavailable` when the backend cannot be reached.
    fn start_container(
        &self,
        id: &WorkloadId,
        container: &str,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Asks the workload `id` to stop gracefully, its containers getting the termination grace
    /// period recorded at creation.
    ///
    /// # Errors
    /// [`ProviderError::NotFound`] when there is no such workload, [`ProviderError::Unavailable`]
    /// when the backend cannot be reached.
    fn stop_pod(&self, id: &WorkloadId) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Kills at once whatever still runs of workload `id` (SIGKILL): the deletion grace is over.
    ///
    /// # Errors
    /// As [`PodProvider::stop_pod`].
    fn kill_pod(&self, id: &WorkloadId) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Removes workload `id` and its history from the backend, stopping it first if it runs.
    ///
    /// # Errors
    /// As [`PodProvider::stop_pod`]; `NotFound` means it is already gone.
    fn purge_pod(&self, id: &WorkloadId) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// The workload this node owns for `key`, if any.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when the backend cannot be reached.
    fn get_pod(
        &self,
        key: &PodKey,
    ) -> impl Future<Output = Result<Option<RuntimePod>, ProviderError>> + Send;

    /// Changes the backend pushes, so the caller need not poll. The stream starts with
    /// [`Change::Resync`] and says it again whenever it may have missed something; it retries on
    /// its own and does not end. Backends that cannot push keep the default, a stream that never
    /// yields: the caller then relies on [`PodProvider::list_pods`] alone.
    fn changes(&self) -> impl Stream<Item = Change> + Send + 'static {
        futures::stream::pending()
    }

    /// Every workload this node owns (and only those: workloads recorded for another node are never
    /// returned, so they are never touched).
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when the backend cannot be reached.
    fn list_pods(&self) -> impl Future<Output = Result<Vec<RuntimePod>, ProviderError>> + Send;
}

/// What a probe runs in a pod's containers, and the restart a failed probe causes (the
/// kubelet's `ContainerCommandRunner` and its runtime's restart). HTTP and TCP probes reach the
/// pod through [`PodNetwork::dial`].
pub trait ProbeTarget: Send + Sync + 'static {
    /// Runs `command` in container `container` of workload `id` to completion and returns its exit
    /// code (exec probes; output is discarded). The caller bounds the time it waits, allowing
    /// for [`EXEC_RUNS`] runs: a backend may run the command again to confirm a success.
    ///
    /// # Errors
    /// `NotFound` when there is no such workload or container running, `Unavailable` when the
    /// backend cannot be reached or the command's end was not seen.
    fn exec(
        &self,
        id: &WorkloadId,
        container: &str,
        command: &[String],
    ) -> impl Future<Output = Result<i32, ProviderError>> + Send;

    /// Restarts container `container` of workload `id` in place (a failed liveness or startup
    /// probe); its restart count goes up by one.
    ///
    /// # Errors
    /// `NotFound` when there is no such workload or the container does not run, `Unavailable`
    /// when the backend cannot be reached.
    fn restart_container(
        &self,
        id: &WorkloadId,
        container: &str,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Kills container `container` of workload `id` (SIGKILL, no grace: a failed postStart hook,
    /// as the kubelet's `killContainer` after `FailedPostStartHook`); whether it starts again is
    /// up to the pod's `restartPolicy`, as for a container that crashed. The default restarts
    /// it in place ([`ProbeTarget::restart_container`]) for backends that cannot kill one
    /// container: right for `Always` and `OnFailure`, a restart too many for `Never`.
    ///
    /// # Errors
    /// As [`ProbeTarget::restart_container`].
    fn kill_container(
        &self,
        id: &WorkloadId,
        container: &str,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send {
        self.restart_container(id, container)
    }
}

/// A connection to a port of a pod, as seen from inside it: the backend knows where the pod's
/// network is and how its ports are mapped (for Nomad, an allocation's address and its port
/// mapping). HTTP and TCP probes and `kubectl port-forward` (upstream's `PortForward`) all go
/// through it, so the mapping exists once, in the backend.
pub trait PodNetwork: Send + Sync + 'static {
    /// A byte stream to TCP port `port` of workload `id`, as seen from inside the pod.
    ///
    /// # Errors
    /// `NotFound` when there is no such workload or it has no running sandbox, `Unsupported` when
    /// the backend cannot connect to pods (the default), `Unavailable` when the backend cannot be
    /// reached, the pod has no address yet, or nothing accepts connections on that port
    /// (refused, with the address in the message).
    fn dial(
        &self,
        id: &WorkloadId,
        port: u16,
    ) -> impl Future<Output = Result<Duplex, ProviderError>> + Send {
        let _ = (id, port);
        async { Err(ProviderError::Unsupported("this backend cannot connect to pods".into())) }
    }
}

/// The streams of the kubelet API: a container's output, and commands run in or attached to it.
pub trait PodStreams: Send + Sync + 'static {
    /// The output of container `container` of workload `id` (`kubectl logs`; upstream's
    /// `GetContainerLogs`), with every option of `opts` applied: the stream(s), `previous`, `since`,
    /// `tail_lines`, `timestamps`, `limit_bytes`, and with `follow` a stream that goes on until the
    /// container stops or the receiver is dropped. Bytes are the container's own output, lines
    /// ending in `\n`, prefixed when `opts.timestamps` asks.
    ///
    /// # Errors
    /// `NotFound` when there is no such workload or container (or no previous instance for
    /// `previous`), `Unsupported` when the backend keeps no logs (the default), `Unavailable` when
    /// the backend cannot be reached. Errors after the first byte end the stream with an `Err` item.
    fn logs(
        &self,
        id: &WorkloadId,
        container: &str,
        opts: &LogOptions,
    ) -> impl Future<Output = Result<ByteStream, ProviderError>> + Send {
        let _ = (id, container, opts);
        async { Err(ProviderError::Unsupported("this backend keeps no container logs".into())) }
    }

    /// Runs `command` in container `container` of workload `id` with its standard streams wired to
    /// `io` (`kubectl exec`; upstream's `RunInContainer`) and returns its exit code once it ends.
    /// `io.stdin` ending is the command's stdin reaching EOF; with `io.tty` the command gets a
    /// terminal, sized by `io.resize`, and its stderr is merged into stdout.
    ///
    /// # Errors
    /// `NotFound` when there is no such workload or container running, `InvalidInput` when the
    /// command cannot start, `Unsupported` when the backend cannot exec (the default),
    /// `Unavailable` when the backend cannot be reached or the session broke.
    fn exec_stream(
        &self,
        id: &WorkloadId,
        container: &str,
        command: &[String],
        io: ExecIo,
    ) -> impl Future<Output = Result<i32, ProviderError>> + Send {
        let _ = (id, container, command, io);
        async { Err(ProviderError::Unsupported("this backend cannot exec".into())) }
    }

    /// Attaches `io` to the running process of container `container` of workload `id`
    /// (`kubectl attach`; upstream's `AttachToContainer`) until it stops or the client goes away.
    ///
    /// # Errors
    /// `Unsupported` when the backend cannot attach at all (the default) or cannot give the
    /// process what `io` asks (for example stdin), saying which; otherwise as
    /// [`PodStreams::exec_stream`].
    fn attach(
        &self,
        id: &WorkloadId,
        container: &str,
        io: ExecIo,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send {
        let _ = (id, container, io);
        async { Err(ProviderError::Unsupported("this backend cannot attach".into())) }
    }
}

/// Resource usage, for the kubelet API's stats and resource metrics (the kubelet's
/// `stats.Provider`).
pub trait StatsProvider: Send + Sync + 'static {
    /// Resource usage of the node and of every running pod this node owns, sampled now
    /// (`/stats/summary` and `/metrics/resource`; upstream's `GetStatsSummary` and
    /// `GetMetricsResource`).
    ///
    /// # Errors
    /// `Unsupported` when the backend reports no usage (the default), `Unavailable` when it cannot
    /// be reached.
    fn usage(&self) -> impl Future<Output = Result<Usage, ProviderError>> + Send {
        async { Err(ProviderError::Unsupported("this backend reports no resource usage".into())) }
    }
}

/// Every port a backend implements, as the application runs it ([`PodProvider`],
/// [`ProbeTarget`], [`PodNetwork`], [`PodStreams`], [`StatsProvider`], [`NodeProvider`]);
/// implemented for every type that implements them all.
pub trait Provider:
    PodProvider + ProbeTarget + PodNetwork + PodStreams + StatsProvider + NodeProvider
{
}

impl<T> Provider for T where
    T: PodProvider + ProbeTarget + PodNetwork + PodStreams + StatsProvider + NodeProvider
{
}

/// A stream of bytes from a backend (log output). Ends when the source does.
pub type ByteStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, ProviderError>> + Send>>;

/// A bidirectional byte stream (a forwarded port): bytes written reach the pod's port.
pub type Duplex = Box<dyn Connection>;

/// What a [`Duplex`] is: an async read and write byte stream.
pub trait Connection: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Connection for T {}

/// A terminal size in character cells (`remotecommand.TerminalSize`, JSON `{"Width":..,"Height":..}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// The standard streams of an exec or attach session (upstream's `AttachIO`). A stream the client
/// did not ask for is `None`. Channels are bounded, so a slow client slows the command down rather
/// than filling memory; a send failing means the client went away.
#[derive(Debug)]
pub struct ExecIo {
    /// The client's stdin; the channel closing is EOF.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// Where the command's stdout goes.
    pub stdout: Option<mpsc::Sender<Bytes>>,
    /// Where the command's stderr goes (never with `tty`).
    pub stderr: Option<mpsc::Sender<Bytes>>,
    /// Whether the command gets a terminal.
    pub tty: bool,
    /// Terminal size changes (with `tty`), the first one before or soon after the start.
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

/// A backend's view of the node it makes up.
pub trait NodeProvider: Send + Sync + 'static {
    /// What the backend can run now. A successful answer also means the backend is reachable,
    /// which is what the node's `Ready` condition reports.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when the backend cannot be reached.
    fn capacity(&self) -> impl Future<Output = Result<NodeCapacity, ProviderError>> + Send;

    /// The runtime version for `nodeInfo.containerRuntimeVersion`, as `<name>://<version>`.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when the backend cannot be reached.
    fn runtime_version(&self) -> impl Future<Output = Result<String, ProviderError>> + Send;

    /// Describes the backend's own metrics (`metrics::describe_*`: `# HELP` text, units) to the
    /// process's recorder; called once, after the recorder is installed. Nothing by default.
    fn describe_metrics(&self) {}

    /// The reason of the node's `Ready=False` condition when [`NodeProvider::capacity`] fails, in
    /// the CamelCase of condition reasons (Nomad's: `NomadUnreachable`).
    fn unreachable_reason(&self) -> &'static str {
        "BackendUnreachable"
    }

    /// The backend's name in the node's `nodeInfo.kubeletVersion`,
    /// `v<Kubernetes version>-vk-<name>-<this project's version>` (Nomad's: `nomad`).
    fn version_name(&self) -> &'static str {
        "provider"
    }
}

/// Errors from the Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The object does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The object exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A precondition (UID, resourceVersion) failed; re-read and decide again.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The API server refused the request as invalid or forbidden; retrying will not help.
    #[error("refused: {0}")]
    Refused(String),
    /// The API server could not be reached or answered with a transient error; retry.
    #[error("API server unavailable: {0}")]
    Unavailable(String),
}

impl ClusterError {
    /// A low-cardinality label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::AlreadyExists(_) => "already_exists",
            Self::Conflict(_) => "conflict",
            Self::Refused(_) => "refused",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// A pod bound to this node as the application holds it: what the kubelet API reads.
#[derive(Debug, Clone)]
pub struct IndexedPod {
    /// The pod as last seen (shared with the index, which keeps it).
    pub pod: std::sync::Arc<Pod>,
    /// Its workload's ID in the backend (for Nomad the job ID, `<id>@<namespace>[@<region>]`),
    /// once it has one.
    pub workload: Option<WorkloadId>,
    /// Whether its workload runs now (a sandbox that has not ended).
    pub running: bool,
}

/// The pods bound to this node as the application knows them (its pod watch and the backend),
/// which the kubelet API reads to answer requests (upstream's `PodLister` plus the workload).
pub trait PodIndex: Send + Sync + 'static {
    /// The pod `key` bound to this node, if it is.
    fn pod(&self, key: &PodKey) -> Option<IndexedPod>;
    /// Every pod bound to this node.
    fn pods(&self) -> Vec<IndexedPod>;
}

/// The Node and its Lease as a kubelet writes them.
pub trait NodeApi: Send + Sync + 'static {
    /// Creates `node`, or, when it exists, leaves its spec (taints are immutable for a node
    /// identity) and returns the existing one. Returns the Node as stored (with its UID and status).
    ///
    /// # Errors
    /// [`ClusterError::Refused`] when the API server forbids it; `Unavailable` when unreachable.
    fn register(&self, node: &Node) -> impl Future<Output = Result<Node, ClusterError>> + Send;

    /// Replaces the node's status with `status` (conditions merge by type).
    ///
    /// # Errors
    /// `NotFound` when the Node was deleted; `Unavailable` when unreachable.
    fn update_status(
        &self,
        name: &str,
        status: &NodeStatus,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Creates or renews the node Lease.
    ///
    /// # Errors
    /// `Unavailable` when unreachable; `Refused` when forbidden.
    fn renew_lease(&self, lease: &Lease) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// The API server's version (`GET /version`'s `gitVersion`, such as `v1.35.2`), so that the
    /// node never claims a kubelet newer than its control plane; `None` (the default) when this
    /// API cannot tell.
    ///
    /// # Errors
    /// `Unavailable` when unreachable.
    fn server_version(&self) -> impl Future<Output = Result<Option<String>, ClusterError>> + Send {
        async { Ok(None) }
    }
}

/// The most runs of one [`ProbeTarget::exec`]: a backend whose exec may report a success for a
/// command that has not run (Nomad's docker driver, hashicorp/nomad#27146) confirms it with a
/// second run. A probe's `timeoutSeconds` bounds each run.
pub const EXEC_RUNS: u32 = 2;

/// A change seen by the pod watch.
#[derive(Debug, Clone)]
pub enum PodWatchEvent {
    /// The pod was created or changed.
    Applied(Pod),
    /// The pod object is gone.
    Deleted(Pod),
    /// The watch (re)listed: these are all the pods bound to the node now. Pods not in it are gone.
    Relisted(Vec<Pod>),
}

/// Warning or Normal, as `v1.Event.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Routine.
    Normal,
    /// Something the pod's owner should look at.
    Warning,
}

/// A pod status write for [`PodApi::update_status`].
#[derive(Debug, Clone, Copy)]
pub struct StatusWrite<'a> {
    /// The status the pod shows once written.
    pub status: &'a PodStatus,
    /// The strategic-merge patch body (`{"status": {...}}`) that writes it.
    pub patch: &'a serde_json::Value,
}

/// The pods bound to a node, as a kubelet reads and writes them.
pub trait PodApi: Send + Sync + 'static {
    /// Watches the pods with `spec.nodeName=<node>`, starting with a [`PodWatchEvent::Relisted`]
    /// and relisting after every watch restart. The stream retries on its own with backoff and
    /// does not end.
    fn watch(&self, node: &str) -> impl Stream<Item = PodWatchEvent> + Send + 'static;

    /// Writes a pod's status: `write.patch`, the strategic-merge patch that turns the status the
    /// API server last showed into `write.status` (made once, by the caller, with
    /// `vk_domain::status::patch`, which also decided that something changed), is sent to the
    /// status subresource. `write.status` is the whole status it makes, for implementations that
    /// hold objects rather than patch them.
    ///
    /// # Errors
    /// `NotFound` when the pod is gone; `Unavailable` when unreachable.
    fn update_status(
        &self,
        key: &PodKey,
        write: StatusWrite<'_>,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Deletes the pod object at once (grace 0) if it still has `uid`.
    ///
    /// # Errors
    /// `Unavailable` when unreachable. A pod that is gone or has another UID is not an error.
    fn delete(
        &self,
        key: &PodKey,
        uid: &str,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Records an Event about `pod` from this node, or about one of its containers when
    /// `field_path` names it (`involvedObject.fieldPath`: `spec.containers{<name>}`,
    /// `spec.initContainers{<name>}`), as the kubelet does. An implementation may queue it and
    /// publish it later, as client-go's event broadcaster does.
    ///
    /// # Errors
    /// `Unavailable` when unreachable or the queue is full (the Event is dropped); `Refused` when
    /// forbidden.
    fn record_event(
        &self,
        pod: &Pod,
        field_path: Option<&str>,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send;
}

/// The objects a kubelet reads for the pods bound to it, so that their containers get their
/// environment and volume files: ConfigMaps, Secrets, Services and service-account tokens. Under
/// the Node authorizer a node may read only what its pods reference.
pub trait InputsApi: Send + Sync + 'static {
    /// The data of ConfigMap `namespace/name` (`data` as UTF-8 bytes and `binaryData`), `None` when
    /// it does not exist.
    ///
    /// # Errors
    /// `Refused` when forbidden; `Unavailable` when unreachable.
    fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<BTreeMap<String, Vec<u8>>>, ClusterError>> + Send;

    /// The data of Secret `namespace/name`, `None` when it does not exist.
    ///
    /// # Errors
    /// As [`InputsApi::config_map`].
    fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<BTreeMap<String, Vec<u8>>>, ClusterError>> + Send;

    /// The Services of `namespace`.
    ///
    /// # Errors
    /// As [`InputsApi::config_map`].
    fn services(
        &self,
        namespace: &str,
    ) -> impl Future<Output = Result<Vec<ServiceInfo>, ClusterError>> + Send;

    /// The labels of Namespace `namespace` (empty when it has none or does not exist), for the
    /// operator's policy rules that select namespaces by label.
    ///
    /// # Errors
    /// As [`InputsApi::config_map`].
    fn namespace_labels(
        &self,
        namespace: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, ClusterError>> + Send;

    /// A token for service account `service_account` of the pod's namespace, bound to `pod`
    /// (TokenRequest with `boundObjectRef`), for `audience` (empty: the API server's) and
    /// `expiration_seconds`. Returns the token and when it expires.
    ///
    /// # Errors
    /// `Refused` when forbidden (the pod is not bound to this node); `Unavailable` when unreachable.
    fn request_token(
        &self,
        pod: &Pod,
        service_account: &str,
        audience: &str,
        expiration_seconds: i64,
    ) -> impl Future<Output = Result<(String, Timestamp), ClusterError>> + Send;
}

/// A decision on a [`NodeAccess`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed or not.
    pub allowed: bool,
    /// The authorizer's reason, when it gave one (shown to a client refused with 403).
    pub reason: String,
}

/// The API server's reviews, as a kubelet with `--authentication-token-webhook` and
/// `--authorization-mode=Webhook` uses them for its own API.
pub trait AccessReview: Send + Sync + 'static {
    /// Who bearer token `token` belongs to (a TokenReview); `None` when it is not valid.
    ///
    /// # Errors
    /// `Unavailable` when the API server cannot be reached; `Refused` when this node may not
    /// create TokenReviews.
    fn authenticate(
        &self,
        token: &str,
    ) -> impl Future<Output = Result<Option<UserInfo>, ClusterError>> + Send;

    /// Whether `user` may do `access` (a SubjectAccessReview).
    ///
    /// # Errors
    /// As [`AccessReview::authenticate`].
    fn authorize(
        &self,
        user: &UserInfo,
        access: &NodeAccess,
    ) -> impl Future<Output = Result<Decision, ClusterError>> + Send;
}
