//! End-to-end tests on the real peers: a real kube-apiserver, scheduler and controller manager,
//! a real Nomad agent, and the `virtual-kubelet` binary. One stack is shared by all tests (each
//! test has its own node name and namespaces); it is started on first use and torn down at the
//! end. A failing test prints where the peers' and the virtual kubelet's logs are.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;
use tokio::sync::OnceCell;
use vk_tests::fixtures::pod;
use vk_tests::{METRICS_APISERVICE, Process, Stack, StackOptions, wait_for};

#[path = "e2e/adversary.rs"]
mod adversary;
#[path = "e2e/bootstrap.rs"]
mod bootstrap;
#[path = "e2e/deploy.rs"]
mod deploy;
#[path = "e2e/docker.rs"]
mod docker;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/kubelet.rs"]
mod kubelet;
use adversary::kubelet_port_under_attack;
use bootstrap::node_identity_bootstrap;
use deploy::in_cluster_rbac;
use docker::{
    docker_empty_dirs, docker_exec_probes, docker_image_pull_failure, docker_init_and_sidecar,
    docker_pod, docker_readiness_gates, docker_registry_pulls, docker_security_and_limits,
    docker_stats, docker_subpath_escape, docker_termination_messages, docker_volume_updates,
};
use hostile::hostile_corpus;
#[path = "e2e/providers.rs"]
mod providers;
use kubelet::{
    kubelet_exec, kubelet_logs, kubelet_port_forward, kubelet_security, kubelet_top_and_hpa,
    kubelet_websocket_exec,
};
use providers::{example_provider, memory_provider};

type Shared = Arc<OnceCell<Result<Stack, String>>>;

struct Ctx<'a> {
    stack: &'a Stack,
    client: Client,
    http: reqwest::Client,
}

impl Ctx<'_> {
    fn start_vk(&self, node: &str) -> anyhow::Result<Process> {
        self.stack.virtual_kubelet(node, &[])
    }

    /// Starts a virtual kubelet as `node`, makes namespace `ns`, and waits for the node to be
    /// Ready (within 30 s).
    async fn node_and_namespace(&self, node: &str, ns: &str) -> anyhow::Result<Process> {
        self.node_and_namespace_with(node, ns, &[]).await
    }

    /// [`Ctx::node_and_namespace`] for pods on Nomad's docker driver (real containers of
    /// [`vk_tests::BUSYBOX`]).
    async fn docker_node_and_namespace(&self, node: &str, ns: &str) -> anyhow::Result<Process> {
        self.node_and_namespace_with(node, ns, &["--nomad-driver", "docker"]).await
    }

    /// [`Ctx::node_and_namespace`] with `extra` flags.
    async fn node_and_namespace_with(
        &self,
        node: &str,
        ns: &str,
        extra: &[&str],
    ) -> anyhow::Result<Process> {
        let vk = self.stack.virtual_kubelet(node, extra)?;
        self.stack.namespace(ns).await?;
        self.wait_ready(node, Duration::from_secs(30)).await?;
        Ok(vk)
    }

    async fn node(&self, name: &str) -> anyhow::Result<Option<Node>> {
        Ok(Api::<Node>::all(self.client.clone()).get_opt(name).await?)
    }

    async fn ready_status(&self, name: &str) -> anyhow::Result<Option<String>> {
        let node = self.node(name).await?;
        Ok(node
            .and_then(|n| n.status)
            .and_then(|s| s.conditions)
            .and_then(|cs| cs.into_iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status))
    }

    async fn wait_ready(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        wait_for(&format!("node {name} Ready"), timeout, Duration::from_millis(500), || async {
            Ok((self.ready_status(name).await?.as_deref() == Some("True")).then_some(()))
        })
        .await
        .with_context(|| {
            // The stack's directory is gone when the run ends: say here why the node is not up.
            let log = self.stack.dir.join("logs").join(format!("virtual-kubelet-{name}.log"));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            format!(
                "the last lines of {}:\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn create(&self, p: &Pod) -> anyhow::Result<Pod> {
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        self.pods(ns).create(&PostParams::default(), p).await.context("creating a pod")
    }

    async fn wait_phase(
        &self,
        ns: &str,
        name: &str,
        phase: &str,
        timeout: Duration,
    ) -> anyhow::Result<Pod> {
        let pods = self.pods(ns);
        wait_for(
            &format!("pod {ns}/{name} {phase}"),
            timeout,
            Duration::from_millis(250),
            || async {
                let p = pods.get(name).await?;
                let now = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
                Ok((now == phase).then_some(p))
            },
        )
        .await
    }

    async fn nomad(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let r = self.http.get(format!("{}{path}", self.stack.nomad_addr)).send().await?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        ensure!(r.status().is_success(), "GET {path}: {}", r.status());
        Ok(Some(r.json().await?))
    }

    /// Jobs whose Meta names `node` as owner.
    async fn jobs_of(&self, node: &str) -> anyhow::Result<Vec<Value>> {
        let all = self.nomad("/v1/jobs?meta=true").await?.unwrap_or_default();
        Ok(all
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|j| j["Meta"]["k8s_node_name"] == node)
            .collect())
    }

    async fn allocations(&self, job: &str) -> anyhow::Result<Vec<Value>> {
        let v = self.nomad(&format!("/v1/job/{job}/allocations")).await?.unwrap_or_default();
        Ok(v.as_array().cloned().unwrap_or_default())
    }
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn container_state(p: &Pod, name: &str) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    p.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == name).cloned()
}

/// The node is Ready within 30 s, stays Ready for 2 min under the real node-lifecycle controller
/// with its Lease renewed, and goes Unknown once the process is killed.
async fn node_lifecycle(cx: Ctx<'_>) -> anyhow::Result<()> {
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

/// A two-container pod (real containers, on docker) runs as one Nomad job with the expected ID,
/// Meta and tasks, and `kubectl delete pod` removes job and pod within the grace period + 10 s.
async fn pod_runs_and_deletes(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-pods", "e2e-run");
    let _vk = cx.docker_node_and_namespace(node, ns).await?;
    let p = pod("sleeper")
        .namespace(ns)
        .on_node(node)
        .grace(5)
        .container("main", &["sleep", "300"])
        .container("sidecar", &["sleep", "301"])
        .build();
    let created = Instant::now();
    let p = docker::create(&cx, &p).await?;
    let running = cx.wait_phase(ns, "sleeper", "Running", Duration::from_secs(60)).await?;
    let status = running.status.clone().context("status")?;
    ensure!(status.pod_ip.is_some(), "Running without a podIP: {status:?}");
    println!("Running with podIP {:?} after {:?}", status.pod_ip, created.elapsed());
    // The kubelet's observedGeneration, on the status and on each of its conditions.
    let generation = running.metadata.generation;
    ensure!(
        generation.is_some()
            && status.observed_generation == generation
            && status.conditions.iter().flatten().all(|c| c.observed_generation == generation),
        "observedGeneration {:?} of generation {generation:?}",
        status.observed_generation
    );
    for c in ["main", "sidecar"] {
        let cs = container_state(&running, c).with_context(|| format!("no status for {c}"))?;
        ensure!(
            cs.state.and_then(|s| s.running).is_some() && cs.ready,
            "{c} not running and ready"
        );
    }
    // Ready follows the containers; the status may lag the phase by one write.
    let ready =
        wait_for("pod Ready", Duration::from_secs(10), Duration::from_millis(250), || async {
            let p = cx.pods(ns).get("sleeper").await?;
            let ok = p
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            Ok(ok.then_some(()))
        });
    ready.await?;

    let job = cx
        .nomad("/v1/job/k8s-e2e-run_sleeper")
        .await?
        .context("job k8s-e2e-run_sleeper missing")?;
    ensure!(
        job["Meta"]["k8s_node_name"] == node
            && job["Meta"]["k8s_namespace"] == ns
            && job["Meta"]["k8s_pod_name"] == "sleeper"
    );
    ensure!(job["Meta"]["k8s_pod_uid"] == uid(&p).as_str(), "uid in Meta: {}", job["Meta"]);
    let groups = job["TaskGroups"].as_array().context("groups")?;
    ensure!(groups.len() == 1, "{} groups", groups.len());
    let tasks: Vec<&str> = groups[0]["Tasks"]
        .as_array()
        .context("tasks")?
        .iter()
        .filter_map(|t| t["Name"].as_str())
        .collect();
    ensure!(tasks == ["main", "sidecar"], "tasks {tasks:?}");

    let deleting = Instant::now();
    cx.stack.kubectl(&["delete", "pod", "-n", ns, "sleeper", "--wait=false"])?;
    wait_for("job and pod gone", Duration::from_secs(15), Duration::from_millis(250), || async {
        let job = cx.nomad("/v1/job/k8s-e2e-run_sleeper").await?;
        let pod = cx.pods(ns).get_opt("sleeper").await?;
        Ok((job.is_none() && pod.is_none()).then_some(()))
    })
    .await?;
    println!("job and pod gone {:?} after kubectl delete (grace 5 s)", deleting.elapsed());
    Ok(())
}

/// `sh -c 'exit 3'` in a container with restartPolicy Never ends Failed with exit code 3.
async fn exit_code(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-exit", "e2e-exit");
    let _vk = cx.docker_node_and_namespace(node, ns).await?;
    docker::create(
        &cx,
        &pod("exit3")
            .namespace(ns)
            .on_node(node)
            .restart("Never")
            .container("main", &["sh", "-c", "exit 3"])
            .build(),
    )
    .await?;
    let failed = cx.wait_phase(ns, "exit3", "Failed", Duration::from_secs(60)).await?;
    let t = container_state(&failed, "main")
        .and_then(|c| c.state)
        .and_then(|s| s.terminated)
        .context("not terminated")?;
    ensure!(t.exit_code == 3, "exit code {}", t.exit_code);
    ensure!(t.reason.as_deref() == Some("Error"), "reason {:?}", t.reason);
    // The final status is never rewritten: it stays Failed.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let again = cx.pods(ns).get("exit3").await?;
    ensure!(again.status.and_then(|s| s.phase).as_deref() == Some("Failed"));
    Ok(())
}

/// Pods of the same name in two namespaces run as two jobs.
async fn same_name_two_namespaces(cx: Ctx<'_>) -> anyhow::Result<()> {
    let node = "vk-ns";
    let _vk = cx.start_vk(node)?;
    cx.wait_ready(node, Duration::from_secs(30)).await?;
    let mut uids = Vec::new();
    for ns in ["e2e-ns-a", "e2e-ns-b"] {
        cx.stack.namespace(ns).await?;
        uids.push(uid(&cx
            .create(
                &pod("web")
                    .namespace(ns)
                    .on_node(node)
                    .container("main", &["sleep", "300"])
                    .build(),
            )
            .await?));
    }
    for (ns, uid) in ["e2e-ns-a", "e2e-ns-b"].iter().zip(&uids) {
        cx.wait_phase(ns, "web", "Running", Duration::from_secs(30)).await?;
        let job = cx
            .nomad(&format!("/v1/job/k8s-{ns}_web"))
            .await?
            .with_context(|| format!("job for {ns}/web missing"))?;
        ensure!(job["Meta"]["k8s_pod_uid"] == uid.as_str());
    }
    let jobs = cx.jobs_of(node).await?;
    ensure!(jobs.len() == 2, "{} jobs for two pods", jobs.len());
    Ok(())
}

/// With 5 pods running, kill -9 and restart: still exactly 5 jobs, each with its one allocation
/// (nothing registered again), and the statuses right.
async fn restart_adopts(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-restart", "e2e-restart");
    let mut vk = cx.node_and_namespace(node, ns).await?;
    let names: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
    for n in &names {
        cx.create(&pod(n).namespace(ns).on_node(node).container("main", &["sleep", "600"]).build())
            .await?;
    }
    for n in &names {
        cx.wait_phase(ns, n, "Running", Duration::from_secs(30)).await?;
    }
    let mut before = Vec::new();
    for n in &names {
        let id = format!("k8s-{ns}_{n}");
        let job = cx.nomad(&format!("/v1/job/{id}")).await?.context("job missing")?;
        let allocs = cx.allocations(&id).await?;
        ensure!(allocs.len() == 1, "{id}: {} allocations", allocs.len());
        before.push((id, job["Version"].clone(), allocs[0]["ID"].clone()));
    }
    vk.kill();
    let mut vk = cx.start_vk(node)?;
    cx.wait_ready(node, Duration::from_secs(30)).await?;
    // Let it list, adopt and poll a few times.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let jobs = cx.jobs_of(node).await?;
    ensure!(jobs.len() == 5, "{} jobs after restart", jobs.len());
    for (id, version, alloc) in &before {
        let job = cx.nomad(&format!("/v1/job/{id}")).await?.context("job gone")?;
        ensure!(
            &job["Version"] == version,
            "{id} was registered again: version {} -> {}",
            version,
            job["Version"]
        );
        let allocs = cx.allocations(id).await?;
        ensure!(
            allocs.len() == 1 && &allocs[0]["ID"] == alloc,
            "{id}: allocations changed: {allocs:?}"
        );
    }
    for n in &names {
        let p = cx.pods(ns).get(n).await?;
        ensure!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"),
            "{n} not Running"
        );
        let cs = container_state(&p, "main").context("no container status")?;
        ensure!(
            cs.ready && cs.restart_count == 0,
            "{n}: ready {} restarts {}",
            cs.ready,
            cs.restart_count
        );
    }
    vk.kill();
    Ok(())
}

