//! Lifecycle hooks, run as the kubelet runs them (`kuberuntime_container.go` `startContainer`
//! and `killContainer`, `lifecycle/handlers.go`).
//!
//! - **postStart** runs once per container instance (the instance a probe worker knows: sandbox,
//!   restart count, start time), as soon as the backend shows it running. Until the hook ends
//!   the container is shown `Waiting` (`ContainerCreating`), not ready, and is not probed: on a
//!   kubelet its pod worker is inside `startContainer` for that long, so the status still says
//!   what it said before the start. A failed hook is a Warning Event `FailedPostStartHook`
//!   ("PostStartHook failed": the hook's output stays out of Events, as the kubelet keeps it out,
//!   since it may hold secrets), the container waits as `PostStartHookError` with the hook's
//!   message, and is killed ([`ProbeTarget::kill_container`]); the pod's `restartPolicy` decides
//!   whether it starts again.
//! - **preStop** runs in every container that runs when the pod is stopped (deleted, failed by its
//!   deadline), all at once, as the kubelet kills containers in parallel; the workload is stopped
//!   once all ended or the grace period (what is left of the deletion's, else
//!   `terminationGracePeriodSeconds`) ran out. A failure is a Warning Event `FailedPreStopHook`
//!   ("PreStopHook failed") and stops nothing else.
//! - **exec** runs the command in the container through the backend ([`ProbeTarget::exec`]);
//!   **httpGet** GETs the pod's address (or a `host` the operator allows, as for probes) with
//!   `User-Agent: kube-lifecycle/1.36`, and any answer is a success (the kubelet reads no status
//!   code); an HTTPS hook whose server answers in plain HTTP is retried in HTTP and, if that
//!   works, a Warning Event `LifecycleHTTPFallback` says so; **sleep** waits.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};
use vk_domain::jiff::Timestamp;
use vk_domain::lifecycle::{self, Action};
use vk_domain::pod::{self, PodKey};
use vk_domain::probe::Handler;
use vk_domain::runtime::{ContainerState, RuntimePod, Sandbox, WorkloadId};
use vk_ports::{PodNetwork, ProbeTarget};

use super::{ProbeEvent, Prober, Refused, network};
use crate::pod_controller::pod_span;

/// The `waiting.reason` of a container whose postStart hook failed (`ErrPostStartHook`).
pub const POST_START_HOOK_ERROR: &str = "PostStartHookError";

/// How one container instance's postStart hook stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PostStart {
    Running,
    Done,
    /// Failed with the kubelet's message.
    Failed(String),
}

/// The preStop hooks of one pod: started once, done when all ended or the grace ran out.
pub(super) struct PreStop {
    pub(super) done: bool,
    pub(super) cancel: CancellationToken,
}

/// Where the preStop hooks of a pod stand ([`Prober::pre_stop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreStopHooks {
    /// Started by this call: stop the workload later.
    Started,
    /// Started earlier and still running, with grace left: stop the workload later.
    Running,
    /// Started earlier and all ended, or the grace is over: stop the workload now.
    Ended,
    /// None to run: stop the workload now.
    Over,
}

/// `[a b c]`, as Go prints a `[]string`.
fn go_list(command: &[String]) -> String {
    format!("[{}]", command.join(" "))
}

/// `<namespace>/<name>` and the UID, as the kubelet's `format.Pod` names a pod in messages.
fn pod_name(pod: &Pod) -> String {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    format!("{ns}/{name}({})", pod::uid(pod))
}

