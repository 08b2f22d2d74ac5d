//! `deploy/` as the test runs it: each kustomization applied through an overlay of the test's
//! own, its Deployment's container read as a kubelet would start it, and the node-identity
//! instance made from `deploy/` itself.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use serde_json::{Value, json};
use vk_tests::deploy;
use vk_tests::free_port;

use super::{Instance, Mode, NAME, NODE_CONTROL, NODE_DEPLOY_NS};
use crate::Ctx;

/// `$(VAR)` references in a container argument replaced from `vars`, as the kubelet does.
fn expand(arg: &str, vars: &[(String, String)]) -> String {
    vars.iter().fold(arg.to_owned(), |a, (k, v)| a.replace(&format!("$({k})"), v))
}

/// `kubectl apply -k` of an overlay of `mode`'s kustomization; returns the Deployment as the API
/// server stored it and the Secret's data (decoded) as environment variables.
pub(super) async fn apply_deploy(
    cx: &Ctx<'_>,
    mode: Mode,
) -> anyhow::Result<(Value, Vec<(String, String)>)> {
    let ns = mode.namespace();
    let overlay = cx.stack.dir.join(format!("deploy-overlay-{ns}"));
    std::fs::create_dir_all(&overlay)?;
    // kustomize takes bases by relative path only.
    let base = relative(&overlay.canonicalize()?, &mode.dir().canonicalize()?);
    let patch = |ops: Value| serde_json::to_string(&ops);
    let mut patches = vec![
        json!({"target": {"kind": "Secret", "name": NAME}, "patch": patch(json!([
            {"op": "replace", "path": "/stringData/NOMAD_ADDR", "value": cx.stack.nomad_addr},
            {"op": "replace", "path": "/stringData/NOMAD_TOKEN", "value": cx.stack.node_token().unwrap_or_default()}
        ]))?}),
        json!({"target": {"kind": "Deployment", "name": NAME}, "patch": patch(json!([
            {"op": "test", "path": "/spec/template/spec/containers/0/env/0/name", "value": "NODE_NAME"},
            {"op": "replace", "path": "/spec/template/spec/containers/0/env/0/value", "value": mode.node()}
        ]))?}),
    ];
    if mode == Mode::NodeIdentity {
        // The node name also names the one binding given to this node alone.
        patches.push(json!({"target": {"kind": "ClusterRoleBinding", "name": "virtual-kubelet-nomad:namespaces"},
            "patch": patch(json!([
                {"op": "test", "path": "/subjects/0/name", "value": "system:node:nomad"},
                {"op": "replace", "path": "/subjects/0/name", "value": format!("system:node:{}", mode.node())}
            ]))?}));
    }
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base.display().to_string()],
        "namespace": ns,
        "replicas": [{"name": NAME, "count": 0}],
        "patches": patches,
    });
    // JSON is YAML.
    std::fs::write(overlay.join("kustomization.yaml"), kustomization.to_string())?;
    let applied = cx.stack.kubectl(&["apply", "-k", &overlay.display().to_string()])?;
    for kind in mode.applied().into_iter().chain([format!("namespace/{ns}")]) {
        ensure!(applied.contains(&kind), "{kind} not applied:\n{applied}");
    }
    let deployment: Value = serde_json::from_str(&cx.stack.kubectl(&[
        "get",
        "deployment",
        NAME,
        "-n",
        ns,
        "-o",
        "json",
    ])?)?;
    ensure!(deployment["spec"]["replicas"] == 0, "replicas: {}", deployment["spec"]["replicas"]);
    let mut env = Vec::new();
    for (k, v) in object_data(cx, "secret", NAME, ns)? {
        env.push((k, String::from_utf8(v)?));
    }
    ensure!(
        env.iter().any(|(k, v)| k == "NOMAD_ADDR" && *v == cx.stack.nomad_addr),
        "the Secret does not give NOMAD_ADDR: {env:?}"
    );
    Ok((deployment, env))
}

/// The data of a Secret or ConfigMap (`kind`), read from the API server, values decoded.
fn object_data(
    cx: &Ctx<'_>,
    kind: &str,
    name: &str,
    ns: &str,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let object: Value =
        serde_json::from_str(&cx.stack.kubectl(&["get", kind, name, "-n", ns, "-o", "json"])?)?;
    let data = object["data"].as_object().with_context(|| format!("{kind} {name} has no data"))?;
    data.iter()
        .map(|(k, v)| {
            let v = v.as_str().unwrap_or_default();
            let bytes = match kind {
                "secret" => base64::engine::general_purpose::STANDARD.decode(v)?,
                _ => v.as_bytes().to_vec(),
            };
            Ok((k.clone(), bytes))
        })
        .collect()
}

/// Where the test keeps volume `volume` of the Deployment in namespace `ns`.
pub(super) fn volume_dir(cx: &Ctx<'_>, ns: &str, volume: &str) -> PathBuf {
    cx.stack.dir.join("deploy-volumes").join(ns).join(volume)
}

