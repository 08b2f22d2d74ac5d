//! End-to-end test of the deployment manifests (`deploy/`): applied with `kubectl apply -k` to the
//! real API server, then the binary run as their ServiceAccount with the in-cluster
//! configuration, and once per ClusterRole permission with a copy of the role lacking it.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as K8sEvent, Node, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};
use vk_tests::deploy::{self, Check, Permission};
use vk_tests::{Process, free_port, wait_for};

use super::{Ctx, alloc_file, current_alloc, p_sa_volume};

/// Namespace of the kustomization's objects (ServiceAccounts, Secret, Deployment) in this test.
const DEPLOY_NS: &str = "e2e-deploy";
/// Namespace of the pods the nodes run.
const PODS_NS: &str = "e2e-rbac";
/// The ServiceAccount, ClusterRole(Binding), Secret and Deployment names in `deploy/`.
const NAME: &str = "virtual-kubelet-nomad";
/// The node name the test's overlay gives the Deployment.
const CONTROL_NODE: &str = "vk-deploy";
/// Namespace of the kustomization's objects in node-identity mode (`deploy/` itself).
const NODE_DEPLOY_NS: &str = "e2e-deploy-node";
/// The node name the test's overlay of `deploy/` (node identity) gives the Deployment.
const NODE_CONTROL: &str = "vk-deploy-node";

/// The two kustomizations of `deploy/`: how the process authenticates to the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `deploy/service-account/`: the ServiceAccount and its ClusterRole.
    ServiceAccount,
    /// `deploy/` (recommended): a node identity by TLS bootstrap.
    NodeIdentity,
}

impl Mode {
    fn dir(self) -> PathBuf {
        match self {
            Mode::ServiceAccount => deploy::deploy_dir().join("service-account"),
            Mode::NodeIdentity => deploy::deploy_dir(),
        }
    }

    fn namespace(self) -> &'static str {
        match self {
            Mode::ServiceAccount => DEPLOY_NS,
            Mode::NodeIdentity => NODE_DEPLOY_NS,
        }
    }

    fn node(self) -> &'static str {
        match self {
            Mode::ServiceAccount => CONTROL_NODE,
            Mode::NodeIdentity => NODE_CONTROL,
        }
    }

    /// What `kubectl apply -k` must report, beside the namespace.
    fn applied(self) -> Vec<String> {
        let mut out: Vec<String> = [
            "serviceaccount/virtual-kubelet-nomad",
            "secret/virtual-kubelet-nomad",
            "deployment.apps/virtual-kubelet-nomad",
            "networkpolicy.networking.k8s.io/virtual-kubelet-nomad",
        ]
        .map(String::from)
        .into();
        let rbac = "rbac.authorization.k8s.io";
        match self {
            Mode::ServiceAccount => {
                out.push(format!("clusterrole.{rbac}/virtual-kubelet-nomad"));
                out.push(format!("clusterrolebinding.{rbac}/virtual-kubelet-nomad"));
            }
            Mode::NodeIdentity => {
                out.push("secret/virtual-kubelet-nomad-bootstrap".into());
                out.push(format!("clusterrole.{rbac}/virtual-kubelet-nomad:namespaces"));
                for b in [
                    "bootstrap-create-csrs",
                    "bootstrap-approve-node-client-csrs",
                    "nodes-renew-client-csrs",
                    "namespaces",
                ] {
                    out.push(format!("clusterrolebinding.{rbac}/virtual-kubelet-nomad:{b}"));
                }
            }
        }
        out
    }
}

/// One virtual kubelet of the test: the Deployment's own ServiceAccount (the control), or one
/// whose ClusterRole lacks `without`.
struct Instance {
    node: String,
    pod: String,
    sa_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    kubelet_port: u16,
    metrics_port: u16,
    /// The permission removed and the check that must be the first to fail; `None`: the control.
    without: Option<(Permission, Check)>,
}

impl Instance {
    fn log_name(&self) -> String {
        self.node.clone()
    }

