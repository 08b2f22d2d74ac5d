//! The node itself: registration, Lease and readiness under the real node-lifecycle controller, the
//! process's own metrics, and metrics-server scraping the node.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The node is Ready within 30 s, stays Ready for 2 min under the real node-lifecycle controller
/// with its Lease renewed, and goes Unknown once the process is killed.
pub(crate) async fn node_lifecycle(cx: Ctx<'_>) -> anyhow::Result<()> {
    let node = "vk-node";
    let started = Instant::now();
    let mut vk = cx.start_vk(node)?;
    cx.wait_ready(node, Duration::from_secs(30)).await?;
    println!("node Ready after {:?}", started.elapsed());

    let n = cx.node(node).await?.context("node missing")?;
    let labels = n.metadata.labels.clone().unwrap_or_default();
    for (k, v) in [
        ("type", "virtual-kubelet"),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/hostname", node),
        ("node.kubernetes.io/exclude-from-external-load-balancers", "true"),
    ] {
        ensure!(labels.get(k).map(String::as_str) == Some(v), "label {k}={v} missing: {labels:?}");
    }
    ensure!(labels.contains_key("kubernetes.io/arch"));
    ensure!(!labels.contains_key("kubernetes.io/role"), "role label set by default");
    let taints = n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    ensure!(
        taints.iter().any(|t| t.key == "virtual-kubelet.io/provider"
            && t.value.as_deref() == Some("nomad")
            && t.effect == "NoSchedule"),
        "taint missing: {taints:?}"
    );
    let st = n.status.clone().context("no status")?;
    let alloc = st.allocatable.clone().unwrap_or_default();
    ensure!(alloc.get("pods").map(|q| q.0.as_str()) == Some("110"), "pods: {alloc:?}");
    ensure!(
        alloc.get("cpu").is_some_and(|q| q.0 != "0m")
            && alloc.get("memory").is_some_and(|q| q.0 != "0"),
        "{alloc:?}"
    );
    let addrs = st.addresses.clone().unwrap_or_default();
    ensure!(addrs.iter().any(|a| a.type_ == "InternalIP" && a.address == "127.0.0.1"), "{addrs:?}");
    ensure!(st.daemon_endpoints.and_then(|d| d.kubelet_endpoint).is_some_and(|e| e.port > 0));
    let info = st.node_info.context("no nodeInfo")?;
    ensure!(info.kubelet_version.starts_with("v1.36.3-vk-nomad-"), "{}", info.kubelet_version);
    ensure!(
        info.container_runtime_version == "nomad://1.11.3",
        "{}",
        info.container_runtime_version
    );

    let leases: Api<Lease> = Api::namespaced(cx.client.clone(), "kube-node-lease");
    // The Node is written first, its Lease right after.
    let lease =
        wait_for("the node Lease", Duration::from_secs(10), Duration::from_millis(200), || async {
            Ok(leases.get_opt(node).await?)
        })
        .await?;
    let spec = lease.spec.clone().context("lease spec")?;
    ensure!(
        spec.holder_identity.as_deref() == Some(node) && spec.lease_duration_seconds == Some(40)
    );
    let owner = lease.metadata.owner_references.clone().unwrap_or_default();
    ensure!(
        owner
            .iter()
            .any(|o| o.kind == "Node" && o.uid == n.metadata.uid.clone().unwrap_or_default()),
        "{owner:?}"
    );

    // Two minutes under the node-lifecycle controller (grace period 20 s in this stack).
    let mut renewals = BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(120);
    while Instant::now() < until {
        ensure!(
            cx.ready_status(node).await?.as_deref() == Some("True"),
            "node left Ready after {:?}",
            started.elapsed()
        );
        let l = leases.get(node).await?;
        if let Some(t) = l.spec.and_then(|s| s.renew_time) {
            renewals.insert(t.0);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    ensure!(renewals.len() >= 10, "only {} lease renewals seen in 2 min", renewals.len());
    println!("{} lease renewals observed in 2 min", renewals.len());

    vk.kill();
    let killed = Instant::now();
    wait_for(
        "node Ready=Unknown after kill -9",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async { Ok(cx.ready_status(node).await?.filter(|s| s == "Unknown").map(|_| ())) },
    )
    .await?;
    println!("node Unknown {:?} after the kill", killed.elapsed());
    Ok(())
}

/// The process's own metrics after a pod's life (created, Running, deleted): the series of
/// `vk_app::telemetry` are served on `--metrics-addr`, with `/healthz` and `/readyz`.
pub(crate) async fn process_metrics(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-metrics", "e2e-metrics");
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let _vk = cx.stack.virtual_kubelet(node, &["--metrics-addr", &addr])?;
    cx.stack.namespace(ns).await?;
    cx.wait_ready(node, Duration::from_secs(30)).await?;
    let get = |path: &'static str| {
        let url = format!("http://{addr}{path}");
        let http = cx.http.clone();
        async move {
            let r = http.get(url).send().await?;
            anyhow::Ok((r.status().as_u16(), r.text().await?))
        }
    };
    ensure!(get("/healthz").await?.0 == 200, "/healthz");
    wait_for("/readyz 200", Duration::from_secs(30), Duration::from_millis(250), || async {
        Ok((get("/readyz").await?.0 == 200).then_some(()))
    })
    .await?;
    let p = pod("measured").namespace(ns).on_node(node).container("main", &["sleep", "600"]);
    cx.create(&p.grace(1).build()).await?;
    cx.wait_phase(ns, "measured", "Running", Duration::from_secs(30)).await?;
    let running = get("/metrics").await?.1;
    // Every series is described, the backend's too.
    for name in [
        "vk_pods",
        "vk_pod_operations_total",
        "vk_nomad_requests_total",
        "vk_reconcile_duration_seconds",
    ] {
        ensure!(
            running.lines().any(|l| l.starts_with(&format!("# HELP {name} "))),
            "no # HELP for {name}:\n{running}"
        );
    }
    let pods_running = sample(&running, "vk_pods", &[("phase", "Running")]);
    ensure!(pods_running == Some(1.0), "vk_pods Running {pods_running:?}:\n{running}");
    // The process: its resident memory (a debug build: between 8 MiB and 1 GiB), open file
    // descriptors and CPU time, described.
    let rss = sample(&running, "process_resident_memory_bytes", &[]).unwrap_or(0.0);
    ensure!((8.0 * 1048576.0..1073741824.0).contains(&rss), "process_resident_memory_bytes {rss}");
    let fds = sample(&running, "process_open_fds", &[]).unwrap_or(0.0);
    ensure!(fds >= 3.0, "process_open_fds {fds}");
    // Whole seconds (metrics-process counts them so): 0 for a process this young.
    let cpu = sample(&running, "process_cpu_seconds_total", &[]);
    ensure!(cpu.is_some_and(|c| c >= 0.0), "process_cpu_seconds_total {cpu:?}");
    ensure!(
        running.lines().any(|l| l.starts_with("# HELP process_resident_memory_bytes ")),
        "no # HELP for process_resident_memory_bytes"
    );
    // The build: the commit checked out here (or `unknown` outside git), in vk_build_info, in
    // the node's kubeletVersion and in --version.
    let commit = std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let info = sample(
        &running,
        "vk_build_info",
        &[("commit", commit.as_str()), ("kubernetes", "v1.36.3")],
    );
    ensure!(info == Some(1.0), "vk_build_info for commit {commit}: {info:?}:\n{running}");
    let n = kube::Api::<k8s_openapi::api::core::v1::Node>::all(cx.client.clone()).get(node).await?;
    let kubelet = n.status.and_then(|s| s.node_info).map(|i| i.kubelet_version).unwrap_or_default();
    ensure!(kubelet.ends_with(&format!("+{commit}")), "kubeletVersion {kubelet}");
    let version =
        std::process::Command::new(vk_tests::virtual_kubelet_bin()?).arg("--version").output()?;
    let version = String::from_utf8_lossy(&version.stdout);
    ensure!(
        version.contains(&format!("(commit {commit}, Kubernetes v1.36.3)")),
        "--version: {version}"
    );
    cx.pods(ns).delete("measured", &Default::default()).await?;
    wait_for("measured gone", Duration::from_secs(30), Duration::from_millis(250), || async {
        Ok(cx.pods(ns).get_opt("measured").await?.is_none().then_some(()))
    })
    .await?;
    let text = get("/metrics").await?.1;
    let ops = |op| sample(&text, "vk_pod_operations_total", &[("operation", op), ("result", "ok")]);
    ensure!(ops("create") == Some(1.0), "create {:?}:\n{text}", ops("create"));
    // Deleting the object is idempotent and may be repeated when a requeue meets the watch's
    // Deleted event; creating it twice would be a bug.
    for op in ["stop", "sync_status", "delete_object"] {
        ensure!(ops(op).is_some_and(|n| n >= 1.0), "{op}: {:?}", ops(op));
    }
    for (name, labels) in [
        ("vk_reconcile_duration_seconds_count", &[][..]),
        ("vk_status_propagation_seconds_count", &[][..]),
        (
            "vk_nomad_requests_total",
            &[("endpoint", "/v1/jobs"), ("method", "PUT"), ("code", "200")][..],
        ),
        (
            "vk_nomad_request_duration_seconds_count",
            &[("endpoint", "/v1/job/:id"), ("method", "DELETE")][..],
        ),
    ] {
        let v = sample(&text, name, labels);
        ensure!(v.is_some_and(|n| n >= 1.0), "{name} {labels:?}: {v:?}\n{text}");
    }
    let pods_running = sample(&text, "vk_pods", &[("phase", "Running")]);
    ensure!(pods_running == Some(0.0), "vk_pods Running after the delete: {pods_running:?}");
    ensure!(!text.contains("k8s-e2e-metrics_measured"), "a job ID became a label:\n{text}");
    Ok(())
}

/// metrics-server (a real one, from its Go module) runs against the stack as its ServiceAccount:
/// its APIService becomes Available through the aggregator and the metrics API answers. No node
/// need be listed (the nodes here may have no kubelet endpoint serving metrics).
pub(crate) async fn metrics_server_serves(cx: Ctx<'_>) -> anyhow::Result<()> {
    let started = Instant::now();
    cx.stack.start_metrics_server().await?;
    println!("metrics-server available after {:?}", started.elapsed());
    // A second call finds it running.
    cx.stack.start_metrics_server().await?;
    let available = cx.stack.kubectl(&[
        "get",
        "apiservice",
        METRICS_APISERVICE,
        "-o",
        r#"jsonpath={.status.conditions[?(@.type=="Available")].status}"#,
    ])?;
    ensure!(available == "True", "APIService {METRICS_APISERVICE} Available: {available:?}");
    for (path, kind) in [
        ("/apis/metrics.k8s.io/v1beta1/pods", "PodMetricsList"),
        ("/apis/metrics.k8s.io/v1beta1/nodes", "NodeMetricsList"),
    ] {
        let body: Value = serde_json::from_str(&cx.stack.kubectl(&["get", "--raw", path])?)
            .with_context(|| format!("GET {path}"))?;
        ensure!(body["kind"] == kind, "GET {path}: {body}");
    }
    // The checker for kubelet summaries that later tests use: a complete summary passes, an
    // unknown field or a missing required field fails.
    let peers = &cx.stack.peers;
    let t = "2026-01-01T00:00:00Z";
    let mut summary = serde_json::json!({
        "node": {"nodeName": "n", "startTime": t},
        "pods": [{
            "podRef": {"name": "p", "namespace": "ns", "uid": "u"},
            "startTime": t,
            "containers": [{
                "name": "c", "startTime": t,
                "cpu": {"time": t, "usageNanoCores": 1, "usageCoreNanoSeconds": 2},
                "memory": {"time": t, "workingSetBytes": 3}
            }]
        }]
    });
    let ok = peers.check_stats_summary(summary.to_string().as_bytes(), false)?;
    ensure!(ok.starts_with("ok:"), "{ok}");
    summary["pods"][0]["containers"][0]["memory"] = serde_json::json!({"time": t});
    summary["node"]["bogus"] = serde_json::json!(1);
    let failure = |s: &Value| match peers.check_stats_summary(s.to_string().as_bytes(), false) {
        Ok(ok) => format!("unexpectedly passed: {ok}"),
        Err(e) => format!("{e:#}"),
    };
    let e = failure(&summary);
    ensure!(e.contains("unknown field \"bogus\""), "{e}");
    summary["node"].as_object_mut().context("node")?.remove("bogus");
    let e = failure(&summary);
    ensure!(e.contains("containers[0](c).memory.workingSetBytes"), "{e}");
    Ok(())
}
