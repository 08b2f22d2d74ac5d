//! What a pod asks a backend to run, checked and normalised: the pure first half of turning a pod
//! into a backend workload. Everything the virtual kubelet cannot honour yet is refused here with
//! an [`Unsupported`] error naming the field, instead of being silently dropped.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Volume};

use crate::error::Unsupported;
use crate::pod::{self, PodKey, RestartPolicy};
use crate::quantity;

/// Kubernetes' default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// A pod ready to be handed to a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSpec {
    /// The pod's `namespace/name`.
    pub key: PodKey,
    /// The pod's `metadata.uid`, recorded by the backend to tell a re-created pod from the old one.
    pub uid: String,
    /// `spec.restartPolicy`.
    pub restart_policy: RestartPolicy,
    /// `spec.terminationGracePeriodSeconds`: how long a container has between the stop signal and
    /// the kill.
    pub termination_grace: Duration,
    /// The value of the pod's driver annotation, when it has one (the backend's default otherwise).
    pub driver: Option<String>,
    /// `spec.containers`, in order.
    pub containers: Vec<ContainerSpec>,
}

/// One container of the pod.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerSpec {
    /// `name`.
    pub name: String,
    /// `image`.
    pub image: String,
    /// `command` (the image's entrypoint when empty).
    pub command: Vec<String>,
    /// `args` (the image's cmd when empty).
    pub args: Vec<String>,
    /// `workingDir`.
    pub working_dir: Option<String>,
    /// `env`, plain values only, in order; later entries win on duplicate names.
    pub env: Vec<(String, String)>,
    /// `ports`.
    pub ports: Vec<PortSpec>,
    /// `resources`.
    pub resources: Resources,
}

/// A container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// `name`, if given.
    pub name: Option<String>,
    /// `containerPort`, 1–65535.
    pub container_port: u16,
    /// `hostPort`, when the pod asks for a fixed port on the host.
    pub host_port: Option<u16>,
    /// `protocol`: `TCP` (default), `UDP` or `SCTP`.
    pub protocol: String,
}

/// A container's resource requests and limits, in kubelet units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// `requests.cpu` in millicores (1000 = one core).
    pub cpu_request_millis: Option<u64>,
    /// `limits.cpu` in millicores.
    pub cpu_limit_millis: Option<u64>,
    /// `requests.memory` in bytes.
    pub memory_request_bytes: Option<u64>,
    /// `limits.memory` in bytes.
    pub memory_limit_bytes: Option<u64>,
}

impl WorkloadSpec {
    /// Checks `pod` and extracts what a backend needs to run it.
    ///
    /// `driver_annotation` is the annotation key whose value overrides the backend's default task
    /// driver for this pod.
    ///
    /// # Errors
    /// [`Unsupported`] naming the first field that cannot be honoured yet: init or ephemeral
    /// containers, volumes other than the service-account token volume the API server injects,
    /// `env[].valueFrom`, `envFrom`, probes, lifecycle hooks, `runAsUser`/`runAsGroup`, a
    /// malformed quantity or port, or a pod without a name, UID or containers.
    pub fn from_pod(pod: &Pod, driver_annotation: &str) -> Result<Self, Unsupported> {
        let key = PodKey::of(pod).map_err(|e| Unsupported::new("metadata", e.to_string()))?;
        let uid = pod::uid(pod);
        if uid.is_empty() {
            return Err(Unsupported::new("metadata.uid", "the pod has no UID"));
        }
        let spec =
            pod.spec.as_ref().ok_or_else(|| Unsupported::new("spec", "the pod has no spec"))?;
        check_pod_spec(spec)?;
        if spec.containers.is_empty() {
            return Err(Unsupported::new("spec.containers", "the pod has no containers"));
        }
        let containers = spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| container(&format!("spec.containers[{i}]"), c))
            .collect::<Result<Vec<_>, _>>()?;
        let grace = spec
            .termination_grace_period_seconds
            .map_or(DEFAULT_GRACE, |s| Duration::from_secs(s.max(0).unsigned_abs()));
        let driver = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(driver_annotation))
            .filter(|d| !d.is_empty())
            .cloned();
        Ok(Self {
            key,
            uid: uid.to_owned(),
            restart_policy: RestartPolicy::of(pod),
            termination_grace: grace,
            driver,
            containers,
        })
    }
}