/// A pod with an unsupported volume gets ProviderFailed, a message naming the field, and a
/// Warning Event, while a good pod beside it runs.
async fn untranslatable_pod(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-bad", "e2e-bad");
    // The operator lets pods choose docker besides the node's raw_exec.
    let _vk = cx.node_and_namespace_with(node, ns, &["--allowed-drivers", "docker"]).await?;
    let bad = pod("bad")
        .namespace(ns)
        .on_node(node)
        .restart("Never")
        .container("main", &["sleep", "300"])
        .spec(serde_json::json!({"volumes": [{"name": "host", "hostPath": {"path": "/etc"}}]}))
        .build();
    cx.create(&bad).await?;
    // The driver annotation overrides the node's default (raw_exec here): the job asks for docker,
    // with the image and the command as entrypoint. (No Docker engine runs here, so it stays queued.)
    let docker = pod("docker")
        .namespace(ns)
        .on_node(node)
        .annotation("virtual-kubelet.io/nomad-driver", "docker")
        .container("main", &["sleep", "300"])
        .build();
    cx.create(&docker).await?;
    cx.create(
        &pod("good").namespace(ns).on_node(node).container("main", &["sleep", "300"]).build(),
    )
    .await?;
    let failed = cx.wait_phase(ns, "bad", "Failed", Duration::from_secs(30)).await?;
    let st = failed.status.context("status")?;
    ensure!(st.reason.as_deref() == Some("ProviderFailed"), "reason {:?}", st.reason);
    let msg = st.message.unwrap_or_default();
    ensure!(msg.contains("spec.volumes[0]") && msg.contains("hostPath"), "message {msg:?}");
    cx.wait_phase(ns, "good", "Running", Duration::from_secs(30)).await?;
    let events: Api<Event> = Api::namespaced(cx.client.clone(), ns);
    let ev = wait_for(
        "the ProviderCreateFailed Event",
        Duration::from_secs(15),
        Duration::from_millis(500),
        || async {
            let list =
                events.list(&ListParams::default().fields("involvedObject.name=bad")).await?;
            Ok(list.items.into_iter().find(|e| e.reason.as_deref() == Some("ProviderCreateFailed")))
        },
    )
    .await?;
    ensure!(ev.type_.as_deref() == Some("Warning"), "event type {:?}", ev.type_);
    ensure!(ev.message.unwrap_or_default().contains("hostPath"));
    let job = wait_for(
        "the docker pod's job",
        Duration::from_secs(15),
        Duration::from_millis(250),
        || async { cx.nomad(&format!("/v1/job/k8s-{ns}_docker")).await },
    )
    .await?;
    let task = &job["TaskGroups"][0]["Tasks"][0];
    ensure!(task["Driver"] == "docker", "driver {}", task["Driver"]);
    ensure!(
        task["Config"]["image"] == vk_tests::BUSYBOX
            && task["Config"]["entrypoint"] == serde_json::json!(["sleep", "300"]),
        "config {}",
        task["Config"]
    );
    ensure!(
        cx.nomad(&format!("/v1/job/k8s-{ns}_bad")).await?.is_none(),
        "a job exists for the bad pod"
    );
    // A pod for another OS is rejected as the kubelet's admission rejects it: Failed with the
    // kubelet's reason and message (even with restartPolicy Always), an Event, no job.
    let windows = pod("windows")
        .namespace(ns)
        .container("main", &["sleep", "300"])
        .spec(serde_json::json!({"nodeName": node, "os": {"name": "windows"}}))
        .build();
    cx.create(&windows).await?;
    let rejected = cx.wait_phase(ns, "windows", "Failed", Duration::from_secs(30)).await?;
    let st = rejected.status.context("status")?;
    ensure!(
        st.reason.as_deref() == Some("PodOSNotSupported")
            && st.message.as_deref()
                == Some(
                    "Pod was rejected: Failed to admit pod as the OS field doesn't match node OS"
                ),
        "status {:?}: {:?}",
        st.reason,
        st.message
    );
    wait_event(&cx, ns, "windows", "PodOSNotSupported").await?;
    ensure!(cx.nomad(&format!("/v1/job/k8s-{ns}_windows")).await?.is_none(), "a job for windows");
    Ok(())
}

/// The text a task wrote to its stdout so far (Nomad's fs logs API).
async fn task_stdout(cx: &Ctx<'_>, alloc: &str, task: &str) -> anyhow::Result<String> {
    let url = format!(
        "{}/v1/client/fs/logs/{alloc}?task={task}&type=stdout&plain=true&origin=start",
        cx.stack.nomad_addr
    );
    let r = cx.http.get(url).send().await?;
    ensure!(r.status().is_success(), "logs of {task}: {}", r.status());
    Ok(r.text().await?)
}

/// A file of the allocation (Nomad's fs cat API), `None` when absent.
async fn alloc_file(cx: &Ctx<'_>, alloc: &str, path: &str) -> anyhow::Result<Option<String>> {
    let url = format!("{}/v1/client/fs/cat/{alloc}?path={path}", cx.stack.nomad_addr);
    let r = cx.http.get(url).send().await?;
    if !r.status().is_success() {
        return Ok(None);
    }
    Ok(Some(r.text().await?))
}

/// Waits up to 60 s (a kubelet's bound for volume updates) for file `path` of `alloc` to hold
/// `want`.
async fn wait_file(cx: &Ctx<'_>, alloc: &str, path: &str, want: &str) -> anyhow::Result<()> {
    wait_for(
        &format!("{path} to hold {want:?}"),
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            let f = alloc_file(cx, alloc, path).await?;
            Ok((f.as_deref() == Some(want)).then_some(()))
        },
    )
    .await
}

/// Waits for `needle` in `task`'s output and returns the output.
async fn wait_output(
    cx: &Ctx<'_>,
    alloc: &str,
    task: &str,
    needle: &str,
) -> anyhow::Result<String> {
    wait_for(
        &format!("{needle:?} in the output of {task}"),
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let out = task_stdout(cx, alloc, task).await.unwrap_or_default();
            Ok(out.contains(needle).then_some(out))
        },
    )
    .await
}

