//! `--provider memory`: pods that live in this process's memory, as upstream virtual-kubelet's
//! mock provider (`provider/mock/mock.go`) but without its gaps.
//!
//! A pod is Running the moment it is created: every app container and sidecar running since
//! then, every init container completed with exit code 0. Stopping it ends every container with
//! exit code 0 (`Completed`) at once; purging forgets it. Nothing runs anywhere: no task, no timer,
//! no process per pod, and every operation is one map access under one lock, so the provider can
//! stand behind benchmarks of thousands of pods and measure the virtual kubelet alone. Each
//! change is pushed through [`PodProvider::changes`], so statuses are written at once.
//!
//! Resource usage is synthetic but well formed (so `/stats/summary`, `/metrics/resource` and
//! `kubectl top` have something to show): each running container uses exactly its CPU request
//! (else its limit, else 1 millicore) and its memory request (else its limit, else 1 MiB), and its
//! cumulative CPU counter grows at that rate from its start. Logs are one canned line per
//! container. Pod IPs come from 198.18.0.0/15 (RFC 2544's benchmarking range) and reach nothing;
//! exec, attach and port-forward are refused as `Unsupported`, so exec and HTTP probes fail.
//!
//! The node's capacity is [`MemoryConfig::capacity`]; [`parse_upstream_mock_config`] reads it (and
//! `pods`) from upstream mock's `--provider-config` JSON, for a caller that offers that flag.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use tokio::sync::broadcast;
use vk_domain::jiff::Timestamp;
use vk_domain::logs::{LogOptions, LogStream};
use vk_domain::node::NodeCapacity;
use vk_domain::pod::PodKey;
use vk_domain::quantity;
use vk_domain::runtime::WorkloadId;
use vk_domain::runtime::{
    ContainerRuntimeStatus, ContainerState, PodOwner, RuntimePod, Sandbox, SandboxState,
    Termination,
};
use vk_domain::stats::{ContainerUsage, CpuSample, MemorySample, NodeUsage, PodUsage, Usage};
use vk_domain::workload::{ContainerSpec, WorkloadSpec};
use vk_ports::{
    ByteStream, Change, NodeProvider, PodNetwork, PodProvider, PodStreams, ProbeTarget,
    ProviderError, StatsProvider,
};

/// Changes buffered for a slow reader before it is told to list everything again
/// ([`Change::Resync`]).
const CHANGE_BUFFER: usize = 4096;

/// 1 MiB, the memory a container without request or limit is said to use.
const MIB: u64 = 1 << 20;

/// Settings of the memory provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    /// This node's name, recorded as the owner of every pod created.
    pub node_name: String,
    /// `status.hostIP` of every pod (the node's InternalIP).
    pub host_ip: String,
    /// What the node offers (`capacity` and `allocatable`; `pods` is the node's `--max-pods`).
    pub capacity: NodeCapacity,
}

impl MemoryConfig {
    /// Upstream mock's default capacity (`cpu: 20`, `memory: 100Gi`), with 100 GiB of ephemeral
    /// storage.
    pub const DEFAULT_CAPACITY: NodeCapacity = NodeCapacity {
        cpu_millis: 20_000,
        memory_bytes: 100 << 30,
        ephemeral_storage_bytes: 100 << 30,
    };

    /// Settings for node `node_name` reached at `host_ip`, with [`Self::DEFAULT_CAPACITY`].
    pub fn new(node_name: impl Into<String>, host_ip: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            host_ip: host_ip.into(),
            capacity: Self::DEFAULT_CAPACITY,
        }
    }
}

/// What upstream mock's `--provider-config` file gives a node (`provider/mock/mock.go`,
/// `MockConfig`): its capacity and its `pods`, which the caller applies as the node's `--max-pods`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamMockConfig {
    /// CPU, memory and ephemeral storage; values the file leaves out keep the defaults.
    pub capacity: NodeCapacity,
    /// `pods`, when the file gives it.
    pub pods: Option<u32>,
}

