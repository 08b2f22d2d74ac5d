//! What the runtime enforces on real containers: the security context and the limits as
//! `docker inspect` and the containers' processes see them, the usage the kubelet API reports
//! within those limits, and no escape from a shared volume to the node's filesystem.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use vk_tests::fixtures::pod;
use vk_tests::{BUSYBOX, wait_for};

use super::{create, delete_and_wait, inspect, log_with, running};
use crate::{Ctx, current_alloc};

/// The security context and the limits, enforced by the runtime: `docker inspect` shows what the
/// pod asked for, and processes in the containers cannot do what it forbids.
/// - `locked` (uid 65534, read-only root filesystem, no privilege escalation, every capability
///   dropped but `NET_BIND_SERVICE`; CPU limit = request, memory limit above the request): user,
///   `ReadonlyRootfs`, `SecurityOpt`, `CapDrop`/`CapAdd`, the memory hard limit and reservation
///   and a CFS quota of 0.1 core; inside, a write to `/` fails and `NoNewPrivs` is 1.
/// - `nocaps` (root, every capability dropped) cannot `chown`; `root` (Docker's default
///   capabilities) can, so the check is not vacuous.
/// - `hog` (memory limit 32 MiB) allocating 80 MiB is OOM-killed: `OOMKilled`, exit code 137.
pub(crate) async fn docker_security_and_limits(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-docker-sec", "e2e-docker-sec");
    let _vk = cx.node_and_namespace_with(node, ns, &["--nomad-driver", "docker"]).await?;
    let check = "echo \"UID=$(id -u):$(id -g)\"; \
        if touch /probe 2>/dev/null; then echo ROOT=writable; else echo ROOT=read-only; fi; \
        echo \"NNP=$(grep NoNewPrivs /proc/self/status | tr -d ' \\t' | cut -d: -f2)\"; \
        touch /tmp/f; if chown 65534 /tmp/f 2>/dev/null; then echo CHOWN=done; else echo CHOWN=refused; fi; \
        echo checked; exec sleep 3600";
    let container = |name: &str, sec: serde_json::Value, res: serde_json::Value| {
        serde_json::json!({"name": name, "image": BUSYBOX, "command": ["sh", "-c", check],
            "securityContext": sec, "resources": res})
    };
    let p = pod("sec")
        .namespace(ns)
        .on_node(node).grace(2)
        .spec(serde_json::json!({
            "containers": [
                container("locked", serde_json::json!({
                    "runAsUser": 65534, "runAsGroup": 65534, "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
                }), serde_json::json!({
                    "requests": {"cpu": "100m", "memory": "32Mi"},
                    "limits": {"cpu": "100m", "memory": "64Mi"}
                })),
                container("nocaps", serde_json::json!({"runAsUser": 0, "capabilities": {"drop": ["ALL"]}}), serde_json::json!({})),
                container("root", serde_json::json!({"runAsUser": 0}), serde_json::json!({}))
            ]
        }))
        .build();
    create(&cx, &p).await?;
    running(&cx, ns, "sec").await?;
    let mut seen = Vec::new();
    for c in ["locked", "nocaps", "root"] {
        seen.push(log_with(&cx, (ns, "sec", c), "checked", Duration::from_secs(60)).await?);
    }
    let has = |i: usize, want: &str| {
        ensure!(seen[i].lines().any(|l| l == want), "{want:?} not in:\n{}", seen[i]);
        Ok(())
    };
    has(0, "UID=65534:65534")?;
    has(0, "ROOT=read-only")?;
    has(0, "NNP=1")?;
    has(1, "UID=0:0")?;
    has(1, "CHOWN=refused")?;
    has(2, "ROOT=writable")?;
    has(2, "CHOWN=done")?;
    has(2, "NNP=0")?;

    let alloc = current_alloc(&cx, &format!("k8s-{ns}_sec")).await?;
    let locked = inspect(&alloc, "locked")?;
    let host = &locked["HostConfig"];
    ensure!(locked["Config"]["User"] == "65534:65534", "User {}", locked["Config"]["User"]);
    ensure!(host["ReadonlyRootfs"] == true, "ReadonlyRootfs {}", host["ReadonlyRootfs"]);
    let list = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str())
            .map(|s| s.trim_start_matches("CAP_").to_owned())
            .collect()
    };
    ensure!(list(&host["SecurityOpt"]).contains(&"no-new-privileges".to_owned()), "{host}");
    ensure!(list(&host["CapDrop"]) == ["ALL"], "CapDrop {}", host["CapDrop"]);
    ensure!(list(&host["CapAdd"]) == ["NET_BIND_SERVICE"], "CapAdd {}", host["CapAdd"]);
    ensure!(host["Memory"] == 64 << 20, "Memory {}", host["Memory"]);
    ensure!(
        host["MemoryReservation"] == 32 << 20,
        "MemoryReservation {}",
        host["MemoryReservation"]
    );
    let (quota, period) = (host["CpuQuota"].as_f64(), host["CpuPeriod"].as_f64());
    let cores = quota.zip(period).map(|(q, p)| q / p).unwrap_or_default();
    ensure!(
        (0.09..0.12).contains(&cores),
        "CFS quota of {cores} cores (CpuQuota {quota:?}, CpuPeriod {period:?})"
    );
    let root = inspect(&alloc, "root")?;
    ensure!(root["HostConfig"]["CpuQuota"].as_i64().unwrap_or(0) == 0, "no limit, no quota");

    // A container beyond its memory limit is OOM-killed, and says so.
    let hog = pod("hog")
        .namespace(ns)
        .on_node(node)
        .spec(serde_json::json!({
            "restartPolicy": "Never",
            "containers": [{"name": "hog", "image": BUSYBOX,
                "command": ["sh", "-c", "x=$(head -c 83886080 /dev/zero | tr '\\0' a); echo survived ${#x}"],
                "resources": {"requests": {"memory": "16Mi"}, "limits": {"memory": "32Mi"}}}]
        }))
        .build();
    create(&cx, &hog).await?;
    let failed =
        cx.wait_phase(ns, "hog", "Failed", Duration::from_secs(120)).await.with_context(|| {
            let st = cx.stack.kubectl(&["get", "pod", "-n", ns, "hog", "-o", "jsonpath={.status}"]);
            format!("hog's status: {st:?}")
        })?;
    let term = failed
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|cs| cs.into_iter().next())
        .and_then(|c| c.state)
        .and_then(|s| s.terminated)
        .context("hog not terminated")?;
    ensure!(
        term.reason.as_deref() == Some("OOMKilled") && term.exit_code == 137,
        "hog ended {:?} with {}",
        term.reason,
        term.exit_code
    );
    Ok(())
}

