//! The Events a kubelet records about the containers of a pod, derived from two pod statuses: the
//! one the API server holds and the one about to be written.
//!
//! The kubelet records them as it acts (`pkg/kubelet/kuberuntime/kuberuntime_container.go`,
//! `kuberuntime_manager.go`, `images/image_manager.go`); a backend that runs containers on its own
//! (Nomad, for one, restarts a task without asking) is seen through its status, so each change of a
//! container's status between two writes is turned into the Events the kubelet would have recorded
//! for it. A status written once per change gives each Event once; a status that skipped a step
//! (a container that started and ended between two reads) still gives its `Created` and `Started`.
//! Every Event names its container by `involvedObject.fieldPath`, as the kubelet's
//! `ref.GetReference` does: `spec.containers{<name>}`, `spec.initContainers{<name>}` or
//! `spec.ephemeralContainers{<name>}`.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};

/// An Event about one container of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// `spec.containers{<name>}` or `spec.initContainers{<name>}`.
    pub field_path: String,
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// The kubelet's reason: `Created`, `Started`, `BackOff`, `Failed`, `Killing`.
    pub reason: &'static str,
    /// The kubelet's message for it.
    pub message: String,
}

/// The field path of container `name` of `pod`: an init container's when the pod has one of that
/// name, else a regular container's.
pub fn field_path(pod: &Pod, name: &str) -> String {
    let spec = pod.spec.as_ref();
    let init = spec
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.name == name));
    let ephemeral = spec
        .and_then(|s| s.ephemeral_containers.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.name == name));
    if init {
        format!("spec.initContainers{{{name}}}")
    } else if ephemeral {
        format!("spec.ephemeralContainers{{{name}}}")
    } else {
        format!("spec.containers{{{name}}}")
    }
}

/// The Events that the change from `old` (the status the API server holds; `None` before the
/// first write) to `new` shows, in the kubelet's order for each container, init containers first:
/// - `Created` (`Container created`) and `Started` (`Container started`) when the
///   container has started more often than `old` shows (its restart count, plus one while it runs
///   or after it ran);
/// - `BackOff`, Warning (`Back-off restarting failed container <name> in pod <name>_<namespace>(<uid>)`)
///   when it starts waiting in `CrashLoopBackOff`;
/// - `Failed`, Warning (`Error: <message>`, the kubelet's `Error: %v` of the start error) when it
///   starts waiting in `CreateContainerConfigError`, `CreateContainerError` or
///   `RunContainerError`, and when an ephemeral container (`kubectl debug`) is first reported
///   terminated (this node runs none: `status::EPHEMERAL_UNSUPPORTED`).
///
/// Image Events (`Failed` to pull, `BackOff` pulling) are the caller's: they are recorded once
/// per message, not per change.
pub fn container_events(
    pod: &Pod,
    old: Option<&PodStatus>,
    new: &PodStatus,
) -> Vec<ContainerEvent> {
    let statuses = |s: &PodStatus| -> Vec<ContainerStatus> {
        let init = s.init_container_statuses.iter().flatten();
        let ephemeral = s.ephemeral_container_statuses.iter().flatten();
        init.chain(s.container_statuses.iter().flatten()).chain(ephemeral).cloned().collect()
    };
    let before = old.map(statuses).unwrap_or_default();
    let mut out = Vec::new();
    for cs in statuses(new) {
        let prev = before.iter().find(|p| p.name == cs.name);
        let path = field_path(pod, &cs.name);
        let event = |warning, reason, message| ContainerEvent {
            field_path: path.clone(),
            warning,
            reason,
            message,
        };
        // An ephemeral container this node cannot run (`kubectl debug`): terminated at once.
        if path.starts_with("spec.ephemeralContainers") {
            let failed = |s: &ContainerStatus| {
                s.state.as_ref().and_then(|st| st.terminated.as_ref()).map(|t| t.message.clone())
            };
            if let Some(message) = failed(&cs)
                && prev.and_then(failed).is_none()
            {
                out.push(event(true, "Failed", format!("Error: {}", message.unwrap_or_default())));
            }
            continue;
        }
        if starts(&cs) > prev.map_or(0, starts) {
            out.push(event(false, "Created", "Container created".into()));
            out.push(event(false, "Started", "Container started".into()));
        }
        let waiting = |s: &ContainerStatus| {
            s.state.as_ref().and_then(|st| st.waiting.as_ref()).and_then(|w| w.reason.clone())
        };
        let reason = waiting(&cs);
        if reason.is_none() || reason == prev.and_then(waiting) {
            continue;
        }
        let message = cs
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.message.clone())
            .unwrap_or_default();
        match reason.as_deref() {
            Some("CrashLoopBackOff") => {
                let meta = &pod.metadata;
                let text = format!(
                    "Back-off restarting failed container {} in pod {}_{}({})",
                    cs.name,
                    meta.name.as_deref().unwrap_or_default(),
                    meta.namespace.as_deref().unwrap_or_default(),
                    meta.uid.as_deref().unwrap_or_default(),
                );
                out.push(event(true, "BackOff", text));
            }
            Some("CreateContainerConfigError" | "CreateContainerError" | "RunContainerError") => {
                out.push(event(true, "Failed", format!("Error: {message}")));
            }
            _ => {}
        }
    }
    out
}