/// The current allocation of a pod's job.
async fn current_alloc(cx: &Ctx<'_>, job: &str) -> anyhow::Result<String> {
    let allocs = cx.allocations(job).await?;
    allocs
        .iter()
        .filter(|a| a["DesiredStatus"] == "run")
        .max_by_key(|a| a["CreateIndex"].as_u64())
        .and_then(|a| a["ID"].as_str())
        .map(str::to_owned)
        .context("no allocation")
}

async fn events_of(cx: &Ctx<'_>, ns: &str, pod: &str) -> anyhow::Result<Vec<Event>> {
    let events: Api<Event> = Api::namespaced(cx.client.clone(), ns);
    let list =
        events.list(&ListParams::default().fields(&format!("involvedObject.name={pod}"))).await?;
    Ok(list.items)
}

async fn wait_event(cx: &Ctx<'_>, ns: &str, pod: &str, reason: &str) -> anyhow::Result<Event> {
    wait_for(
        &format!("Event {reason} for {ns}/{pod}"),
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let evs = events_of(cx, ns, pod).await?;
            Ok(evs.into_iter().find(|e| e.reason.as_deref() == Some(reason)))
        },
    )
    .await
}

/// The common pod surface end to end: env from a ConfigMap and a Secret (`env`, `envFrom` with a
/// prefix, `$(VAR)` expansion), the downward API (`status.podIP` included), ConfigMap, Secret and
/// downward API volumes, an emptyDir shared by two containers, two init containers run in order
/// (the second reads what the first wrote), and the service-account token volume, whose token
/// authenticates against the API server. Then the ConfigMap is edited: the mounted file follows
/// within 60 s without a container restart, and the environment does not change.
async fn pod_inputs_and_volumes(cx: Ctx<'_>) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let (node, ns) = ("vk-inputs", "e2e-inputs");
    let vk = cx.node_and_namespace(node, ns).await?;
    let cms: Api<ConfigMap> = Api::namespaced(cx.client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(cx.client.clone(), ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app-config"},
            "data": {"mode": "fast", "greeting": "hello world"}
        }))?,
    )
    .await?;
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "app-secret"},
                "stringData": {"password": "s3cr3t \"quoted\" $HOME", "user": "admin"}
            }))?,
        )
        .await?;
    let v = "$NOMAD_ALLOC_DIR/volumes";
    let app_script = format!(
        "echo \"MODE=$MODE\"; echo \"PASS=$PASS\"; echo \"CFG_greeting=$CFG_greeting\"; \
         echo \"DSN=$DSN\"; echo \"POD_IP=$POD_IP\"; echo \"POD=$POD_NAME/$POD_NS\"; \
         echo \"ARG=$1\"; echo \"FILE_MODE=$(cat {v}/config/mode)\"; \
         echo \"FILE_PASS=$(cat {v}/secret/password)\"; echo \"LABELS=$(cat {v}/info/labels)\"; \
         echo \"INIT=$(cat {v}/shared/init.txt)\"; echo from-app > {v}/shared/app.txt; \
         echo started; sleep 3600"
    );
    let p: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "inputs", "namespace": ns, "labels": {"app": "inputs"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 5,
            "initContainers": [
                {"name": "first", "image": "busybox", "command": ["sh", "-c", format!("sleep 2; echo one > {v}/shared/init.txt")],
                 "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]},
                {"name": "second", "image": "busybox", "command": ["sh", "-c", format!("echo \"$(cat {v}/shared/init.txt) two\" > {v}/shared/init.txt")],
                 "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
            ],
            "containers": [
                {"name": "app", "image": "busybox",
                 "command": ["sh", "-c", app_script, "sh", "--mode=$(MODE)"],
                 "env": [
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "mode"}}},
                    {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "password"}}},
                    {"name": "DSN", "value": "$(MODE)://$(user)@db"},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
                 ],
                 "envFrom": [{"configMapRef": {"name": "app-config"}, "prefix": "CFG_"}, {"secretRef": {"name": "app-secret"}}],
                 "readinessProbe": {"exec": {"command": ["sh", "-c", format!("test -f {v}/shared/app.txt")]}, "periodSeconds": 1},
                 "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/config"},
                    {"name": "secret", "mountPath": "/etc/secret"},
                    {"name": "info", "mountPath": "/etc/info"},
                    {"name": "shared", "mountPath": "/shared"}
                 ]},
                {"name": "reader", "image": "busybox",
                 "command": ["sh", "-c", format!("while [ ! -f {v}/shared/app.txt ]; do sleep 0.2; done; echo \"READ=$(cat {v}/shared/app.txt)\"; sleep 3600")],
                 "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
            ],
            "volumes": [
                {"name": "config", "configMap": {"name": "app-config"}},
                {"name": "secret", "secret": {"secretName": "app-secret", "defaultMode": 0o400}},
                {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                {"name": "shared", "emptyDir": {}}
            ]
        }
    }))?;
    cx.create(&p).await?;
    let running = cx.wait_phase(ns, "inputs", "Running", Duration::from_secs(60)).await?;
    let job_id = format!("k8s-{ns}_inputs");
    let alloc = current_alloc(&cx, &job_id).await?;
    let out = wait_output(&cx, &alloc, "app", "started").await?;
    let pod_ip = running.status.as_ref().and_then(|s| s.pod_ip.clone()).context("no podIP")?;
    for want in [
        "MODE=fast".to_owned(),
        "PASS=s3cr3t \"quoted\" $HOME".to_owned(),
        "CFG_greeting=hello world".to_owned(),
        "DSN=fast://admin@db".to_owned(),
        format!("POD_IP={pod_ip}"),
        format!("POD=inputs/{ns}"),
        "ARG=--mode=fast".to_owned(),
        "FILE_MODE=fast".to_owned(),
        "FILE_PASS=s3cr3t \"quoted\" $HOME".to_owned(),
        "LABELS=app=\"inputs\"".to_owned(),
        "INIT=one two".to_owned(),
    ] {
        ensure!(out.lines().any(|l| l == want), "{want:?} not in the output of app:\n{out}");
    }
    wait_output(&cx, &alloc, "reader", "READ=from-app").await?;
    // The readiness probe (exec, through Nomad) makes the pod Ready.
    wait_for("the pod Ready", Duration::from_secs(30), Duration::from_millis(250), || async {
        let p = cx.pods(ns).get("inputs").await?;
        Ok(pod_ready(&p).then_some(()))
    })
    .await?;
    // The init containers are reported, completed, and the pod is Initialized.
    let st = running.status.clone().context("status")?;
    let init = st.init_container_statuses.clone().unwrap_or_default();
    ensure!(init.len() == 2 && init.iter().all(|c| c.ready), "init statuses {init:?}");
    // No Secret byte is in the job.
    let job = cx.nomad(&format!("/v1/job/{job_id}")).await?.context("job")?;
    ensure!(!job.to_string().contains("s3cr3t"), "the job holds Secret data");
    // The service-account token volume is materialised and the token authenticates.
    let sa_volume = p_sa_volume(&running).context("no kube-api-access volume")?;
    let token = alloc_file(&cx, &alloc, &format!("alloc/volumes/{sa_volume}/token"))
        .await?
        .context("no token file")?;
    let ca = alloc_file(&cx, &alloc, &format!("alloc/volumes/{sa_volume}/ca.crt")).await?;
    ensure!(ca.is_some_and(|c| c.contains("BEGIN CERTIFICATE")), "no ca.crt");
    let namespace_file =
        alloc_file(&cx, &alloc, &format!("alloc/volumes/{sa_volume}/namespace")).await?;
    ensure!(namespace_file.as_deref() == Some(ns), "namespace file {namespace_file:?}");
    let review = cx.stack.whoami(&token).await?;
    ensure!(
        review == format!("system:serviceaccount:{ns}:default"),
        "the token authenticates as {review:?}"
    );

    // Edit the ConfigMap: the file follows, the environment does not, nothing restarts.
    let edited = Instant::now();
    cms.patch(
        "app-config",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"data": {"mode": "slow"}})),
    )
    .await?;
    wait_file(&cx, &alloc, "alloc/volumes/config/mode", "slow").await?;
    eprintln!("ConfigMap edit reached the file in {:?}", edited.elapsed());
    let after = cx.pods(ns).get("inputs").await?;
    let restarts: Vec<i32> = after
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default()
        .iter()
        .map(|c| c.restart_count)
        .collect();
    ensure!(restarts == [0, 0], "restart counts {restarts:?}");
    ensure!(current_alloc(&cx, &job_id).await? == alloc, "the allocation was replaced");
    // A Secret edit reaches its files the same way.
    secrets
        .patch(
            "app-secret",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"stringData": {"password": "rotated"}})),
        )
        .await?;
    wait_file(&cx, &alloc, "alloc/volumes/secret/password", "rotated").await?;
    let out = task_stdout(&cx, &alloc, "app").await?;
    ensure!(out.matches("started").count() == 1, "app started again:\n{out}");
    ensure!(current_alloc(&cx, &job_id).await? == alloc, "the allocation was replaced");
    // The virtual kubelet's debug log names the pod's spans, but neither Secret value nor the token.
    let log = std::fs::read_to_string(&vk.log)?;
    let span = format!("sync_pod{{namespace={ns} pod=inputs job={job_id}}}");
    ensure!(log.contains(&span), "no {span} in {}", vk.log.display());
    for (what, secret) in [("Secret", "s3cr3t"), ("token", token.trim())] {
        ensure!(!log.contains(secret), "the {what} is in {}", vk.log.display());
    }
    Ok(())
}

