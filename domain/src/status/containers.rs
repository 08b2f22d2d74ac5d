//! Container statuses (`containerStatuses`, `initContainerStatuses`) from the runtime's view of
//! each container, as the kubelet's `convertToAPIContainerStatuses` makes them.

use k8s_openapi::api::core::v1::{
    Container, ContainerState as K8sContainerState, ContainerStateRunning,
    ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, EphemeralContainer,
    PodStatus, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::runtime::{ContainerRuntimeStatus, ContainerState, Sandbox, Termination};

/// An init container with `restartPolicy: Always`: a native sidecar.
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The statuses of the init containers, in order. A regular init container is ready once it
/// completed successfully; a sidecar is ready as an app container is.
pub(super) fn init_statuses(init: &[Container], sandbox: Option<&Sandbox>) -> Vec<ContainerStatus> {
    init.iter()
        .map(|c| {
            let mut st = container_status(c, &runtime_view(sandbox, &c.name, true));
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
        .collect()
}

/// Why no ephemeral container runs here: the message of its status, its `Failed` Event and the
/// kubelet API's answer for it.
pub const EPHEMERAL_UNSUPPORTED: &str = "ephemeral containers are not supported on this node: its \
backend cannot add a container to a running pod (debug a copy instead: kubectl debug <pod> \
--copy-to=<copy> --same-node --share-processes=false --profile=baseline --image=<image> -c dbg -- \
sleep infinity, then kubectl exec -it <copy> -c dbg -- sh)";

/// The reason of an ephemeral container's status: the runtime's for a container it could not
/// start (containerd's `StartError`).
pub const EPHEMERAL_REASON: &str = "StartError";

/// The statuses of the ephemeral containers (`kubectl debug`), in order: none can run here, so
/// each is `terminated` at once with exit code 128, [`EPHEMERAL_REASON`] and
/// [`EPHEMERAL_UNSUPPORTED`], its `finishedAt` kept from `previous` (the status held) once
/// written. Terminated rather than waiting (the kubelet's `CreateContainerError` for a container
/// it cannot create): `kubectl debug` waits for as long as an ephemeral container waits, and on
/// one terminated asks for its log, which the kubelet API refuses with the same message, so the
/// command fails at once and says why.
pub(super) fn ephemeral_statuses(
    ephemeral: &[EphemeralContainer],
    previous: Option<&PodStatus>,
    now: Time,
) -> Vec<ContainerStatus> {
    let held = previous.and_then(|p| p.ephemeral_container_statuses.as_deref()).unwrap_or_default();
    ephemeral
        .iter()
        .map(|c| {
            let finished_at = held
                .iter()
                .find(|h| h.name == c.name)
                .and_then(|h| h.state.as_ref()?.terminated.as_ref()?.finished_at.clone())
                .unwrap_or_else(|| now.clone());
            ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                ready: false,
                started: Some(false),
                state: Some(K8sContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 128,
                        reason: Some(EPHEMERAL_REASON.to_owned()),
                        message: Some(EPHEMERAL_UNSUPPORTED.to_owned()),
                        finished_at: Some(finished_at),
                        ..ContainerStateTerminated::default()
                    }),
                    ..K8sContainerState::default()
                }),
                ..ContainerStatus::default()
            }
        })
        .collect()
}

/// The names of the init containers not done yet, in order: a regular one until it is ready
/// (completed successfully), a sidecar until it started. Empty once the pod is initialized.
pub(super) fn incomplete<'a>(init: &'a [Container], statuses: &[ContainerStatus]) -> Vec<&'a str> {
    init.iter()
        .zip(statuses)
        .filter(|(c, st)| if is_sidecar(c) { !st.started.unwrap_or(false) } else { !st.ready })
        .map(|(c, _)| c.name.as_str())
        .collect()
}

/// The statuses of the app containers, in order. While the pod is not `initialized`, one that
/// never ran waits in `PodInitializing`: the kubelet never creates app containers before init
/// completes. `has_init`: the pod has init containers.
pub(super) fn app_statuses(
    containers: &[Container],
    sandbox: Option<&Sandbox>,
    has_init: bool,
    initialized: bool,
) -> Vec<ContainerStatus> {
    containers
        .iter()
        .map(|c| {
            let raw = sandbox.and_then(|s| s.containers.get(&c.name));
            let never_ran = raw.is_none_or(|r| matches!(r.state, ContainerState::Waiting { .. }));
            let mut rt = runtime_view(sandbox, &c.name, has_init);
            if !initialized && never_ran {
                // The kubelet never creates app containers before init completes.
                rt.state =
                    ContainerState::Waiting { reason: "PodInitializing".into(), message: None };
            }
            container_status(c, &rt)
        })
        .collect()
}

/// The runtime's view of container `name` as the kubelet reports it: a container the sandbox does
/// not list is not created yet; in a sandbox that ended, one left non-terminated is [`settle`]d.
/// `has_init`: the pod has init containers.
fn runtime_view(sandbox: Option<&Sandbox>, name: &str, has_init: bool) -> ContainerRuntimeStatus {
    let mut rt = sandbox.and_then(|s| s.containers.get(name)).cloned().unwrap_or_default();
    // The kubelet's default state of a container not created yet is `ContainerCreating`, or
    // `PodInitializing` in a pod with init containers (`convertToAPIContainerStatuses`).
    if has_init
        && matches!(&rt.state, ContainerState::Waiting { reason, .. } if reason == "ContainerCreating")
    {
        rt.state = ContainerState::Waiting { reason: "PodInitializing".into(), message: None };
    }
    if sandbox.is_some_and(Sandbox::is_terminal) { settle(rt) } else { rt }
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

/// The Kubernetes form of a container state.
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

/// The Kubernetes form of a container's termination.
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
