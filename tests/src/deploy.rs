//! The deployment manifests in `deploy/` as the end-to-end tests use them: the ClusterRole's rules
//! as (API group, resource, verb) permissions, ClusterRole copies lacking one permission, and the
//! ablation table naming, for every permission, the check of the `in_cluster_rbac` test that
//! fails without it. A unit test keeps the table and `deploy/service-account/clusterrole.yaml` in step, so a rule
//! added without a case (or a case whose rule is gone) fails.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::{Value, json};

/// The `deploy/` directory of this repository (the kustomization applied by `kubectl apply -k`:
/// node identity; `service-account/` under it is the ServiceAccount mode).
pub fn deploy_dir() -> PathBuf {
    crate::peers::repo_root().join("deploy")
}

/// The ClusterRole of the ServiceAccount mode, `deploy/service-account/clusterrole.yaml`.
pub fn cluster_role_path() -> PathBuf {
    deploy_dir().join("service-account").join("clusterrole.yaml")
}

/// The checks of the `in_cluster_rbac` end-to-end test, in the order it makes them on one
/// virtual kubelet running as a ServiceAccount. Ablated runs stop at the first failing check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// The Node object exists.
    NodeRegistered,
    /// The node's Lease exists in `kube-node-lease`.
    Lease,
    /// The node's `Ready` condition is `True` with a heartbeat written after the Node was
    /// created: a status write, not the status the Node was created with.
    NodeStatus,
    /// `/readyz` answers 200: the pod watch listed the pods (and Nomad its jobs).
    PodsListed,
    /// A pod created after that (ConfigMap and Secret env, service links, the projected
    /// service-account token volume, and a Nomad priority that only a policy-file rule selecting
    /// its namespace by label allows) reaches phase `Running`.
    PodRunning,
    /// A Warning Event (`OptionalConfigMapNotFound`) is recorded for it.
    Event,
    /// The same reason recurring (a second optional ConfigMap missing) counts the Event's series
    /// up to 2.
    EventSeries,
    /// `kubectl logs` through the API server returns the pod's output, which shows the service
    /// link variable of a Service made after the node listed the Services (so it came by watch).
    Logs,
    /// A bearer token sent straight to the kubelet API authenticates (`/pods` answers 200).
    TokenReview,
    /// `kubectl delete pod` removes the pod object.
    PodDeleted,
    /// After a restart, with the Node already there and its Lease deleted, the Lease is back.
    LeaseAfterRestart,
}

impl Check {
    /// Every check, in order.
    pub const ALL: [Check; 11] = [
        Check::NodeRegistered,
        Check::Lease,
        Check::NodeStatus,
        Check::PodsListed,
        Check::PodRunning,
        Check::Event,
        Check::EventSeries,
        Check::Logs,
        Check::TokenReview,
        Check::PodDeleted,
        Check::LeaseAfterRestart,
    ];

    /// The name used in `deploy/service-account/clusterrole.yaml` comments, the README and failure messages.
    pub fn name(self) -> &'static str {
        match self {
            Check::NodeRegistered => "node registered",
            Check::Lease => "lease",
            Check::NodeStatus => "node status",
            Check::PodsListed => "pods listed",
            Check::PodRunning => "pod running",
            Check::Event => "event",
            Check::EventSeries => "event series",
            Check::Logs => "logs",
            Check::TokenReview => "token review",
            Check::PodDeleted => "pod deleted",
            Check::LeaseAfterRestart => "lease after restart",
        }
    }
}

/// One verb on one resource of one API group (`""` is the core group), as RBAC grants it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    /// API group.
    pub group: String,
    /// Resource, with `/subresource` when there is one.
    pub resource: String,
    /// Verb.
    pub verb: String,
}

impl Permission {
    /// A short name usable in object names: `nodes-status-patch`, `leases-create`.
    pub fn slug(&self) -> String {
        format!("{}-{}", self.resource.replace('/', "-"), self.verb)
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() { "core" } else { &self.group };
        write!(f, "{group} {} {}", self.resource, self.verb)
    }
}

/// For every permission of the ClusterRole: the first check that fails without it.
pub const ABLATIONS: &[(&str, &str, &str, Check)] = &[
    ("", "nodes", "create", Check::NodeRegistered),
    ("", "nodes", "get", Check::LeaseAfterRestart),
    ("", "nodes/status", "patch", Check::NodeStatus),
    ("coordination.k8s.io", "leases", "create", Check::Lease),
    ("coordination.k8s.io", "leases", "patch", Check::Lease),
    ("", "pods", "list", Check::PodsListed),
    ("", "pods", "watch", Check::PodRunning),
    ("", "pods", "delete", Check::PodDeleted),
    ("", "pods/status", "patch", Check::PodRunning),
    ("", "events", "create", Check::Event),
    ("", "events", "patch", Check::EventSeries),
    ("", "configmaps", "get", Check::PodRunning),
    ("", "secrets", "get", Check::PodRunning),
    ("", "namespaces", "get", Check::PodRunning),
    ("", "services", "list", Check::PodRunning),
    ("", "services", "watch", Check::Logs),
    ("", "serviceaccounts/token", "create", Check::PodRunning),
    ("authentication.k8s.io", "tokenreviews", "create", Check::TokenReview),
    ("authorization.k8s.io", "subjectaccessreviews", "create", Check::Logs),
];

