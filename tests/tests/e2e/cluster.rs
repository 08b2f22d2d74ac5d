//! The node on a Nomad cluster it shares: what Nomad cannot place reaches the pod, and the
//! capacity is what the node can use.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The waiting message of container `main` of `ns/name`, if it waits.
async fn waiting_message(cx: &Ctx<'_>, ns: &str, name: &str) -> anyhow::Result<Option<String>> {
    let p = cx.pods(ns).get(name).await?;
    let w = container_state(&p, "main").and_then(|c| c.state?.waiting);
    Ok(w.and_then(|w| w.message))
}

/// Placement failures reach the pod: a pod pinned to a node pool without clients, and a pod
/// asking for more memory than Nomad has left (bound directly: the scheduler counts the whole
/// node), each wait `ContainerCreating` with Nomad's reason and figures in their message and one
/// `FailedPlacement` Event; when the memory is freed the second is placed, runs and loses the
/// message. On a stack of its own: the test takes most of a Nomad client's memory.
pub(crate) async fn placement_failures(_shared: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-placement", "e2e-placement");
    let stack =
        Stack::start_with(StackOptions { nomad_server: true, ..StackOptions::default() }).await?;
    let _vk = stack.virtual_kubelet(node, &["--allowed-node-pools", "empty"])?;
    let cx = Ctx { stack: &stack, client: stack.client().await?, http: stack.nomad_http() };
    stack.namespace(ns).await?;
    cx.wait_ready(node, Duration::from_secs(60)).await?;
    let r = cx
        .http
        .put(format!("{}/v1/node/pools", stack.nomad_addr))
        .json(&serde_json::json!({"Name": "empty", "Description": "no clients"}))
        .send()
        .await?;
    ensure!(r.status().is_success(), "creating node pool empty: {}", r.status());

    let nowhere = pod("nowhere")
        .namespace(ns)
        .on_node(node)
        .annotation("nomad.hashicorp.com/node-pool", "empty")
        .container("main", &["sleep", "600"]);
    cx.create(&nowhere.build()).await?;

    // Three fifths of the client's memory each: the second cannot be placed beside the first.
    let nodes = cx.nomad("/v1/nodes?resources=true").await?.context("Nomad nodes")?;
    let client = nodes.as_array().and_then(|n| n.first()).context("no Nomad client")?;
    let total = client["NodeResources"]["Memory"]["MemoryMB"].as_u64().context("memory")?;
    let reserved = client["ReservedResources"]["Memory"]["MemoryMB"].as_u64().unwrap_or(0);
    let share = (total - reserved) * 3 / 5;
    let big = |name: &str| {
        let mut p = pod(name)
            .namespace(ns)
            .spec(serde_json::json!({"containers": [{"name": "main", "image": vk_tests::BUSYBOX,
                "command": ["sleep", "600"],
                "resources": {"requests": {"memory": format!("{share}Mi")}}}]}))
            .build();
        if let Some(spec) = p.spec.as_mut() {
            spec.node_name = Some(node.to_owned());
        }
        p
    };
    cx.create(&big("big-1")).await?;
    cx.wait_phase(ns, "big-1", "Running", Duration::from_secs(60)).await?;
    cx.create(&big("big-2")).await?;

    for (name, want) in
        [("nowhere", "no node in node pool \"empty\""), ("big-2", "1 node exhausted on memory")]
    {
        let message = wait_for(
            &format!("{name}'s waiting message"),
            Duration::from_secs(30),
            Duration::from_millis(500),
            || async { Ok(waiting_message(&cx, ns, name).await?.filter(|m| m.contains(want))) },
        )
        .await?;
        ensure!(
            message.starts_with("Nomad could not place the allocation: "),
            "{name}: {message:?}"
        );
        let event = wait_event(&cx, ns, name, "FailedPlacement").await?;
        ensure!(event.type_.as_deref() == Some("Warning"), "{event:?}");
        ensure!(event.message.as_deref() == Some(message.as_str()), "{event:?} vs {message:?}");
    }

    cx.pods(ns).delete("big-1", &Default::default()).await?;
    cx.wait_phase(ns, "big-2", "Running", Duration::from_secs(60)).await?;
    let left = waiting_message(&cx, ns, "big-2").await?;
    ensure!(left.is_none(), "big-2 still says {left:?}");
    let events = events_of(&cx, ns, "big-2").await?;
    let placements = events.iter().filter(|e| e.reason.as_deref() == Some("FailedPlacement"));
    let count: i32 = placements.map(|e| e.count.unwrap_or(1)).sum();
    ensure!(count == 1, "{count} FailedPlacement Events for big-2");
    Ok(())
}

