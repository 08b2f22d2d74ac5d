//! In-memory fakes of the provider and the Kubernetes API, and a harness running the pod
//! controller over them: shared by the test binaries of the pod controller.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code, unreachable_pub)] // test helpers

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio_util::sync::CancellationToken;
use vk_app::pod_controller::{PodController, Settings};
use vk_domain::inputs::ServiceInfo;
use vk_domain::jiff::Timestamp;
use vk_domain::node::NodeCapacity;
use vk_domain::pod::PodKey;
use vk_domain::runtime::WorkloadId;
use vk_domain::runtime::{
    ContainerRuntimeStatus, ContainerState, PodOwner, RuntimePod, Sandbox, SandboxState,
};
use vk_domain::workload::WorkloadSpec;
use vk_ports::{
    ClusterError, Duplex, EventType, InputsApi, NodeProvider, PodApi, PodNetwork, PodProvider,
    PodStreams, PodWatchEvent, ProbeTarget, ProviderError, StatsProvider, StatusWrite,
};

#[derive(Default)]
pub struct FakeProvider {
    pub pods: Mutex<HashMap<PodKey, RuntimePod>>,
    pub calls: Mutex<Vec<String>>,
    pub down: AtomicBool,
    /// Exit codes of exec probes by container (0 when absent).
    pub exit_codes: Mutex<HashMap<String, i32>>,
    /// Commands run by exec: `<container> <argv joined by spaces>`, in order.
    pub execs: Mutex<Vec<String>>,
}

pub fn running(key: &PodKey, uid: &str, containers: &[&str]) -> RuntimePod {
    RuntimePod {
        owner: PodOwner { key: key.clone(), uid: uid.into(), node: "vk".into() },
        id: format!("job-{key}").into(),
        stopping: false,
        images: Default::default(),
        unplaced: None,
        sandbox: Some(Sandbox {
            id: "alloc".into(),
            state: SandboxState::Running,
            created_at: None,
            pod_ip: Some("10.0.0.9".into()),
            host_ip: Some("10.0.0.1".into()),
            containers: containers
                .iter()
                .map(|c| {
                    let st = ContainerRuntimeStatus {
                        state: ContainerState::Running { started_at: None },
                        ..Default::default()
                    };
                    ((*c).to_owned(), st)
                })
                .collect(),
            message: None,
            ports: Default::default(),
            prepared: None,
        }),
    }
}

impl FakeProvider {
    pub fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    pub fn check(&self) -> Result<(), ProviderError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ProviderError::Unavailable { message: "down".into(), source: None });
        }
        Ok(())
    }
    pub fn key_of(&self, id: &str) -> Option<PodKey> {
        self.pods
            .lock()
            .unwrap()
            .values()
            .find(|p| p.id.as_str() == id)
            .map(|p| p.owner.key.clone())
    }
}

impl PodProvider for FakeProvider {
    async fn create_pod(&self, spec: &WorkloadSpec) -> Result<(), ProviderError> {
        self.check()?;
        self.log(format!("create {}", spec.key));
        let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        self.pods.lock().unwrap().insert(spec.key.clone(), running(&spec.key, &spec.uid, &names));
        Ok(())
    }

    async fn refresh_files(&self, spec: &WorkloadSpec) -> Result<(), ProviderError> {
        self.check()?;
        let files: Vec<String> = spec
            .volumes
            .iter()
            .flat_map(|v| match &v.source {
                vk_domain::volume::Source::Files(f) => f
                    .iter()
                    .map(|f| format!("{}/{}={}", v.name, f.path, String::from_utf8_lossy(&f.data)))
                    .collect(),
                _ => vec![],
            })
            .collect();
        self.log(format!("update {} {}", spec.key, files.join(",")));
        Ok(())
    }

    async fn start_container(&self, id: &WorkloadId, container: &str) -> Result<(), ProviderError> {
        self.check()?;
        self.log(format!("start {id} {container}"));
        Ok(())
    }

    async fn stop_pod(&self, id: &WorkloadId) -> Result<(), ProviderError> {
        self.check()?;
        self.log(format!("stop {id}"));
        let key = self.key_of(id).ok_or_else(|| ProviderError::NotFound(id.to_string()))?;
        if let Some(p) = self.pods.lock().unwrap().get_mut(&key) {
            p.stopping = true;
            if let Some(s) = p.sandbox.as_mut() {
                s.state = SandboxState::Succeeded;
            }
        }
        Ok(())
    }

    async fn kill_pod(&self, id: &WorkloadId) -> Result<(), ProviderError> {
        self.check()?;
        self.log(format!("kill {id}"));
        Ok(())
    }