/// The Deployment's container as a kubelet would start it: its `env` (values, and the pod IP as
/// 127.0.0.1), its volumes made (Secret and ConfigMap volumes from the API server, emptyDirs
/// empty) in directories of the test, and its args with `$(VAR)` expanded and each mount path
/// replaced by that directory. Returns the args, the variables and the mounts (mount path, dir).
#[allow(clippy::type_complexity)]
pub(super) fn as_the_kubelet_starts(
    cx: &Ctx<'_>,
    mode: Mode,
    deployment: &Value,
) -> anyhow::Result<(Vec<String>, Vec<(String, String)>, Vec<(String, PathBuf)>)> {
    let ns = mode.namespace();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let mut vars: Vec<(String, String)> = Vec::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default().to_owned();
        if let Some(v) = e["value"].as_str() {
            vars.push((name, v.to_owned()));
        } else if e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP" {
            vars.push((name, "127.0.0.1".into()));
        } else {
            bail!("the Deployment's env {e} is not handled by this test");
        }
    }
    let mut mounts = Vec::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let (name, path) = (m["name"].as_str().unwrap_or_default(), m["mountPath"].as_str());
        let path = path.with_context(|| format!("mount {m} has no mountPath"))?;
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name)
            .with_context(|| format!("no volume {name}"))?;
        let dir = volume_dir(cx, ns, name);
        std::fs::create_dir_all(&dir)?;
        let data = if let Some(secret) = volume["secret"]["secretName"].as_str() {
            object_data(cx, "secret", secret, ns)?
        } else if let Some(config_map) = volume["configMap"]["name"].as_str() {
            object_data(cx, "configmap", config_map, ns)?
        } else if volume["emptyDir"].is_object() {
            Vec::new()
        } else {
            bail!("the Deployment's volume {volume} is not handled by this test");
        };
        for (key, bytes) in data {
            std::fs::write(dir.join(key), bytes)?;
        }
        mounts.push((path.to_owned(), dir));
    }
    let args: Vec<String> = container["args"]
        .as_array()
        .context("the Deployment's container has no args")?
        .iter()
        .map(|a| {
            let arg = expand(a.as_str().unwrap_or_default(), &vars);
            mounts.iter().fold(arg, |a, (path, dir)| a.replace(path, &dir.display().to_string()))
        })
        .collect();
    let node = mode.node();
    ensure!(
        args.windows(2).any(|w| w[0] == "--nodename" && w[1] == node),
        "the Deployment does not name node {node}: {args:?}"
    );
    Ok((args, vars, mounts))
}

/// The instance of `deploy/` itself (node identity): a bootstrap token made from
/// `deploy/bootstrap-token.yaml` (its placeholders replaced, as the operator does) and put in
/// the bootstrap kubeconfig the Secret holds (the in-cluster API server name replaced by the
/// stack's address, which this test's process cannot resolve); the ServiceAccount's token as the
/// pod mounts it (for the leader election's Lease alone).
pub(super) fn node_identity_control(
    cx: &Ctx<'_>,
    deployment: &Value,
    secret: Vec<(String, String)>,
    policy_args: &[String],
) -> anyhow::Result<Instance> {
    let pod = &deployment["spec"]["template"]["spec"];
    ensure!(
        pod["automountServiceAccountToken"] == true,
        "the node-identity Deployment mounts no ServiceAccount token for its leader election"
    );
    let mut random = [0u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut random)?;
    let (id, token_secret) = ("e2edpl", format!("{:016x}", u64::from_le_bytes(random)));
    let template = std::fs::read_to_string(deploy::deploy_dir().join("bootstrap-token.yaml"))?;
    ensure!(template.contains("TOKENID") && template.contains("TOKENSECRETTOKEN"), "{template}");
    let rendered = cx.stack.dir.join("deploy-bootstrap-token.yaml");
    std::fs::write(
        &rendered,
        template.replace("TOKENSECRETTOKEN", &token_secret).replace("TOKENID", id),
    )?;
    cx.stack.kubectl(&["apply", "-f", &rendered.display().to_string()])?;

    let (mut args, vars, mounts) = as_the_kubelet_starts(cx, Mode::NodeIdentity, deployment)?;
    let kubeconfig = args
        .windows(2)
        .find(|w| w[0] == "--bootstrap-kubeconfig")
        .map(|w| PathBuf::from(&w[1]))
        .context("the Deployment gives no --bootstrap-kubeconfig")?;
    let text = std::fs::read_to_string(&kubeconfig)?;
    let (server, placeholder) = ("https://kubernetes.default.svc", "TOKENID.TOKENSECRETTOKEN");
    ensure!(text.contains(server) && text.contains(placeholder), "the kubeconfig: {text}");
    let text = mounts.iter().fold(
        text.replace(server, &cx.stack.apiserver_url)
            .replace(placeholder, &format!("{id}.{token_secret}")),
        |t, (path, dir)| t.replace(path, &dir.display().to_string()),
    );
    std::fs::write(&kubeconfig, text)?;
    // The token the pod gets, used for the leader election's Lease alone.
    let election_token = cx.stack.service_account_dir(NODE_DEPLOY_NS, NAME)?;
    args.extend(policy_args.iter().cloned());
    let mut env = vars;
    env.extend(secret);
    Ok(Instance {
        node: NODE_CONTROL.into(),
        pod: "p-node-identity".into(),
        sa_dir: election_token,
        args,
        env,
        kubelet_port: free_port()?,
        metrics_port: free_port()?,
        without: None,
    })
}

/// `to` relative to directory `from` (both absolute).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}
