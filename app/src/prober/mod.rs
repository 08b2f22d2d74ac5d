//! Readiness, liveness and startup probes, run by the virtual kubelet as a kubelet's prober manager
//! runs them (`pkg/kubelet/prober`): one worker per container instance and probe, results kept
//! here and laid over the runtime's view when the pod status is computed.
//!
//! - httpGet, tcpSocket and grpc reach the pod's address (`status.podIP`) on the container port,
//!   through the backend's port mapping when it has one (grpc: the `grpc.health.v1` check in
//!   plain-text HTTP/2, `grpc`); exec runs the command in the container through the backend
//!   ([`ProbeTarget::exec`]).
//! - A probe's `host` other than the pod's address is dialled only when the operator's policy
//!   allows it ([`vk_domain::policy`]; the pod was refused at creation otherwise, this is the
//!   second line) and never when it is, or resolves to, a loopback, link-local, unspecified or
//!   multicast address. Redirects are followed as the kubelet follows them
//!   (`probe/http.RedirectChecker` with `followNonLocalRedirects` false): to the same host name
//!   only, 10 at most; a redirect elsewhere is not followed and the 3xx answer counts as success.
//! - A readiness change queues the pod at once, so its `Ready` condition follows without waiting
//!   for a poll. Liveness and startup failures past `failureThreshold` restart the container
//!   ([`ProbeTarget::restart_container`]); the probes of the new instance start from scratch.
//! - A container instance is its sandbox, restart count and start time: a restarted container
//!   gets new workers, a worker of an instance that is gone stops.
//! - Each failure is a Warning Event `Unhealthy` (`<Kind> probe failed: <output>`), each 3xx
//!   answer not followed a Warning Event `ProbeWarning` (`<Kind> probe warning: Probe terminated
//!   redirects, Response body: <body>`), as the kubelet's `prober.runProbeWithRetries` records
//!   them; they wait here ([`Prober::take_events`], 16 a pod at most) for the pod's next sync.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};
use vk_domain::pod::{self, PodKey};
use vk_domain::policy::{ProbeGrant, Rules};
use vk_domain::probe::{self, Handler, Kind, Probe, State};
use vk_domain::runtime::WorkloadId;
use vk_domain::runtime::{ContainerState, Sandbox};
use vk_ports::{PodNetwork, ProbeTarget};

mod grpc;
mod hooks;
mod network;

pub use self::hooks::{POST_START_HOOK_ERROR, PreStopHooks};

use crate::pod_controller::pod_span;
use crate::queue::WorkQueue;

type WorkerKey = (String, String, Kind);

#[derive(Debug, Clone, Copy, Default)]
struct Results {
    ready: Option<bool>,
    started: Option<bool>,
}

#[derive(Default)]
struct Inner {
    /// Workers by pod UID, container and probe: the instance they probe and how to stop them.
    workers: HashMap<WorkerKey, (String, CancellationToken)>,
    /// Results by pod UID and container.
    results: HashMap<(String, String), Results>,
    /// Container instances restarted for a failed probe (pod UID, container, instance): never
    /// probed again, even if a stale view shows them running a moment longer.
    restarted: HashSet<(String, String, String)>,
    /// Wakes the readiness worker of (pod UID, container) when its startup probe succeeds, so
    /// that readiness is probed at once, not a readiness period later (the kubelet's worker
    /// `manualTriggerCh`).
    startup_done: HashMap<(String, String), Arc<tokio::sync::Notify>>,
    /// Events waiting for the pod's next sync, by pod UID: container, reason, message.
    events: HashMap<String, Vec<ProbeEvent>>,
    /// postStart hooks by (pod UID, container): the instance hooked, how it stands, and how to
    /// stop it.
    post_start: HashMap<(String, String), (String, hooks::PostStart, CancellationToken)>,
    /// preStop hooks by pod UID.
    pre_stop: HashMap<String, hooks::PreStop>,
}

/// The Events a pod's probes leave for it before the next sync; more are dropped.
const EVENTS_PER_POD: usize = 16;

/// A Warning Event of a probe: the container it is about, the kubelet's reason (`Unhealthy`,
/// `ProbeWarning`) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEvent {
    /// The container's name.
    pub container: String,
    /// `Unhealthy` or `ProbeWarning`.
    pub reason: &'static str,
    /// `<Kind> probe failed: <output>` or `<Kind> probe warning: <output>`.
    pub message: String,
}

/// What one probe found (the kubelet's `probe.Result` and its output).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Success,
    /// Success that the pod's owner should hear of: a redirect not followed.
    Warning(String),
    Failure(String),
}