    async fn purge_pod(&self, id: &WorkloadId) -> Result<(), ProviderError> {
        self.check()?;
        self.log(format!("purge {id}"));
        let key = self.key_of(id).ok_or_else(|| ProviderError::NotFound(id.to_string()))?;
        self.pods.lock().unwrap().remove(&key);
        Ok(())
    }

    async fn get_pod(&self, key: &PodKey) -> Result<Option<RuntimePod>, ProviderError> {
        self.check()?;
        Ok(self.pods.lock().unwrap().get(key).cloned())
    }

    async fn list_pods(&self) -> Result<Vec<RuntimePod>, ProviderError> {
        self.check()?;
        Ok(self.pods.lock().unwrap().values().cloned().collect())
    }
}

impl ProbeTarget for FakeProvider {
    async fn exec(
        &self,
        _id: &WorkloadId,
        container: &str,
        cmd: &[String],
    ) -> Result<i32, ProviderError> {
        self.check()?;
        self.execs.lock().unwrap().push(format!("{container} {}", cmd.join(" ")));
        Ok(self.exit_codes.lock().unwrap().get(container).copied().unwrap_or(0))
    }

    async fn restart_container(
        &self,
        id: &WorkloadId,
        container: &str,
    ) -> Result<(), ProviderError> {
        self.check()?;
        self.log(format!("restart {id} {container}"));
        Ok(())
    }
}

/// Pods are dialled at their sandbox's `pod_ip`, the port as asked (no mapping).
impl PodNetwork for FakeProvider {
    async fn dial(&self, id: &WorkloadId, port: u16) -> Result<Duplex, ProviderError> {
        let ip = self
            .pods
            .lock()
            .unwrap()
            .values()
            .find(|p| p.id == *id)
            .and_then(|p| p.sandbox.as_ref()?.pod_ip.clone())
            .ok_or_else(|| ProviderError::NotFound(format!("no address for {id}")))?;
        match tokio::net::TcpStream::connect((ip.as_str(), port)).await {
            Ok(sock) => Ok(Box::new(sock)),
            Err(e) => Err(ProviderError::Unavailable {
                message: format!("dial tcp {ip}:{port}: {e}"),
                source: Some(Box::new(e)),
            }),
        }
    }
}

impl PodStreams for FakeProvider {}
impl StatsProvider for FakeProvider {}

impl NodeProvider for FakeProvider {
    async fn capacity(&self) -> Result<NodeCapacity, ProviderError> {
        self.check()?;
        Ok(NodeCapacity::default())
    }
    async fn runtime_version(&self) -> Result<String, ProviderError> {
        Ok("fake://1".into())
    }
}

#[derive(Default)]
pub struct FakeApi {
    pub events_tx: Mutex<Option<mpsc::UnboundedSender<PodWatchEvent>>>,
    pub events_rx: Mutex<Option<mpsc::UnboundedReceiver<PodWatchEvent>>>,
    pub statuses: Mutex<Vec<(PodKey, PodStatus)>>,
    pub deleted: Mutex<Vec<PodKey>>,
    pub recorded: Mutex<Vec<(String, String)>>,
    /// The Events about containers: field path, type, reason, message.
    pub container_events: Mutex<Vec<(String, EventType, String, String)>>,
    pub config_maps: Mutex<HashMap<String, std::collections::BTreeMap<String, Vec<u8>>>>,
    pub secrets: Mutex<HashMap<String, std::collections::BTreeMap<String, Vec<u8>>>>,
    pub namespace_labels: Mutex<HashMap<String, std::collections::BTreeMap<String, String>>>,
}

/// The service-account token every TokenRequest of [`FakeApi`] answers.
pub const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.fake-bound-token.c2lnbmF0dXJl";

impl FakeApi {
    pub fn new() -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded();
        Arc::new(Self {
            events_tx: Mutex::new(Some(tx)),
            events_rx: Mutex::new(Some(rx)),
            ..Default::default()
        })
    }
    pub fn send(&self, ev: PodWatchEvent) {
        self.events_tx.lock().unwrap().as_ref().unwrap().unbounded_send(ev).unwrap();
    }
    pub fn statuses_of(&self, key: &PodKey) -> Vec<PodStatus> {
        self.statuses
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, s)| s.clone())
            .collect()
    }
}