/// A projected service-account token is renewed before it expires, as a kubelet renews it (at
/// 80 % of its life): with the shortest lifetime the API server grants (10 min), the file the
/// container reads at its `mountPath` (docker: the task's in-memory `secrets/`, bound there)
/// holds a new, valid token within 9 minutes, and the container was never restarted.
async fn token_renewal(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-token", "e2e-token");
    let _vk = cx.docker_node_and_namespace(node, ns).await?;
    let p = pod("token")
        .namespace(ns)
        .on_node(node)
        .container("main", &["sleep", "3600"])
        .spec(serde_json::json!({
            "automountServiceAccountToken": false,
            "volumes": [{"name": "tok", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 600, "audience": "vault"}},
                {"serviceAccountToken": {"path": "api-token", "expirationSeconds": 600}}
            ]}}],
        }))
        .build();
    let mut p = p;
    if let Some(c) = p.spec.as_mut().and_then(|s| s.containers.first_mut()) {
        c.volume_mounts = Some(vec![serde_json::from_value(
            serde_json::json!({"name": "tok", "mountPath": "/var/run/secrets/tokens"}),
        )?]);
    }
    docker::create(&cx, &p).await?;
    cx.wait_phase(ns, "token", "Running", Duration::from_secs(60)).await?;
    let read = || {
        let argv = ["exec", "-n", ns, "token", "--", "cat", "/var/run/secrets/tokens/api-token"];
        cx.stack.kubectl(&argv)
    };
    let first = read()?;
    ensure!(cx.stack.whoami(&first).await? == format!("system:serviceaccount:{ns}:default"));
    let started = Instant::now();
    let renewed =
        wait_for("a renewed token", Duration::from_secs(540), Duration::from_secs(5), || async {
            Ok(read().ok().filter(|t| !t.is_empty() && *t != first))
        })
        .await?;
    eprintln!("token renewed {:?} after the pod ran", started.elapsed());
    ensure!(
        cx.stack.whoami(&renewed).await? == format!("system:serviceaccount:{ns}:default"),
        "the renewed token does not authenticate"
    );
    let p = cx.pods(ns).get("token").await?;
    let c = container_state(&p, "main").context("status")?;
    ensure!(c.restart_count == 0, "restarted {} times", c.restart_count);
    Ok(())
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Probes run by the virtual kubelet against real containers (docker, each pod with an address
/// of its own): an httpGet readiness probe and a tcpSocket liveness probe against busybox's
/// `httpd` in the pod make it Ready; a pod whose exec readiness probe fails is Running but not
/// Ready; an exec liveness probe failing once restarts that container once (restartCount 1), in
/// place (the allocation's shared directory, which outlives the restart, tells the two runs
/// apart).
async fn probes(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-probes", "e2e-probes");
    let _vk = cx.docker_node_and_namespace(node, ns).await?;
    let image = vk_tests::BUSYBOX;
    let server = "mkdir -p /www && echo ok > /www/healthz && exec httpd -f -p 8080 -h /www";
    let web = serde_json::json!({"containers": [{
        "name": "web", "image": image, "command": ["sh", "-c", server],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"port": "http", "path": "/healthz"}, "periodSeconds": 1},
        "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2}
    }]});
    docker::create(&cx, &pod("web").namespace(ns).on_node(node).spec(web).build()).await?;
    let never = serde_json::json!({"containers": [{
        "name": "main", "image": image, "command": ["sleep", "3600"],
        "readinessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1}
    }]});
    docker::create(&cx, &pod("never-ready").namespace(ns).on_node(node).spec(never).build())
        .await?;
    let flaky_script = "if [ -f $NOMAD_ALLOC_DIR/seen ]; then rm -f $NOMAD_ALLOC_DIR/unhealthy; echo second; else touch $NOMAD_ALLOC_DIR/seen $NOMAD_ALLOC_DIR/unhealthy; echo first; fi; exec sleep 3600";
    let flaky = serde_json::json!({"containers": [{
        "name": "flaky", "image": image, "command": ["sh", "-c", flaky_script],
        "livenessProbe": {"exec": {"command": ["sh", "-c", "test ! -f $NOMAD_ALLOC_DIR/unhealthy"]}, "periodSeconds": 1, "timeoutSeconds": 5, "failureThreshold": 2}
    }]});
    docker::create(&cx, &pod("flaky").namespace(ns).on_node(node).spec(flaky).build()).await?;

    wait_for("web Ready", Duration::from_secs(60), Duration::from_millis(250), || async {
        let p = cx.pods(ns).get("web").await?;
        Ok(pod_ready(&p).then_some(()))
    })
    .await?;
    let p = cx.wait_phase(ns, "never-ready", "Running", Duration::from_secs(60)).await?;
    let waited = Instant::now();
    let mut p = p;
    while waited.elapsed() < Duration::from_secs(8) {
        ensure!(!pod_ready(&p), "the never-ready pod became Ready");
        tokio::time::sleep(Duration::from_millis(500)).await;
        p = cx.pods(ns).get("never-ready").await?;
    }
    let c = container_state(&p, "main").context("main status")?;
    ensure!(!c.ready && c.started == Some(true), "main: ready {} started {:?}", c.ready, c.started);
    ensure!(p.status.and_then(|s| s.phase).as_deref() == Some("Running"), "not Running");

    let restarted = wait_for(
        "flaky restarted once",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let p = cx.pods(ns).get("flaky").await?;
            let c = container_state(&p, "flaky");
            Ok(c.filter(|c| {
                c.restart_count >= 1 && c.state.as_ref().is_some_and(|s| s.running.is_some())
            }))
        },
    )
    .await?;
    ensure!(restarted.restart_count == 1, "restartCount {}", restarted.restart_count);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let p = cx.pods(ns).get("flaky").await?;
    let c = container_state(&p, "flaky").context("flaky status")?;
    ensure!(c.restart_count == 1, "restarted again: restartCount {}", c.restart_count);
    let alloc = current_alloc(&cx, &format!("k8s-{ns}_flaky")).await?;
    let out = task_stdout(&cx, &alloc, "flaky").await?;
    ensure!(out.lines().collect::<Vec<_>>() == ["first", "second"], "output {out:?}");
    Ok(())
}

/// What Kubernetes allows and requires of a running pod, in real containers (docker): an image
/// change restarts the container in the new image and its restartCount goes up;
/// `activeDeadlineSeconds` fails the pod with `DeadlineExceeded` and stops its job; a failing init
/// container of a `Never` pod fails the pod before any app container runs; a native sidecar runs
/// beside the app.
async fn lifecycle(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-life", "e2e-life");
    let _vk = cx.docker_node_and_namespace(node, ns).await?;
    let image = vk_tests::BUSYBOX;
    let img = pod("img")
        .namespace(ns)
        .on_node(node)
        .container("main", &["sh", "-c", "echo run; exec sleep 3600"])
        .build();
    docker::create(&cx, &img).await?;
    let deadline = pod("deadline")
        .namespace(ns)
        .on_node(node)
        .container("main", &["sleep", "3600"])
        .spec(serde_json::json!({"activeDeadlineSeconds": 8}))
        .build();
    docker::create(&cx, &deadline).await?;
    let init_fails = pod("init-fails").namespace(ns).on_node(node).restart("Never")
        .container("app", &["sh", "-c", "echo app-ran; sleep 3600"])
        .spec(serde_json::json!({"initContainers": [{"name": "setup", "image": image, "command": ["sh", "-c", "exit 3"]}]}))
        .build();
    docker::create(&cx, &init_fails).await?;
    let sidecar = pod("sidecar").namespace(ns).on_node(node)
        .container("app", &["sh", "-c", "sleep 1; cat $NOMAD_ALLOC_DIR/side.txt; exec sleep 3600"])
        .spec(serde_json::json!({"initContainers": [
            {"name": "side", "image": image, "restartPolicy": "Always",
             "command": ["sh", "-c", "echo from-sidecar > $NOMAD_ALLOC_DIR/side.txt; exec sleep 3600"]}
        ]}))
        .build();
    docker::create(&cx, &sidecar).await?;

    // An image change: the container restarts, restartCount 1, Running again.
    cx.wait_phase(ns, "img", "Running", Duration::from_secs(60)).await?;
    cx.pods(ns)
        .patch(
            "img",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(serde_json::json!({"spec": {"containers": [{"name": "main", "image": vk_tests::BUSYBOX_NEXT}]}})),
        )
        .await?;
    let updated = wait_for(
        "img restarted with the new image",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let p = cx.pods(ns).get("img").await?;
            let c = container_state(&p, "main");
            let ok = c.as_ref().is_some_and(|c| {
                c.restart_count == 1
                    && c.image == vk_tests::BUSYBOX_NEXT
                    && c.state.as_ref().is_some_and(|s| s.running.is_some())
            });
            Ok(ok.then_some(p))
        },
    )
    .await?;
    ensure!(updated.status.and_then(|s| s.phase).as_deref() == Some("Running"), "img not Running");
    let job = cx.nomad(&format!("/v1/job/k8s-{ns}_img")).await?.context("img job")?;
    ensure!(job["Meta"]["k8s_image_main"] == vk_tests::BUSYBOX_NEXT, "job meta {}", job["Meta"]);
    let task = &job["TaskGroups"][0]["Tasks"][0];
    ensure!(task["Config"]["image"] == vk_tests::BUSYBOX_NEXT, "config {}", task["Config"]);

    // The deadline.
    let failed = cx.wait_phase(ns, "deadline", "Failed", Duration::from_secs(60)).await?;
    let st = failed.status.context("status")?;
    ensure!(st.reason.as_deref() == Some("DeadlineExceeded"), "reason {:?}", st.reason);
    wait_for(
        "the deadline pod's job stopped",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let job = cx.nomad(&format!("/v1/job/k8s-{ns}_deadline")).await?;
            Ok(job.filter(|j| j["Stop"] == true).map(|_| ()))
        },
    )
    .await?;

    // The failing init container.
    let failed = cx.wait_phase(ns, "init-fails", "Failed", Duration::from_secs(60)).await?;
    let st = failed.status.context("status")?;
    let init = st.init_container_statuses.unwrap_or_default();
    let code =
        init.first().and_then(|c| c.state.clone()).and_then(|s| s.terminated).map(|t| t.exit_code);
    ensure!(code == Some(3), "init exit code {code:?}");
    let app = st.container_statuses.unwrap_or_default();
    ensure!(
        app.first().and_then(|c| c.state.clone()).is_some_and(|s| s.waiting.is_some()),
        "the app container left waiting: {app:?}"
    );
    let alloc = current_alloc(&cx, &format!("k8s-{ns}_init-fails")).await.ok();
    if let Some(alloc) = alloc {
        let out = task_stdout(&cx, &alloc, "app").await.unwrap_or_default();
        ensure!(!out.contains("app-ran"), "the app container ran");
    }

    // The sidecar started first and runs beside the app.
    let running = cx.wait_phase(ns, "sidecar", "Running", Duration::from_secs(60)).await?;
    let alloc = current_alloc(&cx, &format!("k8s-{ns}_sidecar")).await?;
    wait_output(&cx, &alloc, "app", "from-sidecar").await?;
    let side = running.status.and_then(|s| s.init_container_statuses).unwrap_or_default();
    ensure!(
        side.first()
            .is_some_and(|c| c.ready && c.state.as_ref().is_some_and(|s| s.running.is_some())),
        "sidecar status {side:?}"
    );
    Ok(())
}

