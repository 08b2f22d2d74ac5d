//! Level-triggered decisions: given the pod the API server holds (desired) and the workload the
//! backend runs for it (observed), what to do next. Pure, so every case is a table row; the
//! caller performs the steps and calls again when anything changes.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use crate::pod::{self, RestartPolicy};
use crate::runtime::{RuntimePod, SandboxState};

/// How often to look again at a pod whose containers are being stopped.
pub const STOP_POLL: Duration = Duration::from_secs(1);

/// One step toward the desired state, in the order returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Translate the pod and start its workload (idempotent: same pod, same workload ID).
    Create,
    /// Write the pod status computed from the observed workload (skipped when unchanged).
    SyncStatus,
    /// Ask the backend to stop the pod's workload gracefully (stop signal, then kill after the
    /// termination grace period recorded at creation).
    Stop,
    /// The deletion grace period is over: kill whatever still runs.
    Kill,
    /// Remove the workload from the backend (stopping it first if it still runs). It may belong to
    /// an earlier pod of the same name (`stale`).
    Purge {
        /// True when the workload belongs to a pod with another UID or to no pod at all.
        stale: bool,
    },
    /// Remove the pod object from the API server (grace 0, UID precondition): its containers are
    /// gone, which is how a kubelet completes a graceful deletion.
    DeleteObject,
    /// Look again after this long (the decision depends on time passing).
    RequeueAfter(Duration),
    /// The pod reached Succeeded or Failed earlier but its workload vanished: nothing to do, the
    /// status is final. Recorded so callers can count it.
    KeepFinal,
    /// A `restartPolicy: Never` pod ran (its phase is past Pending) but its workload is gone
    /// without the pod being deleted: report it Failed (as upstream reports `NotFound`).
    MarkLost,
    /// Let this init container start: those before it have completed (or, for sidecars, started).
    StartContainer(String),
    /// The pod's containers changed in a way Kubernetes allows on a running pod (an image): bring
    /// the workload up to date.
    UpdateWorkload,
    /// `activeDeadlineSeconds` passed since the pod started: report it Failed with reason
    /// `DeadlineExceeded` (the kubelet's `activeDeadlineHandler`) and stop its workload.
    FailDeadline,
}

/// What is known besides the two objects.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// The current time.
    pub now: Timestamp,
    /// True once the pod watch listed every pod bound to the node. Until then a workload without a
    /// pod may simply not have been seen yet, so nothing is purged.
    pub pods_synced: bool,
}

/// Decides the next steps for one pod key.
///
/// `pod` is the object bound to this node (`None`: no such pod), `observed` the workload this node
/// owns under that key (`None`: none).
pub fn plan(pod: Option<&Pod>, observed: Option<&RuntimePod>, ctx: Context) -> Vec<Step> {
    use Step::*;
    let Some(pod) = pod else {
        return match observed {
            Some(_) if ctx.pods_synced => vec![Purge { stale: true }],
            _ => vec![],
        };
    };
    // A workload recorded for another UID belongs to an earlier pod of the same name: it goes first.
    let (observed, stale) = match observed {
        Some(o) if o.owner.uid != pod::uid(pod) => (None, true),
        o => (o, false),
    };
    let mut steps = decide(pod, observed, ctx);
    if stale {
        steps.insert(0, Purge { stale: true });
    }
    steps
}

