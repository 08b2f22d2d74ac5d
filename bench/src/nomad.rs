//! P3 and P4, through the real Nomad agent of the stack (`sleep 3600` on raw_exec, or in a
//! busybox container on docker: `--driver`).
//!
//! P4, ours: `virtual-kubelet --provider nomad` (defaults) is started and proved working by a
//! canary pod; then `n` bound pods are created 50 at a time and a watch records when each is
//! first Running; the time is from the first create to the last Running. Nomad alone: the job our
//! kubelet registered for one pod is read back and registered again `n` times under new IDs,
//! 10 at a time (our default number of workers), and Nomad's allocation list is polled every
//! 50 ms until every job has a running allocation.
//!
//! P3, from the same runs of ours: the histogram `vk_status_propagation_seconds` scraped from our
//! metrics port (Nomad's allocation `ModifyTime` to the status write), and from outside: for each
//! pod, the time the watch saw it Running minus the time of its task's `Started` event in Nomad
//! (which also holds the Nomad client's batching of allocation updates, up to 200 ms).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::Value;
use vk_tests::{Process, Stack, free_port, wait_for};

use crate::scale::{bound_pod, create_and_watch, remove_pods};

/// One run of ours through Nomad.
#[derive(Debug, Clone, Default)]
pub(crate) struct OursRun {
    /// First create to last Running, seconds (`None`: not all within the limit).
    pub(crate) seconds: Option<f64>,
    /// Per pod: Nomad task `Started` to seen Running in the API, seconds.
    pub(crate) outside: Vec<f64>,
    /// The `/metrics` text after the burst.
    pub(crate) metrics: String,
    /// Per pod created one at a time after the burst: Nomad task `Started` to seen Running in the
    /// API (polled every 20 ms), seconds.
    pub(crate) calm_outside: Vec<f64>,
    /// Per pod created one at a time: Nomad's own share of `calm_outside`, from the task's
    /// `Started` event to the allocation's `ModifyTime` (the server's record of the client's
    /// update, read at once), seconds.
    pub(crate) calm_nomad_share: Vec<f64>,
    /// The `/metrics` text after the pods created one at a time.
    pub(crate) calm_metrics: String,
}

/// Nomad's HTTP API at `addr`.
#[derive(Debug, Clone)]
pub(crate) struct Nomad {
    addr: String,
    http: reqwest::Client,
}

impl Nomad {
    /// The stack's agent.
    pub(crate) fn new(stack: &Stack) -> Self {
        Self { addr: stack.nomad_addr.clone(), http: reqwest::Client::new() }
    }

    /// GET `path` as JSON.
    ///
    /// # Errors
    /// Transport errors or a status other than 2xx.
    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self.http.get(format!("{}{path}", self.addr)).send().await?;
        anyhow::ensure!(r.status().is_success(), "GET {path}: {}", r.status());
        Ok(r.json().await?)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<()> {
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.addr));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        anyhow::ensure!(r.status().is_success(), "{method} {path}: {}", r.status());
        Ok(())
    }

    /// Purges every job whose ID starts with `prefix`, 10 at a time, then waits until none of
    /// their allocations runs and asks for a garbage collection.
    ///
    /// # Errors
    /// Nomad refusing, or allocations still running after 120 s.
    pub(crate) async fn purge(&self, prefix: &str) -> anyhow::Result<()> {
        let jobs = self.get(&format!("/v1/jobs?prefix={prefix}")).await?;
        let ids: Vec<String> = jobs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j["ID"].as_str().map(str::to_owned))
            .collect();
        futures::stream::iter(ids)
            .map(|id| async move {
                self.send(reqwest::Method::DELETE, &format!("/v1/job/{id}?purge=true"), None).await
            })
            .buffer_unordered(10)
            .try_collect::<()>()
            .await?;
        wait_for(
            "purged allocations stopped",
            Duration::from_secs(120),
            Duration::from_millis(250),
            || async {
                let running = self.running(prefix).await?;
                Ok(running.is_empty().then_some(()))
            },
        )
        .await?;
        self.send(reqwest::Method::PUT, "/v1/system/gc", None).await
    }

    /// IDs of the jobs starting with `prefix` that have a running allocation.
    async fn running(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let allocs = self.get("/v1/allocations").await?;
        Ok(allocs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["ClientStatus"] == "running")
            .filter_map(|a| a["JobID"].as_str())
            .filter(|j| j.starts_with(prefix))
            .map(str::to_owned)
            .collect())
    }

    /// The first allocation of `job`.
    ///
    /// # Errors
    /// None yet, or Nomad refusing.
    pub(crate) async fn alloc_of(&self, job: &str) -> anyhow::Result<Value> {
        let allocs = self.get(&format!("/v1/job/{job}/allocations")).await?;
        allocs
            .as_array()
            .and_then(|a| a.first())
            .cloned()
            .with_context(|| format!("no allocation of {job}"))
    }
}