/// The node's `capacity` and `allocatable` of `resource`: `cpu` in millicores, `pods` as a
/// count, the others in bytes (whatever form the API server gave the quantities).
async fn resources_of(cx: &Ctx<'_>, node: &str, resource: &str) -> anyhow::Result<(u64, u64)> {
    use vk_domain::quantity::{bytes, cpu_millis};
    let status = cx.node(node).await?.and_then(|n| n.status).context("no node status")?;
    let get = |list: Option<&std::collections::BTreeMap<String, _>>| -> anyhow::Result<u64> {
        let q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity =
            list.and_then(|l| l.get(resource)).with_context(|| format!("no {resource}"))?;
        Ok(match resource {
            "cpu" => cpu_millis(resource, &q.0)?,
            "pods" => q.0.parse()?,
            _ => bytes(resource, &q.0)?,
        })
    };
    Ok((get(status.capacity.as_ref())?, get(status.allocatable.as_ref())?))
}

/// A pod of `ns` that kube-scheduler may place on `node` only, asking for `mib` MiB of memory.
fn scheduled(name: &str, ns: &str, node: &str, mib: u64) -> Pod {
    pod(name)
        .namespace(ns)
        .grace(1)
        .spec(serde_json::json!({
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "main", "image": vk_tests::BUSYBOX, "command": ["sleep", "600"],
                "resources": {"requests": {"memory": format!("{mib}Mi")}}}]}))
        .build()
}

