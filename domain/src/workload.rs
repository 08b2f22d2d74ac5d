//! What a pod asks a backend to run, checked, resolved and normalised: the pure first half of
//! turning a pod into a backend workload.
//!
//! [`WorkloadSpec::from_pod`] takes the pod and the [`Inputs`] it references (ConfigMaps, Secrets,
//! Services, tokens) and yields every container with its final environment, command and mounts, and
//! every volume with its files, as the kubelet would prepare them. What cannot be honoured is
//! refused with an [`Unsupported`] error naming the field; what is missing for now is a
//! [`Missing`] error, so the pod waits instead of failing.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use crate::env::{self, EnvVar, Value};
use crate::error::{Missing, Notice, Rejection, Unsupported};
use crate::inputs::{self, EnvError, Inputs};
use crate::pod::{self, PodKey, RestartPolicy};
use crate::probe::{self, Probe};
use crate::quantity;
use crate::security::{self, Security};
use crate::volume::{self, Mount, Volume};

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

/// One container of the pod.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerSpec {
    /// `name`.
    pub name: String,
    /// `image`.
    pub image: String,
    /// `command`, `$(VAR)` expanded (the image's entrypoint when empty).
    pub command: Vec<Value>,
    /// `args`, `$(VAR)` expanded (the image's cmd when empty).
    pub args: Vec<Value>,
    /// `workingDir`.
    pub working_dir: Option<String>,
    /// The final environment, in the kubelet's order (service links, `envFrom`, `env`).
    pub env: Vec<EnvVar>,
    /// `ports`.
    pub ports: Vec<PortSpec>,
    /// `resources`.
    pub resources: Resources,
    /// `volumeMounts`.
    pub mounts: Vec<Mount>,
    /// The pod's and the container's `securityContext`, merged as the kubelet merges them.
    pub security: Security,
    /// An init container with `restartPolicy: Always` (a native sidecar).
    pub sidecar: bool,
    /// `imagePullPolicy: Always`: the image is pulled at every start (the API server sets it for
    /// untagged and `:latest` images when the pod leaves it out). `IfNotPresent` and `Never` pull
    /// a missing image only.
    pub pull_always: bool,
    /// The login for the image's registry from the pod's `imagePullSecrets`, matched as the
    /// kubelet matches them ([`crate::registry::credentials_for`]); `None` when none matches.
    pub registry_auth: Option<crate::registry::RegistryAuth>,
    /// `readinessProbe`, run by the virtual kubelet.
    pub readiness: Option<Probe>,
    /// `livenessProbe`, run by the virtual kubelet.
    pub liveness: Option<Probe>,
    /// `startupProbe`, run by the virtual kubelet.
    pub startup: Option<Probe>,
    /// `terminationMessagePath` (absolute; the API server defaults it to
    /// `/dev/termination-log`): the file whose content, at most 4096 bytes, becomes the message
    /// of the container's `terminated` state. `None` when the pod leaves it empty.
    pub termination_message_path: Option<String>,
    /// `terminationMessagePolicy: FallbackToLogsOnError`: a container that failed with an empty
    /// message file gets the end of its log instead (80 lines, 2048 bytes at most).
    pub termination_fallback_to_logs: bool,
}

/// A container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// `name`, if given.
    pub name: Option<String>,
    /// `containerPort`, 1–65535.
    pub container_port: u16,
    /// `hostPort`, when the pod asks for a fixed port on the host.
    pub host_port: Option<u16>,
    /// `protocol`: `TCP` (default), `UDP` or `SCTP`.
    pub protocol: String,
}

/// A container's resource requests and limits, in kubelet units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// `requests.cpu` in millicores (1000 = one core).
    pub cpu_request_millis: Option<u64>,
    /// `limits.cpu` in millicores.
    pub cpu_limit_millis: Option<u64>,
    /// `requests.memory` in bytes.
    pub memory_request_bytes: Option<u64>,
    /// `limits.memory` in bytes.
    pub memory_limit_bytes: Option<u64>,
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
        admit_os(spec, &inputs.node_os)?;
        admit_sysctls(spec)?;
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
                container(pod, &field, c, init, inputs, &volumes, &mut notices)
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
        admit(&init_containers, &containers, &inputs.node_allocatable)?;
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

/// The kubelet's admission of the pod's operating system (`lifecycle.PredicateAdmitHandler`): a
/// `spec.os.name` other than the node's is `PodOSNotSupported`, a `kubernetes.io/os` node selector
/// other than the node's `PodOSSelectorNodeLabelDoesNotMatch`.
fn admit_os(spec: &PodSpec, node_os: &str) -> Result<(), Rejection> {
    let node_os = if node_os.is_empty() { "linux" } else { node_os };
    let selected = spec.node_selector.as_ref().and_then(|s| s.get("kubernetes.io/os"));
    if selected.is_some_and(|os| os != node_os) {
        return Err(Rejection::new(
            "PodOSSelectorNodeLabelDoesNotMatch",
            "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label",
        ));
    }
    if spec.os.as_ref().is_some_and(|o| o.name != node_os) {
        return Err(Rejection::new(
            "PodOSNotSupported",
            "Failed to admit pod as the OS field doesn't match node OS",
        ));
    }
    Ok(())
}

