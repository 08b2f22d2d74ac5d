//! Nomad allocation to the kubelet's runtime view ([`Sandbox`]): a pure translation.
//!
//! - Client status: `pending`/`running`/`complete`/`failed`/`lost`/`unknown` map one to one.
//! - Task state `pending`: waiting, `ContainerCreating` (or `CrashLoopBackOff` between restarts,
//!   with the last run as `lastState`); `running`: running since the last `Started` event;
//!   `dead`: terminated with the exit code and signal of the last `Terminated` event (still waiting
//!   when it never ran and did not fail itself: a sibling failed first). A task killed
//!   by signal n with no exit code reports 128 + n, as container runtimes do. A task that died
//!   without ever running (driver or setup failure) reports 128 and `StartError`.

use std::collections::BTreeMap;

use vk_domain::jiff::Timestamp;
use vk_domain::pod::PodKey;
use vk_domain::runtime::{
    ContainerRuntimeStatus, ContainerState, ImagePull, PodOwner, Sandbox, SandboxState, Termination,
};

use super::api::{Allocation, Network, TaskEvent, TaskState};
use super::job::{
    META_IMAGE_PREFIX, META_NAMESPACE, META_NODE, META_POD, META_RESTART_POLICY,
    META_RESTARTS_PREFIX, META_UID, VOLUMES_TASK, is_internal_task, own_address,
};

/// The pod a job belongs to, from its Meta, if it was created by node `node`.
/// Jobs of other nodes (or not made by a virtual kubelet) give `None` and are never touched.
pub fn owner(meta: &BTreeMap<String, String>, node: &str) -> Option<PodOwner> {
    if meta.get(META_NODE).map(String::as_str) != Some(node) {
        return None;
    }
    let key = PodKey::new(meta.get(META_NAMESPACE)?.as_str(), meta.get(META_POD)?.as_str()).ok()?;
    Some(PodOwner { key, uid: meta.get(META_UID)?.clone(), node: node.to_owned() })
}

/// The image of each container as the job was registered (`k8s_image_<container>` Meta).
pub fn images(meta: &BTreeMap<String, String>) -> vk_domain::runtime::LiteMap<String, String> {
    meta.iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(META_IMAGE_PREFIX)?.to_owned(), v.clone())))
        .collect()
}