impl<P: ProbeTarget + PodNetwork> Prober<P> {
    /// Starts the postStart hook of each container of `pod` that `sandbox` shows running in an
    /// instance not yet hooked, and shows every container whose hook has not succeeded as
    /// waiting (`ContainerCreating` while it runs, [`POST_START_HOOK_ERROR`] once it failed).
    pub(super) fn post_start(
        self: &Arc<Self>,
        inner: &mut super::Inner,
        key: &PodKey,
        pod: &Pod,
        id: &WorkloadId,
        sandbox: &mut Sandbox,
    ) {
        let Some(spec) = &pod.spec else { return };
        if sandbox.is_terminal() {
            return;
        }
        let uid = pod::uid(pod);
        let all = spec.init_containers.iter().flatten().chain(&spec.containers);
        let pod_ip = sandbox.pod_ip.clone();
        let sandbox_id = sandbox.id.clone();
        for c in all {
            let Some(l) = &c.lifecycle else { continue };
            if l.post_start.is_none() {
                continue;
            }
            let Ok(lifecycle::Hooks { post_start: Some(action), .. }) =
                lifecycle::parse(&c.name, c)
            else {
                continue;
            };
            let Some(rt) = sandbox.containers.get_mut(&c.name) else { continue };
            let ContainerState::Running { started_at } = &rt.state else { continue };
            let now = super::instance(&sandbox_id, rt.restart_count, started_at.as_ref());
            let hkey = (uid.to_owned(), c.name.clone());
            let state = match inner.post_start.get(&hkey) {
                Some((i, state, _)) if *i == now => state.clone(),
                _ => {
                    if let Some((_, _, cancel)) = inner.post_start.remove(&hkey) {
                        cancel.cancel();
                    }
                    let cancel = self.root.child_token();
                    inner
                        .post_start
                        .insert(hkey, (now.clone(), PostStart::Running, cancel.clone()));
                    let run = HookRun {
                        prober: Arc::clone(self),
                        key: key.clone(),
                        uid: uid.to_owned(),
                        pod: pod_name(pod),
                        container: c.name.clone(),
                        id: id.clone(),
                        pod_ip: pod_ip.clone(),
                    };
                    let span = pod_span!("post_start", key, job = id, container = %c.name);
                    tokio::spawn(run.post_start(action, now.clone(), cancel).instrument(span));
                    PostStart::Running
                }
            };
            rt.post_start_pending = state != PostStart::Done;
            match state {
                PostStart::Done => {}
                PostStart::Running => {
                    rt.state = ContainerState::Waiting {
                        reason: "ContainerCreating".into(),
                        message: None,
                    };
                }
                PostStart::Failed(message) => {
                    rt.state = ContainerState::Waiting {
                        reason: POST_START_HOOK_ERROR.into(),
                        message: Some(message),
                    };
                }
            }
        }
    }

    /// Starts, once per pod, the preStop hooks of the containers of `pod` that `runtime` shows
    /// running, bounded by the grace period left (until `deletionTimestamp` when the pod is being
    /// deleted, else `terminationGracePeriodSeconds`, 30 s by default). The workload is to be
    /// stopped only once they are [`PreStopHooks::Ended`] (or there are none); the pod is queued when they end.
    pub fn pre_stop(
        self: &Arc<Self>,
        key: &PodKey,
        pod: &Pod,
        runtime: &RuntimePod,
    ) -> PreStopHooks {
        let uid = pod::uid(pod).to_owned();
        let now = Timestamp::now();
        let grace = match pod::deletion_deadline(pod) {
            Some(deadline) => {
                let left = deadline.duration_since(now);
                Duration::try_from(left).unwrap_or(Duration::ZERO)
            }
            None => Duration::from_secs(
                pod.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(30),
            ),
        };
        let mut inner = self.inner();
        if let Some(p) = inner.pre_stop.get(&uid) {
            let running = !p.done && !grace.is_zero();
            return if running { PreStopHooks::Running } else { PreStopHooks::Ended };
        }
        let (Some(spec), Some(sandbox)) = (&pod.spec, &runtime.sandbox) else {
            return PreStopHooks::Over;
        };
        let hooks: Vec<(String, Action)> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .filter(|c| {
                sandbox
                    .containers
                    .get(&c.name)
                    .is_some_and(|rt| matches!(rt.state, ContainerState::Running { .. }))
            })
            .filter_map(|c| {
                let action = lifecycle::parse(&c.name, c).ok()?.pre_stop?;
                Some((c.name.clone(), action))
            })
            .collect();
        // The kubelet runs a preStop hook only with time left to run it.
        if hooks.is_empty() || grace.is_zero() || sandbox.is_terminal() {
            return PreStopHooks::Over;
        }
        let cancel = self.root.child_token();
        inner.pre_stop.insert(uid.clone(), PreStop { done: false, cancel: cancel.clone() });
        drop(inner);
        info!(containers = hooks.len(), ?grace, "running preStop hooks");
        let name = pod_name(pod);
        let runs: Vec<_> = hooks
            .into_iter()
            .map(|(container, action)| {
                let run = HookRun {
                    prober: Arc::clone(self),
                    key: key.clone(),
                    uid: uid.clone(),
                    pod: name.clone(),
                    container,
                    id: runtime.id.clone(),
                    pod_ip: sandbox.pod_ip.clone(),
                };
                run.pre_stop(action, grace)
            })
            .collect();
        let (this, key2) = (Arc::clone(self), key.clone());
        let span = pod_span!("pre_stop", key, job = &runtime.id);
        tokio::spawn(
            async move {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = futures::future::join_all(runs) => {}
                }
                if let Some(p) = this.inner().pre_stop.get_mut(&uid) {
                    p.done = true;
                }
                this.queue.add(key2);
            }
            .instrument(span),
        );
        PreStopHooks::Started
    }
}

/// One hook of one container.
struct HookRun<P> {
    prober: Arc<Prober<P>>,
    key: PodKey,
    uid: String,
    /// The pod as messages name it.
    pod: String,
    container: String,
    id: WorkloadId,
    pod_ip: Option<String>,
}

