//! The Nomad backend: pods run as Nomad jobs ([`NomadProvider`] implements the provider ports).
//!
//! [`job`] and [`alloc`] are the pure translations (pod to job, allocation to runtime view);
//! [`client`] is the HTTP seam; this module sequences the calls.

pub mod alloc;
pub mod api;
pub mod client;
pub mod events;
pub mod exec;

#[cfg(test)]
mod fake;
pub mod job;
pub mod logs;
pub mod policy;
pub mod stats;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use futures::StreamExt as _;
use reqwest::Method;
use serde_json::json;
use tracing::{debug, info, warn};
use vk_domain::jiff::Timestamp;
use vk_domain::logs::LogOptions;
use vk_domain::node::NodeCapacity;
use vk_domain::pod::PodKey;
use vk_domain::runtime::WorkloadId;
use vk_domain::runtime::{ContainerState, RuntimePod, SandboxState};
use vk_domain::stats::{PodUsage, Usage};
use vk_domain::workload::WorkloadSpec;
use vk_ports::{
    ByteStream, Change, Duplex, ExecIo, NodeProvider, PodNetwork, PodProvider, PodStreams,
    ProbeTarget, ProviderError, StatsProvider,
};

use self::api::{Allocation, Job, JobStub, NodeStub, RegisterRequest, RegisterResponse, Variable};
use self::client::NomadClient;
use self::job::{JobRef, JobSettings};

pub use self::client::{ClientConfig, ConfigError};

/// MHz per core assumed until the Nomad nodes were read (Nomad's own fallback CPU speed is lower;
/// this only matters for pods created before the first node read, which the app avoids).
pub const DEFAULT_MHZ_PER_CORE: u64 = 1000;

/// What the provider needs beside the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    /// How to reach Nomad.
    pub client: ClientConfig,
    /// The Kubernetes node name recorded on, and required of, every job this node touches.
    pub node_name: String,
    /// Job ID prefix.
    pub job_prefix: String,
    /// Datacenters jobs may run in.
    pub datacenters: Vec<String>,
    /// Task driver for pods that do not choose one by annotation.
    pub default_driver: String,
    /// Annotation choosing a pod's driver, read before `nomad.hashicorp.com/driver`.
    pub driver_annotation: String,
    /// What pods may choose by annotation, per Kubernetes namespace.
    pub policy: policy::NomadPolicy,
    /// Directory on the Nomad clients holding `Localhost` seccomp profiles.
    pub seccomp_profile_root: String,
    /// Image of the task preparing docker pods' emptyDir directories
    /// ([`job::JobSettings::volume_setup_image`]); `None`: no such task.
    pub volume_setup_image: Option<String>,
}

/// Runs pods as Nomad jobs and reports the Nomad cluster as one node.
#[derive(Debug)]
pub struct NomadProvider {
    client: NomadClient,
    settings: JobSettings,
    cluster: RwLock<ClusterInfo>,
    /// What was last written for each job: its images and Variable items. A refresh that computes
    /// the same makes no request at all.
    written: std::sync::Mutex<HashMap<String, Written>>,
    /// The pod of each job this node owns, as last seen (for the event stream).
    keys: std::sync::Arc<RwLock<HashMap<String, PodKey>>>,
    /// The own address (`NetworkStatus.Address`) of each bridge- or CNI-mode allocation seen, by
    /// allocation ID: set once by the client when it makes the network, so read once from the
    /// full allocation (the list stub leaves it out); empty for one that ended without an
    /// address. Bounded; an evicted entry is read again.
    addresses: moka::sync::Cache<String, String>,
    /// Whether task `(job ID, task)` runs on the docker driver, once read from the job (for
    /// [`NomadProvider::exec`]'s confirmation). Bounded like `addresses`.
    docker_tasks: moka::sync::Cache<(String, String), bool>,
    /// The termination message of each container instance that ended, by (allocation ID, task,
    /// finish time): read once ([`NomadProvider::termination_message`]); `None` for a task with
    /// no message file (raw_exec, exec). Bounded like `addresses`.
    termination_messages: moka::sync::Cache<(String, String, String), Option<Option<String>>>,
    /// Where each running pod is, by workload ID, as its last status read found it: probes and
    /// port-forward dial from it, exec and restarts address its allocation, without listing the
    /// job's allocations again (a list filters every allocation of the cluster on the server).
    /// A status read that finds the pod not running forgets it, and so does a failed dial or
    /// exec; a miss lists. Bounded like `addresses`.
    running: moka::sync::Cache<String, Running>,
}

/// A running pod's place ([`NomadProvider::running`]).
#[derive(Debug, Clone)]
struct Running {
    /// The allocation's ID.
    alloc: String,
    /// The pod's IP as its status reports it: the allocation's own address in bridge and CNI
    /// modes, else the node's.
    ip: Option<String>,
    /// Container port → host port, where Nomad mapped one.
    ports: BTreeMap<u16, u16>,
}

/// The most of a termination message file that is read (the kubelet's `maxMsgSize`).
const TERMINATION_MESSAGE_BYTES: u64 = 4096;

/// Allocation addresses kept ([`NomadProvider::addresses`]): beyond the pods of a large node.
const ADDRESS_ENTRIES: u64 = 16_384;

#[derive(Clone, PartialEq)]
struct Written {
    images: BTreeMap<String, String>,
    items: BTreeMap<String, String>,
}

impl Running {
    /// Where allocation `a`, whose sandbox is `sandbox`, runs.
    fn of(a: &Allocation, sandbox: &vk_domain::runtime::Sandbox) -> Self {
        Self {
            alloc: a.id.clone(),
            ip: sandbox.pod_ip.clone().or_else(|| sandbox.host_ip.clone()),
            ports: sandbox.ports.clone(),
        }
    }
}

/// The items are the pod's Variable: keys only.
impl std::fmt::Debug for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Written")
            .field("images", &self.images)
            .field("items", &api::RedactedItems(&self.items))
            .finish()
    }
}

/// An update of a running pod: `spec` as a job, the job as registered, and what `spec` writes.
struct Update {
    pod_job: job::PodJob,
    existing: Job,
    now: Written,
}

fn written_of(spec: &WorkloadSpec, pod_job: &job::PodJob) -> Written {
    Written {
        images: spec.all_containers().map(|c| (c.name.clone(), c.image.clone())).collect(),
        items: pod_job.items.clone(),
    }
}

#[derive(Debug, Default)]
struct ClusterInfo {
    /// Where each job lives, as last seen.
    locations: HashMap<String, JobRef>,
    mhz_per_core: Option<u64>,
    node_ips: HashMap<String, String>,
    version: Option<String>,
}

impl NomadProvider {
    /// Builds the provider; nothing is sent to Nomad yet.
    ///
    /// # Errors
    /// [`ConfigError`] when the client configuration is unusable.
    pub fn new(cfg: ProviderConfig) -> Result<Self, ConfigError> {
        let client = NomadClient::new(&cfg.client)?;
        let settings = JobSettings {
            prefix: cfg.job_prefix,
            node_name: cfg.node_name,
            namespace: client.namespace().map(str::to_owned),
            region: client.region().map(str::to_owned),
            datacenters: cfg.datacenters,
            default_driver: cfg.default_driver,
            driver_annotation: cfg.driver_annotation,
            mhz_per_core: DEFAULT_MHZ_PER_CORE,
            policy: std::sync::Arc::new(cfg.policy),
            seccomp_profile_root: cfg.seccomp_profile_root,
            volume_setup_image: cfg.volume_setup_image,
        };
        Ok(Self {
            client,
            settings,
            cluster: RwLock::new(ClusterInfo::default()),
            written: std::sync::Mutex::new(HashMap::new()),
            keys: std::sync::Arc::default(),
            addresses: moka::sync::Cache::new(ADDRESS_ENTRIES),
            docker_tasks: moka::sync::Cache::new(ADDRESS_ENTRIES),
            termination_messages: moka::sync::Cache::new(ADDRESS_ENTRIES),
            running: moka::sync::Cache::new(ADDRESS_ENTRIES),
        })
    }

