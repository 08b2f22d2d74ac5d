//! End-to-end tests of other providers behind the same controllers: `--provider memory` and the
//! example crate `examples/timer-provider` (binary `vk-example-provider`), on the real
//! kube-apiserver, scheduler and controller manager (no Nomad involved).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{WatchEvent, WatchParams};
use serde_json::json;
use vk_tests::fixtures::pod;
use vk_tests::{Process, free_port, virtual_kubelet_bin, wait_for};

use super::{Ctx, container_state};

/// Checks what every virtual node registers with: Ready, the taint `virtual-kubelet.io/provider`
/// with `taint_value`, the load-balancer exclusion label, and the runtime the provider names.
async fn check_node(
    cx: &Ctx<'_>,
    node: &str,
    taint_value: &str,
    runtime: &str,
) -> anyhow::Result<Node> {
    cx.wait_ready(node, Duration::from_secs(30)).await?;
    let n = cx.node(node).await?.context("node missing")?;
    let labels = n.metadata.labels.clone().unwrap_or_default();
    ensure!(
        labels.get("node.kubernetes.io/exclude-from-external-load-balancers").map(String::as_str)
            == Some("true"),
        "labels: {labels:?}"
    );
    let taints = n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    ensure!(
        taints.iter().any(|t| t.key == "virtual-kubelet.io/provider"
            && t.value.as_deref() == Some(taint_value)
            && t.effect == "NoSchedule"),
        "taints: {taints:?}"
    );
    let info = n.status.as_ref().and_then(|s| s.node_info.clone()).context("no nodeInfo")?;
    ensure!(
        info.container_runtime_version.starts_with(runtime),
        "runtime {}",
        info.container_runtime_version
    );
    // The backend names itself in the kubelet version (`-vk-nomad-` was everyone's before).
    let name = if taint_value == "memory" { "memory" } else { "provider" };
    ensure!(
        info.kubelet_version.starts_with(&format!("v1.36.3-vk-{name}-")),
        "kubeletVersion {}",
        info.kubelet_version
    );
    Ok(n)
}

/// Deletes pod `ns/name` (default grace), watching it until the object is gone (within
/// `within`); returns how long that took and the exit code container `main` last showed.
async fn delete_and_watch(
    cx: &Ctx<'_>,
    ns: &str,
    name: &str,
    within: Duration,
) -> anyhow::Result<(Duration, Option<i32>)> {
    let pods = cx.pods(ns);
    let rv = pods.get(name).await?.metadata.resource_version.unwrap_or_default();
    let params = WatchParams::default().fields(&format!("metadata.name={name}")).timeout(30);
    let mut events = pods.watch(&params, &rv).await?.boxed();
    let started = Instant::now();
    cx.stack.kubectl(&["delete", "pod", "-n", ns, name, "--wait=false"])?;
    let mut exit_code = None;
    let watch = async {
        while let Some(ev) = events.try_next().await? {
            match ev {
                WatchEvent::Modified(p) => {
                    let ended = container_state(&p, "main").and_then(|c| c.state?.terminated);
                    exit_code = ended.map(|t| t.exit_code).or(exit_code);
                }
                WatchEvent::Deleted(_) => return anyhow::Ok(()),
                _ => {}
            }
        }
        anyhow::bail!("the watch ended before {ns}/{name} was deleted")
    };
    tokio::time::timeout(within, watch)
        .await
        .with_context(|| format!("{ns}/{name} not gone within {within:?}"))??;
    Ok((started.elapsed(), exit_code))
}

