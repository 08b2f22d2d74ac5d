//! The pod controller wired to in-memory fakes of the provider and the Kubernetes API: the
//! decisions that must hold whatever the real backends do (no purge before the pod list, adoption
//! without re-creating, failures reported once, nothing done while the backend is down).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use vk_domain::runtime::{ContainerRuntimeStatus, ContainerState, SandboxState};
use vk_ports::PodWatchEvent;

use support::*;

#[tokio::test]
async fn orphans_are_purged_only_after_the_pod_list() {
    let provider = FakeProvider::default();
    provider.pods.lock().unwrap().insert(key("gone"), running(&key("gone"), "u0", &["main"]));
    let h = Harness::start(provider);
    // Polls happen, but the pods bound to the node are not known yet: nothing may be purged.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.provider.calls().is_empty(), "{:?}", h.provider.calls());
    h.api.send(PodWatchEvent::Relisted(vec![]));
    h.until("the orphan purged", |h| h.provider.calls().contains(&"purge job-ns/gone".to_owned()))
        .await;
}

#[tokio::test]
async fn existing_workloads_are_adopted_not_created_again() {
    let provider = FakeProvider::default();
    provider.pods.lock().unwrap().insert(key("a"), running(&key("a"), "u1", &["main"]));
    let h = Harness::start(provider);
    h.api.send(PodWatchEvent::Relisted(vec![pod("a", "u1", "Pending", json!({}))]));
    h.until("a Running status", |h| {
        h.api.statuses_of(&key("a")).iter().any(|s| s.phase.as_deref() == Some("Running"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(h.provider.calls().is_empty(), "adoption made calls: {:?}", h.provider.calls());
}

/// The kubelet's container Events: `Created` and `Started` once when the container is first seen
/// running (not again at each status read), `Killing` when the pod is stopped, each naming the
/// container by field path.
#[tokio::test]
async fn container_events_are_recorded_once_per_change() {
    let provider = FakeProvider::default();
    provider.pods.lock().unwrap().insert(key("e"), running(&key("e"), "u9", &["main"]));
    let h = Harness::start(provider);
    h.api.send(PodWatchEvent::Relisted(vec![pod("e", "u9", "Pending", json!({}))]));
    let events = |h: &Harness| -> Vec<(String, String)> {
        let recorded = h.api.container_events.lock().unwrap();
        recorded.iter().map(|(path, _, reason, _)| (path.clone(), reason.clone())).collect()
    };
    h.until("Started", |h| events(h).len() == 2).await;
    // Several status reads later: nothing more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let main = "spec.containers{main}".to_owned();
    assert_eq!(events(&h), [(main.clone(), "Created".into()), (main.clone(), "Started".into())]);
    let recorded = h.api.container_events.lock().unwrap().clone();
    assert_eq!(recorded[0].1, vk_ports::EventType::Normal);
    assert_eq!(recorded[1].3, "Container started");
    let mut deleting = pod("e", "u9", "Running", json!({}));
    deleting.status = Some(h.api.statuses_of(&key("e")).last().unwrap().clone());
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            vk_domain::jiff::Timestamp::now() + Duration::from_secs(30),
        ));
    h.api.send(PodWatchEvent::Applied(deleting));
    h.until("Killing", |h| events(h).len() == 3).await;
    assert_eq!(events(&h)[2], (main, "Killing".into()));
}

#[tokio::test]
async fn a_same_named_pod_with_a_new_uid_replaces_the_old_workload() {
    let provider = FakeProvider::default();
    provider.pods.lock().unwrap().insert(key("a"), running(&key("a"), "old", &["main"]));
    let h = Harness::start(provider);
    h.api.send(PodWatchEvent::Relisted(vec![pod("a", "new", "Pending", json!({}))]));
    h.until("purge then create", |h| h.provider.calls() == ["purge job-ns/a", "create ns/a"]).await;
}

#[tokio::test]
async fn untranslatable_pods_are_reported_once() {
    let h = Harness::start(FakeProvider::default());
    let bad =
        pod("bad", "u2", "Pending", json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}));
    h.api.send(PodWatchEvent::Relisted(vec![bad]));
    h.until("a ProviderFailed status", |h| !h.api.statuses_of(&key("bad")).is_empty()).await;
    // Many polls later: still one status write and one Event, and nothing created.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let statuses = h.api.statuses_of(&key("bad"));
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    assert_eq!(statuses[0].reason.as_deref(), Some("ProviderFailed"));
    assert_eq!(statuses[0].phase.as_deref(), Some("Pending"));
    assert!(
        statuses[0]
            .message
            .as_deref()
            .unwrap()
            .starts_with("spec.volumes[0]: volume \"h\" of type hostPath")
    );
    let events = h.api.recorded.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "ProviderCreateFailed");
    assert!(h.provider.calls().is_empty());
}

