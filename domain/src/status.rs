//! The pod status a kubelet would write, computed from the runtime's view of the pod.
//!
//! The rules follow the kubelet: the phase from `getPhase` (`pkg/kubelet/kubelet_pods.go`), the
//! conditions from `pkg/kubelet/status/generate.go`, and container statuses from
//! `convertToAPIContainerStatuses`. Readiness is "running" until probes are supported.

use k8s_openapi::api::core::v1::{
    Container, ContainerState as K8sContainerState, ContainerStateRunning,
    ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition,
    PodIP, PodStatus, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::pod::RestartPolicy;
use crate::runtime::{ContainerRuntimeStatus, ContainerState, Sandbox, SandboxState, Termination};

/// The reason written with a pod the provider could not run (upstream virtual-kubelet's
/// `podStatusReasonProviderFailed`).
pub const REASON_PROVIDER_FAILED: &str = "ProviderFailed";

/// The status of `pod` given its current sandbox (`None`: not placed yet).
///
/// `now` stamps conditions whose status changed; unchanged conditions keep their
/// `lastTransitionTime` from the pod's current status.
pub fn pod_status(pod: &Pod, sandbox: Option<&Sandbox>, now: Timestamp) -> PodStatus {
    let restart = RestartPolicy::of(pod);
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let init_containers = spec.and_then(|s| s.init_containers.as_deref()).unwrap_or_default();
    let previous = pod.status.as_ref();

    let terminal_sandbox = sandbox.is_some_and(Sandbox::is_terminal);
    let has_init = !init_containers.is_empty();
    let runtime = |name: &str| {
        let mut rt = sandbox.and_then(|s| s.containers.get(name)).cloned().unwrap_or_default();
        // The kubelet's default state of a container not created yet is `ContainerCreating`, or
        // `PodInitializing` in a pod with init containers (`convertToAPIContainerStatuses`).
        if has_init
            && matches!(&rt.state, ContainerState::Waiting { reason, .. } if reason == "ContainerCreating")
        {
            rt.state = ContainerState::Waiting { reason: "PodInitializing".into(), message: None };
        }
        if terminal_sandbox { settle(rt) } else { rt }
    };
    let init_statuses: Vec<ContainerStatus> = init_containers
        .iter()
        .map(|c| {
            let mut st = container_status(c, &runtime(&c.name));
            if !is_sidecar(c) {
                // A regular init container is ready once it completed successfully.
                st.ready = st
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .is_some_and(|t| t.exit_code == 0);
            }
            st
        })
        .collect();
    let incomplete: Vec<&str> = init_containers
        .iter()
        .zip(&init_statuses)
        .filter(|(c, st)| if is_sidecar(c) { !st.started.unwrap_or(false) } else { !st.ready })
        .map(|(c, _)| c.name.as_str())
        .collect();
    let initialized = incomplete.is_empty();
    let statuses: Vec<ContainerStatus> = containers
        .iter()
        .map(|c| {
            let raw = sandbox.and_then(|s| s.containers.get(&c.name));
            let never_ran = raw.is_none_or(|r| matches!(r.state, ContainerState::Waiting { .. }));
            let mut rt = runtime(&c.name);
            if !initialized && never_ran {
                // The kubelet never creates app containers before init completes.
                rt.state =
                    ContainerState::Waiting { reason: "PodInitializing".into(), message: None };
            }
            container_status(c, &rt)
        })
        .collect();

    let phase = match init_phase(restart, init_containers, &init_statuses, sandbox) {
        Some(p) => p,
        None => phase(restart, sandbox, &statuses),
    };
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let unready: Vec<&str> = statuses
        .iter()
        .chain(
            init_statuses
                .iter()
                .filter(|s| init_containers.iter().any(|c| c.name == s.name && is_sidecar(c))),
        )
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let (ready, reason, message) = if terminal {
        (false, Some("PodCompleted"), None)
    } else if unready.is_empty() {
        (true, None, None)
    } else {
        let msg = format!("containers with unready status: [{}]", unready.join(" "));
        (false, Some("ContainersNotReady"), Some(msg))
    };
    // Ready is ContainersReady and every readiness gate's condition True, those conditions being
    // set by others in the pod's status (`status.GeneratePodReadyCondition`).
    let gates_unready: Vec<String> = if ready {
        let current = previous.and_then(|s| s.conditions.as_deref()).unwrap_or_default();
        spec.and_then(|s| s.readiness_gates.as_deref())
            .unwrap_or_default()
            .iter()
            .filter_map(|g| match current.iter().find(|c| c.type_ == g.condition_type) {
                None => Some(format!(
                    "corresponding condition of pod readiness gate {:?} does not exist.",
                    g.condition_type
                )),
                Some(c) if c.status != "True" => Some(format!(
                    "the status of pod readiness gate {:?} is not \"True\", but {}",
                    g.condition_type, c.status
                )),
                Some(_) => None,
            })
            .collect()
    } else {
        Vec::new()
    };
    let (pod_ready, ready_reason, ready_message) = if gates_unready.is_empty() {
        (ready, reason, message.clone())
    } else {
        (false, Some("ReadinessGatesNotReady"), Some(gates_unready.join(", ")))
    };
    let sandbox_ready =
        sandbox.is_some_and(|s| !s.is_terminal() && s.state != SandboxState::Pending);
    let (init_reason, init_message) = if initialized || terminal && phase == "Succeeded" {
        (None, None)
    } else {
        (
            Some("ContainersNotInitialized"),
            Some(format!("containers with incomplete status: [{}]", incomplete.join(" "))),
        )
    };

    let mut conditions = vec![
        condition(previous, "PodReadyToStartContainers", sandbox_ready, None, None, now),
        condition(
            previous,
            "Initialized",
            initialized || phase == "Succeeded",
            init_reason,
            init_message,
            now,
        ),
        condition(previous, "Ready", pod_ready, ready_reason, ready_message, now),
        condition(previous, "ContainersReady", ready, reason, message, now),
        condition(previous, "PodScheduled", true, None, None, now),
    ];
    // Conditions of other writers (readiness gates', the controller manager's) are theirs: carried
    // as they are, so the status this node holds after its own write still has them.
    conditions.extend(
        previous
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
            .iter()
            .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()))
            .cloned(),
    );

    let pod_ip = sandbox.and_then(|s| s.pod_ip.clone());
    let host_ip = sandbox.and_then(|s| s.host_ip.clone());
    let (reason, message) = match sandbox {
        Some(s) if s.state == SandboxState::Lost => (
            Some("NodeLost".to_owned()),
            s.message.clone().or(Some("the backend lost the allocation".into())),
        ),
        _ => (None, None),
    };
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        host_ip: host_ip.clone(),
        host_ips: host_ip.map(|ip| vec![HostIP { ip }]),
        pod_ip: pod_ip.clone(),
        pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
        start_time: previous
            .and_then(|p| p.start_time.clone())
            .or_else(|| sandbox.map(|s| Time(s.created_at.unwrap_or(now)))),
        qos_class: previous.and_then(|p| p.qos_class.clone()),
        reason,
        message,
        ..PodStatus::default()
    }
}