/// The sysctls the kubelet allows without `--allowed-unsafe-sysctls`
/// (`pkg/kubelet/sysctl.SafeSysctlAllowlist`): namespaced, and harmless to other pods.
pub const SAFE_SYSCTLS: [&str; 12] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// A sysctl name as the kubelet reads it (`ConvertSysctlVariableToDotsSeparator`): when its
/// first separator is `/` (`net/ipv4/tcp_rmem`), `/` and `.` are swapped.
pub fn sysctl_name(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => name.to_owned(),
    }
}

/// The kubelet's sysctl admission (`sysctl.patternAllowlist`): a sysctl outside the safe set is
/// `SysctlForbidden`; a `net.*` sysctl of a pod in the host's network namespace too.
fn admit_sysctls(spec: &PodSpec) -> Result<(), Rejection> {
    let sysctls =
        spec.security_context.as_ref().and_then(|s| s.sysctls.as_deref()).unwrap_or_default();
    for s in sysctls {
        let name = sysctl_name(&s.name);
        if !SAFE_SYSCTLS.contains(&name.as_str()) {
            return Err(Rejection::new(
                "SysctlForbidden",
                format!("forbidden sysctl: {:?} not allowlisted", s.name),
            ));
        }
        if spec.host_network == Some(true) && name.starts_with("net.") {
            return Err(Rejection::new(
                "SysctlForbidden",
                format!("forbidden sysctl: {:?} not allowed with host net enabled", s.name),
            ));
        }
    }
    Ok(())
}

/// The kubelet's admission of a pod's requests against the node's allocatable resources
/// (`lifecycle.PredicateAdmitHandler`, reasons `OutOfcpu` and `OutOfmemory`), for the one pod
/// alone: a pod requesting more than the whole node offers can never run, and is rejected rather
/// than left for the backend to hold pending forever. The pod's request is the kubelet's: the
/// larger of the sum over app containers (and sidecars) and the largest init container. Skipped
/// while the node's allocatable is not known yet (all zero).
fn admit(
    init: &[ContainerSpec],
    app: &[ContainerSpec],
    node: &crate::node::NodeCapacity,
) -> Result<(), Rejection> {
    if node.cpu_millis == 0 && node.memory_bytes == 0 {
        return Ok(());
    }
    type Request = fn(&Resources) -> Option<u64>;
    let checks: [(&'static str, &str, Request, u64); 2] = [
        ("OutOfcpu", "cpu", |r| r.cpu_request_millis.or(r.cpu_limit_millis), node.cpu_millis),
        (
            "OutOfmemory",
            "memory",
            |r| r.memory_request_bytes.or(r.memory_limit_bytes),
            node.memory_bytes,
        ),
    ];
    for (reason, name, request, offered) in checks {
        let running = app.iter().chain(init.iter().filter(|c| c.sidecar));
        let sum = running.filter_map(|c| request(&c.resources)).fold(0u64, u64::saturating_add);
        let largest_init =
            init.iter().filter(|c| !c.sidecar).filter_map(|c| request(&c.resources)).max();
        let pod = sum.max(largest_init.unwrap_or(0));
        if pod > offered {
            // The kubelet's words (`InsufficientResourceError`), "used" being this node's
            // other pods, which Nomad places around; the pod alone does not fit.
            return Err(Rejection::new(
                reason,
                format!(
                    "Node didn't have enough resource: {name}, requested: {pod}, used: 0, capacity: {offered}"
                ),
            ));
        }
    }
    Ok(())
}

fn check_pod_spec(spec: &PodSpec) -> Result<(), Unsupported> {
    if spec.ephemeral_containers.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(Unsupported::new(
            "spec.ephemeralContainers",
            "ephemeral containers are not supported",
        ));
    }
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

/// The docker config entries of the pod's `imagePullSecrets`, in order. A Secret that is missing
/// or holds no docker config is passed over, as the kubelet passes it over (the pull may then
/// fail with the registry's answer).
fn pull_entries(pod: &Pod, inputs: &Inputs) -> Vec<crate::registry::ConfigEntry> {
    let names = pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten());
    names
        .filter_map(|r| inputs.secrets.get(&r.name).cloned().flatten())
        .filter_map(|data| crate::registry::parse_config(&data).ok())
        .flatten()
        .collect()
}