/// `--provider memory`: the node registers with upstream mock's capacity, a pod is Running at once
/// with every container running and ready, `/stats/summary` passes statscheck and
/// `/metrics/resource` has the pod's containers, `kubectl logs` shows the canned line, and a
/// deletion ends the containers with exit code 0 and removes the pod at once.
pub(crate) async fn memory_provider(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-memory", "e2e-memory");
    let port = free_port()?;
    let _vk = cx
        .stack
        .virtual_kubelet(node, &["--provider", "memory", "--kubelet-port", &port.to_string()])?;
    cx.stack.namespace(ns).await?;
    let n = check_node(&cx, node, "memory", "memory://").await?;
    // Upstream mock's defaults: 20 cores, 100Gi; pods from --max-pods. The API server writes
    // quantities back in canonical form, so either spelling is accepted.
    let alloc = n.status.and_then(|s| s.allocatable).unwrap_or_default();
    for (k, spellings) in [
        ("cpu", &["20", "20000m"][..]),
        ("memory", &["100Gi", "107374182400"][..]),
        ("pods", &["110"][..]),
    ] {
        let got = alloc.get(k).map(|q| q.0.as_str());
        ensure!(got.is_some_and(|g| spellings.contains(&g)), "allocatable {k}: {alloc:?}");
    }

    let p = pod("busy")
        .namespace(ns)
        .on_node(node)
        .spec(json!({"containers": [
            {"name": "main", "image": "web:1", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
            {"name": "helper", "image": "helper:1"},
        ]}))
        .build();
    let created = Instant::now();
    cx.create(&p).await?;
    let running = cx.wait_phase(ns, "busy", "Running", Duration::from_secs(20)).await?;
    println!("memory pod Running after {:?}", created.elapsed());
    let status = running.status.clone().context("status")?;
    ensure!(
        status.pod_ip.as_deref().is_some_and(|ip| ip.starts_with("198.18.")),
        "podIP {:?}",
        status.pod_ip
    );
    ensure!(status.host_ip.as_deref() == Some("127.0.0.1"), "hostIP {:?}", status.host_ip);
    for c in ["main", "helper"] {
        let cs = container_state(&running, c).with_context(|| format!("no status for {c}"))?;
        let started =
            cs.state.as_ref().and_then(|s| s.running.as_ref()).and_then(|r| r.started_at.clone());
        ensure!(started.is_some() && cs.ready && cs.restart_count == 0, "{c}: {cs:?}");
    }
    ensure!(
        status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "pod not Ready"
    );

    let logs = cx.stack.kubectl(&["logs", "-n", ns, "busy", "-c", "main"])?;
    ensure!(logs == "main is running in the memory provider\n", "logs: {logs:?}");

    // The kubelet port, called as the API server calls it.
    let client = cx.stack.kubelet_client()?;
    let get = |path: &str| {
        let r = client.get(format!("https://127.0.0.1:{port}{path}"));
        async move {
            let r = r.send().await?;
            anyhow::Ok((r.status().as_u16(), r.text().await?))
        }
    };
    let (s, summary) = get("/stats/summary").await?;
    ensure!(s == 200, "/stats/summary: {s} {summary}");
    let v: serde_json::Value = serde_json::from_str(&summary)?;
    let pod_stats =
        v["pods"].as_array().and_then(|ps| ps.iter().find(|p| p["podRef"]["name"] == "busy"));
    let pod_stats = pod_stats.with_context(|| format!("busy not in {summary}"))?;
    ensure!(pod_stats["containers"].as_array().map(Vec::len) == Some(2), "containers: {pod_stats}");
    cx.stack.peers.check_stats_summary(summary.as_bytes(), true)?;
    let (s, metrics) = get("/metrics/resource").await?;
    for c in ["main", "helper"] {
        let line = format!(
            "container_cpu_usage_seconds_total{{container=\"{c}\",namespace=\"{ns}\",pod=\"busy\"}}"
        );
        ensure!(s == 200 && metrics.contains(&line), "/metrics/resource: {s} no {c}:\n{metrics}");
    }
    let memory = format!(
        "container_memory_working_set_bytes{{container=\"main\",namespace=\"{ns}\",pod=\"busy\"}} {}",
        64 << 20
    );
    ensure!(metrics.contains(&memory), "no 64Mi working set for main:\n{metrics}");

    let (took, exit_code) = delete_and_watch(&cx, ns, "busy", Duration::from_secs(10)).await?;
    println!("memory pod gone {took:?} after the delete");
    ensure!(took < Duration::from_secs(5), "deletion took {took:?}");
    ensure!(exit_code == Some(0), "main ended with {exit_code:?}");
    Ok(())
}

/// Starts the example provider's binary (built beside `virtual-kubelet`) as node `node`, with the
/// same identity and ports flags the stack gives a virtual kubelet.
fn example_provider_process(cx: &Ctx<'_>, node: &str) -> anyhow::Result<Process> {
    let bin = virtual_kubelet_bin()?.with_file_name("vk-example-provider");
    ensure!(bin.is_file(), "{} missing: run `cargo build -p vk-example-provider`", bin.display());
    let kubeconfig = cx.stack.node_kubeconfig(node)?;
    let mut cmd = Command::new(bin);
    cmd.args(["--taint-value", "timer", "--nodename", node])
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["--internal-ip", "127.0.0.1", "--status-interval", "1s"])
        .args(["--kubelet-port", &free_port()?.to_string()])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port()?)])
        .env("RUST_LOG", "info,vk_app=debug")
        .env_remove("KUBECONFIG");
    let log = cx.stack.dir.join("logs").join(format!("virtual-kubelet-{node}.log"));
    Process::spawn(&format!("vk-example-provider-{node}"), cmd, &log)
}