/// An init container with `restartPolicy: Always`: a native sidecar.
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The phase while init containers decide it (`getPhase`, first part): `Failed` when a regular
/// init container failed and the pod never restarts, `Pending` while one has not completed or a
/// sidecar has not started; `None` once initialisation is over.
fn init_phase(
    restart: RestartPolicy,
    init: &[Container],
    statuses: &[ContainerStatus],
    sandbox: Option<&Sandbox>,
) -> Option<&'static str> {
    if init.is_empty() {
        return None;
    }
    let Some(_) = sandbox else { return Some("Pending") };
    let mut pending = 0;
    let mut failed = 0;
    for (c, st) in init.iter().zip(statuses) {
        let state = st.state.as_ref();
        let terminated = state.and_then(|s| s.terminated.as_ref());
        let last_failed = st
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .is_some_and(|t| t.exit_code != 0);
        if is_sidecar(c) {
            if state.and_then(|s| s.waiting.as_ref()).is_some() && st.last_state.is_none() {
                pending += 1;
            }
            continue;
        }
        match terminated {
            Some(t) if t.exit_code != 0 => failed += 1,
            Some(_) => {}
            None if last_failed => failed += 1,
            None => pending += 1,
        }
    }
    if failed > 0 && restart == RestartPolicy::Never {
        Some("Failed")
    } else if pending > 0 || failed > 0 {
        Some("Pending")
    } else {
        None
    }
}

/// The status of a pod whose containers cannot be created yet (an input is missing): phase
/// `Pending`, every container waiting with `reason` (`CreateContainerConfigError`,
/// `ContainerCreating`) and `message`, as the kubelet reports it.
pub fn waiting_status(pod: &Pod, reason: &str, message: &str, now: Timestamp) -> PodStatus {
    let mut st = pod_status(pod, None, now);
    let waiting = |s: &mut ContainerStatus| {
        s.state = Some(K8sContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.to_owned()),
                message: Some(message.to_owned()),
            }),
            ..Default::default()
        });
    };
    st.container_statuses.iter_mut().flatten().for_each(waiting);
    st.init_container_statuses.iter_mut().flatten().for_each(waiting);
    st
}

/// The status of a pod failed by `activeDeadlineSeconds` (the kubelet's `activeDeadlineHandler`):
/// phase `Failed`, reason `DeadlineExceeded`, `message`; containers as last seen.
pub fn deadline_exceeded_status(
    pod: &Pod,
    sandbox: Option<&Sandbox>,
    message: &str,
    now: Timestamp,
) -> PodStatus {
    let mut st = pod_status(pod, sandbox, now);
    st.phase = Some("Failed".into());
    st.reason = Some("DeadlineExceeded".into());
    st.message = Some(message.to_owned());
    for c in st.conditions.iter_mut().flatten() {
        if matches!(c.type_.as_str(), "Ready" | "ContainersReady") && c.status == "True" {
            c.status = "False".into();
            c.reason = Some("PodCompleted".into());
            c.last_transition_time = Some(Time(now));
        }
    }
    st
}

/// The status of a pod the provider cannot run: phase `Pending` (`Failed` when
/// `restartPolicy: Never`, since it will never run), reason [`REASON_PROVIDER_FAILED`], and
/// `message` saying what is wrong. This is upstream virtual-kubelet's behaviour for create failures.
pub fn provider_failed_status(pod: &Pod, message: &str, now: Timestamp) -> PodStatus {
    let phase = if RestartPolicy::of(pod) == RestartPolicy::Never { "Failed" } else { "Pending" };
    let previous = pod.status.as_ref();
    PodStatus {
        phase: Some(phase.to_owned()),
        reason: Some(REASON_PROVIDER_FAILED.to_owned()),
        message: Some(message.to_owned()),
        conditions: Some(vec![condition(previous, "PodScheduled", true, None, None, now)]),
        qos_class: previous.and_then(|p| p.qos_class.clone()),
        ..PodStatus::default()
    }
}