fn check_pod_spec(spec: &PodSpec) -> Result<(), Unsupported> {
    if spec.init_containers.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(Unsupported::new(
            "spec.initContainers",
            "init containers are not supported yet",
        ));
    }
    if spec.ephemeral_containers.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(Unsupported::new(
            "spec.ephemeralContainers",
            "ephemeral containers are not supported",
        ));
    }
    if let Some(sc) = &spec.security_context
        && (sc.run_as_user.is_some() || sc.run_as_group.is_some())
    {
        return Err(Unsupported::new(
            "spec.securityContext",
            "runAsUser and runAsGroup are not supported yet",
        ));
    }
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        if !is_service_account_volume(v) {
            return Err(Unsupported::new(
                format!("spec.volumes[{i}]"),
                format!("volume {:?} of type {} is not supported yet", v.name, volume_type(v)),
            ));
        }
    }
    Ok(())
}

/// The projected `kube-api-access-*` volume that the ServiceAccount admission plugin adds to every
/// pod (token, `kube-root-ca.crt` and namespace). It is accepted so ordinary pods run; its files
/// are not materialised yet (see README, "Limitations").
pub fn is_service_account_volume(v: &Volume) -> bool {
    v.name.starts_with("kube-api-access-")
        && v.projected
            .as_ref()
            .is_some_and(|p| p.sources.iter().flatten().any(|s| s.service_account_token.is_some()))
}

