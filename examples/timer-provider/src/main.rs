//! A provider on `vk-ports` alone (README: "Write your own provider"): each container "runs" for
//! the seconds in annotation `example.vk/run-seconds` (1 to 86400, else 10), exits 0, and the pod
//! Succeeds; a stop ends it sooner with 143 (SIGTERM). Nothing is pushed (no `changes`): an end is
//! written at the next list (`--status-interval`). Flags are the kubelet's alone (`NodeOnly`).
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use vk_app::config::{Loaded, NodeOnly};
use vk_ports::ProviderError;
use vk_ports::vk_domain::runtime::WorkloadId;
use vk_ports::vk_domain::{jiff::SignedDuration, jiff::Timestamp, node::NodeCapacity, runtime::*};
use vk_ports::vk_domain::{pod::PodKey, pod::RestartPolicy, workload::WorkloadSpec};
use vk_ports::{NodeProvider, PodNetwork, PodProvider, PodStreams, ProbeTarget, StatsProvider};

struct Timed {
    owner: PodOwner,
    containers: Vec<String>,
    start: Timestamp,
    end: Timestamp,
    stopped: Option<Timestamp>,
}

/// The pod as it stands at `now`: a pure function of its record and the clock.
fn view(t: &Timed, now: Timestamp) -> RuntimePod {
    let (code, finished) = match t.stopped {
        Some(at) if at < t.end => (143, at),
        _ => (0, t.end),
    };
    let (state, sandbox) = match now < finished {
        true => (ContainerState::Running { started_at: Some(t.start) }, SandboxState::Running),
        false => (
            ContainerState::Terminated(Termination {
                exit_code: code,
                signal: (code == 143).then_some(15),
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: None,
                started_at: Some(t.start),
                finished_at: Some(finished),
            }),
            if code == 0 { SandboxState::Succeeded } else { SandboxState::Failed },
        ),
    };
    let status = ContainerRuntimeStatus { state, ..Default::default() };
    let sandbox = Sandbox {
        id: t.owner.uid.clone(),
        state: sandbox,
        created_at: Some(t.start),
        pod_ip: None,
        host_ip: None,
        containers: t.containers.iter().map(|c| (c.clone(), status.clone())).collect(),
        message: None,
        ports: Default::default(),
        prepared: None,
    };
    let (id, stopping) = (t.owner.key.to_string(), t.stopped.is_some());
    RuntimePod {
        owner: t.owner.clone(),
        id: id.into(),
        stopping,
        sandbox: Some(sandbox),
        images: Default::default(),
        unplaced: None,
    }
}

struct Timers {
    node: String,
    pods: Mutex<HashMap<String, Timed>>,
}

impl Timers {
    fn pods(&self) -> MutexGuard<'_, HashMap<String, Timed>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PodProvider for Timers {
    async fn create_pod(&self, spec: &WorkloadSpec) -> Result<(), ProviderError> {
        if !spec.init_containers.is_empty() || spec.restart_policy == RestartPolicy::Always {
            let why = "timers end: no init containers, and restartPolicy Never or OnFailure";
            return Err(ProviderError::InvalidInput(why.into()));
        }
        let seconds = spec.annotations.get("example.vk/run-seconds").and_then(|s| s.parse().ok());
        let seconds: u64 = seconds.filter(|s| (1..=86400).contains(s)).unwrap_or(10);
        let (key, id) = (spec.key.clone(), spec.key.to_string());
        let owner = PodOwner { key: key.clone(), uid: spec.uid.clone(), node: self.node.clone() };
        let (containers, start) =
            (spec.containers.iter().map(|c| c.name.clone()), Timestamp::now());
        let end = start + SignedDuration::from_secs(seconds.cast_signed());
        let timed = Timed { owner, containers: containers.collect(), start, end, stopped: None };
        if self.pods().entry(id).or_insert(timed).owner.uid != spec.uid {
            return Err(ProviderError::Conflict(format!("{key} has another pod's timer")));
        }
        Ok(())
    }

    async fn refresh_files(&self, _: &WorkloadSpec) -> Result<(), ProviderError> {
        Ok(()) // Timers have no files.
    }

    async fn start_container(&self, _: &WorkloadId, _: &str) -> Result<(), ProviderError> {
        Ok(()) // Timers have no init containers to hold.
    }

    async fn stop_pod(&self, id: &WorkloadId) -> Result<(), ProviderError> {
        let now = Timestamp::now();
        let mut pods = self.pods();
        let timer =
            pods.get_mut(id.as_str()).ok_or_else(|| ProviderError::NotFound(id.to_string()))?;
        timer.stopped.get_or_insert(now);
        Ok(())
    }

    async fn kill_pod(&self, id: &WorkloadId) -> Result<(), ProviderError> {
        self.stop_pod(id).await
    }

    async fn purge_pod(&self, id: &WorkloadId) -> Result<(), ProviderError> {
        self.pods()
            .remove(id.as_str())
            .map(drop)
            .ok_or_else(|| ProviderError::NotFound(id.to_string()))
    }

    async fn get_pod(&self, key: &PodKey) -> Result<Option<RuntimePod>, ProviderError> {
        Ok(self.pods().get(&key.to_string()).map(|t| view(t, Timestamp::now())))
    }

    async fn list_pods(&self) -> Result<Vec<RuntimePod>, ProviderError> {
        Ok(self.pods().values().map(|t| view(t, Timestamp::now())).collect())
    }
}

impl ProbeTarget for Timers {
    async fn exec(&self, _: &WorkloadId, _: &str, _: &[String]) -> Result<i32, ProviderError> {
        Err(ProviderError::Unsupported("timers run no commands".into()))
    }

    async fn restart_container(&self, _: &WorkloadId, _: &str) -> Result<(), ProviderError> {
        Err(ProviderError::Unsupported("timers cannot be restarted".into()))
    }
}

// Timers have no network, no output and no usage: the defaults answer `Unsupported`.
impl PodNetwork for Timers {}
impl PodStreams for Timers {}
impl StatsProvider for Timers {}

impl NodeProvider for Timers {
    async fn capacity(&self) -> Result<NodeCapacity, ProviderError> {
        Ok(NodeCapacity { cpu_millis: 4000, memory_bytes: 8 << 30, ..Default::default() })
    }
    async fn runtime_version(&self) -> Result<String, ProviderError> {
        Ok(concat!("timer://", env!("CARGO_PKG_VERSION")).into())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let loaded: Loaded<NodeOnly> = match vk_app::config::load_from_process() {
        Ok(loaded) => loaded,
        Err(e) => return Ok(e.report("vk-example-provider")),
    };
    vk_app::init_tracing(&loaded.args.node);
    // One provider per node: the settings' node, or each `[[nodes]]` entry of `--config`.
    let nodes = loaded
        .each_node()
        .into_iter()
        .map(|NodeOnly { node }| {
            let timers = Timers { node: node.nodename.clone(), pods: Mutex::default() };
            (node.clone(), Arc::new(timers))
        })
        .collect();
    vk_app::run_nodes(nodes, &loaded.rules, vk_app::shutdown_on_signals()).await?;
    Ok(std::process::ExitCode::SUCCESS)
}
