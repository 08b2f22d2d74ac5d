//! The node under faults: its own restarts, shutdown and crashes, the API server's and Nomad's
//! outages, lost allocations, an unreachable Nomad, and jobs it must not own.

#[allow(clippy::wildcard_imports)]
use super::*;

/// With 5 pods running, kill -9 and restart: still exactly 5 jobs, each with its one allocation
/// (nothing registered again), and the statuses right.
pub(crate) async fn restart_adopts(cx: Ctx<'_>) -> anyhow::Result<()> {
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

/// SIGTERM: the process finishes in-flight work and exits 0 well within its grace period, and
/// deletes nothing: jobs keep running and pods keep their status. The kubelet API drains: a log
/// read in flight at SIGTERM is answered whole, a followed log is closed within the drain (5 s).
pub(crate) async fn graceful_shutdown(cx: Ctx<'_>) -> anyhow::Result<()> {
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
pub(crate) async fn killed_during_creation(cx: Ctx<'_>) -> anyhow::Result<()> {
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
pub(crate) async fn apiserver_restart(_shared: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-apiserver", "e2e-apiserver");
    let mut stack = Stack::start().await?;
    let _vk = stack.virtual_kubelet(node, &[])?;
    let version = {
        let cx = Ctx { stack: &stack, client: stack.client().await?, http: stack.nomad_http() };
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
    let cx = Ctx { stack: &stack, client: stack.client().await?, http: stack.nomad_http() };
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

/// How long Nomad stays down in [`nomad_outage`]: past the 300 s the `DefaultTolerationSeconds`
/// admission plugin gives every pod for `not-ready` and `unreachable` nodes.
const OUTAGE: Duration = Duration::from_secs(360);

/// The pods running throughout [`nomad_outage`].
const STEADY: [&str; 5] = ["steady-0", "steady-1", "steady-2", "steady-3", "steady-4"];

/// Nomad (a server-mode agent keeping its state on disk) stops for 6 minutes and starts again with
/// the same data directory. Throughout, the node stays `Ready` (no NoExecute eviction: the 5 pods
/// running keep their default 300 s tolerations and are never deleted) with `BackendUnreachable`
/// `True` (`NomadUnreachable`) and nothing allocatable, so a pod the scheduler places waits
/// unscheduled; a pod bound directly waits Pending; a pod deleted keeps its deletionTimestamp.
/// Within 30 s of Nomad's return: the condition is `False` again, the waiting pods run, the deleted
/// one is gone with its job stopped, and the 5 kept their allocations, job versions and restart
/// counts (nothing stopped or registered again).
pub(crate) async fn nomad_outage(_shared: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-outage", "e2e-outage");
    let mut stack =
        Stack::start_with(StackOptions { nomad_server: true, ..StackOptions::default() }).await?;
    let _vk = stack.virtual_kubelet(node, &["--node-status-interval", "2s"])?;
    let before = {
        let cx = Ctx { stack: &stack, client: stack.client().await?, http: stack.nomad_http() };
        stack.namespace(ns).await?;
        cx.wait_ready(node, Duration::from_secs(60)).await?;
        for name in STEADY.iter().chain(&["doomed"]) {
            let p = pod(name).namespace(ns).on_node(node).container("main", &["sleep", "900"]);
            cx.create(&p.build()).await?;
        }
        let mut before = Vec::new();
        for name in STEADY.iter().chain(&["doomed"]) {
            cx.wait_phase(ns, name, "Running", Duration::from_secs(60)).await?;
        }
        for name in STEADY {
            let id = format!("k8s-{ns}_{name}");
            let job = cx.nomad(&format!("/v1/job/{id}")).await?.context("steady job")?;
            before.push((job["Version"].clone(), current_alloc(&cx, &id).await?));
        }
        before
    };

    stack.stop_nomad()?;
    let stopped = std::time::Instant::now();
    let cx = Ctx { stack: &stack, client: stack.client().await?, http: stack.nomad_http() };
    let cond =
        wait_condition(&cx, node, "BackendUnreachable", "True", Duration::from_secs(40)).await?;
    ensure!(cond.reason.as_deref() == Some("NomadUnreachable"), "condition {cond:?}");
    let allocatable_pods = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get("pods"))
            .map(|q| q.0.clone())
    };
    let n = cx.node(node).await?.context("node")?;
    ensure!(
        allocatable_pods(&n).as_deref() == Some("0"),
        "allocatable pods {:?}",
        allocatable_pods(&n)
    );
    cx.pods(ns).delete("doomed", &Default::default()).await?;
    let mut born = pod("born").namespace(ns).container("main", &["sleep", "900"]).build();
    // Bound directly, as a kubelet sees a pod bound before the outage was known.
    born.spec.as_mut().context("spec")?.node_name = Some(node.to_owned());
    cx.create(&born).await?;
    let placed = pod("placed").namespace(ns).on_node(node).container("main", &["sleep", "900"]);
    cx.create(&placed.build()).await?;
    // Sampled through the outage: the node Ready, the 5 pods there and not being deleted.
    while stopped.elapsed() < OUTAGE {
        let ready = node_condition(&cx, node, "Ready").await?.map(|c| c.status);
        ensure!(
            ready.as_deref() == Some("True"),
            "Ready is {ready:?} {:?} into the outage",
            stopped.elapsed()
        );
        for name in STEADY {
            let p = cx.pods(ns).get_opt(name).await?;
            let p = p.with_context(|| {
                format!("{name} deleted {:?} into the outage", stopped.elapsed())
            })?;
            ensure!(p.metadata.deletion_timestamp.is_none(), "{name} is being deleted");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let doomed =
        cx.pods(ns).get_opt("doomed").await?.context("doomed vanished while Nomad was down")?;
    ensure!(doomed.metadata.deletion_timestamp.is_some(), "doomed is not being deleted");
    let born = cx.pods(ns).get("born").await?;
    let phase = born.status.and_then(|s| s.phase);
    ensure!(phase.as_deref() == Some("Pending"), "born is {phase:?} while Nomad is down");
    let placed = cx.pods(ns).get("placed").await?;
    let bound = placed.spec.as_ref().and_then(|s| s.node_name.clone());
    ensure!(bound.is_none(), "placed was bound to {bound:?} while Nomad was down");
    drop(cx);

    stack.resume_nomad().await?;
    let back = std::time::Instant::now();
    let cx = Ctx { stack: &stack, client: stack.client().await?, http: stack.nomad_http() };
    let within = |what: &str| {
        let left = Duration::from_secs(30).saturating_sub(back.elapsed());
        ensure!(!left.is_zero(), "{what} took over 30 s after Nomad's return");
        Ok(left)
    };
    wait_condition(&cx, node, "BackendUnreachable", "False", within("the condition")?).await?;
    wait_for("doomed removed", within("doomed's removal")?, Duration::from_millis(500), || async {
        Ok(cx.pods(ns).get_opt("doomed").await?.is_none().then_some(()))
    })
    .await?;
    cx.wait_phase(ns, "born", "Running", within("born")?).await?;
    cx.wait_phase(ns, "placed", "Running", within("placed")?).await?;
    let took = back.elapsed();
    ensure!(took <= Duration::from_secs(30), "reconverged {took:?} after Nomad's return");
    let job = cx.nomad(&format!("/v1/job/k8s-{ns}_doomed")).await?;
    ensure!(job.as_ref().is_none_or(|j| j["Stop"] == true), "doomed's job still runs: {job:?}");
    for (name, (version, alloc)) in STEADY.iter().zip(before) {
        let id = format!("k8s-{ns}_{name}");
        cx.wait_phase(ns, name, "Running", Duration::from_secs(10)).await?;
        let job = cx.nomad(&format!("/v1/job/{id}")).await?.context("steady job")?;
        ensure!(
            job["Version"] == version && job["Stop"] != true,
            "{name}'s job was registered again or stopped"
        );
        let now = current_alloc(&cx, &id).await?;
        ensure!(now == alloc, "{name} moved from allocation {alloc} to {now}");
        let p = cx.pods(ns).get(name).await?;
        let restarts = container_state(&p, "main").map(|c| c.restart_count);
        ensure!(restarts == Some(0), "{name} restarted: {restarts:?}");
    }
    let live = cx.jobs_of(node).await?.into_iter().filter(|j| j["Stop"] != true).count();
    ensure!(live == STEADY.len() + 2, "{live} live jobs, want the 5 steady, born and placed");
    Ok(())
}

/// The node holds 110 pods per Nomad client of its scope when `--max-pods` is not given (every
/// pool here: `--nomad-node-pool all`). A Nomad client dies (SIGKILL, its node goes `down`): the `restartPolicy: Never` pod it ran
/// fails with reason NodeLost and its job is stopped (Nomad's replacement would be a second run);
/// the `Always` pod follows Nomad's replacement to the other client and runs again there.
pub(crate) async fn lost_allocations(_shared: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-lost", "e2e-lost");
    let mut stack =
        Stack::start_with(StackOptions { nomad_server: true, ..StackOptions::default() }).await?;
    let doomed_client = stack.start_nomad_client("spare-1", "spare").await?;
    let _vk = stack
        .virtual_kubelet(node, &["--nomad-node-pool", "all", "--allowed-node-pools", "spare"])?;
    let cx = Ctx { stack: &stack, client: stack.client().await?, http: stack.nomad_http() };
    stack.namespace(ns).await?;
    cx.wait_ready(node, Duration::from_secs(60)).await?;
    // Without --max-pods, the node holds a kubelet's 110 pods per Nomad client of its scope:
    // both pools' clients here.
    wait_for("capacity.pods 220", Duration::from_secs(30), Duration::from_millis(500), || async {
        let n = cx.node(node).await?.context("node")?;
        let pods =
            n.status.and_then(|s| s.capacity).and_then(|c| c.get("pods").map(|q| q.0.clone()));
        Ok((pods.as_deref() == Some("220")).then_some(()))
    })
    .await?;
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
    let cx = Ctx { stack: &stack, client: stack.client().await?, http: stack.nomad_http() };
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

/// Nomad unreachable from the start. By default the node registers `Ready` with
/// `BackendUnreachable=True` (`NomadUnreachable`); a pod bound to it waits Pending without a
/// failure reason. With `--backend-outage not-ready` the node is `Ready=False` (`NomadUnreachable`)
/// instead.
pub(crate) async fn nomad_unreachable(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-nonomad", "e2e-nonomad");
    let dead = format!("http://127.0.0.1:{}", vk_tests::free_port()?);
    let _vk = cx.stack.virtual_kubelet(node, &["--nomad-addr", &dead])?;
    let strict = "vk-nonomad-strict";
    let _strict = cx
        .stack
        .virtual_kubelet(strict, &["--nomad-addr", &dead, "--backend-outage", "not-ready"])?;
    cx.stack.namespace(ns).await?;
    let cond =
        wait_condition(&cx, node, "BackendUnreachable", "True", Duration::from_secs(30)).await?;
    ensure!(cond.reason.as_deref() == Some("NomadUnreachable"), "condition {cond:?}");
    let ready = node_condition(&cx, node, "Ready").await?.context("Ready")?;
    ensure!(ready.status == "True", "Ready condition {ready:?}");
    let p = pod("waiting")
        .namespace(ns)
        .on_node(node)
        .restart("Never")
        .container("main", &["sleep", "300"])
        .build();
    // Nothing is allocatable here while Nomad does not answer: bind it directly, as a kubelet sees
    // a pod bound before.
    let mut p = p;
    if let Some(spec) = p.spec.as_mut() {
        spec.node_name = Some(node.to_owned());
    }
    cx.create(&p).await?;
    let strict = wait_condition(&cx, strict, "Ready", "False", Duration::from_secs(30)).await?;
    ensure!(strict.reason.as_deref() == Some("NomadUnreachable"), "Ready condition {strict:?}");
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
pub(crate) async fn force_delete_orphans_and_foreign_jobs(cx: Ctx<'_>) -> anyhow::Result<()> {
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
