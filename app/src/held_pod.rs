//! How the pod controller holds the pods bound to the node between syncs: as compact JSON.
//!
//! A decoded [`Pod`] is large for what it says: k8s-openapi lays every optional field out inline,
//! so a `Pod` is 2.4 KB before its first string, each `Container` 2.1 KB, each `ContainerStatus`
//! 0.75 KB, and a one-container pod takes about 8 KB of heap. Its JSON (without
//! `metadata.managedFields`, which the watch drops) is about 3 KB. The controller holds every pod
//! bound to the node for as long as it is bound, and reads one whole only when a worker syncs it,
//! the kubelet API serves it, or the volume refresh reads its volumes: so it keeps the JSON, and
//! decodes it then. The fields read for every pod on every event (the phase for `vk_pods`, the
//! UID, whether it is terminal, being deleted or has volume files) are kept decoded beside it.
//!
//! Measured by `bench/` (P2, 1,000 pods, memory provider): the process's anonymous memory went
//! from 16.5 MB to 8.8 MB, and its CPU time did not grow (1.6 s before, 1.4 s after).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use vk_domain::pod;

/// The phases, in the order of the index [`HeldPod::phase_index`] gives: `vk_pods`' label values.
pub(crate) const PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

/// One pod as the controller holds it: its JSON and a few fields kept decoded.
pub(crate) struct HeldPod {
    form: Form,
    /// `metadata.uid`.
    uid: Box<str>,
    /// Index in [`PHASES`] of `status.phase` (`Pending` when none was written yet, or when the
    /// phase is not one Kubernetes defines).
    phase: u8,
    /// `status.phase` is `Succeeded` or `Failed` ([`pod::is_terminal`]).
    terminal: bool,
    /// `metadata.deletionTimestamp` is set ([`pod::deletion_deadline`]).
    deleting: bool,
    /// Some volume is more than an `emptyDir`: its files come from the API (ConfigMap, Secret,
    /// downward API, projected) and the refresh must look at it.
    has_files: bool,
}

enum Form {
    /// The pod as `serde_json` wrote it, exactly as long as it is.
    Json(Box<[u8]>),
    /// The pod itself, should `serde_json` ever refuse to write it (no k8s-openapi type does:
    /// their maps have string keys): held whole rather than lost.
    Whole(Arc<Pod>),
}