/// Reads upstream mock's provider configuration: a JSON object keyed by node name, each entry with
/// optional quantity strings `cpu`, `memory`, `ephemeral-storage` (upstream has no such key; kept
/// for symmetry with the node's resources) and `pods`, as
/// `{"vk": {"cpu": "20", "memory": "100Gi", "pods": "20"}}`. A node absent from the file gets
/// [`MemoryConfig::DEFAULT_CAPACITY`], as upstream; other keys (upstream's `nvidia.com/gpu`, ...)
/// are ignored.
///
/// # Errors
/// The text not being such a JSON object, or a value that is not a valid quantity (the message
/// names the node and key).
pub fn parse_upstream_mock_config(
    node_name: &str,
    json: &str,
) -> Result<UpstreamMockConfig, String> {
    let all: HashMap<String, HashMap<String, serde_json::Value>> =
        serde_json::from_str(json).map_err(|e| format!("provider config: {e}"))?;
    let mut out = UpstreamMockConfig { capacity: MemoryConfig::DEFAULT_CAPACITY, pods: None };
    let Some(entry) = all.get(node_name) else { return Ok(out) };
    for (key, value) in entry {
        let field = format!("provider config {node_name:?}.{key}");
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            other => return Err(format!("{field}: {other} is not a quantity")),
        };
        let err = |e: vk_domain::error::Unsupported| e.to_string();
        match key.as_str() {
            "cpu" => out.capacity.cpu_millis = quantity::cpu_millis(&field, &text).map_err(err)?,
            "memory" => out.capacity.memory_bytes = quantity::bytes(&field, &text).map_err(err)?,
            "ephemeral-storage" => {
                out.capacity.ephemeral_storage_bytes =
                    quantity::bytes(&field, &text).map_err(err)?;
            }
            "pods" => {
                let n = quantity::bytes(&field, &text).map_err(err)?;
                out.pods =
                    Some(u32::try_from(n).map_err(|_| format!("{field}: {text} is too many"))?);
            }
            _ => {}
        }
    }
    Ok(out)
}

/// One pod as the provider keeps it: its runtime view and what its usage is made of.
struct Entry {
    runtime: RuntimePod,
    /// Per container: (name, nanocores, working-set bytes).
    usage: Vec<(String, u64, u64)>,
}

/// The in-memory provider. See the module documentation.
pub struct MemoryProvider {
    config: MemoryConfig,
    started: Timestamp,
    pods: Mutex<State>,
    changes: broadcast::Sender<Change>,
}

#[derive(Default)]
struct State {
    /// Boxed: an `Entry` is 352 bytes inline, and a hash table keeps up to twice as many slots
    /// as entries.
    pods: HashMap<PodKey, Box<Entry>>,
    /// Pod IPs handed out so far (the next one is derived from it).
    ips: u32,
}

impl MemoryProvider {
    /// A provider with no pods.
    pub fn new(config: MemoryConfig) -> Self {
        Self {
            config,
            started: Timestamp::now(),
            pods: Mutex::new(State::default()),
            changes: broadcast::channel(CHANGE_BUFFER).0,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self, key: &PodKey) {
        // No receiver yet is fine: the first thing a reader gets is a Resync.
        let _ = self.changes.send(Change::Pod { key: key.clone(), at: Some(Timestamp::now()) });
    }

    /// Applies `f` to the pod whose workload ID is `id`, then pushes the change.
    fn with_pod<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut RuntimePod, Timestamp) -> T,
    ) -> Result<T, ProviderError> {
        let key = key_of(id)?;
        let out = {
            let mut st = self.state();
            let entry = st.pods.get_mut(&key).ok_or_else(|| not_found(id))?;
            f(&mut entry.runtime, Timestamp::now())
        };
        self.notify(&key);
        Ok(out)
    }
}

fn not_found(id: &str) -> ProviderError {
    ProviderError::NotFound(format!("no pod {id} in the memory provider"))
}

/// Workload IDs are the pod's `namespace/name`.
fn key_of(id: &str) -> Result<PodKey, ProviderError> {
    PodKey::parse(id).map_err(|_| not_found(id))
}

/// The `n`th pod IP: 198.18.0.1 onwards through 198.19.255.254, then around again.
fn pod_ip(n: u32) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    Ipv4Addr::from(base + 1 + n % ((1 << 17) - 2))
}

fn running(spec: &WorkloadSpec, c: &ContainerSpec, now: Timestamp) -> ContainerRuntimeStatus {
    ContainerRuntimeStatus {
        container_id: Some(format!("memory://{}/{}", spec.uid, c.name)),
        state: ContainerState::Running { started_at: Some(now) },
        ..ContainerRuntimeStatus::default()
    }
}

fn terminated(started_at: Option<Timestamp>, exit_code: i32, now: Timestamp) -> ContainerState {
    ContainerState::Terminated(Termination {
        exit_code,
        signal: (exit_code == 137).then_some(9),
        reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
        message: None,
        started_at,
        finished_at: Some(now),
    })
}

fn started_at(state: &ContainerState) -> Option<Timestamp> {
    match state {
        ContainerState::Running { started_at } => *started_at,
        ContainerState::Terminated(t) => t.started_at,
        ContainerState::Waiting { .. } => None,
    }
}