/// Capacity is what this node can use: the Nomad nodes of its scope (the `default` pool; a
/// client in pool `other` adds nothing), less what other Nomad jobs hold. A job that is not a
/// pod taking half the client's memory (and 200 MHz, 128 MiB of disk) lowers `allocatable` by
/// exactly that within a status interval, `capacity` unchanged, and this node's own pods lower
/// nothing (kube-scheduler counts them); kube-scheduler keeps a pod larger than what is left off
/// the node (`Insufficient memory`) while a small one runs; when the job stops, `allocatable`
/// comes back and the larger pod is scheduled and runs. On a stack of its own: the job takes
/// half a Nomad client.
pub(crate) async fn shared_capacity(_shared: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-capacity", "e2e-capacity");
    let mut stack =
        Stack::start_with(StackOptions { nomad_server: true, ..StackOptions::default() }).await?;
    stack.start_nomad_client("other", "other").await?;
    let _vk = stack.virtual_kubelet(node, &["--node-status-interval", "2s"])?;
    let cx = Ctx { stack: &stack, client: stack.client().await?, http: stack.nomad_http() };
    stack.namespace(ns).await?;
    cx.wait_ready(node, Duration::from_secs(60)).await?;

    // The scope's one client: the main agent's, in pool `default`.
    let nodes = cx.nomad("/v1/nodes?resources=true").await?.context("Nomad nodes")?;
    let client = nodes
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["NodePool"] == "default")
        .context("no Nomad client in pool default")?;
    let resources = &client["NodeResources"];
    let reserved = &client["ReservedResources"];
    let total = resources["Memory"]["MemoryMB"].as_u64().context("memory")?;
    let usable = total - reserved["Memory"]["MemoryMB"].as_u64().unwrap_or(0);
    let shares = resources["Cpu"]["CpuShares"].as_u64().context("CPU shares")?;
    let cores = resources["Cpu"]["TotalCpuCores"].as_u64().context("cores")?;
    let memory = |mib: u64| mib << 20;
    let (capacity, allocatable) = resources_of(&cx, node, "memory").await?;
    ensure!(capacity == memory(usable), "capacity memory {capacity}, one client has {usable} MiB");
    ensure!(allocatable == capacity, "allocatable {allocatable} of {capacity} with nothing else");
    let (pods, _) = resources_of(&cx, node, "pods").await?;
    ensure!(pods == 110, "capacity pods {pods}: one client in scope");
    let (cpu, _) = resources_of(&cx, node, "cpu").await?;
    let (disk, _) = resources_of(&cx, node, "ephemeral-storage").await?;

    // Another Nomad user's job: half the client's memory, 200 MHz, 128 MiB of disk.
    let half = usable / 2;
    let tenant = serde_json::json!({"Job": {
        "ID": "tenant", "Name": "tenant", "Type": "service", "Datacenters": ["*"],
        "TaskGroups": [{"Name": "g", "Count": 1, "EphemeralDisk": {"SizeMB": 128},
            "Tasks": [{"Name": "t", "Driver": "raw_exec",
                "Config": {"command": "/bin/sleep", "args": ["3600"]},
                "Resources": {"CPU": 200, "MemoryMB": half}}]}]}});
    let r = cx.http.post(format!("{}/v1/jobs", stack.nomad_addr)).json(&tenant).send().await?;
    let status = r.status();
    ensure!(status.is_success(), "registering the tenant job: {status} {}", r.text().await?);
    let held = memory(usable - half);
    let started = Instant::now();
    wait_for(
        "allocatable less the tenant's memory",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async { Ok((resources_of(&cx, node, "memory").await?.1 == held).then_some(())) },
    )
    .await?;
    println!("allocatable memory followed the tenant's job after {:?}", started.elapsed());
    let (cpu_now, cpu_left) = resources_of(&cx, node, "cpu").await?;
    let want_cpu = cpu.saturating_sub(200 * cores * 1000 / shares);
    ensure!(
        cpu_now == cpu && cpu_left == want_cpu,
        "cpu {cpu_now}/{cpu_left}m, want {cpu}/{want_cpu}m"
    );
    let (disk_now, disk_left) = resources_of(&cx, node, "ephemeral-storage").await?;
    let want_disk = disk.saturating_sub(128 << 20);
    ensure!(
        disk_now == disk && disk_left == want_disk,
        "disk {disk_now}/{disk_left}, want {want_disk}"
    );
    ensure!(resources_of(&cx, node, "memory").await?.0 == capacity, "capacity moved");

    // More than is left: kube-scheduler does not place it here.
    cx.create(&scheduled("too-big", ns, node, usable - half + 256)).await?;
    let reason = wait_for(
        "too-big unschedulable",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let p = cx.pods(ns).get("too-big").await?;
            let c = p.status.and_then(|s| s.conditions).unwrap_or_default();
            let c = c.into_iter().find(|c| c.type_ == "PodScheduled" && c.status == "False");
            Ok(c.filter(|c| c.reason.as_deref() == Some("Unschedulable")).and_then(|c| c.message))
        },
    )
    .await?;
    ensure!(reason.contains("Insufficient memory"), "too-big: {reason}");
    // A small pod runs; the node's own pods are not taken out of allocatable.
    cx.create(&scheduled("small", ns, node, 64)).await?;
    cx.wait_phase(ns, "small", "Running", Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, after) = resources_of(&cx, node, "memory").await?;
    ensure!(after == held, "allocatable {after} with this node's pod running, {held} before");
    let p = cx.pods(ns).get("too-big").await?;
    ensure!(p.spec.and_then(|s| s.node_name).is_none(), "too-big was placed");

    // The tenant leaves: allocatable comes back, and the larger pod is placed and runs.
    let r = cx.http.delete(format!("{}/v1/job/tenant?purge=true", stack.nomad_addr)).send().await?;
    ensure!(r.status().is_success(), "stopping the tenant job: {}", r.status());
    wait_for("allocatable back", Duration::from_secs(30), Duration::from_millis(500), || async {
        Ok((resources_of(&cx, node, "memory").await?.1 == capacity).then_some(()))
    })
    .await?;
    cx.wait_phase(ns, "too-big", "Running", Duration::from_secs(90)).await?;
    Ok(())
}

