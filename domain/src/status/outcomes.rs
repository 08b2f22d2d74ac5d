//! The statuses written when the runtime's view is not the whole story: a container
//! configuration that cannot be made yet, an active deadline passed, a pod the backend cannot run,
//! a pod the kubelet's admission rejected, a workload that vanished.

use k8s_openapi::api::core::v1::{
    ContainerState as K8sContainerState, ContainerStateWaiting, ContainerStatus, Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::conditions::condition;
use super::{REASON_PROVIDER_FAILED, pod_status};
use crate::pod::RestartPolicy;
use crate::runtime::{Sandbox, SandboxState};

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

/// `status` with `message` (why the backend could not place the pod, [`crate::runtime::RuntimePod::unplaced`])
/// on every container still waiting to be created (`ContainerCreating`, `PodInitializing`), as
/// the kubelet's waiting containers carry the runtime's reason for not starting them.
pub fn with_unplaced(mut status: PodStatus, message: &str) -> PodStatus {
    let note = |s: &mut ContainerStatus| {
        let waiting = s.state.as_mut().and_then(|st| st.waiting.as_mut());
        if let Some(w) = waiting.filter(|w| {
            matches!(w.reason.as_deref(), Some("ContainerCreating" | "PodInitializing"))
        }) {
            w.message = Some(message.to_owned());
        }
    };
    status.container_statuses.iter_mut().flatten().for_each(note);
    status.init_container_statuses.iter_mut().flatten().for_each(note);
    status
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