/// Ends every running container of `pod` with `exit_code`; the sandbox is then `Succeeded` (exit
/// code 0) or `Failed`. A sandbox already ended stays as it is.
fn end(pod: &mut RuntimePod, exit_code: i32, now: Timestamp) {
    pod.stopping = true;
    let Some(sandbox) = pod.sandbox.as_mut().filter(|s| !s.is_terminal()) else { return };
    for (_, c) in sandbox.containers.iter_mut() {
        if let ContainerState::Running { started_at } = c.state {
            c.state = terminated(started_at, exit_code, now);
        }
    }
    sandbox.state = if exit_code == 0 { SandboxState::Succeeded } else { SandboxState::Failed };
}

/// Restarts container `name` of `pod` in place: the current run ends with `exit_code`.
fn restart(pod: &mut RuntimePod, name: &str, exit_code: i32, now: Timestamp) -> bool {
    let Some(c) = pod.sandbox.as_mut().and_then(|s| s.containers.get_mut(name)) else {
        return false;
    };
    if !matches!(c.state, ContainerState::Running { .. }) {
        return false;
    }
    if let ContainerState::Terminated(t) = terminated(started_at(&c.state), exit_code, now) {
        c.last_termination = Some(t);
    }
    c.state = ContainerState::Running { started_at: Some(now) };
    c.restart_count += 1;
    c.probe_ready = None;
    c.probe_started = None;
    true
}

impl PodProvider for MemoryProvider {
    /// Records the pod as running (again, from now, when its UID changed). Creating an existing
    /// pod of the same UID changes nothing.
    async fn create_pod(&self, spec: &WorkloadSpec) -> Result<(), ProviderError> {
        let now = Timestamp::now();
        {
            let mut st = self.state();
            if st.pods.get(&spec.key).is_some_and(|e| e.runtime.owner.uid == spec.uid) {
                return Ok(());
            }
            let ip = pod_ip(st.ips);
            st.ips = st.ips.wrapping_add(1);
            let mut containers = vk_domain::runtime::LiteMap::with_capacity(
                spec.init_containers.len() + spec.containers.len(),
            );
            for c in &spec.init_containers {
                let mut status = running(spec, c, now);
                if !c.sidecar {
                    status.state = terminated(Some(now), 0, now);
                }
                containers.insert(c.name.clone(), status);
            }
            for c in &spec.containers {
                containers.insert(c.name.clone(), running(spec, c, now));
            }
            let runtime = RuntimePod {
                owner: PodOwner {
                    key: spec.key.clone(),
                    uid: spec.uid.clone(),
                    node: self.config.node_name.clone(),
                },
                id: spec.key.to_string().into(),
                stopping: false,
                sandbox: Some(Sandbox {
                    id: spec.uid.clone(),
                    state: SandboxState::Running,
                    created_at: Some(now),
                    pod_ip: Some(ip.to_string()),
                    host_ip: Some(self.config.host_ip.clone()),
                    containers,
                    message: None,
                    ports: Default::default(),
                    prepared: None,
                }),
                images: spec
                    .init_containers
                    .iter()
                    .chain(&spec.containers)
                    .map(|c| (c.name.clone(), c.image.clone()))
                    .collect(),
            };
            let usage = spec
                .init_containers
                .iter()
                .filter(|c| c.sidecar)
                .chain(&spec.containers)
                .map(|c| {
                    let r = &c.resources;
                    let millis = r.cpu_request_millis.or(r.cpu_limit_millis).unwrap_or(1);
                    let bytes = r.memory_request_bytes.or(r.memory_limit_bytes).unwrap_or(MIB);
                    (c.name.clone(), millis.saturating_mul(1_000_000), bytes)
                })
                .collect();
            st.pods.insert(spec.key.clone(), Box::new(Entry { runtime, usage }));
        }
        self.notify(&spec.key);
        Ok(())
    }

    /// Files have nowhere to go: nothing to do, for a pod that exists.
    async fn refresh_files(&self, spec: &WorkloadSpec) -> Result<(), ProviderError> {
        let st = self.state();
        st.pods.get(&spec.key).map(|_| ()).ok_or_else(|| not_found(&spec.key.to_string()))
    }

    /// A container whose image changed is restarted with it (as a kubelet does).
    async fn replace_images(&self, spec: &WorkloadSpec) -> Result<(), ProviderError> {
        let changed = {
            let mut st = self.state();
            let entry =
                st.pods.get_mut(&spec.key).ok_or_else(|| not_found(&spec.key.to_string()))?;
            let pod = &mut entry.runtime;
            let now = Timestamp::now();
            let mut changed = false;
            for c in spec.init_containers.iter().chain(&spec.containers) {
                if pod.images.get(&c.name).is_some_and(|old| *old != c.image) {
                    pod.images.insert(c.name.clone(), c.image.clone());
                    restart(pod, &c.name, 0, now);
                    changed = true;
                }
            }
            changed
        };
        // The volume refresh calls this for every pod with files: only a real change is pushed.
        if changed {
            self.notify(&spec.key);
        }
        Ok(())
    }