/// A Nomad cluster of three servers and two clients, the leader SIGKILLed in the middle of a
/// burst of 50 pods: the node, given the three servers as its `--nomad-addr` list (the leader
/// first), moves on to the next when it cannot connect; exactly 50 jobs exist, one per pod,
/// none registered twice (version 0, one allocation each), all 50 pods run, and the node is never NotReady nor says Nomad is
/// unreachable (its capacity is read from any server, `stale`). On a stack of its own.
pub(crate) async fn nomad_leader_killed(_shared: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-raft", "e2e-raft");
    let stack =
        Stack::start_with(StackOptions { nomad_cluster: true, ..StackOptions::default() }).await?;
    let _vk = stack.virtual_kubelet(node, &[])?;
    let cx = Ctx { stack: &stack, client: stack.client().await?, http: stack.nomad_http() };
    stack.namespace(ns).await?;
    cx.wait_ready(node, Duration::from_secs(60)).await?;
    let small = serde_json::json!({"containers": [{
        "name": "main", "image": "busybox", "command": ["sleep", "600"],
        "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}}
    }]});
    let watch = async {
        let mut not_ready = Vec::new();
        let started = Instant::now();
        loop {
            if let Ok(r) = cx.ready_status(node).await
                && r.as_deref() != Some("True")
            {
                not_ready.push(format!("{:?}: Ready={r:?}", started.elapsed()));
            }
            // Capacity is read from any server: the election is not an outage.
            if let Ok(Some(c)) = node_condition(&cx, node, "BackendUnreachable").await
                && c.status != "False"
            {
                not_ready.push(format!("{:?}: BackendUnreachable={}", started.elapsed(), c.status));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        #[allow(unreachable_code)]
        not_ready
    };
    let burst = async {
        for i in 0..50 {
            let p = pod(&format!("p{i:02}")).namespace(ns).on_node(node).spec(small.clone());
            cx.create(&p.build()).await?;
            if i == 15 {
                // Some jobs are in, others on their way: the leader goes.
                wait_for(
                    "the first jobs",
                    Duration::from_secs(60),
                    Duration::from_millis(100),
                    || async { Ok((cx.jobs_of(node).await?.len() >= 5).then_some(())) },
                )
                .await?;
                let killed = stack.kill_nomad_leader().await?;
                println!(
                    "killed the Nomad leader {killed} with {} jobs in",
                    cx.jobs_of(node).await?.len()
                );
            }
        }
        wait_for(
            "all 50 pods Running",
            Duration::from_secs(240),
            Duration::from_secs(1),
            || async {
                let pods = cx.pods(ns).list(&ListParams::default()).await?;
                let running = pods
                    .items
                    .iter()
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .count();
                Ok((running == 50).then_some(()))
            },
        )
        .await
    };
    let not_ready = tokio::select! {
        r = burst => { r?; Vec::new() }
        n = watch => n,
    };
    ensure!(
        not_ready.is_empty(),
        "the node was not Ready, or said Nomad was unreachable: {not_ready:?}"
    );
    // The leader was the first address the node had: it moved on to the next.
    let log = std::fs::read_to_string(stack.dir.join("logs/virtual-kubelet-vk-raft.log"))?;
    ensure!(log.contains("trying the next address"), "the node never failed over");
    let jobs = cx.jobs_of(node).await?;
    let ids: BTreeSet<String> =
        jobs.iter().filter_map(|j| j["ID"].as_str().map(str::to_owned)).collect();
    ensure!(jobs.len() == 50 && ids.len() == 50, "{} jobs, {} distinct", jobs.len(), ids.len());
    for id in &ids {
        let job = cx.nomad(&format!("/v1/job/{id}")).await?.context("a job went")?;
        ensure!(job["Version"] == 0, "{id} registered again: version {}", job["Version"]);
        let allocs = cx.allocations(id).await?;
        ensure!(allocs.len() == 1, "{id}: {} allocations", allocs.len());
    }
    Ok(())
}

/// Many nodes, one process: a `--config` file with two `[[nodes]]` entries, each scoped to a node
/// pool and a datacenter of one Nomad cluster (clients `client-a` in `pool-a`/`dc-a` and
/// `client-b` in `pool-b`/`dc-b`; the main agent, in `default`/`dc1`, belongs to neither), each
/// with its own identity, serving certificate and kubelet port. Each node is Ready with its own
/// Lease, taint and capacity (one client's: 110 pods, that client's memory), labelled with
/// Nomad's region (`global`) and its datacenter as its zone. A Deployment of two replicas
/// spreading over zones (`topologySpreadConstraints`, `DoNotSchedule`) gets one pod on each node,
/// each pod's job in its node's pool and its allocation on its pool's client, and each pod's log
/// read through its own node's kubelet port.
pub(crate) async fn many_nodes(_shared: Ctx<'_>) -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    let ns = "e2e-many-nodes";
    let mut stack =
        Stack::start_with(StackOptions { nomad_server: true, ..StackOptions::default() }).await?;
    stack.start_nomad_client_in("client-a", "pool-a", "dc-a").await?;
    stack.start_nomad_client_in("client-b", "pool-b", "dc-b").await?;
    let zones =
        [("vk-zone-a", "pool-a", "dc-a", "client-a"), ("vk-zone-b", "pool-b", "dc-b", "client-b")];
    let mut file = String::new();
    for (node, pool, dc, _) in zones {
        let kubeconfig = stack.node_kubeconfig(node)?;
        let (cert, key) = stack.node_serving_certificate(node)?;
        file.push_str(&format!(
            "[[nodes]]\nnodename = \"{node}\"\nkubeconfig = \"{}\"\ntls_cert_file = \"{}\"\n\
             tls_private_key_file = \"{}\"\nkubelet_port = {}\n[nodes.nomad]\nnode_pool = \"{pool}\"\n\
             datacenters = [\"{dc}\"]\n\n",
            kubeconfig.display(),
            cert.display(),
            key.display(),
            vk_tests::free_port()?
        ));
    }
    let config = stack.dir.join("many-nodes.toml");
    std::fs::write(&config, &file)?;
    let config_arg = format!("--config={}", config.display());
    // One process: the harness's own node flags are the first entry's, which wins over them.
    let _vk = stack.virtual_kubelet("vk-zone-a", &[&config_arg, "--node-status-interval", "2s"])?;
    let cx = Ctx { stack: &stack, client: stack.client().await?, http: stack.nomad_http() };
    stack.namespace(ns).await?;
    let nodes: Api<Node> = Api::all(cx.client.clone());
    let leases: Api<Lease> = Api::namespaced(cx.client.clone(), "kube-node-lease");
    for (node, _, dc, _) in zones {
        cx.wait_ready(node, Duration::from_secs(60)).await?;
        let n = nodes.get(node).await?;
        let labels = n.metadata.labels.clone().unwrap_or_default();
        let label = |k: &str| labels.get(k).map(String::as_str);
        ensure!(label("topology.kubernetes.io/zone") == Some(dc), "{node} labels {labels:?}");
        ensure!(
            label("topology.kubernetes.io/region") == Some("global"),
            "{node} labels {labels:?}"
        );
        let taints = n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        ensure!(
            taints
                .iter()
                .any(|t| t.key == "virtual-kubelet.io/provider" && t.effect == "NoSchedule"),
            "{node} taints {taints:?}"
        );
        let (pods, _) = resources_of(&cx, node, "pods").await?;
        ensure!(pods == 110, "{node} capacity pods {pods}: one client in its scope");
        let lease = leases.get(node).await?;
        let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
        ensure!(holder.as_deref() == Some(node), "{node}'s Lease held by {holder:?}");
    }
    // Each node's memory is its own client's (the clients fingerprint the same machine; the
    // main agent, out of both scopes, would double it).
    let clients = cx.nomad("/v1/nodes?resources=true").await?.context("Nomad nodes")?;
    for (node, pool, _, _) in zones {
        let client = clients
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["NodePool"] == pool)
            .with_context(|| format!("no Nomad client in {pool}"))?;
        let mib = client["NodeResources"]["Memory"]["MemoryMB"].as_u64().context("memory")?
            - client["ReservedResources"]["Memory"]["MemoryMB"].as_u64().unwrap_or(0);
        let (capacity, _) = resources_of(&cx, node, "memory").await?;
        ensure!(
            capacity == mib << 20,
            "{node} capacity memory {capacity}, its client has {mib} MiB"
        );
    }

    let deployments: Api<Deployment> = Api::namespaced(cx.client.clone(), ns);
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "spread"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "spread"}},
                    "template": {
                        "metadata": {"labels": {"app": "spread"}},
                        "spec": {
                            "terminationGracePeriodSeconds": 1,
                            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
                            "topologySpreadConstraints": [{
                                "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                "whenUnsatisfiable": "DoNotSchedule",
                                "labelSelector": {"matchLabels": {"app": "spread"}}
                            }],
                            "containers": [{"name": "main", "image": vk_tests::BUSYBOX,
                                "command": ["sh", "-c", "echo running-in-$NOMAD_DC; exec sleep 600"]}]
                        }
                    }
                }
            }))?,
        )
        .await?;
    let running = wait_for(
        "two Running pods of the Deployment",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            let list = cx.pods(ns).list(&ListParams::default().labels("app=spread")).await?;
            let running: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .collect();
            Ok((running.len() == 2).then_some(running))
        },
    )
    .await?;
    let mut placed: Vec<String> = Vec::new();
    for p in &running {
        let name = p.metadata.name.clone().context("pod name")?;
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).context("unbound")?;
        let (_, pool, dc, client) =
            zones.iter().find(|z| z.0 == node).with_context(|| format!("{name} on {node}"))?;
        let job_id = format!("k8s-{ns}_{name}");
        let job = cx.nomad(&format!("/v1/job/{job_id}")).await?.context("job")?;
        ensure!(job["NodePool"] == *pool, "{name} on {node}: job pool {}", job["NodePool"]);
        ensure!(job["Meta"]["k8s_node_name"] == *node, "{name}'s job meta {}", job["Meta"]);
        let alloc = current_alloc(&cx, &job_id).await?;
        let full = cx.nomad(&format!("/v1/allocation/{alloc}")).await?.context("allocation")?;
        ensure!(full["NodeName"] == *client, "{name} on {node} runs on {}", full["NodeName"]);
        let log = wait_for(
            "the pod's log",
            Duration::from_secs(20),
            Duration::from_millis(250),
            || async {
                let log = cx.stack.kubectl(&["logs", "-n", ns, &name])?;
                Ok((!log.is_empty()).then_some(log))
            },
        )
        .await?;
        ensure!(log.trim() == format!("running-in-{dc}"), "{name}'s log through {node}: {log:?}");
        placed.push(node);
    }
    placed.sort();
    ensure!(placed == ["vk-zone-a", "vk-zone-b"], "pods on {placed:?}: one per zone");
    Ok(())
}