/// The name of a volume's source type as written in a pod spec (`configMap`, `hostPath`, ...).
pub fn volume_type(v: &Volume) -> &'static str {
    let types: [(&'static str, bool); 16] = [
        ("configMap", v.config_map.is_some()),
        ("secret", v.secret.is_some()),
        ("emptyDir", v.empty_dir.is_some()),
        ("hostPath", v.host_path.is_some()),
        ("projected", v.projected.is_some()),
        ("downwardAPI", v.downward_api.is_some()),
        ("persistentVolumeClaim", v.persistent_volume_claim.is_some()),
        ("nfs", v.nfs.is_some()),
        ("csi", v.csi.is_some()),
        ("ephemeral", v.ephemeral.is_some()),
        ("image", v.image.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
        ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
        ("azureDisk", v.azure_disk.is_some()),
        ("azureFile", v.azure_file.is_some()),
    ];
    types.iter().find(|(_, set)| *set).map_or("unknown", |(n, _)| n)
}

fn container(field: &str, c: &Container) -> Result<ContainerSpec, Unsupported> {
    let image = c.image.clone().filter(|i| !i.is_empty());
    let image = image.ok_or_else(|| Unsupported::new(format!("{field}.image"), "no image"))?;
    let unsupported = [
        ("envFrom", c.env_from.as_ref().is_some_and(|v| !v.is_empty())),
        ("readinessProbe", c.readiness_probe.is_some()),
        ("livenessProbe", c.liveness_probe.is_some()),
        ("startupProbe", c.startup_probe.is_some()),
        ("lifecycle", c.lifecycle.is_some()),
    ];
    if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(Unsupported::new(format!("{field}.{name}"), "not supported yet"));
    }
    if let Some(sc) = &c.security_context
        && (sc.run_as_user.is_some() || sc.run_as_group.is_some())
    {
        return Err(Unsupported::new(
            format!("{field}.securityContext"),
            "runAsUser and runAsGroup are not supported yet",
        ));
    }
    let mut env = Vec::new();
    for (i, e) in c.env.iter().flatten().enumerate() {
        if e.value_from.is_some() {
            return Err(Unsupported::new(
                format!("{field}.env[{i}].valueFrom"),
                "not supported yet",
            ));
        }
        env.push((e.name.clone(), e.value.clone().unwrap_or_default()));
    }
    let mut ports = Vec::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let f = format!("{field}.ports[{i}]");
        let port = |v: i32, what: &str| {
            u16::try_from(v).ok().filter(|p| *p > 0).ok_or_else(|| {
                Unsupported::new(format!("{f}.{what}"), format!("{v} is not a port number"))
            })
        };
        ports.push(PortSpec {
            name: p.name.clone(),
            container_port: port(p.container_port, "containerPort")?,
            host_port: p.host_port.filter(|h| *h != 0).map(|h| port(h, "hostPort")).transpose()?,
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        });
    }
    let mut resources = Resources::default();
    if let Some(r) = &c.resources {
        let get = |m: &Option<std::collections::BTreeMap<String, _>>, kind: &str, res: &str| {
            m.as_ref().and_then(|m| m.get(res)).map(
                |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
                    (format!("{field}.resources.{kind}.{res}"), q.0.clone())
                },
            )
        };
        let cpu = |k| get(if k == "requests" { &r.requests } else { &r.limits }, k, "cpu");
        let mem = |k| get(if k == "requests" { &r.requests } else { &r.limits }, k, "memory");
        resources.cpu_request_millis =
            cpu("requests").map(|(f, q)| quantity::cpu_millis(&f, &q)).transpose()?;
        resources.cpu_limit_millis =
            cpu("limits").map(|(f, q)| quantity::cpu_millis(&f, &q)).transpose()?;
        resources.memory_request_bytes =
            mem("requests").map(|(f, q)| quantity::bytes(&f, &q)).transpose()?;
        resources.memory_limit_bytes =
            mem("limits").map(|(f, q)| quantity::bytes(&f, &q)).transpose()?;
    }
    Ok(ContainerSpec {
        name: c.name.clone(),
        image,
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        env,
        ports,
        resources,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ANN: &str = "virtual-kubelet.io/nomad-driver";

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web", "uid": "u-1",
                         "annotations": {ANN: "raw_exec"}},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn a_plain_pod_is_extracted_faithfully() {
        let p = pod(json!({
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "main", "image": "busybox", "command": ["sleep"], "args": ["300"],
                "workingDir": "/tmp",
                "env": [{"name": "A", "value": "1"}, {"name": "B"}],
                "ports": [{"containerPort": 8080, "name": "http"}, {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"}],
                "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}
            }]
        }));
        let w = WorkloadSpec::from_pod(&p, ANN).unwrap();
        assert_eq!(w.key.to_string(), "default/web");
        assert_eq!(w.uid, "u-1");
        assert_eq!(w.restart_policy, RestartPolicy::Never);
        assert_eq!(w.termination_grace, Duration::from_secs(5));
        assert_eq!(w.driver.as_deref(), Some("raw_exec"));
        let c = &w.containers[0];
        assert_eq!(
            (c.command.as_slice(), c.args.as_slice()),
            (&["sleep".to_owned()][..], &["300".to_owned()][..])
        );
        assert_eq!(c.working_dir.as_deref(), Some("/tmp"));
        assert_eq!(c.env, vec![("A".into(), "1".into()), ("B".into(), String::new())]);
        assert_eq!(
            c.ports[0],
            PortSpec {
                name: Some("http".into()),
                container_port: 8080,
                host_port: None,
                protocol: "TCP".into()
            }
        );
        assert_eq!(c.ports[1].host_port, Some(5353));
        assert_eq!(
            c.resources,
            Resources {
                cpu_request_millis: Some(250),
                cpu_limit_millis: Some(1000),
                memory_request_bytes: Some(64 << 20),
                memory_limit_bytes: Some(128 << 20)
            }
        );
    }

    #[test]
    fn defaults_apply() {
        let p = pod(json!({"containers": [{"name": "c", "image": "i"}]}));
        let w = WorkloadSpec::from_pod(&p, "other-annotation").unwrap();
        assert_eq!(w.restart_policy, RestartPolicy::Always);
        assert_eq!(w.termination_grace, DEFAULT_GRACE);
        assert_eq!(w.driver, None);
    }

    #[test]
    fn unsupported_fields_are_named() {
        let c = json!({"name": "c", "image": "i"});
        let cases = [
            (json!({"containers": [c], "initContainers": [c]}), "spec.initContainers"),
            (
                json!({"containers": [c], "volumes": [{"name": "data", "hostPath": {"path": "/x"}}]}),
                "spec.volumes[0]",
            ),
            (
                json!({"containers": [{"name": "c", "image": "i", "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]}),
                "spec.containers[0].env[0].valueFrom",
            ),
            (
                json!({"containers": [c, {"name": "d", "image": "i", "resources": {"limits": {"memory": "12Qi"}}}]}),
                "spec.containers[1].resources.limits.memory",
            ),
            (
                json!({"containers": [{"name": "c", "image": "i", "readinessProbe": {"exec": {"command": ["true"]}}}]}),
                "spec.containers[0].readinessProbe",
            ),
            (json!({"containers": [{"name": "c"}]}), "spec.containers[0].image"),
            (json!({"containers": []}), "spec.containers"),
        ];
        for (spec, field) in cases {
            let err = WorkloadSpec::from_pod(&pod(spec.clone()), ANN).unwrap_err();
            assert_eq!(err.field, field, "{spec}");
        }
        let err = WorkloadSpec::from_pod(
            &pod(json!({"containers": [c], "volumes": [{"name": "data", "hostPath": {"path": "/x"}}]})),
            ANN,
        )
        .unwrap_err();
        assert_eq!(err.reason, "volume \"data\" of type hostPath is not supported yet");
    }

    #[test]
    fn the_injected_service_account_volume_is_accepted() {
        let p = pod(json!({
            "containers": [{"name": "c", "image": "i"}],
            "volumes": [{"name": "kube-api-access-x2x9z", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
            ]}}]
        }));
        assert!(WorkloadSpec::from_pod(&p, ANN).is_ok());
    }
}
