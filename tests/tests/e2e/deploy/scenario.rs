//! What each instance of the test goes through: the inputs and identities its pod uses, the
//! checks of [`Check`] in order, and what only the controls check.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as K8sEvent, Node, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};
use vk_tests::deploy::Check;
use vk_tests::wait_for;

use super::manifests::volume_dir;
use super::{DEPLOY_NS, Instance, NODE_DEPLOY_NS, Outcome, PODS_NS};
use crate::{Ctx, alloc_file, current_alloc, p_sa_volume};

/// After its checks passed: the node-identity instance is `system:node:<node>` to the API
/// server (the client certificate it bootstrapped into its cert-dir volume), and, its pod
/// deleted, it is refused the Secret that pod read while the pods of the other nodes still use it
/// (the Node authorizer: "no relationship found").
pub(super) async fn node_identity_extras(cx: &Ctx<'_>, node: &str) -> anyhow::Result<()> {
    let cert = volume_dir(cx, NODE_DEPLOY_NS, "pki").join("kubelet-client-current.pem");
    let kubeconfig = cx.stack.dir.join("deploy-node-identity.kubeconfig");
    cx.stack.certificate_kubeconfig(&kubeconfig, &cert, &cert)?;
    let kc = format!("--kubeconfig={}", kubeconfig.display());
    let who: Value =
        serde_json::from_str(&cx.stack.kubectl(&[&kc, "auth", "whoami", "-o", "json"])?)?;
    ensure!(
        who["status"]["userInfo"]["username"] == format!("system:node:{node}"),
        "the bootstrapped identity is {who}"
    );
    let refused = cx.stack.kubectl(&[&kc, "get", "secret", "app-secret", "-n", PODS_NS]);
    let refused = refused.err().map(|e| format!("{e:#}")).unwrap_or_default();
    ensure!(
        refused.contains("Forbidden") && refused.contains("no relationship found"),
        "the node read a Secret none of its pods uses: {refused:?}"
    );
    println!("node identity: {node} is system:node:{node}, refused a Secret of other nodes' pods");
    Ok(())
}

/// What the pods read (a ConfigMap, a Secret, a Service for service links), and a ServiceAccount
/// allowed to call kubelet APIs (`system:kubelet-api-admin`) for the TokenReview check; returns
/// its token.
pub(super) async fn inputs_and_identities(cx: &Ctx<'_>) -> anyhow::Result<String> {
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config", "namespace": PODS_NS},
         "data": {"mode": "fast"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-secret", "namespace": PODS_NS},
         "stringData": {"password": "s3cr3t"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": PODS_NS},
         "spec": {"ports": [{"port": 80}]}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "kubelet-caller", "namespace": DEPLOY_NS}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "e2e-deploy-kubelet-caller"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:kubelet-api-admin"},
         "subjects": [{"kind": "ServiceAccount", "name": "kubelet-caller", "namespace": DEPLOY_NS}]},
    ]});
    let path = cx.stack.dir.join("rbac-inputs.json");
    std::fs::write(&path, objects.to_string())?;
    cx.stack.kubectl(&["apply", "-f", &path.display().to_string()])?;
    let token = cx.stack.kubectl(&["create", "token", "kubelet-caller", "-n", DEPLOY_NS])?;
    Ok(token.trim().to_owned())
}

/// The pod each node runs: env from the ConfigMap and the Secret, two optional ConfigMaps that do
/// not exist (the same Event reason twice), service links (on by default), and the projected
/// service-account token volume the API server adds.
fn test_pod(name: &str, node: &str) -> anyhow::Result<Pod> {
    let late = late_service(node).to_uppercase().replace('-', "_");
    let script = format!(
        "echo \"MODE=$MODE\"; echo \"PASS=$PASS\"; \
        echo \"KUBERNETES_SERVICE_HOST=$KUBERNETES_SERVICE_HOST\"; \
        echo \"WEB_SERVICE_PORT=$WEB_SERVICE_PORT\"; echo \"LATE=${late}_SERVICE_PORT\"; \
        echo started; sleep 3600"
    );
    let optional = |n: &str| {
        json!({"name": format!("OPT_{n}"), "valueFrom": {"configMapKeyRef":
            {"name": format!("absent-{n}"), "key": "k", "optional": true}}})
    };
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": PODS_NS,
                     "annotations": {"nomad.hashicorp.com/priority": "70"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": "busybox", "command": ["sh", "-c", script],
                // Small, so that twenty of them fit on the shared dev agent beside what the
                // other tests left running (Nomad's default is 100 MHz and 300 MB a task).
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                "env": [
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "mode"}}},
                    {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "password"}}},
                    optional("1"), optional("2"),
                ],
            }],
        },
    }))?)
}