/// A held pod's JSON no longer decodes. It was written by `serde_json` from a decoded [`Pod`], so
/// this is a bug (a k8s-openapi type whose serialization does not read back), never bad input.
#[derive(Debug, thiserror::Error)]
#[error("the pod held in memory cannot be read back (a bug): {0}")]
pub(crate) struct Unreadable(#[from] serde_json::Error);

impl HeldPod {
    /// Holds `pod`.
    pub(crate) fn new(pod: Pod) -> Self {
        let phase = pod::phase(&pod);
        let phase = PHASES.iter().position(|p| *p == phase).unwrap_or(0) as u8;
        let uid = pod::uid(&pod).into();
        let terminal = pod::is_terminal(&pod);
        let deleting = pod::deletion_deadline(&pod).is_some();
        let has_files =
            pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).any(|v| v.empty_dir.is_none());
        let form = match serde_json::to_vec(&pod) {
            Ok(json) => Form::Json(json.into_boxed_slice()),
            Err(e) => {
                tracing::warn!(error = %e, uid = %uid, "a pod cannot be written as JSON: held whole");
                Form::Whole(Arc::new(pod))
            }
        };
        Self { form, uid, phase, terminal, deleting, has_files }
    }

    /// The whole pod, decoded.
    ///
    /// # Errors
    /// [`Unreadable`] if the JSON does not decode (a bug; see there).
    pub(crate) fn pod(&self) -> Result<Arc<Pod>, Unreadable> {
        match &self.form {
            Form::Json(json) => Ok(Arc::new(serde_json::from_slice(json)?)),
            Form::Whole(pod) => Ok(Arc::clone(pod)),
        }
    }

    /// `metadata.uid`.
    pub(crate) fn uid(&self) -> &str {
        &self.uid
    }

    /// The whole pod, decoded, or `None` with the error logged (for readers that skip a pod they
    /// cannot read rather than fail: the kubelet API and the volume refresh).
    pub(crate) fn pod_or_log(&self) -> Option<Arc<Pod>> {
        self.pod().inspect_err(|e| tracing::error!("{e}")).ok()
    }

    /// `status.phase` as `vk_pods` counts it, as its index in [`PHASES`] (`Pending`, 0, before
    /// any was written).
    pub(crate) fn phase_index(&self) -> usize {
        usize::from(self.phase)
    }

    /// `status.phase` is `Succeeded` or `Failed`.
    pub(crate) fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// `metadata.deletionTimestamp` is set.
    pub(crate) fn is_deleting(&self) -> bool {
        self.deleting
    }

    /// Some volume's files come from the API (anything but `emptyDir`).
    pub(crate) fn has_files(&self) -> bool {
        self.has_files
    }

    /// Bytes of heap this pod takes here (the JSON and the UID).
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        let form = match &self.form {
            Form::Json(json) => json.len(),
            Form::Whole(_) => std::mem::size_of::<Pod>(),
        };
        form + self.uid.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod with most of what a pod carries: several containers with env, ports, probes,
    /// resources, volume mounts; volumes of each kind; a full status with container states.
    fn rich_pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "6f1c-uid",
                "resourceVersion": "4711", "generation": 1,
                "creationTimestamp": "2026-11-21T10:00:00Z",
                "deletionTimestamp": "2026-11-21T10:05:00Z",
                "deletionGracePeriodSeconds": 30,
                "labels": {"app": "web", "tier": "front"},
                "annotations": {"nomad.hashicorp.com/datacenter": "dc1"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                    "uid": "rs-uid", "controller": true, "blockOwnerDeletion": true}],
                "finalizers": ["example.com/keep"]
            },
            "spec": {
                "nodeName": "nomad", "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                "activeDeadlineSeconds": 600, "hostNetwork": false, "dnsPolicy": "ClusterFirst",
                "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Equal",
                    "value": "nomad", "effect": "NoSchedule"},
                    {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                    "effect": "NoExecute", "tolerationSeconds": 300}],
                "initContainers": [{"name": "init", "image": "busybox", "command": ["true"],
                    "restartPolicy": "Always"}],
                "containers": [{
                    "name": "app", "image": "nginx:1.27", "command": ["nginx"], "args": ["-g", "daemon off;"],
                    "workingDir": "/srv",
                    "env": [{"name": "A", "value": "1"},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
                        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": true}}}],
                    "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP", "hostPort": 80}],
                    "resources": {"requests": {"cpu": "250m", "memory": "64Mi"},
                        "limits": {"cpu": "1", "memory": "128Mi", "ephemeral-storage": "1Gi"}},
                    "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true, "subPath": "x"}],
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                        "initialDelaySeconds": 3, "periodSeconds": 10, "failureThreshold": 3},
                    "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}},
                    "startupProbe": {"tcpSocket": {"port": 8080}},
                    "lifecycle": {"preStop": {"sleep": {"seconds": 2}}},
                    "securityContext": {"runAsUser": 1000, "capabilities": {"add": ["NET_ADMIN"]}},
                    "stdin": true, "tty": true
                }],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "cm", "items": [{"key": "a", "path": "a.txt", "mode": 256}], "defaultMode": 420}},
                    {"name": "sec", "secret": {"secretName": "s"}},
                    {"name": "dapi", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                    {"name": "proj", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3600, "audience": "vault"}}]}},
                    {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi", "medium": "Memory"}}
                ]
            },
            "status": {
                "phase": "Running", "podIP": "10.0.0.7", "podIPs": [{"ip": "10.0.0.7"}],
                "hostIP": "192.168.1.2", "hostIPs": [{"ip": "192.168.1.2"}], "qosClass": "Burstable",
                "startTime": "2026-11-21T10:00:01Z",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-21T10:00:05Z"}],
                "initContainerStatuses": [{"name": "init", "ready": true, "restartCount": 0, "image": "busybox",
                    "imageID": "", "started": true, "state": {"running": {"startedAt": "2026-11-21T10:00:02Z"}}}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 2, "image": "nginx:1.27",
                    "imageID": "", "containerID": "nomad://alloc/app", "started": true,
                    "state": {"running": {"startedAt": "2026-11-21T10:00:04Z"}},
                    "lastState": {"terminated": {"exitCode": 137, "signal": 9, "reason": "OOMKilled",
                        "startedAt": "2026-11-21T09:59:00Z", "finishedAt": "2026-11-21T10:00:03Z",
                        "message": "out of memory"}}}]
            }
        }))
        .expect("the fixture is a valid pod")
    }

    #[test]
    fn a_held_pod_reads_back_as_it_was_given() {
        let pod = rich_pod();
        let held = HeldPod::new(pod.clone());
        assert_eq!(*held.pod().unwrap(), pod);
        assert_eq!(held.uid(), "6f1c-uid");
        assert_eq!(PHASES[held.phase_index()], "Running");
        assert!(held.is_deleting());
        assert!(!held.is_terminal());
        assert!(held.has_files());
    }

    #[test]
    fn the_fields_kept_decoded_follow_the_pod() {
        let mut pod = Pod::default();
        let held = HeldPod::new(pod.clone());
        assert_eq!((held.uid(), PHASES[held.phase_index()]), ("", "Pending"));
        assert!(!held.is_terminal() && !held.is_deleting() && !held.has_files());

        for (phase, counted, terminal) in [
            ("Pending", "Pending", false),
            ("Running", "Running", false),
            ("Succeeded", "Succeeded", true),
            ("Failed", "Failed", true),
            ("Unknown", "Unknown", false),
            ("Bogus", "Pending", false),
        ] {
            pod.status.get_or_insert_default().phase = Some(phase.into());
            let held = HeldPod::new(pod.clone());
            assert_eq!(PHASES[held.phase_index()], counted, "{phase}");
            assert_eq!(held.is_terminal(), terminal, "{phase}");
        }

        let mut only_scratch = rich_pod();
        only_scratch
            .spec
            .as_mut()
            .unwrap()
            .volumes
            .as_mut()
            .unwrap()
            .retain(|v| v.empty_dir.is_some());
        assert!(!HeldPod::new(only_scratch).has_files());
    }

    #[test]
    fn a_held_pod_takes_less_than_half_the_room_of_a_decoded_one() {
        // A lower bound of the decoded pod's heap: the inline sizes of the structs the fixture
        // fills (their strings, vectors and maps come on top).
        use k8s_openapi::api::core::v1::{
            Container, ContainerStatus, PodCondition, Toleration, Volume,
        };
        use std::mem::size_of;
        let pod = rich_pod();
        let spec = pod.spec.as_ref().unwrap();
        let status = pod.status.as_ref().unwrap();
        let inline = size_of::<Pod>()
            + size_of::<Container>()
                * (spec.containers.len() + spec.init_containers.as_ref().map_or(0, Vec::len))
            + size_of::<Volume>() * spec.volumes.as_ref().map_or(0, Vec::len)
            + size_of::<Toleration>() * spec.tolerations.as_ref().map_or(0, Vec::len)
            + size_of::<ContainerStatus>() * 2
            + size_of::<PodCondition>() * status.conditions.as_ref().map_or(0, Vec::len);
        let held = HeldPod::new(pod.clone());
        assert!(
            held.heap_bytes() * 2 < inline,
            "held {} bytes, decoded at least {inline}",
            held.heap_bytes()
        );
    }
}