fn decide(pod: &Pod, observed: Option<&RuntimePod>, ctx: Context) -> Vec<Step> {
    use Step::*;
    if let Some(deadline) = pod::deletion_deadline(pod) {
        return match observed {
            None => vec![DeleteObject],
            // The final status first, its containers terminated, as the kubelet writes it
            // before the object goes: a finalizer may keep the object, and clients read it.
            Some(o) if o.is_terminated() && o.sandbox.is_some() => {
                vec![SyncStatus, Purge { stale: false }, DeleteObject]
            }
            Some(o) if o.is_terminated() => vec![Purge { stale: false }, DeleteObject],
            Some(o) if !o.stopping => vec![Stop, SyncStatus, RequeueAfter(STOP_POLL)],
            Some(_) if ctx.now >= deadline => vec![Kill, SyncStatus, RequeueAfter(STOP_POLL)],
            Some(_) => vec![SyncStatus, RequeueAfter(STOP_POLL)],
        };
    }
    match observed {
        // A final status is never rewritten (Kubernetes never moves a pod out of it).
        Some(o) if pod::is_terminal(pod) => {
            // A pod failed for its deadline still has its workload stopped, and so does one whose
            // sandbox was lost: the backend may be running a replacement the pod must not have.
            let lost = o.sandbox.as_ref().is_some_and(|s| s.state == SandboxState::Lost);
            if o.stopping || (o.is_terminated() && !lost) { vec![] } else { vec![Stop] }
        }
        Some(o) => {
            if let Some(left) = deadline_left(pod, ctx.now) {
                if left.is_zero() {
                    return vec![FailDeadline, Stop];
                }
                let mut steps = running_steps(pod, o);
                steps.push(RequeueAfter(left));
                return steps;
            }
            running_steps(pod, o)
        }
        None if pod::is_terminal(pod) => vec![KeepFinal],
        None if matches!(pod::phase(pod), "" | "Pending") => vec![Create],
        // The workload vanished under a started pod: a kubelet re-creates a lost sandbox unless
        // the pod must never restart.
        None if RestartPolicy::of(pod) == RestartPolicy::Never => vec![MarkLost],
        None => vec![Create],
    }
}

fn running_steps(pod: &Pod, observed: &RuntimePod) -> Vec<Step> {
    if !observed.stopping && !observed.is_terminated() && !images_changed(pod, observed).is_empty()
    {
        return vec![Step::UpdateWorkload, Step::SyncStatus];
    }
    let mut steps = vec![Step::SyncStatus];
    if let Some(name) = next_init_container(pod, observed) {
        steps.push(Step::StartContainer(name));
    }
    steps.extend(held_containers_to_start(pod, observed).into_iter().map(Step::StartContainer));
    steps
}

/// Whether the pod's app containers are held until every init container is done: when a
/// sidecar (an init container with `restartPolicy: Always`) has a startup probe, the kubelet
/// starts what follows it only once that probe succeeded, and a backend may start app containers
/// as soon as the sidecars merely run (Nomad, for one, starts a group's main tasks once its
/// prestart sidecar tasks are running).
pub fn holds_app_containers(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .any(|c| crate::status::is_sidecar(c) && c.startup_probe.is_some())
}

/// Whether init container `c`, in state `st` of the runtime view, lets the next one start: a
/// sidecar once it runs and its startup probe (if any) succeeded, any other once it completed
/// successfully.
fn init_done(
    c: &k8s_openapi::api::core::v1::Container,
    st: Option<&crate::runtime::ContainerRuntimeStatus>,
) -> bool {
    use crate::runtime::ContainerState as S;
    let sidecar = crate::status::is_sidecar(c);
    match st.map(|s| (&s.state, s.probe_started)) {
        Some((S::Running { .. }, started)) => {
            sidecar && (c.startup_probe.is_none() || started == Some(true))
        }
        Some((S::Terminated(t), _)) => t.exit_code == 0 && !sidecar,
        _ => false,
    }
}

/// The app containers to let start now ([`holds_app_containers`]): those not started yet once
/// every init container is done. Empty when the pod does not hold them.
pub fn held_containers_to_start(pod: &Pod, observed: &RuntimePod) -> Vec<String> {
    let (Some(spec), Some(sandbox)) = (pod.spec.as_ref(), observed.sandbox.as_ref()) else {
        return Vec::new();
    };
    if sandbox.is_terminal() || !holds_app_containers(pod) {
        return Vec::new();
    }
    let init = spec.init_containers.iter().flatten();
    if !init.clone().all(|c| init_done(c, sandbox.containers.get(&c.name))) {
        return Vec::new();
    }
    spec.containers
        .iter()
        .filter(|c| not_started(sandbox.containers.get(&c.name)))
        .map(|c| c.name.clone())
        .collect()
}

/// Whether a container is still to be started: unknown to the runtime or waiting, and not
/// waiting for its postStart hook (it runs already).
fn not_started(c: Option<&crate::runtime::ContainerRuntimeStatus>) -> bool {
    use crate::runtime::ContainerState as S;
    c.is_none_or(|c| matches!(c.state, S::Waiting { .. }) && !c.post_start_pending)
}

