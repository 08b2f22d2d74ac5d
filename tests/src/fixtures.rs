//! Builders for test objects: `pod("web").namespace("ns").on_node("vk").container("c", &["sleep", "300"])`.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// A pod under construction.
#[derive(Debug, Clone)]
pub struct PodBuilder {
    v: Value,
}

/// A pod named `name` in `default`, with no containers yet.
pub fn pod(name: &str) -> PodBuilder {
    PodBuilder {
        v: json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [], "terminationGracePeriodSeconds": 5},
        }),
    }
}

impl PodBuilder {
    /// Sets the namespace.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.v["metadata"]["namespace"] = json!(ns);
        self
    }

    /// Lets the scheduler place it on node `node` only: a `kubernetes.io/hostname` selector and a
    /// toleration of the virtual kubelet's taint.
    pub fn on_node(mut self, node: &str) -> Self {
        self.v["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": node});
        self.v["spec"]["tolerations"] = json!([{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}]);
        self
    }

    /// Adds a container of image [`crate::BUSYBOX`] running `argv` (on raw_exec, which ignores
    /// the image, the command and its arguments on the host).
    pub fn container(mut self, name: &str, argv: &[&str]) -> Self {
        let c = json!({"name": name, "image": crate::BUSYBOX, "command": argv});
        if let Some(cs) = self.v["spec"]["containers"].as_array_mut() {
            cs.push(c);
        }
        self
    }

    /// Sets annotation `key` to `value`.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.v["metadata"]["annotations"][key] = json!(value);
        self
    }

    /// Sets `restartPolicy`.
    pub fn restart(mut self, policy: &str) -> Self {
        self.v["spec"]["restartPolicy"] = json!(policy);
        self
    }

    /// Sets `terminationGracePeriodSeconds`.
    pub fn grace(mut self, seconds: i64) -> Self {
        self.v["spec"]["terminationGracePeriodSeconds"] = json!(seconds);
        self
    }

    /// Merges `extra` into the spec (for fields without a builder method).
    pub fn spec(mut self, extra: Value) -> Self {
        if let (Some(spec), Some(extra)) = (self.v["spec"].as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                spec.insert(k.clone(), v.clone());
            }
        }
        self
    }

    /// The pod.
    ///
    /// # Panics
    /// Never for pods built by these methods (the JSON always deserialises).
    pub fn build(self) -> Pod {
        serde_json::from_value(self.v).unwrap_or_default()
    }
}
