//! Nomad's ACLs: the least-privilege policy of `deploy/nomad-acl-policy.hcl`, and what breaks
//! without each of its parts (the whole suite runs with that policy's token).

use std::collections::BTreeMap;

#[allow(clippy::wildcard_imports)]
use super::*;
use vk_tests::nomad_acl::{Ablation, ablations, stack_policy};

/// A feature of a node, as the ablation checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Feature {
    /// `BackendUnreachable` is `False`: the node reads its capacity.
    Capacity,
    /// A pod whose env reads a Secret runs.
    Run,
    /// `kubectl logs` of it.
    Logs,
    /// `kubectl exec` into it.
    Exec,
    /// A container whose liveness probe fails is restarted.
    Restart,
    /// The job of a pod deleted while the node was down is stopped when it starts again.
    Orphans,
}

/// What one node could and could not do: each feature, `Ok` or why not.
type Outcome = BTreeMap<Feature, Result<(), String>>;

/// The features that fail without `removed` (and only those): the README's table.
fn breaks(removed: &str) -> &'static [Feature] {
    use Feature::*;
    match removed {
        "list-jobs" => &[Orphans],
        "read-job" | "submit-job" | "variables" => &[Run, Logs, Exec, Restart, Orphans],
        "read-fs" => &[Logs],
        "alloc-exec" | "alloc-node-exec" => &[Exec],
        "alloc-lifecycle" => &[Restart],
        "node" => &[Capacity, Run, Logs, Exec, Restart, Orphans],
        _ => &[],
    }
}