/// The kubelet's admission: a pod for another OS is Failed with the kubelet's reason and message
/// (whatever its restart policy), with an Event, once; an explicit root user with
/// `runAsNonRoot` leaves the container waiting in CreateContainerConfigError with an Event
/// `Failed`; the backend sees neither.
#[tokio::test]
async fn admission_rejections_and_container_config_errors_are_the_kubelets() {
    let h = Harness::start(FakeProvider::default());
    let windows = pod("win", "u1", "Pending", json!({"os": {"name": "windows"}}));
    let root = pod(
        "root",
        "u2",
        "Pending",
        json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 0}}),
    );
    h.api.send(PodWatchEvent::Relisted(vec![windows, root]));
    h.until("both reported", |h| {
        !h.api.statuses_of(&key("win")).is_empty() && !h.api.statuses_of(&key("root")).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let win = h.api.statuses_of(&key("win"));
    assert_eq!(win.len(), 1, "written once: {win:?}");
    assert_eq!(
        (win[0].phase.as_deref(), win[0].reason.as_deref(), win[0].message.as_deref()),
        (
            Some("Failed"),
            Some("PodOSNotSupported"),
            Some("Pod was rejected: Failed to admit pod as the OS field doesn't match node OS")
        )
    );
    let root = h.api.statuses_of(&key("root"));
    let waiting = root[0].container_statuses.as_ref().unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .waiting
        .clone()
        .unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("CreateContainerConfigError"));
    assert!(waiting.message.unwrap().starts_with("container's runAsUser breaks non-root policy"));
    assert_eq!(root[0].phase.as_deref(), Some("Pending"));
    let events: Vec<String> =
        h.api.recorded.lock().unwrap().iter().map(|(r, _)| r.clone()).collect();
    assert!(
        events.iter().filter(|r| *r == "PodOSNotSupported").count() == 1
            && events.contains(&"Failed".to_owned()),
        "{events:?}"
    );
    assert!(h.provider.calls().is_empty(), "{:?}", h.provider.calls());
}

#[tokio::test]
async fn a_never_pod_whose_workload_vanished_fails_with_not_found() {
    let h = Harness::start(FakeProvider::default());
    h.api.send(PodWatchEvent::Relisted(vec![pod(
        "n",
        "u3",
        "Running",
        json!({"restartPolicy": "Never"}),
    )]));
    h.until("a Failed status", |h| {
        h.api.statuses_of(&key("n")).iter().any(|s| s.phase.as_deref() == Some("Failed"))
    })
    .await;
    let st = h.api.statuses_of(&key("n")).pop().unwrap();
    assert_eq!(st.reason.as_deref(), Some("NotFound"));
    assert!(
        h.provider.calls().is_empty(),
        "a Never pod was created again: {:?}",
        h.provider.calls()
    );
}