/// The manifests of `examples/manifests`, applied as they are (`kubectl apply -f`) on a stack of
/// their own whose one node is a virtual kubelet on Nomad's docker driver, the image they name
/// (`busybox:1.37`, which users pull) stood in by the offline busybox image tagged with that
/// name: the pod runs and logs its greeting, the Deployment's two replicas are available behind
/// the Service's endpoints, and the Job completes.
pub(crate) async fn example_manifests(_shared: Ctx<'_>) -> anyhow::Result<()> {
    let node = "vk-examples";
    let tagged = std::process::Command::new("docker")
        .args(["tag", vk_tests::BUSYBOX, "busybox:1.37"])
        .status()?;
    ensure!(tagged.success(), "docker tag {} busybox:1.37", vk_tests::BUSYBOX);
    let stack = Stack::start_with(StackOptions { docker: true, ..StackOptions::default() }).await?;
    let _vk = stack.virtual_kubelet(node, &["--nomad-driver", "docker"])?;
    let cx = Ctx { stack: &stack, client: stack.client().await?, http: stack.nomad_http() };
    stack.namespace("default").await?;
    cx.wait_ready(node, Duration::from_secs(60)).await?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests");
    let applied = stack.kubectl(&["apply", "-f", &dir.display().to_string()])?;
    println!("{applied}");

    cx.wait_phase("default", "hello", "Running", Duration::from_secs(120)).await?;
    wait_for("hello's greeting", Duration::from_secs(30), Duration::from_millis(500), || async {
        let log = stack.kubectl(&["logs", "hello"])?;
        Ok(log.contains("hello from Nomad").then_some(()))
    })
    .await?;
    stack.kubectl(&["wait", "--for=condition=available", "deployment/web", "--timeout=180s"])?;
    wait_for(
        "web's two endpoints",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let slices = stack.kubectl(&[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                "jsonpath={range .items[*].endpoints[*]}{.conditions.ready}{\"\\n\"}{end}",
            ])?;
            Ok((slices.lines().filter(|l| *l == "true").count() == 2).then_some(()))
        },
    )
    .await?;
    stack.kubectl(&["wait", "--for=condition=complete", "job/count", "--timeout=180s"])?;
    let counted = stack.kubectl(&["logs", "job/count"])?;
    ensure!(
        counted.split_whitespace().collect::<Vec<_>>() == ["1", "2", "3"],
        "job/count logs {counted:?}"
    );
    Ok(())
}