    /// The termination message of `task`, which ended at `finished` with `exit_code`, in
    /// allocation `a`, as the kubelet makes it: the content of its message file
    /// ([`job::TERMINATION_LOG`], at most 4096 bytes), else, with `fallback`
    /// (`FallbackToLogsOnError`) and a non-zero exit, the end of its log (80 lines, 2048 bytes at
    /// most). `None` (keep the event's message) when the task has no message file (raw_exec,
    /// exec) or Nomad cannot be read (tried again at the next status read); `Some(None)` for an
    /// empty message.
    async fn termination_message(
        &self,
        client: &NomadClient,
        a: &Allocation,
        task: &str,
        (finished, exit_code, fallback): (String, i32, bool),
    ) -> Option<Option<String>> {
        let key = (a.id.clone(), task.to_owned(), finished);
        if let Some(m) = self.termination_messages.get(&key) {
            return m;
        }
        let path = format!("{task}/{}", job::TERMINATION_LOG);
        let limit = TERMINATION_MESSAGE_BYTES.to_string();
        let req = client.request(Method::GET, &["v1", "client", "fs", "readat", &a.id]).query(&[
            ("path", path.as_str()),
            ("offset", "0"),
            ("limit", limit.as_str()),
        ]);
        let text = match client.send(req).await {
            Ok(resp) => match resp.bytes().await {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => {
                    debug!(alloc = %a.id, task, error = %e, "reading the termination message");
                    return None;
                }
            },
            Err(ProviderError::NotFound(_)) => {
                self.termination_messages.insert(key, None);
                return None;
            }
            Err(e) => {
                debug!(alloc = %a.id, task, error = %e, "reading the termination message");
                return None;
            }
        };
        let mut message = Some(text).filter(|t| !t.is_empty());
        if message.is_none() && fallback && exit_code != 0 {
            let opts = LogOptions {
                tail_lines: Some(80),
                limit_bytes: Some(2048),
                ..LogOptions::default()
            };
            let target =
                logs::Target { client: client.clone(), alloc: a.clone(), task: task.to_owned() };
            // The task just ended: its output may still be on its way to the log files.
            logs::settle_output(&target, Duration::from_millis(200), Duration::from_secs(5)).await;
            let mut out = Vec::new();
            if let Ok(mut stream) = logs::logs(target, &opts).await {
                while let Some(Ok(chunk)) = stream.next().await {
                    out.extend_from_slice(&chunk);
                }
            }
            message = Some(String::from_utf8_lossy(&out).into_owned()).filter(|t| !t.is_empty());
        }
        self.termination_messages.insert(key, Some(message.clone()));
        Some(message)
    }

    /// Whether `task` of job `r` runs on the docker driver (read from the job once, then cached;
    /// `true` when the job cannot be read, so that a success is confirmed rather than trusted).
    async fn on_docker(&self, r: &JobRef, task: &str) -> bool {
        let key = (r.id.clone(), task.to_owned());
        if let Some(d) = self.docker_tasks.get(&key) {
            return d;
        }
        let Ok(Some(job)) = self.job(r).await else { return true };
        for t in job.task_groups.iter().flat_map(|g| &g.tasks) {
            self.docker_tasks.insert((r.id.clone(), t.name.clone()), t.driver == "docker");
        }
        self.docker_tasks.get(&key).unwrap_or(true)
    }

    /// The own address of allocation `a` when its group network gives it one (bridge, CNI), from
    /// the cache or the full allocation (`GET /v1/allocation/<id>`); `None` in host mode, before
    /// the client has made the network, or when Nomad cannot be read (logged; the next status
    /// read tries again).
    async fn own_address(&self, client: &NomadClient, a: &Allocation) -> Option<String> {
        if !job::own_address(alloc::network_mode(a)) {
            return None;
        }
        if let Some(ip) = self.addresses.get(&a.id) {
            return Some(ip).filter(|ip| !ip.is_empty());
        }
        let full: Allocation = match client.get(&["v1", "allocation", &a.id], &[]).await {
            Ok(full) => full,
            Err(e) => {
                debug!(alloc = %a.id, error = %e, "reading the allocation's network status");
                return None;
            }
        };
        let ip = full.network_status.map(|n| n.address).unwrap_or_default();
        // An address, once set, stays; an allocation that ended without one never gets one
        // (remembered as empty, so its pod's status reads do not ask again).
        let terminal = matches!(full.client_status.as_str(), "complete" | "failed" | "lost");
        if !ip.is_empty() || terminal {
            self.addresses.insert(a.id.clone(), ip.clone());
        }
        Some(ip).filter(|ip| !ip.is_empty())
    }

    /// The job ID used for `key`.
    pub fn job_id(&self, key: &PodKey) -> String {
        job::job_id(&self.settings.prefix, key)
    }

    /// The client for where job `r` lives.
    fn at(&self, r: &JobRef) -> NomadClient {
        self.client.at(r.namespace.as_deref(), r.region.as_deref())
    }