/// The status of a pod the kubelet's admission rejected (`kubelet.rejectPod`): `Failed`, with the
/// rejection's reason and the message `Pod was rejected: <message>`.
pub fn rejected_status(pod: &Pod, reason: &str, message: &str, now: Timestamp) -> PodStatus {
    let previous = pod.status.as_ref();
    PodStatus {
        phase: Some("Failed".to_owned()),
        reason: Some(reason.to_owned()),
        message: Some(format!("Pod was rejected: {message}")),
        conditions: Some(vec![condition(previous, "PodScheduled", true, None, None, now)]),
        qos_class: previous.and_then(|p| p.qos_class.clone()),
        ..PodStatus::default()
    }
}

/// The final status of a `restartPolicy: Never` pod whose workload vanished from the backend while
/// it ran: `Failed`, reason `NotFound` (upstream virtual-kubelet's reason for the same case), every
/// container terminated with 137 and `ContainerStatusUnknown`.
pub fn not_found_status(pod: &Pod, message: &str, now: Timestamp) -> PodStatus {
    let gone = Sandbox {
        id: String::new(),
        state: SandboxState::Lost,
        created_at: None,
        pod_ip: None,
        host_ip: None,
        containers: Default::default(),
        message: None,
        ports: Default::default(),
        prepared: None,
    };
    let mut st = pod_status(pod, Some(&gone), now);
    st.phase = Some("Failed".into());
    st.reason = Some("NotFound".into());
    st.message = Some(message.to_owned());
    st.pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
    st.pod_ips = pod.status.as_ref().and_then(|s| s.pod_ips.clone());
    st.host_ip = pod.status.as_ref().and_then(|s| s.host_ip.clone());
    st.host_ips = pod.status.as_ref().and_then(|s| s.host_ips.clone());
    st
}

/// Whether writing `new` would change what the API server holds in `old`, ignoring the
/// timestamps of conditions (which [`pod_status`] carries over anyway). Used to skip writes.
pub fn differs(old: Option<&PodStatus>, new: &PodStatus) -> bool {
    patch(old, new).is_some()
}

/// Fields the kubelet owns that are written as `null` when they become unset, so that an old
/// `reason`, `message` or IP does not linger after a strategic merge.
const CLEARED_WHEN_UNSET: [&str; 6] = ["reason", "message", "podIP", "podIPs", "hostIP", "hostIPs"];

/// Lists merged by key in a strategic merge (`patchMergeKey` in `k8s.io/api/core/v1/types.go`)
/// that this function writes whole, with the `$patch: replace` directive.
const REPLACED_LISTS: [&str; 2] = ["podIPs", "hostIPs"];

/// The condition types the kubelet writes; others belong to other writers and are left alone.
const KUBELET_CONDITIONS: [&str; 5] =
    ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"];

/// Sets `status.observedGeneration` and each condition's `observedGeneration` to the pod's
/// `metadata.generation`, as the kubelet does (`PodObservedGenerationTracking`), when the API
/// server gives pods a generation (older ones do not: then nothing is set, so that a status never
/// differs by a field the server drops).
pub fn observe_generation(pod: &Pod, status: &mut PodStatus) {
    let Some(generation) = pod.metadata.generation else { return };
    status.observed_generation = Some(generation);
    for c in status.conditions.iter_mut().flatten() {
        c.observed_generation = Some(generation);
    }
}

/// The strategic-merge patch body (`{"status": {...}}`) that turns `old` (the status the API server
/// last showed) into `new`, carrying only what changed, as the kubelet's `PatchPodStatus` does with
/// a two-way merge patch:
/// - a top-level field goes in only when its value changed (`null` when it became unset);
/// - `conditions` merge by `type`: only conditions whose status, reason or message changed go in
///   (a condition that only got new timestamps does not), a vanished one as `$patch: delete`;
/// - `podIPs` / `hostIPs` (merged by `ip`) go in whole with `$patch: replace`; the container status
///   lists have no merge key and are replaced whole by the API server anyway.
///
/// `None` when nothing would change, and when `new` would move a pod backwards: a pod that is
/// `Succeeded` or `Failed` in `old` stays so (a kubelet never leaves a terminal phase,
/// `pkg/kubelet/status/status_manager.go` `checkContainerStateTransition`).
pub fn patch(old: Option<&PodStatus>, new: &PodStatus) -> Option<serde_json::Value> {
    use serde_json::{Map, Value};
    let terminal = |s: &PodStatus| matches!(s.phase.as_deref(), Some("Succeeded" | "Failed"));
    if old.is_some_and(|o| terminal(o) && o.phase != new.phase) {
        return None;
    }
    let object = |s: Option<&PodStatus>| match s.map(serde_json::to_value) {
        Some(Ok(Value::Object(mut m))) => {
            drop_zero_states(&mut m);
            m
        }
        _ => Map::new(),
    };
    let (before, after) = (object(old), object(Some(new)));
    let mut out = Map::new();
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for key in keys {
        let (b, a) = (before.get(key), after.get(key));
        if b == a {
            continue;
        }
        let value = match (key.as_str(), a) {
            ("conditions", _) => match condition_patch(b, a) {
                Some(v) => v,
                None => continue,
            },
            (k, Some(Value::Array(items))) if REPLACED_LISTS.contains(&k) => {
                let mut items = items.clone();
                items.push(serde_json::json!({ "$patch": "replace" }));
                Value::Array(items)
            }
            (_, Some(v)) => v.clone(),
            (_, None) => Value::Null,
        };
        out.insert(key.clone(), value);
    }
    if old.is_none() {
        for k in CLEARED_WHEN_UNSET {
            out.entry(k).or_insert(Value::Null);
        }
    }
    (!out.is_empty()).then(|| serde_json::json!({ "status": out }))
}

