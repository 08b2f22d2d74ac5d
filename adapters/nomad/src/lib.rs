//! The Nomad backend: pods run as Nomad jobs ([`NomadProvider`] implements the provider ports).
//!
//! [`job`] and [`alloc`] are the pure translations (pod to job, allocation to runtime view);
//! [`client`] is the HTTP seam; this module holds the provider's state and sequences a pod's
//! lifecycle ([`PodProvider`]); `known` is what it remembers of Nomad between requests,
//! `containers` reaches into running pods (probes, dial, logs, exec, attach), `capacity` makes up
//! the node, `usage` samples resource usage.

pub mod alloc;
pub mod api;
mod capacity;
pub mod client;
mod containers;
pub mod events;
pub mod exec;
#[cfg(test)]
mod fake;
mod interactive;
pub mod job;
mod known;
pub mod logs;
pub mod placement;
pub mod policy;
pub mod stats;
#[cfg(test)]
mod tests;
mod usage;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
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

pub use self::capacity::{REGION_LABEL, Scope, ZONE_LABEL, capacity_of, mhz_per_core, usable};
pub use self::client::{ClientConfig, ConfigError};
use self::containers::Running;
use self::known::{Known, Written};

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
    /// Datacenters jobs may run in (Nomad patterns): with `node_pool`, the node's [`Scope`].
    pub datacenters: Vec<String>,
    /// Node pool of the jobs of pods that choose none by annotation; `None`: Nomad's default.
    pub node_pool: Option<String>,
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
    /// The Nomad nodes the Kubernetes node stands for: its capacity is theirs.
    scope: Scope,
    /// Where each job lives, what was last written for it and its pod; the Nomad nodes' CPU
    /// speed, addresses and version ([`known`]).
    known: Arc<Known>,
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

/// The most of a termination message file that is read (the kubelet's `maxMsgSize`).
const TERMINATION_MESSAGE_BYTES: u64 = 4096;

/// Allocation addresses kept ([`NomadProvider::addresses`]): beyond the pods of a large node.
const ADDRESS_ENTRIES: u64 = 16_384;

/// An update of a running pod: `spec` as a job, the job as registered, and what `spec` writes.
struct Update {
    pod_job: job::PodJob,
    existing: Job,
    now: Written,
}

impl NomadProvider {
    /// Builds the provider; nothing is sent to Nomad yet.
    ///
    /// # Errors
    /// [`ConfigError`] when the client configuration is unusable.
    pub fn new(cfg: ProviderConfig) -> Result<Self, ConfigError> {
        let client = NomadClient::new(&cfg.client)?;
        let scope =
            Scope { datacenters: cfg.datacenters.clone(), node_pool: cfg.node_pool.clone() };
        let settings = JobSettings {
            prefix: cfg.job_prefix,
            node_name: cfg.node_name,
            namespace: client.namespace().map(str::to_owned),
            region: client.region().map(str::to_owned),
            datacenters: cfg.datacenters,
            node_pool: cfg.node_pool,
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
            scope,
            known: Arc::default(),
            addresses: moka::sync::Cache::new(ADDRESS_ENTRIES),
            docker_tasks: moka::sync::Cache::new(ADDRESS_ENTRIES),
            termination_messages: moka::sync::Cache::new(ADDRESS_ENTRIES),
            running: moka::sync::Cache::new(ADDRESS_ENTRIES),
        })
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
        if let Some(m) = self.known.mhz_per_core() {
            s.mhz_per_core = m;
        }
        s
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

    async fn runtime_pod(
        &self,
        at: &JobRef,
        stop: bool,
        meta: &BTreeMap<String, String>,
        allocs: &[&Allocation],
    ) -> Option<RuntimePod> {
        let owner = alloc::owner(meta, &self.settings.node_name)?;
        self.known.remember_pod(&at.id, &owner.key);
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
        let unplaced = match &sandbox {
            None if !stop => self.placement_failure(at).await,
            _ => None,
        };
        Some(RuntimePod {
            owner,
            id: at.encode().into(),
            stopping: stop,
            sandbox,
            images: alloc::images(meta),
            unplaced,
        })
    }

    /// Why job `at` has no allocation, from its evaluations ([`placement::failure`]); `None`
    /// when its last placement attempt did not fail, or when Nomad cannot be read (logged; the
    /// next status read asks again).
    async fn placement_failure(&self, at: &JobRef) -> Option<String> {
        let path = ["v1", "job", at.id.as_str(), "evaluations"];
        match self.at(at).get::<Vec<api::Evaluation>>(&path, &[]).await {
            Ok(evals) => placement::failure(&evals),
            Err(e) => {
                debug!(job = %at.id, error = %e, "reading the job's evaluations");
                None
            }
        }
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

    /// The pod of job `job` as last seen (`namespace/name`), else the job ID, for messages.
    fn pod_name(&self, job: &str) -> String {
        self.known.pod_of(job).map_or_else(|| job.to_owned(), |k| k.to_string())
    }

    /// Where job `id` lives: remembered from the last list or create, else searched for in every
    /// namespace of every region.
    async fn locate(&self, id: &str) -> Result<Option<JobRef>, ProviderError> {
        if let Some(r) = self.known.location(id) {
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
                self.known.remember_location(&r);
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// What an update of a running pod starts from: `spec` as a job, and the job as registered
    /// (owned by this node); `None` when this very `spec` was written last.
    async fn update_of(&self, spec: &WorkloadSpec) -> Result<Option<Update>, ProviderError> {
        let pod_job = job::to_job(spec, &self.settings())
            .map_err(|e| ProviderError::InvalidInput(e.to_string()))?;
        let now = Written::of(spec, &pod_job);
        if self.known.written(&pod_job.at.id).as_ref() == Some(&now) {
            return Ok(None);
        }
        let existing = self.owned(&pod_job.at).await?;
        Ok(Some(Update { pod_job, existing, now }))
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
            self.known.forget_location(id);
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
                    self.known.remember_location(&pod_job.at);
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
        self.known.remember_location(&pod_job.at);
        self.known.remember_written(&job.id, Written::of(spec, &pod_job));
        self.known.remember_pod(&job.id, &spec.key);
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
            self.known.remember_written(&id, now);
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
        self.known.remember_written(&id, now);
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
        self.known.forget(&r.id);
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
        let known = Arc::clone(&self.known);
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
            .filter_map(move |c| {
                let out = match c {
                    events::Change::Resync => Some(Change::Resync),
                    events::Change::Node => Some(Change::Node),
                    // Only jobs known to be this node's (listed, or created here): the stream
                    // carries every node's jobs, and the next list catches anything missed.
                    events::Change::Job { job, time_ns, .. } => {
                        let key = known.pod_of(&job);
                        let at = (time_ns > 0)
                            .then(|| {
                                vk_domain::jiff::Timestamp::from_nanosecond(i128::from(time_ns))
                                    .ok()
                            })
                            .flatten();
                        key.map(|key| Change::Pod { key, at })
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
        self.known.replace_locations(locations);
        Ok(pods)
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
