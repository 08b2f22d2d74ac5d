//! P1, P2 and P7: `n` pods bound to a node (`spec.nodeName` set, the taint tolerated, so the
//! scheduler is not measured) until all are Running in the API, and the memory and CPU of the
//! process that made them so.
//!
//! One run: a fresh namespace and node name; the contender started and proved working by one
//! canary pod Running; then the clock starts, `n` pods are created 50 at a time by the admin
//! client (no client-side limit), and a watch records when each is first seen Running. After the
//! last, the process is left alone for a settling time and /proc is read: peak RSS (`VmHWM`,
//! covering the start and the run), steady RSS (`VmRSS` then), CPU seconds since it started. The
//! process is then stopped and the pods removed at once (grace 0).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};

use vk_tests::{Stack, wait_for};

use crate::kubelets::{self, Contender, ProcStats};

/// What one run measured.
#[derive(Debug, Clone)]
pub(crate) struct ScaleRun {
    /// Pods.
    pub(crate) n: usize,
    /// From the first create to the last pod seen Running, seconds; `None` when not all were
    /// Running within the run's time limit.
    pub(crate) seconds: Option<f64>,
    /// Pods Running at the end (all of them unless timed out).
    pub(crate) running: usize,
    /// From the first create to the last create answered, seconds (the share no contender can
    /// shorten).
    pub(crate) create_seconds: f64,
    /// /proc after the settling time.
    pub(crate) stats: ProcStats,
    /// API server requests from the first create to the last Running, by `VERB resource`
    /// (every client's: the benchmark's own `n` creates and its watch included).
    pub(crate) requests: HashMap<String, f64>,
}

/// The pod the benchmarks bind: one container (`sleep 3600`, 10m CPU and 16Mi requested, so a
/// hundred fit on one Nomad client), the taint tolerated, on `node`, grace 0, and no
/// service-account token (so no contender makes a TokenRequest and the floor's one write per pod is
/// the whole of the work).
///
/// # Errors
/// Never for valid names (the JSON always deserialises).
pub(crate) fn bound_pod(name: &str, ns: &str, node: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "bench"}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": false,
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
            "containers": [{"name": "main", "image": vk_tests::BUSYBOX, "command": ["sleep", "3600"],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
        },
    }))?)
}

fn is_running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Creates `pods` 50 at a time; returns when every create was answered.
///
/// # Errors
/// A create refused.
pub(crate) async fn create_all(api: &Api<Pod>, pods: Vec<Pod>) -> anyhow::Result<()> {
    futures::stream::iter(pods)
        .map(|p| async move {
            api.create(&PostParams::default(), &p).await.context("creating a pod")?;
            anyhow::Ok(())
        })
        .buffer_unordered(50)
        .try_collect::<()>()
        .await
}

/// Removes every pod of `ns` at once (grace 0, so nothing waits for a kubelet).
///
/// # Errors
/// The API refusing.
pub(crate) async fn remove_pods(client: &Client, ns: &str) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.delete_collection(&DeleteParams::default().grace_period(0), &ListParams::default()).await?;
    Ok(())
}

/// One run of `who` with `n` pods in namespace `ns` as node `node`; `limit` bounds the wait for
/// Running, `settle` is the quiet time before /proc is read.
///
/// # Errors
/// The contender not starting or not running the canary within 60 s, or the API refusing.
pub(crate) async fn run(
    stack: &Stack,
    who: Contender,
    n: usize,
    ns: &str,
    node: &str,
    limit: Duration,
    settle: Duration,
) -> anyhow::Result<ScaleRun> {
    let client = stack.client().await?;
    stack.namespace(ns).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut proc = kubelets::start(stack, who, node)?;
    let result = measure(stack, &api, who, n, ns, node, limit, settle, &mut proc).await;
    proc.kill();
    remove_pods(&client, ns).await?;
    result
        .with_context(|| format!("{} with {n} pods; its log: {}", who.label(), proc.log.display()))
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    stack: &Stack,
    api: &Api<Pod>,
    who: Contender,
    n: usize,
    ns: &str,
    node: &str,
    limit: Duration,
    settle: Duration,
    proc: &mut vk_tests::Process,
) -> anyhow::Result<ScaleRun> {
    // The canary: the contender is up, its watch established, and it writes statuses.
    api.create(&PostParams::default(), &bound_pod("canary", ns, node)?).await?;
    wait_for("the canary Running", Duration::from_secs(60), Duration::from_millis(100), || {
        let api = api.clone();
        let exited = proc.exited();
        async move {
            if let Some(status) = exited {
                bail!("{} exited: {status}", who.label());
            }
            Ok(api.get_opt("canary").await?.filter(is_running).map(|_| ()))
        }
    })
    .await?;

    let before = api_requests(stack)?;
    let seen = create_and_watch(api, ns, node, n, limit).await?;
    let mut requests = api_requests(stack)?;
    for (k, v) in &before {
        if let Some(after) = requests.get_mut(k) {
            *after -= v;
        }
    }
    requests.retain(|_, v| *v > 0.0);
    let seconds = seen.all_running();
    let (create_seconds, running) = (seen.create_seconds, seen.first_running.len());
    tokio::time::sleep(settle).await;
    let stats = kubelets::proc_stats(proc.pid())?;
    Ok(ScaleRun { n, seconds, running, create_seconds, stats, requests })
}

