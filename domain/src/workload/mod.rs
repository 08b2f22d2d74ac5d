//! What a pod asks a backend to run, checked, resolved and normalised: the pure first half of
//! turning a pod into a backend workload.
//!
//! [`WorkloadSpec::from_pod`] takes the pod and the [`Inputs`] it references (ConfigMaps, Secrets,
//! Services, tokens) and yields every container with its final environment, command and mounts, and
//! every volume with its files, as the kubelet would prepare them. What cannot be honoured is
//! refused with an [`Unsupported`] error naming the field; what is missing for now is a
//! [`Missing`] error, so the pod waits instead of failing; what the kubelet's admission rejects
//! (`admission`) is a [`Rejection`].
//!
//! Each container (`container`) with its ports (`ports`) and resources (`resources`) is
//! translated on its own; this module puts the pod together.

mod admission;
mod container;
mod ports;
mod resources;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

pub use self::admission::{SAFE_SYSCTLS, sysctl_name};
pub use self::container::{ContainerSpec, Interactive};
pub use self::ports::PortSpec;
pub use self::resources::Resources;
use crate::error::{Missing, Notice, Rejection, Unsupported};
use crate::inputs::{EnvError, Inputs};
use crate::pod::{self, PodKey, RestartPolicy};
use crate::volume::{self, Volume};

/// Kubernetes' default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// A pod ready to be handed to a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSpec {
    /// The pod's `namespace/name`.
    pub key: PodKey,
    /// The pod's `metadata.uid`, recorded by the backend to tell a re-created pod from the old one.
    pub uid: String,
    /// `spec.restartPolicy`.
    pub restart_policy: RestartPolicy,
    /// `spec.terminationGracePeriodSeconds`: how long a container has between the stop signal and
    /// the kill.
    pub termination_grace: Duration,
    /// `spec.activeDeadlineSeconds`: how long the pod may be active before it is failed.
    pub active_deadline: Option<Duration>,
    /// `metadata.annotations`, where backends read their own per-pod choices.
    pub annotations: BTreeMap<String, String>,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// `spec.initContainers`, in order: run to completion one after the other before the app
    /// containers, except sidecars ([`ContainerSpec::sidecar`]), which start in their turn and keep
    /// running beside the app.
    pub init_containers: Vec<ContainerSpec>,
    /// `spec.containers`, in order.
    pub containers: Vec<ContainerSpec>,
    /// `spec.volumes`, resolved.
    pub volumes: Vec<Volume>,
    /// The labels of the pod's Namespace, when they were read (the operator's policy selects
    /// namespaces by label: see [`crate::policy`]).
    pub namespace_labels: Option<BTreeMap<String, String>>,
    /// `spec.hostAliases` as (IP, host names), in order: the entries the kubelet adds to the
    /// containers' `/etc/hosts`, one line each.
    pub host_aliases: Vec<(String, Vec<String>)>,
}

/// Why a pod cannot be handed to the backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The pod can never run as written; its status says so (`ProviderFailed`).
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// Something it needs is missing now, or a container's configuration cannot be made (the
    /// kubelet's `CreateContainerConfigError`); it waits and is tried again.
    #[error(transparent)]
    Missing(#[from] Missing),
    /// The kubelet's admission rejects it: `Failed` with the kubelet's reason, never started.
    #[error(transparent)]
    Rejected(#[from] Rejection),
}

impl From<EnvError> for Refusal {
    fn from(e: EnvError) -> Self {
        match e {
            EnvError::Unsupported(u) => Self::Unsupported(u),
            EnvError::Missing(m) => Self::Missing(m),
        }
    }
}

impl From<EnvError> for Unsupported {
    fn from(e: EnvError) -> Self {
        match e {
            EnvError::Unsupported(u) => u,
            EnvError::Missing(m) => Unsupported::new("spec", m.message),
        }
    }
}

/// A translated pod and the Warning events its translation calls for.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The workload.
    pub spec: WorkloadSpec,
    /// Events to record (optional inputs absent, skipped variable names), in order.
    pub notices: Vec<Notice>,
}