    fn start(&self, cx: &Ctx<'_>) -> anyhow::Result<Process> {
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let kubelet = self.kubelet_port.to_string();
        let metrics = format!("127.0.0.1:{}", self.metrics_port);
        args.extend(["--kubelet-port", &kubelet, "--metrics-addr", &metrics]);
        // The status is checked every 2 s (default 10 s) and written every 3 s even when
        // unchanged (default 1 min), so that the `node status` check sees a heartbeat written
        // after the create within seconds.
        args.extend(["--node-status-interval", "2s", "--node-status-report-interval", "3s"]);
        cx.stack.virtual_kubelet_in_cluster(
            &self.node,
            &self.sa_dir,
            &args,
            &self.env,
            &self.log_name(),
        )
    }

    fn log(&self, cx: &Ctx<'_>) -> String {
        let path =
            cx.stack.dir.join("logs").join(format!("virtual-kubelet-{}.log", self.log_name()));
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

/// What one instance went through: the checks passed (with when), and the first that failed.
#[derive(Debug, Default)]
struct Outcome {
    passed: Vec<(Check, Duration)>,
    failed: Option<(Check, String)>,
}

/// `deploy/` applied through a kustomize overlay (its own namespace, the stack's Nomad address in
/// the Secret, the node name in the Deployment, and the Deployment scaled to 0: its image cannot
/// run here, but the API server validates and stores it), then the binary run as the Deployment
/// would run it (its args and its Secret as environment) with the kustomization's ServiceAccount
/// token as its in-cluster identity: every check of [`Check`] passes, plus the pod's environment
/// (ConfigMap, Secret, service links), its projected token authenticating, and `kubectl exec`.
/// Beside it, one virtual kubelet per permission of the ClusterRole, bound to a copy lacking
/// that permission: the first check to fail is the one `deploy::ABLATIONS` names, and the
/// API server's refusals in the process's log are of that verb on that resource and of nothing
/// else (the control's log has none).
pub(crate) async fn in_cluster_rbac(cx: Ctx<'_>) -> anyhow::Result<()> {
    let started = Instant::now();
    let (deployment, secret) = apply_deploy(&cx, Mode::ServiceAccount).await?;
    let (node_deployment, node_secret) = apply_deploy(&cx, Mode::NodeIdentity).await?;
    println!("deploy/service-account/ and deploy/ applied in {:?}", started.elapsed());

    cx.stack.namespace(PODS_NS).await?;
    // The pods' namespace is selected by label by a rule of the policy file every instance
    // reads: their Nomad priority (70, above the default limit of 50) is allowed only so.
    cx.stack.kubectl(&["label", "namespace", PODS_NS, "e2e.vk/policy=widened", "--overwrite"])?;
    let policy = cx.stack.dir.join("rbac-policy.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nname = \"widened by label\"\n\
         selector = { matchLabels = { \"e2e.vk/policy\" = \"widened\" } }\nmax_priority = 80\n",
    )?;
    let policy_args = ["--policy-file".to_owned(), policy.display().to_string()];
    let caller_token = inputs_and_identities(&cx).await?;

    let (mut args, mut env, _) = as_the_kubelet_starts(&cx, Mode::ServiceAccount, &deployment)?;
    ensure!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"] == NAME,
        "the Deployment's pods do not run as {NAME}"
    );
    args.extend(policy_args.iter().cloned());
    env.extend(secret);
    let node_control = node_identity_control(&cx, &node_deployment, node_secret, &policy_args)?;

    let permissions =
        deploy::cluster_role_permissions(&std::fs::read_to_string(deploy::cluster_role_path())?)?;
    let mut instances = vec![Instance {
        node: CONTROL_NODE.into(),
        pod: "p-control".into(),
        sa_dir: cx.stack.service_account_dir(DEPLOY_NS, NAME)?,
        args,
        env,
        kubelet_port: free_port()?,
        metrics_port: free_port()?,
        without: None,
    }];
    instances.push(node_control);
    let mut objects = Vec::new();
    for (perm, check) in deploy::ablations() {
        let name = format!("vk-no-{}", perm.slug());
        objects.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": DEPLOY_NS}}));
        objects.push(deploy::cluster_role(&name, &permissions, Some(&perm)));
        objects.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": DEPLOY_NS}],
        }));
        instances.push(Instance {
            node: name.clone(),
            pod: format!("p-{}", perm.slug()),
            sa_dir: PathBuf::new(),
            args: [vec!["--nodename".into(), name.clone()], policy_args.to_vec()].concat(),
            env: Vec::new(),
            kubelet_port: free_port()?,
            metrics_port: free_port()?,
            without: Some((perm, check)),
        });
    }
    let list = cx.stack.dir.join("rbac-ablations.json");
    std::fs::write(
        &list,
        json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string(),
    )?;
    cx.stack.kubectl(&["apply", "-f", &list.display().to_string()])?;
    for i in instances.iter_mut().filter(|i| i.without.is_some()) {
        i.sa_dir = cx.stack.service_account_dir(DEPLOY_NS, &i.node)?;
    }

    let t0 = Instant::now();
    let outcomes =
        futures::future::join_all(instances.iter().map(|i| scenario(&cx, i, &caller_token))).await;
    println!("{} virtual kubelets ran their checks in {:?}", instances.len(), t0.elapsed());
    // Their processes are gone: remove their Nodes (metrics-server and `kubectl top node` in other
    // tests would otherwise meet 18 unreachable kubelets).
    let mut delete = vec!["delete", "node", "--ignore-not-found", "--wait=false"];
    delete.extend(instances.iter().map(|i| i.node.as_str()));
    cx.stack.kubectl(&delete)?;

    let mut errors = Vec::new();
    for (i, outcome) in instances.iter().zip(outcomes) {
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                errors.push(format!("{}: {e:#}", i.node));
                continue;
            }
        };
        let passed: Vec<String> = outcome
            .passed
            .iter()
            .map(|(c, d)| format!("{} {:.1}s", c.name(), d.as_secs_f64()))
            .collect();
        match (&i.without, &outcome.failed) {
            (None, None) => {
                println!("control ({}): {}", i.node, passed.join(", "));
                if i.node == NODE_CONTROL {
                    node_identity_extras(&cx, &i.node)
                        .await
                        .map_err(|e| anyhow::anyhow!("the node-identity control: {e:#}"))?;
                }
                let refused = refusals(&i.log(&cx));
                if !refused.is_empty() {
                    errors.push(format!("the control was refused {refused:?}"));
                }
            }
            (None, Some((c, e))) => errors.push(format!("control: {} failed: {e}", c.name())),
            (Some((perm, want)), Some((got, e))) => {
                let refused = refusals(&i.log(&cx));
                let own = (perm.verb.clone(), perm.resource.clone());
                println!(
                    "without {perm}: `{}` failed ({e}); passed before: {}; refusals logged: {refused:?}",
                    got.name(),
                    passed.join(", ")
                );
                if got != want {
                    errors.push(format!(
                        "without {perm}: `{}` failed first, not `{}` ({e})",
                        got.name(),
                        want.name()
                    ));
                }
                // The API server refused that verb on that resource, and nothing else.
                if refused.iter().collect::<Vec<_>>() != [&own] {
                    errors.push(format!(
                        "without {perm}: the refusals in the log of {} are {refused:?}",
                        i.node
                    ));
                }
            }
            (Some((perm, want)), None) => errors.push(format!(
                "without {perm}: every check passed (`{}` should have failed)",
                want.name()
            )),
        }
    }
    ensure!(errors.is_empty(), "{}", errors.join("\n"));
    println!("in all {:?}", started.elapsed());
    Ok(())
}