/// A pod placed by annotation in another Nomad namespace (and, explicitly, the region): its job is
/// registered there, found again after a restart of the virtual kubelet (jobs are listed across
/// namespaces and regions), and purged there when the pod is deleted.
async fn nomad_namespace(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-nomad-ns", "e2e-nomad-ns");
    let r = cx
        .http
        .put(format!("{}/v1/namespace/apps", cx.stack.nomad_addr))
        .json(&serde_json::json!({"Name": "apps", "Description": "e2e"}))
        .send()
        .await?;
    ensure!(r.status().is_success(), "creating the Nomad namespace: {}", r.status());
    // The operator lets pods choose that namespace and name the region.
    let allow = ["--allowed-nomad-namespaces", "apps", "--allowed-regions", "global"];
    let vk = cx.node_and_namespace_with(node, ns, &allow).await?;
    let p = pod("placed")
        .namespace(ns)
        .on_node(node)
        .annotation("nomad.hashicorp.com/namespace", "apps")
        .annotation("nomad.hashicorp.com/region", "global")
        .container("main", &["sleep", "300"])
        .build();
    cx.create(&p).await?;
    cx.wait_phase(ns, "placed", "Running", Duration::from_secs(30)).await?;
    let id = format!("k8s-{ns}_placed");
    let job = cx.nomad(&format!("/v1/job/{id}?namespace=apps")).await?.context("no job in apps")?;
    ensure!(job["Namespace"] == "apps", "namespace {}", job["Namespace"]);
    ensure!(cx.nomad(&format!("/v1/job/{id}")).await?.is_none(), "a job in the default namespace");
    let version = job["Version"].clone();
    // A restart finds it again: no second job, the same version, still Running.
    drop(vk);
    let _vk = cx.stack.virtual_kubelet(node, &allow)?;
    cx.wait_ready(node, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = cx.nomad(&format!("/v1/job/{id}?namespace=apps")).await?.context("job gone")?;
    ensure!(again["Version"] == version, "the job was registered again");
    ensure!(cx.nomad(&format!("/v1/job/{id}")).await?.is_none(), "a job in the default namespace");
    cx.wait_phase(ns, "placed", "Running", Duration::from_secs(10)).await?;
    cx.stack.kubectl(&["delete", "pod", "-n", ns, "placed", "--wait=false"])?;
    wait_for(
        "the job purged from apps",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            Ok(cx.nomad(&format!("/v1/job/{id}?namespace=apps")).await?.is_none().then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// Status is pushed by Nomad's event stream: with allocation polling set to once an hour, a pod
/// still reaches Running, then Failed with its exit code, a few seconds after Nomad saw it.
async fn pushed_status(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-pushed", "e2e-pushed");
    let _vk = cx.stack.virtual_kubelet(node, &["--status-interval", "1h"])?;
    cx.stack.namespace(ns).await?;
    cx.wait_ready(node, Duration::from_secs(30)).await?;
    // Let the one poll at start pass, so that what follows can only come from events.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = pod("quick")
        .namespace(ns)
        .on_node(node)
        .restart("Never")
        .container("main", &["sh", "-c", "sleep 4; exit 4"])
        .build();
    let created = Instant::now();
    cx.create(&p).await?;
    cx.wait_phase(ns, "quick", "Running", Duration::from_secs(20)).await?;
    let running = created.elapsed();
    let failed = cx.wait_phase(ns, "quick", "Failed", Duration::from_secs(20)).await?;
    let code = container_state(&failed, "main")
        .and_then(|c| c.state)
        .and_then(|s| s.terminated)
        .map(|t| t.exit_code);
    ensure!(code == Some(4), "exit code {code:?}");
    println!("pushed: Running after {running:?}, Failed after {:?}", created.elapsed());
    Ok(())
}

/// SIGTERM: the process finishes in-flight work and exits 0 well within its grace period, and
/// deletes nothing: jobs keep running and pods keep their status. The kubelet API drains: a log
/// read in flight at SIGTERM is answered whole, a followed log is closed within the drain (5 s).
async fn graceful_shutdown(cx: Ctx<'_>) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    let (node, ns) = ("vk-term", "e2e-term");
    let port = vk_tests::free_port()?;
    let mut vk =
        cx.node_and_namespace_with(node, ns, &["--kubelet-port", &port.to_string()]).await?;
    for i in 0..3 {
        let p =
            pod(&format!("p{i}")).namespace(ns).on_node(node).container("main", &["sleep", "600"]);
        cx.create(&p.build()).await?;
    }
    // A pod whose log is a 20 MB line, read through the kubelet port while the node stops.
    const LINE: u64 = 20_000_000;
    let script = format!("head -c {LINE} /dev/zero | tr '\\0' x; echo; exec sleep 600");
    let talker =
        pod("talker").namespace(ns).on_node(node).container("main", &["sh", "-c", &script]);
    cx.create(&talker.build()).await?;
    for name in ["p0", "p1", "p2", "talker"] {
        cx.wait_phase(ns, name, "Running", Duration::from_secs(30)).await?;
    }
    let kubelet = cx.stack.kubelet_client()?;
    let log = format!("https://127.0.0.1:{port}/containerLogs/{ns}/talker/main");
    wait_for("the 20 MB line logged", Duration::from_secs(60), Duration::from_secs(1), || async {
        let r = kubelet.get(format!("{log}?limitBytes=1&tailLines=1")).send().await?;
        Ok((r.status() == 200 && r.bytes().await?.len() == 1).then_some(()))
    })
    .await?;
    // An in-flight read, held by the client (the node blocked writing it) until 300 ms after
    // SIGTERM, and a followed log (a stream that never ends by itself).
    let (go, resume) = tokio::sync::oneshot::channel::<()>();
    let read = {
        let resp = kubelet.get(&log).send().await?;
        ensure!(resp.status() == 200, "the log answered {}", resp.status());
        let mut body = resp.bytes_stream();
        let first = body.next().await.context("no first chunk")??;
        tokio::spawn(async move {
            let _ = resume.await;
            let mut n = first.len() as u64;
            while let Some(chunk) = body.next().await {
                n += chunk?.len() as u64;
            }
            anyhow::Ok(n)
        })
    };
    let follow = {
        let resp = kubelet.get(format!("{log}?follow=true&limitBytes=100000000")).send().await?;
        ensure!(resp.status() == 200, "the follow answered {}", resp.status());
        let mut body = resp.bytes_stream();
        tokio::spawn(async move {
            while let Some(Ok(_)) = body.next().await {}
            Instant::now()
        })
    };
    let asked = Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = go.send(());
    });
    let status = tokio::task::block_in_place(|| vk.terminate(Duration::from_secs(30)));
    let status = status.context("still running 30 s after SIGTERM (the grace period)")?;
    ensure!(status.success(), "exit status {status}");
    println!("exited 0 {:?} after SIGTERM", asked.elapsed());
    // The read in flight was finished, not cut; the follow was closed within the drain (5 s).
    let n = read.await?.context("the read in flight at SIGTERM was cut")?;
    ensure!(n == LINE + 1, "the read in flight at SIGTERM got {n} of {} bytes", LINE + 1);
    let closed = tokio::time::timeout(Duration::from_secs(10), follow)
        .await
        .context("the followed log was still open 10 s after the node stopped")??;
    println!(
        "the read in flight finished ({n} bytes); the follow closed {:?} after SIGTERM",
        closed.duration_since(asked)
    );
    let jobs = cx.jobs_of(node).await?;
    ensure!(
        jobs.len() == 4 && jobs.iter().all(|j| j["Stop"] == false),
        "jobs after shutdown: {jobs:?}"
    );
    for i in 0..3 {
        let p = cx.pods(ns).get(&format!("p{i}")).await?;
        ensure!(p.metadata.deletion_timestamp.is_none(), "p{i} is being deleted");
        ensure!(p.status.and_then(|s| s.phase).as_deref() == Some("Running"), "p{i} not Running");
    }
    Ok(())
}

/// SIGKILL while 50 pods are being created: after a restart exactly 50 jobs exist, one per pod,
/// and all 50 pods reach Running.
async fn killed_during_creation(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-crash", "e2e-crash");
    let vk = cx.node_and_namespace(node, ns).await?;
    // Small requests: fifty pods at Nomad's defaults (100 MHz, 300 MB each) would fill the test
    // node and starve the other tests' pods.
    let small = serde_json::json!({"containers": [{
        "name": "main", "image": "busybox", "command": ["sleep", "600"],
        "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}}
    }]});
    for i in 0..50 {
        let p = pod(&format!("p{i:02}")).namespace(ns).on_node(node).spec(small.clone());
        cx.create(&p.build()).await?;
    }
    // Kill it once some, not all, of the jobs exist.
    wait_for("the first jobs", Duration::from_secs(60), Duration::from_millis(100), || async {
        Ok((!cx.jobs_of(node).await?.is_empty()).then_some(()))
    })
    .await?;
    drop(vk);
    let before = cx.jobs_of(node).await?.len();
    println!("{before} of 50 jobs existed at the kill");
    let _vk = cx.start_vk(node)?;
    wait_for("all 50 pods Running", Duration::from_secs(240), Duration::from_secs(1), || async {
        let pods = cx.pods(ns).list(&ListParams::default()).await?;
        let running = pods
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        Ok((running == 50).then_some(()))
    })
    .await?;
    let jobs = cx.jobs_of(node).await?;
    let ids: BTreeSet<String> =
        jobs.iter().filter_map(|j| j["ID"].as_str().map(str::to_owned)).collect();
    ensure!(jobs.len() == 50 && ids.len() == 50, "{} jobs, {} distinct", jobs.len(), ids.len());
    for i in 0..50 {
        ensure!(ids.contains(&format!("k8s-{ns}_p{i:02}")), "no job for p{i:02}");
    }
    Ok(())
}

/// kube-apiserver restarted (on a stack of its own, down for 15 s): the pod watch resumes, a pod
/// created afterwards runs, a pod that finished while the API server was down gets its final
/// status, and no job is duplicated or registered again.
async fn apiserver_restart(_shared: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-apiserver", "e2e-apiserver");
    let mut stack = Stack::start().await?;
    let _vk = stack.virtual_kubelet(node, &[])?;
    let version = {
        let cx = Ctx { stack: &stack, client: stack.client().await?, http: reqwest::Client::new() };
        stack.namespace(ns).await?;
        cx.wait_ready(node, Duration::from_secs(30)).await?;
        cx.create(
            &pod("steady").namespace(ns).on_node(node).container("main", &["sleep", "600"]).build(),
        )
        .await?;
        cx.create(
            &pod("finishes")
                .namespace(ns)
                .on_node(node)
                .restart("Never")
                .container("main", &["sh", "-c", "sleep 12; exit 0"])
                .build(),
        )
        .await?;
        cx.wait_phase(ns, "steady", "Running", Duration::from_secs(30)).await?;
        cx.wait_phase(ns, "finishes", "Running", Duration::from_secs(30)).await?;
        let job = cx.nomad(&format!("/v1/job/k8s-{ns}_steady")).await?.context("steady job")?;
        job["Version"].clone()
    };
    stack.restart_apiserver(Duration::from_secs(15)).await?;
    let cx = Ctx { stack: &stack, client: stack.client().await?, http: reqwest::Client::new() };
    cx.wait_phase(ns, "finishes", "Succeeded", Duration::from_secs(60)).await?;
    cx.create(
        &pod("after").namespace(ns).on_node(node).container("main", &["sleep", "600"]).build(),
    )
    .await?;
    cx.wait_phase(ns, "after", "Running", Duration::from_secs(60)).await?;
    cx.wait_phase(ns, "steady", "Running", Duration::from_secs(10)).await?;
    let jobs = cx.jobs_of(node).await?;
    ensure!(jobs.len() == 3, "{} jobs: {jobs:?}", jobs.len());
    let job = cx.nomad(&format!("/v1/job/k8s-{ns}_steady")).await?.context("steady job")?;
    ensure!(job["Version"] == version, "the steady job was registered again");
    Ok(())
}

/// Nomad (a server-mode agent keeping its state on disk) stops for 60 s and starts again with the
/// same data directory: the node goes Ready=False while it is down and Ready again after; a pod
/// deleted during the outage keeps its deletionTimestamp until Nomad returns, then its job is
/// stopped and the pod removed; a pod created during the outage waits Pending, then runs; the pod
/// that ran throughout keeps its allocation and its job is not registered again.
async fn nomad_outage(_shared: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-outage", "e2e-outage");
    let mut stack =
        Stack::start_with(StackOptions { nomad_server: true, ..StackOptions::default() }).await?;
    let _vk = stack.virtual_kubelet(node, &["--node-status-interval", "2s"])?;
    let (version, alloc) = {
        let cx = Ctx { stack: &stack, client: stack.client().await?, http: reqwest::Client::new() };
        stack.namespace(ns).await?;
        cx.wait_ready(node, Duration::from_secs(60)).await?;
        for name in ["steady", "doomed"] {
            let p = pod(name).namespace(ns).on_node(node).container("main", &["sleep", "600"]);
            cx.create(&p.build()).await?;
        }
        cx.wait_phase(ns, "steady", "Running", Duration::from_secs(60)).await?;
        cx.wait_phase(ns, "doomed", "Running", Duration::from_secs(60)).await?;
        let job = cx.nomad(&format!("/v1/job/k8s-{ns}_steady")).await?.context("steady job")?;
        (job["Version"].clone(), current_alloc(&cx, &format!("k8s-{ns}_steady")).await?)
    };

    stack.stop_nomad()?;
    let stopped = std::time::Instant::now();
    let cx = Ctx { stack: &stack, client: stack.client().await?, http: reqwest::Client::new() };
    let cond =
        wait_for("node NotReady", Duration::from_secs(40), Duration::from_millis(500), || {
            let cx = &cx;
            async move {
                let n = cx.node(node).await?;
                let c =
                    n.and_then(|n| n.status?.conditions?.into_iter().find(|c| c.type_ == "Ready"));
                Ok(c.filter(|c| c.status == "False"))
            }
        })
        .await?;
    ensure!(cond.reason.as_deref() == Some("NomadUnreachable"), "Ready condition {cond:?}");
    cx.pods(ns).delete("doomed", &Default::default()).await?;
    let mut born = pod("born").namespace(ns).container("main", &["sleep", "600"]).build();
    // The scheduler places nothing on a not-ready node: bind it directly, as a kubelet sees it.
    born.spec.as_mut().context("spec")?.node_name = Some(node.to_owned());
    cx.create(&born).await?;
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(stopped.elapsed())).await;
    let doomed =
        cx.pods(ns).get_opt("doomed").await?.context("doomed vanished while Nomad was down")?;
    ensure!(doomed.metadata.deletion_timestamp.is_some(), "doomed is not being deleted");
    let born = cx.pods(ns).get("born").await?;
    let phase = born.status.and_then(|s| s.phase);
    ensure!(phase.as_deref() == Some("Pending"), "born is {phase:?} while Nomad is down");
    drop(cx);

    stack.resume_nomad().await?;
    let cx = Ctx { stack: &stack, client: stack.client().await?, http: reqwest::Client::new() };
    cx.wait_ready(node, Duration::from_secs(60)).await?;
    wait_for("doomed removed", Duration::from_secs(60), Duration::from_millis(500), || async {
        Ok(cx.pods(ns).get_opt("doomed").await?.is_none().then_some(()))
    })
    .await?;
    let job = cx.nomad(&format!("/v1/job/k8s-{ns}_doomed")).await?;
    ensure!(job.as_ref().is_none_or(|j| j["Stop"] == true), "doomed's job still runs: {job:?}");
    cx.wait_phase(ns, "born", "Running", Duration::from_secs(60)).await?;
    cx.wait_phase(ns, "steady", "Running", Duration::from_secs(10)).await?;
    let job = cx.nomad(&format!("/v1/job/k8s-{ns}_steady")).await?.context("steady job")?;
    ensure!(job["Version"] == version, "the steady job was registered again");
    let now = current_alloc(&cx, &format!("k8s-{ns}_steady")).await?;
    ensure!(now == alloc, "steady moved from allocation {alloc} to {now}");
    let steady = cx.pods(ns).get("steady").await?;
    let restarts = container_state(&steady, "main").map(|c| c.restart_count);
    ensure!(restarts == Some(0), "steady restarted: {restarts:?}");
    let live = cx.jobs_of(node).await?.into_iter().filter(|j| j["Stop"] != true).count();
    ensure!(live == 2, "{live} live jobs, want steady and born");
    Ok(())
}

/// A Nomad client dies (SIGKILL, its node goes `down`): the `restartPolicy: Never` pod it ran
/// fails with reason NodeLost and its job is stopped (Nomad's replacement would be a second run);
/// the `Always` pod follows Nomad's replacement to the other client and runs again there.
async fn lost_allocations(_shared: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-lost", "e2e-lost");
    let mut stack =
        Stack::start_with(StackOptions { nomad_server: true, ..StackOptions::default() }).await?;
    let doomed_client = stack.start_nomad_client("spare-1", "spare").await?;
    let _vk = stack.virtual_kubelet(node, &["--allowed-node-pools", "spare"])?;
    let cx = Ctx { stack: &stack, client: stack.client().await?, http: reqwest::Client::new() };
    stack.namespace(ns).await?;
    cx.wait_ready(node, Duration::from_secs(60)).await?;
    for (name, policy) in [("once", "Never"), ("service", "Always")] {
        let p = pod(name)
            .namespace(ns)
            .on_node(node)
            .restart(policy)
            .annotation("nomad.hashicorp.com/node-pool", "spare")
            .container("main", &["sleep", "600"]);
        cx.create(&p.build()).await?;
    }
    cx.wait_phase(ns, "once", "Running", Duration::from_secs(60)).await?;
    cx.wait_phase(ns, "service", "Running", Duration::from_secs(60)).await?;
    let first = current_alloc(&cx, &format!("k8s-{ns}_service")).await?;
    drop(cx);

    stack.start_nomad_client("spare-2", "spare").await?;
    stack.kill(doomed_client);
    let cx = Ctx { stack: &stack, client: stack.client().await?, http: reqwest::Client::new() };
    let once = cx.wait_phase(ns, "once", "Failed", Duration::from_secs(90)).await?;
    let st = once.status.clone().unwrap_or_default();
    ensure!(st.reason.as_deref() == Some("NodeLost"), "reason {:?}: {:?}", st.reason, st.message);
    wait_for("once's job stopped", Duration::from_secs(30), Duration::from_millis(500), || async {
        let job = cx.nomad(&format!("/v1/job/k8s-{ns}_once")).await?;
        Ok(job.is_none_or(|j| j["Stop"] == true).then_some(()))
    })
    .await?;
    let moved = wait_for(
        "service running in a new allocation",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            let p = cx.pods(ns).get("service").await?;
            let id = container_state(&p, "main").and_then(|c| c.container_id).unwrap_or_default();
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            Ok((running && !id.is_empty() && !id.contains(&first)).then_some(id))
        },
    )
    .await?;
    let now = current_alloc(&cx, &format!("k8s-{ns}_service")).await?;
    ensure!(moved.contains(&now), "container {moved} is not in allocation {now}");
    Ok(())
}