/// The container status lists, whose entries hold Go structs that are never omitted.
const CONTAINER_STATUS_LISTS: [&str; 3] =
    ["initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"];

/// Drops the empty objects (`{}`) from the entries of the container status lists of `status` (a
/// serialized [`PodStatus`]), so that a status as this crate builds it and the same status as the
/// API server returns it compare equal: `ContainerStatus.lastState` (and `state`) are Go structs
/// tagged `omitempty`, which `encoding/json` never omits, so the API server shows `"lastState": {}`
/// for a container that never terminated, where [`pod_status`] leaves it unset. Without this, the
/// echo of every first write looked changed and the same status was written twice (found by the
/// benchmarks, `bench/`, P1's requests per pod).
fn drop_zero_states(status: &mut serde_json::Map<String, serde_json::Value>) {
    for list in CONTAINER_STATUS_LISTS {
        let Some(serde_json::Value::Array(entries)) = status.get_mut(list) else { continue };
        for entry in entries.iter_mut().filter_map(serde_json::Value::as_object_mut) {
            entry.retain(|_, v| v.as_object().is_none_or(|o| !o.is_empty()));
        }
    }
}

/// The `conditions` part of [`patch`]: changed or new conditions whole, vanished ones deleted by
/// `type`; `None` when they differ only in timestamps.
fn condition_patch(
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
) -> Option<serde_json::Value> {
    use serde_json::Value;
    let list = |v: Option<&Value>| v.and_then(Value::as_array).cloned().unwrap_or_default();
    let (before, after) = (list(before), list(after));
    let kind = |c: &Value| c.get("type").cloned().unwrap_or(Value::Null);
    let bare = |c: &Value| {
        let mut c = c.clone();
        if let Some(m) = c.as_object_mut() {
            m.remove("lastTransitionTime");
            m.remove("lastProbeTime");
        }
        c
    };
    let mut out = Vec::new();
    for c in &after {
        let earlier = before.iter().find(|b| kind(b) == kind(c));
        if earlier.is_some_and(|b| bare(b) == bare(c)) {
            continue;
        }
        // A merge keeps what the patch leaves out: a reason or message the condition no longer
        // has is written as null, else a Ready condition back to True would keep its old reason.
        let mut c = c.clone();
        if let (Some(b), Some(m)) = (earlier.and_then(Value::as_object), c.as_object_mut()) {
            for f in ["reason", "message"] {
                if b.contains_key(f) && !m.contains_key(f) {
                    m.insert(f.to_owned(), Value::Null);
                }
            }
        }
        out.push(c);
    }
    // Conditions of other writers (readiness gates' types, the controller manager's
    // DisruptionTarget) are theirs: only the kubelet's own types are ever deleted.
    for b in &before {
        let own = kind(b).as_str().is_some_and(|k| KUBELET_CONDITIONS.contains(&k));
        if own && !after.iter().any(|c| kind(c) == kind(b)) {
            out.push(serde_json::json!({ "type": kind(b), "$patch": "delete" }));
        }
    }
    (!out.is_empty()).then_some(Value::Array(out))
}

fn phase(
    restart: RestartPolicy,
    sandbox: Option<&Sandbox>,
    statuses: &[ContainerStatus],
) -> &'static str {
    let Some(sandbox) = sandbox else { return "Pending" };
    if sandbox.state == SandboxState::Lost {
        return if restart == RestartPolicy::Never { "Failed" } else { "Pending" };
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        let state = s.state.as_ref();
        if state.and_then(|st| st.running.as_ref()).is_some() {
            running += 1;
        } else if let Some(t) = state.and_then(|st| st.terminated.as_ref()) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if s.last_state.as_ref().and_then(|l| l.terminated.as_ref()).is_some() {
            // Waiting to be restarted: the kubelet counts it as stopped.
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 || statuses.is_empty() {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match restart {
            RestartPolicy::Always => "Running",
            _ if stopped == succeeded => "Succeeded",
            RestartPolicy::OnFailure => "Running",
            RestartPolicy::Never => "Failed",
        }
    } else {
        "Pending"
    }
}

/// A container left non-terminated in a sandbox that ended never ran to an end the runtime saw:
/// the kubelet reports such containers as terminated with 137 and `ContainerStatusUnknown`.
fn settle(mut rt: ContainerRuntimeStatus) -> ContainerRuntimeStatus {
    if !matches!(rt.state, ContainerState::Terminated(_)) {
        let started_at = match &rt.state {
            ContainerState::Running { started_at } => *started_at,
            _ => None,
        };
        rt.state = ContainerState::Terminated(Termination {
            exit_code: 137,
            signal: None,
            reason: "ContainerStatusUnknown".into(),
            message: Some("The container could not be located when the pod was terminated".into()),
            started_at,
            finished_at: None,
        });
    }
    rt
}

/// A container's status. It is `started` once running and past its startup probe, and `ready` once
/// started and its readiness probe (if any) succeeds, as the kubelet's prober manager decides.
fn container_status(c: &Container, rt: &ContainerRuntimeStatus) -> ContainerStatus {
    let running = matches!(rt.state, ContainerState::Running { .. });
    let started = running && (c.startup_probe.is_none() || rt.probe_started == Some(true));
    let ready = started && (c.readiness_probe.is_none() || rt.probe_ready == Some(true));
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: String::new(),
        container_id: rt.container_id.clone(),
        ready,
        started: Some(started),
        restart_count: rt.restart_count,
        state: Some(k8s_state(&rt.state)),
        last_state: rt
            .last_termination
            .as_ref()
            .map(|t| K8sContainerState { terminated: Some(terminated(t)), ..Default::default() }),
        // In-place resize status (`convertToAPIContainerStatuses`): the resources a running
        // container was given (its requests and limits: the workload is made from them), and
        // the requests allocated to it.
        resources: running.then(|| ResourceRequirements {
            requests: c.resources.as_ref().and_then(|r| r.requests.clone()),
            limits: c.resources.as_ref().and_then(|r| r.limits.clone()),
            claims: None,
        }),
        allocated_resources: c.resources.as_ref().and_then(|r| r.requests.clone()),
        ..ContainerStatus::default()
    }
}

