//! The pod conditions the kubelet writes (`pkg/kubelet/status/generate.go`): their values from the
//! sandbox, the container statuses and the readiness gates, and their transition times.

use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::containers::is_sidecar;
use crate::runtime::{Sandbox, SandboxState};

/// The condition types the kubelet writes; others belong to other writers and are left alone.
pub(super) const KUBELET_CONDITIONS: [&str; 5] =
    ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"];

/// A condition's value: whether it holds and, when it does not, the kubelet's reason and message.
pub(super) struct ConditionValue {
    /// `status: "True"`.
    pub(super) ok: bool,
    /// `reason`.
    pub(super) reason: Option<&'static str>,
    /// `message`.
    pub(super) message: Option<String>,
}

/// The values of the conditions the kubelet computes for a pod (`PodScheduled` always holds).
pub(super) struct KubeletConditions {
    /// `PodReadyToStartContainers`: the sandbox is up ([`sandbox_ready`]).
    pub(super) ready_to_start_containers: bool,
    /// `Initialized` ([`initialized`]).
    pub(super) initialized: ConditionValue,
    /// `Ready` ([`pod_ready`]).
    pub(super) ready: ConditionValue,
    /// `ContainersReady` ([`containers_ready`]).
    pub(super) containers_ready: ConditionValue,
}

impl KubeletConditions {
    /// The pod's conditions: the kubelet's in its order, each keeping its `lastTransitionTime`
    /// from `previous` while its status holds (else stamped `now`), then the conditions of other
    /// writers as `previous` holds them.
    pub(super) fn into_conditions(
        self,
        previous: Option<&PodStatus>,
        now: Timestamp,
    ) -> Vec<PodCondition> {
        let of = |type_: &str, v: ConditionValue| {
            condition(previous, type_, v.ok, v.reason, v.message, now)
        };
        let mut conditions = vec![
            condition(
                previous,
                "PodReadyToStartContainers",
                self.ready_to_start_containers,
                None,
                None,
                now,
            ),
            of("Initialized", self.initialized),
            of("Ready", self.ready),
            of("ContainersReady", self.containers_ready),
            condition(previous, "PodScheduled", true, None, None, now),
        ];
        // Conditions of other writers (readiness gates', the controller manager's) are theirs:
        // carried as they are, so the status this node holds after its own write still has them.
        conditions.extend(
            previous
                .and_then(|s| s.conditions.as_deref())
                .unwrap_or_default()
                .iter()
                .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()))
                .cloned(),
        );
        conditions
    }
}

/// `PodReadyToStartContainers`: the pod has a sandbox that is neither pending nor terminal.
pub(super) fn sandbox_ready(sandbox: Option<&Sandbox>) -> bool {
    sandbox.is_some_and(|s| !s.is_terminal() && s.state != SandboxState::Pending)
}

/// `Initialized`: every init container done (`incomplete`, the names of those not done, is
/// empty) or the pod `Succeeded`; else `ContainersNotInitialized` naming the incomplete ones.
pub(super) fn initialized(incomplete: &[&str], phase: &str) -> ConditionValue {
    if incomplete.is_empty() || phase == "Succeeded" {
        ConditionValue { ok: true, reason: None, message: None }
    } else {
        ConditionValue {
            ok: false,
            reason: Some("ContainersNotInitialized"),
            message: Some(format!("containers with incomplete status: [{}]", incomplete.join(" "))),
        }
    }
}

/// `ContainersReady`: `PodCompleted` once the pod is `terminal`; else every app container and
/// sidecar ready, or `ContainersNotReady` naming those that are not.
pub(super) fn containers_ready(
    terminal: bool,
    statuses: &[ContainerStatus],
    init: &[Container],
    init_statuses: &[ContainerStatus],
) -> ConditionValue {
    let unready: Vec<&str> = statuses
        .iter()
        .chain(
            init_statuses.iter().filter(|s| init.iter().any(|c| c.name == s.name && is_sidecar(c))),
        )
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    if terminal {
        ConditionValue { ok: false, reason: Some("PodCompleted"), message: None }
    } else if unready.is_empty() {
        ConditionValue { ok: true, reason: None, message: None }
    } else {
        let msg = format!("containers with unready status: [{}]", unready.join(" "));
        ConditionValue { ok: false, reason: Some("ContainersNotReady"), message: Some(msg) }
    }
}

/// `Ready`: `ContainersReady` and every readiness gate's condition True, those conditions being
/// set by others in the pod's status (`status.GeneratePodReadyCondition`); else
/// `ReadinessGatesNotReady` saying which gate is missing or not True.
pub(super) fn pod_ready(
    containers_ready: &ConditionValue,
    spec: Option<&PodSpec>,
    previous: Option<&PodStatus>,
) -> ConditionValue {
    let gates_unready: Vec<String> = if containers_ready.ok {
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
    if gates_unready.is_empty() {
        ConditionValue {
            ok: containers_ready.ok,
            reason: containers_ready.reason,
            message: containers_ready.message.clone(),
        }
    } else {
        ConditionValue {
            ok: false,
            reason: Some("ReadinessGatesNotReady"),
            message: Some(gates_unready.join(", ")),
        }
    }
}

/// Condition `type_` with status `ok`, `reason` and `message`; its `lastTransitionTime` is
/// `previous`'s while the status is the same, else `now`.
pub(super) fn condition(
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