/// The Service each instance's node sees created after it listed the Services.
fn late_service(node: &str) -> String {
    format!("late-{node}")
}

/// Runs the checks in order on one instance; stops at the first that fails (an ablated instance
/// then stops). Errors are for what is not a check (kubectl refusing to create the pod, the
/// control's extra assertions).
pub(super) async fn scenario(
    cx: &Ctx<'_>,
    i: &Instance,
    caller_token: &str,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let start = Instant::now();
    let mut vk = i.start(cx)?;
    let leases: Api<Lease> = Api::namespaced(cx.client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(cx.client.clone());
    let pods = cx.pods(PODS_NS);
    let every = Duration::from_millis(300);
    macro_rules! check {
        ($check:expr, $timeout:expr, $probe:expr) => {{
            let what = format!("{} `{}`", i.node, $check.name());
            match wait_for(&what, Duration::from_secs($timeout), every, $probe).await {
                Ok(v) => {
                    out.passed.push(($check, start.elapsed()));
                    v
                }
                Err(e) => {
                    out.failed = Some(($check, format!("{e:#}")));
                    return Ok(out);
                }
            }
        }};
    }

    check!(Check::NodeRegistered, 20, || async { Ok(nodes.get_opt(&i.node).await?.map(|_| ())) });
    let first_renewal = check!(Check::Lease, 20, || async {
        Ok(leases.get_opt(&i.node).await?.map(|l| l.spec.and_then(|s| s.renew_time)))
    });
    check!(Check::NodeStatus, 20, || async {
        let Some(n) = nodes.get_opt(&i.node).await? else { return Ok(None) };
        let created = n.metadata.creation_timestamp.clone().map(|t| t.0);
        let ready = n.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().find(|c| {
            c.type_ == "Ready"
                && c.status == "True"
                && c.last_heartbeat_time.as_ref().map(|t| t.0) > created
        });
        Ok(ready.map(|_| ()))
    });
    let readyz = format!("http://127.0.0.1:{}/readyz", i.metrics_port);
    check!(Check::PodsListed, 20, || async {
        Ok(cx.http.get(&readyz).send().await?.status().is_success().then_some(()))
    });

    // A Service made now, after the node listed the Services: only their watch shows it.
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": late_service(&i.node), "namespace": PODS_NS},
        "spec": {"ports": [{"port": 8080}]}});
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(cx.client.clone(), PODS_NS)
        .create(&PostParams::default(), &serde_json::from_value(svc)?)
        .await?;
    pods.create(&PostParams::default(), &test_pod(&i.pod, &i.node)?).await?;
    let running = check!(Check::PodRunning, 60, || async {
        let p = pods.get(&i.pod).await?;
        let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        Ok((phase == "Running").then_some(p))
    });

    let events: Api<K8sEvent> = Api::namespaced(cx.client.clone(), PODS_NS);
    let event = || async {
        let list = events.list(&ListParams::default()).await?;
        anyhow::Ok(list.items.into_iter().find(|e| {
            e.involved_object.name.as_deref() == Some(i.pod.as_str())
                && e.reason.as_deref() == Some("OptionalConfigMapNotFound")
                && e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("kubelet")
        }))
    };
    check!(Check::Event, 20, || async { Ok(event().await?.map(|_| ())) });
    check!(Check::EventSeries, 15, || async {
        let count = event().await?.and_then(|e| e.count);
        Ok((count >= Some(2)).then_some(()))
    });

    let logs = check!(Check::Logs, 20, || async {
        let out = cx.stack.kubectl(&["logs", "-n", PODS_NS, &i.pod])?;
        ensure!(
            !out.contains("started") || out.lines().any(|l| l == "LATE=8080"),
            "the Service made after the start is missing from the pod's environment:\n{out}"
        );
        Ok(out.contains("started").then_some(out))
    });
    if i.without.is_none() {
        control_extras(cx, i, &running, &logs).await?;
        // The Lease is renewed (every 10 s), not only created.
        wait_for("the Lease renewed", Duration::from_secs(20), every, || async {
            let now = leases.get(&i.node).await?.spec.and_then(|s| s.renew_time);
            Ok((now.as_ref().map(|t| t.0) > first_renewal.as_ref().map(|t| t.0)).then_some(()))
        })
        .await?;
    }

    let kubelet = reqwest::Client::builder().danger_accept_invalid_certs(true).build()?;
    let url = format!("https://127.0.0.1:{}/pods", i.kubelet_port);
    check!(Check::TokenReview, 15, || async {
        let r = kubelet.get(&url).bearer_auth(caller_token).send().await?;
        let status = r.status();
        ensure!(status.is_success(), "GET /pods with a bearer token: {status}");
        Ok(Some(()))
    });

    cx.stack.kubectl(&["delete", "pod", "-n", PODS_NS, &i.pod, "--wait=false"])?;
    check!(Check::PodDeleted, 30, || async {
        Ok(pods.get_opt(&i.pod).await?.is_none().then_some(()))
    });

    // A restart finds its Node registered: it must read it back (its UID owns the Lease).
    vk.kill();
    cx.stack.kubectl(&["delete", "lease", "-n", "kube-node-lease", &i.node])?;
    let restarted = Instant::now();
    let _vk = i.start(cx)?;
    check!(Check::LeaseAfterRestart, 25, || async {
        Ok(leases.get_opt(&i.node).await?.map(|_| ()))
    });
    if i.without.is_none() {
        println!("control: the Lease was back {:?} after the restart", restarted.elapsed());
    }
    Ok(out)
}