/// The restart counts carried over from earlier allocations (`k8s_restarts_<container>` Meta).
pub fn restart_bases(meta: &BTreeMap<String, String>) -> BTreeMap<String, i32> {
    meta.iter()
        .filter_map(|(k, v)| {
            Some((k.strip_prefix(META_RESTARTS_PREFIX)?.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// The allocation that stands for the pod: the newest one Nomad wants running, else the newest.
pub fn current<'a>(allocs: impl IntoIterator<Item = &'a Allocation>) -> Option<&'a Allocation> {
    let allocs: Vec<&Allocation> = allocs.into_iter().collect();
    let newest = |want_run: bool| {
        allocs
            .iter()
            .filter(|a| !want_run || a.desired_status == "run")
            .max_by_key(|a| a.create_index)
            .copied()
    };
    newest(true).or_else(|| newest(false))
}

/// The allocation that stands for the pod of a job with `meta`: as [`current`], except that for a
/// `restartPolicy: Never` pod ([`META_RESTART_POLICY`]) an allocation Nomad marked `lost` does.
/// Nomad replaces the allocations of a node that went down whatever the reschedule policy
/// (the `disconnect` block's default, <https://developer.hashicorp.com/nomad/docs/job-specification/disconnect>);
/// for a pod that must never restart the replacement would be a second run, so the pod fails
/// with the lost one (and its job is then stopped, replacement included).
pub fn current_for<'a>(
    allocs: impl IntoIterator<Item = &'a Allocation>,
    meta: &BTreeMap<String, String>,
) -> Option<&'a Allocation> {
    let allocs: Vec<&Allocation> = allocs.into_iter().collect();
    let never = meta.get(META_RESTART_POLICY).is_some_and(|p| p == "Never");
    let lost = allocs.iter().filter(|a| a.client_status == "lost").min_by_key(|a| a.create_index);
    match lost {
        Some(a) if never => Some(a),
        _ => current(allocs),
    }
}

/// The group network mode of `alloc` (`host`, `bridge`, `none`, `cni/<name>`), from its allocated
/// resources; empty when the stub carries none.
pub fn network_mode(alloc: &Allocation) -> &str {
    networks(alloc).first().map_or("", |n| n.mode.as_str())
}

/// The group networks of `alloc`'s allocated resources (none when the stub carries none).
fn networks(alloc: &Allocation) -> &[Network] {
    alloc
        .allocated_resources
        .as_ref()
        .and_then(|r| r.shared.as_ref())
        .and_then(|s| s.networks.as_deref())
        .unwrap_or_default()
}

/// The sandbox for `alloc`. `host_ip` is the address of the Nomad node that runs it; `address`
/// the allocation's own (`NetworkStatus.Address`) when its group network gives it one
/// ([`own_address`]): then that is the pod's IP and every container port answers there, so no
/// port is mapped. Otherwise (host mode) the pod's IP is the node's network address and a
/// container port reaches the host port Nomad mapped it to.
pub fn sandbox(alloc: &Allocation, host_ip: Option<String>, address: Option<String>) -> Sandbox {
    let state = match alloc.client_status.as_str() {
        "pending" => SandboxState::Pending,
        "running" => SandboxState::Running,
        "complete" => SandboxState::Succeeded,
        "failed" => SandboxState::Failed,
        "lost" => SandboxState::Lost,
        _ => SandboxState::Unknown,
    };
    let networks = networks(alloc);
    let node_ip = networks.iter().find(|n| !n.ip.is_empty()).map(|n| n.ip.clone());
    let (pod_ip, ports) = if own_address(network_mode(alloc)) {
        (address.filter(|a| !a.is_empty()), BTreeMap::new())
    } else {
        let ports = networks
            .iter()
            .flat_map(|n| n.dynamic_ports.iter().chain(n.reserved_ports.iter()))
            .filter_map(|p| Some((u16::try_from(p.to).ok()?, u16::try_from(p.value).ok()?)))
            .filter(|(to, value)| *to > 0 && *value > 0)
            .collect();
        (node_ip.clone(), ports)
    };
    let containers = alloc
        .task_states
        .iter()
        .flatten()
        .filter(|(name, _)| !is_internal_task(name))
        .map(|(name, ts)| (name.clone(), container(&alloc.id, name, ts)))
        .collect();
    // The task that prepares the pod's volumes is not a container: it is the
    // sandbox's preparation, and what went wrong with it is the sandbox's message.
    let setup = alloc.task_states.as_ref().and_then(|t| t.get(VOLUMES_TASK));
    let prepared = setup.map(|ts| ts.state == "dead" && !ts.failed);
    let setup_problem = setup.filter(|_| prepared == Some(false)).and_then(|ts| {
        let e = ts.events.as_deref()?.last()?;
        let failed = ts.failed
            || matches!(
                e.type_.as_str(),
                "Driver Failure" | "Setup Failure" | "Terminated" | "Restarting" | "Not Restarting"
            );
        (failed && !e.display_message.is_empty()).then(|| {
            format!("preparing the pod's volumes (task {VOLUMES_TASK}): {}", e.display_message)
        })
    });
    let message =
        setup_problem.or_else(|| Some(alloc.client_description.clone()).filter(|m| !m.is_empty()));
    Sandbox {
        id: alloc.id.clone(),
        state,
        created_at: from_nanos(alloc.create_time),
        host_ip: host_ip.or(node_ip),
        pod_ip,
        containers,
        message,
        ports,
        prepared,
    }
}

fn from_nanos(ns: i64) -> Option<Timestamp> {
    (ns > 0).then(|| Timestamp::from_nanosecond(i128::from(ns)).ok()).flatten()
}

fn from_rfc3339(s: Option<&str>) -> Option<Timestamp> {
    let t: Timestamp = s?.parse().ok()?;
    (t.as_second() > 0).then_some(t)
}

fn container(alloc_id: &str, task: &str, ts: &TaskState) -> ContainerRuntimeStatus {
    let events = ts.events.as_deref().unwrap_or_default();
    let last = |ty: &str| ts.last_event(ty);
    let last_started = last("Started").and_then(|e| from_nanos(e.time));
    let started_at = last_started.or_else(|| from_rfc3339(ts.started_at.as_deref()));
    let restart_count = i32::try_from(ts.restarts).unwrap_or(i32::MAX);
    let never_ran = started_at.is_none() && last("Terminated").is_none();
    // The image could not be pulled and the container never ran: the kubelet's ErrImagePull,
    // and ImagePullBackOff while Nomad waits to try again.
    let pull = pull_failure(events).filter(|_| never_ran && ts.state != "running");
    let state = pull.unwrap_or_else(|| match ts.state.as_str() {
        "running" => ContainerState::Running { started_at },
        // Killed before it ever ran, through no fault of its own (a sibling, such as an init
        // container, failed): it never left the waiting state.
        "dead" if never_ran && !ts.failed => ContainerState::Waiting {
            reason: "ContainerCreating".into(),
            message: events.last().map(|e| e.display_message.clone()).filter(|m| !m.is_empty()),
        },
        "dead" => ContainerState::Terminated(termination(events, ts, started_at)),
        _ if restart_count > 0 => ContainerState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: last("Restarting")
                .map(|e| e.display_message.clone())
                .filter(|m| !m.is_empty()),
        },
        _ => ContainerState::Waiting {
            reason: "ContainerCreating".into(),
            message: events.last().map(|e| e.display_message.clone()).filter(|m| !m.is_empty()),
        },
    });
    let last_termination = (restart_count > 0 && ts.state != "dead")
        .then(|| last_terminated(events).map(|(e, before)| terminated(e, before, None)))
        .flatten();
    ContainerRuntimeStatus {
        container_id: Some(format!("nomad://{alloc_id}/{task}")),
        state,
        restart_count,
        last_termination,
        probe_ready: None,
        probe_started: None,
        image_pull: image_pull(events),
        post_start_pending: false,
    }
}

