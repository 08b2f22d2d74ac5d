//! The node's identity as a kubelet's (issue 19): TLS bootstrap with a bootstrap token, the
//! Node authorizer confining that identity to its own pods' Secrets, and a serving certificate
//! the cluster signs.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use serde_json::Value;
use vk_tests::fixtures::pod;
use vk_tests::{free_port, wait_for};

use super::Ctx;

/// The RBAC a cluster gives bootstrap tokens and nodes for TLS bootstrap (kubeadm's): bootstrap
/// tokens may create CSRs and have their client CSRs approved; nodes may renew their own.
const BOOTSTRAP_RBAC: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
 {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
  "metadata": {"name": "vk-e2e-bootstrappers-create-csrs"},
  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node-bootstrapper"},
  "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:bootstrappers"}]},
 {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
  "metadata": {"name": "vk-e2e-bootstrappers-approve-node-client-csrs"},
  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:certificates.k8s.io:certificatesigningrequests:nodeclient"},
  "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:bootstrappers"}]},
 {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
  "metadata": {"name": "vk-e2e-nodes-renew-their-client-csrs"},
  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient"},
  "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}]}
]}"#;

/// A node started with only a bootstrap token gets its client certificate
/// (`system:node:<node>`, signed by the cluster's CA) into `--cert-dir` and registers with it;
/// that identity reads the Secret of a pod bound to it (the pod runs with it) and is refused the
/// Secret of a pod bound elsewhere (the Node authorizer); with `--rotate-server-certificates` it
/// asks for a serving certificate, and once an operator approves it (`kubectl certificate
/// approve`), the kubelet port serves it without a restart: a client verifying against the
/// cluster's CA connects, and so does metrics-server, which verifies it (no
/// `--kubelet-insecure-tls`).
pub(crate) async fn node_identity_bootstrap(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-bootstrap", "e2e-bootstrap");
    let (id, secret) = ("e2eboo", "0123456789abcdef");
    let dir = cx.stack.dir.join("bootstrap");
    std::fs::create_dir_all(&dir)?;
    let token_secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "stringData": {"token-id": id, "token-secret": secret, "usage-bootstrap-authentication": "true"},
    });
    let manifests = dir.join("bootstrap.json");
    std::fs::write(&manifests, token_secret.to_string())?;
    cx.stack.kubectl(&["apply", "-f", &manifests.display().to_string()])?;
    std::fs::write(&manifests, BOOTSTRAP_RBAC)?;
    cx.stack.kubectl(&["apply", "-f", &manifests.display().to_string()])?;
    let bootstrap = dir.join("bootstrap.kubeconfig");
    cx.stack.token_kubeconfig(&bootstrap, &format!("{id}.{secret}"))?;
    let cert_dir = dir.join("pki");
    let port = free_port()?;
    let port_arg = port.to_string();
    let _vk = cx.stack.virtual_kubelet_bootstrapped(
        node,
        &bootstrap,
        &cert_dir,
        &["--kubelet-port", &port_arg, "--rotate-server-certificates"],
    )?;
    cx.stack.namespace(ns).await?;
    cx.wait_ready(node, Duration::from_secs(60)).await?;
    let current = cert_dir.join("kubelet-client-current.pem");
    let pem = std::fs::read_to_string(&current).context("the bootstrapped client certificate")?;
    ensure!(pem.contains("PRIVATE KEY") && pem.contains("CERTIFICATE"), "{}", current.display());

    // The Node authorizer: the node's own identity reads what its pods use, and nothing else.
    let node_kubeconfig = dir.join("node.kubeconfig");
    cx.stack.certificate_kubeconfig(&node_kubeconfig, &current, &current)?;
    let as_node = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", node_kubeconfig.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        cx.stack.kubectl(&all)
    };
    let who = as_node(&["auth", "whoami", "-o", "json"])?;
    let who: Value = serde_json::from_str(&who)?;
    ensure!(
        who["status"]["userInfo"]["username"] == format!("system:node:{node}"),
        "the bootstrapped identity is {who}"
    );
    for name in ["mine", "theirs"] {
        cx.stack.kubectl(&[
            "create",
            "secret",
            "generic",
            name,
            "-n",
            ns,
            "--from-literal=word=hello",
        ])?;
    }
    let mut mine = pod("mine")
        .namespace(ns)
        .on_node(node)
        .container("main", &["sh", "-c", "echo $WORD; exec sleep 600"])
        .grace(1)
        .build();
    let mut theirs = pod("theirs")
        .namespace(ns)
        .on_node("vk-elsewhere")
        .container("main", &["sleep", "600"])
        .build();
    for (p, secret) in [(&mut mine, "mine"), (&mut theirs, "theirs")] {
        let c = &mut p.spec.as_mut().context("spec")?.containers[0];
        c.env = Some(vec![serde_json::from_value(serde_json::json!({
            "name": "WORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "word"}}
        }))?]);
    }
    cx.create(&theirs).await?;
    cx.create(&mine).await?;
    cx.wait_phase(ns, "mine", "Running", Duration::from_secs(60)).await?;
    as_node(&["get", "secret", "mine", "-n", ns]).context("the node reading its pod's Secret")?;
    let refused = as_node(&["get", "secret", "theirs", "-n", ns]);
    let refused = refused.err().map(|e| format!("{e:#}")).unwrap_or_default();
    ensure!(
        refused.contains("Forbidden") && refused.contains("no relationship found"),
        "the node read a Secret of a pod bound elsewhere: {refused:?}"
    );

    // The serving certificate: asked for, approved here as an operator would, then served.
    let csr = wait_for(
        "the node's serving CSR",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            let list: Value =
                serde_json::from_str(&cx.stack.kubectl(&["get", "csr", "-o", "json"])?)?;
            Ok(list["items"].as_array().into_iter().flatten().find_map(|c| {
                (c["spec"]["signerName"] == "kubernetes.io/kubelet-serving"
                    && c["spec"]["username"] == format!("system:node:{node}"))
                .then(|| c["metadata"]["name"].as_str().map(str::to_owned))
                .flatten()
            }))
        },
    )
    .await?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(cx.stack.ca_path())?)?;
    let verifying = reqwest::Client::builder()
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false)
        .build()?;
    let url = format!("https://127.0.0.1:{port}/healthz");
    let before = verifying.get(&url).send().await;
    ensure!(before.is_err(), "a self-signed certificate was accepted: {before:?}");
    cx.stack.kubectl(&["certificate", "approve", &csr])?;
    let code = wait_for(
        "the cluster-signed serving certificate",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async { Ok(verifying.get(&url).send().await.ok().map(|r| r.status().as_u16())) },
    )
    .await?;
    ensure!(code == 401, "an anonymous request answered {code}");
    let served = cert_dir.join("kubelet-server-current.pem");
    ensure!(served.exists(), "{} not written", served.display());

    // metrics-server scrapes the node with certificate verification on (the stack's runs with
    // --kubelet-certificate-authority, not --kubelet-insecure-tls): the node's metrics appear.
    let started = std::time::Instant::now();
    cx.stack.start_metrics_server().await?;
    let path = format!("/apis/metrics.k8s.io/v1beta1/nodes/{node}");
    let metrics = wait_for(
        "metrics-server's metrics of the bootstrapped node",
        Duration::from_secs(90),
        Duration::from_secs(2),
        || async { Ok(cx.stack.kubectl(&["get", "--raw", &path]).ok()) },
    )
    .await?;
    let metrics: Value = serde_json::from_str(&metrics)?;
    ensure!(
        metrics["kind"] == "NodeMetrics" && metrics["usage"]["memory"].is_string(),
        "GET {path}: {metrics}"
    );
    println!(
        "bootstrapped {node}: client certificate, Node authorizer, serving CSR {csr} served, \
scraped by a verifying metrics-server after {:?}",
        started.elapsed()
    );
    Ok(())
}
