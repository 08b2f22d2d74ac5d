//! The memory provider's unit tests.

use futures::StreamExt as _;
use serde_json::json;
use vk_domain::inputs::Inputs;
use vk_domain::k8s_openapi::api::core::v1::Pod;
use vk_domain::logs::{LogOptions, LogStream};
use vk_domain::runtime::{ContainerState, SandboxState};
use vk_domain::stats::ContainerUsage;
use vk_domain::workload::WorkloadSpec;
use vk_ports::{PodProvider, PodStreams, ProbeTarget, StatsProvider};

use super::*;

fn spec(name: &str, uid: &str, extra: serde_json::Value) -> WorkloadSpec {
    let mut pod = json!({
        "metadata": {"namespace": "ns", "name": name, "uid": uid},
        "spec": {
            "containers": [
                {"name": "app", "image": "busybox:1",
                 "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                {"name": "side", "image": "busybox:1"},
            ],
        },
    });
    if let (Some(s), Some(extra)) = (pod["spec"].as_object_mut(), extra.as_object()) {
        s.extend(extra.clone());
    }
    let pod: Pod = serde_json::from_value(pod).unwrap();
    WorkloadSpec::from_pod(&pod, &Inputs::default()).unwrap().spec
}

fn provider() -> MemoryProvider {
    MemoryProvider::new(MemoryConfig::new("vk", "10.0.0.7"))
}

fn key(name: &str) -> PodKey {
    PodKey::new("ns", name).unwrap()
}

fn state<'a>(pod: &'a RuntimePod, container: &str) -> &'a ContainerState {
    &pod.sandbox.as_ref().unwrap().containers.get(container).unwrap().state
}

#[tokio::test]
async fn a_created_pod_runs_at_once_and_is_pushed() {
    let p = provider();
    let mut changes = Box::pin(p.changes());
    assert_eq!(changes.next().await, Some(Change::Resync));
    let init = json!({"initContainers": [
        {"name": "setup", "image": "busybox:1"},
        {"name": "proxy", "image": "envoy:1", "restartPolicy": "Always"},
    ]});
    p.create_pod(&spec("web", "u1", init)).await.unwrap();
    assert!(
        matches!(changes.next().await, Some(Change::Pod { key: k, at: Some(_) }) if k == key("web"))
    );

    let pod = p.get_pod(&key("web")).await.unwrap().unwrap();
    assert_eq!(pod.id, "ns/web");
    assert_eq!((pod.owner.uid.as_str(), pod.owner.node.as_str()), ("u1", "vk"));
    let sandbox = pod.sandbox.as_ref().unwrap();
    assert_eq!(sandbox.state, SandboxState::Running);
    assert_eq!(sandbox.pod_ip.as_deref(), Some("198.18.0.1"));
    assert_eq!(sandbox.host_ip.as_deref(), Some("10.0.0.7"));
    for c in ["app", "side", "proxy"] {
        assert!(
            matches!(state(&pod, c), ContainerState::Running { started_at: Some(_) }),
            "{c}: {:?}",
            state(&pod, c)
        );
    }
    assert!(
        matches!(state(&pod, "setup"), ContainerState::Terminated(t) if t.exit_code == 0 && t.reason == "Completed")
    );
    assert_eq!(pod.images.get("proxy").unwrap(), "envoy:1");

    // The same pod again changes nothing; another pod gets the next address.
    p.create_pod(&spec("web", "u1", json!({}))).await.unwrap();
    assert_eq!(p.get_pod(&key("web")).await.unwrap(), Some(pod));
    p.create_pod(&spec("db", "u2", json!({}))).await.unwrap();
    let db = p.get_pod(&key("db")).await.unwrap().unwrap();
    assert_eq!(db.sandbox.unwrap().pod_ip.as_deref(), Some("198.18.0.2"));
    assert_eq!(p.list_pods().await.unwrap().len(), 2);
}

