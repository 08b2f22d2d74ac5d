//! A pod's life on Nomad: run, exit codes, names, probes, lifecycle hooks, Nomad namespaces and
//! pushed status. What a pod reads is in `inputs.rs`, the pods the node refuses in `refusals.rs`.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A two-container pod (real containers, on docker) runs as one Nomad job with the expected ID,
/// Meta and tasks, and `kubectl delete pod` removes job and pod within the grace period + 10 s.
pub(crate) async fn pod_runs_and_deletes(cx: Ctx<'_>) -> anyhow::Result<()> {
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
pub(crate) async fn exit_code(cx: Ctx<'_>) -> anyhow::Result<()> {
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
pub(crate) async fn same_name_two_namespaces(cx: Ctx<'_>) -> anyhow::Result<()> {
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

/// Probes run by the virtual kubelet against real containers (docker, each pod with an address
/// of its own): an httpGet readiness probe and a tcpSocket liveness probe against busybox's
/// `httpd` in the pod make it Ready; a pod whose exec readiness probe fails is Running but not
/// Ready; an exec liveness probe failing once restarts that container once (restartCount 1), in
/// place (the allocation's shared directory, which outlives the restart, tells the two runs
/// apart).
pub(crate) async fn probes(cx: Ctx<'_>) -> anyhow::Result<()> {
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
pub(crate) async fn lifecycle(cx: Ctx<'_>) -> anyhow::Result<()> {
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
pub(crate) async fn nomad_namespace(cx: Ctx<'_>) -> anyhow::Result<()> {
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
pub(crate) async fn pushed_status(cx: Ctx<'_>) -> anyhow::Result<()> {
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

/// `kubectl debug` (an ephemeral container added to a running pod) fails at once and says why:
/// the ephemeral container is reported terminated (`StartError`, exit code 128, the node's
/// message), one Warning `Failed` Event names it by its field path, and `kubectl debug -i`
/// exits non-zero within seconds printing that message (it asks for the log of the terminated
/// container, which the kubelet API refuses with it). The pod runs on untouched: same job
/// version, same allocation, Running.
pub(crate) async fn ephemeral_containers(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-debug", "e2e-debug");
    let _vk = cx.node_and_namespace(node, ns).await?;
    let p = pod("target").namespace(ns).on_node(node).container("main", &["sleep", "600"]);
    cx.create(&p.build()).await?;
    cx.wait_phase(ns, "target", "Running", Duration::from_secs(60)).await?;
    let job_id = format!("k8s-{ns}_target");
    let job = cx.nomad(&format!("/v1/job/{job_id}")).await?.context("job")?;
    let alloc = current_alloc(&cx, &job_id).await?;

    let started = Instant::now();
    let mut debug = tokio::process::Command::new(&cx.stack.peers.kubectl);
    debug
        .arg(format!("--kubeconfig={}", cx.stack.admin_kubeconfig.display()))
        .args(["debug", "-n", ns, "target", "-i", "--image", vk_tests::BUSYBOX, "-c", "debugger"])
        .args(["--", "sh"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), debug.output())
        .await
        .context("kubectl debug still waiting after 60 s")??;
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("kubectl debug ended after {:?}: {text}", started.elapsed());
    ensure!(!out.status.success(), "kubectl debug succeeded: {text}");
    ensure!(text.contains("ephemeral containers are not supported on this node"), "{text}");

    let held = cx.pods(ns).get("target").await?;
    let status = held.status.clone().context("status")?;
    let eph = status.ephemeral_container_statuses.clone().unwrap_or_default();
    let term = eph
        .iter()
        .find(|s| s.name == "debugger")
        .and_then(|s| s.state.as_ref()?.terminated.clone())
        .with_context(|| format!("ephemeral statuses {eph:?}"))?;
    ensure!(
        term.exit_code == 128 && term.reason.as_deref() == Some("StartError"),
        "debugger ended {:?} {}",
        term.reason,
        term.exit_code
    );
    let failed = wait_for(
        "the Failed Event",
        Duration::from_secs(20),
        Duration::from_millis(250),
        || async {
            let events = events_of(&cx, ns, "target").await?;
            let failed: Vec<Event> = events
                .into_iter()
                .filter(|e| {
                    e.reason.as_deref() == Some("Failed")
                        && e.involved_object.field_path.as_deref()
                            == Some("spec.ephemeralContainers{debugger}")
                })
                .collect();
            Ok((!failed.is_empty()).then_some(failed))
        },
    )
    .await?;
    ensure!(
        failed.len() == 1
            && failed[0].type_.as_deref() == Some("Warning")
            && failed[0].count.unwrap_or(1) == 1,
        "Failed Events {failed:?}"
    );
    ensure!(status.phase.as_deref() == Some("Running"), "the pod is {:?}", status.phase);
    let after = cx.nomad(&format!("/v1/job/{job_id}")).await?.context("job after")?;
    ensure!(
        after["Version"] == job["Version"],
        "job version {} -> {}",
        job["Version"],
        after["Version"]
    );
    ensure!(current_alloc(&cx, &job_id).await? == alloc, "the allocation changed");

    // What the message advises works: a copy of the pod with a debug container, exec'd into (the
    // `baseline` profile adds no capability; `general`, the default, adds SYS_PTRACE).
    cx.stack.kubectl(&[
        "debug",
        "-n",
        ns,
        "target",
        "--copy-to=target-copy",
        "--same-node",
        "--share-processes=false",
        "--profile=baseline",
        "--image",
        vk_tests::BUSYBOX,
        "-c",
        "dbg",
        "--",
        "sleep",
        "600",
    ])?;
    cx.wait_phase(ns, "target-copy", "Running", Duration::from_secs(60)).await?;
    let exec = cx.stack.kubectl(&[
        "exec",
        "-n",
        ns,
        "target-copy",
        "-c",
        "dbg",
        "--",
        "echo",
        "debugging",
    ])?;
    ensure!(exec.trim() == "debugging", "exec into the copy: {exec:?}");
    Ok(())
}

/// gRPC probes as the kubelet runs them: a readiness probe calling `grpc.health.v1` for service
/// `db` at the pod's port (a health server of the test on the raw_exec pod's address, the
/// node's) makes the pod Ready while it answers `SERVING`, not Ready with a Warning `Unhealthy`
/// (`Readiness probe failed: service unhealthy (responded with "NOT_SERVING")`) when it does not,
/// Ready again after; a liveness probe for a service the server does not know fails with the
/// server's `NOT_FOUND` and restarts its container.
pub(crate) async fn grpc_probes(cx: Ctx<'_>) -> anyhow::Result<()> {
    use vk_tests::grpc_health::{HealthServer, NOT_SERVING, SERVING};
    let (node, ns) = ("vk-grpc", "e2e-grpc");
    let _vk = cx.node_and_namespace(node, ns).await?;
    let health = HealthServer::start("db").await?;
    let port = health.port;
    let ready = serde_json::json!({"containers": [{
        "name": "main", "image": vk_tests::BUSYBOX, "command": ["sleep", "600"],
        "ports": [{"containerPort": port}],
        "readinessProbe": {"grpc": {"port": port, "service": "db"}, "periodSeconds": 1, "failureThreshold": 1}
    }]});
    cx.create(&pod("served").namespace(ns).on_node(node).spec(ready).build()).await?;
    let is_ready = |want: bool| {
        let cx = &cx;
        async move {
            wait_for(
                &format!("served Ready={want}"),
                Duration::from_secs(60),
                Duration::from_millis(250),
                || async {
                    Ok((pod_ready(&cx.pods(ns).get("served").await?) == want).then_some(()))
                },
            )
            .await
        }
    };
    is_ready(true).await?;
    health.set(NOT_SERVING);
    is_ready(false).await?;
    let unhealthy = wait_for(
        "the Unhealthy Event",
        Duration::from_secs(20),
        Duration::from_millis(250),
        || async {
            let events = events_of(&cx, ns, "served").await?;
            Ok(events.into_iter().find(|e| e.reason.as_deref() == Some("Unhealthy")))
        },
    )
    .await?;
    let message = unhealthy.message.unwrap_or_default();
    ensure!(
        message == "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")",
        "Unhealthy: {message:?}"
    );
    health.set(SERVING);
    is_ready(true).await?;
    ensure!(health.checks.load(std::sync::atomic::Ordering::Relaxed) >= 3, "too few checks");

    let unknown = serde_json::json!({"containers": [{
        "name": "main", "image": vk_tests::BUSYBOX, "command": ["sleep", "600"],
        "ports": [{"containerPort": port}],
        "livenessProbe": {"grpc": {"port": port, "service": "nope"}, "periodSeconds": 1, "failureThreshold": 2}
    }]});
    cx.create(&pod("unknown").namespace(ns).on_node(node).spec(unknown).build()).await?;
    wait_for(
        "unknown restarted by its liveness probe",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let p = cx.pods(ns).get("unknown").await?;
            Ok(container_state(&p, "main").filter(|c| c.restart_count >= 1).map(|_| ()))
        },
    )
    .await?;
    let events = events_of(&cx, ns, "unknown").await?;
    let liveness = events
        .iter()
        .filter_map(|e| e.message.as_deref())
        .find(|m| m.starts_with("Liveness probe failed"))
        .context("no Liveness probe failed Event")?;
    ensure!(
        liveness
            == "Liveness probe failed: error: health rpc probe failed: rpc error: code = 5 desc = unknown service",
        "{liveness:?}"
    );
    Ok(())
}

/// A busybox shell line that serves HTTP on 8080 (`httpd`) with one CGI script,
/// `/cgi-bin/<script>`, running `body` (`$QUERY_STRING` is the query) and answering `ok`.
fn cgi_server(script: &str, body: &str) -> String {
    format!(
        "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\n{body}\\nprintf \"Content-Type: text/plain\\\\r\\\\n\\\\r\\\\nok\\\\n\"\\n' > /www/cgi-bin/{script} && chmod +x /www/cgi-bin/{script} && exec httpd -f -p 8080 -h /www"
    )
}

/// Lifecycle hooks in real containers (docker), checked as the conformance suite checks them
/// (`test/e2e/common/node/lifecycle_hook.go`): a handler pod logs each request it gets; a pod
/// with hooks reaches it from an `exec` hook (wget in the container) and from an `httpGet` hook
/// (to the pod's own address, where a native sidecar forwards it). postStart hooks of both kinds
/// run once the containers start, preStop hooks of both kinds when the pod is deleted, before
/// its containers are stopped. A postStart hook that fails kills its container: with
/// `restartPolicy: Never` the pod fails with 137, and `kubectl events` shows
/// `FailedPostStartHook`. Deleting a pod whose preStop hook sleeps longer than the deletion's
/// grace period takes the grace period, not the sleep.
pub(crate) async fn lifecycle_hooks(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-hooks", "e2e-hooks");
    let _vk = cx.docker_node_and_namespace(node, ns).await?;
    let image = vk_tests::BUSYBOX;
    // The handler: each request's query, as a line of its log (its PID 1's stdout).
    let echo = cgi_server("echo", "echo \"hook $QUERY_STRING\" > /proc/1/fd/1");
    let handler = pod("handler")
        .namespace(ns)
        .on_node(node)
        .spec(serde_json::json!({"containers": [
            {"name": "echo", "image": image, "command": ["sh", "-c", echo]}
        ]}))
        .build();
    docker::create(&cx, &handler).await?;
    let handler = cx.wait_phase(ns, "handler", "Running", Duration::from_secs(90)).await?;
    let ip = handler.status.and_then(|s| s.pod_ip).context("the handler's podIP")?;
    let hit = |q: &str| format!("wget -q -O- http://{ip}:8080/cgi-bin/echo?{q}");

    let forward = cgi_server(
        "fwd",
        &format!("wget -q -O /dev/null http://{ip}:8080/cgi-bin/echo?$QUERY_STRING"),
    );
    // Containers that end on SIGTERM (a shell as PID 1 ignores it otherwise).
    let idle = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"];
    let http_hook = |q: &str| serde_json::json!({"httpGet": {"path": format!("/cgi-bin/fwd?{q}"), "port": 8080}});
    let exec_hook = |q: &str| serde_json::json!({"exec": {"command": ["sh", "-c", hit(q)]}});
    let hooked = pod("hooked")
        .namespace(ns)
        .on_node(node)
        .grace(15)
        .spec(serde_json::json!({
            "initContainers": [{"name": "fwd", "image": image, "restartPolicy": "Always",
                "command": ["sh", "-c", forward],
                "startupProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}],
            "containers": [
                {"name": "a", "image": image, "command": idle,
                 "lifecycle": {"postStart": http_hook("poststart-http"), "preStop": exec_hook("prestop-exec")}},
                {"name": "b", "image": image, "command": idle,
                 "lifecycle": {"postStart": exec_hook("poststart-exec"), "preStop": http_hook("prestop-http")}}
            ]}))
        .build();
    docker::create(&cx, &hooked).await?;
    let failing = pod("failing")
        .namespace(ns)
        .on_node(node)
        .restart("Never")
        .spec(serde_json::json!({"containers": [
            {"name": "main", "image": image, "command": ["sleep", "3600"],
             "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "exit 3"]}}}}
        ]}))
        .build();
    docker::create(&cx, &failing).await?;
    let sleepy = pod("sleepy")
        .namespace(ns)
        .on_node(node)
        .grace(100)
        .spec(serde_json::json!({"containers": [
            {"name": "main", "image": image, "command": idle,
             "lifecycle": {"preStop": {"sleep": {"seconds": 60}}}}
        ]}))
        .build();
    docker::create(&cx, &sleepy).await?;

    let handler_log = || cx.stack.kubectl(&["logs", "-n", ns, "handler"]);
    cx.wait_phase(ns, "hooked", "Running", Duration::from_secs(90)).await?;
    wait_for(
        "both postStart hooks",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let log = handler_log()?;
            Ok((log.contains("hook poststart-http") && log.contains("hook poststart-exec"))
                .then_some(()))
        },
    )
    .await?;
    ensure!(!handler_log()?.contains("prestop"), "a preStop hook ran early: {}", handler_log()?);
    // Deleting the pod runs both preStop hooks while the sidecar still forwards.
    cx.pods(ns).delete("hooked", &kube::api::DeleteParams::default()).await?;
    wait_for("both preStop hooks", Duration::from_secs(30), Duration::from_millis(500), || async {
        let log = handler_log()?;
        Ok((log.contains("hook prestop-http") && log.contains("hook prestop-exec")).then_some(()))
    })
    .await?;
    gone(&cx, ns, "hooked", Duration::from_secs(40)).await?;
    println!("handler log:\n{}", handler_log()?);

    // The failed postStart hook: the container killed, the Never pod Failed, the Event.
    let failed = cx.wait_phase(ns, "failing", "Failed", Duration::from_secs(90)).await?;
    let main = container_state(&failed, "main").context("failing's main")?;
    let term = main.state.and_then(|s| s.terminated).context("main not terminated")?;
    ensure!(term.exit_code == 137, "main ended with {} ({:?})", term.exit_code, term.reason);
    ensure!(main.restart_count == 0, "a Never container restarted");
    let events = cx.stack.kubectl(&["events", "-n", ns, "--for", "pod/failing"])?;
    ensure!(
        events.contains("FailedPostStartHook") && events.contains("PostStartHook failed"),
        "kubectl events: {events}"
    );

    // A preStop sleep longer than the deletion's grace: the grace period bounds it.
    cx.wait_phase(ns, "sleepy", "Running", Duration::from_secs(90)).await?;
    let asked = Instant::now();
    cx.pods(ns).delete("sleepy", &kube::api::DeleteParams::default().grace_period(5)).await?;
    gone(&cx, ns, "sleepy", Duration::from_secs(40)).await?;
    let took = asked.elapsed();
    println!("sleepy (preStop sleep 60, grace 5) gone after {took:?}");
    ensure!(
        took >= Duration::from_millis(3500),
        "sleepy gone after {took:?}: its preStop did not run"
    );
    ensure!(
        took < Duration::from_secs(30),
        "sleepy gone after {took:?}: the grace did not bound its preStop"
    );
    Ok(())
}

/// Waits until pod `ns/name` and its Nomad job are gone.
async fn gone(cx: &Ctx<'_>, ns: &str, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let what = format!("{name}'s job and pod gone");
    wait_for(&what, timeout, Duration::from_millis(250), || async {
        let job = cx.nomad(&format!("/v1/job/k8s-{ns}_{name}")).await?;
        let pod = cx.pods(ns).get_opt(name).await?;
        Ok((job.is_none() && pod.is_none()).then_some(()))
    })
    .await
}

/// `program` with `args`, stdin piped, stdout and stderr captured, killed when dropped.
fn piped(program: &str, args: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Interactive pods in real containers (docker), as users start them: `kubectl run -i --rm
/// --restart=Never ... -- cmd` with piped input prints the command's output, exits with its exit
/// code and deletes the pod; `kubectl run -it` gives the command a terminal; and a second `kubectl
/// attach -i` to a container whose first session runs is refused with the reason, not given a
/// second copy of the command.
pub(crate) async fn interactive_pods(cx: Ctx<'_>) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let (node, ns) = ("vk-run-i", "e2e-run-i");
    let _vk = cx.docker_node_and_namespace(node, ns).await?;
    let kubectl = cx.stack.peers.kubectl.display().to_string();
    let overrides = serde_json::json!({"apiVersion": "v1", "spec": {
        "nodeSelector": {"kubernetes.io/hostname": node},
        "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}]
    }})
    .to_string();
    let kubeconfig = format!("--kubeconfig={}", cx.stack.admin_kubeconfig.display());
    let run = |name: &str, flags: &[&str], command: &str| -> Vec<String> {
        let mut a: Vec<String> = vec![kubeconfig.clone(), "run".into(), "-n".into(), ns.into()];
        a.extend(flags.iter().map(|f| (*f).to_owned()));
        a.extend(
            ["--rm", "--restart=Never", "--pod-running-timeout=2m", "--image"].map(String::from),
        );
        a.extend([vk_tests::BUSYBOX.to_owned(), "--overrides".into(), overrides.clone()]);
        a.extend([name.to_owned(), "--".into(), "sh".into(), "-c".into(), command.to_owned()]);
        a
    };
    let finish = |child: tokio::process::Child, what: &'static str| async move {
        let out = tokio::time::timeout(Duration::from_secs(150), child.wait_with_output())
            .await
            .with_context(|| format!("{what} still running after 150 s"))??;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{what} exited {:?}: {text}", out.status.code());
        anyhow::Ok((out.status.code(), text))
    };

    // -i: piped input in, output and exit code out, the pod deleted.
    let mut with_input =
        piped(&kubectl, &run("piped", &["-i"], r#"read x; echo "got $x"; exit 3"#)).spawn()?;
    let mut stdin = with_input.stdin.take().context("stdin")?;
    stdin.write_all(b"hello\n").await?;
    drop(stdin);
    let (code, text) = finish(with_input, "kubectl run -i").await?;
    ensure!(text.contains("got hello"), "no output: {text}");
    ensure!(code == Some(3), "kubectl run -i exited {code:?}, the command 3: {text}");
    gone(&cx, ns, "piped", Duration::from_secs(60)).await?;

    // -it: the command has a terminal (kubectl needs one itself: `script` gives it a pty).
    let line = run("term", &["-it"], r#"tty; read x; echo "got $x"; exit 5"#)
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let script_args: Vec<String> =
        ["-qec".to_owned(), format!("{kubectl} {line}"), "/dev/null".into()].into();
    let mut term = piped("script", &script_args).spawn()?;
    let mut stdin = term.stdin.take().context("stdin")?;
    // Typed ahead: the terminal keeps it until the command reads it. stdin stays open until the
    // end (script would end the session at its EOF).
    stdin.write_all(b"typed\r").await?;
    let (code, text) = finish(term, "kubectl run -it").await?;
    drop(stdin);
    ensure!(text.contains("/dev/pts/"), "the command had no terminal: {text}");
    ensure!(text.contains("got typed"), "the typed line did not arrive: {text}");
    ensure!(code == Some(5), "kubectl run -it exited {code:?}, the command 5: {text}");
    gone(&cx, ns, "term", Duration::from_secs(60)).await?;

    // One session per container: a second attach while the first runs is refused.
    let held = pod("held")
        .namespace(ns)
        .on_node(node)
        .restart("Never")
        .spec(serde_json::json!({"containers": [{"name": "main", "image": vk_tests::BUSYBOX,
            "stdin": true, "command": ["sh", "-c", "read x; echo \"first $x\""]}]}))
        .build();
    docker::create(&cx, &held).await?;
    cx.wait_phase(ns, "held", "Running", Duration::from_secs(90)).await?;
    let mut attach: Vec<String> = vec![kubeconfig.clone()];
    attach.extend(["attach", "-i", "-n", ns, "held", "-c", "main"].map(String::from));
    let mut first = piped(&kubectl, &attach).spawn()?;
    let mut first_in = first.stdin.take().context("stdin")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let second = piped(&kubectl, &attach).spawn()?;
    let (code, text) = finish(second, "a second kubectl attach -i").await?;
    ensure!(code != Some(0), "the second attach succeeded: {text}");
    ensure!(text.contains("took its stdin from an earlier attach"), "{text}");
    first_in.write_all(b"one\n").await?;
    drop(first_in);
    let (_, text) = finish(first, "the first kubectl attach -i").await?;
    ensure!(text.contains("first one"), "the first session's output: {text}");
    let done = cx.wait_phase(ns, "held", "Succeeded", Duration::from_secs(60)).await?;
    let main = container_state(&done, "main").context("held's main")?;
    let term = main.state.and_then(|s| s.terminated).context("not terminated")?;
    ensure!(term.exit_code == 0, "held's main ended {}", term.exit_code);
    Ok(())
}
