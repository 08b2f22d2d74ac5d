//! The pod status a kubelet would write, computed from the runtime's view of the pod.
//!
//! The rules follow the kubelet: the phase from `getPhase` (`pkg/kubelet/kubelet_pods.go`,
//! `phase`), the conditions from `pkg/kubelet/status/generate.go` (`conditions`), and container
//! statuses from `convertToAPIContainerStatuses` (`containers`), readiness from the probe results
//! the runtime view carries. The statuses of pods the runtime cannot speak for (`outcomes`) and the
//! patch that writes a status (`patch`) are built on them.

mod conditions;
mod containers;
mod outcomes;
mod patch;
mod phase;
#[cfg(test)]
mod tests;

use k8s_openapi::api::core::v1::{HostIP, Pod, PodIP, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

pub use self::containers::{EPHEMERAL_REASON, EPHEMERAL_UNSUPPORTED, is_sidecar};
pub use self::outcomes::{
    deadline_exceeded_status, not_found_status, provider_failed_status, rejected_status,
    waiting_status, with_unplaced,
};
pub use self::patch::{differs, patch};
use crate::pod::RestartPolicy;
use crate::runtime::{Sandbox, SandboxState};

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

    let init_statuses = containers::init_statuses(init_containers, sandbox);
    let incomplete = containers::incomplete(init_containers, &init_statuses);
    let has_init = !init_containers.is_empty();
    let statuses = containers::app_statuses(containers, sandbox, has_init, incomplete.is_empty());

    let phase = phase::init_phase(restart, init_containers, &init_statuses, sandbox)
        .unwrap_or_else(|| phase::phase(restart, sandbox, &statuses));
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let containers_ready =
        conditions::containers_ready(terminal, &statuses, init_containers, &init_statuses);
    let kubelet_conditions = conditions::KubeletConditions {
        ready_to_start_containers: conditions::sandbox_ready(sandbox),
        initialized: conditions::initialized(&incomplete, phase),
        ready: conditions::pod_ready(&containers_ready, spec, previous),
        containers_ready,
    };

    let ephemeral = spec.and_then(|s| s.ephemeral_containers.as_deref()).unwrap_or_default();
    let ephemeral = containers::ephemeral_statuses(ephemeral, previous, Time(now));
    let pod_ip = sandbox.and_then(|s| s.pod_ip.clone());
    let host_ip = sandbox.and_then(|s| s.host_ip.clone());
    let (reason, message) = lost_reason(sandbox);
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(kubelet_conditions.into_conditions(previous, now)),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        ephemeral_container_statuses: (!ephemeral.is_empty()).then_some(ephemeral),
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

/// The pod's own `reason` and `message`: `NodeLost` with the backend's note while its sandbox is
/// lost, nothing otherwise.
fn lost_reason(sandbox: Option<&Sandbox>) -> (Option<String>, Option<String>) {
    match sandbox {
        Some(s) if s.state == SandboxState::Lost => (
            Some("NodeLost".to_owned()),
            s.message.clone().or(Some("the backend lost the pod's sandbox".into())),
        ),
        _ => (None, None),
    }
}

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