/// Runs the features on node `node` (namespace `ns`), whose virtual kubelet holds the token of
/// one policy.
async fn try_features(cx: &Ctx<'_>, node: &str, ns: &str) -> anyhow::Result<Outcome> {
    use Feature::*;
    let mut out = Outcome::new();
    let unreachable = wait_for(
        "the node's first status",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async { node_condition(cx, node, "BackendUnreachable").await },
    )
    .await;
    out.insert(
        Capacity,
        match unreachable {
            Ok(c) if c.status == "False" => Ok(()),
            Ok(c) => {
                Err(format!("BackendUnreachable={}: {}", c.status, c.message.unwrap_or_default()))
            }
            Err(e) => Err(format!("{e:#}")),
        },
    );
    let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "acl-secret", "namespace": ns}, "stringData": {"password": "s3cret"}});
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(cx.client.clone(), ns);
    secrets.create(&PostParams::default(), &serde_json::from_value(secret)?).await?;
    let p = pod("p").namespace(ns).on_node(node).grace(1).spec(serde_json::json!({"containers": [{
        "name": "main", "image": vk_tests::BUSYBOX, "command": ["sh", "-c", "echo hello; exec sleep 600"],
        "env": [{"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "acl-secret", "key": "password"}}}]}]}));
    cx.create(&p.build()).await?;
    let live =
        pod("live").namespace(ns).on_node(node).grace(1).spec(serde_json::json!({"containers": [{
        "name": "main", "image": vk_tests::BUSYBOX, "command": ["sleep", "600"],
        "livenessProbe": {"tcpSocket": {"port": 1}, "periodSeconds": 1, "failureThreshold": 1}}]}));
    cx.create(&live.build()).await?;
    let running = cx.wait_phase(ns, "p", "Running", Duration::from_secs(60)).await;
    if let Err(e) = running {
        let events = events_of(cx, ns, "p").await.unwrap_or_default();
        let said: Vec<String> = events.iter().filter_map(|e| e.message.clone()).collect();
        let why = format!("{e:#}; events: {said:?}");
        for f in [Run, Logs, Exec, Restart, Orphans] {
            out.insert(f, Err(why.clone()));
        }
        return Ok(out);
    }
    out.insert(Run, Ok(()));
    let logs = wait_for(
        "hello in the log",
        Duration::from_secs(20),
        Duration::from_millis(500),
        || async {
            let req = http::Request::get(format!("/api/v1/namespaces/{ns}/pods/p/log"))
                .body(Vec::new())?;
            Ok(cx.client.request_text(req).await.ok().filter(|t| t.contains("hello")))
        },
    )
    .await;
    out.insert(Logs, logs.map(|_| ()).map_err(|e| format!("{e:#}")));
    let exec = cx.stack.kubectl(&["exec", "-n", ns, "p", "--", "echo", "ok"]);
    out.insert(
        Exec,
        match exec {
            Ok(o) if o.trim() == "ok" => Ok(()),
            Ok(o) => Err(format!("exec said {o:?}")),
            Err(e) => Err(format!("{e:#}")),
        },
    );
    let restarted =
        wait_for("live restarted", Duration::from_secs(45), Duration::from_millis(500), || async {
            let p = cx.pods(ns).get("live").await?;
            Ok(container_state(&p, "main").filter(|c| c.restart_count > 0).map(|_| ()))
        })
        .await;
    out.insert(Restart, restarted.map_err(|e| format!("{e:#}")));
    Ok(out)
}

/// With Nomad's ACLs on, a node holding a token of `deploy/nomad-acl-policy.hcl` (with
/// `alloc-node-exec`, its pods running on raw_exec) reads its capacity, runs a pod reading a
/// Secret, serves its logs and exec, restarts a container its liveness probe fails, and stops
/// the job of a pod deleted while it was down once it starts again; with
/// each capability (and the `variables` and `node` rules) taken out in turn, exactly the
/// features that need it fail (`alloc-exec` shown on a docker node, `alloc-node-exec` on
/// raw_exec). Eleven nodes side by side on a stack of its own.
pub(crate) async fn nomad_acl_policy(_shared: Ctx<'_>) -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions {
        docker: true,
        nomad_acl: true,
        ..StackOptions::default()
    })
    .await?;
    let cx = Ctx { stack: &stack, client: stack.client().await?, http: stack.nomad_http() };
    let policy = stack_policy()?;
    let mut variants = vec![Ablation { removed: "nothing", policy: policy.clone() }];
    variants.extend(ablations(&policy)?);
    let (mut nodes, mut all_args) = (Vec::new(), Vec::new());
    for v in &variants {
        let (node, ns) = (format!("vk-acl-{}", v.removed), format!("e2e-acl-{}", v.removed));
        let token = stack.policy_token(&format!("vk-without-{}", v.removed), &v.policy).await?;
        let mut args = vec!["--nomad-token".to_owned(), token];
        if v.removed == "alloc-exec" {
            args.extend(["--nomad-driver".to_owned(), "docker".to_owned()]);
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        stack.namespace(&ns).await?;
        nodes.push((stack.virtual_kubelet(&node, &argv)?, node, ns, v.removed));
        all_args.push(args);
    }
    let outcomes =
        futures::future::join_all(nodes.iter().map(|(_, node, ns, _)| try_features(&cx, node, ns)))
            .await;
    let mut outcomes = outcomes.into_iter().collect::<anyhow::Result<Vec<Outcome>>>()?;
    // Orphans: every node stopped, the pod `live` deleted meanwhile, the node started again.
    let mut restarted = Vec::new();
    for ((vk, node, ns, removed), args) in nodes.into_iter().zip(&all_args) {
        drop(vk);
        let pods: Api<Pod> = Api::namespaced(cx.client.clone(), &ns);
        let _ = pods.delete("live", &kube::api::DeleteParams::default().grace_period(0)).await;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        restarted.push((stack.virtual_kubelet(&node, &args)?, ns, removed));
    }
    let cx = &cx;
    let stopped = futures::future::join_all(restarted.iter().map(|(_, ns, _)| async move {
        let job = format!("/v1/job/k8s-{ns}_live");
        wait_for(
            "the orphan's job stopped",
            Duration::from_secs(30),
            Duration::from_millis(500),
            || async {
                let j = cx.nomad(&job).await?;
                Ok(j.is_none_or(|j| j["Stop"] == true).then_some(()))
            },
        )
        .await
        .map_err(|e| format!("{e:#}"))
    }))
    .await;
    for (outcome, stopped) in outcomes.iter_mut().zip(stopped) {
        if outcome.get(&Feature::Run).is_some_and(Result::is_ok) {
            outcome.insert(Feature::Orphans, stopped);
        }
    }
    let mut wrong = Vec::new();
    for ((_, _, removed), outcome) in restarted.iter().zip(outcomes) {
        let failed: Vec<Feature> =
            outcome.iter().filter(|(_, r)| r.is_err()).map(|(f, _)| *f).collect();
        println!("without {removed}: {failed:?} fail");
        for (f, r) in &outcome {
            if let Err(e) = r {
                println!("  {f:?}: {}", e.lines().next().unwrap_or_default());
            }
        }
        if failed != breaks(removed) {
            wrong.push(format!(
                "without {removed}: {failed:?} fail, expected {:?}",
                breaks(removed)
            ));
        }
    }
    ensure!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

/// Nomad behind an operator's TLS proxy that asks for HTTP basic authentication, reached with
/// Nomad's own variables: `NOMAD_CAPATH` (a directory holding the proxy's CA) and
/// `NOMAD_HTTP_AUTH` (`user:password`). The node reads its capacity, runs a pod with its status
/// pushed by the event stream, and serves its log and exec, every request through the proxy with
/// the credentials (none refused). Without `NOMAD_HTTP_AUTH` the proxy refuses the node (401) and
/// without `NOMAD_CAPATH` the TLS handshake fails: either node says `BackendUnreachable=True`.
pub(crate) async fn nomad_tls_and_http_auth(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-nomad-proxy", "e2e-nomad-proxy");
    let proxy = cx.stack.nomad_tls_proxy("vk:pr0xy pass").await?;
    let capath = cx.stack.dir.join("nomad-proxy-ca");
    std::fs::create_dir_all(&capath)?;
    std::fs::copy(cx.stack.ca_path(), capath.join("proxy-ca.pem"))?;
    let capath = capath.display().to_string();
    let addr = ["--nomad-addr", proxy.url.as_str()];
    let env = [("NOMAD_CAPATH", capath.as_str()), ("NOMAD_HTTP_AUTH", "vk:pr0xy pass")];
    let _vk = cx.stack.virtual_kubelet_with_env(node, &addr, &env)?;
    cx.stack.namespace(ns).await?;
    cx.wait_ready(node, Duration::from_secs(30)).await?;
    let reachable =
        wait_condition(&cx, node, "BackendUnreachable", "False", Duration::from_secs(30));
    reachable.await?;
    let p = pod("p")
        .namespace(ns)
        .on_node(node)
        .grace(1)
        .container("main", &["sh", "-c", "echo through-the-proxy; exec sleep 600"]);
    cx.create(&p.build()).await?;
    cx.wait_phase(ns, "p", "Running", Duration::from_secs(60)).await?;
    let log =
        wait_for("the pod's log", Duration::from_secs(20), Duration::from_millis(250), || async {
            let log = cx.stack.kubectl(&["logs", "-n", ns, "p"])?;
            Ok((!log.is_empty()).then_some(log))
        })
        .await?;
    ensure!(log.trim() == "through-the-proxy", "log {log:?}");
    let exec =
        cx.stack.kubectl(&["exec", "-n", ns, "p", "--", "echo", "exec-through-the-proxy"])?;
    ensure!(exec.trim() == "exec-through-the-proxy", "exec {exec:?}");
    let (let_through, refused) = (proxy.authorized(), proxy.refused());
    ensure!(let_through > 0 && refused == 0, "proxy: {let_through} let through, {refused} refused");
    println!("the node made {let_through} requests through the proxy, none refused");

    // Each variable is needed: without the credentials, refused; without the CA, no TLS.
    let no_auth = [("NOMAD_CAPATH", capath.as_str())];
    let _a = cx.stack.virtual_kubelet_with_env("vk-proxy-no-auth", &addr, &no_auth)?;
    let _b = cx.stack.virtual_kubelet_with_env(
        "vk-proxy-no-ca",
        &addr,
        &[("NOMAD_HTTP_AUTH", "vk:pr0xy pass")],
    )?;
    for n in ["vk-proxy-no-auth", "vk-proxy-no-ca"] {
        let c =
            wait_condition(&cx, n, "BackendUnreachable", "True", Duration::from_secs(60)).await?;
        println!("{n}: BackendUnreachable: {}", c.message.unwrap_or_default());
    }
    ensure!(proxy.refused() > 0, "the node without NOMAD_HTTP_AUTH was never refused");
    Ok(())
}