    /// Init containers complete at creation, so there is nothing to hold or release.
    async fn start_container(
        &self,
        id: &WorkloadId,
        _container: &str,
    ) -> Result<(), ProviderError> {
        let key = key_of(id)?;
        match self.state().pods.contains_key(&key) {
            true => Ok(()),
            false => Err(not_found(id)),
        }
    }

    /// Every container ends at once with exit code 0, as a process honouring SIGTERM.
    async fn stop_pod(&self, id: &WorkloadId) -> Result<(), ProviderError> {
        self.with_pod(id, |pod, now| end(pod, 0, now))
    }

    /// Whatever still runs ends with exit code 137 (SIGKILL).
    async fn kill_pod(&self, id: &WorkloadId) -> Result<(), ProviderError> {
        self.with_pod(id, |pod, now| end(pod, 137, now))
    }

    async fn purge_pod(&self, id: &WorkloadId) -> Result<(), ProviderError> {
        let key = key_of(id)?;
        self.state().pods.remove(&key).ok_or_else(|| not_found(id))?;
        self.notify(&key);
        Ok(())
    }

    async fn get_pod(&self, key: &PodKey) -> Result<Option<RuntimePod>, ProviderError> {
        Ok(self.state().pods.get(key).map(|e| e.runtime.clone()))
    }

    /// Every change as it is made, after a first [`Change::Resync`]; a reader more than 4096
    /// changes behind gets a `Resync` instead of what it missed.
    fn changes(&self) -> impl Stream<Item = Change> + Send + 'static {
        let rx = self.changes.subscribe();
        let follow = futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(change) => Some((change, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => Some((Change::Resync, rx)),
                // The provider is gone: nothing will change any more.
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        futures::stream::once(async { Change::Resync })
            .chain(follow)
            .chain(futures::stream::pending())
    }

    async fn list_pods(&self) -> Result<Vec<RuntimePod>, ProviderError> {
        Ok(self.state().pods.values().map(|e| e.runtime.clone()).collect())
    }
}

impl ProbeTarget for MemoryProvider {
    /// Nothing runs, so no command can: always `Unsupported` (exec probes fail).
    async fn exec(&self, _: &WorkloadId, _: &str, _: &[String]) -> Result<i32, ProviderError> {
        Err(ProviderError::Unsupported("the memory provider runs no processes".into()))
    }