    /// The job as Nomad holds it, `None` if there is none.
    ///
    /// # Errors
    /// `Unavailable` when Nomad cannot be reached.
    pub async fn job(&self, r: &JobRef) -> Result<Option<Job>, ProviderError> {
        match self.at(r).get::<Job>(&["v1", "job", &r.id], &[]).await {
            Ok(j) => Ok(Some(j)),
            Err(ProviderError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn settings(&self) -> JobSettings {
        let mut s = self.settings.clone();
        if let Some(m) = read(&self.cluster).mhz_per_core {
            s.mhz_per_core = m;
        }
        s
    }

    async fn nodes(&self) -> Result<Vec<NodeStub>, ProviderError> {
        let nodes: Vec<NodeStub> =
            self.client.get(&["v1", "nodes"], &[("resources", "true")]).await?;
        {
            let mut info = write(&self.cluster);
            info.mhz_per_core = mhz_per_core(&nodes).or(info.mhz_per_core);
            info.node_ips = nodes.iter().map(|n| (n.id.clone(), n.address.clone())).collect();
            info.version = nodes.iter().map(|n| n.version.clone()).find(|v| !v.is_empty());
        }
        Ok(nodes)
    }

    /// Allocations of the jobs whose ID starts with `job_prefix` (or equals `exact`), with
    /// their allocated resources (for the IP).
    async fn allocations(
        &self,
        client: &NomadClient,
        exact: Option<&str>,
    ) -> Result<Vec<Allocation>, ProviderError> {
        let filter = match exact {
            Some(id) => format!("JobID == {}", quote(id)),
            None => format!(
                "JobID matches {}",
                quote(&format!("^{}", regex_escape(&self.settings.prefix)))
            ),
        };
        client.get(&["v1", "allocations"], &[("resources", "true"), ("filter", &filter)]).await
    }

    async fn host_ip(&self, node_id: &str) -> Option<String> {
        let known = read(&self.cluster).node_ips.get(node_id).cloned();
        if known.is_some() {
            return known;
        }
        if let Err(e) = self.nodes().await {
            debug!(error = %e, "reading Nomad nodes for a host IP");
        }
        read(&self.cluster).node_ips.get(node_id).cloned()
    }

    async fn runtime_pod(
        &self,
        at: &JobRef,
        stop: bool,
        meta: &BTreeMap<String, String>,
        allocs: &[&Allocation],
    ) -> Option<RuntimePod> {
        let owner = alloc::owner(meta, &self.settings.node_name)?;
        {
            let mut keys = write(&self.keys);
            keys.insert(at.id.clone(), owner.key.clone());
        }
        let bases = alloc::restart_bases(meta);
        let sandbox = match alloc::current_for(allocs.iter().copied(), meta) {
            Some(a) => {
                let client = self.at(at);
                let host_ip = self.host_ip(&a.node_id).await;
                let address = self.own_address(&client, a).await;
                let mut sb = alloc::sandbox(a, host_ip, address);
                if a.client_status == "running" && !stop {
                    self.running.insert(at.encode(), Running::of(a, &sb));
                } else {
                    self.running.invalidate(&at.encode());
                }
                for (name, c) in &mut sb.containers {
                    c.restart_count =
                        c.restart_count.saturating_add(bases.get(name).copied().unwrap_or(0));
                    // A container that ran and ended: its message is the kubelet's.
                    if let ContainerState::Terminated(t) = &mut c.state
                        && t.reason != "StartError"
                    {
                        let finished = t.finished_at.map(|f| f.to_string()).unwrap_or_default();
                        let fallback = meta
                            .get(&format!("{}{name}", job::META_TERMINATION_FALLBACK_PREFIX))
                            .is_some_and(|v| v == "true");
                        let ended = (finished, t.exit_code, fallback);
                        if let Some(m) = self.termination_message(&client, a, name, ended).await {
                            t.message = m;
                        }
                    }
                }
                Some(sb)
            }
            None => {
                self.running.invalidate(&at.encode());
                None
            }
        };
        Some(RuntimePod {
            owner,
            id: at.encode().into(),
            stopping: stop,
            sandbox,
            images: alloc::images(meta),
        })
    }

    /// Registers `job` after writing the pod's Variable, when it has items.
    async fn register(&self, pod_job: &job::PodJob) -> Result<(), ProviderError> {
        let job = &pod_job.job;
        let client = self.at(&pod_job.at);
        if !pod_job.items.is_empty() {
            self.put_variable(&client, &job::variable_path(&job.id), &pod_job.items, false).await?;
        }
        // A job Nomad's validators refuse is `InvalidInput` (`client::status_error`).
        let resp: RegisterResponse =
            client.send_json(Method::PUT, &["v1", "jobs"], &[], &RegisterRequest { job }).await?;
        if !resp.warnings.is_empty() {
            warn!(job = %job.id, warnings = %resp.warnings, "Nomad registered the job with warnings");
        }
        debug!(job = %job.id, eval = %resp.eval_id, "job registered");
        Ok(())
    }

    /// The Variable at `path`, `None` when there is none.
    async fn variable(
        &self,
        client: &NomadClient,
        path: &str,
    ) -> Result<Option<Variable>, ProviderError> {
        let mut segs = vec!["v1", "var"];
        segs.extend(path.split('/'));
        match client.get::<Variable>(&segs, &[]).await {
            Ok(v) => Ok(Some(v)),
            Err(ProviderError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the Variable at `path`; with `create_only`, an existing one is left as it is.
    async fn put_variable(
        &self,
        client: &NomadClient,
        path: &str,
        items: &BTreeMap<String, String>,
        create_only: bool,
    ) -> Result<(), ProviderError> {
        let mut segs = vec!["v1", "var"];
        segs.extend(path.split('/'));
        let body = Variable {
            namespace: client.namespace().unwrap_or_default().to_owned(),
            path: path.to_owned(),
            items: items.clone(),
            modify_index: 0,
        };
        let query: &[(&str, &str)] = if create_only { &[("cas", "0")] } else { &[] };
        match client.send_json::<_, serde_json::Value>(Method::PUT, &segs, query, &body).await {
            Ok(_) => Ok(()),
            Err(ProviderError::Conflict(_)) if create_only => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the pod's Variable and its gates, if any.
    async fn delete_variables(&self, r: &JobRef) -> Result<(), ProviderError> {
        let client = self.at(r);
        let prefix = job::variable_path(&r.id);
        let vars: Vec<Variable> = client.get(&["v1", "vars"], &[("prefix", &prefix)]).await?;
        let gate_prefix = format!("{prefix}/");
        for v in vars.iter().filter(|v| v.path == prefix || v.path.starts_with(&gate_prefix)) {
            let mut segs = vec!["v1", "var"];
            segs.extend(v.path.split('/'));
            match client.call_empty(Method::DELETE, &segs, &[]).await {
                Ok(_) | Err(ProviderError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The ID of the allocation that stands for job `r` now, if it runs.
    async fn running_alloc(&self, r: &JobRef) -> Result<String, ProviderError> {
        Ok(self.located(r).await?.alloc)
    }

    /// Where job `r`'s pod runs: as its last status read found it ([`NomadProvider::running`]),
    /// else from a list of its allocations.
    ///
    /// # Errors
    /// `NotFound` when no allocation of it runs; `Unavailable` when Nomad cannot be reached.
    async fn located(&self, r: &JobRef) -> Result<Running, ProviderError> {
        if let Some(known) = self.running.get(&r.encode()) {
            return Ok(known);
        }
        let allocs = self.allocations(&self.at(r), Some(&r.id)).await?;
        let Some(a) = alloc::current(allocs.iter()).filter(|a| a.client_status == "running") else {
            return Err(ProviderError::NotFound(format!(
                "pod {:?} has no running allocation",
                self.pod_name(&r.id)
            )));
        };
        let host_ip = self.host_ip(&a.node_id).await;
        let address = self.own_address(&self.at(r), a).await;
        let found = Running::of(a, &alloc::sandbox(a, host_ip, address));
        self.running.insert(r.encode(), found.clone());
        Ok(found)
    }

    /// The allocation that stands for job `r` now, whatever its status.
    async fn current_alloc(&self, r: &JobRef) -> Result<Allocation, ProviderError> {
        let allocs = self.allocations(&self.at(r), Some(&r.id)).await?;
        alloc::current(allocs.iter())
            .cloned()
            .ok_or_else(|| ProviderError::NotFound(format!("no allocation of job {}", r.id)))
    }

    /// The pod of job `job` as last seen (`namespace/name`), else the job ID, for messages.
    fn pod_name(&self, job: &str) -> String {
        let key = read(&self.keys).get(job).cloned();
        key.map_or_else(|| job.to_owned(), |k| k.to_string())
    }

    /// Which allocation holds the output `previous=true` asks for: the current one when the task
    /// restarted in place (restarts append to the same files, so this is its whole log, the
    /// running instance's output included), else the allocation the current one replaced
    /// (`PreviousAllocation`, set when Nomad rescheduled or replaced it for a new job version).
    async fn previous_alloc(
        &self,
        client: &NomadClient,
        current: Allocation,
        container: &str,
    ) -> Result<Allocation, ProviderError> {
        let restarts =
            current.task_states.as_ref().and_then(|s| s.get(container)).map(|t| t.restarts);
        if restarts.unwrap_or(0) > 0 {
            return Ok(current);
        }
        let pod = self.pod_name(&current.job_id);
        let not_found = || {
            ProviderError::NotFound(format!(
                "previous terminated container {container:?} in pod {pod:?} not found"
            ))
        };
        let full: Allocation = client.get(&["v1", "allocation", &current.id], &[]).await?;
        if full.previous_allocation.is_empty() {
            return Err(not_found());
        }
        match client.get::<Allocation>(&["v1", "allocation", &full.previous_allocation], &[]).await
        {
            Ok(prev) if prev.task_states.as_ref().is_some_and(|s| s.contains_key(container)) => {
                Ok(prev)
            }
            Ok(_) | Err(ProviderError::NotFound(_)) => Err(not_found()),
            Err(e) => Err(e),
        }
    }

    /// The regions to look in: all that Nomad knows (`/v1/regions`).
    async fn regions(&self) -> Result<Vec<String>, ProviderError> {
        self.client.get(&["v1", "regions"], &[]).await
    }

    /// Where job `id` lives: remembered from the last list or create, else searched for in every
    /// namespace of every region.
    async fn locate(&self, id: &str) -> Result<Option<JobRef>, ProviderError> {
        if let Some(r) = read(&self.cluster).locations.get(id).cloned() {
            return Ok(Some(r));
        }
        for region in self.regions().await? {
            let c = self.client.at(Some("*"), Some(&region));
            let jobs: Vec<JobStub> = c.get(&["v1", "jobs"], &[("prefix", id)]).await?;
            if let Some(j) = jobs.into_iter().find(|j| j.id == id) {
                let r = JobRef {
                    id: id.to_owned(),
                    namespace: Some(j.namespace).filter(|n| !n.is_empty()),
                    region: Some(region),
                };
                self.remember_location(&r);
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    fn remember_written(&self, id: &str, w: Written) {
        {
            let mut m = lock(&self.written);
            m.insert(id.to_owned(), w);
        }
    }

    /// What an update of a running pod starts from: `spec` as a job, and the job as registered
    /// (owned by this node); `None` when this very `spec` was written last.
    async fn update_of(&self, spec: &WorkloadSpec) -> Result<Option<Update>, ProviderError> {
        let pod_job = job::to_job(spec, &self.settings())
            .map_err(|e| ProviderError::InvalidInput(e.to_string()))?;
        let now = written_of(spec, &pod_job);
        if self.last_written(&pod_job.at.id).as_ref() == Some(&now) {
            return Ok(None);
        }
        let existing = self.owned(&pod_job.at).await?;
        Ok(Some(Update { pod_job, existing, now }))
    }

    fn last_written(&self, id: &str) -> Option<Written> {
        lock(&self.written).get(id).cloned()
    }

    fn remember_location(&self, r: &JobRef) {
        {
            let mut c = write(&self.cluster);
            c.locations.insert(r.id.clone(), r.clone());
        }
    }

    /// The pod of job `id`, if the job exists and its Meta names pod `key`.
    async fn get_job_pod(
        &self,
        key: &PodKey,
        id: &str,
    ) -> Result<Option<RuntimePod>, ProviderError> {
        let Some(r) = self.locate(id).await? else { return Ok(None) };
        let Some(job) = self.job(&r).await? else {
            // Gone since it was last seen: forget where it was.
            {
                let mut c = write(&self.cluster);
                c.locations.remove(id);
            }
            return Ok(None);
        };
        if alloc::owner(&job.meta, &self.settings.node_name).is_some_and(|o| o.key != *key) {
            return Ok(None);
        }
        let allocs = self.allocations(&self.at(&r), Some(id)).await?;
        let refs: Vec<&Allocation> = allocs.iter().collect();
        Ok(self.runtime_pod(&r, job.stop, &job.meta, &refs).await)
    }

    /// Only jobs this node owns may be changed: anything else is refused with `Conflict`.
    async fn owned(&self, r: &JobRef) -> Result<Job, ProviderError> {
        let id = &r.id;
        let job = self.job(r).await?.ok_or_else(|| ProviderError::NotFound(format!("job {id}")))?;
        if alloc::owner(&job.meta, &self.settings.node_name).is_none() {
            return Err(ProviderError::Conflict(format!(
                "job {id} is not owned by node {}",
                self.settings.node_name
            )));
        }
        Ok(job)
    }
}

/// What the node offers: the sum over the Nomad nodes that are `ready`, `eligible` and not
/// draining, of their cores (in millicores, less the share of CPU Nomad reserves), memory and disk
/// (MiB to bytes, less what Nomad reserves).
pub fn capacity_of(nodes: &[NodeStub]) -> NodeCapacity {
    let mut cap = NodeCapacity::default();
    for n in nodes.iter().filter(|n| usable(n)) {
        let Some(r) = &n.node_resources else { continue };
        let reserved = n.reserved_resources.clone().unwrap_or_default();
        let shares = u64::try_from(r.cpu.cpu_shares).unwrap_or(0).max(1);
        let free_shares = u64::try_from(r.cpu.cpu_shares - reserved.cpu.cpu_shares).unwrap_or(0);
        let mib = |v: i64| u64::try_from(v).unwrap_or(0) << 20;
        cap.cpu_millis += u64::from(r.cpu.total_cpu_cores) * 1000 * free_shares / shares;
        cap.memory_bytes += mib(r.memory.memory_mb - reserved.memory.memory_mb);
        cap.ephemeral_storage_bytes += mib(r.disk.disk_mb - reserved.disk.disk_mb);
    }
    cap
}

/// The Nomad nodes that make up this node: `ready`, `eligible` and not draining.
pub fn usable(n: &NodeStub) -> bool {
    n.status == "ready" && n.scheduling_eligibility == "eligible" && !n.drain
}

/// MHz per core over all nodes (total `CpuShares` / total cores), the factor that turns
/// millicores into Nomad's MHz; `None` when no node reports CPU.
pub fn mhz_per_core(nodes: &[NodeStub]) -> Option<u64> {
    let (shares, cores) =
        nodes.iter().filter_map(|n| n.node_resources.as_ref()).fold((0u64, 0u64), |(s, c), r| {
            (s + u64::try_from(r.cpu.cpu_shares).unwrap_or(0), c + u64::from(r.cpu.total_cpu_cores))
        });
    (cores > 0 && shares > 0).then(|| shares / cores)
}

fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

impl PodProvider for NomadProvider {
    async fn create_pod(&self, spec: &WorkloadSpec) -> Result<(), ProviderError> {
        let pod_job = job::to_job(spec, &self.settings())
            .map_err(|e| ProviderError::InvalidInput(e.to_string()))?;
        let job = &pod_job.job;
        if let Some(existing) = self.job(&pod_job.at).await? {
            match alloc::owner(&existing.meta, &self.settings.node_name) {
                None => {
                    return Err(ProviderError::Conflict(format!(
                        "Nomad job {} exists and is not owned by node {}",
                        job.id, self.settings.node_name
                    )));
                }
                // Another pod's job under the same ID: never replaced (job IDs of long names are
                // hashed; a collision must not let one pod take another's job).
                Some(o) if o.key != spec.key => {
                    return Err(ProviderError::Conflict(format!(
                        "Nomad job {} belongs to pod {}, not to {}",
                        job.id, o.key, spec.key
                    )));
                }
                Some(o) if o.uid == spec.uid && !existing.stop => {
                    debug!(job = %job.id, "job already registered");
                    self.remember_location(&pod_job.at);
                    return Ok(());
                }
                Some(_) => {
                    // A job of an older pod of the same name: its gates must not open the new
                    // pod's init containers.
                    self.delete_variables(&pod_job.at).await?;
                }
            }
        }
        // The data first (inside `register`): the job's templates wait for it.
        self.register(&pod_job).await?;
        self.remember_location(&pod_job.at);
        self.remember_written(&job.id, written_of(spec, &pod_job));
        {
            let mut keys = write(&self.keys);
            keys.insert(job.id.clone(), spec.key.clone());
        }
        Ok(())
    }

    async fn refresh_files(&self, spec: &WorkloadSpec) -> Result<(), ProviderError> {
        let Some(Update { pod_job, existing, now }) = self.update_of(spec).await? else {
            return Ok(());
        };
        let at = pod_job.at.clone();
        let id = at.id.clone();
        // An image change is `replace_images`' to make (it registers the job, Variable
        // included): the files are written here all the same, but `now` is not remembered as
        // written until the job is.
        let images_pending = !images_changed(spec, &existing.meta).is_empty();
        let client = self.at(&at);
        let path = job::variable_path(&id);
        let current = self.variable(&client, &path).await?.map(|v| v.items).unwrap_or_default();
        // Keys that disappeared (a key removed from a ConfigMap) stay, empty: the job's templates
        // still name them, and a file whose key is gone is emptied rather than left stale.
        let mut next = pod_job.items;
        for k in current.keys() {
            next.entry(k.clone()).or_default();
        }
        if next != current && !next.is_empty() {
            debug!(job = %id, "pod data changed; updating its Variable");
            self.put_variable(&client, &path, &next, false).await?;
        }
        if !images_pending {
            self.remember_written(&id, now);
        }
        Ok(())
    }

    async fn replace_images(&self, spec: &WorkloadSpec) -> Result<(), ProviderError> {
        let Some(Update { mut pod_job, existing, now }) = self.update_of(spec).await? else {
            return Ok(());
        };
        let at = pod_job.at.clone();
        let id = at.id.clone();
        let changed = images_changed(spec, &existing.meta);
        if changed.is_empty() {
            return Ok(());
        }
        // Nomad replaces the whole allocation when the job changes: every container that ran
        // restarts, and its restart count carries on from the old one.
        let mut bases = alloc::restart_bases(&existing.meta);
        let allocs = self.allocations(&self.at(&at), Some(&id)).await?;
        if let Some(a) = alloc::current(allocs.iter()) {
            for (name, ts) in a.task_states.iter().flatten() {
                let ran = ts.started_at.as_deref().is_some_and(|t| !t.starts_with("0001-"));
                let base = bases.entry(name.clone()).or_default();
                *base = base
                    .saturating_add(i32::try_from(ts.restarts).unwrap_or(i32::MAX))
                    .saturating_add(i32::from(ran));
            }
        }
        for (name, n) in bases {
            pod_job.job.meta.insert(format!("{}{name}", job::META_RESTARTS_PREFIX), n.to_string());
        }
        info!(job = %id, containers = ?changed, "image changed; registering the job again");
        self.register(&pod_job).await?;
        self.remember_written(&id, now);
        Ok(())
    }

    async fn start_container(&self, id: &WorkloadId, container: &str) -> Result<(), ProviderError> {
        let r = JobRef::parse(id);
        let mut items = BTreeMap::new();
        items.insert("released".to_owned(), "true".to_owned());
        self.put_variable(&self.at(&r), &job::gate_path(&r.id, container), &items, true).await
    }

    async fn stop_pod(&self, id: &WorkloadId) -> Result<(), ProviderError> {
        let r = JobRef::parse(id);
        self.owned(&r).await?;
        let _: serde_json::Value =
            self.at(&r).call(Method::DELETE, &["v1", "job", &r.id], &[]).await?;
        Ok(())
    }

    async fn kill_pod(&self, id: &WorkloadId) -> Result<(), ProviderError> {
        let r = JobRef::parse(id);
        self.owned(&r).await?;
        let client = self.at(&r);
        for a in self.allocations(&client, Some(&r.id)).await? {
            if matches!(a.client_status.as_str(), "pending" | "running") {
                let result: Result<serde_json::Value, _> = client
                    .send_json(
                        Method::POST,
                        &["v1", "client", "allocation", &a.id, "signal"],
                        &[],
                        &json!({"Signal": "SIGKILL"}),
                    )
                    .await;
                match result {
                    Ok(_) | Err(ProviderError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    async fn purge_pod(&self, id: &WorkloadId) -> Result<(), ProviderError> {
        let r = JobRef::parse(id);
        self.owned(&r).await?;
        self.delete_variables(&r).await?;
        {
            let mut w = lock(&self.written);
            w.remove(&r.id);
        }
        let _: serde_json::Value =
            self.at(&r).call(Method::DELETE, &["v1", "job", &r.id], &[("purge", "true")]).await?;
        Ok(())
    }

    async fn get_pod(&self, key: &PodKey) -> Result<Option<RuntimePod>, ProviderError> {
        // The job's ID, or the one an older version registered a long-named pod under.
        let ids =
            std::iter::once(self.job_id(key)).chain(job::legacy_job_id(&self.settings.prefix, key));
        for id in ids {
            if let Some(p) = self.get_job_pod(key, &id).await? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// Follows Nomad's event stream (all namespaces of the client's region): a change to a job of
    /// this node's prefix, or to one of its allocations, becomes [`Change::Pod`].
    fn changes(&self) -> impl futures::Stream<Item = Change> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(events::follow(self.client.clone(), self.settings.prefix.clone(), tx));
        let keys = std::sync::Arc::clone(&self.keys);
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
            .filter_map(move |c| {
                let out = match c {
                    events::Change::Resync => Some(Change::Resync),
                    events::Change::Node => Some(Change::Node),
                    // Only jobs known to be this node's (listed, or created here): the stream
                    // carries every node's jobs, and the next list catches anything missed.
                    events::Change::Job { job, time_ns, .. } => {
                        let known = read(&keys).get(&job).cloned();
                        let at = (time_ns > 0)
                            .then(|| {
                                vk_domain::jiff::Timestamp::from_nanosecond(i128::from(time_ns))
                                    .ok()
                            })
                            .flatten();
                        known.map(|key| Change::Pod { key, at })
                    }
                };
                futures::future::ready(out)
            })
    }

    /// Lists every namespace of every region, so pods placed by annotation elsewhere are found.
    async fn list_pods(&self) -> Result<Vec<RuntimePod>, ProviderError> {
        let mut pods = Vec::new();
        let mut locations = HashMap::new();
        for region in self.regions().await? {
            let client = self.client.at(Some("*"), Some(&region));
            let jobs: Vec<JobStub> = client
                .get(&["v1", "jobs"], &[("meta", "true"), ("prefix", &self.settings.prefix)])
                .await?;
            let allocs = self.allocations(&client, None).await?;
            let mut by_job: HashMap<(&str, &str), Vec<&Allocation>> = HashMap::new();
            for a in &allocs {
                by_job.entry((a.namespace.as_str(), a.job_id.as_str())).or_default().push(a);
            }
            for j in &jobs {
                let meta = j.meta.clone().unwrap_or_default();
                let allocs = by_job
                    .get(&(j.namespace.as_str(), j.id.as_str()))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let r = JobRef {
                    id: j.id.clone(),
                    namespace: Some(j.namespace.clone()).filter(|n| !n.is_empty()),
                    region: Some(region.clone()),
                };
                if let Some(p) = self.runtime_pod(&r, j.stop, &meta, allocs).await {
                    locations.insert(r.id.clone(), r);
                    pods.push(p);
                }
            }
        }
        {
            let mut c = write(&self.cluster);
            c.locations = locations;
        }
        Ok(pods)
    }
}

impl ProbeTarget for NomadProvider {
    /// Runs a probe's command. On the docker driver a success is confirmed by a second run:
    /// Nomad 1.11's docker driver may report exit code 0 for a command that has not started yet
    /// (`ExecTaskStreaming` inspects the exec right after attaching, before Docker marks it
    /// running; hashicorp/nomad#27146), which made a startup probe of `/bin/false` pass. Both runs
    /// must succeed; a failure is reported as it is.
    async fn exec(
        &self,
        id: &WorkloadId,
        container: &str,
        command: &[String],
    ) -> Result<i32, ProviderError> {
        let r = JobRef::parse(id);
        let alloc = self.running_alloc(&r).await?;
        let client = self.at(&r);
        let code = exec::run(&client, &alloc, container, command)
            .await
            .inspect_err(|_| self.running.invalidate(&r.encode()))?;
        if code != 0 || !self.on_docker(&r, container).await {
            return Ok(code);
        }
        exec::run(&client, &alloc, container, command).await
    }

    async fn restart_container(
        &self,
        id: &WorkloadId,
        container: &str,
    ) -> Result<(), ProviderError> {
        let r = JobRef::parse(id);
        self.owned(&r).await?;
        let alloc = self.running_alloc(&r).await?;
        let _: serde_json::Value = self
            .at(&r)
            .send_json(
                Method::POST,
                &["v1", "client", "allocation", &alloc, "restart"],
                &[],
                &json!({"TaskName": container}),
            )
            .await?; // 500 "Task not running" is `NotFound` (`client::status_error`).
        Ok(())
    }
}

impl PodNetwork for NomadProvider {
    /// Connects to the pod's IP as its status reports it at `port`: the allocation's own address
    /// in bridge and CNI modes; in host mode the node's address, at the host port Nomad mapped
    /// `port` to (`To` → `Value`) if it mapped one.
    async fn dial(&self, id: &WorkloadId, port: u16) -> Result<Duplex, ProviderError> {
        let r = JobRef::parse(id);
        let at = self.located(&r).await?;
        let Some(ip) = at.ip.as_deref() else {
            // Read again next time: the address comes once the network is up.
            self.running.invalidate(&r.encode());
            return Err(ProviderError::Unavailable {
                message: format!("allocation {} has no address yet", at.alloc),
                source: None,
            });
        };
        let target = at.ports.get(&port).copied().unwrap_or(port);
        let connect = tokio::net::TcpStream::connect((ip, target));
        let failed = match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await {
            Ok(Ok(sock)) => return Ok(Box::new(sock)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                ProviderError::Unavailable {
                    message: format!(
                        "nothing listens on port {port} of pod {:?} ({ip}:{target}): connection \
                         refused",
                        self.pod_name(&r.id)
                    ),
                    source: Some(Box::new(e)),
                }
            }
            Ok(Err(e)) => ProviderError::Unavailable {
                message: format!("connecting to {ip}:{target}: {e}"),
                source: Some(Box::new(e)),
            },
            Err(_) => ProviderError::Unavailable {
                message: format!("connecting to {ip}:{target} timed out"),
                source: None,
            },
        };
        // The allocation may have been replaced since: the next dial looks again.
        self.running.invalidate(&r.encode());
        Err(failed)
    }
}

impl PodStreams for NomadProvider {
    /// Reads the task's log files through `/v1/client/fs/logs` ([`logs`] says what is exact and
    /// what is approximated). `previous` reads the whole log of the task when it restarted in
    /// place, else the log of the allocation the current one replaced, and never follows.
    async fn logs(
        &self,
        id: &WorkloadId,
        container: &str,
        opts: &LogOptions,
    ) -> Result<ByteStream, ProviderError> {
        let r = JobRef::parse(id);
        let client = self.at(&r);
        let current = self.current_alloc(&r).await?;
        if !current.task_states.as_ref().is_some_and(|s| s.contains_key(container)) {
            return Err(ProviderError::NotFound(format!(
                "container {container:?} not found in pod {:?}",
                self.pod_name(&r.id)
            )));
        }
        let mut opts = opts.clone();
        let alloc = if opts.previous {
            opts.follow = false;
            self.previous_alloc(&client, current, container).await?
        } else {
            current
        };
        let target = logs::Target { client, alloc, task: container.to_owned() };
        // A task that just ended: its output may still be on its way to the log files.
        logs::settle(&target, Duration::from_millis(200), Duration::from_secs(3)).await;
        logs::logs(target, &opts).await
    }

    async fn exec_stream(
        &self,
        id: &WorkloadId,
        container: &str,
        command: &[String],
        io: ExecIo,
    ) -> Result<i32, ProviderError> {
        let r = JobRef::parse(id);
        let alloc = self.running_alloc(&r).await?;
        let ended = exec::stream(&self.at(&r), &alloc, container, command, io).await;
        if ended.is_err() {
            // The allocation may have been replaced since: the next session looks again.
            self.running.invalidate(&r.encode());
        }
        ended
    }

    /// Streams what the task writes from now on (`/v1/client/fs/logs` following from the end):
    /// Nomad gives no access to a running task's stdin, and no terminal (with `io.tty`, stderr goes
    /// to stdout, as a terminal would merge them).
    async fn attach(
        &self,
        id: &WorkloadId,
        container: &str,
        io: ExecIo,
    ) -> Result<(), ProviderError> {
        if io.stdin.is_some() {
            return Err(ProviderError::Unsupported(
                "Nomad cannot attach stdin to a running task; use kubectl exec".into(),
            ));
        }
        let r = JobRef::parse(id);
        let current = self.current_alloc(&r).await?;
        let running = current
            .task_states
            .as_ref()
            .and_then(|s| s.get(container))
            .is_some_and(|t| t.state == "running");
        if current.client_status != "running" || !running {
            return Err(ProviderError::NotFound(format!(
                "container {container:?} of pod {:?} is not running",
                self.pod_name(&r.id)
            )));
        }
        let stderr = match io.stderr {
            Some(e) => Some(e),
            None if io.tty => io.stdout.clone(),
            None => None,
        };
        let target =
            logs::Target { client: self.at(&r), alloc: current, task: container.to_owned() };
        logs::attach(target, io.stdout, stderr).await
    }
}

impl StatsProvider for NomadProvider {
    /// Samples every running allocation this node owns (`/v1/client/allocation/<id>/stats`) and
    /// the Nomad nodes behind it (`/v1/client/stats?node_id=`), all at once under the client's
    /// request limit ([`stats`] says how the figures map). An allocation or node whose sample
    /// fails is left out (it may just have stopped).
    async fn usage(&self) -> Result<Usage, ProviderError> {
        let pods = self.list_pods().await?;
        let nodes = self.nodes().await?;
        let now = Timestamp::now();
        let running: Vec<&RuntimePod> = pods
            .iter()
            .filter(|p| p.sandbox.as_ref().is_some_and(|s| s.state == SandboxState::Running))
            .collect();
        let samples = futures::future::join_all(running.iter().map(|p| {
            let client = self.at(&JobRef::parse(&p.id));
            let alloc = p.sandbox.as_ref().map(|s| s.id.clone()).unwrap_or_default();
            async move {
                client
                    .get::<stats::AllocStats>(&["v1", "client", "allocation", &alloc, "stats"], &[])
                    .await
            }
        }));
        let hosts =
            futures::future::join_all(nodes.iter().filter(|n| usable(n)).map(|n| async move {
                let query = [("node_id", n.id.as_str())];
                self.client.get::<stats::HostStats>(&["v1", "client", "stats"], &query).await
            }));
        let (samples, hosts) = futures::future::join(samples, hosts).await;
        let mut usage = Usage::default();
        for (p, sample) in running.iter().zip(samples) {
            let Some(sb) = p.sandbox.as_ref() else { continue };
            let sample = match sample {
                Ok(s) => s,
                Err(e) => {
                    debug!(alloc = %sb.id, error = %e, "no stats for an allocation");
                    continue;
                }
            };
            let containers = sb
                .containers
                .iter()
                .filter_map(|(name, c)| {
                    let ContainerState::Running { started_at } = &c.state else { return None };
                    let task = sample.tasks.get(name)?;
                    Some(stats::container_usage(name, *started_at, task, now))
                })
                .collect();
            usage.pods.push(PodUsage {
                key: p.owner.key.clone(),
                uid: p.owner.uid.clone(),
                start_time: sb.created_at,
                containers,
            });
        }
        let hosts: Vec<stats::HostStats> = hosts
            .into_iter()
            .filter_map(|h| h.map_err(|e| debug!(error = %e, "no stats for a Nomad node")).ok())
            .collect();
        usage.node = stats::node_usage(&hosts, self.settings().mhz_per_core, now);
        Ok(usage)
    }
}

/// The containers of `spec` whose image differs from the one registered in the job's `meta`.
fn images_changed<'a>(spec: &'a WorkloadSpec, meta: &BTreeMap<String, String>) -> Vec<&'a str> {
    let registered = alloc::images(meta);
    spec.all_containers()
        .filter(|c| registered.get(&c.name).is_some_and(|i| *i != c.image))
        .map(|c| c.name.as_str())
        .collect()
}

/// The one lock policy (ARCHITECTURE.md, "Cross-cutting concerns"): a lock poisoned by a panic
/// elsewhere is taken as it is, never skipped. What it guards is still the best there is, and a
/// write dropped without a word would leave a cache wrong.
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// [`read`] for writing.
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// [`read`] for a `Mutex`.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NodeProvider for NomadProvider {
    async fn capacity(&self) -> Result<NodeCapacity, ProviderError> {
        Ok(capacity_of(&self.nodes().await?))
    }

    async fn runtime_version(&self) -> Result<String, ProviderError> {
        if let Some(v) = read(&self.cluster).version.clone() {
            return Ok(format!("nomad://{v}"));
        }
        self.nodes().await?;
        let v = read(&self.cluster).version.clone().unwrap_or_else(|| "unknown".into());
        Ok(format!("nomad://{v}"))
    }

    fn unreachable_reason(&self) -> &'static str {
        "NomadUnreachable"
    }

    fn version_name(&self) -> &'static str {
        "nomad"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(status: &str, eligibility: &str, drain: bool) -> NodeStub {
        serde_json::from_value(serde_json::json!({
            "ID": "n", "Status": status, "SchedulingEligibility": eligibility, "Drain": drain,
            "NodeResources": {"Cpu": {"CpuShares": 8000, "TotalCpuCores": 4}, "Memory": {"MemoryMB": 4096}, "Disk": {"DiskMB": 1024}},
            "ReservedResources": {"Cpu": {"CpuShares": 2000}, "Memory": {"MemoryMB": 1024}, "Disk": {"DiskMB": 24}}
        }))
        .unwrap()
    }

    #[test]
    fn capacity_sums_ready_eligible_nodes_less_reservations() {
        let nodes = [
            node("ready", "eligible", false),
            node("ready", "eligible", false),
            node("down", "eligible", false),
            node("ready", "ineligible", false),
            node("ready", "eligible", true),
        ];
        let cap = capacity_of(&nodes);
        assert_eq!(cap.cpu_millis, 2 * 3000, "4 cores less a quarter reserved, twice");
        assert_eq!(cap.memory_bytes, 2 * (3072 << 20));
        assert_eq!(cap.ephemeral_storage_bytes, 2 * (1000 << 20));
        assert_eq!(mhz_per_core(&nodes), Some(2000));
        assert_eq!(mhz_per_core(&[]), None);
    }

    #[test]
    fn prefixes_are_escaped_for_bexpr_regexes() {
        assert_eq!(regex_escape("k8s-"), "k8s-");
        assert_eq!(regex_escape("a.b*"), "a\\.b\\*");
        assert_eq!(quote("^k8s\\-"), "\"^k8s\\\\-\"");
    }

    use super::fake::{self, Reply};
    use futures::SinkExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn provider(addr: &str) -> NomadProvider {
        NomadProvider::new(ProviderConfig {
            client: ClientConfig { address: addr.to_owned(), ..Default::default() },
            node_name: "vk".into(),
            job_prefix: "k8s-".into(),
            datacenters: vec!["dc1".into()],
            default_driver: "raw_exec".into(),
            driver_annotation: "vk/driver".into(),
            policy: policy::NomadPolicy::default(),
            seccomp_profile_root: "/var/lib/kubelet/seccomp".into(),
            volume_setup_image: None,
        })
        .unwrap()
    }

    /// An allocation list of job `k8s-ns_p` with one allocation `a2` of task `c`.
    fn allocs(status: &str, task: &str, restarts: u64, extra: &str) -> String {
        format!(
            r#"[{{"ID":"a2","JobID":"k8s-ns_p","Namespace":"default","NodeID":"n1","DesiredStatus":"run",
                 "ClientStatus":"{status}","CreateIndex":9,"CreateTime":1795267000000000000,
                 "TaskStates":{{"c":{{"State":"{task}","Restarts":{restarts},"StartedAt":"2026-11-21T13:00:00Z",
                   "Events":[{{"Type":"Started","Time":1795267001000000000}}]}}}}{extra}}}]"#
        )
    }

    fn meta(ns: &str, pod: &str) -> String {
        format!(
            r#"{{"k8s_node_name":"vk","k8s_namespace":"{ns}","k8s_pod_name":"{pod}","k8s_pod_uid":"u-{pod}","k8s_restart_policy":"Never"}}"#
        )
    }

    fn spec_of(ns: &str, name: &str) -> WorkloadSpec {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "uid": format!("u-{name}")},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}
        }))
        .unwrap();
        WorkloadSpec::from_pod(&pod, &vk_domain::inputs::Inputs::default()).unwrap().spec
    }

    /// A job under the ID a pod maps to that belongs to another pod (IDs of long names are
    /// hashed) is never replaced or stopped: the create is a conflict.
    #[tokio::test]
    async fn another_pods_job_under_the_same_id_is_never_replaced() {
        let spec = spec_of("team", "web");
        let (addr, mut reqs) = fake::fake_nomad(|line| {
            if line.starts_with("GET /v1/job/k8s-team_web") {
                Reply::Json(format!(
                    r#"{{"ID":"k8s-team_web","Name":"k8s-team_web","Type":"batch","Meta":{}}}"#,
                    meta("other", "db")
                ))
            } else {
                Reply::Status(500, "unexpected".into())
            }
        })
        .await;
        let p = provider(&addr);
        let err = p.create_pod(&spec).await.unwrap_err();
        assert!(
            matches!(&err, ProviderError::Conflict(m) if m.contains("belongs to pod other/db")),
            "{err:?}"
        );
        let sent = fake::drain(&mut reqs);
        assert!(sent.iter().all(|r| r.starts_with("GET ")), "{sent:?}");
    }

    /// A job an older version registered under the FNV-hashed ID is adopted when its Meta names
    /// the pod, and ignored when it names another pod (a forged collision).
    #[tokio::test]
    async fn jobs_under_the_legacy_id_are_adopted_only_for_their_own_pod() {
        let name = "forged-fnv-collision-of-two-pod-names-eiep25qr3dq4j";
        let key = PodKey::new("e2e-hostile", name).unwrap();
        let legacy = job::legacy_job_id("k8s-", &key).unwrap();
        for (owner, adopted) in
            [(name, true), ("forged-fnv-collision-of-two-pod-names-ncdlgzluhxobq", false)]
        {
            let legacy_id = legacy.clone();
            let job_meta = meta("e2e-hostile", owner);
            let (addr, _reqs) = fake::fake_nomad(move |line| {
                if line.contains("/v1/regions") {
                    Reply::Json(r#"["global"]"#.into())
                } else if line.starts_with("GET /v1/jobs?") && line.contains(&legacy_id) {
                    Reply::Json(format!(r#"[{{"ID":"{legacy_id}","Namespace":"default"}}]"#))
                } else if line.starts_with("GET /v1/jobs?") {
                    Reply::Json("[]".into())
                } else if line.starts_with(&format!("GET /v1/job/{legacy_id}")) {
                    Reply::Json(format!(
                        r#"{{"ID":"{legacy_id}","Name":"{legacy_id}","Type":"batch","Meta":{job_meta}}}"#
                    ))
                } else if line.contains("/v1/allocations") {
                    Reply::Json("[]".into())
                } else {
                    Reply::Status(404, "no such job".into())
                }
            })
            .await;
            let got = provider(&addr).get_pod(&key).await.unwrap();
            let id = got.map(|p| JobRef::parse(&p.id).id);
            assert_eq!(id, adopted.then(|| legacy.clone()), "{owner}");
        }
    }

    #[tokio::test]
    async fn previous_logs_come_from_the_replaced_allocation() {
        let (addr, mut reqs) = fake::fake_nomad(|line| {
            if line.contains("/v1/allocations") {
                Reply::Json(allocs("running", "running", 0, ""))
            } else if line.contains("/v1/allocation/a2") {
                Reply::Json(r#"{"ID":"a2","JobID":"k8s-ns_p","PreviousAllocation":"a1"}"#.into())
            } else if line.contains("/v1/allocation/a1") {
                Reply::Json(
                    r#"{"ID":"a1","JobID":"k8s-ns_p","TaskStates":{"c":{"State":"dead"}}}"#.into(),
                )
            } else if line.contains("/fs/ls/a1") {
                Reply::Json("[]".into())
            } else if line.contains("/fs/logs/a1") {
                Reply::Json(
                    r#"{"Data":"b2xkCg==","File":"alloc/logs/c.stdout.0","Offset":4}"#.into(),
                )
            } else {
                Reply::Status(404, "unexpected".into())
            }
        })
        .await;
        let p = provider(&addr);
        let opts = LogOptions {
            previous: true,
            follow: true,
            stream: vk_domain::logs::LogStream::Stdout,
            ..Default::default()
        };
        let mut s = p.logs(&"k8s-ns_p".into(), "c", &opts).await.unwrap();
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b.unwrap());
        }
        assert_eq!(out, b"old\n");
        let read = fake::drain(&mut reqs).into_iter().find(|r| r.contains("/fs/logs/")).unwrap();
        assert_eq!(fake::param(&read, "follow").as_deref(), Some("false"), "a terminated instance");
    }

    #[tokio::test]
    async fn previous_logs_need_a_previous_instance() {
        let (addr, _reqs) = fake::fake_nomad(|line| {
            if line.contains("/v1/allocations") {
                Reply::Json(allocs("running", "running", 0, ""))
            } else {
                Reply::Json(r#"{"ID":"a2","JobID":"k8s-ns_p"}"#.into())
            }
        })
        .await;
        let p = provider(&addr);
        let opts = LogOptions { previous: true, ..Default::default() };
        let err = p.logs(&"k8s-ns_p".into(), "c", &opts).await.err().unwrap();
        assert!(
            matches!(&err, ProviderError::NotFound(m) if m.contains("previous terminated container \"c\"")),
            "{err}"
        );
        let err = p.logs(&"k8s-ns_p".into(), "nope", &LogOptions::default()).await.err().unwrap();
        assert!(matches!(err, ProviderError::NotFound(_)), "{err}");
    }

    #[tokio::test]
    async fn attach_refuses_stdin_and_stopped_tasks() {
        let (addr, _reqs) =
            fake::fake_nomad(|_| Reply::Json(allocs("running", "dead", 0, ""))).await;
        let p = provider(&addr);
        let (_tx, rx) = futures::channel::mpsc::channel(1);
        let io = ExecIo { stdin: Some(rx), stdout: None, stderr: None, tty: false, resize: None };
        let err = p.attach(&"k8s-ns_p".into(), "c", io).await.err().unwrap();
        assert!(
            matches!(&err, ProviderError::Unsupported(m) if m.contains("kubectl exec")),
            "{err}"
        );
        let (tx, _rx) = futures::channel::mpsc::channel(1);
        let io = ExecIo { stdin: None, stdout: Some(tx), stderr: None, tty: false, resize: None };
        let err = p.attach(&"k8s-ns_p".into(), "c", io).await.err().unwrap();
        assert!(matches!(&err, ProviderError::NotFound(m) if m.contains("not running")), "{err}");
    }

    /// The pod IP of a raw_exec allocation is its network's IP; a mapped port goes to its host
    /// port, another to itself; a closed port is `Unavailable`, no running allocation `NotFound`.
    #[tokio::test]
    async fn dial_reaches_the_pod_ip_from_where_the_pod_was_last_seen() {
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_port = echo.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = echo.accept().await else { return };
                tokio::spawn(async move {
                    let mut buf = [0u8; 16];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let running = allocs(
            "running",
            "running",
            0,
            &format!(
                r#","AllocatedResources":{{"Shared":{{"Networks":[{{"Mode":"host","IP":"127.0.0.1",
                    "DynamicPorts":[{{"Label":"c_80","Value":{echo_port},"To":80}}]}}]}}}}"#
            ),
        );
        let lists = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let listed = std::sync::Arc::clone(&lists);
        let (addr, _reqs) = fake::fake_nomad(move |line| {
            if line.contains("/v1/allocations") {
                listed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if line.contains("k8s-ns_gone") {
                    Reply::Json(allocs("complete", "dead", 0, ""))
                } else {
                    Reply::Json(running.clone())
                }
            } else {
                Reply::Json("[]".into())
            }
        })
        .await;
        let p = provider(&addr);
        for port in [80, echo_port] {
            let mut conn = p.dial(&"k8s-ns_p".into(), port).await.unwrap();
            conn.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
        }
        // The pod's place was looked up once: the second dial used it.
        let count = || lists.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(count(), 1);
        let err = p.dial(&"k8s-ns_p".into(), closed).await.err().unwrap();
        assert!(
            matches!(&err, ProviderError::Unavailable { message, .. } if message.contains("connection refused")),
            "{err}"
        );
        // A failed dial forgets it: the allocation may have been replaced.
        let _ = p.dial(&"k8s-ns_p".into(), 80).await.unwrap();
        assert_eq!(count(), 2);
        let err = p.dial(&"k8s-ns_gone".into(), 80).await.err().unwrap();
        assert!(matches!(err, ProviderError::NotFound(_)), "{err}");
    }

    /// Usage: the running allocation's task stats, the node's host stats over the usable nodes.
    #[tokio::test]
    async fn usage_samples_running_pods_and_usable_nodes() {
        let (addr, mut reqs) = fake::fake_nomad(|line| {
            if line.contains("/v1/regions") {
                Reply::Json(r#"["global"]"#.into())
            } else if line.contains("/v1/jobs") {
                Reply::Json(
                    r#"[{"ID":"k8s-ns_p","Namespace":"default","Meta":{"k8s_node_name":"vk","k8s_namespace":"ns","k8s_pod_name":"p","k8s_pod_uid":"u1"}}]"#
                        .into(),
                )
            } else if line.contains("/v1/allocations") {
                Reply::Json(allocs("running", "running", 0, ""))
            } else if line.contains("/v1/nodes") {
                Reply::Json(
                    r#"[{"ID":"n1","Address":"127.0.0.1","Status":"ready","SchedulingEligibility":"eligible",
                         "NodeResources":{"Cpu":{"CpuShares":4000,"TotalCpuCores":2},"Memory":{"MemoryMB":100}}},
                        {"ID":"n2","Status":"down","SchedulingEligibility":"eligible"}]"#
                        .into(),
                )
            } else if line.contains("/v1/client/allocation/a2/stats") {
                Reply::Json(
                    r#"{"Tasks":{"c":{"ResourceUsage":{"CpuStats":{"Percent":50.0},"MemoryStats":{"RSS":4096,"Measured":["RSS"]}},"Timestamp":1795267043570297226}},"Timestamp":1795267043570297226}"#
                        .into(),
                )
            } else if line.contains("/v1/client/stats") {
                Reply::Json(
                    r#"{"CPUTicksConsumed":1000.0,"Memory":{"Used":1000,"Available":3000},"Uptime":10,"Timestamp":1795267043705832091}"#
                        .into(),
                )
            } else {
                Reply::Status(404, "unexpected".into())
            }
        })
        .await;
        let p = provider(&addr);
        let u = p.usage().await.unwrap();
        assert_eq!(u.pods.len(), 1);
        let pod = &u.pods[0];
        assert_eq!((pod.key.to_string().as_str(), pod.uid.as_str()), ("ns/p", "u1"));
        let c = &pod.containers[0];
        assert_eq!(c.name, "c");
        assert_eq!(c.cpu.as_ref().map(|c| c.nano_cores), Some(500_000_000));
        assert_eq!(c.memory.as_ref().map(|m| m.working_set_bytes), Some(4096));
        assert_eq!(c.start_time, Timestamp::from_nanosecond(1_795_267_001_000_000_000).ok());
        assert_eq!(
            u.node.cpu.map(|c| c.nano_cores),
            Some(500_000_000),
            "1000 MHz at 2000 MHz/core"
        );
        assert_eq!(u.node.memory.map(|m| m.working_set_bytes), Some(1000));
        let host_reqs: Vec<String> =
            fake::drain(&mut reqs).into_iter().filter(|r| r.contains("/v1/client/stats")).collect();
        assert_eq!(host_reqs.len(), 1, "only the ready node");
        assert_eq!(fake::param(&host_reqs[0], "node_id").as_deref(), Some("n1"));
    }

    /// A probe's exec on docker that succeeds is run again, and the second run's code is the
    /// answer (Nomad's docker driver can report 0 for a command that never started); on another
    /// driver, or when the first run fails, one run is the answer.
    #[tokio::test]
    async fn a_probe_success_on_docker_is_confirmed() {
        use tokio_tungstenite::tungstenite::Message;
        for (driver, codes, want, sessions) in [
            ("docker", [0, 1], 1, 2),
            ("docker", [0, 0], 0, 2),
            ("docker", [2, 0], 2, 1),
            ("raw_exec", [0, 1], 0, 1),
        ] {
            let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let seen = std::sync::Arc::clone(&n);
            let (addr, _reqs) = fake::fake_nomad(move |line| {
                if line.contains("/v1/allocations") {
                    return Reply::Json(allocs("running", "running", 0, ""));
                }
                if line.contains("/v1/nodes") {
                    return Reply::Json("[]".into());
                }
                if line.contains("/v1/job/k8s-ns_p ") || line.contains("/v1/job/k8s-ns_p?") {
                    return Reply::Json(format!(
                        r#"{{"ID":"k8s-ns_p","Name":"k8s-ns_p","Type":"batch","TaskGroups":[{{"Name":"pod","Count":1,"Tasks":[{{"Name":"c","Driver":"{driver}"}}]}}]}}"#
                    ));
                }
                let code = codes[seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst).min(1)];
                Reply::Ws(Box::new(move |sock, head| {
                    tokio::spawn(async move {
                        let mut ws = fake::accept_ws(sock, &head).await;
                        let exited = format!(r#"{{"exited":true,"result":{{"exit_code":{code}}}}}"#);
                        ws.send(Message::text(exited)).await.unwrap();
                        while ws.next().await.is_some() {}
                    });
                }))
            })
            .await;
            let p = provider(&addr);
            let got = p.exec(&"k8s-ns_p".into(), "c", &["check".to_owned()]).await.unwrap();
            assert_eq!(got, want, "{driver} {codes:?}");
            assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), sessions, "{driver} {codes:?}");
        }
    }

    /// An interactive exec: terminal size, stdin and its end reach Nomad as frames; stdout and
    /// stderr come back on their channels; the exit code is returned.
    #[tokio::test]
    async fn exec_stream_pumps_both_ways() {
        use tokio_tungstenite::tungstenite::Message;
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let (addr, mut reqs) = fake::fake_nomad(move |line| {
            if line.contains("/v1/allocations") {
                return Reply::Json(allocs("running", "running", 0, ""));
            }
            if line.contains("/v1/nodes") {
                return Reply::Json("[]".into());
            }
            let seen_tx = seen_tx.clone();
            Reply::Ws(Box::new(move |sock, head| {
                tokio::spawn(async move {
                    let mut ws = fake::accept_ws(sock, &head).await;
                    while let Some(Ok(Message::Text(t))) = ws.next().await {
                        let t = t.as_str().to_owned();
                        let _ = seen_tx.send(t.clone());
                        if t.contains("close") {
                            break;
                        }
                    }
                    for f in [
                        r#"{"stdout":{"data":"b3V0"}}"#,
                        r#"{"stderr":{"data":"ZXJy"}}"#,
                        r#"{"stdout":{"close":true}}"#,
                        r#"{"exited":true,"result":{"exit_code":3}}"#,
                    ] {
                        ws.send(Message::text(f)).await.unwrap();
                    }
                    while ws.next().await.is_some() {}
                });
            }))
        })
        .await;
        let p = provider(&addr);
        let (mut in_tx, in_rx) = futures::channel::mpsc::channel(4);
        let (mut size_tx, size_rx) = futures::channel::mpsc::channel(4);
        let (out_tx, mut out_rx) = futures::channel::mpsc::channel(4);
        let (err_tx, mut err_rx) = futures::channel::mpsc::channel(4);
        size_tx.send(vk_ports::TerminalSize { width: 80, height: 24 }).await.unwrap();
        in_tx.send(bytes::Bytes::from_static(b"hi")).await.unwrap();
        drop(in_tx);
        let io = ExecIo {
            stdin: Some(in_rx),
            stdout: Some(out_tx),
            stderr: Some(err_tx),
            tty: false,
            resize: Some(size_rx),
        };
        let cmd = vec!["sh".to_owned(), "-c".to_owned(), "cat".to_owned()];
        let code = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            p.exec_stream(&"k8s-ns_p".into(), "c", &cmd, io),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(code, 3);
        assert_eq!(out_rx.next().await.as_deref(), Some(&b"out"[..]));
        assert_eq!(err_rx.next().await.as_deref(), Some(&b"err"[..]));
        let seen: Vec<String> = std::iter::from_fn(|| seen_rx.try_recv().ok()).collect();
        assert!(seen.contains(&r#"{"tty_size":{"height":24,"width":80}}"#.to_owned()), "{seen:?}");
        assert!(seen.contains(&r#"{"stdin":{"data":"aGk="}}"#.to_owned()), "{seen:?}");
        assert_eq!(seen.last().map(String::as_str), Some(r#"{"stdin":{"close":true}}"#));
        let exec = fake::drain(&mut reqs).into_iter().find(|r| r.contains("/exec")).unwrap();
        assert_eq!(fake::param(&exec, "command").as_deref(), Some(r#"["sh","-c","cat"]"#));
        assert_eq!(fake::param(&exec, "tty").as_deref(), Some("false"));
        assert_eq!(fake::param(&exec, "task").as_deref(), Some("c"));
    }
}