fn k8s_state(state: &ContainerState) -> K8sContainerState {
    match state {
        ContainerState::Waiting { reason, message } => K8sContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        ContainerState::Running { started_at } => K8sContainerState {
            running: Some(ContainerStateRunning { started_at: started_at.map(Time) }),
            ..Default::default()
        },
        ContainerState::Terminated(t) => {
            K8sContainerState { terminated: Some(terminated(t)), ..Default::default() }
        }
    }
}

fn terminated(t: &Termination) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.map(Time),
        finished_at: t.finished_at.map(Time),
        container_id: None,
    }
}

fn condition(
    previous: Option<&PodStatus>,
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: Timestamp,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let prev = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let last_transition_time = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => None,
    }
    .or(Some(Time(now)));
    PodCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.map(str::to_owned),
        message,
        last_transition_time,
        last_probe_time: None,
        observed_generation: None,
    }
}

#[cfg(test)]
mod tests {

    use k8s_openapi::api::core::v1::{Container, PodSpec};

    use super::*;

    fn pod(restart: &str, names: &[&str]) -> Pod {
        Pod {
            spec: Some(PodSpec {
                restart_policy: Some(restart.into()),
                containers: names
                    .iter()
                    .map(|n| Container {
                        name: (*n).into(),
                        image: Some("busybox".into()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn running() -> ContainerRuntimeStatus {
        ContainerRuntimeStatus {
            container_id: Some("test://alloc-1/a".into()),
            state: ContainerState::Running { started_at: Some(ts(1)) },
            ..Default::default()
        }
    }

    fn exited(code: i32) -> ContainerRuntimeStatus {
        ContainerRuntimeStatus {
            state: ContainerState::Terminated(Termination {
                exit_code: code,
                signal: None,
                reason: if code == 0 { "Completed".into() } else { "Error".into() },
                message: None,
                started_at: Some(ts(1)),
                finished_at: Some(ts(2)),
            }),
            ..Default::default()
        }
    }

    fn sandbox(state: SandboxState, cs: &[(&str, ContainerRuntimeStatus)]) -> Sandbox {
        Sandbox {
            id: "alloc-1".into(),
            state,
            created_at: Some(ts(0)),
            pod_ip: Some("10.0.0.7".into()),
            host_ip: Some("10.0.0.1".into()),
            containers: cs.iter().map(|(n, c)| ((*n).to_owned(), c.clone())).collect(),
            message: None,
            ports: Default::default(),
            prepared: None,
        }
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions.as_ref().unwrap().iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn phase_follows_the_kubelet_rules() {
        use SandboxState as S;
        let cases: Vec<(&str, Option<Sandbox>, &str)> = vec![
            ("Always", None, "Pending"),
            ("Always", Some(sandbox(S::Pending, &[])), "Pending"),
            ("Always", Some(sandbox(S::Running, &[("a", running()), ("b", running())])), "Running"),
            ("Always", Some(sandbox(S::Running, &[("a", running())])), "Pending"),
            ("Never", Some(sandbox(S::Failed, &[("a", exited(3)), ("b", exited(0))])), "Failed"),
            (
                "Never",
                Some(sandbox(S::Succeeded, &[("a", exited(0)), ("b", exited(0))])),
                "Succeeded",
            ),
            (
                "OnFailure",
                Some(sandbox(S::Running, &[("a", exited(1)), ("b", exited(0))])),
                "Running",
            ),
            (
                "OnFailure",
                Some(sandbox(S::Succeeded, &[("a", exited(0)), ("b", exited(0))])),
                "Succeeded",
            ),
            ("Always", Some(sandbox(S::Running, &[("a", exited(0)), ("b", exited(0))])), "Running"),
            ("Never", Some(sandbox(S::Lost, &[("a", running()), ("b", running())])), "Failed"),
            ("Always", Some(sandbox(S::Lost, &[("a", running()), ("b", running())])), "Pending"),
            // A failed allocation whose second task never started: that container is settled
            // as terminated with 137, so the pod fails instead of waiting forever.
            ("Never", Some(sandbox(S::Failed, &[("a", exited(0))])), "Failed"),
        ];
        for (restart, sb, want) in cases {
            let st = pod_status(&pod(restart, &["a", "b"]), sb.as_ref(), ts(10));
            assert_eq!(st.phase.as_deref(), Some(want), "{restart} {sb:?}");
        }
    }

    /// A running container reports the requests and limits it runs with (`resources`); every
    /// container reports its allocated requests (`allocatedResources`), as the kubelet's
    /// in-place resize status does.
    #[test]
    fn running_containers_report_their_resources() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let mut p = pod("Always", &["a", "b"]);
        let q = |pairs: &[(&str, &str)]| {
            Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), Quantity((*v).into()))).collect())
        };
        for c in &mut p.spec.as_mut().unwrap().containers {
            c.resources = Some(ResourceRequirements {
                requests: q(&[("cpu", "100m"), ("memory", "64Mi")]),
                limits: q(&[("memory", "128Mi")]),
                claims: None,
            });
        }
        let sb = sandbox(SandboxState::Running, &[("a", running()), ("b", exited(0))]);
        let st = pod_status(&p, Some(&sb), ts(10));
        let cs = st.container_statuses.unwrap();
        let r = cs[0].resources.as_ref().unwrap();
        assert_eq!(r.requests, q(&[("cpu", "100m"), ("memory", "64Mi")]));
        assert_eq!(r.limits, q(&[("memory", "128Mi")]));
        assert!(cs[1].resources.is_none(), "not running: no resources");
        assert_eq!(cs[1].allocated_resources, q(&[("cpu", "100m"), ("memory", "64Mi")]));
    }

    #[test]
    fn exit_codes_and_readiness_reach_the_status() {
        let p = pod("Never", &["main"]);
        let st =
            pod_status(&p, Some(&sandbox(SandboxState::Failed, &[("main", exited(3))])), ts(10));
        let cs = &st.container_statuses.as_ref().unwrap()[0];
        let t = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
        assert!(!cs.ready);
        assert_eq!(cond(&st, "Ready").reason.as_deref(), Some("PodCompleted"));

        let p = pod("Always", &["main"]);
        let st =
            pod_status(&p, Some(&sandbox(SandboxState::Running, &[("main", running())])), ts(10));
        assert_eq!(st.pod_ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(st.host_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(st.start_time, Some(Time(ts(0))));
        assert_eq!(cond(&st, "Ready").status, "True");
        assert_eq!(cond(&st, "ContainersReady").status, "True");
        assert_eq!(
            st.container_statuses.unwrap()[0].container_id.as_deref(),
            Some("test://alloc-1/a")
        );
    }

    #[test]
    fn unready_containers_are_named() {
        let p = pod("Always", &["a", "b"]);
        let st = pod_status(&p, Some(&sandbox(SandboxState::Running, &[("a", running())])), ts(10));
        let ready = cond(&st, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.message.as_deref(), Some("containers with unready status: [b]"));
    }

    #[test]
    fn transition_times_are_kept_while_a_condition_holds() {
        let mut p = pod("Always", &["a"]);
        let sb = sandbox(SandboxState::Running, &[("a", running())]);
        let first = pod_status(&p, Some(&sb), ts(10));
        p.status = Some(first.clone());
        let second = pod_status(&p, Some(&sb), ts(20));
        assert_eq!(cond(&second, "Ready").last_transition_time, Some(Time(ts(10))));
        assert!(!differs(Some(&first), &second));

        let stopped = sandbox(SandboxState::Running, &[("a", exited(1))]);
        let third = pod_status(&p, Some(&stopped), ts(30));
        assert_eq!(cond(&third, "Ready").last_transition_time, Some(Time(ts(30))));
        assert!(differs(Some(&first), &third));
    }

    /// `readinessGates`: Ready only when every gate's condition (written by others) is True;
    /// ContainersReady does not look at them; their conditions are never deleted by a patch.
    #[test]
    fn readiness_gates_hold_ready_and_their_conditions_are_left_alone() {
        use k8s_openapi::api::core::v1::PodReadinessGate;
        let mut p = pod("Always", &["a"]);
        p.spec.as_mut().unwrap().readiness_gates =
            Some(vec![PodReadinessGate { condition_type: "example.com/lb".into() }]);
        let sb = sandbox(SandboxState::Running, &[("a", running())]);
        let st = pod_status(&p, Some(&sb), ts(3));
        let ready = cond(&st, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref(), ready.message.as_deref()),
            (
                "False",
                Some("ReadinessGatesNotReady"),
                Some(
                    "corresponding condition of pod readiness gate \"example.com/lb\" does not exist."
                )
            )
        );
        assert_eq!(cond(&st, "ContainersReady").status, "True");
        let gate = |status: &str| PodCondition {
            type_: "example.com/lb".into(),
            status: status.into(),
            ..Default::default()
        };
        let mut with_gate = st.clone();
        with_gate.conditions.as_mut().unwrap().push(gate("False"));
        p.status = Some(with_gate.clone());
        let st = pod_status(&p, Some(&sb), ts(4));
        assert_eq!(
            cond(&st, "example.com/lb").status,
            "False",
            "another writer's condition is carried as it is"
        );
        assert_eq!(
            cond(&st, "Ready").message.as_deref(),
            Some("the status of pod readiness gate \"example.com/lb\" is not \"True\", but False")
        );
        // The gate's condition and the controller manager's are theirs: no delete in the patch.
        let mut before = with_gate;
        before.conditions.as_mut().unwrap().push(PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            ..Default::default()
        });
        let body = patch(Some(&before), &st).map(|v| v.to_string()).unwrap_or_default();
        assert!(!body.contains("$patch\":\"delete"), "{body}");
        before.conditions.as_mut().unwrap().retain(|c| c.type_ != "example.com/lb");
        before.conditions.as_mut().unwrap().push(gate("True"));
        p.status = Some(before);
        assert_eq!(cond(&pod_status(&p, Some(&sb), ts(5)), "Ready").status, "True");
    }

    #[test]
    fn the_observed_generation_is_the_pods() {
        let mut p = pod("Always", &["a"]);
        let mut st = pod_status(&p, None, ts(1));
        observe_generation(&p, &mut st);
        assert_eq!(st.observed_generation, None, "a server without pod generations");
        p.metadata.generation = Some(3);
        observe_generation(&p, &mut st);
        assert_eq!(st.observed_generation, Some(3));
        assert!(st.conditions.iter().flatten().all(|c| c.observed_generation == Some(3)));
    }

    #[test]
    fn patches_carry_only_what_changed() {
        let mut p = pod("Always", &["a"]);
        let sb = sandbox(SandboxState::Running, &[("a", running())]);
        let first = pod_status(&p, Some(&sb), ts(10));

        // The first write carries everything, and clears what a kubelet owns but did not set.
        let whole = patch(None, &first).unwrap();
        assert_eq!(whole["status"]["phase"], "Running");
        assert_eq!(whole["status"]["reason"], serde_json::Value::Null);
        assert!(whole["status"]["conditions"].as_array().unwrap().len() >= 4);

        // New timestamps alone are not a change.
        p.status = Some(first.clone());
        let again = pod_status(&p, Some(&sb), ts(20));
        assert_eq!(patch(Some(&first), &again), None);

        // The container stops: the phase holds (Always), Ready and ContainersReady flip, the
        // container statuses change; nothing else goes in.
        let stopped = sandbox(SandboxState::Running, &[("a", exited(1))]);
        let third = pod_status(&p, Some(&stopped), ts(30));
        let body = patch(Some(&first), &third).unwrap();
        let status = body["status"].as_object().unwrap();
        let mut keys: Vec<&str> = status.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["conditions", "containerStatuses"], "{body}");
        let mut types: Vec<&str> = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        types.sort_unstable();
        assert_eq!(types, ["ContainersReady", "Ready"]);

        // A field that became unset is cleared; a vanished condition is deleted by type; IP
        // lists are replaced whole.
        let mut fourth = third.clone();
        fourth.message = None;
        fourth.conditions.as_mut().unwrap().retain(|c| c.type_ != "PodScheduled");
        fourth.pod_ips = Some(vec![PodIP { ip: "10.0.0.9".into() }]);
        let mut with_message = third.clone();
        with_message.message = Some("old".into());
        let body = patch(Some(&with_message), &fourth).unwrap();
        assert_eq!(body["status"]["message"], serde_json::Value::Null);
        assert_eq!(
            body["status"]["conditions"],
            serde_json::json!([{ "type": "PodScheduled", "$patch": "delete" }])
        );
        assert_eq!(
            body["status"]["podIPs"],
            serde_json::json!([{ "ip": "10.0.0.9" }, { "$patch": "replace" }])
        );

        // The container runs again: Ready and ContainersReady go back to True, and the reason
        // and message they had are written as null (a merge would keep them).
        let body = patch(Some(&third), &again).unwrap();
        for c in body["status"]["conditions"].as_array().unwrap() {
            let c = c.as_object().unwrap();
            assert_eq!(c["status"], "True", "{c:?}");
            assert_eq!(
                (c.get("reason"), c.get("message")),
                (Some(&serde_json::Value::Null), Some(&serde_json::Value::Null)),
                "{c:?}"
            );
        }
    }

    #[test]
    fn terminal_pods_never_move_backwards() {
        let p = pod("Never", &["a"]);
        let done =
            pod_status(&p, Some(&sandbox(SandboxState::Succeeded, &[("a", exited(0))])), ts(1));
        assert_eq!(done.phase.as_deref(), Some("Succeeded"));
        let running =
            pod_status(&p, Some(&sandbox(SandboxState::Running, &[("a", running())])), ts(2));
        assert_eq!(patch(Some(&done), &running), None);
        assert!(!differs(Some(&done), &running));
        // A terminal pod may still gain detail in the same phase.
        let mut detailed = done.clone();
        detailed.message = Some("exited".into());
        assert!(differs(Some(&done), &detailed));
    }

    #[test]
    fn the_api_servers_echo_of_a_write_is_not_a_change() {
        let p = pod("Always", &["a"]);
        let new = pod_status(&p, Some(&sandbox(SandboxState::Running, &[("a", running())])), ts(1));
        assert!(new.container_statuses.as_ref().is_some_and(|c| c[0].last_state.is_none()));
        // What the API server returns after the write: Go's zero structs shown as `{}`.
        let mut echo = serde_json::to_value(&new).unwrap();
        echo["containerStatuses"][0]["lastState"] = serde_json::json!({});
        let echo: PodStatus = serde_json::from_value(echo).unwrap();
        assert!(echo.container_statuses.as_ref().is_some_and(|c| c[0].last_state.is_some()));
        assert_eq!(patch(Some(&echo), &new), None);
        // A real change in the same list still shows, with the whole list.
        let restarted =
            pod_status(&p, Some(&sandbox(SandboxState::Running, &[("a", exited(1))])), ts(2));
        let body = patch(Some(&echo), &restarted).unwrap();
        assert!(body["status"]["containerStatuses"][0]["state"].is_object());
    }

    #[test]
    fn a_vanished_workload_fails_the_pod() {
        let st = not_found_status(&pod("Never", &["a"]), "job k8s-ns.p is gone", ts(1));
        assert_eq!((st.phase.as_deref(), st.reason.as_deref()), (Some("Failed"), Some("NotFound")));
        let t = st.container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("ContainerStatusUnknown")));
    }

