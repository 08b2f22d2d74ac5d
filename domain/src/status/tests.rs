use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodCondition, ResourceRequirements};

use super::*;
use crate::runtime::{ContainerRuntimeStatus, ContainerState, Termination};

fn pod(restart: &str, names: &[&str]) -> Pod {
    let b = crate::testing::pod("p").image("busybox").restart(restart);
    names.iter().fold(b, |b, n| b.container(n, &[])).build()
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
        ("Never", Some(sandbox(S::Succeeded, &[("a", exited(0)), ("b", exited(0))])), "Succeeded"),
        ("OnFailure", Some(sandbox(S::Running, &[("a", exited(1)), ("b", exited(0))])), "Running"),
        (
            "OnFailure",
            Some(sandbox(S::Succeeded, &[("a", exited(0)), ("b", exited(0))])),
            "Succeeded",
        ),
        ("Always", Some(sandbox(S::Running, &[("a", exited(0)), ("b", exited(0))])), "Running"),
        ("Never", Some(sandbox(S::Lost, &[("a", running()), ("b", running())])), "Failed"),
        ("Always", Some(sandbox(S::Lost, &[("a", running()), ("b", running())])), "Pending"),
        // A failed sandbox whose second container never started: that container is settled
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
    let st = pod_status(&p, Some(&sandbox(SandboxState::Failed, &[("main", exited(3))])), ts(10));
    let cs = &st.container_statuses.as_ref().unwrap()[0];
    let t = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    assert!(!cs.ready);
    assert_eq!(cond(&st, "Ready").reason.as_deref(), Some("PodCompleted"));

    let p = pod("Always", &["main"]);
    let st = pod_status(&p, Some(&sandbox(SandboxState::Running, &[("main", running())])), ts(10));
    assert_eq!(st.pod_ip.as_deref(), Some("10.0.0.7"));
    assert_eq!(st.host_ip.as_deref(), Some("10.0.0.1"));
    assert_eq!(st.start_time, Some(Time(ts(0))));
    assert_eq!(cond(&st, "Ready").status, "True");
    assert_eq!(cond(&st, "ContainersReady").status, "True");
    assert_eq!(st.container_statuses.unwrap()[0].container_id.as_deref(), Some("test://alloc-1/a"));
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
    let done = pod_status(&p, Some(&sandbox(SandboxState::Succeeded, &[("a", exited(0))])), ts(1));
    assert_eq!(done.phase.as_deref(), Some("Succeeded"));
    let running = pod_status(&p, Some(&sandbox(SandboxState::Running, &[("a", running())])), ts(2));
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
    let st = not_found_status(&pod("Never", &["a"]), "workload k8s-ns.p is gone", ts(1));
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

/// A pod with app container `app` after init container `init` and sidecar `side`.
fn with_init(restart: &str) -> Pod {
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
}

/// The reason of a waiting container's state.
fn waiting_reason(c: &ContainerStatus) -> Option<&str> {
    c.state.as_ref().unwrap().waiting.as_ref().unwrap().reason.as_deref()
}

#[test]
fn init_containers_gate_the_phase_and_the_initialized_condition() {
    use SandboxState as S;
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
    assert_eq!(waiting_reason(app), Some("PodInitializing"));
    // An init container not started yet waits in PodInitializing too, as the kubelet's
    // default state in a pod with init containers; a reason of the backend's is kept.
    let side = &st.init_container_statuses.as_ref().unwrap()[1];
    assert_eq!(waiting_reason(side), Some("PodInitializing"));
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
    assert_eq!(waiting_reason(init), Some("CrashLoopBackOff"));
    let plain = pod_status(
        &pod("Always", &["app"]),
        Some(&sandbox(S::Pending, &[("app", waiting.clone())])),
        ts(3),
    );
    assert_eq!(
        waiting_reason(&plain.container_statuses.as_ref().unwrap()[0]),
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
        Some(&sandbox(S::Running, &[("init", exited(0)), ("side", running()), ("app", running())])),
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
    for c in st.container_statuses.unwrap().iter().chain(st.init_container_statuses.unwrap().iter())
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

/// A pod the backend could not place: its containers wait `ContainerCreating` with the
/// backend's reason; one already running keeps its state.
#[test]
fn an_unplaced_pod_says_why_in_its_waiting_containers() {
    let p = pod("Always", &["a", "b"]);
    let st = with_unplaced(pod_status(&p, None, ts(0)), "Nomad could not place the allocation: x");
    for cs in st.container_statuses.unwrap() {
        let w = cs.state.unwrap().waiting.unwrap();
        assert_eq!(w.reason.as_deref(), Some("ContainerCreating"));
        assert_eq!(w.message.as_deref(), Some("Nomad could not place the allocation: x"));
    }
}

/// An ephemeral container (`kubectl debug`) never runs here: terminated at once with the reason
/// and message saying so, its `finishedAt` kept once written; the pod and its containers are as
/// they were.
#[test]
fn ephemeral_containers_end_at_once_and_say_why() {
    let mut p = crate::testing::pod("p")
        .image("busybox")
        .container("c", &[])
        .spec(
            serde_json::json!({"ephemeralContainers": [{"name": "debugger", "image": "busybox"}]}),
        )
        .build();
    let sb = sandbox(SandboxState::Running, &[("c", running())]);
    let first = pod_status(&p, Some(&sb), ts(10));
    assert_eq!(first.phase.as_deref(), Some("Running"));
    let eph = first.ephemeral_container_statuses.clone().unwrap_or_default();
    let [st] = eph.as_slice() else { panic!("{eph:?}") };
    let term = st.state.as_ref().and_then(|s| s.terminated.clone()).unwrap();
    assert_eq!((st.name.as_str(), st.image.as_str(), st.ready), ("debugger", "busybox", false));
    assert_eq!((term.exit_code, term.reason.as_deref()), (128, Some(EPHEMERAL_REASON)));
    assert_eq!(term.message.as_deref(), Some(EPHEMERAL_UNSUPPORTED));
    assert_eq!(term.finished_at.map(|t| t.0), Some(ts(10)));
    // Held by the API server: the next status keeps its time, so nothing changes.
    p.status = Some(first.clone());
    let next = pod_status(&p, Some(&sb), ts(20));
    assert_eq!(next.ephemeral_container_statuses, first.ephemeral_container_statuses);
    // A pod without ephemeral containers has no such list.
    let plain = pod_status(&pod("Always", &["c"]), Some(&sb), ts(10));
    assert_eq!(plain.ephemeral_container_statuses, None);
}
