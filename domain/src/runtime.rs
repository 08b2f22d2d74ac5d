//! What a backend reports about a pod it runs, in the kubelet's terms (close to the CRI's pod
//! sandbox and container statuses), so that [`crate::status`] can write the pod status without
//! knowing the backend.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
pub use litemap::LiteMap;

use crate::pod::PodKey;

/// The backend's ID of a pod's workload (for Nomad the job ID, `<id>@<namespace>[@<region>]`
/// when the job is not in the defaults): opaque to the app, made and read by the backend alone.
/// Reads as a `&str` (`Deref`) for the backend that parses it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct WorkloadId(String);

impl WorkloadId {
    /// The ID as the backend wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for WorkloadId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for WorkloadId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl PartialEq<str> for WorkloadId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for WorkloadId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<&str> for WorkloadId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// A pod as a backend runs it: whose it is, whether it was told to stop, and its current sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimePod {
    /// The pod this workload was started for, as recorded by the backend when it was created.
    pub owner: PodOwner,
    /// The backend's ID of the workload (for Nomad, the job ID).
    pub id: WorkloadId,
    /// The backend was asked to stop it (for Nomad, the job's `Stop` flag).
    pub stopping: bool,
    /// The current sandbox (for Nomad, the newest allocation), if one was placed yet.
    pub sandbox: Option<Sandbox>,
    /// The image each container runs, as registered (empty when the backend does not say). A
    /// sorted vector ([`LiteMap`]), not a `BTreeMap`, whose first node holds room for eleven
    /// entries: a pod has a container or two, and every pod's runtime view is held in memory.
    pub images: LiteMap<String, String>,
    /// Why the backend could not place the workload, while it has no sandbox (for Nomad, the
    /// blocked evaluation's figures: `Nomad could not place the allocation: 1 node exhausted on
    /// memory`); `None` otherwise. Becomes the waiting containers' message and a
    /// `FailedPlacement` Event.
    pub unplaced: Option<String>,
}

impl RuntimePod {
    /// True when nothing of the pod runs any more: no sandbox, or a sandbox in a terminal state.
    pub fn is_terminated(&self) -> bool {
        self.sandbox.as_ref().is_none_or(Sandbox::is_terminal)
    }
}

/// The pod a workload belongs to, as the backend recorded it (for Nomad, the job's Meta).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOwner {
    /// The pod's `namespace/name`.
    pub key: PodKey,
    /// The pod's `metadata.uid`: a pod deleted and created again under the same name has a new one.
    pub uid: String,
    /// The node (virtual kubelet) that created the workload.
    pub node: String,
}

/// One placement of the pod (for Nomad, an allocation).
#[derive(Debug, Clone, PartialEq)]
pub struct Sandbox {
    /// The backend's ID of the placement (for Nomad, the allocation ID).
    pub id: String,
    /// Where the placement stands.
    pub state: SandboxState,
    /// When the placement was made; becomes `status.startTime`.
    pub created_at: Option<Timestamp>,
    /// The pod's IP address (`status.podIP`), once known.
    pub pod_ip: Option<String>,
    /// The IP address of the machine that runs it (`status.hostIP`), once known.
    pub host_ip: Option<String>,
    /// The containers by name; a container of the pod missing here has not been created yet. A
    /// sorted vector, as [`RuntimePod::images`] (a `BTreeMap` would take about 3 KB a pod here).
    pub containers: LiteMap<String, ContainerRuntimeStatus>,
    /// A human-readable note from the backend (for Nomad, the allocation's client description).
    pub message: Option<String>,
    /// Where a container port is reached on `pod_ip` when the backend maps it (for Nomad, the
    /// allocation's dynamic ports: `To` → `Value`); a port not listed is reached as itself.
    pub ports: BTreeMap<u16, u16>,
    /// The placement's own preparation before any container may start, as the kubelet sets up a
    /// pod's volumes before its first container (for Nomad on docker: the task that makes the
    /// pod's emptyDir directories writable): `None` when there is none; `Some(false)` while it
    /// runs (or after it failed), `Some(true)` once it has completed. While it is not complete
    /// the first init container is held too, and released by [`crate::reconcile::Step::StartContainer`].
    pub prepared: Option<bool>,
}

impl Sandbox {
    /// True once the placement will not run anything any more.
    pub fn is_terminal(&self) -> bool {
        matches!(self.state, SandboxState::Succeeded | SandboxState::Failed | SandboxState::Lost)
    }
}

/// The state of a placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    /// Accepted but not running yet (for Nomad, client status `pending`).
    Pending,
    /// At least one container was started (`running`).
    Running,
    /// Every container ended as the pod wanted (`complete`).
    Succeeded,
    /// The placement failed (`failed`).
    Failed,
    /// The machine that ran it is gone (`lost`).
    Lost,
    /// The backend cannot tell (`unknown`, for example a disconnected Nomad client).
    Unknown,
}

/// A container's state as the runtime reports it, before Kubernetes' readiness is applied.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerRuntimeStatus {
    /// The runtime's ID of the container, as `<type>://<id>` (`status.containerStatuses[].containerID`).
    pub container_id: Option<String>,
    /// The current state.
    pub state: ContainerState,
    /// How many times the runtime restarted it (`restartCount`).
    pub restart_count: i32,
    /// The previous run's end, when it was restarted (`lastState.terminated`).
    pub last_termination: Option<Termination>,
    /// The readiness probe's current result, set by the prober (`None`: no result yet).
    pub probe_ready: Option<bool>,
    /// Whether the startup probe succeeded, set by the prober (`None`: no result yet).
    pub probe_started: Option<bool>,
    /// The pull of its image for its current (or last) instance, when the runtime tells of one
    /// (`None`: no pull seen, whether the image was there already or the runtime takes none).
    pub image_pull: Option<ImagePull>,
    /// Set by the virtual kubelet's hook runner: the runtime runs the container but its
    /// postStart hook has not succeeded, so `state` shows it waiting (as a kubelet's pod worker
    /// shows it until `startContainer` returns). Such a container is started already: it is
    /// never released again.
    pub post_start_pending: bool,
}

/// A pull of a container's image, as the kubelet's image manager reports it in its Events
/// (`Pulling`, `Pulled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagePull {
    /// Being pulled (or failed: the container waits in `ErrImagePull` then).
    Pulling,
    /// Pulled: the container was started `took` after the pull began (the pull and the
    /// container's creation, the kubelet's "including waiting").
    Pulled {
        /// From the pull's start to the container's start.
        took: std::time::Duration,
    },
}

/// A container's state, as `v1.ContainerState`.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerState {
    /// Not running yet, or waiting to be restarted.
    Waiting {
        /// A CamelCase reason such as `ContainerCreating`.
        reason: String,
        /// Details, if any.
        message: Option<String>,
    },
    /// Running since `started_at`.
    Running {
        /// When the current run started.
        started_at: Option<Timestamp>,
    },
    /// Ended.
    Terminated(Termination),
}

impl Default for ContainerState {
    fn default() -> Self {
        Self::Waiting { reason: "ContainerCreating".into(), message: None }
    }
}

/// How a container run ended, as `v1.ContainerStateTerminated`.
#[derive(Debug, Clone, PartialEq)]
pub struct Termination {
    /// The exit code; 128 + n when killed by signal n, as a container runtime reports it.
    pub exit_code: i32,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled` or a backend-specific CamelCase reason.
    pub reason: String,
    /// Details, if any.
    pub message: Option<String>,
    /// When the run started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
}