    #[test]
    fn provider_failures_fail_never_pods_only() {
        let st = provider_failed_status(&pod("Never", &["a"]), "spec.volumes[0]: nope", ts(1));
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        assert_eq!(st.reason.as_deref(), Some(REASON_PROVIDER_FAILED));
        let st = provider_failed_status(&pod("Always", &["a"]), "spec.volumes[0]: nope", ts(1));
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        assert_eq!(st.message.as_deref(), Some("spec.volumes[0]: nope"));
    }

    #[test]
    fn init_containers_gate_the_phase_and_the_initialized_condition() {
        use SandboxState as S;
        let with_init = |restart: &str| {
            let mut p = pod(restart, &["app"]);
            p.spec.as_mut().unwrap().init_containers = Some(vec![
                Container { name: "init".into(), image: Some("i".into()), ..Default::default() },
                Container {
                    name: "side".into(),
                    image: Some("i".into()),
                    restart_policy: Some("Always".into()),
                    ..Default::default()
                },
            ]);
            p
        };
        let waiting = ContainerRuntimeStatus::default();
        // Init running: Pending, not initialized, the app container waits in PodInitializing.
        let st = pod_status(
            &with_init("Always"),
            Some(&sandbox(
                S::Pending,
                &[("init", running()), ("side", waiting.clone()), ("app", waiting.clone())],
            )),
            ts(3),
        );
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        let init = cond(&st, "Initialized");
        assert_eq!(
            (init.status.as_str(), init.reason.as_deref()),
            ("False", Some("ContainersNotInitialized"))
        );
        assert_eq!(init.message.as_deref(), Some("containers with incomplete status: [init side]"));
        let app = &st.container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            app.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref(),
            Some("PodInitializing")
        );
        // An init container not started yet waits in PodInitializing too, as the kubelet's
        // default state in a pod with init containers; a reason of the backend's is kept.
        let side = &st.init_container_statuses.as_ref().unwrap()[1];
        assert_eq!(
            side.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref(),
            Some("PodInitializing")
        );
        let backoff = ContainerRuntimeStatus {
            state: ContainerState::Waiting { reason: "CrashLoopBackOff".into(), message: None },
            ..Default::default()
        };
        let st = pod_status(
            &with_init("Always"),
            Some(&sandbox(S::Pending, &[("init", backoff), ("side", waiting.clone())])),
            ts(3),
        );
        let init = &st.init_container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            init.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref(),
            Some("CrashLoopBackOff")
        );
        let plain = pod_status(
            &pod("Always", &["app"]),
            Some(&sandbox(S::Pending, &[("app", waiting.clone())])),
            ts(3),
        );
        assert_eq!(
            plain.container_statuses.as_ref().unwrap()[0]
                .state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("ContainerCreating"),
            "without init containers"
        );
        // Init failed with restartPolicy Never: Failed; the app container never ran.
        let st = pod_status(
            &with_init("Never"),
            Some(&sandbox(
                S::Failed,
                &[("init", exited(1)), ("side", running()), ("app", waiting.clone())],
            )),
            ts(3),
        );
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        let app = &st.container_statuses.as_ref().unwrap()[0];
        assert!(app.state.as_ref().unwrap().waiting.is_some(), "{app:?}");
        // Init done, sidecar and app running: Running, initialized, ready.
        let st = pod_status(
            &with_init("Always"),
            Some(&sandbox(
                S::Running,
                &[("init", exited(0)), ("side", running()), ("app", running())],
            )),
            ts(3),
        );
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&st, "Initialized").status, "True");
        assert_eq!(cond(&st, "Ready").status, "True");
        let init: Vec<(String, bool)> =
            st.init_container_statuses.unwrap().into_iter().map(|c| (c.name, c.ready)).collect();
        assert_eq!(init, [("init".to_owned(), true), ("side".to_owned(), true)]);
        // A missing input: every container waits with the reason.
        let st = waiting_status(
            &with_init("Always"),
            "CreateContainerConfigError",
            "configmap x not found",
            ts(3),
        );
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        for c in
            st.container_statuses.unwrap().iter().chain(st.init_container_statuses.unwrap().iter())
        {
            let w = c.state.as_ref().unwrap().waiting.as_ref().unwrap();
            assert_eq!(w.reason.as_deref(), Some("CreateContainerConfigError"));
        }
    }

    #[test]
    fn deadline_exceeded_is_failed_with_the_kubelet_reason() {
        let st = deadline_exceeded_status(
            &pod("Always", &["a"]),
            Some(&sandbox(SandboxState::Running, &[("a", running())])),
            "Pod was active on the node longer than the specified deadline",
            ts(5),
        );
        assert_eq!(
            (st.phase.as_deref(), st.reason.as_deref()),
            (Some("Failed"), Some("DeadlineExceeded"))
        );
        assert_eq!(cond(&st, "Ready").status, "False");
    }
}