/// The docker driver's event when it starts pulling a task's image (`drivers/docker/driver.go`,
/// a `Driver` event), which it skips when the image is there already (and `force_pull` unset).
const DOWNLOADING: &str = "Downloading image";

/// The pull of the task's image for its last start attempt: `Pulling` after the driver's
/// [`DOWNLOADING`] event until a `Started` event follows it, then `Pulled` with the time between
/// the two. `None` when the last attempt pulled nothing.
fn image_pull(events: &[TaskEvent]) -> Option<ImagePull> {
    let i = events.iter().rposition(|e| e.type_ == "Driver" && e.display_message == DOWNLOADING)?;
    let (pull, after) = (&events[i], &events[i + 1..]);
    // What ended that attempt: its start, or a restart after a failed pull (nothing pulled).
    match after.iter().find(|e| matches!(e.type_.as_str(), "Started" | "Restarting")) {
        Some(started) if started.type_ == "Started" => {
            let ns = u64::try_from(started.time.saturating_sub(pull.time)).unwrap_or(0);
            Some(ImagePull::Pulled { took: std::time::Duration::from_nanos(ns) })
        }
        Some(_) => None,
        None => Some(ImagePull::Pulling),
    }
}

/// The docker driver's message for an image it could not pull (`Failed to pull `<image>`: <the
/// engine's error>`, a `Driver Failure` event).
const PULL_FAILED: &str = "Failed to pull `";

/// The waiting state of a container whose last start attempt failed to pull its image:
/// `ErrImagePull` with the engine's error right after the failure, `ImagePullBackOff` with
/// the kubelet's `Back-off pulling image "<image>": ErrImagePull: <error>` once Nomad is
/// waiting to try again
/// (`Restarting`). `None` when the last attempt got past the pull (or is pulling now).
fn pull_failure(events: &[TaskEvent]) -> Option<ContainerState> {
    let last = events.iter().rev().find(|e| {
        matches!(e.type_.as_str(), "Driver Failure" | "Driver" | "Started" | "Terminated")
    })?;
    // Pulling again after a failed pull is still the back-off, as the kubelet reports it.
    let failed = match last.type_.as_str() {
        "Driver" => events.iter().rev().find(|e| e.type_ == "Driver Failure")?,
        "Driver Failure" => last,
        _ => return None,
    };
    let rest = failed.display_message.strip_prefix(PULL_FAILED)?;
    let (image, error) = rest.split_once("`: ").unwrap_or((rest, rest));
    let backing_off =
        last.type_ == "Driver" || events.last().is_some_and(|e| e.type_ == "Restarting");
    Some(if backing_off {
        ContainerState::Waiting {
            reason: "ImagePullBackOff".into(),
            message: Some(format!("Back-off pulling image {image:?}: ErrImagePull: {error}")),
        }
    } else {
        ContainerState::Waiting { reason: "ErrImagePull".into(), message: Some(error.to_owned()) }
    })
}