/// The API server's `apiserver_request_total` from its `/metrics`, summed over codes and scopes,
/// by `VERB resource` or `VERB resource/subresource`.
///
/// # Errors
/// kubectl failing.
pub(crate) fn api_requests(stack: &Stack) -> anyhow::Result<HashMap<String, f64>> {
    let text = stack.kubectl(&["get", "--raw", "/metrics"])?;
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else { continue };
        let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
        let labels: HashMap<&str, &str> = labels
            .split("\",")
            .filter_map(|kv| kv.split_once("=\""))
            .map(|(k, v)| (k, v.trim_end_matches('"')))
            .collect();
        let get = |k: &str| labels.get(k).copied().unwrap_or_default();
        let key = match get("subresource") {
            "" => format!("{} {}", get("verb"), get("resource")),
            sub => format!("{} {}/{sub}", get("verb"), get("resource")),
        };
        *out.entry(key).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    Ok(out)
}

/// When the pods of one run were first seen Running.
#[derive(Debug)]
pub(crate) struct Observed {
    /// Pods created.
    pub(crate) n: usize,
    /// When the first create was sent.
    pub(crate) t0: Instant,
    /// From `t0` to the last create answered, seconds.
    pub(crate) create_seconds: f64,
    /// Per pod name: when the watch saw it Running, and the same as Unix seconds.
    pub(crate) first_running: HashMap<String, (Instant, f64)>,
}

impl Observed {
    /// From the first create to the last pod Running, seconds; `None` unless all were.
    pub(crate) fn all_running(&self) -> Option<f64> {
        (self.first_running.len() == self.n).then(|| {
            self.first_running
                .values()
                .map(|(t, _)| t.duration_since(self.t0).as_secs_f64())
                .fold(0.0, f64::max)
        })
    }
}

/// Now, Unix seconds.
pub(crate) fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Opens a watch on the `app=bench` pods of `api`, then creates `n` bound pods `p00000`... on
/// `node` (50 at a time) and waits until each was seen Running, for at most `limit`.
///
/// # Errors
/// A create refused.
pub(crate) async fn create_and_watch(
    api: &Api<Pod>,
    ns: &str,
    node: &str,
    n: usize,
    limit: Duration,
) -> anyhow::Result<Observed> {
    // The watch first, so no transition is missed; then the clock.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant, f64)>();
    let watch_api = api.clone();
    let watch = tokio::spawn(async move {
        let cfg = watcher::Config::default().labels("app=bench");
        let mut events = std::pin::pin!(watcher(watch_api, cfg));
        while let Some(ev) = events.next().await {
            if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev
                && is_running(&p)
                && let Some(name) = p.metadata.name
            {
                let _ = tx.send((name, Instant::now(), unix_now()));
            }
        }
    });
    // Let the watch open before the first create.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pods: Vec<Pod> =
        (0..n).map(|i| bound_pod(&format!("p{i:05}"), ns, node)).collect::<anyhow::Result<_>>()?;
    let t0 = Instant::now();
    let creating = {
        let api = api.clone();
        tokio::spawn(async move {
            create_all(&api, pods).await?;
            anyhow::Ok(t0.elapsed().as_secs_f64())
        })
    };
    let mut first_running = HashMap::new();
    let deadline = tokio::time::Instant::now() + limit;
    while first_running.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((name, at, wall))) if name != "canary" => {
                first_running.entry(name).or_insert((at, wall));
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    watch.abort();
    let create_seconds = creating.await??;
    Ok(Observed { n, t0, create_seconds, first_running })
}

/// The median of `xs` (the mean of the middle two for an even count); `None` when empty.
pub(crate) fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) { f64::midpoint(v[mid - 1], v[mid]) } else { v[mid] })
}