#[tokio::test]
async fn stop_ends_every_container_and_purge_forgets() {
    let p = provider();
    p.create_pod(&spec("web", "u1", json!({}))).await.unwrap();
    let mut changes = Box::pin(p.changes());
    assert_eq!(changes.next().await, Some(Change::Resync));
    p.stop_pod(&"ns/web".into()).await.unwrap();
    assert!(matches!(changes.next().await, Some(Change::Pod { .. })));
    let pod = p.get_pod(&key("web")).await.unwrap().unwrap();
    assert!(pod.stopping && pod.is_terminated());
    assert_eq!(pod.sandbox.as_ref().unwrap().state, SandboxState::Succeeded);
    assert!(
        matches!(state(&pod, "app"), ContainerState::Terminated(t) if t.exit_code == 0 && t.finished_at.is_some())
    );
    // Killing after the stop changes nothing more: nothing runs.
    p.kill_pod(&"ns/web".into()).await.unwrap();
    let pod = p.get_pod(&key("web")).await.unwrap().unwrap();
    assert!(matches!(state(&pod, "app"), ContainerState::Terminated(t) if t.exit_code == 0));
    assert_eq!(pod.sandbox.as_ref().unwrap().state, SandboxState::Succeeded);

    p.purge_pod(&"ns/web".into()).await.unwrap();
    assert_eq!(p.get_pod(&key("web")).await.unwrap(), None);
    assert!(matches!(p.purge_pod(&"ns/web".into()).await, Err(ProviderError::NotFound(_))));
    assert!(matches!(p.stop_pod(&"ns/web".into()).await, Err(ProviderError::NotFound(_))));
    assert!(matches!(
        p.start_container(&"ns/web".into(), "app").await,
        Err(ProviderError::NotFound(_))
    ));
}

#[tokio::test]
async fn kill_is_exit_137_and_restart_counts() {
    let p = provider();
    p.create_pod(&spec("web", "u1", json!({}))).await.unwrap();
    p.restart_container(&"ns/web".into(), "app").await.unwrap();
    let pod = p.get_pod(&key("web")).await.unwrap().unwrap();
    let app = &pod.sandbox.as_ref().unwrap().containers.get("app").unwrap();
    assert_eq!(app.restart_count, 1);
    assert_eq!(
        app.last_termination.as_ref().map(|t| (t.exit_code, t.signal)),
        Some((137, Some(9)))
    );
    assert!(matches!(app.state, ContainerState::Running { .. }));
    assert!(matches!(
        p.restart_container(&"ns/web".into(), "nope").await,
        Err(ProviderError::NotFound(_))
    ));

    p.kill_pod(&"ns/web".into()).await.unwrap();
    let pod = p.get_pod(&key("web")).await.unwrap().unwrap();
    assert_eq!(pod.sandbox.as_ref().unwrap().state, SandboxState::Failed);
    assert!(
        matches!(state(&pod, "side"), ContainerState::Terminated(t) if t.exit_code == 137 && t.reason == "Error")
    );
}

#[tokio::test]
async fn a_new_image_restarts_only_that_container_and_files_change_nothing() {
    let p = provider();
    p.create_pod(&spec("web", "u1", json!({}))).await.unwrap();
    let mut changes = Box::pin(p.changes());
    assert_eq!(changes.next().await, Some(Change::Resync));
    p.refresh_files(&spec("web", "u1", json!({}))).await.unwrap();
    p.replace_images(&spec("web", "u1", json!({}))).await.unwrap();
    let mut updated = spec("web", "u1", json!({}));
    updated.containers[0].image = "busybox:2".into();
    p.refresh_files(&updated).await.unwrap();
    p.replace_images(&updated).await.unwrap();
    // One change only: the first update changed nothing.
    assert!(matches!(changes.next().await, Some(Change::Pod { .. })));
    assert!(futures::poll!(changes.next()).is_pending());
    let pod = p.get_pod(&key("web")).await.unwrap().unwrap();
    assert_eq!(pod.images.get("app").unwrap(), "busybox:2");
    let containers = &pod.sandbox.as_ref().unwrap().containers;
    assert_eq!(
        (
            containers.get("app").unwrap().restart_count,
            containers.get("side").unwrap().restart_count
        ),
        (1, 0)
    );
}