#[tokio::test]
async fn nothing_is_decided_while_the_backend_is_down() {
    let provider = FakeProvider::default();
    provider.down.store(true, Ordering::SeqCst);
    let h = Harness::start(provider);
    h.api.send(PodWatchEvent::Relisted(vec![pod("p", "u4", "Pending", json!({}))]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.provider.calls().is_empty());
    assert!(
        h.api.statuses.lock().unwrap().is_empty(),
        "a status was written while the backend was down"
    );
    h.provider.down.store(false, Ordering::SeqCst);
    h.until("the pod created once the backend is back", |h| h.provider.calls() == ["create ns/p"])
        .await;
}

/// A backend that comes back after a long outage is noticed within seconds
/// ([`vk_app::pod_controller::RETRY_WHILE_UNREACHABLE`]) and every pod is queued then: a pod
/// whose creation waited out a minute-long backoff is created at once, not at its next retry
/// nor at the next full resync (30 s here, the default).
#[tokio::test(start_paused = true)]
async fn a_backend_back_from_an_outage_is_noticed_within_seconds() {
    let h = Harness::start_with(FakeProvider::default(), FakeApi::new(), |s| {
        s.status_interval = Duration::from_secs(30);
    });
    h.api.send(PodWatchEvent::Relisted(vec![]));
    let t0 = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.provider.down.store(true, Ordering::SeqCst);
    h.api.send(PodWatchEvent::Applied(pod("late", "u9", "Pending", json!({}))));
    // Creation retries back off to 60 s (at about 244.5 s and 304.5 s from the start, the next
    // at 364.5 s); full resyncs at 300 s and 330 s.
    tokio::time::sleep_until(t0 + Duration::from_secs(306)).await;
    assert!(h.provider.calls().is_empty(), "{:?}", h.provider.calls());
    h.provider.down.store(false, Ordering::SeqCst);
    let back = tokio::time::Instant::now();
    while h.provider.calls().is_empty() {
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "not created 20 s after the backend came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.provider.calls(), ["create ns/late"]);
    let took = back.elapsed();
    assert!(took <= Duration::from_secs(4), "created {took:?} after the backend came back");
}

/// A workload the backend could not place: its containers wait with the backend's reason, and
/// one `FailedPlacement` Event says it; a later placement clears the message.
#[tokio::test]
async fn a_placement_failure_reaches_the_pod_and_clears_when_placed() {
    let h = Harness::start(FakeProvider::default());
    let why = "Nomad could not place the allocation: 1 node exhausted on memory";
    let mut unplaced = running(&key("big"), "u10", &["main"]);
    unplaced.sandbox = None;
    unplaced.unplaced = Some(why.into());
    h.provider.pods.lock().unwrap().insert(key("big"), unplaced);
    h.api.send(PodWatchEvent::Relisted(vec![pod("big", "u10", "Pending", json!({}))]));
    let message = |h: &Harness| {
        let st = h.api.statuses_of(&key("big")).pop()?;
        let cs = st.container_statuses?.first()?.clone();
        Some(cs.state?.waiting.map(|w| (w.reason, w.message)))
    };
    h.until("the waiting message", |h| {
        message(h) == Some(Some((Some("ContainerCreating".into()), Some(why.into()))))
    })
    .await;
    let recorded = h.api.recorded.lock().unwrap().clone();
    assert_eq!(recorded, [(vk_app::pod_controller::FAILED_PLACEMENT.to_owned(), why.to_owned())]);
    h.provider.pods.lock().unwrap().insert(key("big"), running(&key("big"), "u10", &["main"]));
    h.until("running, the message gone", |h| message(h) == Some(None)).await;
    assert_eq!(h.api.recorded.lock().unwrap().len(), 1, "one Event");
}

#[tokio::test]
async fn graceful_deletion_stops_purges_then_deletes_the_object() {
    let h = Harness::start(FakeProvider::default());
    h.api.send(PodWatchEvent::Relisted(vec![pod("d", "u5", "Pending", json!({}))]));
    h.until("created", |h| h.provider.calls() == ["create ns/d"]).await;
    let mut deleting = pod("d", "u5", "Running", json!({}));
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            vk_domain::jiff::Timestamp::now() + Duration::from_secs(30),
        ));
    h.api.send(PodWatchEvent::Applied(deleting));
    h.until("the object deleted", |h| h.api.deleted.lock().unwrap().contains(&key("d"))).await;
    assert_eq!(h.provider.calls(), ["create ns/d", "stop job-ns/d", "purge job-ns/d"]);
}

