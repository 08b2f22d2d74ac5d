//! A pod's life on Nomad: run, exit codes, names, refusals, inputs and volumes, service-account
//! tokens, probes, lifecycle hooks, Nomad namespaces, pushed status, missing inputs and the
//! corpus of pods the node cannot run.

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

/// A pod with an unsupported volume gets ProviderFailed, a message naming the field, and a
/// Warning Event, while a good pod beside it runs.
pub(crate) async fn untranslatable_pod(cx: Ctx<'_>) -> anyhow::Result<()> {
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

/// The common pod surface end to end: env from a ConfigMap and a Secret (`env`, `envFrom` with a
/// prefix, `$(VAR)` expansion), the downward API (`status.podIP` included), ConfigMap, Secret and
/// downward API volumes, an emptyDir shared by two containers, two init containers run in order
/// (the second reads what the first wrote), and the service-account token volume, whose token
/// authenticates against the API server. Then the ConfigMap is edited: the mounted file follows
/// within 60 s without a container restart, and the environment does not change.
pub(crate) async fn pod_inputs_and_volumes(cx: Ctx<'_>) -> anyhow::Result<()> {
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
    // Deleted, the pod takes its Variables with it, in one pass (Nomad answers a Variable's
    // DELETE with an empty body, which once read as a failure and cost a retry).
    let vars = format!("/v1/vars?prefix=nomad/jobs/{job_id}");
    let held = cx.nomad(&vars).await?.unwrap_or_default();
    ensure!(held.as_array().is_some_and(|v| !v.is_empty()), "no Variable of {job_id}: {held}");
    cx.pods(ns).delete("inputs", &Default::default()).await?;
    wait_for(
        "the pod object gone",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async { Ok(cx.pods(ns).get_opt("inputs").await?.is_none().then_some(())) },
    )
    .await?;
    let left = cx.nomad(&vars).await?.unwrap_or_default();
    ensure!(left.as_array().is_some_and(Vec::is_empty), "Variables left behind: {left}");
    let log = std::fs::read_to_string(&vk.log)?;
    let failed: Vec<&str> =
        log.lines().filter(|l| l.contains("sync failed") && l.contains("why=Purge")).collect();
    ensure!(failed.is_empty(), "purging the pod failed:\n{}", failed.join("\n"));
    Ok(())
}

/// A projected service-account token is renewed before it expires, as a kubelet renews it (at
/// 80 % of its life): with the shortest lifetime the API server grants (10 min), the file the
/// container reads at its `mountPath` (docker: the task's in-memory `secrets/`, bound there)
/// holds a new, valid token within 9 minutes, and the container was never restarted.
pub(crate) async fn token_renewal(cx: Ctx<'_>) -> anyhow::Result<()> {
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

/// A missing mandatory ConfigMap key keeps the pod from being created (no job, a waiting container
/// and the upstream Event) until the ConfigMap exists; a missing optional one gives an Event and
/// the pod runs.
pub(crate) async fn missing_inputs(cx: Ctx<'_>) -> anyhow::Result<()> {
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
pub(crate) async fn unsupported_corpus(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-corpus", "e2e-corpus");
    let _vk = cx.node_and_namespace(node, ns).await?;
    let corpus: Vec<Value> = serde_json::from_str(include_str!("../../corpus/unsupported.json"))?;
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