/// Why a probe or hook does not dial ([`Prober::dial_host`]).
enum Refused<'h> {
    /// A host other than the pod's that the policy does not allow.
    Host(&'h str),
    /// The pod has no address yet.
    NoAddress,
}

/// A running container instance, as probe workers and postStart hooks key it: its sandbox,
/// restart count and start time (a restart or a new sandbox is a new instance).
fn instance(
    sandbox: &str,
    restart_count: i32,
    started_at: Option<&vk_domain::jiff::Timestamp>,
) -> String {
    format!("{sandbox}/{restart_count}/{started_at:?}")
}

/// The probe workers of every pod.
pub struct Prober<P> {
    provider: Arc<P>,
    queue: Arc<WorkQueue<PodKey>>,
    policy: Arc<Rules<ProbeGrant>>,
    inner: Mutex<Inner>,
    /// The parent of every worker's token: cancelled by [`Prober::stop`] on shutdown, so that no
    /// probe runs, or restarts a container, after it.
    root: CancellationToken,
}

/// Where a probe connects: the pod's address (`status.podIP`), once it has one. Its ports are
/// reached through the backend ([`PodNetwork::dial`]), which maps them.
#[derive(Debug, Clone)]
struct Target {
    ip: Option<String>,
}

impl<P: ProbeTarget + PodNetwork> Prober<P> {
    /// A prober that queues pod keys on `queue` when a result changes; probes name only the
    /// hosts `policy` allows besides the pod's address.
    pub fn new(
        provider: Arc<P>,
        queue: Arc<WorkQueue<PodKey>>,
        policy: Arc<Rules<ProbeGrant>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            provider,
            queue,
            policy,
            inner: Mutex::new(Inner::default()),
            root: CancellationToken::new(),
        })
    }

    /// Stops every probe worker, and any started later at once (on shutdown).
    pub fn stop(&self) {
        self.root.cancel();
    }

    /// Whether a probe of a pod at `pod_ip` may dial `host`: the pod's own address always, any
    /// other only if some grant of the policy allows it and it is not an address never dialled.
    fn may_dial(&self, host: &str, pod_ip: Option<&str>) -> bool {
        pod_ip == Some(host) || vk_domain::policy::probe_host_allowed(host, self.policy.all())
    }

    /// The host a probe or hook naming `host` dials through `to`: `None` for the pod itself (no
    /// host, or the pod's address), else the host, if the policy allows it ([`Prober::may_dial`]).
    ///
    /// # Errors
    /// [`Refused::Host`] for a host the policy does not allow, [`Refused::NoAddress`] for the
    /// pod while it has no address yet.
    fn dial_host<'h>(
        &self,
        to: &network::Endpoint<'_, P>,
        host: Option<&'h str>,
    ) -> Result<Option<&'h str>, Refused<'h>> {
        match host {
            Some(h) if !to.is_pod(Some(h)) && !self.may_dial(h, to.pod_ip) => Err(Refused::Host(h)),
            Some(h) if !to.is_pod(Some(h)) => Ok(Some(h)),
            _ if to.pod_ip.is_none() => Err(Refused::NoAddress),
            _ => Ok(None),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts and stops workers for what `sandbox` runs of `pod` (workload `id`), and returns the
    /// sandbox with the probe results laid over its containers.
    pub fn apply(
        self: &Arc<Self>,
        key: &PodKey,
        pod: &Pod,
        id: &WorkloadId,
        mut sandbox: Sandbox,
    ) -> Sandbox {
        let uid = pod::uid(pod).to_owned();
        let Some(spec) = &pod.spec else { return sandbox };
        let probed = spec.containers.iter().chain(
            spec.init_containers.iter().flatten().filter(|c| vk_domain::status::is_sidecar(c)),
        );
        let target = Target { ip: sandbox.pod_ip.clone() };
        let terminal = sandbox.is_terminal();
        let mut inner = self.inner();
        // A container whose postStart hook has not succeeded is not running yet, nor probed.
        self.post_start(&mut inner, key, pod, id, &mut sandbox);
        for c in probed {
            let probes: Vec<(Kind, Probe)> = [
                (Kind::Readiness, &c.readiness_probe),
                (Kind::Liveness, &c.liveness_probe),
                (Kind::Startup, &c.startup_probe),
            ]
            .into_iter()
            .filter_map(|(kind, p)| {
                let p = probe::parse(&c.name, p.as_ref()?, c, kind).ok()?;
                Some((kind, p))
            })
            .collect();
            if probes.is_empty() {
                continue;
            }
            let Some(rt) = sandbox.containers.get_mut(&c.name) else { continue };
            let instance = match &rt.state {
                ContainerState::Running { started_at } if !terminal => {
                    Some(instance(&sandbox.id, rt.restart_count, started_at.as_ref()))
                }
                _ => None,
            };
            let rkey = (uid.clone(), c.name.clone());
            for (kind, p) in probes {
                let wkey = (uid.clone(), c.name.clone(), kind);
                let current = inner.workers.get(&wkey).map(|(i, _)| i.clone());
                if current.is_some() && current == instance {
                    continue;
                }
                if let Some((_, cancel)) = inner.workers.remove(&wkey) {
                    cancel.cancel();
                }
                let r = inner.results.entry(rkey.clone()).or_default();
                match kind {
                    Kind::Readiness => r.ready = None,
                    Kind::Startup => r.started = None,
                    Kind::Liveness => {}
                }
                let Some(instance) = instance.clone() else { continue };
                if inner.restarted.contains(&(uid.clone(), c.name.clone(), instance.clone())) {
                    continue;
                }
                let cancel = self.root.child_token();
                inner.workers.insert(wkey, (instance.clone(), cancel.clone()));
                let worker = Worker {
                    prober: Arc::clone(self),
                    key: key.clone(),
                    uid: uid.clone(),
                    container: c.name.clone(),
                    has_startup: c.startup_probe.is_some(),
                    id: id.clone(),
                    kind,
                    probe: p,
                    target: target.clone(),
                    instance,
                };
                let span = pod_span!("probe", key, job = id, container = %c.name, kind = ?kind);
                tokio::spawn(worker.run(cancel).instrument(span));
            }
            let r = inner.results.get(&rkey).copied().unwrap_or_default();
            rt.probe_ready = r.ready;
            rt.probe_started = r.started;
        }
        sandbox
    }

    /// Stops the workers of pods whose UID is not in `live`, and forgets their results.
    pub fn retain(&self, live: &HashSet<String>) {
        let mut inner = self.inner();
        inner.workers.retain(|(uid, _, _), (_, cancel)| {
            let keep = live.contains(uid);
            if !keep {
                cancel.cancel();
            }
            keep
        });
        inner.results.retain(|(uid, _), _| live.contains(uid));
        inner.restarted.retain(|(uid, _, _)| live.contains(uid));
        inner.startup_done.retain(|(uid, _), _| live.contains(uid));
        inner.events.retain(|uid, _| live.contains(uid));
        inner.post_start.retain(|(uid, _), (_, _, cancel)| {
            let keep = live.contains(uid);
            if !keep {
                cancel.cancel();
            }
            keep
        });
        inner.pre_stop.retain(|uid, p| {
            let keep = live.contains(uid);
            if !keep {
                p.cancel.cancel();
            }
            keep
        });
    }

    /// The probe Events of pod `uid` since the last call, oldest first.
    pub fn take_events(&self, uid: &str) -> Vec<ProbeEvent> {
        self.inner().events.remove(uid).unwrap_or_default()
    }

    fn push_event(&self, uid: &str, event: ProbeEvent) {
        let mut inner = self.inner();
        let pending = inner.events.entry(uid.to_owned()).or_default();
        if pending.len() < EVENTS_PER_POD {
            pending.push(event);
        }
    }

    /// The notification a container's startup success gives its readiness worker.
    fn startup_done(&self, uid: &str, container: &str) -> Arc<tokio::sync::Notify> {
        let mut inner = self.inner();
        Arc::clone(inner.startup_done.entry((uid.to_owned(), container.to_owned())).or_default())
    }

    fn set(&self, uid: &str, container: &str, kind: Kind, value: bool) {
        let mut inner = self.inner();
        let r = inner.results.entry((uid.to_owned(), container.to_owned())).or_default();
        match kind {
            Kind::Readiness => r.ready = Some(value),
            Kind::Startup => r.started = Some(value),
            Kind::Liveness => {}
        }
    }

    fn ready(&self, uid: &str, container: &str) -> Option<bool> {
        let inner = self.inner();
        inner.results.get(&(uid.to_owned(), container.to_owned())).and_then(|r| r.ready)
    }

    fn started(&self, uid: &str, container: &str) -> bool {
        let inner = self.inner();
        inner
            .results
            .get(&(uid.to_owned(), container.to_owned()))
            .and_then(|r| r.started)
            .unwrap_or(false)
    }
}

struct Worker<P> {
    prober: Arc<Prober<P>>,
    key: PodKey,
    uid: String,
    container: String,
    has_startup: bool,
    id: WorkloadId,
    kind: Kind,
    probe: Probe,
    target: Target,
    instance: String,
}

impl<P: ProbeTarget + PodNetwork> Worker<P> {
    async fn run(self, cancel: CancellationToken) {
        // A readiness worker waiting for the startup probe is woken when it succeeds.
        let woken = (self.kind == Kind::Readiness && self.has_startup)
            .then(|| self.prober.startup_done(&self.uid, &self.container));
        let sleep = |d: Duration| {
            let cancel = cancel.clone();
            let woken = woken.clone();
            async move {
                let wake = async {
                    match &woken {
                        Some(n) => n.notified().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = cancel.cancelled() => false,
                    _ = tokio::time::sleep(d) => true,
                    () = wake => true,
                }
            }
        };
        if !sleep(self.probe.initial_delay).await {
            return;
        }
        let mut state = State::new(self.kind);
        loop {
            // Readiness and liveness wait for the startup probe to succeed.
            let waiting = self.kind != Kind::Startup
                && self.has_startup
                && !self.prober.started(&self.uid, &self.container);
            if !waiting {
                let outcome = self.check().await;
                let ok = !matches!(outcome, Outcome::Failure(_));
                let kind = match self.kind {
                    Kind::Readiness => "Readiness",
                    Kind::Liveness => "Liveness",
                    Kind::Startup => "Startup",
                };
                let event = match outcome {
                    Outcome::Success => None,
                    Outcome::Warning(out) => {
                        Some(("ProbeWarning", format!("{kind} probe warning: {out}")))
                    }
                    Outcome::Failure(out) => {
                        Some(("Unhealthy", format!("{kind} probe failed: {out}")))
                    }
                };
                if let Some((reason, message)) = event {
                    let container = self.container.clone();
                    self.prober.push_event(&self.uid, ProbeEvent { container, reason, message });
                    self.prober.queue.add(self.key.clone());
                }
                let changed = state.record(ok, &self.probe);
                match self.kind {
                    Kind::Readiness => {
                        let result = state.result();
                        if self.prober.ready(&self.uid, &self.container) != Some(result) {
                            if changed.is_some() {
                                info!(ready = result, "readiness changed");
                            }
                            self.prober.set(&self.uid, &self.container, Kind::Readiness, result);
                            self.prober.queue.add(self.key.clone());
                        }
                    }
                    Kind::Startup if ok => {
                        info!("startup probe succeeded");
                        self.prober.set(&self.uid, &self.container, Kind::Startup, true);
                        // notify_one keeps the wake-up if the readiness worker is mid-probe.
                        self.prober.startup_done(&self.uid, &self.container).notify_one();
                        self.prober.queue.add(self.key.clone());
                        return;
                    }
                    Kind::Startup | Kind::Liveness if changed == Some(false) => {
                        warn!(
                            failures = self.probe.failure_threshold,
                            "probe failed; restarting the container"
                        );
                        self.restart(&cancel).await;
                        return;
                    }
                    _ => {}
                }
            }
            if !sleep(self.probe.period).await {
                return;
            }
        }
    }

    /// Restarts the container, retrying (500 ms doubling to 10 s) until it is done, the
    /// container is gone, or the worker is stopped.
    async fn restart(&self, cancel: &CancellationToken) {
        use backon::Retryable as _;
        self.prober.inner().restarted.insert((
            self.uid.clone(),
            self.container.clone(),
            self.instance.clone(),
        ));
        let backoff = backon::ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(10))
            .without_max_times();
        let restart = || self.prober.provider.restart_container(&self.id, &self.container);
        let retried = restart
            .retry(backoff)
            .when(|e| !matches!(e, vk_ports::ProviderError::NotFound(_)))
            .notify(|e, _| warn!(error = %e, "restarting the container failed; retrying"));
        tokio::select! {
            () = cancel.cancelled() => {}
            r = retried => match r {
                Ok(()) => self.prober.queue.add(self.key.clone()),
                Err(why) => debug!(%why, "the container is not running any more"),
            },
        }
    }

    /// One probe, bounded by `timeoutSeconds`, with the kubelet's output: the response body of a
    /// 3xx answer not followed, else why it failed.
    async fn check(&self) -> Outcome {
        let timeout = self.probe.timeout;
        let pod_ip = self.target.ip.as_deref();
        let to = network::Endpoint {
            provider: &*self.prober.provider,
            id: &self.id,
            pod_ip,
            agent: network::USER_AGENT_VALUE,
        };
        // A `host` other than the pod's is dialled only when the policy allows it.
        let allowed = |host: &Option<String>| match self.prober.dial_host(&to, host.as_deref()) {
            Ok(h) => Ok(h.map(str::to_owned)),
            Err(Refused::Host(h)) => {
                debug!(host = h, "the probe's host is not allowed; the probe fails");
                Err(Outcome::Failure(format!(
                    "the probe's host {h:?} is not one the operator allows"
                )))
            }
            Err(Refused::NoAddress) => {
                Err(Outcome::Failure("the pod has no IP address yet".to_owned()))
            }
        };
        let result = match &self.probe.handler {
            Handler::Tcp { host, port } => {
                let host = match allowed(host) {
                    Ok(h) => h,
                    Err(refused) => return refused,
                };
                let at = to.authority(host.as_deref(), *port);
                match tokio::time::timeout(timeout, to.connect(host.as_deref(), *port)).await {
                    Ok(Ok(_)) => Outcome::Success,
                    Ok(Err(e)) => Outcome::Failure(e),
                    Err(_) => Outcome::Failure(format!("dial tcp {at}: i/o timeout")),
                }
            }
            Handler::Http { https, host, port, path, headers } => {
                let host = match allowed(host) {
                    Ok(h) => h,
                    Err(refused) => return refused,
                };
                let scheme = if *https { "https" } else { "http" };
                let url = format!("{scheme}://{}{path}", to.authority(host.as_deref(), *port));
                let get = to.get(*https, host.as_deref(), *port, path, headers);
                match tokio::time::timeout(timeout, get).await {
                    Ok(Ok(a)) if (200..300).contains(&a.code) => Outcome::Success,
                    Ok(Ok(a)) if (300..400).contains(&a.code) => Outcome::Warning(format!(
                        "Probe terminated redirects, Response body: {}",
                        a.body
                    )),
                    Ok(Ok(a)) => {
                        Outcome::Failure(format!("HTTP probe failed with statuscode: {}", a.code))
                    }
                    Ok(Err(e)) => Outcome::Failure(format!("Get \"{url}\": {e}")),
                    Err(_) => Outcome::Failure(format!("Get \"{url}\": context deadline exceeded")),
                }
            }
            Handler::Grpc { port, service } => {
                // Always the pod's own address (the probe has no host), as the kubelet dials it.
                let at = to.authority(None, *port);
                let call = async {
                    let conn = to.connect(None, *port).await.map_err(|e| (true, e))?;
                    grpc::check(conn, &at, service.as_deref()).await.map_err(|e| (false, e))
                };
                // The kubelet's messages (`pkg/probe/grpc`).
                match tokio::time::timeout(timeout, call).await {
                    Ok(Ok(grpc::Answer::Status(grpc::SERVING))) => Outcome::Success,
                    Ok(Ok(grpc::Answer::Status(other))) => Outcome::Failure(format!(
                        "service unhealthy (responded with {:?})",
                        grpc::status_name(other)
                    )),
                    Ok(Ok(grpc::Answer::Failed { code: 12, message })) => {
                        Outcome::Failure(format!(
                            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {message}"
                        ))
                    }
                    Ok(Ok(grpc::Answer::Failed { code, message })) => Outcome::Failure(format!(
                        "error: health rpc probe failed: rpc error: code = {code} desc = {message}"
                    )),
                    Ok(Err((true, e))) => {
                        Outcome::Failure(format!("error: failed to connect service at {at:?}: {e}"))
                    }
                    Ok(Err((false, e))) => {
                        Outcome::Failure(format!("error: health rpc probe failed: {e}"))
                    }
                    Err(_) => Outcome::Failure(format!(
                        "timeout: health rpc did not complete within {timeout:?}"
                    )),
                }
            }
            Handler::Exec { command } => {
                // `timeoutSeconds` bounds each run of the command (a success may be confirmed).
                let exec = self.prober.provider.exec(&self.id, &self.container, command);
                match tokio::time::timeout(timeout * vk_ports::EXEC_RUNS, exec).await {
                    Ok(Ok(0)) => Outcome::Success,
                    Ok(Ok(code)) => {
                        Outcome::Failure(format!("command {command:?} exited with {code}"))
                    }
                    Ok(Err(e)) => Outcome::Failure(e.to_string()),
                    Err(_) => {
                        Outcome::Failure(format!("command {command:?} timed out after {timeout:?}"))
                    }
                }
            }
        };
        debug!(outcome = ?result, "probe");
        result
    }
}