/// The containers whose image in the pod differs from the image the workload runs (containers the
/// workload does not report are not compared).
pub fn images_changed(pod: &Pod, observed: &RuntimePod) -> Vec<String> {
    let Some(spec) = &pod.spec else { return Vec::new() };
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .filter(|c| {
            observed
                .images
                .get(&c.name)
                .is_some_and(|running| Some(running.as_str()) != c.image.as_deref())
        })
        .map(|c| c.name.clone())
        .collect()
}

/// How long the pod may still be active under `activeDeadlineSeconds`, counted from
/// `status.startTime`; `None` without a deadline or a start time.
pub fn deadline_left(pod: &Pod, now: Timestamp) -> Option<Duration> {
    let secs = pod.spec.as_ref()?.active_deadline_seconds?;
    let start = pod.status.as_ref()?.start_time.as_ref()?.0;
    let end = start.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs)).ok()?;
    let left = end.duration_since(now);
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

/// The init container to let start next: the first after the first one whose predecessors all
/// completed successfully (a sidecar predecessor: is running, and its startup probe, if any,
/// succeeded: the runtime view's `probe_started`) and that has not started yet; or,
/// when the sandbox has a preparation of its own ([`crate::runtime::Sandbox::prepared`]), the
/// first one once that has completed. Nothing while the preparation runs.
pub fn next_init_container(pod: &Pod, observed: &RuntimePod) -> Option<String> {
    let init = pod.spec.as_ref()?.init_containers.as_deref()?;
    let sandbox = observed.sandbox.as_ref()?;
    if sandbox.is_terminal() {
        return None;
    }
    let to_start = |name: &str| not_started(sandbox.containers.get(name));
    match (sandbox.prepared, init.first()) {
        (Some(false), _) => return None,
        (Some(true), Some(first)) if to_start(&first.name) => {
            return Some(first.name.clone());
        }
        _ => {}
    }
    for pair in init.windows(2) {
        let (prev, cur) = (&pair[0], &pair[1]);
        if !init_done(prev, sandbox.containers.get(&prev.name)) {
            return None;
        }
        if to_start(&cur.name) {
            return Some(cur.name.clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;
    use crate::pod::PodKey;
    use crate::runtime::{PodOwner, Sandbox, SandboxState};
    use Step::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn pod(phase: &str, deleting_until: Option<i64>) -> Pod {
        let mut p = crate::testing::pod("p")
            .namespace("ns")
            .uid("uid-1")
            .image("i")
            .container("c", &[])
            .phase(phase)
            .build();
        p.metadata.deletion_timestamp = deleting_until.map(|s| Time(ts(s)));
        p
    }

    fn never(mut p: Pod) -> Pod {
        p.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        p
    }

    fn workload(uid: &str, stopping: bool, state: Option<SandboxState>) -> RuntimePod {
        RuntimePod {
            owner: PodOwner {
                key: PodKey::new("ns", "p").unwrap(),
                uid: uid.into(),
                node: "vk".into(),
            },
            id: "workload".into(),
            stopping,
            images: Default::default(),
            unplaced: None,
            sandbox: state.map(|state| Sandbox {
                id: "a".into(),
                state,
                created_at: None,
                pod_ip: None,
                host_ip: None,
                containers: Default::default(),
                message: None,
                ports: Default::default(),
                prepared: None,
            }),
        }
    }

    /// A row of the decision table: its name, the pod, the workload, the context, the steps.
    type Row = (&'static str, Option<Pod>, Option<RuntimePod>, Context, Vec<Step>);

    /// Asserts that [`plan`] gives each row's steps.
    fn check(rows: Vec<Row>) {
        for (name, p, o, c, want) in rows {
            assert_eq!(plan(p.as_ref(), o.as_ref(), c), want, "{name}");
        }
    }

    /// Pods not being deleted, and workloads without a pod.
    #[test]
    fn decisions() {
        use SandboxState::*;
        let ctx = Context { now: ts(100), pods_synced: true };
        let unsynced = Context { pods_synced: false, ..ctx };
        let rows: Vec<Row> = vec![
            ("nothing", None, None, ctx, vec![]),
            (
                "orphan",
                None,
                Some(workload("uid-1", false, Some(Running))),
                ctx,
                vec![Purge { stale: true }],
            ),
            (
                "orphan before sync",
                None,
                Some(workload("uid-1", false, Some(Running))),
                unsynced,
                vec![],
            ),
            ("new pod", Some(pod("Pending", None)), None, ctx, vec![Create]),
            ("new pod, no status", Some(pod("", None)), None, ctx, vec![Create]),
            (
                "running",
                Some(pod("Running", None)),
                Some(workload("uid-1", false, Some(Running))),
                ctx,
                vec![SyncStatus],
            ),
            (
                "adopted at start",
                Some(pod("Pending", None)),
                Some(workload("uid-1", false, None)),
                unsynced,
                vec![SyncStatus],
            ),
            (
                "same name, new uid",
                Some(pod("Pending", None)),
                Some(workload("uid-0", false, Some(Running))),
                ctx,
                vec![Purge { stale: true }, Create],
            ),
            (
                "finished",
                Some(pod("Failed", None)),
                Some(workload("uid-1", false, Some(Failed))),
                ctx,
                vec![],
            ),
            (
                "failed on a lost sandbox: the replacement is stopped",
                Some(never(pod("Failed", None))),
                Some(workload("uid-1", false, Some(Lost))),
                ctx,
                vec![Stop],
            ),
            (
                "failed on a lost sandbox, stopping",
                Some(never(pod("Failed", None))),
                Some(workload("uid-1", true, Some(Lost))),
                ctx,
                vec![],
            ),
            ("finished, workload gone", Some(pod("Succeeded", None)), None, ctx, vec![KeepFinal]),
            ("running, workload gone", Some(pod("Running", None)), None, ctx, vec![Create]),
            (
                "never pod running, workload gone",
                Some(never(pod("Running", None))),
                None,
                ctx,
                vec![MarkLost],
            ),
            (
                "stopped elsewhere",
                Some(pod("Running", None)),
                Some(workload("uid-1", true, Some(Succeeded))),
                ctx,
                vec![SyncStatus],
            ),
        ];
        check(rows);
    }

    /// Pods being deleted: stopped, killed past their grace period, purged, their object deleted.
    #[test]
    fn decisions_while_deleting() {
        use SandboxState::*;
        let ctx = Context { now: ts(100), pods_synced: true };
        let rows: Vec<Row> = vec![
            (
                "deleting, old uid",
                Some(pod("Pending", Some(130))),
                Some(workload("uid-0", false, Some(Running))),
                ctx,
                vec![Purge { stale: true }, DeleteObject],
            ),
            (
                "delete: stop",
                Some(pod("Running", Some(130))),
                Some(workload("uid-1", false, Some(Running))),
                ctx,
                vec![Stop, SyncStatus, RequeueAfter(STOP_POLL)],
            ),
            (
                "delete: wait",
                Some(pod("Running", Some(130))),
                Some(workload("uid-1", true, Some(Running))),
                ctx,
                vec![SyncStatus, RequeueAfter(STOP_POLL)],
            ),
            (
                "delete: kill",
                Some(pod("Running", Some(90))),
                Some(workload("uid-1", true, Some(Running))),
                ctx,
                vec![Kill, SyncStatus, RequeueAfter(STOP_POLL)],
            ),
            (
                "delete: done",
                Some(pod("Running", Some(130))),
                Some(workload("uid-1", true, Some(Succeeded))),
                ctx,
                vec![SyncStatus, Purge { stale: false }, DeleteObject],
            ),
            (
                "delete: never placed",
                Some(pod("Pending", Some(130))),
                Some(workload("uid-1", false, None)),
                ctx,
                vec![Purge { stale: false }, DeleteObject],
            ),
            ("delete: no workload", Some(pod("Pending", Some(130))), None, ctx, vec![DeleteObject]),
        ];
        check(rows);
    }

    #[test]
    fn active_deadlines_fail_the_pod_and_stop_its_workload() {
        use SandboxState::*;
        let ctx = Context { now: ts(100), pods_synced: true };
        let with_deadline = |phase: &str, secs: i64| {
            let mut p = pod(phase, None);
            p.spec.as_mut().unwrap().active_deadline_seconds = Some(secs);
            p.status.as_mut().unwrap().start_time = Some(Time(ts(0)));
            p
        };
        let run = Some(workload("uid-1", false, Some(Running)));
        assert_eq!(
            plan(Some(&with_deadline("Running", 150)), run.as_ref(), ctx),
            vec![SyncStatus, RequeueAfter(Duration::from_secs(50))]
        );
        assert_eq!(
            plan(Some(&with_deadline("Running", 100)), run.as_ref(), ctx),
            vec![FailDeadline, Stop]
        );
        // Failed by its deadline, workload not yet told to stop: stop it; once stopping, nothing.
        assert_eq!(plan(Some(&with_deadline("Failed", 100)), run.as_ref(), ctx), vec![Stop]);
        let stopping = Some(workload("uid-1", true, Some(Running)));
        assert_eq!(plan(Some(&with_deadline("Failed", 100)), stopping.as_ref(), ctx), vec![]);
        assert_eq!(deadline_left(&pod("Running", None), ts(100)), None);
    }

    #[test]
    fn init_containers_are_released_after_their_predecessor() {
        use crate::runtime::{ContainerRuntimeStatus, ContainerState as S, Termination};
        let exited = |code| {
            S::Terminated(Termination {
                exit_code: code,
                signal: None,
                reason: String::new(),
                message: None,
                started_at: None,
                finished_at: None,
            })
        };
        let waiting = || S::Waiting { reason: "ContainerCreating".into(), message: None };
        let running = || S::Running { started_at: None };
        let mut p = pod("Pending", None);
        p.spec.as_mut().unwrap().init_containers = Some(
            serde_json::from_value(json!([
                {"name": "a", "image": "i"},
                {"name": "side", "image": "i", "restartPolicy": "Always"},
                {"name": "b", "image": "i"}
            ]))
            .unwrap(),
        );
        let with = |states: Vec<(&str, S)>| {
            let mut w = workload("uid-1", false, Some(SandboxState::Pending));
            w.sandbox.as_mut().unwrap().containers = states
                .into_iter()
                .map(|(n, st)| {
                    (n.to_owned(), ContainerRuntimeStatus { state: st, ..Default::default() })
                })
                .collect();
            w
        };
        type Case = (Vec<(&'static str, S)>, Option<&'static str>);
        let cases: Vec<Case> = vec![
            (vec![("a", running()), ("side", waiting()), ("b", waiting())], None),
            (vec![("a", exited(1)), ("side", waiting()), ("b", waiting())], None),
            (vec![("a", exited(0)), ("side", waiting()), ("b", waiting())], Some("side")),
            (vec![("a", exited(0)), ("side", running()), ("b", waiting())], Some("b")),
            (vec![("a", exited(0)), ("side", running()), ("b", running())], None),
            (vec![("a", exited(0))], Some("side")),
        ];
        for (states, want) in cases {
            let desc = format!("{states:?}");
            let w = with(states);
            assert_eq!(next_init_container(&p, &w).as_deref(), want, "{desc}");
        }
        let mut released = with(vec![("a", exited(0)), ("side", waiting())]);
        assert_eq!(
            plan(Some(&p), Some(&released), Context { now: ts(1), pods_synced: true }),
            vec![SyncStatus, StartContainer("side".into())]
        );
        released.sandbox.as_mut().unwrap().state = SandboxState::Failed;
        assert_eq!(
            next_init_container(&p, &released),
            None,
            "nothing starts in a finished sandbox"
        );
        // A sandbox with a preparation of its own: nothing starts while it runs; then the first
        // init container, which is held too; then the chain as before.
        let prepared = |done: Option<bool>, states: Vec<(&'static str, S)>| {
            let mut w = with(states);
            w.sandbox.as_mut().unwrap().prepared = done;
            next_init_container(&p, &w)
        };
        assert_eq!(prepared(Some(false), vec![("a", waiting())]), None);
        assert_eq!(prepared(Some(false), vec![("a", exited(0))]), None);
        assert_eq!(prepared(Some(true), vec![]).as_deref(), Some("a"));
        assert_eq!(prepared(Some(true), vec![("a", waiting())]).as_deref(), Some("a"));
        assert_eq!(prepared(Some(true), vec![("a", running())]), None);
        assert_eq!(prepared(Some(true), vec![("a", exited(0))]).as_deref(), Some("side"));
        assert_eq!(prepared(None, vec![("a", waiting())]), None, "no preparation: a is not held");
    }

    /// A sidecar with a startup probe holds what follows it, init containers and app containers
    /// alike, until the probe succeeded (the runtime view's `probe_started`); without one, app
    /// containers are never held.
    #[test]
    fn a_sidecar_startup_probe_holds_what_follows_it() {
        use crate::runtime::{ContainerRuntimeStatus, ContainerState as S};
        let mut p = pod("Pending", None);
        let spec = p.spec.as_mut().unwrap();
        spec.init_containers = Some(
            serde_json::from_value(json!([
                {"name": "side", "image": "i", "restartPolicy": "Always",
                 "startupProbe": {"exec": {"command": ["true"]}}},
                {"name": "b", "image": "i"}
            ]))
            .unwrap(),
        );
        spec.containers = serde_json::from_value(json!([{"name": "app", "image": "i"}])).unwrap();
        let with = |states: Vec<(&str, S, Option<bool>)>| {
            let mut w = workload("uid-1", false, Some(SandboxState::Pending));
            w.sandbox.as_mut().unwrap().containers = states
                .into_iter()
                .map(|(n, state, started)| {
                    let st = ContainerRuntimeStatus {
                        state,
                        probe_started: started,
                        ..Default::default()
                    };
                    (n.to_owned(), st)
                })
                .collect();
            w
        };
        let running = || S::Running { started_at: None };
        let waiting = || S::Waiting { reason: "ContainerCreating".into(), message: None };
        let done = || {
            S::Terminated(crate::runtime::Termination {
                exit_code: 0,
                signal: None,
                reason: String::new(),
                message: None,
                started_at: None,
                finished_at: None,
            })
        };
        assert!(holds_app_containers(&p));
        let w = with(vec![("side", running(), Some(false)), ("b", waiting(), None)]);
        assert_eq!(next_init_container(&p, &w), None, "the startup probe has not succeeded");
        assert!(held_containers_to_start(&p, &w).is_empty());
        let w = with(vec![("side", running(), Some(true)), ("b", waiting(), None)]);
        assert_eq!(next_init_container(&p, &w).as_deref(), Some("b"));
        assert!(held_containers_to_start(&p, &w).is_empty(), "b has not completed");
        let w = with(vec![
            ("side", running(), Some(true)),
            ("b", done(), None),
            ("app", waiting(), None),
        ]);
        assert_eq!(held_containers_to_start(&p, &w), ["app"]);
        assert_eq!(
            plan(Some(&p), Some(&w), Context { now: ts(1), pods_synced: true }),
            vec![SyncStatus, StartContainer("app".into())]
        );
        let w = with(vec![
            ("side", running(), Some(true)),
            ("b", done(), None),
            ("app", running(), None),
        ]);
        assert!(held_containers_to_start(&p, &w).is_empty(), "app runs");
        // Shown waiting for its postStart hook, a container runs already: never released again,
        // and a sidecar in its hook holds what follows it.
        let mut w = with(vec![
            ("side", running(), Some(true)),
            ("b", done(), None),
            ("app", waiting(), None),
        ]);
        w.sandbox.as_mut().unwrap().containers.get_mut("app").unwrap().post_start_pending = true;
        assert!(held_containers_to_start(&p, &w).is_empty(), "app in its postStart hook");
        let mut w = with(vec![("side", waiting(), Some(true)), ("b", waiting(), None)]);
        w.sandbox.as_mut().unwrap().containers.get_mut("side").unwrap().post_start_pending = true;
        w.sandbox.as_mut().unwrap().prepared = Some(true);
        assert_eq!(next_init_container(&p, &w), None, "side in its postStart hook");
        // Without a startup probe on the sidecar nothing is held.
        let spec = p.spec.as_mut().unwrap();
        spec.init_containers.as_mut().unwrap()[0].startup_probe = None;
        assert!(!holds_app_containers(&p));
        let w =
            with(vec![("side", running(), None), ("b", done(), None), ("app", waiting(), None)]);
        assert!(held_containers_to_start(&p, &w).is_empty());
    }

    #[test]
    fn an_image_change_updates_the_workload() {
        let ctx = Context { now: ts(100), pods_synced: true };
        let mut w = workload("uid-1", false, Some(SandboxState::Running));
        w.images.insert("c".into(), "i".into());
        assert_eq!(plan(Some(&pod("Running", None)), Some(&w), ctx), vec![SyncStatus]);
        w.images.insert("c".into(), "old".into());
        assert_eq!(images_changed(&pod("Running", None), &w), ["c"]);
        assert_eq!(
            plan(Some(&pod("Running", None)), Some(&w), ctx),
            vec![UpdateWorkload, SyncStatus]
        );
        w.stopping = true;
        assert_eq!(plan(Some(&pod("Running", None)), Some(&w), ctx), vec![SyncStatus]);
    }
}