impl WorkloadSpec {
    /// Checks `pod`, resolves it against `inputs` and extracts what a backend needs to run it.
    ///
    /// # Errors
    /// - [`Refusal::Unsupported`] naming the first field that cannot be honoured: ephemeral
    ///   containers, volume types other than configMap, secret, downwardAPI, emptyDir and projected,
    ///   probes and lifecycle hooks, an unknown downward API path, a malformed quantity, port or
    ///   path, or a pod without a name, UID or containers;
    /// - [`Refusal::Missing`] when a mandatory ConfigMap, Secret, key or token is absent, or a
    ///   container's configuration cannot be made (`runAsNonRoot` with `runAsUser: 0`: Event
    ///   reason `Failed`, as the kubelet's `CreateContainerConfigError`);
    /// - [`Refusal::Rejected`] when the kubelet's admission would reject the pod: an OS other than
    ///   the node's (`PodOSNotSupported`, `PodOSSelectorNodeLabelDoesNotMatch`), more CPU or memory
    ///   than the whole node offers (`OutOfcpu`, `OutOfmemory`).
    pub fn from_pod(pod: &Pod, inputs: &Inputs) -> Result<Translated, Refusal> {
        let key = PodKey::of(pod).map_err(|e| Unsupported::new("metadata", e.to_string()))?;
        let uid = pod::uid(pod);
        if uid.is_empty() {
            return Err(Unsupported::new("metadata.uid", "the pod has no UID").into());
        }
        let spec =
            pod.spec.as_ref().ok_or_else(|| Unsupported::new("spec", "the pod has no spec"))?;
        admission::admit_os(spec, &inputs.node_os)?;
        admission::admit_sysctls(spec)?;
        check_pod_spec(spec)?;
        if spec.containers.is_empty() {
            return Err(Unsupported::new("spec.containers", "the pod has no containers").into());
        }
        let volumes = volume::volumes(pod, inputs)?;
        let mut notices = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        let mut build =
            |field: String, c: &Container, init: bool| -> Result<ContainerSpec, Refusal> {
                if !names.insert(c.name.clone()) {
                    return Err(Unsupported::new(
                        format!("{field}.name"),
                        format!("container name {:?} is used twice", c.name),
                    )
                    .into());
                }
                container::container(pod, &field, c, init, inputs, &volumes, &mut notices)
            };
        let init_containers = spec
            .init_containers
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, c)| build(format!("spec.initContainers[{i}]"), c, true))
            .collect::<Result<Vec<_>, _>>()?;
        let containers = spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| build(format!("spec.containers[{i}]"), c, false))
            .collect::<Result<Vec<_>, _>>()?;
        admission::admit_resources(&init_containers, &containers, &inputs.node_allocatable)?;
        let grace = spec
            .termination_grace_period_seconds
            .map_or(DEFAULT_GRACE, |s| Duration::from_secs(s.max(0).unsigned_abs()));
        let active_deadline = spec
            .active_deadline_seconds
            .map(|s| {
                u64::try_from(s).ok().filter(|s| *s > 0).map(Duration::from_secs).ok_or_else(|| {
                    Unsupported::new(
                        "spec.activeDeadlineSeconds",
                        format!("{s} is not a positive number of seconds"),
                    )
                })
            })
            .transpose()?;
        let spec = Self {
            key,
            uid: uid.to_owned(),
            restart_policy: RestartPolicy::of(pod),
            termination_grace: grace,
            active_deadline,
            annotations: pod.metadata.annotations.clone().unwrap_or_default(),
            host_network: spec.host_network == Some(true),
            init_containers,
            containers,
            volumes,
            namespace_labels: inputs.namespace_labels.clone(),
            host_aliases: spec
                .host_aliases
                .iter()
                .flatten()
                .map(|a| (a.ip.clone(), a.hostnames.clone().unwrap_or_default()))
                .filter(|(_, names)| !names.is_empty())
                .collect(),
        };
        Ok(Translated { spec, notices })
    }

    /// Init containers then app containers.
    pub fn all_containers(&self) -> impl Iterator<Item = &ContainerSpec> {
        self.init_containers.iter().chain(self.containers.iter())
    }
}

/// Refuses the pod-level fields no backend can honour: the host's PID or IPC namespace, a shared
/// process namespace, resource claims, user namespaces (`hostUsers: false`). Ephemeral containers
/// are not refused here: the API server adds them to running pods only (`kubectl debug`), whose
/// workload is left as it is; their statuses say they cannot run
/// (`status::EPHEMERAL_UNSUPPORTED`).
///
/// # Errors
/// [`Unsupported`] naming the first such field set.
fn check_pod_spec(spec: &PodSpec) -> Result<(), Unsupported> {
    let unsupported = [
        (
            "spec.hostPID",
            spec.host_pid == Some(true),
            "sharing the host's PID namespace is not supported",
        ),
        (
            "spec.hostIPC",
            spec.host_ipc == Some(true),
            "sharing the host's IPC namespace is not supported",
        ),
        (
            "spec.shareProcessNamespace",
            spec.share_process_namespace == Some(true),
            "a shared process namespace is not supported",
        ),
        (
            "spec.resourceClaims",
            spec.resource_claims.as_ref().is_some_and(|v| !v.is_empty()),
            "dynamic resource claims are not supported",
        ),
    ];
    if let Some((field, _, why)) = unsupported.iter().find(|(_, set, _)| *set) {
        return Err(Unsupported::new(*field, *why));
    }
    if spec.host_users == Some(false) {
        return Err(Unsupported::new(
            "spec.hostUsers",
            "user namespaces are not supported: the pod would run with the host's user IDs",
        ));
    }
    Ok(())
}