/// [`ABLATIONS`] as permissions.
pub fn ablations() -> Vec<(Permission, Check)> {
    ABLATIONS
        .iter()
        .map(|(g, r, v, c)| {
            let p = Permission { group: (*g).into(), resource: (*r).into(), verb: (*v).into() };
            (p, *c)
        })
        .collect()
}

/// The permissions a ClusterRole (YAML) grants, sorted, one per (group, resource, verb).
///
/// # Errors
/// Not YAML, or a rule without `apiGroups`, `resources` or `verbs` lists of strings (wildcards
/// and resource names are refused too: a minimal role has neither).
pub fn cluster_role_permissions(yaml: &str) -> anyhow::Result<Vec<Permission>> {
    let role: Value = serde_yaml_ng::from_str(yaml).context("parsing the ClusterRole")?;
    let rules = role["rules"].as_array().context("no rules")?;
    let strings = |v: &Value, key: &str| -> anyhow::Result<Vec<String>> {
        let list = v[key].as_array().with_context(|| format!("a rule without {key}: {v}"))?;
        list.iter()
            .map(|s| {
                let s = s.as_str().with_context(|| format!("{key}: {s} is not a string"))?;
                anyhow::ensure!(s != "*", "{key}: a wildcard in a minimal role");
                Ok(s.to_owned())
            })
            .collect()
    };
    let mut out = Vec::new();
    for rule in rules {
        anyhow::ensure!(rule.get("resourceNames").is_none(), "resourceNames are not handled");
        for group in strings(rule, "apiGroups")? {
            for resource in strings(rule, "resources")? {
                for verb in strings(rule, "verbs")? {
                    out.push(Permission { group: group.clone(), resource: resource.clone(), verb });
                }
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A ClusterRole named `name` granting `permissions` less `without` (one rule per group and
/// resource), as JSON for `kubectl apply`.
pub fn cluster_role(name: &str, permissions: &[Permission], without: Option<&Permission>) -> Value {
    let mut rules: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for p in permissions.iter().filter(|p| Some(*p) != without) {
        rules.entry((&p.group, &p.resource)).or_default().push(&p.verb);
    }
    let rules: Vec<Value> = rules
        .into_iter()
        .map(|((g, r), verbs)| json!({"apiGroups": [g], "resources": [r], "verbs": verbs}))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployed() -> Vec<Permission> {
        let yaml = std::fs::read_to_string(cluster_role_path()).unwrap();
        cluster_role_permissions(&yaml).unwrap()
    }

    #[test]
    fn every_cluster_role_permission_has_an_ablation_case_and_no_case_is_stale() {
        let role = deployed();
        let cases: Vec<Permission> = ablations().into_iter().map(|(p, _)| p).collect();
        let missing: Vec<String> =
            role.iter().filter(|p| !cases.contains(p)).map(ToString::to_string).collect();
        let stale: Vec<String> =
            cases.iter().filter(|p| !role.contains(p)).map(ToString::to_string).collect();
        assert!(missing.is_empty(), "permissions without an ablation case: {missing:?}");
        assert!(stale.is_empty(), "ablation cases for permissions not granted: {stale:?}");
        assert_eq!(cases.len(), role.len(), "an ablation case is listed twice");
    }

    #[test]
    fn a_copy_lacks_exactly_the_removed_permission() {
        let role = deployed();
        let gone = Permission {
            group: "coordination.k8s.io".into(),
            resource: "leases".into(),
            verb: "patch".into(),
        };
        let copy = cluster_role("x", &role, Some(&gone));
        let yaml = serde_json::to_string(&copy).unwrap();
        let left = cluster_role_permissions(&yaml).unwrap();
        let want: Vec<Permission> = role.iter().filter(|p| **p != gone).cloned().collect();
        assert_eq!(left, want);
        let whole = cluster_role("x", &role, None);
        assert_eq!(
            cluster_role_permissions(&serde_json::to_string(&whole).unwrap()).unwrap(),
            role
        );
    }

    #[test]
    fn wildcards_and_malformed_rules_are_refused() {
        for bad in [
            "rules: [{apiGroups: [''], resources: ['*'], verbs: [get]}]",
            "rules: [{apiGroups: [''], resources: [pods], verbs: ['*']}]",
            "rules: [{apiGroups: [''], resources: [pods]}]",
            "rules: [{apiGroups: [''], resources: [pods], verbs: [get], resourceNames: [a]}]",
        ] {
            assert!(cluster_role_permissions(bad).is_err(), "{bad}");
        }
    }
}
