//! End-to-end test of the deployment manifests (`deploy/`): applied with `kubectl apply -k` to the
//! real API server, then the binary run as their ServiceAccount with the in-cluster
//! configuration, and once per ClusterRole permission with a copy of the role lacking it.
//!
//! This module holds the test and its instances; `deploy/manifests.rs` applies `deploy/` and
//! reads its Deployment as a kubelet would start it, `deploy/scenario.rs` runs the checks.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::ensure;
use serde_json::json;
use vk_tests::deploy::{self, Check, Permission};
use vk_tests::{Process, free_port};

use super::Ctx;

#[path = "deploy/manifests.rs"]
mod manifests;
#[path = "deploy/scenario.rs"]
mod scenario;
use manifests::{apply_deploy, as_the_kubelet_starts, node_identity_control};
use scenario::{inputs_and_identities, node_identity_extras, scenario};

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