/// Resource usage of real containers, as the kubelet API reports it (called as the API server
/// calls it, with its client certificate): a container holding 50 MiB (a shell keeping a 50 MiB
/// string) shows a memory working set of at least that, below its 256 MiB limit, in
/// `/stats/summary` and in `/metrics/resource`; a container spinning a shell loop is held at its
/// 100m limit (70m to 130m measured: the CFS quota at work; a small reservation, since the shared
/// test node's CPU holds every test's pods). The pod is deleted at the end.
pub(crate) async fn docker_stats(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-docker-stats", "e2e-docker-stats");
    let port = vk_tests::free_port()?.to_string();
    let flags = ["--nomad-driver", "docker", "--kubelet-port", &port];
    let _vk = cx.node_and_namespace_with(node, ns, &flags).await?;
    let apiserver = cx.stack.kubelet_client()?;
    let get = |path: &str| {
        let r = apiserver.get(format!("https://127.0.0.1:{port}{path}"));
        async move {
            let r = r.send().await?;
            ensure!(r.status().is_success(), "{}", r.status());
            Ok(r.text().await?)
        }
    };
    let p = pod("usage")
        .namespace(ns)
        .on_node(node)
        .grace(1)
        .spec(serde_json::json!({"containers": [
            {"name": "holder", "image": BUSYBOX,
             "command": ["sh", "-c", "x=$(head -c 52428800 /dev/zero | tr '\\0' a); echo held; while :; do sleep 3600; done"],
             "resources": {"requests": {"cpu": "10m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}},
            {"name": "spinner", "image": BUSYBOX, "command": ["sh", "-c", "while :; do :; done"],
             "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "32Mi"}}}
        ]}))
        .build();
    create(&cx, &p).await?;
    running(&cx, ns, "usage").await?;
    let mib = 1u64 << 20;
    let summary = wait_for(
        "holder's 50 MiB and spinner's CPU in /stats/summary",
        Duration::from_secs(90),
        Duration::from_secs(2),
        || async {
            let raw = get("/stats/summary").await?;
            let v: serde_json::Value = serde_json::from_str(&raw)?;
            let pods = v["pods"].as_array().cloned().unwrap_or_default();
            let Some(pod) = pods.iter().find(|p| p["podRef"]["name"] == "usage") else {
                return Ok(None);
            };
            let container = |name: &str| {
                pod["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["name"] == name)
                    .cloned()
            };
            let (Some(holder), Some(spinner)) = (container("holder"), container("spinner")) else {
                return Ok(None);
            };
            let ws = holder["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
            let cpu = spinner["cpu"]["usageNanoCores"].as_u64().unwrap_or(0);
            ensure!(
                ws >= 50 * mib && cpu >= 70_000_000,
                "holder's working set {ws} B, spinner {cpu} nanocores"
            );
            Ok(Some((ws, cpu)))
        },
    )
    .await?;
    let (ws, cpu) = summary;
    ensure!(ws < 256 * mib, "holder's working set {ws} is beyond its limit");
    println!("docker stats: holder {} MiB, spinner {cpu} nanocores", ws / mib);
    let metrics = get("/metrics/resource").await?;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("container_memory_working_set_bytes{")
                && l.contains("container=\"holder\"")
                && l.contains("pod=\"usage\"")
        })
        .with_context(|| format!("no working set of holder in /metrics/resource:\n{metrics}"))?;
    let value: f64 = line.split_whitespace().nth(1).context("no value")?.parse()?;
    ensure!(value >= (50 * mib) as f64, "/metrics/resource: {line}");
    ensure!(cpu <= 130_000_000, "spinner used {cpu} nanocores beyond its 100m limit");
    delete_and_wait(&cx, ns, "usage").await
}

/// No escape through a shared volume (the kubelet's CVE-2017-1002101): a pod whose init container
/// plants `ln -s / /shared/link` in an emptyDir and whose app container mounts `subPath: link`
/// would have Docker follow the link to the node's root filesystem; it is refused before anything
/// reaches Nomad, naming the field. The same link seen through a whole-volume mount resolves
/// inside the container that follows it (its own root filesystem, the image's), never the node's.
pub(crate) async fn docker_subpath_escape(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-docker-escape", "e2e-docker-escape");
    let _vk = cx.node_and_namespace_with(node, ns, &["--nomad-driver", "docker"]).await?;
    let spec = |sub_path: Option<&str>| {
        let mut mount = serde_json::json!({"name": "shared", "mountPath": "/shared"});
        if let Some(s) = sub_path {
            mount = serde_json::json!({"name": "shared", "mountPath": "/escaped", "subPath": s});
        }
        serde_json::json!({
            "initContainers": [{"name": "plant", "image": BUSYBOX,
                "command": ["sh", "-c", "ln -s / /shared/link"],
                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}],
            "containers": [{"name": "main", "image": BUSYBOX,
                "command": ["sh", "-c", "if test -e /shared/link/etc/debian_version || test -e /escaped/etc/debian_version; then echo NODE-ROOT; else echo CONTAINER-ROOT; fi; exec sleep 3600"],
                "volumeMounts": [mount]}],
            "volumes": [{"name": "shared", "emptyDir": {}}]
        })
    };
    let refused = pod("escape").namespace(ns).on_node(node).spec(spec(Some("link")));
    create(&cx, &refused.build()).await?;
    let failed = wait_for(
        "the subPath pod refused",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            let p = cx.pods(ns).get("escape").await?;
            let st = p.status.unwrap_or_default();
            Ok((st.reason.as_deref() == Some("ProviderFailed")).then_some(st))
        },
    )
    .await?;
    let message = failed.message.unwrap_or_default();
    ensure!(
        message.starts_with("spec.containers[0].volumeMounts[0].subPath: \"link\" into emptyDir")
            && message.contains("CVE-2017-1002101"),
        "refusal {message:?}"
    );
    ensure!(
        cx.nomad(&format!("/v1/job/k8s-{ns}_escape")).await?.is_none(),
        "a job was registered for the refused pod"
    );
    let whole = pod("whole").namespace(ns).on_node(node).spec(spec(None));
    create(&cx, &whole.build()).await?;
    running(&cx, ns, "whole").await?;
    let out = log_with(&cx, (ns, "whole", "main"), "", Duration::from_secs(30)).await?;
    ensure!(out.trim() == "CONTAINER-ROOT", "the planted link led to {out:?}");
    Ok(())
}