/// The `Killing` Events of a pod being stopped (`Stopping container <name>`), one per container
/// `status` shows running, as the kubelet's `killContainer` records them.
pub fn killing_events(pod: &Pod, status: Option<&PodStatus>) -> Vec<ContainerEvent> {
    let Some(s) = status else { return Vec::new() };
    let init = s.init_container_statuses.iter().flatten();
    init.chain(s.container_statuses.iter().flatten())
        .filter(|cs| cs.state.as_ref().is_some_and(|st| st.running.is_some()))
        .map(|cs| ContainerEvent {
            field_path: field_path(pod, &cs.name),
            warning: false,
            reason: "Killing",
            message: format!("Stopping container {}", cs.name),
        })
        .collect()
}

/// How many times a container has started: its restarts, plus one while it runs or once it ran.
fn starts(cs: &ContainerStatus) -> i64 {
    let state = cs.state.as_ref();
    let ran = state.is_some_and(|s| {
        s.running.is_some() || s.terminated.as_ref().is_some_and(|t| t.started_at.is_some())
    });
    // A container waiting to be restarted counts the run its restart count already holds.
    i64::from(cs.restart_count) + i64::from(ran)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        crate::testing::pod("p")
            .namespace("ns")
            .uid("u1")
            .init_container("init", &[])
            .container("c", &[])
            .build()
    }

    fn status(init: serde_json::Value, c: serde_json::Value) -> PodStatus {
        serde_json::from_value(json!({
            "initContainerStatuses": [init], "containerStatuses": [c]
        }))
        .unwrap()
    }

    fn cs(name: &str, restarts: i32, state: serde_json::Value) -> serde_json::Value {
        json!({"name": name, "image": "i", "imageID": "", "ready": false,
            "restartCount": restarts, "state": state})
    }

    fn reasons(events: &[ContainerEvent]) -> Vec<(String, &'static str)> {
        events.iter().map(|e| (e.field_path.clone(), e.reason)).collect()
    }

    /// An ephemeral container's first terminated status gives one Warning `Failed`, named by
    /// its field path; the same status written again gives none.
    #[test]
    fn an_ephemeral_container_that_cannot_run_fails_once() {
        let mut p = pod();
        if let Some(spec) = p.spec.as_mut() {
            spec.ephemeral_containers =
                Some(vec![k8s_openapi::api::core::v1::EphemeralContainer {
                    name: "debugger".into(),
                    ..Default::default()
                }]);
        }
        let running = json!({"running": {}});
        let mut new =
            status(cs("init", 0, json!({"terminated": {"exitCode": 0}})), cs("c", 0, running));
        let old = new.clone();
        new.ephemeral_container_statuses =
            Some(vec![serde_json::from_value(cs(
            "debugger",
            0,
            json!({"terminated": {"exitCode": 128, "reason": "StartError", "message": "no"}}),
        ))
        .unwrap()]);
        let events = container_events(&p, Some(&old), &new);
        assert_eq!(reasons(&events), [("spec.ephemeralContainers{debugger}".to_owned(), "Failed")]);
        assert!(events[0].warning && events[0].message == "Error: no", "{events:?}");
        assert!(container_events(&p, Some(&new), &new).is_empty());
    }

    const WAITING: &str = "ContainerCreating";

    #[test]
    fn each_start_gives_created_and_started_once() {
        let p = pod();
        let waiting = |r: &str| json!({"waiting": {"reason": r}});
        let running = json!({"running": {"startedAt": "2026-12-02T10:00:00Z"}});
        let done = json!({"terminated": {"exitCode": 0, "startedAt": "2026-12-02T10:00:00Z"}});
        let first = status(cs("init", 0, waiting(WAITING)), cs("c", 0, waiting("PodInitializing")));
        assert!(container_events(&p, None, &first).is_empty());
        // The init container ran and ended between two reads; the main one runs.
        let second = status(cs("init", 0, done.clone()), cs("c", 0, running.clone()));
        assert_eq!(
            reasons(&container_events(&p, Some(&first), &second)),
            [
                ("spec.initContainers{init}".into(), "Created"),
                ("spec.initContainers{init}".into(), "Started"),
                ("spec.containers{c}".into(), "Created"),
                ("spec.containers{c}".into(), "Started"),
            ]
        );
        let e = &container_events(&p, None, &second)[2];
        assert_eq!(e.message, "Container created");
        assert!(!e.warning);
        // Nothing new: nothing recorded, however often it is read.
        assert!(container_events(&p, Some(&second), &second).is_empty());
        // The main container ended, then waits to be restarted (its restart count holds that run),
        // then runs again: one BackOff, then one more start.
        let ended = status(cs("init", 0, done.clone()), cs("c", 0, done.clone()));
        assert!(container_events(&p, Some(&second), &ended).is_empty());
        let backoff = status(cs("init", 0, done.clone()), cs("c", 1, waiting("CrashLoopBackOff")));
        let events = container_events(&p, Some(&ended), &backoff);
        assert_eq!(reasons(&events), [("spec.containers{c}".into(), "BackOff")]);
        assert!(events[0].warning);
        assert_eq!(events[0].message, "Back-off restarting failed container c in pod p_ns(u1)");
        assert!(container_events(&p, Some(&backoff), &backoff).is_empty());
        let again = status(cs("init", 0, done.clone()), cs("c", 1, running.clone()));
        assert_eq!(
            reasons(&container_events(&p, Some(&backoff), &again)),
            [("spec.containers{c}".into(), "Created"), ("spec.containers{c}".into(), "Started")]
        );
        // Restarted twice between two reads: one pair (the kubelet would have two; the API
        // server's Event series would count them as one anyway).
        let later = status(cs("init", 0, done), cs("c", 3, running));
        assert_eq!(container_events(&p, Some(&again), &later).len(), 2);
    }

    #[test]
    fn a_start_error_gives_one_failed_and_a_stop_gives_killing() {
        let p = pod();
        let before =
            status(cs("init", 0, json!({"waiting": {"reason": WAITING}})), cs("c", 0, json!({})));
        let error = json!({"waiting": {"reason": "CreateContainerConfigError",
            "message": "configmap ns/cfg not found"}});
        let after = status(cs("init", 0, error), cs("c", 0, json!({})));
        let events = container_events(&p, Some(&before), &after);
        assert_eq!(reasons(&events), [("spec.initContainers{init}".into(), "Failed")]);
        assert_eq!(events[0].message, "Error: configmap ns/cfg not found");
        assert!(container_events(&p, Some(&after), &after).is_empty());
        let running = json!({"running": {}});
        let up = status(cs("init", 0, json!({"terminated": {"exitCode": 0}})), cs("c", 0, running));
        let killing = killing_events(&p, Some(&up));
        assert_eq!(reasons(&killing), [("spec.containers{c}".into(), "Killing")]);
        assert_eq!(killing[0].message, "Stopping container c");
        assert!(killing_events(&p, None).is_empty());
    }
}