#[tokio::test]
async fn a_missing_mandatory_config_map_keeps_the_pod_waiting_until_it_exists() {
    let h = Harness::start(FakeProvider::default());
    let env = json!({"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "1"],
        "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}}]}]});
    h.api.send(PodWatchEvent::Relisted(vec![pod("w", "u6", "Pending", env)]));
    h.until("a waiting status", |h| !h.api.statuses_of(&key("w")).is_empty()).await;
    let st = h.api.statuses_of(&key("w")).pop().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    let waiting = st.container_statuses.unwrap()[0].state.clone().unwrap().waiting.unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("CreateContainerConfigError"));
    assert_eq!(waiting.message.as_deref(), Some("configmap ns/cfg not found"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.provider.calls().is_empty(), "created without its ConfigMap");
    let events = h.api.recorded.lock().unwrap().clone();
    assert_eq!(
        events,
        [("MandatoryConfigMapNotFound".to_owned(), "configmap ns/cfg not found".to_owned())]
    );
    h.api.set_config_map("cfg", &[("mode", "fast")]);
    h.until("created once the ConfigMap exists", |h| h.provider.calls() == ["create ns/w"]).await;
}

#[tokio::test]
async fn a_missing_optional_config_map_gives_an_event_and_the_pod_runs() {
    let h = Harness::start(FakeProvider::default());
    let env = json!({"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "1"],
        "envFrom": [{"configMapRef": {"name": "cfg", "optional": true}}]}]});
    h.api.send(PodWatchEvent::Relisted(vec![pod("o", "u7", "Pending", env)]));
    h.until("created", |h| h.provider.calls() == ["create ns/o"]).await;
    let events = h.api.recorded.lock().unwrap().clone();
    assert_eq!(
        events,
        [("OptionalConfigMapNotFound".to_owned(), "configmap ns/cfg not found".to_owned())]
    );
}