/// Starts `virtual-kubelet --provider nomad` with its defaults as node `node` (the run's driver,
/// `--driver`; info logs); returns the process and its metrics address.
///
/// # Errors
/// The binary missing or not starting.
pub(crate) fn start_ours(stack: &Stack, node: &str) -> anyhow::Result<(Process, String)> {
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let mut cmd = Command::new(vk_tests::virtual_kubelet_bin()?);
    cmd.args(["--provider", "nomad", "--nodename", node])
        .arg(format!("--kubeconfig={}", stack.node_kubeconfig(node)?.display()))
        .args(["--nomad-addr", &stack.nomad_addr, "--nomad-driver", crate::driver().nomad_name()])
        .args(["--internal-ip", "127.0.0.1", "--max-pods", "100000"])
        .args(["--kubelet-port", &free_port()?.to_string()])
        .args(["--metrics-addr", &metrics])
        .env_remove("RUST_LOG")
        .env_remove("KUBECONFIG")
        .env_remove("NOMAD_ADDR")
        .env_remove("NOMAD_TOKEN");
    let log = stack.dir.join("logs").join(format!("bench-{node}.log"));
    Ok((Process::spawn(&format!("bench-{node}"), cmd, &log)?, metrics))
}

/// Waits until pod `name` of `api` is Running.
///
/// # Errors
/// Not within `timeout`.
pub(crate) async fn wait_running(
    api: &Api<Pod>,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_for(&format!("{name} Running"), timeout, Duration::from_millis(100), || async {
        let p = api.get_opt(name).await?;
        let running = p.and_then(|p| p.status?.phase).as_deref() == Some("Running");
        Ok(running.then_some(()))
    })
    .await
}

/// One P4 run of ours with `n` pods in `ns` as `node`; returns the run and the job our kubelet
/// registered for the first pod (the template of Nomad alone). Jobs are purged afterwards.
///
/// # Errors
/// The kubelet not working, the API or Nomad refusing.
pub(crate) async fn run_ours(
    stack: &Stack,
    nomad: &Nomad,
    n: usize,
    ns: &str,
    node: &str,
    limit: Duration,
    calm: usize,
) -> anyhow::Result<(OursRun, Value)> {
    let client = stack.client().await?;
    stack.namespace(ns).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let (mut proc, metrics_addr) = start_ours(stack, node)?;
    let result = measure_ours(nomad, &api, n, ns, node, limit, calm, &metrics_addr).await;
    proc.kill();
    remove_pods(&client, ns).await?;
    nomad.purge(&format!("k8s-{ns}_")).await?;
    result.with_context(|| format!("ours through Nomad; its log: {}", proc.log.display()))
}

#[allow(clippy::too_many_arguments)]
async fn measure_ours(
    nomad: &Nomad,
    api: &Api<Pod>,
    n: usize,
    ns: &str,
    node: &str,
    limit: Duration,
    calm: usize,
    metrics_addr: &str,
) -> anyhow::Result<(OursRun, Value)> {
    api.create(&PostParams::default(), &bound_pod("canary", ns, node)?).await?;
    wait_running(api, "canary", Duration::from_secs(90)).await?;
    let seen = create_and_watch(api, ns, node, n, limit).await?;
    let seconds = seen.all_running();
    let mut outside = Vec::new();
    for (name, (_, wall)) in &seen.first_running {
        if let Some(started) = started_at(nomad, &format!("k8s-{ns}_{name}")).await? {
            outside.push(wall - started);
        }
    }
    let scrape = || async {
        anyhow::Ok(reqwest::get(format!("http://{metrics_addr}/metrics")).await?.text().await?)
    };
    let metrics = scrape().await?;
    // One pod at a time: the delay with no queue of work in front of it.
    let (mut calm_outside, mut calm_nomad_share) = (Vec::new(), Vec::new());
    for i in 0..calm {
        let name = format!("s{i:03}");
        api.create(&PostParams::default(), &bound_pod(&name, ns, node)?).await?;
        let seen = wait_for(
            &format!("{name} Running"),
            Duration::from_secs(60),
            Duration::from_millis(20),
            || async {
                let p = api.get_opt(&name).await?;
                let running = p.and_then(|p| p.status?.phase).as_deref() == Some("Running");
                Ok(running.then(crate::scale::unix_now))
            },
        )
        .await?;
        let job = format!("k8s-{ns}_{name}");
        if let Some(started) = started_at(nomad, &job).await? {
            calm_outside.push(seen - started);
            let alloc = nomad.alloc_of(&job).await?;
            #[allow(clippy::cast_precision_loss)]
            if let Some(modified) = alloc["ModifyTime"].as_i64() {
                calm_nomad_share.push(modified as f64 / 1e9 - started);
            }
        }
    }
    let calm_metrics = scrape().await?;
    let template = nomad.get(&format!("/v1/job/k8s-{ns}_p00000")).await?;
    Ok((
        OursRun { seconds, outside, metrics, calm_outside, calm_nomad_share, calm_metrics },
        template,
    ))
}