#[tokio::test]
async fn usage_is_the_requests_and_grows_with_time() {
    let p = provider();
    p.create_pod(&spec("web", "u1", json!({}))).await.unwrap();
    p.create_pod(&spec("gone", "u2", json!({}))).await.unwrap();
    p.stop_pod(&"ns/gone".into()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let u = p.usage().await.unwrap();
    assert_eq!(u.pods.len(), 1, "stopped pods use nothing");
    let pod = &u.pods[0];
    assert_eq!((pod.key.clone(), pod.uid.as_str()), (key("web"), "u1"));
    let by_name: HashMap<&str, &ContainerUsage> =
        pod.containers.iter().map(|c| (c.name.as_str(), c)).collect();
    let app = by_name["app"].cpu.as_ref().unwrap();
    assert_eq!(app.nano_cores, 250_000_000);
    // 250m for at least 20 ms: at least 5 ms of CPU.
    assert!(app.cumulative_nanos.unwrap() >= 5_000_000, "{app:?}");
    assert_eq!(by_name["app"].memory.as_ref().unwrap().working_set_bytes, 64 * MIB);
    assert_eq!(by_name["side"].cpu.as_ref().unwrap().nano_cores, 1_000_000);
    assert_eq!(by_name["side"].memory.as_ref().unwrap().working_set_bytes, MIB);
    let node_mem = u.node.memory.clone().unwrap();
    assert_eq!(node_mem.working_set_bytes, 65 * MIB);
    assert_eq!(node_mem.available_bytes, Some((100 << 30) - 65 * MIB));
    assert_eq!(u.node.cpu.as_ref().unwrap().nano_cores, 251_000_000);
    // The stats documents are built from it.
    let summary = vk_domain::stats::summary("vk", &u);
    assert_eq!(summary["pods"][0]["podRef"]["name"], "web");
}

#[tokio::test]
async fn logs_are_one_canned_line() {
    let p = provider();
    p.create_pod(&spec("web", "u1", json!({}))).await.unwrap();
    let read = |opts: LogOptions| {
        let p = &p;
        async move {
            let mut s = p.logs(&"ns/web".into(), "app", &opts).await?;
            let mut out = Vec::new();
            while let Some(b) = s.next().await {
                out.extend_from_slice(&b?);
            }
            Ok::<_, ProviderError>(String::from_utf8(out).unwrap())
        }
    };
    assert_eq!(
        read(LogOptions::default()).await.unwrap(),
        "app is running in the memory provider\n"
    );
    assert_eq!(
        read(LogOptions { limit_bytes: Some(3), ..Default::default() }).await.unwrap(),
        "app"
    );
    assert_eq!(read(LogOptions { tail_lines: Some(0), ..Default::default() }).await.unwrap(), "");
    assert_eq!(
        read(LogOptions { stream: LogStream::Stderr, ..Default::default() }).await.unwrap(),
        ""
    );
    let future = Timestamp::now() + vk_domain::jiff::SignedDuration::from_secs(60);
    assert_eq!(read(LogOptions { since: Some(future), ..Default::default() }).await.unwrap(), "");
    let stamped = read(LogOptions { timestamps: true, ..Default::default() }).await.unwrap();
    assert!(stamped.ends_with("Z app is running in the memory provider\n"), "{stamped}");
    assert!(matches!(
        read(LogOptions { previous: true, ..Default::default() }).await,
        Err(ProviderError::NotFound(_))
    ));
    p.restart_container(&"ns/web".into(), "app").await.unwrap();
    assert!(read(LogOptions { previous: true, ..Default::default() }).await.is_ok());
    assert!(matches!(
        p.logs(&"ns/web".into(), "nope", &LogOptions::default()).await,
        Err(ProviderError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_reader_that_falls_behind_is_told_to_resync() {
    let p = provider();
    let mut changes = Box::pin(p.changes());
    assert_eq!(changes.next().await, Some(Change::Resync));
    for i in 0..=CHANGE_BUFFER {
        p.create_pod(&spec(&format!("p{i}"), &format!("u{i}"), json!({}))).await.unwrap();
    }
    assert_eq!(changes.next().await, Some(Change::Resync));
    assert!(matches!(changes.next().await, Some(Change::Pod { .. })));
}

#[test]
fn upstream_mock_config_is_read() {
    let json = r#"{"vk": {"cpu": "4", "memory": "8Gi", "pods": "30", "nvidia.com/gpu": "1"},
                   "other": {"cpu": "1"}}"#;
    let c = parse_upstream_mock_config("vk", json).unwrap();
    assert_eq!(
        c,
        UpstreamMockConfig {
            capacity: NodeCapacity {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
                ephemeral_storage_bytes: 100 << 30,
                pods: None,
                ..Default::default()
            },
            pods: Some(30),
        }
    );
    let partial = parse_upstream_mock_config("vk", r#"{"vk": {"cpu": 2}}"#).unwrap();
    assert_eq!((partial.capacity.cpu_millis, partial.capacity.memory_bytes), (2000, 100 << 30));
    let absent = parse_upstream_mock_config("elsewhere", json).unwrap();
    assert_eq!(absent, UpstreamMockConfig { capacity: MemoryConfig::DEFAULT_CAPACITY, pods: None });
    let bad = parse_upstream_mock_config("vk", r#"{"vk": {"memory": "lots"}}"#).unwrap_err();
    assert!(bad.contains(r#""vk".memory"#), "{bad}");
    assert!(parse_upstream_mock_config("vk", "[]").is_err());
    assert!(parse_upstream_mock_config("vk", r#"{"vk": {"pods": "1e12"}}"#).is_err());
}

#[tokio::test]
async fn the_node_is_the_configured_capacity() {
    let mut config = MemoryConfig::new("vk", "10.0.0.7");
    config.capacity.cpu_millis = 4000;
    let p = MemoryProvider::new(config);
    assert_eq!(p.capacity().await.unwrap().cpu_millis, 4000);
    assert_eq!(p.capacity().await.unwrap().memory_bytes, 100 << 30);
    assert!(p.runtime_version().await.unwrap().starts_with("memory://"));
}
