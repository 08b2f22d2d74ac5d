//! Runs the pods bound to the node on the backend and writes their status back.
//!
//! Level-triggered: a watch keeps the pods bound to the node, a poll keeps what the backend runs,
//! and every change queues the pod's key. A worker takes a key, asks
//! [`vk_domain::reconcile::plan`] what to do with the pod and its workload, and does it. Steps are
//! idempotent, so a crash, a restart or a retry repeats nothing harmful: on start the backend's
//! workloads for this node are adopted, and those whose pod is gone are purged (only once the pod
//! watch has listed everything, so a slow list never deletes a workload).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, info, warn};
use vk_domain::events::{self, ContainerEvent};
use vk_domain::jiff::Timestamp;
use vk_domain::node::NodeCapacity;
use vk_domain::pod::{self, PodKey};
use vk_domain::policy::{ProbeGrant, Rules};
use vk_domain::reconcile::{Context, Step, plan};
use vk_domain::runtime::{ImagePull, RuntimePod, WorkloadId};
use vk_domain::status::{self, REASON_PROVIDER_FAILED};
use vk_domain::volume::Source;
use vk_domain::workload::{Refusal, Translated, WorkloadSpec};
use vk_ports::{
    Change, ClusterError, EventType, IndexedPod, InputsApi, PodApi, PodNetwork, PodProvider,
    PodWatchEvent, ProbeTarget, ProviderError, StatusWrite,
};

mod error;
mod feeds;
mod writes;

pub use self::error::SyncError;
use self::error::{Op, operation_name};
pub use self::feeds::RETRY_WHILE_UNREACHABLE;
pub use self::writes::FAILED_PLACEMENT;
use crate::held_pod::{HeldPod, PHASES};
use crate::inputs::{NamespaceLabels, Resolver, Tokens};
use crate::prober::{PreStopHooks, Prober};
use crate::queue::WorkQueue;

/// Histogram: seconds from the backend's change (Nomad's event time) to the pod status written.
pub const STATUS_PROPAGATION: &str = "vk_status_propagation_seconds";
/// Counter: reconcile steps done, labelled `operation` and `result` (`ok`, `error`).
pub const POD_OPERATIONS: &str = "vk_pod_operations_total";
/// Histogram: seconds one reconcile of one pod took.
pub const RECONCILE_DURATION: &str = "vk_reconcile_duration_seconds";
/// Gauge: pods bound to the node, labelled `phase`.
pub const PODS: &str = "vk_pods";

/// The span of one operation on one pod, named `$name`, with the fields every pod operation
/// carries, in text and JSON logs alike: `namespace` and `pod` (the pod's), and `job`, the
/// workload ID the [`PodProvider`] calls take (for Nomad the job ID, with `@<namespace>[@<region>]`
/// when the pod's annotations place it elsewhere). `job = <id>` gives it when known; otherwise it
/// is empty until `PodController::record_job` fills it in (once the backend was read, or after a create).
/// Further fields follow. The span is a root: a probe worker started during a sync outlives it.
macro_rules! pod_span {
    (@span $name:literal, $key:expr, $job:expr $(, $($field:tt)*)?) => {{
        let key: &::vk_domain::pod::PodKey = $key;
        ::tracing::info_span!(
            parent: None,
            $name,
            namespace = %key.namespace(),
            pod = %key.name(),
            job = $job
            $(, $($field)*)?
        )
    }};
    ($name:literal, $key:expr, job = $job:expr $(, $($field:tt)*)?) => {
        $crate::pod_controller::pod_span!(
            @span $name, $key, ::tracing::field::display($job) $(, $($field)*)?
        )
    };
    ($name:literal, $key:expr $(, $($field:tt)*)?) => {
        $crate::pod_controller::pod_span!(
            @span $name, $key, ::tracing::field::Empty $(, $($field)*)?
        )
    };
}
pub(crate) use pod_span;

