//! The Nomad backend: pods run as Nomad jobs ([`NomadProvider`] implements the provider ports).
//!
//! [`job`] and [`alloc`] are the pure translations (pod to job, allocation to runtime view);
//! [`client`] is the HTTP seam; this module sequences the calls.

pub mod alloc;
pub mod api;
pub mod client;
pub mod events;
pub mod exec;
pub mod job;

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use futures::StreamExt as _;
use reqwest::Method;
use serde_json::json;
use tracing::{debug, info, warn};
use vk_domain::node::NodeCapacity;
use vk_domain::pod::PodKey;
use vk_domain::runtime::RuntimePod;
use vk_domain::workload::WorkloadSpec;
use vk_ports::{Change, NodeProvider, PodProvider, ProviderError};

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
}

#[derive(Debug, Clone, PartialEq)]
struct Written {
    images: BTreeMap<String, String>,
    items: BTreeMap<String, String>,
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
        };
        Ok(Self {
            client,
            settings,
            cluster: RwLock::new(ClusterInfo::default()),
            written: std::sync::Mutex::new(HashMap::new()),
            keys: std::sync::Arc::default(),
        })
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
        if let Some(m) = self.cluster.read().ok().and_then(|c| c.mhz_per_core) {
            s.mhz_per_core = m;
        }
        s
    }

    async fn nodes(&self) -> Result<Vec<NodeStub>, ProviderError> {
        let nodes: Vec<NodeStub> =
            self.client.get(&["v1", "nodes"], &[("resources", "true")]).await?;
        if let Ok(mut info) = self.cluster.write() {
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
        let known = self.cluster.read().ok().and_then(|c| c.node_ips.get(node_id).cloned());
        if known.is_some() {
            return known;
        }
        if let Err(e) = self.nodes().await {
            debug!(error = %e, "reading Nomad nodes for a host IP");
        }
        self.cluster.read().ok().and_then(|c| c.node_ips.get(node_id).cloned())
    }

    async fn runtime_pod(
        &self,
        at: &JobRef,
        stop: bool,
        meta: &BTreeMap<String, String>,
        allocs: &[&Allocation],
    ) -> Option<RuntimePod> {
        let owner = alloc::owner(meta, &self.settings.node_name)?;
        if let Ok(mut keys) = self.keys.write() {
            keys.insert(at.id.clone(), owner.key.clone());
        }
        let bases = alloc::restart_bases(meta);
        let sandbox = match alloc::current_for(allocs.iter().copied(), meta) {
            Some(a) => {
                let host_ip = self.host_ip(&a.node_id).await;
                let mut sb = alloc::sandbox(a, host_ip);
                for (name, c) in &mut sb.containers {
                    c.restart_count =
                        c.restart_count.saturating_add(bases.get(name).copied().unwrap_or(0));
                }
                Some(sb)
            }
            None => None,
        };
        Some(RuntimePod {
            owner,
            id: at.encode(),
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
        let resp: RegisterResponse = client
            .send_json(Method::PUT, &["v1", "jobs"], &[], &RegisterRequest { job })
            .await
            .map_err(|e| match e {
                // Nomad answers 500 for jobs it refuses to validate; retrying will not help.
                ProviderError::Unavailable { message, .. } if message.contains("validation") => {
                    ProviderError::InvalidInput(message)
                }
                e => e,
            })?;
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
            match client.call::<serde_json::Value>(Method::DELETE, &segs, &[]).await {
                Ok(_) | Err(ProviderError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The ID of the allocation that stands for job `r` now, if it runs.
    async fn running_alloc(&self, r: &JobRef) -> Result<String, ProviderError> {
        let id = &r.id;
        let allocs = self.allocations(&self.at(r), Some(id)).await?;
        alloc::current(allocs.iter())
            .filter(|a| a.client_status == "running")
            .map(|a| a.id.clone())
            .ok_or_else(|| ProviderError::NotFound(format!("no running allocation of job {id}")))
    }

    /// The regions to look in: all that Nomad knows (`/v1/regions`).
    async fn regions(&self) -> Result<Vec<String>, ProviderError> {
        self.client.get(&["v1", "regions"], &[]).await
    }

    /// Where job `id` lives: remembered from the last list or create, else searched for in every
    /// namespace of every region.
    async fn locate(&self, id: &str) -> Result<Option<JobRef>, ProviderError> {
        if let Some(r) = self.cluster.read().ok().and_then(|c| c.locations.get(id).cloned()) {
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
        if let Ok(mut m) = self.written.lock() {
            m.insert(id.to_owned(), w);
        }
    }

    fn last_written(&self, id: &str) -> Option<Written> {
        self.written.lock().ok().and_then(|m| m.get(id).cloned())
    }

    fn remember_location(&self, r: &JobRef) {
        if let Ok(mut c) = self.cluster.write() {
            c.locations.insert(r.id.clone(), r.clone());
        }
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
    let usable = nodes
        .iter()
        .filter(|n| n.status == "ready" && n.scheduling_eligibility == "eligible" && !n.drain);
    for n in usable {
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
        if let Ok(mut keys) = self.keys.write() {
            keys.insert(job.id.clone(), spec.key.clone());
        }
        Ok(())
    }

    async fn update_pod(&self, spec: &WorkloadSpec) -> Result<(), ProviderError> {
        let mut pod_job = job::to_job(spec, &self.settings())
            .map_err(|e| ProviderError::InvalidInput(e.to_string()))?;
        let at = pod_job.at.clone();
        let id = at.id.clone();
        let now = written_of(spec, &pod_job);
        if self.last_written(&id).as_ref() == Some(&now) {
            return Ok(());
        }
        let existing = self.owned(&at).await?;
        let registered = alloc::images(&existing.meta);
        let changed: Vec<&str> = spec
            .all_containers()
            .filter(|c| registered.get(&c.name).is_some_and(|i| *i != c.image))
            .map(|c| c.name.as_str())
            .collect();
        if !changed.is_empty() {
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
                pod_job
                    .job
                    .meta
                    .insert(format!("{}{name}", job::META_RESTARTS_PREFIX), n.to_string());
            }
            info!(job = %id, containers = ?changed, "image changed; registering the job again");
            self.register(&pod_job).await?;
            self.remember_written(&id, now);
            return Ok(());
        }
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
        self.remember_written(&id, now);
        Ok(())
    }

    async fn start_container(&self, id: &str, container: &str) -> Result<(), ProviderError> {
        let r = JobRef::parse(id);
        let mut items = BTreeMap::new();
        items.insert("released".to_owned(), "true".to_owned());
        self.put_variable(&self.at(&r), &job::gate_path(&r.id, container), &items, true).await
    }

    async fn exec(
        &self,
        id: &str,
        container: &str,
        command: &[String],
    ) -> Result<i32, ProviderError> {
        let r = JobRef::parse(id);
        let alloc = self.running_alloc(&r).await?;
        exec::run(&self.at(&r), &alloc, container, command).await
    }

    async fn restart_container(&self, id: &str, container: &str) -> Result<(), ProviderError> {
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
            .await
            .map_err(|e| match e {
                // Nomad answers 500 "Task not running" for a task that is not running.
                ProviderError::Unavailable { message, .. } if message.contains("not running") => {
                    ProviderError::NotFound(message)
                }
                e => e,
            })?;
        Ok(())
    }

    async fn stop_pod(&self, id: &str) -> Result<(), ProviderError> {
        let r = JobRef::parse(id);
        self.owned(&r).await?;
        let _: serde_json::Value =
            self.at(&r).call(Method::DELETE, &["v1", "job", &r.id], &[]).await?;
        Ok(())
    }

    async fn kill_pod(&self, id: &str) -> Result<(), ProviderError> {
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

    async fn purge_pod(&self, id: &str) -> Result<(), ProviderError> {
        let r = JobRef::parse(id);
        self.owned(&r).await?;
        self.delete_variables(&r).await?;
        if let Ok(mut w) = self.written.lock() {
            w.remove(&r.id);
        }
        let _: serde_json::Value =
            self.at(&r).call(Method::DELETE, &["v1", "job", &r.id], &[("purge", "true")]).await?;
        Ok(())
    }

    async fn get_pod(&self, key: &PodKey) -> Result<Option<RuntimePod>, ProviderError> {
        let id = self.job_id(key);
        let Some(r) = self.locate(&id).await? else { return Ok(None) };
        let Some(job) = self.job(&r).await? else {
            // Gone since it was last seen: forget where it was.
            if let Ok(mut c) = self.cluster.write() {
                c.locations.remove(&id);
            }
            return Ok(None);
        };
        let allocs = self.allocations(&self.at(&r), Some(&id)).await?;
        let refs: Vec<&Allocation> = allocs.iter().collect();
        Ok(self.runtime_pod(&r, job.stop, &job.meta, &refs).await)
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
                        let known = keys.read().ok().and_then(|k| k.get(&job).cloned());
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
        if let Ok(mut c) = self.cluster.write() {
            c.locations = locations;
        }
        Ok(pods)
    }
}

impl NodeProvider for NomadProvider {
    async fn capacity(&self) -> Result<NodeCapacity, ProviderError> {
        Ok(capacity_of(&self.nodes().await?))
    }

    async fn runtime_version(&self) -> Result<String, ProviderError> {
        if let Some(v) = self.cluster.read().ok().and_then(|c| c.version.clone()) {
            return Ok(format!("nomad://{v}"));
        }
        self.nodes().await?;
        let v = self
            .cluster
            .read()
            .ok()
            .and_then(|c| c.version.clone())
            .unwrap_or_else(|| "unknown".into());
        Ok(format!("nomad://{v}"))
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
}
