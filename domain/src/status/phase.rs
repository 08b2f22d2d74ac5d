//! The pod's phase, by the rules of the kubelet's `getPhase` (`pkg/kubelet/kubelet_pods.go`): first
//! what the init containers decide, then what the app containers' states add up to.

use k8s_openapi::api::core::v1::{Container, ContainerStatus};

use super::containers::is_sidecar;
use crate::pod::RestartPolicy;
use crate::runtime::{Sandbox, SandboxState};

/// The phase while init containers decide it (`getPhase`, first part): `Failed` when a regular
/// init container failed and the pod never restarts, `Pending` while one has not completed or a
/// sidecar has not started; `None` once initialisation is over.
pub(super) fn init_phase(
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

/// The phase once initialisation is over (`getPhase`, second part), from the app containers'
/// statuses: `Pending` until placed, without containers or while one waits (a lost sandbox:
/// `Failed` for a pod that never restarts, else `Pending`); `Running` while one runs; once all
/// stopped (or waiting to be restarted), `Running` under `Always`, `Succeeded` when all succeeded,
/// else `Running` under `OnFailure` and `Failed` under `Never`.
pub(super) fn phase(
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