fn termination(events: &[TaskEvent], ts: &TaskState, started_at: Option<Timestamp>) -> Termination {
    let finished_at = from_rfc3339(ts.finished_at.as_deref());
    match last_terminated(events) {
        Some((e, before)) => {
            let mut t = terminated(e, before, started_at);
            t.finished_at = finished_at.or(t.finished_at);
            t
        }
        None => {
            let failure =
                events.iter().rev().find(|e| e.fails_task || e.type_.ends_with("Failure"));
            let message = failure.or(events.last()).map(|e| e.display_message.clone());
            Termination {
                exit_code: if ts.failed { 128 } else { 0 },
                signal: None,
                reason: if ts.failed { "StartError".into() } else { "Completed".into() },
                message: message.filter(|m| !m.is_empty()),
                started_at,
                finished_at,
            }
        }
    }
}

/// The last `Terminated` event, if any, and the events before it.
fn last_terminated(events: &[TaskEvent]) -> Option<(&TaskEvent, &[TaskEvent])> {
    let i = events.iter().rposition(|e| e.type_ == "Terminated")?;
    Some((&events[i], &events[..i]))
}

/// Nomad's events that stop or signal a running task (`structs.TaskKilling`, `TaskKilled`,
/// `TaskSignaling`, `TaskRestartSignal`): after one of them, a SIGKILL is Nomad's own.
const NOMAD_KILLS: [&str; 4] = ["Killing", "Killed", "Signaling", "Restart Signaled"];

/// The docker driver's exit message for a container whose exit code was not 0
/// (`drivers/docker/handle.go`), as the `Terminated` event carries it.
const DOCKER_EXIT: &str = "Docker container exited with non-zero exit code: 137";