/// What only the control checks: the pod's environment, its projected token authenticating as
/// the pod's ServiceAccount, and `kubectl exec` through the API server. (The caller then waits
/// for the Lease to be renewed.)
async fn control_extras(
    cx: &Ctx<'_>,
    i: &Instance,
    running: &Pod,
    logs: &str,
) -> anyhow::Result<()> {
    let svc: Value = serde_json::from_str(
        &cx.stack.kubectl(&["get", "service", "web", "-n", PODS_NS, "-o", "json"])?,
    )?;
    ensure!(svc["spec"]["clusterIP"].is_string(), "service web has no clusterIP");
    for want in
        ["MODE=fast", "PASS=s3cr3t", "KUBERNETES_SERVICE_HOST=10.96.0.1", "WEB_SERVICE_PORT=80"]
    {
        ensure!(logs.lines().any(|l| l == want), "{want} not in the pod's output:\n{logs}");
    }
    let job = cx.nomad(&format!("/v1/job/k8s-{PODS_NS}_{}", i.pod)).await?.context("no job")?;
    ensure!(
        job["Priority"] == 70,
        "the job's priority is {}, not the 70 the rule allows",
        job["Priority"]
    );
    let volume = p_sa_volume(running).context("no kube-api-access volume")?;
    let alloc = current_alloc(cx, &format!("k8s-{PODS_NS}_{}", i.pod)).await?;
    let token = alloc_file(cx, &alloc, &format!("alloc/volumes/{volume}/token"))
        .await?
        .context("no token file")?;
    let who = cx.stack.whoami(&token).await?;
    ensure!(who == format!("system:serviceaccount:{PODS_NS}:default"), "the pod's token is {who}");
    let exec = cx.stack.kubectl(&[
        "exec",
        "-n",
        PODS_NS,
        &i.pod,
        "-c",
        "main",
        "--",
        "sh",
        "-c",
        "echo exec-$((6*7))",
    ])?;
    ensure!(exec.trim() == "exec-42", "kubectl exec: {exec:?}");
    Ok(())
}