/// The process's own metrics after a pod's life (created, Running, deleted): the series of
/// `vk_app::telemetry` are served on `--metrics-addr`, with `/healthz` and `/readyz`.
async fn process_metrics(cx: Ctx<'_>) -> anyhow::Result<()> {
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
    let pods_running = sample(&running, "vk_pods", &[("phase", "Running")]);
    ensure!(pods_running == Some(1.0), "vk_pods Running {pods_running:?}:\n{running}");
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

/// The value of the Prometheus sample `name` carrying every label of `labels` (in any order).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        let ok =
            metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        ok.then(|| value.parse().ok()).flatten()
    })
}

fn p_sa_volume(p: &Pod) -> Option<String> {
    p.spec
        .as_ref()?
        .volumes
        .as_ref()?
        .iter()
        .find(|v| v.name.starts_with("kube-api-access-"))
        .map(|v| v.name.clone())
}

/// A missing mandatory ConfigMap key keeps the pod from being created (no job, a waiting container
/// and the upstream Event) until the ConfigMap exists; a missing optional one gives an Event and
/// the pod runs.
async fn missing_inputs(cx: Ctx<'_>) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let (node, ns) = ("vk-missing", "e2e-missing");
    let _vk = cx.node_and_namespace(node, ns).await?;
    let env = |optional: bool| {
        serde_json::json!({"containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo MODE=$MODE; sleep 300"],
            "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "later", "key": "mode", "optional": optional}}}]}]})
    };
    cx.create(&pod("mandatory").namespace(ns).on_node(node).spec(env(false)).build()).await?;
    cx.create(&pod("optional").namespace(ns).on_node(node).spec(env(true)).build()).await?;
    let ev = wait_event(&cx, ns, "mandatory", "MandatoryConfigMapNotFound").await?;
    ensure!(ev.type_.as_deref() == Some("Warning"), "type {:?}", ev.type_);
    ensure!(ev.message.unwrap_or_default().contains(&format!("configmap {ns}/later not found")));
    let waiting = wait_for(
        "CreateContainerConfigError",
        Duration::from_secs(15),
        Duration::from_millis(250),
        || async {
            let p = cx.pods(ns).get("mandatory").await?;
            let w = container_state(&p, "main").and_then(|c| c.state).and_then(|s| s.waiting);
            Ok(w.filter(|w| w.reason.as_deref() == Some("CreateContainerConfigError")))
        },
    )
    .await?;
    ensure!(waiting.message.unwrap_or_default().contains("later"), "waiting message");
    cx.wait_phase(ns, "optional", "Running", Duration::from_secs(30)).await?;
    wait_event(&cx, ns, "optional", "OptionalConfigMapNotFound").await?;
    ensure!(
        cx.nomad(&format!("/v1/job/k8s-{ns}_mandatory")).await?.is_none(),
        "a job exists for the waiting pod"
    );
    let p = cx.pods(ns).get("mandatory").await?;
    ensure!(p.status.and_then(|s| s.phase).as_deref() == Some("Pending"), "not Pending");
    // The ConfigMap appears: the waiting pod starts with it.
    let cms: Api<ConfigMap> = Api::namespaced(cx.client.clone(), ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            serde_json::json!({"metadata": {"name": "later"}, "data": {"mode": "ok"}}),
        )?,
    )
    .await?;
    cx.wait_phase(ns, "mandatory", "Running", Duration::from_secs(90)).await?;
    let alloc = current_alloc(&cx, &format!("k8s-{ns}_mandatory")).await?;
    wait_output(&cx, &alloc, "main", "MODE=ok").await?;
    Ok(())
}

