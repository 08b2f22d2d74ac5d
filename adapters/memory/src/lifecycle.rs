//! A pod's life in memory ([`PodProvider`], [`ProbeTarget`], [`PodNetwork`]): Running the
//! moment it is created, stopped or killed at once, restarted in place, purged.

use std::net::Ipv4Addr;

use futures::{Stream, StreamExt as _};
use tokio::sync::broadcast;
use vk_domain::jiff::Timestamp;
use vk_domain::pod::PodKey;
use vk_domain::runtime::WorkloadId;
use vk_domain::runtime::{
    ContainerRuntimeStatus, ContainerState, PodOwner, RuntimePod, Sandbox, SandboxState,
    Termination,
};
use vk_domain::workload::{ContainerSpec, WorkloadSpec};
use vk_ports::{Change, PodNetwork, PodProvider, ProbeTarget, ProviderError};

use crate::{Entry, MIB, MemoryProvider, key_of, not_found};

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

pub(crate) fn started_at(state: &ContainerState) -> Option<Timestamp> {
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
                unplaced: None,
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