fn container(
    pod: &Pod,
    field: &str,
    c: &Container,
    init: bool,
    inputs: &Inputs,
    volumes: &[Volume],
    notices: &mut Vec<Notice>,
) -> Result<ContainerSpec, Refusal> {
    let image = c.image.clone().filter(|i| !i.trim().is_empty());
    let image = image.ok_or_else(|| Unsupported::new(format!("{field}.image"), "no image"))?;
    // The kubelet's InvalidImageName: a reference that does not parse never reaches a runtime
    // (nor a backend's configuration, where `${...}` could be interpolated).
    crate::image::check_reference(&image).map_err(|why| {
        Unsupported::new(
            format!("{field}.image"),
            format!("{image:?} is not a valid image reference: {why}"),
        )
    })?;
    if c.name.is_empty() {
        return Err(Unsupported::new(format!("{field}.name"), "the container has no name").into());
    }
    let sidecar = match c.restart_policy.as_deref() {
        None => false,
        Some("Always") if init => true,
        Some(other) => {
            return Err(Unsupported::new(
                format!("{field}.restartPolicy"),
                format!("{other:?} is not allowed here (only \"Always\", on an init container)"),
            )
            .into());
        }
    };
    let unsupported = [
        ("lifecycle", c.lifecycle.is_some()),
        ("resizePolicy", c.resize_policy.as_ref().is_some_and(|v| !v.is_empty())),
        ("restartPolicyRules", c.restart_policy_rules.as_ref().is_some_and(|v| !v.is_empty())),
    ];
    if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(Unsupported::new(format!("{field}.{name}"), "not supported yet").into());
    }
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let security = security::merge(pod_sc, c.security_context.as_ref(), field)?;
    if security.run_as_non_root && security.run_as_user == Some(0) {
        // The kubelet's `verifyRunAsNonRoot`: the container is not created, and waits in
        // CreateContainerConfigError with this message (Event `Failed`).
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        return Err(Missing::new(
            "Failed",
            format!(
                "container's runAsUser breaks non-root policy (pod: \"{name}_{ns}({})\", container: {})",
                pod::uid(pod),
                c.name
            ),
        )
        .into());
    }
    let env = inputs::container_env(pod, field, c, inputs, notices)?;
    let expand_all = |list: &Option<Vec<String>>| {
        list.iter().flatten().map(|a| env::expand_arg(a, &env)).collect::<Vec<Value>>()
    };
    let command = expand_all(&c.command);
    let args = expand_all(&c.args);
    let mut ports = Vec::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let f = format!("{field}.ports[{i}]");
        let port = |v: i32, what: &str| {
            u16::try_from(v).ok().filter(|p| *p > 0).ok_or_else(|| {
                Unsupported::new(format!("{f}.{what}"), format!("{v} is not a port number"))
            })
        };
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        if !matches!(protocol.as_str(), "TCP" | "UDP" | "SCTP") {
            return Err(Unsupported::new(
                format!("{f}.protocol"),
                format!("unknown protocol {protocol:?}"),
            )
            .into());
        }
        ports.push(PortSpec {
            name: p.name.clone().filter(|n| !n.is_empty()),
            container_port: port(p.container_port, "containerPort")?,
            host_port: p.host_port.filter(|h| *h != 0).map(|h| port(h, "hostPort")).transpose()?,
            protocol,
        });
    }
    let mut resources = Resources::default();
    if let Some(r) = &c.resources {
        if r.claims.as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(Unsupported::new(
                format!("{field}.resources.claims"),
                "dynamic resource claims are not supported",
            )
            .into());
        }
        let get = |kind: &str, res: &str| {
            let m = if kind == "requests" { &r.requests } else { &r.limits };
            m.as_ref()
                .and_then(|m| m.get(res))
                .map(|q| (format!("{field}.resources.{kind}.{res}"), q.0.clone()))
        };
        for kind in ["limits", "requests"] {
            let m = if kind == "requests" { &r.requests } else { &r.limits };
            for name in m.iter().flat_map(|m| m.keys()) {
                if !matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                    return Err(Unsupported::new(
                        format!("{field}.resources.{kind}.{name}"),
                        format!("resource {name:?} cannot be given to a Nomad task (cpu, memory and ephemeral-storage can)"),
                    )
                    .into());
                }
            }
        }
        resources.cpu_request_millis =
            get("requests", "cpu").map(|(f, q)| quantity::cpu_millis(&f, &q)).transpose()?;
        resources.cpu_limit_millis =
            get("limits", "cpu").map(|(f, q)| quantity::cpu_millis(&f, &q)).transpose()?;
        resources.memory_request_bytes =
            get("requests", "memory").map(|(f, q)| quantity::bytes(&f, &q)).transpose()?;
        resources.memory_limit_bytes =
            get("limits", "memory").map(|(f, q)| quantity::bytes(&f, &q)).transpose()?;
        for (f, q) in [get("requests", "ephemeral-storage"), get("limits", "ephemeral-storage")]
            .into_iter()
            .flatten()
        {
            quantity::bytes(&f, &q)?;
        }
    }
    let mounts = volume::mounts(
        field,
        c.volume_mounts.as_deref(),
        c.volume_devices.as_ref().is_some_and(|v| !v.is_empty()),
        volumes,
        &env,
        &c.name,
    )?;
    let probe = |name: &str, p: &Option<k8s_openapi::api::core::v1::Probe>, kind| {
        p.as_ref().map(|p| probe::parse(&format!("{field}.{name}"), p, c, kind)).transpose()
    };
    let readiness = probe("readinessProbe", &c.readiness_probe, probe::Kind::Readiness)?;
    let liveness = probe("livenessProbe", &c.liveness_probe, probe::Kind::Liveness)?;
    let startup = probe("startupProbe", &c.startup_probe, probe::Kind::Startup)?;
    let registry_auth = crate::registry::credentials_for(&image, &pull_entries(pod, inputs));
    let termination_message_path = c.termination_message_path.clone().filter(|p| !p.is_empty());
    if let Some(p) = termination_message_path.as_ref().filter(|p| !p.starts_with('/')) {
        return Err(Unsupported::new(
            format!("{field}.terminationMessagePath"),
            format!("{p:?} is not an absolute path"),
        )
        .into());
    }
    Ok(ContainerSpec {
        name: c.name.clone(),
        image,
        registry_auth,
        readiness,
        liveness,
        startup,
        command,
        args,
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        env,
        ports,
        resources,
        mounts,
        security,
        sidecar,
        pull_always: c.image_pull_policy.as_deref() == Some("Always"),
        termination_message_path,
        termination_fallback_to_logs: c.termination_message_policy.as_deref()
            == Some("FallbackToLogsOnError"),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::env::Segment;
    use crate::inputs::{ServiceInfo, TokenSpec};
    use crate::node::NodeCapacity;
    use crate::volume::{File, Source};

    fn pod_with(meta: serde_json::Value, spec: serde_json::Value) -> Pod {
        let mut m = json!({"namespace": "default", "name": "web", "uid": "u-1"});
        if let (Some(m), Some(extra)) = (m.as_object_mut(), meta.as_object()) {
            m.extend(extra.clone());
        }
        serde_json::from_value(json!({"metadata": m, "spec": spec})).unwrap()
    }

    fn pod(spec: serde_json::Value) -> Pod {
        pod_with(json!({}), spec)
    }

    fn data(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Vec<u8>>> {
        Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect())
    }

    fn inputs() -> Inputs {
        let mut i = Inputs {
            node_allocatable: NodeCapacity {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
                ephemeral_storage_bytes: 100 << 30,
            },
            ..Inputs::default()
        };
        i.config_maps
            .insert("app".into(), data(&[("mode", "fast"), ("LEVEL", "3"), ("bad=key", "x")]));
        i.config_maps.insert("gone".into(), None);
        i.secrets.insert("creds".into(), data(&[("password", "s3cr3t"), ("user", "admin")]));
        i.services.push(ServiceInfo {
            namespace: "default".into(),
            name: "kubernetes".into(),
            cluster_ip: "10.0.0.1".into(),
            ports: vec![("https".into(), 443, "TCP".into())],
        });
        i.services.push(ServiceInfo {
            namespace: "default".into(),
            name: "db".into(),
            cluster_ip: "10.0.0.5".into(),
            ports: vec![(String::new(), 5432, "TCP".into())],
        });
        i.services.push(ServiceInfo {
            namespace: "other".into(),
            name: "cache".into(),
            cluster_ip: "10.0.0.6".into(),
            ports: vec![(String::new(), 6379, "TCP".into())],
        });
        i.tokens
            .insert(TokenSpec { audience: String::new(), expiration_seconds: 3607 }, "tok".into());
        i
    }

    fn text(v: &Value) -> String {
        v.as_text().unwrap_or_else(|| panic!("not plain text: {v:?}"))
    }

    fn env_of<'a>(c: &'a ContainerSpec, name: &str) -> &'a Value {
        &c.env.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("no {name}")).value
    }

    #[test]
    fn a_plain_pod_is_extracted_faithfully() {
        let p = pod(json!({
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "activeDeadlineSeconds": 60,
            "enableServiceLinks": false,
            "containers": [{
                "name": "main", "image": "busybox", "command": ["sleep"], "args": ["300"],
                "workingDir": "/tmp",
                "env": [{"name": "A", "value": "1"}, {"name": "B"}],
                "ports": [{"containerPort": 8080, "name": "http"}, {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"}],
                "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}},
                "securityContext": {"runAsUser": 1000}
            }]
        }));
        let t = WorkloadSpec::from_pod(&p, &inputs()).unwrap();
        let w = &t.spec;
        assert!(t.notices.is_empty());
        assert_eq!(w.key.to_string(), "default/web");
        assert_eq!(w.uid, "u-1");
        assert_eq!(w.restart_policy, RestartPolicy::Never);
        assert_eq!(w.termination_grace, Duration::from_secs(5));
        assert_eq!(w.active_deadline, Some(Duration::from_secs(60)));
        let c = &w.containers[0];
        assert_eq!(c.command, vec![Value::text("sleep")]);
        assert_eq!(c.args, vec![Value::text("300")]);
        assert_eq!(c.working_dir.as_deref(), Some("/tmp"));
        let names: Vec<&str> = c.env.iter().map(|e| e.name.as_str()).collect();
        // Links off: only the `kubernetes` Service's variables after the container's own.
        assert_eq!(&names[..2], ["A", "B"]);
        assert!(names.contains(&"KUBERNETES_SERVICE_HOST"));
        assert!(!names.contains(&"DB_SERVICE_HOST"));
        assert_eq!(text(env_of(c, "B")), "");
        assert_eq!(
            c.ports[0],
            PortSpec {
                name: Some("http".into()),
                container_port: 8080,
                host_port: None,
                protocol: "TCP".into()
            }
        );
        assert_eq!(c.ports[1].host_port, Some(5353));
        assert_eq!(
            c.resources,
            Resources {
                cpu_request_millis: Some(250),
                cpu_limit_millis: Some(1000),
                memory_request_bytes: Some(64 << 20),
                memory_limit_bytes: Some(128 << 20)
            }
        );
        assert_eq!(c.security.run_as_user, Some(1000));
    }

    #[test]
    fn environment_is_resolved_like_the_kubelet() {
        let p = pod_with(
            json!({"labels": {"app": "web"}, "annotations": {"team": "a"}}),
            json!({
                "nodeName": "vk", "serviceAccountName": "robot",
                "containers": [{
                    "name": "main", "image": "i",
                    "command": ["run", "--pass=$(PASS)", "--ip=$(MY_IP)", "--mode=$(CFG_mode)", "$(NOPE)"],
                    "resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "256Mi"}},
                    "envFrom": [
                        {"configMapRef": {"name": "app"}, "prefix": "CFG_"},
                        {"secretRef": {"name": "creds"}}
                    ],
                    "env": [
                        {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "LEVEL"}}},
                        {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                        {"name": "URL", "value": "postgres://$(user):$(PASS)@$(DB_SERVICE_HOST)/x"},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                        {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                        {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['team']"}}},
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                        {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
                        {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                        {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                        {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
                        {"name": "OPT_KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope", "optional": true}}},
                        {"name": "CFG_mode", "value": "override-$(CFG_mode)"}
                    ]
                }]
            }),
        );
        let t = WorkloadSpec::from_pod(&p, &inputs()).unwrap();
        let c = &t.spec.containers[0];
        let cases = [
            ("LEVEL", "3"),
            ("CFG_LEVEL", "3"),
            ("CFG_mode", "override-fast"),
            ("POD", "web"),
            ("NS", "default"),
            ("UID", "u-1"),
            ("APP", "web"),
            ("TEAM", "a"),
            ("NODE", "vk"),
            ("SA", "robot"),
            ("CPU_M", "250"),
            ("CPU_LIMIT", "4"),
            ("MEM_MI", "256"),
            ("DB_SERVICE_HOST", "10.0.0.5"),
            ("KUBERNETES_SERVICE_PORT", "443"),
        ];
        for (name, want) in cases {
            assert_eq!(text(env_of(c, name)), want, "{name}");
        }
        assert_eq!(env_of(c, "PASS"), &Value(vec![Segment::Secret("s3cr3t".into())]));
        assert_eq!(env_of(c, "user"), &Value(vec![Segment::Secret("admin".into())]));
        assert_eq!(
            env_of(c, "URL"),
            &Value(vec![
                Segment::Text("postgres://".into()),
                Segment::Secret("admin".into()),
                Segment::Text(":".into()),
                Segment::Secret("s3cr3t".into()),
                Segment::Text("@10.0.0.5/x".into()),
            ])
        );
        assert_eq!(env_of(c, "MY_IP"), &Value(vec![Segment::PodIp]));
        assert_eq!(env_of(c, "HOST_IP"), &Value(vec![Segment::HostIp]));
        assert!(
            c.env
                .iter()
                .all(|e| e.name != "OPT" && e.name != "OPT_KEY" && e.name != "CACHE_SERVICE_HOST")
        );
        assert!(crate::env::duplicates(&c.env).is_empty());
        // Secret and run-time values reach arguments by name; text is inlined; unknowns stay.
        assert_eq!(
            c.command[1],
            Value(vec![Segment::Text("--pass=".into()), Segment::EnvRef("PASS".into())])
        );
        assert_eq!(
            c.command[2],
            Value(vec![Segment::Text("--ip=".into()), Segment::EnvRef("MY_IP".into())])
        );
        assert_eq!(c.command[3], Value::text("--mode=override-fast"));
        assert_eq!(c.command[4], Value::text("$(NOPE)"));
        let reasons: Vec<&str> = t.notices.iter().map(|n| n.reason).collect();
        assert_eq!(
            reasons,
            [
                "InvalidEnvironmentVariableNames",
                "OptionalConfigMapNotFound",
                "OptionalSecretKeyNotFound"
            ]
        );
        assert_eq!(
            t.notices[0].message,
            "Keys [CFG_bad=key] from the EnvFrom configMap default/app were skipped since they are considered invalid environment variable names."
        );
    }

    #[test]
    fn missing_mandatory_inputs_keep_the_pod_waiting() {
        let c = |env: serde_json::Value| json!({"containers": [{"name": "c", "image": "i", "env": env}]});
        let cases = [
            (
                c(
                    json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]),
                ),
                "MandatoryConfigMapNotFound",
                "configmap default/gone not found",
            ),
            (
                c(
                    json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "k"}}}]),
                ),
                "MandatoryConfigMapKeyNotFound",
                "key \"k\" not found in configmap default/app",
            ),
            (
                c(
                    json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]),
                ),
                "MandatorySecretNotFound",
                "secret default/absent not found",
            ),
            (
                c(
                    json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}]),
                ),
                "MandatorySecretKeyNotFound",
                "key \"k\" not found in secret default/creds",
            ),
            (
                json!({"containers": [{"name": "c", "image": "i", "envFrom": [{"configMapRef": {"name": "gone"}}]}]}),
                "MandatoryConfigMapNotFound",
                "configmap default/gone not found",
            ),
            (
                json!({"containers": [{"name": "c", "image": "i"}], "volumes": [{"name": "cfg", "configMap": {"name": "gone"}}]}),
                "FailedMount",
                "MountVolume.SetUp failed for volume \"cfg\" : configmap default/gone not found",
            ),
            (
                json!({"containers": [{"name": "c", "image": "i"}], "volumes": [{"name": "s", "secret": {"secretName": "creds", "items": [{"key": "nope", "path": "p"}]}}]}),
                "FailedMount",
                "MountVolume.SetUp failed for volume \"s\" : secret default/creds has no key \"nope\"",
            ),
            (
                json!({"containers": [{"name": "c", "image": "i"}], "volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "audience": "vault"}}]}}]}),
                "FailedMount",
                "the service account token has not been obtained",
            ),
        ];
        for (spec, reason, message) in cases {
            match WorkloadSpec::from_pod(&pod(spec.clone()), &inputs()) {
                Err(Refusal::Missing(m)) => {
                    assert_eq!(m.reason, reason, "{spec}");
                    assert!(m.message.contains(message), "{spec}: {}", m.message);
                }
                other => panic!("{spec}: {other:?}"),
            }
        }
    }

    #[test]
    fn volumes_become_files_and_shared_directories() {
        let p = pod_with(
            json!({"labels": {"app": "web", "tier": "front"}}),
            json!({
                "containers": [{
                    "name": "c", "image": "i",
                    "resources": {"limits": {"memory": "1Gi"}},
                    "volumeMounts": [
                        {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true},
                        {"name": "scratch", "mountPath": "/scratch", "subPath": "a/b"}
                    ]
                }],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "app", "defaultMode": 0o600}},
                    {"name": "pick", "secret": {"secretName": "creds", "items": [{"key": "password", "path": "db/pass", "mode": 0o400}]}},
                    {"name": "opt", "configMap": {"name": "gone", "optional": true}},
                    {"name": "info", "downwardAPI": {"items": [
                        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                        {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}
                    ]}},
                    {"name": "kube-api-access-abcde", "projected": {"sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                        {"configMap": {"name": "app", "items": [{"key": "mode", "path": "mode"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
                    ]}},
                    {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}
                ]
            }),
        );
        let w = WorkloadSpec::from_pod(&p, &inputs()).unwrap().spec;
        let files = |name: &str| match &w.volumes.iter().find(|v| v.name == name).unwrap().source {
            Source::Files(f) => f.clone(),
            other => panic!("{other:?}"),
        };
        let f = |path: &str, data: &str, mode: u32, secret: bool| File {
            path: path.into(),
            data: data.as_bytes().to_vec(),
            mode,
            secret,
        };
        assert_eq!(
            files("cfg"),
            vec![
                f("LEVEL", "3", 0o600, false),
                f("bad=key", "x", 0o600, false),
                f("mode", "fast", 0o600, false)
            ]
        );
        assert_eq!(files("pick"), vec![f("db/pass", "s3cr3t", 0o400, true)]);
        assert_eq!(files("opt"), vec![]);
        assert_eq!(
            files("info"),
            vec![
                f("labels", "app=\"web\"\ntier=\"front\"", 0o644, false),
                f("mem", "1024", 0o644, false)
            ]
        );
        assert_eq!(
            files("kube-api-access-abcde"),
            vec![
                f("token", "tok", 0o644, true),
                f("mode", "fast", 0o644, false),
                f("namespace", "default", 0o644, false)
            ]
        );
        assert_eq!(
            w.volumes.last().unwrap().source,
            Source::EmptyDir { memory: true, size_limit_bytes: Some(64 << 20) }
        );
        // Which volumes read Secret data, and which may gain or lose files while the pod runs
        // (every key of an object, or an optional object): the kubelet adds and removes those.
        let kinds: Vec<(&str, bool, bool)> =
            w.volumes.iter().map(|v| (v.name.as_str(), v.secret, v.keys_may_change)).collect();
        assert_eq!(
            kinds,
            [
                ("cfg", false, true),
                ("pick", true, false),
                ("opt", false, true),
                ("info", false, false),
                ("kube-api-access-abcde", true, false),
                ("scratch", false, false)
            ]
        );
        let m = &w.containers[0].mounts;
        assert_eq!(
            (m[0].volume.as_str(), m[0].mount_path.as_str(), m[0].read_only),
            ("cfg", "/etc/cfg", true)
        );
        assert_eq!(m[1].sub_path.as_deref(), Some("a/b"));
    }

    #[test]
    fn init_containers_and_sidecars_are_kept_in_order() {
        let p = pod(json!({
            "initContainers": [
                {"name": "setup", "image": "i"},
                {"name": "proxy", "image": "i", "restartPolicy": "Always"},
                {"name": "migrate", "image": "i"}
            ],
            "containers": [{"name": "app", "image": "i"}]
        }));
        let w = WorkloadSpec::from_pod(&p, &inputs()).unwrap().spec;
        let init: Vec<(&str, bool)> =
            w.init_containers.iter().map(|c| (c.name.as_str(), c.sidecar)).collect();
        assert_eq!(init, [("setup", false), ("proxy", true), ("migrate", false)]);
        let all: Vec<&str> = w.all_containers().map(|c| c.name.as_str()).collect();
        assert_eq!(all, ["setup", "proxy", "migrate", "app"]);
    }

    #[test]
    fn defaults_apply() {
        let p = pod(json!({"containers": [{"name": "c", "image": "i"}]}));
        let w = WorkloadSpec::from_pod(&p, &inputs()).unwrap().spec;
        assert_eq!(w.restart_policy, RestartPolicy::Always);
        assert_eq!(w.termination_grace, DEFAULT_GRACE);
        assert_eq!(w.active_deadline, None);
        assert_eq!(w.containers[0].security, Security::default());
    }

    #[test]
    fn a_pod_larger_than_the_whole_node_is_not_admitted() {
        let spec = |init_mem: &str, a: &str, b: &str| {
            json!({
                "initContainers": [{"name": "i", "image": "i", "resources": {"requests": {"memory": init_mem}}}],
                "containers": [
                    {"name": "a", "image": "i", "resources": {"requests": {"memory": a, "cpu": "1"}}},
                    {"name": "b", "image": "i", "resources": {"requests": {"memory": b}}}
                ]
            })
        };
        // The node offers 8 GiB and 4 cores (inputs()).
        assert!(WorkloadSpec::from_pod(&pod(spec("8Gi", "4Gi", "4Gi")), &inputs()).is_ok());
        let err = |s| match WorkloadSpec::from_pod(&pod(s), &inputs()) {
            Err(Refusal::Rejected(r)) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            err(spec("1Gi", "4Gi", "5Gi")),
            Rejection::new(
                "OutOfmemory",
                "Node didn't have enough resource: memory, requested: 9663676416, used: 0, capacity: 8589934592"
            ),
            "the app containers' sum"
        );
        let init = err(spec("9Gi", "1Gi", "1Gi"));
        assert!(init.message.contains("requested: 9663676416"), "the largest init container");
        let mut unknown = inputs();
        unknown.node_allocatable = NodeCapacity::default();
        assert!(
            WorkloadSpec::from_pod(&pod(spec("9Gi", "9Gi", "9Gi")), &unknown).is_ok(),
            "not judged before the node's allocatable is known"
        );
    }

    /// The kubelet's admission of the pod's OS: `spec.os.name` and a `kubernetes.io/os` node
    /// selector must be the node's.
    #[test]
    fn pods_for_another_os_are_rejected_as_the_kubelet_rejects_them() {
        let c = json!([{"name": "c", "image": "i"}]);
        let reason = |spec: serde_json::Value, node_os: &str| {
            let mut i = inputs();
            i.node_os = node_os.into();
            match WorkloadSpec::from_pod(&pod(spec), &i) {
                Ok(_) => None,
                Err(Refusal::Rejected(r)) => Some(r.reason),
                Err(other) => panic!("{other:?}"),
            }
        };
        let windows = json!({"os": {"name": "windows"}, "containers": c});
        assert_eq!(reason(windows.clone(), ""), Some("PodOSNotSupported"));
        assert_eq!(reason(windows, "windows"), None);
        assert_eq!(reason(json!({"os": {"name": "linux"}, "containers": c}), "linux"), None);
        assert_eq!(
            reason(
                json!({"nodeSelector": {"kubernetes.io/os": "windows"}, "containers": c}),
                "linux"
            ),
            Some("PodOSSelectorNodeLabelDoesNotMatch")
        );
    }

    /// `subPathExpr` expands `$(VAR)` from the container's environment (downward API included),
    /// as the kubelet's `ExpandContainerVolumeMounts`; an unknown variable stays as written; a
    /// run-time value or an escape from the volume is refused.
    #[test]
    fn sub_path_exprs_expand_from_the_environment() {
        let mount = |expr: &str| {
            let p = pod(json!({
                "volumes": [{"name": "data", "emptyDir": {}}],
                "containers": [{"name": "c", "image": "i",
                    "env": [
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "UP", "value": ".."}
                    ],
                    "volumeMounts": [{"name": "data", "mountPath": "/data", "subPathExpr": expr}]}]
            }));
            match WorkloadSpec::from_pod(&p, &inputs()) {
                Ok(t) => Ok(t.spec.containers[0].mounts[0].sub_path.clone()),
                Err(Refusal::Unsupported(u)) => Err(u.reason),
                Err(other) => panic!("{other:?}"),
            }
        };
        assert_eq!(mount("logs/$(POD)"), Ok(Some("logs/web".into())));
        assert_eq!(mount("$(NOPE)"), Ok(Some("$(NOPE)".into())));
        assert!(mount("$(IP)").unwrap_err().contains("run-time value"));
        // An expansion the kubelet cannot mount: the container waits in
        // CreateContainerConfigError (Event Failed) rather than the pod failing.
        for expr in ["$(UP)/x", "/abs/$(POD)"] {
            let p = pod(json!({
                "volumes": [{"name": "data", "emptyDir": {}}],
                "containers": [{"name": "c", "image": "i", "env": [{"name": "UP", "value": ".."}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data", "subPathExpr": expr}]}]
            }));
            match WorkloadSpec::from_pod(&p, &inputs()) {
                Err(Refusal::Missing(m)) => {
                    assert_eq!(m.reason, "Failed");
                    assert!(m.message.starts_with("failed to prepare subPath for volumeMount \"data\" of container \"c\": path "), "{m}");
                }
                other => panic!("{expr}: {other:?}"),
            }
        }
    }

    /// The kubelet's sysctl admission: the safe set only (either separator), and no `net.*`
    /// in the host's network namespace.
    #[test]
    fn sysctls_are_admitted_as_the_kubelet_admits_them() {
        let reason = |sysctl: &str, host_network: bool| {
            let p = pod(json!({"hostNetwork": host_network,
                "securityContext": {"sysctls": [{"name": sysctl, "value": "1"}]},
                "containers": [{"name": "c", "image": "i"}]}));
            match WorkloadSpec::from_pod(&p, &inputs()) {
                Ok(_) => None,
                Err(Refusal::Rejected(r)) => Some(r.to_string()),
                Err(other) => panic!("{other:?}"),
            }
        };
        assert_eq!(reason("kernel.shm_rmid_forced", false), None);
        assert_eq!(reason("net/ipv4/tcp_syncookies", false), None);
        assert_eq!(reason("kernel.shm_rmid_forced", true), None);
        assert_eq!(
            reason("kernel.msgmax", false).as_deref(),
            Some("SysctlForbidden: forbidden sysctl: \"kernel.msgmax\" not allowlisted")
        );
        assert_eq!(
            reason("net.ipv4.tcp_syncookies", true).as_deref(),
            Some(
                "SysctlForbidden: forbidden sysctl: \"net.ipv4.tcp_syncookies\" not allowed with host net enabled"
            )
        );
        assert_eq!(
            sysctl_name("net/ipv4/conf/eno2.100/rp_filter"),
            "net.ipv4.conf.eno2/100.rp_filter"
        );
        assert_eq!(sysctl_name("kernel.shm_rmid_forced"), "kernel.shm_rmid_forced");
    }

    /// `runAsNonRoot` with an explicit root user: the kubelet's `verifyRunAsNonRoot` error, the
    /// container waiting in CreateContainerConfigError with an Event `Failed`.
    #[test]
    fn an_explicit_root_user_breaks_the_non_root_policy() {
        let p = pod(json!({"securityContext": {"runAsNonRoot": true},
                           "containers": [{"name": "c", "image": "i", "securityContext": {"runAsUser": 0}}]}));
        match WorkloadSpec::from_pod(&p, &inputs()) {
            Err(Refusal::Missing(m)) => assert_eq!(
                (m.reason, m.message.as_str()),
                (
                    "Failed",
                    "container's runAsUser breaks non-root policy (pod: \"web_default(u-1)\", container: c)"
                )
            ),
            other => panic!("{other:?}"),
        }
    }

    /// The shared corpus (`tests/corpus/unsupported.json`): every case the domain refuses names
    /// its field; the cases refused by the Nomad adapter (`"adapter": true`) pass here.
    #[test]
    fn the_unsupported_corpus_names_each_field() {
        let corpus: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("../../tests/corpus/unsupported.json")).unwrap();
        assert!(corpus.len() >= 30);
        for case in corpus {
            let p = corpus_pod(&case);
            let result = WorkloadSpec::from_pod(&p, &inputs());
            if case["adapter"] == json!(true) {
                assert!(result.is_ok(), "{}: {result:?}", case["case"]);
                continue;
            }
            match result {
                Err(Refusal::Unsupported(u)) => {
                    assert_eq!(u.field, case["field"].as_str().unwrap(), "{}", case["case"]);
                    let msg = u.to_string();
                    let want = case["message"].as_str().unwrap();
                    assert!(msg.contains(want), "{}: {msg:?} lacks {want:?}", case["case"]);
                }
                other => panic!("{}: {other:?}", case["case"]),
            }
        }
    }

    /// A corpus case as a pod: one `main` container running `sleep 3600`, merged with the case's
    /// `container` (a `null` removes a field), `spec` and `annotations`.
    pub(crate) fn corpus_pod(case: &serde_json::Value) -> Pod {
        let mut container =
            json!({"name": "main", "image": "busybox", "command": ["sleep", "3600"]});
        for (k, v) in case["container"].as_object().into_iter().flatten() {
            if v.is_null() {
                container.as_object_mut().unwrap().remove(k);
            } else {
                container[k] = v.clone();
            }
        }
        let mut spec = json!({"containers": [container]});
        for (k, v) in case["spec"].as_object().into_iter().flatten() {
            spec[k] = v.clone();
        }
        let ann = case.get("annotations").cloned().unwrap_or(json!({}));
        pod_with(json!({"annotations": ann}), spec)
    }
}