/// Settings of the pod controller.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's name.
    pub node_name: String,
    /// Concurrent workers.
    pub workers: usize,
    /// How often the backend's workloads are listed (status polling).
    pub status_interval: Duration,
    /// How often the files of running pods' ConfigMap, Secret, downward API and projected
    /// volumes are read again and brought up to date (the kubelet's volume sync).
    pub refresh_interval: Duration,
    /// The node's allocatable resources, as the node controller last read them.
    pub allocatable: tokio::sync::watch::Receiver<NodeCapacity>,
    /// Notified when the backend says its machines changed, so the node is checked at once.
    pub node_changed: Arc<tokio::sync::Notify>,
    /// The hosts the operator lets probes name (`--allowed-probe-hosts` and the policy file).
    pub probe_policy: Arc<Rules<ProbeGrant>>,
    /// Read each pod's Namespace labels before creating it: the operator's policy selects
    /// namespaces by label.
    pub namespace_labels: bool,
    /// The node's operating system (`kubernetes.io/os`): pods for another are rejected.
    pub node_os: String,
}

#[derive(Default)]
struct State {
    /// The pods bound to the node as last watched (or as last written), as compact JSON: a
    /// decoded `Pod` is about 8 KB, and is decoded only for the one who reads it whole.
    pods: HashMap<PodKey, HeldPod>,
    /// The backend's workloads, by pod. Boxed: a `RuntimePod` is 328 bytes inline, and a hash
    /// table keeps up to twice as many slots as entries.
    runtime: HashMap<PodKey, Box<RuntimePod>>,
    pods_synced: bool,
    runtime_synced: bool,
    backoff: HashMap<PodKey, ExponentialBackoff>,
    /// Events already recorded, by pod UID: `(reason, message)`.
    recorded: HashMap<String, HashSet<(String, String)>>,
    /// When the backend changed each pod's workload, for changes not yet written as status.
    changed_at: HashMap<PodKey, Timestamp>,
    /// Pods whose workload the backend says changed since it was last read.
    dirty: HashSet<PodKey>,
    /// The workload ID recorded into the `job` field of each pod's running `sync_pod` span.
    span_job: HashMap<PodKey, WorkloadId>,
    /// How many of `pods` are in each phase of [`PHASES`], kept as `pods` changes ([`State::hold`],
    /// [`State::release`], [`State::hold_all`]): `vk_pods` is set from it without walking every
    /// pod on every event.
    phase_counts: [usize; PHASES.len()],
}

impl State {
    /// Holds `held` as the pod of `key`, in place of the one held before.
    fn hold(&mut self, key: PodKey, held: HeldPod) {
        let phase = held.phase_index();
        if let Some(old) = self.pods.insert(key, held) {
            self.count(old.phase_index(), false);
        }
        self.count(phase, true);
    }

    /// Forgets the pod of `key`.
    fn release(&mut self, key: &PodKey) {
        if let Some(old) = self.pods.remove(key) {
            self.count(old.phase_index(), false);
        }
    }

    /// Holds exactly `pods` (a relist), counting them once.
    fn hold_all(&mut self, pods: HashMap<PodKey, HeldPod>) {
        self.phase_counts = [0; PHASES.len()];
        for p in pods.values() {
            if let Some(n) = self.phase_counts.get_mut(p.phase_index()) {
                *n += 1;
            }
        }
        self.pods = pods;
    }

    fn count(&mut self, phase: usize, add: bool) {
        if let Some(n) = self.phase_counts.get_mut(phase) {
            *n = if add { n.saturating_add(1) } else { n.saturating_sub(1) };
        }
    }
}

/// The controller; [`PodController::run`] drives it.
pub struct PodController<P, K> {
    provider: Arc<P>,
    api: Arc<K>,
    settings: Settings,
    state: Mutex<State>,
    queue: Arc<WorkQueue<PodKey>>,
    tokens: Tokens,
    namespace_labels: NamespaceLabels,
    prober: Arc<Prober<P>>,
    /// Wakes the poll at once (the backend's change feed restarted).
    poll_now: tokio::sync::Notify,
}

enum Outcome {
    Done,
    Retry(SyncError),
}

