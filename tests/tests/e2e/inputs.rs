//! What a pod reads: ConfigMaps, Secrets and the downward API as environment and volumes,
//! emptyDirs and init containers, the service-account token (and its renewal), and inputs that
//! are missing.

#[allow(clippy::wildcard_imports)]
use super::*;

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