#[tokio::test]
async fn init_containers_are_released_one_after_the_other() {
    let provider = FakeProvider::default();
    let mut rt = running(&key("i"), "u8", &["app"]);
    let sb = rt.sandbox.as_mut().unwrap();
    sb.state = SandboxState::Pending;
    sb.containers.insert(
        "first".into(),
        ContainerRuntimeStatus {
            state: ContainerState::Terminated(vk_domain::runtime::Termination {
                exit_code: 0,
                signal: None,
                reason: "Completed".into(),
                message: None,
                started_at: None,
                finished_at: None,
            }),
            ..Default::default()
        },
    );
    for c in ["second", "third", "app"] {
        sb.containers.insert(
            c.into(),
            ContainerRuntimeStatus {
                state: ContainerState::Waiting {
                    reason: "ContainerCreating".into(),
                    message: None,
                },
                ..Default::default()
            },
        );
    }
    provider.pods.lock().unwrap().insert(key("i"), rt);
    let h = Harness::start(provider);
    let spec = json!({"initContainers": [
        {"name": "first", "image": "i"}, {"name": "second", "image": "i"}, {"name": "third", "image": "i"}
    ], "containers": [{"name": "app", "image": "i"}]});
    h.api.send(PodWatchEvent::Relisted(vec![pod("i", "u8", "Pending", spec)]));
    h.until("second released", |h| {
        h.provider.calls().contains(&"start job-ns/i second".to_owned())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !h.provider.calls().iter().any(|c| c.contains("third")),
        "third released before second completed: {:?}",
        h.provider.calls()
    );
    let st = h.api.statuses_of(&key("i")).pop().unwrap();
    let init = st.init_container_statuses.unwrap();
    assert_eq!(init.len(), 3);
    assert!(init[0].ready && !init[1].ready);
    let app = st.container_statuses.unwrap()[0].state.clone().unwrap().waiting.unwrap();
    assert_eq!(app.reason.as_deref(), Some("PodInitializing"));
    let initialized =
        st.conditions.unwrap().into_iter().find(|c| c.type_ == "Initialized").unwrap();
    assert_eq!(initialized.status, "False");
    assert_eq!(
        initialized.message.as_deref(),
        Some("containers with incomplete status: [second third]")
    );
}

#[tokio::test]
async fn a_refresh_round_brings_volume_files_up_to_date() {
    let provider = FakeProvider::default();
    provider.pods.lock().unwrap().insert(key("v"), running(&key("v"), "u9", &["main"]));
    let h = Harness::start(provider);
    h.api.set_config_map("cfg", &[("mode", "slow")]);
    let spec = json!({"volumes": [{"name": "c", "configMap": {"name": "cfg"}}, {"name": "e", "emptyDir": {}}]});
    h.api.send(PodWatchEvent::Relisted(vec![
        pod("v", "u9", "Pending", spec.clone()),
        pod("plain", "u10", "Pending", json!({})),
    ]));
    h.until("Running", |h| {
        h.api.statuses_of(&key("v")).iter().any(|s| s.phase.as_deref() == Some("Running"))
    })
    .await;
    h.api.set_config_map("cfg", &[("mode", "fast")]);
    h.controller.refresh_once().await;
    let updates: Vec<String> =
        h.provider.calls().into_iter().filter(|c| c.starts_with("update")).collect();
    assert_eq!(updates, ["update ns/v c/mode=fast"], "only pods with files, with the new data");
}

/// Readiness is probed as soon as the startup probe succeeds, not a readiness period later (the
/// kubelet's manual trigger): here the readiness period is 30 s, and the container is Ready
/// within a few seconds of its startup probe passing.
#[tokio::test]
async fn readiness_is_probed_at_once_after_startup_succeeds() {
    let provider = FakeProvider::default();
    provider.pods.lock().unwrap().insert(key("s"), running(&key("s"), "u12", &["web"]));
    provider.exit_codes.lock().unwrap().insert("web".into(), 1);
    let h = Harness::start(provider);
    let spec = json!({"containers": [{"name": "web", "image": "i",
        "startupProbe": {"exec": {"command": ["started"]}, "periodSeconds": 1, "failureThreshold": 100},
        "readinessProbe": {"exec": {"command": ["ready"]}, "periodSeconds": 30}}]});
    h.api.send(PodWatchEvent::Relisted(vec![pod("s", "u12", "Pending", spec)]));
    let ready = |h: &Harness| {
        h.api
            .statuses_of(&key("s"))
            .last()
            .and_then(|s| s.container_statuses.clone())
            .is_some_and(|cs| cs.iter().any(|c| c.name == "web" && c.ready))
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!ready(&h), "ready before its startup probe passed");
    h.provider.exit_codes.lock().unwrap().insert("web".into(), 0);
    let passed = std::time::Instant::now();
    for _ in 0..800 {
        if ready(&h) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ready(&h), "not ready {:?} after the startup probe could pass", passed.elapsed());
}

#[tokio::test]
async fn readiness_follows_the_probe_and_liveness_failures_restart() {
    let provider = FakeProvider::default();
    provider.pods.lock().unwrap().insert(key("p"), running(&key("p"), "u11", &["web", "worker"]));
    provider.exit_codes.lock().unwrap().insert("web".into(), 1);
    provider.exit_codes.lock().unwrap().insert("worker".into(), 1);
    let h = Harness::start(provider);
    let spec = json!({"containers": [
        {"name": "web", "image": "i", "readinessProbe": {"exec": {"command": ["ready"]}, "periodSeconds": 1}},
        {"name": "worker", "image": "i", "livenessProbe": {"exec": {"command": ["alive"]}, "periodSeconds": 1, "failureThreshold": 2}}
    ]});
    h.api.send(PodWatchEvent::Relisted(vec![pod("p", "u11", "Pending", spec)]));
    let ready_of = |h: &Harness| {
        h.api.statuses_of(&key("p")).last().map(|s| {
            let web = s
                .container_statuses
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.name == "web")
                .unwrap()
                .ready;
            let pod_ready = s
                .conditions
                .as_ref()
                .unwrap()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (s.phase.clone().unwrap_or_default(), web, pod_ready)
        })
    };
    h.until("Running and not ready", |h| ready_of(h) == Some(("Running".into(), false, false)))
        .await;
    h.provider.exit_codes.lock().unwrap().insert("web".into(), 0);
    for _ in 0..300 {
        if ready_of(&h).is_some_and(|r| r.1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The worker is not ready-probed: it is ready while running; the pod is Ready once web is.
    assert_eq!(ready_of(&h), Some(("Running".into(), true, true)));
    for _ in 0..300 {
        if h.provider.calls().iter().any(|c| c.starts_with("restart")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        h.provider.calls().iter().filter(|c| c.starts_with("restart")).collect::<Vec<_>>(),
        ["restart job-ns/p worker"],
        "one restart after two liveness failures"
    );
}

/// The state of container `name` in the last status written for `k`.
fn state_of(
    h: &Harness,
    k: &str,
    name: &str,
) -> Option<k8s_openapi::api::core::v1::ContainerState> {
    let st = h.api.statuses_of(&key(k)).pop()?;
    st.container_statuses?.into_iter().find(|c| c.name == name)?.state
}

/// postStart hooks (`kuberuntime_container.go` `startContainer`): a container counts as running
/// only once its hook ended, waiting as `ContainerCreating` meanwhile; a failed hook is the
/// Warning Event `FailedPostStartHook` ("PostStartHook failed", the output kept out of Events),
/// the waiting reason `PostStartHookError` with the kubelet's message, and the container killed.
#[tokio::test]
async fn post_start_hooks_hold_the_container_until_they_end_and_a_failure_kills_it() {
    let provider = FakeProvider::default();
    provider.pods.lock().unwrap().insert(key("h"), running(&key("h"), "u20", &["slow", "bad"]));
    provider.exit_codes.lock().unwrap().insert("bad".into(), 7);
    let h = Harness::start(provider);
    let spec = json!({"containers": [
        {"name": "slow", "image": "i", "lifecycle": {"postStart": {"sleep": {"seconds": 1}}}},
        {"name": "bad", "image": "i", "lifecycle": {"postStart": {"exec": {"command": ["setup", "-x"]}}}}
    ]});
    h.api.send(PodWatchEvent::Relisted(vec![pod("h", "u20", "Pending", spec)]));
    let started = std::time::Instant::now();
    h.until("bad waiting in PostStartHookError", |h| {
        state_of(h, "h", "bad")
            .and_then(|s| s.waiting)
            .is_some_and(|w| w.reason.as_deref() == Some(vk_app::prober::POST_START_HOOK_ERROR))
    })
    .await;
    let waiting = state_of(&h, "h", "bad").unwrap().waiting.unwrap();
    assert_eq!(
        waiting.message.as_deref(),
        Some(
            "Exec lifecycle hook ([setup -x]) for Container \"bad\" in Pod \"ns/h(u20)\" failed - error: command 'setup -x' exited with 7, message: \"\""
        )
    );
    // The slow hook still runs: its container is not running yet.
    let slow = state_of(&h, "h", "slow").unwrap();
    assert!(started.elapsed() < Duration::from_millis(900), "the test was too slow to tell");
    assert_eq!(slow.waiting.and_then(|w| w.reason).as_deref(), Some("ContainerCreating"));
    h.until("bad killed", |h| h.provider.calls().contains(&"restart job-ns/h bad".to_owned()))
        .await;
    let events = h.api.container_events.lock().unwrap().clone();
    assert!(
        events.contains(&(
            "spec.containers{bad}".into(),
            vk_ports::EventType::Warning,
            "FailedPostStartHook".into(),
            "PostStartHook failed".into()
        )),
        "{events:?}"
    );
    assert_eq!(h.provider.execs.lock().unwrap().clone(), ["bad setup -x"], "the hook ran once");
    for _ in 0..300 {
        if state_of(&h, "h", "slow").is_some_and(|s| s.running.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(state_of(&h, "h", "slow").unwrap().running.is_some(), "slow never ran");
    assert!(started.elapsed() >= Duration::from_secs(1), "running before its 1 s hook ended");
}

/// preStop hooks (`killContainer`): every running container's hook runs before the workload is
/// stopped, all at once; a failure is the Warning Event `FailedPreStopHook` and stops nothing
/// else; and a hook longer than the grace period left is cut at the deletion deadline.
#[tokio::test]
async fn pre_stop_hooks_run_before_the_stop_within_the_grace_period() {
    let deleting = |name: &str, uid: &str, spec: serde_json::Value, grace: Duration| {
        let mut p = pod(name, uid, "Running", spec);
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            vk_domain::jiff::Timestamp::now() + grace,
        ));
        p
    };
    let provider = FakeProvider::default();
    provider.pods.lock().unwrap().insert(key("d"), running(&key("d"), "u21", &["a", "b"]));
    provider.pods.lock().unwrap().insert(key("e"), running(&key("e"), "u22", &["c"]));
    provider.exit_codes.lock().unwrap().insert("a".into(), 3);
    let h = Harness::start(provider);
    let d = json!({"containers": [
        {"name": "a", "image": "i", "lifecycle": {"preStop": {"exec": {"command": ["bye"]}}}},
        {"name": "b", "image": "i", "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}
    ]});
    let e = json!({"containers": [
        {"name": "c", "image": "i", "lifecycle": {"preStop": {"sleep": {"seconds": 30}}}}
    ]});
    h.api.send(PodWatchEvent::Relisted(vec![
        deleting("d", "u21", d, Duration::from_secs(30)),
        // deletionTimestamp has whole seconds: the deadline is 2 to 3 s away.
        deleting("e", "u22", e, Duration::from_secs(3)),
    ]));
    let asked = std::time::Instant::now();
    let stopped = |h: &Harness, k: &str| h.provider.calls().contains(&format!("stop job-ns/{k}"));
    let mut when = [None, None];
    for _ in 0..600 {
        for (i, k) in ["d", "e"].into_iter().enumerate() {
            if when[i].is_none() && stopped(&h, k) {
                when[i] = Some(asked.elapsed());
            }
        }
        if when.iter().all(Option::is_some) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let [Some(d_stop), Some(e_stop)] = when else { panic!("not stopped: {when:?}") };
    assert!(
        d_stop >= Duration::from_millis(950),
        "d stopped after {d_stop:?}, before b's 1 s hook"
    );
    assert!(
        e_stop >= Duration::from_millis(1900) && e_stop < Duration::from_millis(4500),
        "e stopped after {e_stop:?}: its 30 s hook is cut at the deadline, 2 to 3 s away"
    );
    assert_eq!(h.provider.execs.lock().unwrap().clone(), ["a bye"]);
    let events = h.api.container_events.lock().unwrap().clone();
    let failed: Vec<_> = events.iter().filter(|e| e.2 == "FailedPreStopHook").collect();
    assert_eq!(
        failed,
        [&(
            "spec.containers{a}".to_owned(),
            vk_ports::EventType::Warning,
            "FailedPreStopHook".to_owned(),
            "PreStopHook failed".to_owned()
        )]
    );
}