impl PodApi for FakeApi {
    fn watch(&self, _node: &str) -> impl Stream<Item = PodWatchEvent> + Send + 'static {
        self.events_rx.lock().unwrap().take().expect("watched once")
    }
    async fn update_status(
        &self,
        key: &PodKey,
        write: StatusWrite<'_>,
    ) -> Result<(), ClusterError> {
        self.statuses.lock().unwrap().push((key.clone(), write.status.clone()));
        Ok(())
    }
    async fn delete(&self, key: &PodKey, _uid: &str) -> Result<(), ClusterError> {
        self.deleted.lock().unwrap().push(key.clone());
        Ok(())
    }
    async fn record_event(
        &self,
        _pod: &Pod,
        field_path: Option<&str>,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), ClusterError> {
        if let Some(path) = field_path {
            let event = (path.into(), type_, reason.into(), message.into());
            self.container_events.lock().unwrap().push(event);
            return Ok(());
        }
        assert_eq!(type_, EventType::Warning);
        self.recorded.lock().unwrap().push((reason.into(), message.into()));
        Ok(())
    }
}

impl InputsApi for FakeApi {
    async fn config_map(
        &self,
        _namespace: &str,
        name: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, Vec<u8>>>, ClusterError> {
        Ok(self.config_maps.lock().unwrap().get(name).cloned())
    }
    async fn secret(
        &self,
        _namespace: &str,
        name: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, Vec<u8>>>, ClusterError> {
        Ok(self.secrets.lock().unwrap().get(name).cloned())
    }
    async fn services(&self, _namespace: &str) -> Result<Vec<ServiceInfo>, ClusterError> {
        Ok(vec![])
    }
    async fn namespace_labels(
        &self,
        namespace: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, ClusterError> {
        Ok(self.namespace_labels.lock().unwrap().get(namespace).cloned().unwrap_or_default())
    }
    async fn request_token(
        &self,
        _pod: &Pod,
        _sa: &str,
        _audience: &str,
        seconds: i64,
    ) -> Result<(String, Timestamp), ClusterError> {
        Ok((TOKEN.into(), Timestamp::now() + Duration::from_secs(seconds.unsigned_abs())))
    }
}

impl FakeApi {
    pub fn set_config_map(&self, name: &str, pairs: &[(&str, &str)]) {
        let data = pairs.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect();
        self.config_maps.lock().unwrap().insert(name.into(), data);
    }
    pub fn set_secret(&self, name: &str, pairs: &[(&str, &str)]) {
        let data = pairs.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect();
        self.secrets.lock().unwrap().insert(name.into(), data);
    }
}

/// Pod `ns/<name>` bound to node `vk`, one container `main` (busybox, `sleep 1`), in `phase`;
/// `extra_spec`'s keys replace the spec's.
pub fn pod(name: &str, uid: &str, phase: &str, extra_spec: serde_json::Value) -> Pod {
    vk_domain::testing::pod(name)
        .namespace("ns")
        .uid(uid)
        .node("vk")
        .image("busybox")
        .container("main", &["sleep", "1"])
        .phase(phase)
        .spec(extra_spec)
        .build()
}

pub fn key(name: &str) -> PodKey {
    PodKey::new("ns", name).unwrap()
}

pub struct Harness {
    pub provider: Arc<FakeProvider>,
    pub api: Arc<FakeApi>,
    pub cancel: CancellationToken,
    pub controller: Arc<PodController<FakeProvider, FakeApi>>,
}

impl Harness {
    pub fn start(provider: FakeProvider) -> Self {
        Self::start_with(provider, FakeApi::new(), |_| {})
    }

    /// Starts with `api` (set up beforehand) and the settings as `adjust` leaves them.
    pub fn start_with(
        provider: FakeProvider,
        api: Arc<FakeApi>,
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        let provider = Arc::new(provider);
        let mut settings = Settings {
            node_name: "vk".into(),
            workers: 2,
            status_interval: Duration::from_millis(20),
            refresh_interval: Duration::from_secs(3600),
            allocatable: tokio::sync::watch::channel(NodeCapacity::default()).1,
            node_changed: Arc::new(tokio::sync::Notify::new()),
            probe_policy: Arc::default(),
            namespace_labels: false,
            node_os: "linux".into(),
        };
        adjust(&mut settings);
        let controller = PodController::new(Arc::clone(&provider), Arc::clone(&api), settings);
        let cancel = CancellationToken::new();
        tokio::spawn(Arc::clone(&controller).run(cancel.clone()));
        Self { provider, api, cancel, controller }
    }

    pub async fn until(&self, what: &str, mut f: impl FnMut(&Self) -> bool) {
        for _ in 0..200 {
            if f(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}; provider calls: {:?}", self.provider.calls());
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