/// When the task `main` of `job`'s first allocation started (its `Started` event), Unix seconds.
async fn started_at(nomad: &Nomad, job: &str) -> anyhow::Result<Option<f64>> {
    let alloc = nomad.alloc_of(job).await?;
    let started = alloc["TaskStates"]["main"]["Events"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["Type"] == "Started")
        .and_then(|e| e["Time"].as_i64());
    #[allow(clippy::cast_precision_loss)]
    Ok(started.map(|ns| ns as f64 / 1e9))
}

/// One P4 run of Nomad alone: `n` copies of `template` registered as `<prefix><i>`, 10 at a
/// time; seconds from the first register to the last job seen running (`None`: not within
/// `limit`). Jobs are purged afterwards.
///
/// # Errors
/// Nomad refusing.
pub(crate) async fn run_alone(
    nomad: &Nomad,
    template: &Value,
    n: usize,
    prefix: &str,
    limit: Duration,
) -> anyhow::Result<Option<f64>> {
    let result = measure_alone(nomad, template, n, prefix, limit).await;
    nomad.purge(prefix).await?;
    result
}

async fn measure_alone(
    nomad: &Nomad,
    template: &Value,
    n: usize,
    prefix: &str,
    limit: Duration,
) -> anyhow::Result<Option<f64>> {
    let jobs: Vec<Value> = (0..n)
        .map(|i| {
            let mut job = template.clone();
            let id = format!("{prefix}{i:05}");
            if let Some(o) = job.as_object_mut() {
                for k in [
                    "Status",
                    "StatusDescription",
                    "Stable",
                    "Version",
                    "SubmitTime",
                    "CreateIndex",
                    "ModifyIndex",
                    "JobModifyIndex",
                ] {
                    o.remove(k);
                }
            }
            job["ID"] = Value::String(id.clone());
            job["Name"] = Value::String(id);
            serde_json::json!({"Job": job})
        })
        .collect();
    let t0 = Instant::now();
    let registering = {
        let nomad = nomad.clone();
        tokio::spawn(async move {
            futures::stream::iter(jobs)
                .map(|body| {
                    let nomad = nomad.clone();
                    async move { nomad.send(reqwest::Method::PUT, "/v1/jobs", Some(body)).await }
                })
                .buffer_unordered(10)
                .try_collect::<()>()
                .await
        })
    };
    let deadline = t0 + limit;
    let seconds = loop {
        let running = nomad.running(prefix).await?;
        let distinct: std::collections::HashSet<&String> = running.iter().collect();
        if distinct.len() >= n {
            break Some(t0.elapsed().as_secs_f64());
        }
        if Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    registering.await??;
    if seconds.is_none() {
        bail!("Nomad alone: not all {n} jobs running within {limit:?}");
    }
    Ok(seconds)
}

/// The cumulative buckets `(le, count)` of histogram `name` in Prometheus text `metrics`,
/// sorted by `le`.
pub(crate) fn buckets(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with(&bucket))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            let count: f64 = l.rsplit_once(' ')?.1.parse().ok()?;
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// `after - before`, bucket by bucket (the samples recorded between two scrapes).
pub(crate) fn bucket_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|&(le, n)| {
            let old = before.iter().find(|(l, _)| l.total_cmp(&le).is_eq()).map_or(0.0, |b| b.1);
            (le, n - old)
        })
        .collect()
}

/// The `q` quantile (0..1) of cumulative `buckets`, interpolated linearly inside its bucket as
/// Prometheus' `histogram_quantile` does; `None` without samples.
pub(crate) fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let width = count - prev.1;
            let frac = if width > 0.0 { (rank - prev.1) / width } else { 1.0 };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, count);
    }
    None
}

/// The `q` quantile (0..1) of `xs` (nearest rank); `None` when empty.
pub(crate) fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let idx = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v.get(idx).copied()
}