impl<P: PodProvider + ProbeTarget + PodNetwork, K: PodApi + InputsApi> PodController<P, K> {
    /// Builds the controller.
    pub fn new(provider: Arc<P>, api: Arc<K>, settings: Settings) -> Arc<Self> {
        let queue = WorkQueue::new();
        let prober = Prober::new(
            Arc::clone(&provider),
            Arc::clone(&queue),
            Arc::clone(&settings.probe_policy),
        );
        Arc::new(Self {
            provider,
            api,
            settings,
            state: Mutex::new(State::default()),
            queue,
            tokens: Tokens::default(),
            namespace_labels: NamespaceLabels::default(),
            prober,
            poll_now: tokio::sync::Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs the watch, the poll and the workers until `cancel` fires; in-flight steps finish,
    /// probe workers stop and delayed requeues are dropped.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn({
            let (this, cancel) = (Arc::clone(&self), cancel.clone());
            async move {
                cancel.cancelled().await;
                this.prober.stop();
                this.queue.shut_down();
            }
        });
        tasks.spawn(Arc::clone(&self).watch(cancel.clone()));
        tasks.spawn(Arc::clone(&self).poll(cancel.clone()));
        tasks.spawn(Arc::clone(&self).refresh(cancel.clone()));
        tasks.spawn(Arc::clone(&self).follow(cancel.clone()));
        for _ in 0..self.settings.workers.max(1) {
            tasks.spawn(Arc::clone(&self).work(cancel.clone()));
        }
        while tasks.join_next().await.is_some() {}
    }

    /// The pod with `key` bound to this node, with its workload's ID when the backend has one.
    pub fn pod(&self, key: &PodKey) -> Option<IndexedPod> {
        let st = self.state();
        let pod = st.pods.get(key)?.pod_or_log()?;
        let runtime = st.runtime.get(key);
        Some(IndexedPod {
            pod,
            workload: runtime.map(|r| r.id.clone()),
            running: runtime.is_some_and(|r| !r.is_terminated()),
        })
    }

    /// Every pod bound to this node, with whether its workload runs now. Each is decoded for
    /// the call.
    pub fn pods(&self) -> Vec<IndexedPod> {
        let st = self.state();
        st.pods
            .iter()
            .filter_map(|(k, p)| {
                let pod = p.pod_or_log()?;
                let runtime = st.runtime.get(k);
                Some(IndexedPod {
                    pod,
                    workload: runtime.map(|r| r.id.clone()),
                    running: runtime.is_some_and(|r| !r.is_terminated()),
                })
            })
            .collect()
    }

    /// True once both the pods bound to the node and the backend's workloads were listed.
    pub fn synced(&self) -> bool {
        let st = self.state();
        st.pods_synced && st.runtime_synced
    }

    /// Sets `vk_pods{node,phase}` from the pods known now (their counts, kept by [`State`]).
    fn record_phases(&self) {
        let counts = self.state().phase_counts;
        for (phase, n) in PHASES.iter().zip(counts) {
            metrics::gauge!(PODS, "node" => self.settings.node_name.clone(), "phase" => *phase)
                .set(n as f64);
        }
    }

    /// One reconcile of one pod key, timed.
    async fn sync(&self, key: &PodKey) -> Outcome {
        let started = std::time::Instant::now();
        let outcome = self.sync_steps(key).await;
        metrics::histogram!(RECONCILE_DURATION).record(started.elapsed().as_secs_f64());
        outcome
    }