/// The shared corpus of pods the node cannot run (`tests/corpus/unsupported.json`, the cases the
/// API server accepts): every one ends ProviderFailed with a message naming its field, no job is
/// made, and the process keeps serving (a good pod runs after them).
async fn unsupported_corpus(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-corpus", "e2e-corpus");
    let _vk = cx.node_and_namespace(node, ns).await?;
    let corpus: Vec<Value> = serde_json::from_str(include_str!("../corpus/unsupported.json"))?;
    let cases: Vec<&Value> = corpus.iter().filter(|c| c["unit_only"] != true).collect();
    ensure!(cases.len() >= 30, "only {} cases", cases.len());
    for (i, case) in cases.iter().enumerate() {
        cx.create(&corpus_pod(case, &format!("case-{i}"), ns, node)?)
            .await
            .with_context(|| format!("case {:?}", case["case"]))?;
    }
    for (i, case) in cases.iter().enumerate() {
        let name = format!("case-{i}");
        provider_failed_as_the_case_says(&cx, ns, &name, case).await?;
        ensure!(
            cx.nomad(&format!("/v1/job/k8s-{ns}_{name}")).await?.is_none(),
            "a job exists for {:?}",
            case["case"]
        );
    }
    cx.create(
        &pod("good").namespace(ns).on_node(node).container("main", &["sleep", "300"]).build(),
    )
    .await?;
    cx.wait_phase(ns, "good", "Running", Duration::from_secs(30)).await?;
    Ok(())
}

/// A corpus case (`tests/corpus/*.json`) as pod `name`: one `main` container running
/// `sleep 3600` merged with the case's `container` (a `null` removes a field), `spec` and
/// `annotations`, bound to `node` directly (no scheduler: some cases are never schedulable, and
/// what is tested is the node's answer).
fn corpus_pod(case: &Value, name: &str, ns: &str, node: &str) -> anyhow::Result<Pod> {
    let mut container =
        serde_json::json!({"name": "main", "image": "busybox", "command": ["sleep", "3600"]});
    for (k, v) in case["container"].as_object().into_iter().flatten() {
        if v.is_null() {
            container.as_object_mut().context("container")?.remove(k);
        } else {
            container[k] = v.clone();
        }
    }
    let mut spec = serde_json::json!({"containers": [container], "nodeName": node});
    for (k, v) in case["spec"].as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    let mut b = pod(name).namespace(ns).spec(spec);
    for (k, v) in case["annotations"].as_object().into_iter().flatten() {
        b = b.annotation(k, v.as_str().unwrap_or_default());
    }
    Ok(b.build())
}

/// Waits (60 s) for pod `name` to be refused as the case says: by default `ProviderFailed` with a
/// message that starts with the case's `field` and holds its `message`; with a `reason`, rejected
/// as the kubelet rejects (`Failed` with that reason) or, for `CreateContainerConfigError`, its
/// container waiting so. Returns the message.
async fn provider_failed_as_the_case_says(
    cx: &Ctx<'_>,
    ns: &str,
    name: &str,
    case: &Value,
) -> anyhow::Result<String> {
    let reason = case["reason"].as_str().unwrap_or("ProviderFailed");
    let msg = wait_for(
        &format!("{reason} for {:?}", case["case"]),
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let p = cx.pods(ns).get(name).await?;
            let st = p.status.clone().unwrap_or_default();
            if reason == "CreateContainerConfigError" {
                let waiting = container_state(&p, "main").and_then(|c| c.state?.waiting);
                return Ok(waiting
                    .filter(|w| w.reason.as_deref() == Some(reason))
                    .map(|w| w.message.unwrap_or_default()));
            }
            let phase_ok = reason == "ProviderFailed" || st.phase.as_deref() == Some("Failed");
            Ok((st.reason.as_deref() == Some(reason) && phase_ok)
                .then(|| st.message.unwrap_or_default()))
        },
    )
    .await?;
    let field = case["field"].as_str().unwrap_or_default();
    let want = case["message"].as_str().unwrap_or_default();
    ensure!(
        (field.is_empty() || msg.starts_with(&format!("{field}: "))) && msg.contains(want),
        "{:?}: message {msg:?} lacks {field:?} or {want:?}",
        case["case"]
    );
    Ok(msg)
}