    /// The container's run ends with exit code 137 (killed) and a new one starts at once.
    async fn restart_container(
        &self,
        id: &WorkloadId,
        container: &str,
    ) -> Result<(), ProviderError> {
        if self.with_pod(id, |pod, now| restart(pod, container, 137, now))? {
            Ok(())
        } else {
            Err(ProviderError::NotFound(format!("container {container} does not run in {id}")))
        }
    }
}

/// Memory pods have no network: nothing to dial (probes other than exec fail, port-forward is
/// refused as unsupported).
impl PodNetwork for MemoryProvider {}

impl PodStreams for MemoryProvider {
    /// One line on stdout per container run: `<container> is running in the memory provider`,
    /// written when the run started. `previous` gives the line of the run before a restart.
    /// `follow` ends at once: nothing more is ever written.
    async fn logs(
        &self,
        id: &WorkloadId,
        container: &str,
        opts: &LogOptions,
    ) -> Result<ByteStream, ProviderError> {
        let key = key_of(id)?;
        let written = {
            let st = self.state();
            let c = st
                .pods
                .get(&key)
                .and_then(|e| e.runtime.sandbox.as_ref()?.containers.get(container))
                .ok_or_else(|| not_found(&format!("{id} container {container}")))?;
            if opts.previous {
                let last = c.last_termination.as_ref().ok_or_else(|| {
                    ProviderError::NotFound(format!(
                        "previous terminated container {container} in pod {id} not found"
                    ))
                })?;
                last.started_at
            } else {
                started_at(&c.state)
            }
        };
        let mut line = format!("{container} is running in the memory provider\n");
        if opts.timestamps {
            line = format!(
                "{}{line}",
                vk_domain::logs::timestamp_prefix(written.unwrap_or(self.started))
            );
        }
        let shown = opts.stream != LogStream::Stderr
            && opts.tail_lines != Some(0)
            && opts.since.is_none_or(|since| written.is_some_and(|w| w >= since));
        let mut bytes = if shown { line.into_bytes() } else { Vec::new() };
        if let Some(limit) = opts.limit_bytes {
            bytes.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        Ok(Box::pin(futures::stream::iter([Ok(Bytes::from(bytes))])))
    }
}

impl StatsProvider for MemoryProvider {
    /// Each running container's synthetic usage (see the module documentation); the node's is
    /// the sum of its pods', with what is left of the configured memory as available.
    async fn usage(&self) -> Result<Usage, ProviderError> {
        let now = Timestamp::now();
        let st = self.state();
        let mut pods = Vec::new();
        for entry in st.pods.values() {
            let Some(sandbox) = entry.runtime.sandbox.as_ref().filter(|s| !s.is_terminal()) else {
                continue;
            };
            let containers = entry
                .usage
                .iter()
                .filter_map(|(name, nano_cores, bytes)| {
                    let status = sandbox.containers.get(name)?;
                    let ContainerState::Running { started_at } = status.state else { return None };
                    let since = started_at
                        .map_or(0, |s| now.duration_since(s).as_nanos().max(0).unsigned_abs());
                    let cumulative = u128::from(*nano_cores).saturating_mul(since) / 1_000_000_000;
                    Some(ContainerUsage {
                        name: name.clone(),
                        start_time: started_at,
                        cpu: Some(CpuSample {
                            at: now,
                            nano_cores: *nano_cores,
                            cumulative_nanos: Some(u64::try_from(cumulative).unwrap_or(u64::MAX)),
                        }),
                        memory: Some(MemorySample {
                            at: now,
                            working_set_bytes: *bytes,
                            rss_bytes: *bytes,
                            usage_bytes: *bytes,
                            available_bytes: None,
                        }),
                    })
                })
                .collect();
            pods.push(PodUsage {
                key: entry.runtime.owner.key.clone(),
                uid: entry.runtime.owner.uid.clone(),
                start_time: sandbox.created_at,
                containers,
            });
        }
        drop(st);
        let containers = || pods.iter().flat_map(|p| &p.containers);
        let nano_cores = containers().filter_map(|c| c.cpu.as_ref()).map(|c| c.nano_cores).sum();
        let cumulative = containers().filter_map(|c| c.cpu.as_ref()?.cumulative_nanos).sum::<u64>();
        let bytes: u64 =
            containers().filter_map(|c| c.memory.as_ref()).map(|m| m.working_set_bytes).sum();
        let node = NodeUsage {
            start_time: Some(self.started),
            cpu: Some(CpuSample { at: now, nano_cores, cumulative_nanos: Some(cumulative) }),
            memory: Some(MemorySample {
                at: now,
                working_set_bytes: bytes,
                rss_bytes: bytes,
                usage_bytes: bytes,
                available_bytes: Some(self.config.capacity.memory_bytes.saturating_sub(bytes)),
            }),
        };
        Ok(Usage { node, pods })
    }
}

impl NodeProvider for MemoryProvider {
    /// The configured capacity, always (the backend is this process, so it is always reachable).
    async fn capacity(&self) -> Result<NodeCapacity, ProviderError> {
        Ok(self.config.capacity)
    }

    /// `memory://<this crate's version>`.
    async fn runtime_version(&self) -> Result<String, ProviderError> {
        Ok(format!("memory://{}", env!("CARGO_PKG_VERSION")))
    }

    fn version_name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;
    use serde_json::json;
    use vk_domain::inputs::Inputs;
    use vk_domain::k8s_openapi::api::core::v1::Pod;

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
        assert_eq!(
            read(LogOptions { tail_lines: Some(0), ..Default::default() }).await.unwrap(),
            ""
        );
        assert_eq!(
            read(LogOptions { stream: LogStream::Stderr, ..Default::default() }).await.unwrap(),
            ""
        );
        let future = Timestamp::now() + vk_domain::jiff::SignedDuration::from_secs(60);
        assert_eq!(
            read(LogOptions { since: Some(future), ..Default::default() }).await.unwrap(),
            ""
        );
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
                },
                pods: Some(30),
            }
        );
        let partial = parse_upstream_mock_config("vk", r#"{"vk": {"cpu": 2}}"#).unwrap();
        assert_eq!((partial.capacity.cpu_millis, partial.capacity.memory_bytes), (2000, 100 << 30));
        let absent = parse_upstream_mock_config("elsewhere", json).unwrap();
        assert_eq!(
            absent,
            UpstreamMockConfig { capacity: MemoryConfig::DEFAULT_CAPACITY, pods: None }
        );
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
}