    async fn sync_steps(&self, key: &PodKey) -> Outcome {
        let (pod, runtime, ctx) = {
            let st = self.state();
            if !st.runtime_synced {
                // What the backend runs is not known yet: decide nothing.
                return Outcome::Done;
            }
            let ctx = Context { now: Timestamp::now(), pods_synced: st.pods_synced };
            let pod = match st.pods.get(key).map(HeldPod::pod).transpose() {
                Ok(pod) => pod,
                Err(e) => return Outcome::Retry(SyncError::Held(e.to_string())),
            };
            (pod, st.runtime.get(key).map(|r| RuntimePod::clone(r)), ctx)
        };
        // A pod being deleted is looked at every second until its containers are gone, and a pod
        // whose workload changed is read again: fresh, instead of waiting for the next poll.
        let dirty = self.state().dirty.remove(key);
        let runtime = match (&pod, runtime) {
            (_, _) if dirty => match self.provider.get_pod(key).await {
                Ok(fresh) => {
                    self.remember(key, fresh.clone());
                    fresh
                }
                Err(e) => {
                    self.state().dirty.insert(key.clone());
                    return Outcome::Retry(SyncError::provider("reading the workload")(e));
                }
            },
            (Some(p), Some(_)) if pod::deletion_deadline(p).is_some() => {
                match self.provider.get_pod(key).await {
                    Ok(fresh) => {
                        self.remember(key, fresh.clone());
                        fresh
                    }
                    Err(e) => {
                        return Outcome::Retry(SyncError::provider("reading the workload")(e));
                    }
                }
            }
            (_, r) => r,
        };
        self.record_job(key, runtime.as_ref());
        // The probes' results laid over the runtime view: a sidecar's startup probe decides when
        // what follows it starts.
        let runtime = match (&pod, runtime) {
            (Some(p), Some(mut r)) => {
                r.sandbox = r.sandbox.take().map(|s| self.prober.apply(key, p, &r.id, s));
                Some(r)
            }
            (_, r) => r,
        };
        let steps = plan(pod.as_deref(), runtime.as_ref(), ctx);
        let mut runtime = runtime;
        for step in steps {
            let operation = operation_name(&step);
            let r = match step {
                Step::Create => self.create(key, pod.as_deref(), &mut runtime).await,
                Step::SyncStatus => self.sync_status(key, pod.as_deref(), runtime.as_ref()).await,
                Step::Stop => {
                    let mut hooks = PreStopHooks::Over;
                    if let Some(pod) = pod.as_deref() {
                        // preStop hooks first, within the grace period; the pod is queued again
                        // when they end (and polled meanwhile while it is being deleted).
                        if let Some(r) = runtime.as_ref() {
                            hooks = self.prober.pre_stop(key, pod, r);
                        }
                        if matches!(hooks, PreStopHooks::Started | PreStopHooks::Over) {
                            let killing = events::killing_events(pod, pod.status.as_ref());
                            self.record_container_events(pod, killing).await;
                        }
                    }
                    if matches!(hooks, PreStopHooks::Started | PreStopHooks::Running) {
                        debug!("waiting for preStop hooks before stopping the workload");
                        Ok(())
                    } else {
                        self.on_workload(key, &mut runtime, Op::Stop).await
                    }
                }
                Step::Kill => {
                    if let Some(pod) = pod.as_deref() {
                        // What still runs after the grace period is killed (pod_workers.go).
                        self.event_once(
                            pod,
                            None,
                            EventType::Warning,
                            "ExceededGracePeriod",
                            "Container runtime did not kill the pod within specified grace period.",
                        )
                        .await;
                    }
                    self.on_workload(key, &mut runtime, Op::Kill).await
                }
                Step::Purge { stale } => {
                    if stale {
                        info!("purging a workload whose pod is gone");
                    }
                    self.on_workload(key, &mut runtime, Op::Purge).await
                }
                Step::DeleteObject => self.delete_object(key, pod.as_deref()).await,
                Step::RequeueAfter(d) => {
                    self.queue.add_after(key.clone(), d);
                    Ok(())
                }
                Step::KeepFinal => Ok(()),
                Step::MarkLost => self.mark_lost(key, pod.as_deref()).await,
                Step::StartContainer(name) => self.start_container(runtime.as_ref(), &name).await,
                Step::UpdateWorkload => {
                    self.update_workload(key, pod.as_deref(), &mut runtime).await
                }
                Step::FailDeadline => {
                    self.fail_deadline(key, pod.as_deref(), runtime.as_ref()).await
                }
            };
            if let Some(operation) = operation {
                let result = r.as_ref().map_or_else(SyncError::kind, |()| "ok");
                metrics::counter!(POD_OPERATIONS, "operation" => operation, "result" => result)
                    .increment(1);
            }
            if let Err(why) = r {
                return Outcome::Retry(why);
            }
        }
        Outcome::Done
    }