/// Nomad unreachable: the node registers NotReady with reason NomadUnreachable, and a pod bound to
/// it stays Pending without being failed or deleted.
async fn nomad_unreachable(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-nonomad", "e2e-nonomad");
    let dead = format!("http://127.0.0.1:{}", vk_tests::free_port()?);
    let _vk = cx.stack.virtual_kubelet(node, &["--nomad-addr", &dead])?;
    cx.stack.namespace(ns).await?;
    let cond = wait_for(
        "node registered NotReady",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let n = cx.node(node).await?;
            Ok(n.and_then(|n| n.status?.conditions?.into_iter().find(|c| c.type_ == "Ready")))
        },
    )
    .await?;
    ensure!(
        cond.status == "False" && cond.reason.as_deref() == Some("NomadUnreachable"),
        "Ready condition {cond:?}"
    );
    let p = pod("waiting")
        .namespace(ns)
        .on_node(node)
        .restart("Never")
        .container("main", &["sleep", "300"])
        .build();
    // The scheduler does not place pods on a not-ready node; bind it directly, as a kubelet sees it.
    let mut p = p;
    if let Some(spec) = p.spec.as_mut() {
        spec.node_name = Some(node.to_owned());
    }
    cx.create(&p).await?;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let p = cx.pods(ns).get("waiting").await?;
    let st = p.status.unwrap_or_default();
    ensure!(st.phase.as_deref() == Some("Pending"), "phase {:?}", st.phase);
    ensure!(st.reason.is_none(), "reason {:?}: {:?}", st.reason, st.message);
    ensure!(p.metadata.deletion_timestamp.is_none(), "pod being deleted");
    Ok(())
}

/// Force deletion purges the job at once; a job whose pod was force-deleted while the virtual
/// kubelet was down is purged on restart; a job recorded for another node is never touched, and a
/// pod whose job ID it holds gets ProviderFailed instead of taking it over.
async fn force_delete_orphans_and_foreign_jobs(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-force", "e2e-force");
    let foreign_id = format!("k8s-{ns}_foreign");
    let foreign = serde_json::json!({"Job": {
        "ID": foreign_id, "Name": foreign_id, "Type": "batch", "Datacenters": ["*"],
        "Meta": {"k8s_node_name": "someone-else", "k8s_namespace": ns, "k8s_pod_name": "foreign", "k8s_pod_uid": "x"},
        "TaskGroups": [{"Name": "pod", "Count": 1, "Tasks": [{"Name": "main", "Driver": "raw_exec",
            "Config": {"command": "sleep", "args": ["300"]}}]}]
    }});
    let r = cx.http.put(format!("{}/v1/jobs", cx.stack.nomad_addr)).json(&foreign).send().await?;
    ensure!(r.status().is_success(), "registering the foreign job: {}", r.status());

    let mut vk = cx.node_and_namespace(node, ns).await?;
    for name in ["forced", "orphan"] {
        cx.create(
            &pod(name)
                .namespace(ns)
                .on_node(node)
                .grace(30)
                .container("main", &["sleep", "300"])
                .build(),
        )
        .await?;
    }
    cx.create(
        &pod("foreign").namespace(ns).on_node(node).container("main", &["sleep", "300"]).build(),
    )
    .await?;
    for name in ["forced", "orphan"] {
        cx.wait_phase(ns, name, "Running", Duration::from_secs(30)).await?;
    }
    let pods = cx.pods(ns);
    let refused = wait_for(
        "ProviderFailed for the pod whose job ID is taken",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let p = pods.get("foreign").await?;
            Ok(p.status.filter(|s| s.reason.as_deref() == Some("ProviderFailed")))
        },
    )
    .await?;
    ensure!(refused.message.unwrap_or_default().contains("not owned by node vk-force"));

    // Force delete: the pod object is gone at once; the job must follow without a grace period.
    let forced = Instant::now();
    cx.stack.kubectl(&["delete", "pod", "-n", ns, "forced", "--grace-period=0", "--force"])?;
    wait_for(
        "the force-deleted pod's job purged",
        Duration::from_secs(10),
        Duration::from_millis(250),
        || async {
            Ok(cx.nomad(&format!("/v1/job/k8s-{ns}_forced")).await?.is_none().then_some(()))
        },
    )
    .await?;
    println!("force-deleted pod's job purged after {:?}", forced.elapsed());

    // A pod deleted while the virtual kubelet is down leaves an orphan job, purged on restart.
    vk.kill();
    cx.stack.kubectl(&["delete", "pod", "-n", ns, "orphan", "--grace-period=0", "--force"])?;
    ensure!(
        cx.nomad(&format!("/v1/job/k8s-{ns}_orphan")).await?.is_some(),
        "orphan job gone too early"
    );
    let _vk = cx.start_vk(node)?;
    wait_for(
        "the orphan job purged after restart",
        Duration::from_secs(20),
        Duration::from_millis(250),
        || async {
            Ok(cx.nomad(&format!("/v1/job/k8s-{ns}_orphan")).await?.is_none().then_some(()))
        },
    )
    .await?;
    let job =
        cx.nomad(&format!("/v1/job/{foreign_id}")).await?.context("the foreign job was removed")?;
    ensure!(
        job["Meta"]["k8s_node_name"] == "someone-else" && job["Version"] == 0,
        "the foreign job was changed: {job}"
    );
    ensure!(job["Stop"] == false, "the foreign job was stopped");
    Ok(())
}

/// metrics-server (a real one, from its Go module) runs against the stack as its ServiceAccount:
/// its APIService becomes Available through the aggregator and the metrics API answers. No node
/// need be listed (the nodes here may have no kubelet endpoint serving metrics).
async fn metrics_server_serves(cx: Ctx<'_>) -> anyhow::Result<()> {
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

type TestFn = for<'a> fn(
    Ctx<'a>,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'a>,
>;

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|cx| Box::pin($name(cx))) as TestFn)),*]
    };
}

fn main() {
    let mut args = Arguments::from_args();
    let tests = tests![
        node_lifecycle,
        pod_runs_and_deletes,
        exit_code,
        same_name_two_namespaces,
        restart_adopts,
        untranslatable_pod,
        nomad_unreachable,
        force_delete_orphans_and_foreign_jobs,
        pod_inputs_and_volumes,
        missing_inputs,
        unsupported_corpus,
        hostile_corpus,
        probes,
        lifecycle,
        nomad_namespace,
        token_renewal,
        pushed_status,
        graceful_shutdown,
        killed_during_creation,
        apiserver_restart,
        nomad_outage,
        lost_allocations,
        process_metrics,
        kubelet_logs,
        kubelet_exec,
        kubelet_port_forward,
        kubelet_security,
        kubelet_top_and_hpa,
        kubelet_websocket_exec,
        metrics_server_serves,
        in_cluster_rbac,
        memory_provider,
        example_provider,
        docker_pod,
        docker_security_and_limits,
        docker_image_pull_failure,
        docker_exec_probes,
        docker_subpath_escape,
        docker_stats,
        docker_init_and_sidecar,
        docker_empty_dirs,
        docker_readiness_gates,
        docker_termination_messages,
        docker_registry_pulls,
        docker_volume_updates,
        kubelet_port_under_attack,
        node_identity_bootstrap
    ];
    // The tests mostly wait on the peers: run them all at once unless told otherwise.
    args.test_threads = args.test_threads.or(Some(tests.len()));
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            eprintln!("cannot start a tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let shared: Shared = Arc::new(OnceCell::new());
    let gate = Arc::new(tokio::sync::RwLock::new(()));
    let trials = tests
        .into_iter()
        .map(|(name, f)| {
            let (rt, shared) = (Arc::clone(&rt), Arc::clone(&shared));
            let gate = Arc::clone(&gate);
            Trial::test(name, move || {
                rt.block_on(async {
                    // The heavy tests (fifty pods; a second stack; twenty nodes) run alone, so that they do not
                    // starve the others' timings on a 2-core machine; the token test only sleeps.
                    let _shared;
                    let _exclusive;
                    match name {
                        "killed_during_creation"
                        | "apiserver_restart"
                        | "nomad_outage"
                        | "lost_allocations"
                        | "kubelet_top_and_hpa"
                        | "in_cluster_rbac"
                        | "kubelet_port_under_attack" => {
                            _exclusive = gate.write().await;
                        }
                        "token_renewal" => {}
                        _ => _shared = gate.read().await,
                    }
                    let stack = shared
                        .get_or_init(|| async {
                            let docker = StackOptions { docker: true, ..StackOptions::default() };
                            Stack::start_with(docker).await.map_err(|e| format!("{e:#}"))
                        })
                        .await
                        .as_ref()
                        .map_err(|e| Failed::from(format!("the local stack did not start: {e}")))?;
                    let cx = Ctx {
                        stack,
                        client: stack.client().await.map_err(|e| Failed::from(e.to_string()))?,
                        http: reqwest::Client::new(),
                    };
                    let (outcome, started) = vk_tests::STARTED
                        .scope(std::cell::RefCell::new(Vec::new()), async {
                            let outcome = f(cx).await;
                            (outcome, vk_tests::STARTED.with(|l| l.take()))
                        })
                        .await;
                    // What the test's pods still run in Nomad goes with it.
                    let nodes: Vec<String> = started.iter().map(|(n, _)| n.clone()).collect();
                    if let Err(e) = stack.stop_jobs_of(&nodes).await {
                        eprintln!("{name}: the jobs of its nodes were not stopped: {e:#}");
                    }
                    outcome.map_err(|e| {
                        Failed::from(format!(
                            "{e:#}\nlogs:\n{}\n  virtual kubelets: {}/logs/virtual-kubelet-*.log\n{}",
                            stack.logs(),
                            stack.dir.display(),
                            // Only the first few: a test may start twenty.
                            vk_tests::log_tails(started.iter().take(3).map(|(_, l)| l), 25)
                        ))
                    })
                })
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Tear the stack down before exiting (exit() skips destructors).
    drop(shared);
    drop(rt);
    conclusion.exit();
}
