//! P5 and P6, on one pod run by ours through the real Nomad (raw_exec): it writes `bytes` of
//! 100-byte lines to stdout, then sleeps.
//!
//! P5: `kubectl logs` (API server, then our kubelet API, then Nomad's `fs/logs`) against
//! `nomad alloc logs` (Nomad's `fs/logs` API directly), alternated; throughput is the bytes each
//! printed over its wall time, both CLIs started fresh each time.
//! P6: `kubectl exec -- true` against `nomad alloc exec ... true` (Nomad's exec WebSocket
//! directly), alternated; the median wall time of each.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use vk_tests::{Stack, wait_for};

use crate::nomad::{Nomad, start_ours, wait_running};
use crate::scale::remove_pods;

/// What P5 and P6 measured (one entry per repetition).
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamRuns {
    /// Bytes the pod wrote.
    pub(crate) bytes: u64,
    /// `kubectl logs`: (bytes printed, seconds).
    pub(crate) kubectl_logs: Vec<(u64, f64)>,
    /// `nomad alloc logs`: (bytes printed, seconds).
    pub(crate) nomad_logs: Vec<(u64, f64)>,
    /// `kubectl exec -- true`, seconds.
    pub(crate) kubectl_exec: Vec<f64>,
    /// `nomad alloc exec true`, seconds.
    pub(crate) nomad_exec: Vec<f64>,
    /// `kubectl get pod`, seconds: kubectl's start and one API server round trip, no kubelet.
    pub(crate) kubectl_get: Vec<f64>,
}

fn timed(mut cmd: Command) -> anyhow::Result<(u64, f64)> {
    let t = Instant::now();
    let out = cmd.stdin(Stdio::null()).output()?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok((out.stdout.len() as u64, secs))
}

/// Runs P5 (`log_runs` times each) and P6 (`exec_runs` times each) with a pod writing `bytes`.
///
/// # Errors
/// The pod not running or not writing its log within 300 s, or a command failing.
pub(crate) async fn run(
    stack: &Stack,
    nomad: &Nomad,
    bytes: u64,
    log_runs: usize,
    exec_runs: usize,
) -> anyhow::Result<StreamRuns> {
    let (ns, node) = ("bench-streams", "b-streams");
    let client = stack.client().await?;
    stack.namespace(ns).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let (mut proc, _) = start_ours(stack, node)?;
    let result = measure(stack, nomad, &api, ns, node, bytes, log_runs, exec_runs).await;
    proc.kill();
    remove_pods(&client, ns).await?;
    nomad.purge(&format!("k8s-{ns}_")).await?;
    result.with_context(|| format!("P5/P6; our log: {}", proc.log.display()))
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    stack: &Stack,
    nomad: &Nomad,
    api: &Api<Pod>,
    ns: &str,
    node: &str,
    bytes: u64,
    log_runs: usize,
    exec_runs: usize,
) -> anyhow::Result<StreamRuns> {
    // 99 characters and a newline per line.
    let line = "x".repeat(99);
    let script = format!("yes {line} | head -c {bytes}; exec sleep 3600");
    let mut pod = crate::scale::bound_pod("talker", ns, node)?;
    if let Some(c) = pod.spec.as_mut().and_then(|s| s.containers.first_mut()) {
        c.command = Some(vec!["sh".into(), "-c".into(), script]);
    }
    api.create(&PostParams::default(), &pod).await?;
    wait_running(api, "talker", Duration::from_secs(90)).await?;
    let job = format!("k8s-{ns}_talker");
    let alloc = nomad.alloc_of(&job).await?;
    let alloc_id = alloc["ID"].as_str().context("allocation without ID")?.to_owned();
    wait_for("the log written", Duration::from_secs(300), Duration::from_millis(500), || async {
        let files = nomad.get(&format!("/v1/client/fs/ls/{alloc_id}?path=/alloc/logs")).await?;
        let size: u64 = files
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["Name"].as_str().is_some_and(|n| n.starts_with("main.stdout.")))
            .filter_map(|f| f["Size"].as_u64())
            .sum();
        Ok((size >= bytes).then_some(()))
    })
    .await?;

    let kubeconfig = format!("--kubeconfig={}", stack.admin_kubeconfig.display());
    let kubectl = |args: &[&str]| {
        let mut c = Command::new(&stack.peers.kubectl);
        c.arg(&kubeconfig).arg(format!("--namespace={ns}")).args(args);
        c
    };
    let nomad_cli = |args: &[&str]| {
        let mut c = Command::new(&stack.peers.nomad);
        c.args(args).env("NOMAD_ADDR", &stack.nomad_addr).env_remove("NOMAD_TOKEN");
        c
    };
    let mut runs = StreamRuns { bytes, ..StreamRuns::default() };
    for _ in 0..log_runs {
        runs.kubectl_logs.push(timed(kubectl(&["logs", "talker"]))?);
        runs.nomad_logs.push(timed(nomad_cli(&["alloc", "logs", "-task", "main", &alloc_id]))?);
    }
    for _ in 0..exec_runs {
        runs.kubectl_exec.push(timed(kubectl(&["exec", "talker", "--", "true"]))?.1);
        runs.nomad_exec
            .push(timed(nomad_cli(&["alloc", "exec", "-task", "main", &alloc_id, "true"]))?.1);
        runs.kubectl_get.push(timed(kubectl(&["get", "pod", "talker", "-o", "name"]))?.1);
    }
    Ok(runs)
}