impl<P: ProbeTarget + PodNetwork> HookRun<P> {
    async fn post_start(self, action: Action, instance: String, cancel: CancellationToken) {
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            r = self.run(&action) => r,
        };
        let hkey = (self.uid.clone(), self.container.clone());
        let state = match &outcome {
            Ok(()) => PostStart::Done,
            Err(message) => PostStart::Failed(message.clone()),
        };
        {
            let mut inner = self.prober.inner();
            match inner.post_start.get_mut(&hkey) {
                Some((i, s, _)) if *i == instance => *s = state,
                // Another instance started meanwhile: this outcome is about the past.
                _ => return,
            }
        }
        match outcome {
            Ok(()) => debug!("postStart hook done"),
            Err(message) => {
                warn!(%message, "postStart hook failed; killing the container");
                self.event("FailedPostStartHook", "PostStartHook failed".into());
                // The Event and the waiting reason now, not once the kill is done; the pod is
                // queued again below for what the kill changed.
                self.prober.queue.add(self.key.clone());
                if let Err(e) = self.prober.provider.kill_container(&self.id, &self.container).await
                {
                    warn!(error = %e, "killing the container after its failed postStart hook failed");
                }
            }
        }
        self.prober.queue.add(self.key.clone());
    }

    async fn pre_stop(self, action: Action, grace: Duration) {
        match tokio::time::timeout(grace, self.run(&action)).await {
            Ok(Ok(())) => debug!(container = %self.container, "preStop hook done"),
            Ok(Err(message)) => {
                warn!(container = %self.container, %message, "preStop hook failed");
                self.event("FailedPreStopHook", "PreStopHook failed".into());
            }
            Err(_) => info!(
                container = %self.container,
                ?grace,
                "preStop hook not completed in grace period"
            ),
        }
    }

    fn event(&self, reason: &'static str, message: String) {
        let container = self.container.clone();
        self.prober.push_event(&self.uid, ProbeEvent { container, reason, message });
    }

    /// Runs `action` to its end.
    ///
    /// # Errors
    /// The kubelet's message (`Exec lifecycle hook ([cmd]) for Container "c" in Pod "ns/name(uid)"
    /// failed - error: ...`).
    async fn run(&self, action: &Action) -> Result<(), String> {
        let (c, pod) = (&self.container, &self.pod);
        match action {
            Action::Sleep(d) => {
                tokio::time::sleep(*d).await;
                Ok(())
            }
            Action::Run(Handler::Exec { command }) => {
                let list = go_list(command);
                let failed = |e: String| {
                    format!(
                        "Exec lifecycle hook ({list}) for Container {c:?} in Pod {pod:?} failed - error: {e}, message: \"\""
                    )
                };
                match self.prober.provider.exec(&self.id, c, command).await {
                    Ok(0) => Ok(()),
                    Ok(code) => {
                        Err(failed(format!("command '{}' exited with {code}", command.join(" "))))
                    }
                    Err(e) => Err(failed(e.to_string())),
                }
            }
            Action::Run(Handler::Http { https, host, port, path, headers }) => {
                let failed = |e: String| {
                    format!(
                        "HTTP lifecycle hook ({path}) for Container {c:?} in Pod {pod:?} failed - error: {e}"
                    )
                };
                let pod_ip = self.pod_ip.as_deref();
                let to = network::Endpoint {
                    provider: &*self.prober.provider,
                    id: &self.id,
                    pod_ip,
                    agent: network::HOOK_USER_AGENT,
                };
                let host = match self.prober.dial_host(&to, host.as_deref()) {
                    Ok(h) => h,
                    Err(Refused::Host(h)) => {
                        return Err(failed(format!(
                            "the hook's host {h:?} is not one the operator allows"
                        )));
                    }
                    Err(Refused::NoAddress) => {
                        return Err(failed("failed to find networking container".into()));
                    }
                };
                let scheme = if *https { "https" } else { "http" };
                let url = format!("{scheme}://{}{path}", to.authority(host, *port));
                match to.get(*https, host, *port, path, headers).await {
                    Ok(_) => Ok(()),
                    Err(e) if *https => {
                        // The kubelet's fallback: an HTTPS hook answered in plain HTTP.
                        let headers: Vec<(String, String)> = headers
                            .iter()
                            .filter(|(k, _)| !k.eq_ignore_ascii_case("authorization"))
                            .cloned()
                            .collect();
                        match to.get(false, host, *port, path, &headers).await {
                            Ok(_) => {
                                let at = to.authority(host, *port);
                                self.event(
                                    "LifecycleHTTPFallback",
                                    format!("request to HTTPS lifecycle hook {at} got HTTP response, retry with HTTP succeeded"),
                                );
                                Ok(())
                            }
                            Err(_) => Err(failed(format!("Get \"{url}\": {e}"))),
                        }
                    }
                    Err(e) => Err(failed(format!("Get \"{url}\": {e}"))),
                }
            }
            Action::Run(other) => Err(format!("Cannot run handler: invalid handler: {other:?}")),
        }
    }
}