    /// A resolver for one pass, sharing this controller's tokens and Services.
    fn resolver(&self) -> Resolver<'_, K> {
        let allocatable = *self.settings.allocatable.borrow();
        let r = Resolver::new(self.api.as_ref(), &self.tokens, allocatable, &self.settings.node_os);
        if self.settings.namespace_labels {
            r.with_namespace_labels(&self.namespace_labels)
        } else {
            r
        }
    }

    async fn create(
        &self,
        key: &PodKey,
        pod: Option<&Pod>,
        runtime: &mut Option<RuntimePod>,
    ) -> Result<(), SyncError> {
        let Some(pod) = pod else { return Ok(()) };
        let mut resolver = self.resolver();
        let inputs = resolver
            .inputs(pod)
            .await
            .map_err(SyncError::cluster("reading the pod's ConfigMaps, Secrets and tokens"))?;
        let spec = match WorkloadSpec::from_pod(pod, &inputs) {
            Ok(Translated { spec, notices }) => {
                // What the operator did not allow is refused before the backend sees the pod.
                if let Err(refused) =
                    vk_domain::policy::check_probes(&spec, &self.settings.probe_policy)
                {
                    return self.report_failure(key, pod, &refused.to_string()).await;
                }
                for n in notices {
                    self.event_once(pod, None, EventType::Warning, n.reason, &n.message).await;
                }
                spec
            }
            Err(Refusal::Unsupported(unsupported)) => {
                return self.report_failure(key, pod, &unsupported.to_string()).await;
            }
            Err(Refusal::Rejected(rejected)) => {
                // As the kubelet's admission: Failed with its reason, an Event, never started.
                let message = format!("Pod was rejected: {}", rejected.message);
                warn!(reason = rejected.reason, "{message}");
                self.event_once(pod, None, EventType::Warning, rejected.reason, &message).await;
                let st = status::rejected_status(
                    pod,
                    rejected.reason,
                    &rejected.message,
                    Timestamp::now(),
                );
                return self.write_status(key, pod, st).await;
            }
            Err(Refusal::Missing(missing)) => {
                // As a kubelet: the container waits in CreateContainerConfigError (env) or
                // ContainerCreating (a volume cannot be mounted) and the pod is tried again.
                self.event_once(pod, None, EventType::Warning, missing.reason, &missing.message)
                    .await;
                let waiting = if missing.reason == "FailedMount" {
                    "ContainerCreating"
                } else {
                    "CreateContainerConfigError"
                };
                let st = status::waiting_status(pod, waiting, &missing.message, Timestamp::now());
                self.write_status(key, pod, st).await?;
                return Err(SyncError::Missing(missing.to_string()));
            }
        };
        match self.provider.create_pod(&spec).await {
            Ok(()) => {}
            // The backend's refusal as it words it (`<field>: <reason>`), as the domain's.
            Err(ProviderError::InvalidInput(why) | ProviderError::Unsupported(why)) => {
                return self.report_failure(key, pod, &why).await;
            }
            Err(e @ ProviderError::Conflict(_)) => {
                return self.report_failure(key, pod, &e.to_string()).await;
            }
            Err(e) => return Err(SyncError::provider("creating the workload")(e)),
        }
        // Read it back at once so the status says what was placed.
        self.read_back(key, runtime).await?;
        info!("workload created");
        self.sync_status(key, Some(pod), runtime.as_ref()).await
    }

    /// Records the workload ID into the `job` field of the current `sync_pod` span of `key` (see
    /// [`pod_span!`]), unless that ID is already there: text logs append a recorded field, so
    /// each ID is recorded once.
    fn record_job(&self, key: &PodKey, runtime: Option<&RuntimePod>) {
        let Some(r) = runtime else { return };
        let mut st = self.state();
        if st.span_job.get(key) != Some(&r.id) {
            st.span_job.insert(key.clone(), r.id.clone());
            Span::current().record("job", tracing::field::display(&r.id));
        }
    }

    /// Remembers `fresh` as the workload of `key` and makes it the one this pass works on.
    fn replace_runtime(
        &self,
        key: &PodKey,
        runtime: &mut Option<RuntimePod>,
        fresh: Option<RuntimePod>,
    ) {
        self.record_job(key, fresh.as_ref());
        self.remember(key, fresh.clone());
        *runtime = fresh;
    }

    fn remember(&self, key: &PodKey, runtime: Option<RuntimePod>) {
        let mut st = self.state();
        match runtime {
            Some(r) => st.runtime.insert(key.clone(), Box::new(r)),
            None => st.runtime.remove(key),
        };
    }

    /// Brings the workload up to an update Kubernetes allows on a running pod (an image).
    async fn update_workload(
        &self,
        key: &PodKey,
        pod: Option<&Pod>,
        runtime: &mut Option<RuntimePod>,
    ) -> Result<(), SyncError> {
        let Some(pod) = pod else { return Ok(()) };
        let mut resolver = self.resolver();
        let inputs =
            resolver.inputs(pod).await.map_err(SyncError::cluster("reading the pod's inputs"))?;
        let spec = match WorkloadSpec::from_pod(pod, &inputs) {
            Ok(t) => t.spec,
            Err(e) => {
                warn!(error = %e, "the updated pod cannot be translated; the workload is left as it is");
                return Ok(());
            }
        };
        match self.provider.replace_images(&spec).await {
            Ok(()) => info!("workload updated"),
            Err(e @ (ProviderError::InvalidInput(_) | ProviderError::Unsupported(_))) => {
                warn!(error = %e, "the backend refused the update; the workload is left as it is");
                return Ok(());
            }
            Err(e) => return Err(SyncError::provider("updating the workload")(e)),
        }
        self.read_back(key, runtime).await
    }

    /// Reads the workload of `key` again after a change made to it, in place of `runtime`.
    async fn read_back(
        &self,
        key: &PodKey,
        runtime: &mut Option<RuntimePod>,
    ) -> Result<(), SyncError> {
        let fresh = self
            .provider
            .get_pod(key)
            .await
            .map_err(SyncError::provider("reading the workload"))?;
        self.replace_runtime(key, runtime, fresh);
        Ok(())
    }

    async fn start_container(
        &self,
        runtime: Option<&RuntimePod>,
        name: &str,
    ) -> Result<(), SyncError> {
        let Some(r) = runtime else { return Ok(()) };
        self.provider.start_container(&r.id, name).await.map_err(|source| SyncError::Provider {
            doing: format!("releasing init container {name}").into(),
            source,
        })?;
        debug!(container = name, "init container released");
        Ok(())
    }

    /// Every `refresh_interval`, brings the volume files of running pods up to date.
    async fn refresh(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.refresh_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.refresh_once().await;
        }
    }

    /// One refresh round; reads are shared between pods.
    pub async fn refresh_once(&self) {
        let pods: Vec<(Arc<Pod>, WorkloadId)> = {
            let mut st = self.state();
            let live: HashSet<String> = st.pods.values().map(|p| p.uid().to_owned()).collect();
            self.tokens.retain(&live);
            self.prober.retain(&live);
            st.recorded.retain(|uid, _| live.contains(uid));
            st.pods
                .iter()
                .filter(|(k, p)| {
                    p.has_files()
                        && !p.is_terminal()
                        && !p.is_deleting()
                        && st.runtime.get(k).is_some_and(|r| {
                            r.owner.uid == p.uid() && !r.stopping && !r.is_terminated()
                        })
                })
                .filter_map(|(k, p)| {
                    let pod = p.pod_or_log()?;
                    Some((pod, st.runtime.get(k)?.id.clone()))
                })
                .collect()
        };
        let mut resolver = self.resolver();
        for (pod, job) in pods {
            let key = match PodKey::of(&pod) {
                Ok(k) => k,
                Err(_) => continue,
            };
            let span = pod_span!("refresh_pod", &key, job = job);
            async {
                let inputs = match resolver.inputs(&pod).await {
                    Ok(i) => i,
                    Err(e) => {
                        debug!(error = %e, "reading the pod's inputs failed; files left as they are");
                        return;
                    }
                };
                // A source that went missing leaves the files as they were, as on a kubelet.
                let Ok(Translated { spec, .. }) = WorkloadSpec::from_pod(&pod, &inputs) else {
                    return;
                };
                if !spec.volumes.iter().any(|v| matches!(v.source, Source::Files(_))) {
                    return;
                }
                match self.provider.refresh_files(&spec).await {
                    Ok(()) => debug!("pod files brought up to date"),
                    Err(e) => warn!(error = %e, "updating the pod's files failed"),
                }
            }
            .instrument(span)
            .await;
        }
    }

    async fn on_workload(
        &self,
        key: &PodKey,
        runtime: &mut Option<RuntimePod>,
        op: Op,
    ) -> Result<(), SyncError> {
        let Some(id) = runtime.as_ref().map(|r| r.id.clone()) else { return Ok(()) };
        let r = match op {
            Op::Stop => self.provider.stop_pod(&id).await,
            Op::Kill => self.provider.kill_pod(&id).await,
            Op::Purge => self.provider.purge_pod(&id).await,
        };
        match r {
            Ok(()) | Err(ProviderError::NotFound(_)) => {}
            Err(source) => {
                return Err(SyncError::Provider { doing: format!("{op:?} {id}").into(), source });
            }
        }
        info!("{}", op.done());
        let fresh = match op {
            Op::Purge => None,
            _ => self
                .provider
                .get_pod(key)
                .await
                .map_err(SyncError::provider("reading the workload"))?,
        };
        self.replace_runtime(key, runtime, fresh);
        Ok(())
    }

    async fn delete_object(&self, key: &PodKey, pod: Option<&Pod>) -> Result<(), SyncError> {
        let Some(pod) = pod else { return Ok(()) };
        self.api
            .delete(key, pod::uid(pod))
            .await
            .map_err(SyncError::cluster("deleting the pod object"))?;
        info!("pod object deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(name: &str, phase: &str) -> (PodKey, HeldPod) {
        let p = vk_domain::testing::pod(name).namespace("ns").phase(phase).build();
        (PodKey::of(&p).unwrap_or_else(|e| panic!("{e}")), HeldPod::new(p))
    }

    /// The phase counts follow every change of the held pods, so `vk_pods` needs no walk.
    #[test]
    fn phase_counts_follow_the_held_pods() {
        let mut st = State::default();
        let at = |st: &State, phase: &str| {
            st.phase_counts[PHASES.iter().position(|p| *p == phase).unwrap_or(usize::MAX)]
        };
        let (a, pending) = held("a", "Pending");
        st.hold(a.clone(), pending);
        let (b, running) = held("b", "Running");
        st.hold(b.clone(), running);
        assert_eq!((at(&st, "Pending"), at(&st, "Running")), (1, 1));
        let (_, now_running) = held("a", "Running");
        st.hold(a.clone(), now_running);
        assert_eq!((at(&st, "Pending"), at(&st, "Running")), (0, 2), "a replaced, not added");
        st.release(&b);
        st.release(&b);
        assert_eq!(at(&st, "Running"), 1, "a second release changes nothing");
        let relisted: HashMap<PodKey, HeldPod> =
            [held("c", "Failed"), held("d", "Succeeded"), held("e", "Failed")]
                .into_iter()
                .collect();
        st.hold_all(relisted);
        assert_eq!(
            (at(&st, "Running"), at(&st, "Failed"), at(&st, "Succeeded")),
            (0, 2, 1),
            "a relist counts afresh"
        );
        assert_eq!(st.phase_counts.iter().sum::<usize>(), st.pods.len());
    }
}