/// The (verb, resource) pairs of the API server's RBAC refusals in a log: its messages read
/// `... cannot <verb> resource "<resource>" in API group ...` (quotes escaped or not).
fn refusals(log: &str) -> std::collections::BTreeSet<(String, String)> {
    let mut out = std::collections::BTreeSet::new();
    for part in log.split("cannot ").skip(1) {
        let mut words = part.splitn(3, ' ');
        let (Some(verb), Some("resource"), Some(rest)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let rest = rest.trim_start_matches(['\\', '"']);
        let resource: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '/' || *c == '.')
            .collect();
        out.insert((verb.to_owned(), resource));
    }
    out
}

/// `$(VAR)` references in a container argument replaced from `vars`, as the kubelet does.
fn expand(arg: &str, vars: &[(String, String)]) -> String {
    vars.iter().fold(arg.to_owned(), |a, (k, v)| a.replace(&format!("$({k})"), v))
}

/// `kubectl apply -k` of an overlay of `mode`'s kustomization; returns the Deployment as the API
/// server stored it and the Secret's data (decoded) as environment variables.
async fn apply_deploy(cx: &Ctx<'_>, mode: Mode) -> anyhow::Result<(Value, Vec<(String, String)>)> {
    let ns = mode.namespace();
    let overlay = cx.stack.dir.join(format!("deploy-overlay-{ns}"));
    std::fs::create_dir_all(&overlay)?;
    // kustomize takes bases by relative path only.
    let base = relative(&overlay.canonicalize()?, &mode.dir().canonicalize()?);
    let patch = |ops: Value| serde_json::to_string(&ops);
    let mut patches = vec![
        json!({"target": {"kind": "Secret", "name": NAME}, "patch": patch(json!([
            {"op": "replace", "path": "/stringData/NOMAD_ADDR", "value": cx.stack.nomad_addr}
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
fn volume_dir(cx: &Ctx<'_>, ns: &str, volume: &str) -> PathBuf {
    cx.stack.dir.join("deploy-volumes").join(ns).join(volume)
}

/// The Deployment's container as a kubelet would start it: its `env` (values, and the pod IP as
/// 127.0.0.1), its volumes made (Secret and ConfigMap volumes from the API server, emptyDirs
/// empty) in directories of the test, and its args with `$(VAR)` expanded and each mount path
/// replaced by that directory. Returns the args, the variables and the mounts (mount path, dir).
#[allow(clippy::type_complexity)]
fn as_the_kubelet_starts(
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
/// stack's address, which this test's process cannot resolve); no ServiceAccount token (the
/// Deployment mounts none).
fn node_identity_control(
    cx: &Ctx<'_>,
    deployment: &Value,
    secret: Vec<(String, String)>,
    policy_args: &[String],
) -> anyhow::Result<Instance> {
    let pod = &deployment["spec"]["template"]["spec"];
    ensure!(
        pod["automountServiceAccountToken"] == false,
        "the node-identity Deployment mounts a ServiceAccount token"
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
    let no_token = cx.stack.dir.join("serviceaccounts").join("none");
    std::fs::create_dir_all(&no_token)?;
    args.extend(policy_args.iter().cloned());
    let mut env = vars;
    env.extend(secret);
    Ok(Instance {
        node: NODE_CONTROL.into(),
        pod: "p-node-identity".into(),
        sa_dir: no_token,
        args,
        env,
        kubelet_port: free_port()?,
        metrics_port: free_port()?,
        without: None,
    })
}

/// After its checks passed: the node-identity instance is `system:node:<node>` to the API
/// server (the client certificate it bootstrapped into its cert-dir volume), and, its pod
/// deleted, it is refused the Secret that pod read while the pods of the other nodes still use it
/// (the Node authorizer: "no relationship found").
async fn node_identity_extras(cx: &Ctx<'_>, node: &str) -> anyhow::Result<()> {
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

/// What the pods read (a ConfigMap, a Secret, a Service for service links), and a ServiceAccount
/// allowed to call kubelet APIs (`system:kubelet-api-admin`) for the TokenReview check; returns
/// its token.
async fn inputs_and_identities(cx: &Ctx<'_>) -> anyhow::Result<String> {
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
async fn scenario(cx: &Ctx<'_>, i: &Instance, caller_token: &str) -> anyhow::Result<Outcome> {
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
