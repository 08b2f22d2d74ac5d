//! Who may call the kubelet API, as the kubelet decides it
//! (`pkg/kubelet/server/auth.go`, docs "Kubelet authentication/authorization").
//!
//! A request is authenticated (x509 client certificate, bearer token through a TokenReview, or
//! anonymous when enabled) into a [`UserInfo`], then authorized by a SubjectAccessReview on the
//! Node: verb from the HTTP method, subresource from the path ([`access_for`]).

use std::collections::BTreeMap;

/// An authenticated user (`authentication.k8s.io/v1` `UserInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// User name (a certificate's CN; `system:serviceaccount:<ns>:<name>` for a token).
    pub username: String,
    /// UID, when the authenticator gives one.
    pub uid: String,
    /// Groups (a certificate's O values).
    pub groups: Vec<String>,
    /// Extra attributes from the TokenReview.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// `system:anonymous` in `system:unauthenticated`, what an anonymous request is authorized as.
    pub fn anonymous() -> Self {
        Self {
            username: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..Self::default()
        }
    }
}

/// What a request asks to do to the Node: a SubjectAccessReview's resource attributes
/// `{verb, resource: "nodes", name: node, subresource, version: "v1"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAccess {
    /// `get`, `create`, `update`, `patch` or `delete`.
    pub verb: &'static str,
    /// The node's name.
    pub node: String,
    /// `proxy`, `stats`, `metrics`, `log`, `spec`, `checkpoint`, `pods`, `healthz`, `configz`.
    pub subresource: &'static str,
}

/// The accesses that allow `method` on `path` of node `node`, in order: the request is allowed
/// when the first is, or, failing that, any of the next (the fine-grained subresources of
/// `KubeletFineGrainedAuthz`, GA in 1.36, fall back to `proxy`).
///
/// Verbs: POST → create, GET/HEAD → get, PUT → update, PATCH → patch, DELETE → delete, anything
/// else → get. Subresources: `/stats*` → stats, `/metrics*` → metrics, `/logs*` → log, `/spec*` →
/// spec, `/checkpoint*` → checkpoint; `/pods`, `/runningpods` → pods, `/healthz` → healthz,
/// `/configz` → configz (each then proxy); everything else (containerLogs, exec, attach,
/// portForward, run) → proxy.
pub fn access_for(method: &str, path: &str, node: &str) -> Vec<NodeAccess> {
    let verb = match method {
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "get",
    };
    let first = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    let at = |subresource| NodeAccess { verb, node: node.to_owned(), subresource };
    let fine = |s| vec![at(s), at("proxy")];
    match first {
        "stats" => vec![at("stats")],
        "metrics" => vec![at("metrics")],
        "logs" => vec![at("log")],
        "spec" => vec![at("spec")],
        "checkpoint" => vec![at("checkpoint")],
        "pods" | "runningpods" => fine("pods"),
        "healthz" => fine("healthz"),
        "configz" => fine("configz"),
        _ => vec![at("proxy")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(method: &str, path: &str) -> Vec<(&'static str, &'static str)> {
        access_for(method, path, "n").into_iter().map(|a| (a.verb, a.subresource)).collect()
    }

    #[test]
    fn the_kubelet_mapping() {
        assert_eq!(sub("GET", "/stats/summary"), [("get", "stats")]);
        assert_eq!(sub("GET", "/metrics/resource"), [("get", "metrics")]);
        assert_eq!(sub("GET", "/containerLogs/ns/p/c"), [("get", "proxy")]);
        assert_eq!(sub("POST", "/exec/ns/p/c"), [("create", "proxy")]);
        assert_eq!(sub("GET", "/exec/ns/p/c"), [("get", "proxy")], "WebSocket upgrades are GETs");
        assert_eq!(sub("POST", "/portForward/ns/p"), [("create", "proxy")]);
        assert_eq!(sub("GET", "/pods"), [("get", "pods"), ("get", "proxy")]);
        assert_eq!(sub("GET", "/runningpods/"), [("get", "pods"), ("get", "proxy")]);
        assert_eq!(sub("GET", "/healthz"), [("get", "healthz"), ("get", "proxy")]);
        assert_eq!(sub("HEAD", "/logs/"), [("get", "log")]);
        assert_eq!(sub("PUT", "/x"), [("update", "proxy")]);
        assert_eq!(sub("PATCH", "/x"), [("patch", "proxy")]);
        assert_eq!(sub("DELETE", "/x"), [("delete", "proxy")]);
        assert_eq!(access_for("GET", "/stats", "node-1")[0].node, "node-1");
    }
}