/// How a container's run ended, from its `Terminated` event `e` and the task's events `before`
/// it.
///
/// The reason follows the kubelet's: `Completed` for exit code 0, `OOMKilled` when the
/// kernel's OOM killer ended it, else `Error`. Nomad says OOM only from Docker's
/// `State.OOMKilled` (`oom_killed` in the event's details), which Docker fails to set when it
/// handles the container's exit before the OOM event (seen under load on cgroup v1) and never sets
/// on cgroup v2 (Nomad's `drivers/docker/handle.go` says so). So a docker container that ended
/// with 137 (SIGKILL) while Nomad was neither stopping nor signalling it is `OOMKilled` too: in a
/// container's PID namespace nothing but a process outside it (the kernel's OOM killer, or root
/// on the Nomad client) can SIGKILL its init.
fn terminated(e: &TaskEvent, before: &[TaskEvent], started_at: Option<Timestamp>) -> Termination {
    let detail =
        |k: &str| e.details.as_ref().and_then(|d| d.get(k)).and_then(|v| v.parse::<i32>().ok());
    let mut exit_code = detail("exit_code").unwrap_or(e.exit_code);
    let signal = detail("signal").unwrap_or(e.signal);
    if signal > 0 && exit_code <= 0 {
        exit_code = 128 + signal;
    }
    let docker_says_oom =
        e.details.as_ref().and_then(|d| d.get("oom_killed")).is_some_and(|v| v == "true");
    let killed_by_nomad = before
        .iter()
        .rev()
        .take_while(|b| b.type_ != "Started")
        .any(|b| NOMAD_KILLS.contains(&b.type_.as_str()));
    let oom = docker_says_oom
        || (exit_code == 137 && e.display_message.contains(DOCKER_EXIT) && !killed_by_nomad);
    let reason = if oom {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    Termination {
        exit_code,
        signal: (signal > 0).then_some(signal),
        reason: reason.into(),
        message: Some(e.display_message.clone()).filter(|m| !m.is_empty()),
        started_at,
        finished_at: from_nanos(e.time),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn alloc(v: serde_json::Value) -> Allocation {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn owner_requires_this_node() {
        let meta: BTreeMap<String, String> =
            [(META_NODE, "vk"), (META_NAMESPACE, "ns"), (META_POD, "p"), (META_UID, "u")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let o = owner(&meta, "vk").unwrap();
        assert_eq!((o.key.to_string(), o.uid.as_str()), ("ns/p".to_owned(), "u"));
        assert_eq!(owner(&meta, "other"), None);
        assert_eq!(owner(&BTreeMap::new(), "vk"), None);
    }

    #[test]
    fn images_and_restart_bases_are_read_from_meta() {
        let meta: BTreeMap<String, String> = [
            ("k8s_image_web", "nginx:1"),
            ("k8s_image_side-car", "envoy"),
            ("k8s_restarts_web", "2"),
            ("k8s_restarts_bad", "x"),
            ("k8s_pod_name", "p"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let images = images(&meta);
        assert_eq!(images.len(), 2);
        assert_eq!(images.get("side-car").unwrap(), "envoy");
        assert_eq!(restart_bases(&meta).into_iter().collect::<Vec<_>>(), [("web".to_owned(), 2)]);
    }

    #[test]
    fn current_prefers_the_newest_running_allocation() {
        let a = alloc(json!({"ID": "a", "JobID": "j", "DesiredStatus": "stop", "CreateIndex": 9}));
        let b = alloc(json!({"ID": "b", "JobID": "j", "DesiredStatus": "run", "CreateIndex": 5}));
        assert_eq!(current([&a, &b]).unwrap().id, "b");
        assert_eq!(current([&a]).unwrap().id, "a");
        assert!(current([]).is_none());
    }

    #[test]
    fn a_lost_allocation_stands_for_a_never_pod() {
        let lost = alloc(
            json!({"ID": "a", "JobID": "j", "DesiredStatus": "stop", "ClientStatus": "lost", "CreateIndex": 5}),
        );
        let again = alloc(
            json!({"ID": "b", "JobID": "j", "DesiredStatus": "run", "ClientStatus": "running", "CreateIndex": 9}),
        );
        let meta =
            |policy: &str| BTreeMap::from([(META_RESTART_POLICY.to_owned(), policy.to_owned())]);
        assert_eq!(current_for([&lost, &again], &meta("Never")).unwrap().id, "a");
        assert_eq!(current_for([&lost, &again], &meta("Always")).unwrap().id, "b");
        assert_eq!(current_for([&lost, &again], &BTreeMap::new()).unwrap().id, "b");
        assert_eq!(current_for([&again], &meta("Never")).unwrap().id, "b");
    }

    #[test]
    fn a_failed_task_reports_its_exit_code() {
        let a = alloc(json!({
            "ID": "a1", "JobID": "j", "ClientStatus": "failed", "CreateTime": 1_700_000_000_000_000_000i64,
            "AllocatedResources": {"Shared": {"Networks": [{"Mode": "host", "IP": "127.0.0.1"}]}},
            "TaskStates": {"main": {"State": "dead", "Failed": true, "Restarts": 0,
                "StartedAt": "2023-11-14T22:13:21Z", "FinishedAt": "2023-11-14T22:13:22Z",
                "Events": [
                    {"Type": "Started", "Time": 1_700_000_001_000_000_000i64},
                    {"Type": "Terminated", "Time": 1_700_000_002_000_000_000i64, "ExitCode": 3,
                     "Details": {"exit_code": "3", "signal": "0", "oom_killed": "false"}},
                    {"Type": "Not Restarting", "Time": 1_700_000_002_000_000_001i64, "FailsTask": true}
                ]}}
        }));
        let s = sandbox(&a, Some("10.1.1.1".into()), None);
        assert_eq!(s.state, SandboxState::Failed);
        assert_eq!(s.pod_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(s.host_ip.as_deref(), Some("10.1.1.1"));
        let ContainerState::Terminated(t) = &s.containers.get("main").unwrap().state else {
            panic!("not terminated")
        };
        assert_eq!((t.exit_code, t.reason.as_str()), (3, "Error"));
        assert_eq!(t.started_at, Some(Timestamp::from_second(1_700_000_001).unwrap()));
        assert_eq!(
            s.containers.get("main").unwrap().container_id.as_deref(),
            Some("nomad://a1/main")
        );
    }

    #[test]
    fn signals_oom_and_start_failures() {
        let term = |details: serde_json::Value| {
            let a = alloc(json!({"ID": "a", "JobID": "j", "ClientStatus": "failed",
                "TaskStates": {"t": {"State": "dead", "Failed": true, "Events": [
                    {"Type": "Terminated", "Time": 1, "Details": details}]}}}));
            match sandbox(&a, None, None).containers.get("t").unwrap().state.clone() {
                ContainerState::Terminated(t) => t,
                other => panic!("{other:?}"),
            }
        };
        let t = term(json!({"exit_code": "0", "signal": "9"}));
        assert_eq!((t.exit_code, t.signal), (137, Some(9)));
        assert_eq!(term(json!({"exit_code": "137", "oom_killed": "true"})).reason, "OOMKilled");
        // Docker missed the OOM event: a docker container SIGKILLed while Nomad was neither
        // stopping nor signalling it was killed by the kernel's OOM killer.
        let docker_exit = |before: &[&str]| {
            let mut events: Vec<serde_json::Value> = vec![json!({"Type": "Started", "Time": 1})];
            events.extend(before.iter().map(|t| json!({"Type": t, "Time": 2})));
            events.push(json!({"Type": "Terminated", "Time": 3,
                "DisplayMessage": "Exit Code: 137, Exit Message: \"Docker container exited with non-zero exit code: 137\"",
                "Details": {"exit_code": "137", "signal": "0", "oom_killed": "false"}}));
            let a = alloc(json!({"ID": "a", "JobID": "j", "ClientStatus": "failed",
                "TaskStates": {"t": {"State": "dead", "Failed": true, "Events": events}}}));
            match sandbox(&a, None, None).containers.get("t").unwrap().state.clone() {
                ContainerState::Terminated(t) => (t.exit_code, t.reason),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(docker_exit(&[]), (137, "OOMKilled".into()));
        for nomads in ["Killing", "Killed", "Signaling", "Restart Signaled"] {
            assert_eq!(docker_exit(&[nomads]), (137, "Error".into()), "{nomads}");
        }
        // A kill of an earlier run does not count for this one.
        let a = alloc(json!({"ID": "a", "JobID": "j", "ClientStatus": "failed",
            "TaskStates": {"t": {"State": "dead", "Failed": true, "Events": [
                {"Type": "Started", "Time": 1}, {"Type": "Restart Signaled", "Time": 2},
                {"Type": "Terminated", "Time": 3, "Details": {"exit_code": "137"}},
                {"Type": "Started", "Time": 4},
                {"Type": "Terminated", "Time": 5,
                 "DisplayMessage": "Exit Code: 137, Exit Message: \"Docker container exited with non-zero exit code: 137\"",
                 "Details": {"exit_code": "137"}}]}}}));
        let ContainerState::Terminated(t) =
            sandbox(&a, None, None).containers.get("t").unwrap().state.clone()
        else {
            panic!()
        };
        assert_eq!(t.reason, "OOMKilled");
        // 137 on raw_exec or exec (no docker message) is what Nomad says: a signal, an error.
        assert_eq!(term(json!({"exit_code": "137"})).reason, "Error");

        let a = alloc(json!({"ID": "a", "JobID": "j", "ClientStatus": "failed",
            "TaskStates": {"t": {"State": "dead", "Failed": true, "Events": [
                {"Type": "Driver Failure", "Time": 1, "DisplayMessage": "failed to launch command", "FailsTask": true}]}}}));
        let ContainerState::Terminated(t) =
            sandbox(&a, None, None).containers.get("t").unwrap().state.clone()
        else {
            panic!()
        };
        assert_eq!((t.exit_code, t.reason.as_str()), (128, "StartError"));
        assert_eq!(t.message.as_deref(), Some("failed to launch command"));
    }

    #[test]
    fn image_pulls_are_read_from_the_docker_drivers_events() {
        let pull = |events: serde_json::Value| {
            let a = alloc(json!({"ID": "a", "JobID": "j", "ClientStatus": "pending",
                "TaskStates": {"t": {"State": "pending", "Events": events}}}));
            sandbox(&a, None, None).containers.get("t").unwrap().image_pull
        };
        let downloading =
            json!({"Type": "Driver", "Time": 1_000_000_000, "DisplayMessage": "Downloading image"});
        assert_eq!(
            pull(json!([{"Type": "Received", "Time": 1}, downloading])),
            Some(ImagePull::Pulling)
        );
        assert_eq!(
            pull(json!([downloading, {"Type": "Started", "Time": 3_500_000_000_i64}])),
            Some(ImagePull::Pulled { took: std::time::Duration::from_millis(2500) })
        );
        // A failed pull (restarted), and a start without a pull: no pull to tell of.
        assert_eq!(pull(json!([downloading, {"Type": "Restarting", "Time": 2}])), None);
        assert_eq!(pull(json!([{"Type": "Started", "Time": 2}])), None);
    }

    #[test]
    fn restarting_and_running_tasks() {
        let a = alloc(json!({"ID": "a", "JobID": "j", "ClientStatus": "running",
        "TaskStates": {
            "r": {"State": "running", "Restarts": 2, "Events": [
                {"Type": "Started", "Time": 1_700_000_000_000_000_000i64},
                {"Type": "Terminated", "Time": 1_700_000_005_000_000_000i64, "ExitCode": 1},
                {"Type": "Restarting", "Time": 1_700_000_005_000_000_001i64},
                {"Type": "Started", "Time": 1_700_000_010_000_000_000i64}]},
            "w": {"State": "pending", "Restarts": 1, "Events": [
                {"Type": "Terminated", "Time": 5, "ExitCode": 2},
                {"Type": "Restarting", "Time": 6, "DisplayMessage": "Task restarting in 10s"}]},
            "n": {"State": "pending", "Events": [{"Type": "Received", "Time": 1, "DisplayMessage": "Task received by client"}]}
        }}));
        let s = sandbox(&a, None, None);
        let r = &s.containers.get("r").unwrap();
        assert_eq!(
            r.state,
            ContainerState::Running {
                started_at: Some(Timestamp::from_second(1_700_000_010).unwrap())
            }
        );
        assert_eq!(r.restart_count, 2);
        assert_eq!(r.last_termination.as_ref().unwrap().exit_code, 1);
        assert!(
            matches!(&s.containers.get("w").unwrap().state, ContainerState::Waiting { reason, .. } if reason == "CrashLoopBackOff")
        );
        assert!(
            matches!(&s.containers.get("n").unwrap().state, ContainerState::Waiting { reason, .. } if reason == "ContainerCreating")
        );
    }

    /// The task preparing the emptyDir directories is the sandbox's preparation, never a
    /// container; a failure of it is the sandbox's message.
    #[test]
    fn the_volumes_task_is_the_sandboxs_preparation() {
        let with = |setup: serde_json::Value| {
            sandbox(
                &alloc(json!({"ID": "a", "JobID": "j", "ClientStatus": "pending",
                    "ClientDescription": "Tasks are running",
                    "TaskStates": {"vk_volumes": setup,
                        "init": {"State": "pending", "Events": []}}})),
                None,
                None,
            )
        };
        let running = with(json!({"State": "running", "Events": [{"Type": "Started", "Time": 1}]}));
        assert_eq!(running.prepared, Some(false));
        assert_eq!(running.containers.keys().collect::<Vec<_>>(), ["init"]);
        assert_eq!(running.message.as_deref(), Some("Tasks are running"));
        let done = with(json!({"State": "dead", "Failed": false,
            "Events": [{"Type": "Terminated", "Time": 1, "ExitCode": 0}]}));
        assert_eq!(done.prepared, Some(true));
        let pulling = with(json!({"State": "pending", "Events": [{"Type": "Driver Failure",
            "Time": 1, "DisplayMessage": "Failed to pull `busybox:1.37`: no route"}]}));
        assert_eq!(pulling.prepared, Some(false));
        assert_eq!(
            pulling.message.as_deref(),
            Some(
                "preparing the pod's volumes (task vk_volumes): Failed to pull `busybox:1.37`: no route"
            )
        );
        let failed =
            with(json!({"State": "dead", "Failed": true, "Events": [{"Type": "Not Restarting",
            "Time": 2, "DisplayMessage": "Exceeded allowed attempts 0"}]}));
        assert_eq!(failed.prepared, Some(false));
        assert!(failed.message.unwrap().ends_with("Exceeded allowed attempts 0"));
        let none = sandbox(
            &alloc(json!({"ID": "a", "JobID": "j", "ClientStatus": "pending",
                "TaskStates": {"c": {"State": "pending"}}})),
            None,
            None,
        );
        assert_eq!(none.prepared, None);
    }

    /// A bridge-mode allocation's pod IP is its own address (`NetworkStatus.Address`, read from
    /// the full allocation), with no port mapping; a host-mode one's is the node's network
    /// address, with the host ports Nomad mapped; without an address yet the pod has no IP.
    #[test]
    fn the_pod_ip_is_the_allocations_own_address_in_bridge_mode() {
        let a = |mode: &str| {
            alloc(json!({
                "ID": "a1", "JobID": "j", "ClientStatus": "running",
                "AllocatedResources": {"Shared": {"Networks": [{"Mode": mode, "IP": "10.0.0.5",
                    "ReservedPorts": [{"Label": "main_http", "Value": 8080, "To": 80}]}]}},
            }))
        };
        let bridge = sandbox(&a("bridge"), Some("10.0.0.5".into()), Some("172.26.64.7".into()));
        assert_eq!(bridge.pod_ip.as_deref(), Some("172.26.64.7"));
        assert_eq!(bridge.host_ip.as_deref(), Some("10.0.0.5"));
        assert!(bridge.ports.is_empty(), "{:?}", bridge.ports);
        let cni = sandbox(&a("cni/mynet"), None, Some("10.9.0.2".into()));
        assert_eq!(cni.pod_ip.as_deref(), Some("10.9.0.2"));
        assert_eq!(cni.host_ip.as_deref(), Some("10.0.0.5"));
        let pending = sandbox(&a("bridge"), Some("10.0.0.5".into()), None);
        assert_eq!(pending.pod_ip, None);
        let host = sandbox(&a("host"), Some("10.0.0.5".into()), Some("ignored".into()));
        assert_eq!(host.pod_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(host.ports, BTreeMap::from([(80, 8080)]));
        assert_eq!(network_mode(&a("bridge")), "bridge");
        let full: Allocation = serde_json::from_value(json!({
            "ID": "a1", "JobID": "j",
            "NetworkStatus": {"InterfaceName": "eth0", "Address": "172.26.64.7", "AddressIPv6": "", "DNS": null},
        }))
        .unwrap();
        assert_eq!(full.network_status.unwrap().address, "172.26.64.7");
    }

    /// A pull that failed (the docker driver's `Driver Failure` event, as Nomad 1.11 records it):
    /// ErrImagePull with the engine's message, ImagePullBackOff while Nomad waits to restart,
    /// ContainerCreating again while it pulls anew; a failure that is not a pull is not one.
    #[test]
    fn a_failed_pull_is_err_image_pull_then_image_pull_back_off() {
        let msg = "Failed to pull `127.0.0.1:1/missing:1`: Error response from daemon: Get \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused";
        let state = |events: serde_json::Value, status: &str, restarts: u64| {
            let a = alloc(json!({"ID": "a1", "JobID": "j", "ClientStatus": status,
                "TaskStates": {"t": {"State": "pending", "Restarts": restarts, "Events": events}}}));
            sandbox(&a, None, None).containers.get("t").unwrap().state.clone()
        };
        let setup = json!({"Type": "Task Setup", "DisplayMessage": "Building Task Directory"});
        let pulling = json!({"Type": "Driver", "DisplayMessage": "Downloading image"});
        let failed = json!({"Type": "Driver Failure", "DisplayMessage": msg});
        let restarting =
            json!({"Type": "Restarting", "DisplayMessage": "Task restarting in 10.3s"});
        assert_eq!(
            state(json!([setup, pulling, failed]), "pending", 0),
            ContainerState::Waiting {
                reason: "ErrImagePull".into(),
                message: Some(msg.split_once("`: ").unwrap().1.into())
            }
        );
        assert_eq!(
            state(json!([setup, pulling, failed, restarting]), "pending", 1),
            ContainerState::Waiting {
                reason: "ImagePullBackOff".into(),
                message: Some(format!(
                    "Back-off pulling image \"127.0.0.1:1/missing:1\": ErrImagePull: {}",
                    msg.split_once("`: ").unwrap().1
                ))
            }
        );
        match state(json!([setup, pulling, failed, restarting, pulling]), "pending", 1) {
            ContainerState::Waiting { reason, .. } => assert_eq!(reason, "ImagePullBackOff"),
            other => panic!("{other:?}"),
        }
        match state(json!([setup, pulling]), "pending", 0) {
            ContainerState::Waiting { reason, .. } => assert_eq!(reason, "ContainerCreating"),
            other => panic!("{other:?}"),
        }
        let other_failure =
            json!({"Type": "Driver Failure", "DisplayMessage": "failed to create container"});
        match state(json!([setup, other_failure]), "pending", 0) {
            ContainerState::Waiting { reason, .. } => assert_eq!(reason, "ContainerCreating"),
            other => panic!("{other:?}"),
        }
    }
}