/// The example provider: its node registers and is Ready; a pod whose container "runs" 3 s is
/// Running, then Succeeded with exit code 0 after 3 s; a long one is Running and a deletion ends
/// it with exit code 143 and removes it; a `restartPolicy: Always` pod is refused with
/// `ProviderFailed`.
pub(crate) async fn example_provider(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-example", "e2e-example");
    let _vk = example_provider_process(&cx, node)?;
    cx.stack.namespace(ns).await?;
    check_node(&cx, node, "timer", "timer://").await?;

    let timed = |name: &str, seconds: &str| {
        pod(name)
            .namespace(ns)
            .on_node(node)
            .restart("Never")
            .annotation("example.vk/run-seconds", seconds)
            .container("main", &["tick"])
            .build()
    };
    cx.create(&timed("short", "3")).await?;
    cx.create(&timed("long", "600")).await?;
    let running = cx.wait_phase(ns, "short", "Running", Duration::from_secs(20)).await?;
    let cs = container_state(&running, "main").context("no container status")?;
    ensure!(cs.state.and_then(|s| s.running).is_some() && cs.ready, "short not running and ready");
    let done = cx.wait_phase(ns, "short", "Succeeded", Duration::from_secs(20)).await?;
    let t = container_state(&done, "main")
        .and_then(|c| c.state?.terminated)
        .context("not terminated")?;
    ensure!(t.exit_code == 0 && t.reason.as_deref() == Some("Completed"), "short ended {t:?}");
    let (started, finished) =
        (t.started_at.context("startedAt")?.0, t.finished_at.context("finishedAt")?.0);
    let ran = finished.duration_since(started).as_secs();
    ensure!(ran == 3, "short ran {ran} s");

    cx.wait_phase(ns, "long", "Running", Duration::from_secs(20)).await?;
    let (took, exit_code) = delete_and_watch(&cx, ns, "long", Duration::from_secs(20)).await?;
    println!("example pod gone {took:?} after the delete");
    ensure!(exit_code == Some(143), "long ended with {exit_code:?}");

    let always: Pod = pod("forever")
        .namespace(ns)
        .on_node(node)
        .restart("Always")
        .container("main", &["tick"])
        .build();
    cx.create(&always).await?;
    wait_for(
        "forever ProviderFailed",
        Duration::from_secs(20),
        Duration::from_millis(250),
        || async {
            let p = cx.pods(ns).get("forever").await?;
            let st = p.status.unwrap_or_default();
            let failed = st.reason.as_deref() == Some("ProviderFailed")
                && st.phase.as_deref() == Some("Pending")
                && st
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains("restartPolicy Never or OnFailure"));
            Ok(failed.then_some(()))
        },
    )
    .await?;
    Ok(())
}
