//! The one pod builder of every crate's tests (feature `testing`, off in normal builds; the
//! workspace's crates enable it in their dev-dependencies, `vk-tests` wraps it for the end-to-end
//! tests): `pod("web").namespace("ns").uid("u-1").container("c", &["sleep", "300"]).build()`.
//!
//! It builds the pod as the API server's JSON and decodes it once at [`PodBuilder::build`], so a
//! test reads like the manifest it stands for; fields without a method go through
//! [`PodBuilder::metadata`], [`PodBuilder::spec`] and [`PodBuilder::status`], which merge JSON
//! objects key by key (a key given replaces the one there).

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// A pod under construction; [`pod`] starts one.
#[derive(Debug, Clone)]
pub struct PodBuilder {
    v: Value,
    image: Option<String>,
}

/// A pod named `name` in namespace `default`, without UID, node or containers.
#[must_use]
pub fn pod(name: &str) -> PodBuilder {
    PodBuilder {
        v: json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": []},
        }),
        image: None,
    }
}

impl PodBuilder {
    /// Sets `metadata.namespace`.
    #[must_use]
    pub fn namespace(mut self, ns: &str) -> Self {
        self.v["metadata"]["namespace"] = json!(ns);
        self
    }

    /// Sets `metadata.uid`.
    #[must_use]
    pub fn uid(mut self, uid: &str) -> Self {
        self.v["metadata"]["uid"] = json!(uid);
        self
    }

    /// Sets `spec.nodeName`: the pod is bound to `node`.
    #[must_use]
    pub fn node(mut self, node: &str) -> Self {
        self.v["spec"]["nodeName"] = json!(node);
        self
    }

    /// Lets the scheduler place it on node `node` only: a `kubernetes.io/hostname` selector and a
    /// toleration of the virtual kubelet's taint (`virtual-kubelet.io/provider`, any value).
    #[must_use]
    pub fn on_node(mut self, node: &str) -> Self {
        self.v["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": node});
        self.v["spec"]["tolerations"] = json!([{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}]);
        self
    }

    /// The image of the containers added after this call (none by default: the container has
    /// no `image`).
    #[must_use]
    pub fn image(mut self, image: &str) -> Self {
        self.image = Some(image.to_owned());
        self
    }

    /// Adds a container running `argv` as its `command` (left out when empty), of the image set
    /// by [`PodBuilder::image`].
    #[must_use]
    pub fn container(self, name: &str, argv: &[&str]) -> Self {
        self.push("containers", name, argv)
    }

    /// Adds an init container, as [`PodBuilder::container`] adds a container.
    #[must_use]
    pub fn init_container(self, name: &str, argv: &[&str]) -> Self {
        self.push("initContainers", name, argv)
    }

    fn push(mut self, list: &str, name: &str, argv: &[&str]) -> Self {
        let mut c = json!({"name": name});
        if let Some(image) = &self.image {
            c["image"] = json!(image);
        }
        if !argv.is_empty() {
            c["command"] = json!(argv);
        }
        match self.v["spec"][list].as_array_mut() {
            Some(cs) => cs.push(c),
            None => self.v["spec"][list] = json!([c]),
        }
        self
    }

    /// Sets annotation `key` to `value`.
    #[must_use]
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.v["metadata"]["annotations"][key] = json!(value);
        self
    }

    /// Sets `spec.restartPolicy` (`Always`, `OnFailure`, `Never`).
    #[must_use]
    pub fn restart(mut self, policy: &str) -> Self {
        self.v["spec"]["restartPolicy"] = json!(policy);
        self
    }

    /// Sets `spec.terminationGracePeriodSeconds`.
    #[must_use]
    pub fn grace(mut self, seconds: i64) -> Self {
        self.v["spec"]["terminationGracePeriodSeconds"] = json!(seconds);
        self
    }

    /// Sets `status.phase`.
    #[must_use]
    pub fn phase(mut self, phase: &str) -> Self {
        self.v["status"]["phase"] = json!(phase);
        self
    }

    /// Merges `extra`, a JSON object, into `metadata`.
    #[must_use]
    pub fn metadata(self, extra: Value) -> Self {
        self.merge("metadata", extra)
    }

    /// Merges `extra`, a JSON object, into `spec`.
    #[must_use]
    pub fn spec(self, extra: Value) -> Self {
        self.merge("spec", extra)
    }

    /// Merges `extra`, a JSON object, into `status`.
    #[must_use]
    pub fn status(self, extra: Value) -> Self {
        self.merge("status", extra)
    }

    fn merge(mut self, part: &str, extra: Value) -> Self {
        if let Value::Object(extra) = extra {
            if !self.v[part].is_object() {
                self.v[part] = json!({});
            }
            if let Some(obj) = self.v[part].as_object_mut() {
                obj.extend(extra);
            }
        }
        self
    }

    /// The pod's JSON as the API server would hold it.
    #[must_use]
    pub fn json(self) -> Value {
        self.v
    }

    /// The pod.
    ///
    /// # Panics
    /// When a field was merged with a value of the wrong shape: the test that built it is wrong,
    /// and a default pod in its place could let it pass for the wrong reason.
    #[must_use]
    #[allow(clippy::panic)] // test support only (feature `testing`)
    pub fn build(self) -> Pod {
        match serde_json::from_value(self.v) {
            Ok(pod) => pod,
            Err(e) => panic!("the test's pod does not decode: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_manifest_it_reads_like() {
        let p = pod("web")
            .namespace("ns")
            .uid("u-1")
            .node("vk")
            .image("busybox")
            .init_container("init", &["true"])
            .container("main", &["sleep", "1"])
            .annotation("a", "b")
            .restart("Never")
            .phase("Pending")
            .spec(json!({"hostname": "h"}))
            .build();
        assert_eq!(p.metadata.name.as_deref(), Some("web"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(p.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(p.metadata.annotations.unwrap()["a"], "b");
        let spec = p.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("vk"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.hostname.as_deref(), Some("h"));
        let init = &spec.init_containers.unwrap()[0];
        assert_eq!((init.name.as_str(), init.image.as_deref()), ("init", Some("busybox")));
        assert_eq!(spec.containers[0].command, Some(vec!["sleep".to_owned(), "1".to_owned()]));
        assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
        let bare = pod("x").container("c", &[]).build();
        assert_eq!((bare.spec.as_ref().unwrap().containers[0].image.as_ref()), None);
        assert_eq!(bare.spec.unwrap().containers[0].command, None);
    }
}
