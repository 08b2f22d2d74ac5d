use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::env::{Segment, Value};
use crate::inputs::{ServiceInfo, TokenSpec};
use crate::node::NodeCapacity;
use crate::security::Security;
use crate::volume::{File, Source};

fn pod_with(meta: serde_json::Value, spec: serde_json::Value) -> Pod {
    crate::testing::pod("web").uid("u-1").metadata(meta).spec(spec).build()
}

fn pod(spec: serde_json::Value) -> Pod {
    pod_with(json!({}), spec)
}

fn data(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Vec<u8>>> {
    Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect())
}

fn inputs() -> Inputs {
    let mut i = Inputs {
        node_allocatable: NodeCapacity {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            ephemeral_storage_bytes: 100 << 30,
            pods: None,
            ..Default::default()
        },
        ..Inputs::default()
    };
    i.config_maps.insert("app".into(), data(&[("mode", "fast"), ("LEVEL", "3"), ("bad=key", "x")]));
    i.config_maps.insert("gone".into(), None);
    i.secrets.insert("creds".into(), data(&[("password", "s3cr3t"), ("user", "admin")]));
    i.services.push(ServiceInfo {
        namespace: "default".into(),
        name: "kubernetes".into(),
        cluster_ip: "10.0.0.1".into(),
        ports: vec![("https".into(), 443, "TCP".into())],
    });
    i.services.push(ServiceInfo {
        namespace: "default".into(),
        name: "db".into(),
        cluster_ip: "10.0.0.5".into(),
        ports: vec![(String::new(), 5432, "TCP".into())],
    });
    i.services.push(ServiceInfo {
        namespace: "other".into(),
        name: "cache".into(),
        cluster_ip: "10.0.0.6".into(),
        ports: vec![(String::new(), 6379, "TCP".into())],
    });
    i.tokens.insert(TokenSpec { audience: String::new(), expiration_seconds: 3607 }, "tok".into());
    i
}

fn text(v: &Value) -> String {
    v.as_text().unwrap_or_else(|| panic!("not plain text: {v:?}"))
}

fn env_of<'a>(c: &'a ContainerSpec, name: &str) -> &'a Value {
    &c.env.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("no {name}")).value
}

#[test]
fn a_plain_pod_is_extracted_faithfully() {
    let p = pod(json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 5,
        "activeDeadlineSeconds": 60,
        "enableServiceLinks": false,
        "containers": [{
            "name": "main", "image": "busybox", "command": ["sleep"], "args": ["300"],
            "workingDir": "/tmp",
            "env": [{"name": "A", "value": "1"}, {"name": "B"}],
            "ports": [{"containerPort": 8080, "name": "http"}, {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"}],
            "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}},
            "securityContext": {"runAsUser": 1000}
        }]
    }));
    let t = WorkloadSpec::from_pod(&p, &inputs()).unwrap();
    let w = &t.spec;
    assert!(t.notices.is_empty());
    assert_eq!(w.key.to_string(), "default/web");
    assert_eq!(w.uid, "u-1");
    assert_eq!(w.restart_policy, RestartPolicy::Never);
    assert_eq!(w.termination_grace, Duration::from_secs(5));
    assert_eq!(w.active_deadline, Some(Duration::from_secs(60)));
    let c = &w.containers[0];
    assert_eq!(c.command, vec![Value::text("sleep")]);
    assert_eq!(c.args, vec![Value::text("300")]);
    assert_eq!(c.working_dir.as_deref(), Some("/tmp"));
    let names: Vec<&str> = c.env.iter().map(|e| e.name.as_str()).collect();
    // Links off: only the `kubernetes` Service's variables after the container's own.
    assert_eq!(&names[..2], ["A", "B"]);
    assert!(names.contains(&"KUBERNETES_SERVICE_HOST"));
    assert!(!names.contains(&"DB_SERVICE_HOST"));
    assert_eq!(text(env_of(c, "B")), "");
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
    assert_eq!(c.security.run_as_user, Some(1000));
}

/// A pod whose container reads every kind of environment source: `envFrom` a ConfigMap (with a
/// prefix) and a Secret, key references, the downward API, resources, optional inputs that are
/// absent, and `$(VAR)` references in values and in the command.
fn env_pod() -> Pod {
    pod_with(
        json!({"labels": {"app": "web"}, "annotations": {"team": "a"}}),
        json!({
            "nodeName": "vk", "serviceAccountName": "robot",
            "containers": [{
                "name": "main", "image": "i",
                "command": ["run", "--pass=$(PASS)", "--ip=$(MY_IP)", "--mode=$(CFG_mode)", "$(NOPE)"],
                "resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "256Mi"}},
                "envFrom": [
                    {"configMapRef": {"name": "app"}, "prefix": "CFG_"},
                    {"secretRef": {"name": "creds"}}
                ],
                "env": [
                    {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "LEVEL"}}},
                    {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "URL", "value": "postgres://$(user):$(PASS)@$(DB_SERVICE_HOST)/x"},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['team']"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                    {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                    {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
                    {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                    {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
                    {"name": "OPT_KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope", "optional": true}}},
                    {"name": "CFG_mode", "value": "override-$(CFG_mode)"}
                ]
            }]
        }),
    )
}

#[test]
fn environment_is_resolved_like_the_kubelet() {
    let p = env_pod();
    let t = WorkloadSpec::from_pod(&p, &inputs()).unwrap();
    let c = &t.spec.containers[0];
    let cases = [
        ("LEVEL", "3"),
        ("CFG_LEVEL", "3"),
        ("CFG_mode", "override-fast"),
        ("POD", "web"),
        ("NS", "default"),
        ("UID", "u-1"),
        ("APP", "web"),
        ("TEAM", "a"),
        ("NODE", "vk"),
        ("SA", "robot"),
        ("CPU_M", "250"),
        ("CPU_LIMIT", "4"),
        ("MEM_MI", "256"),
        ("DB_SERVICE_HOST", "10.0.0.5"),
        ("KUBERNETES_SERVICE_PORT", "443"),
    ];
    for (name, want) in cases {
        assert_eq!(text(env_of(c, name)), want, "{name}");
    }
    assert_eq!(env_of(c, "PASS"), &Value(vec![Segment::Secret("s3cr3t".into())]));
    assert_eq!(env_of(c, "user"), &Value(vec![Segment::Secret("admin".into())]));
    assert_eq!(
        env_of(c, "URL"),
        &Value(vec![
            Segment::Text("postgres://".into()),
            Segment::Secret("admin".into()),
            Segment::Text(":".into()),
            Segment::Secret("s3cr3t".into()),
            Segment::Text("@10.0.0.5/x".into()),
        ])
    );
    assert_eq!(env_of(c, "MY_IP"), &Value(vec![Segment::PodIp]));
    assert_eq!(env_of(c, "HOST_IP"), &Value(vec![Segment::HostIp]));
    assert!(
        c.env
            .iter()
            .all(|e| e.name != "OPT" && e.name != "OPT_KEY" && e.name != "CACHE_SERVICE_HOST")
    );
    assert!(crate::env::duplicates(&c.env).is_empty());
    // Secret and run-time values reach arguments by name; text is inlined; unknowns stay.
    assert_eq!(
        c.command[1],
        Value(vec![Segment::Text("--pass=".into()), Segment::EnvRef("PASS".into())])
    );
    assert_eq!(
        c.command[2],
        Value(vec![Segment::Text("--ip=".into()), Segment::EnvRef("MY_IP".into())])
    );
    assert_eq!(c.command[3], Value::text("--mode=override-fast"));
    assert_eq!(c.command[4], Value::text("$(NOPE)"));
    let reasons: Vec<&str> = t.notices.iter().map(|n| n.reason).collect();
    assert_eq!(
        reasons,
        [
            "InvalidEnvironmentVariableNames",
            "OptionalConfigMapNotFound",
            "OptionalSecretKeyNotFound"
        ]
    );
    assert_eq!(
        t.notices[0].message,
        "Keys [CFG_bad=key] from the EnvFrom configMap default/app were skipped since they are considered invalid environment variable names."
    );
}

#[test]
fn missing_mandatory_inputs_keep_the_pod_waiting() {
    let c =
        |env: serde_json::Value| json!({"containers": [{"name": "c", "image": "i", "env": env}]});
    let cases = [
        (
            c(
                json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]),
            ),
            "MandatoryConfigMapNotFound",
            "configmap default/gone not found",
        ),
        (
            c(
                json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "k"}}}]),
            ),
            "MandatoryConfigMapKeyNotFound",
            "key \"k\" not found in configmap default/app",
        ),
        (
            c(
                json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]),
            ),
            "MandatorySecretNotFound",
            "secret default/absent not found",
        ),
        (
            c(json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}])),
            "MandatorySecretKeyNotFound",
            "key \"k\" not found in secret default/creds",
        ),
        (
            json!({"containers": [{"name": "c", "image": "i", "envFrom": [{"configMapRef": {"name": "gone"}}]}]}),
            "MandatoryConfigMapNotFound",
            "configmap default/gone not found",
        ),
        (
            json!({"containers": [{"name": "c", "image": "i"}], "volumes": [{"name": "cfg", "configMap": {"name": "gone"}}]}),
            "FailedMount",
            "MountVolume.SetUp failed for volume \"cfg\" : configmap default/gone not found",
        ),
        (
            json!({"containers": [{"name": "c", "image": "i"}], "volumes": [{"name": "s", "secret": {"secretName": "creds", "items": [{"key": "nope", "path": "p"}]}}]}),
            "FailedMount",
            "MountVolume.SetUp failed for volume \"s\" : secret default/creds has no key \"nope\"",
        ),
        (
            json!({"containers": [{"name": "c", "image": "i"}], "volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "audience": "vault"}}]}}]}),
            "FailedMount",
            "the service account token has not been obtained",
        ),
    ];
    for (spec, reason, message) in cases {
        match WorkloadSpec::from_pod(&pod(spec.clone()), &inputs()) {
            Err(Refusal::Missing(m)) => {
                assert_eq!(m.reason, reason, "{spec}");
                assert!(m.message.contains(message), "{spec}: {}", m.message);
            }
            other => panic!("{spec}: {other:?}"),
        }
    }
}

#[test]
fn volumes_become_files_and_shared_directories() {
    let p = pod_with(
        json!({"labels": {"app": "web", "tier": "front"}}),
        json!({
            "containers": [{
                "name": "c", "image": "i",
                "resources": {"limits": {"memory": "1Gi"}},
                "volumeMounts": [
                    {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true},
                    {"name": "scratch", "mountPath": "/scratch", "subPath": "a/b"}
                ]
            }],
            "volumes": [
                {"name": "cfg", "configMap": {"name": "app", "defaultMode": 0o600}},
                {"name": "pick", "secret": {"secretName": "creds", "items": [{"key": "password", "path": "db/pass", "mode": 0o400}]}},
                {"name": "opt", "configMap": {"name": "gone", "optional": true}},
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}
                ]}},
                {"name": "kube-api-access-abcde", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {"configMap": {"name": "app", "items": [{"key": "mode", "path": "mode"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
                ]}},
                {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}
            ]
        }),
    );
    let w = WorkloadSpec::from_pod(&p, &inputs()).unwrap().spec;
    let files = |name: &str| match &w.volumes.iter().find(|v| v.name == name).unwrap().source {
        Source::Files(f) => f.clone(),
        other => panic!("{other:?}"),
    };
    let f = |path: &str, data: &str, mode: u32, secret: bool| File {
        path: path.into(),
        data: data.as_bytes().to_vec(),
        mode,
        secret,
    };
    assert_eq!(
        files("cfg"),
        vec![
            f("LEVEL", "3", 0o600, false),
            f("bad=key", "x", 0o600, false),
            f("mode", "fast", 0o600, false)
        ]
    );
    assert_eq!(files("pick"), vec![f("db/pass", "s3cr3t", 0o400, true)]);
    assert_eq!(files("opt"), vec![]);
    assert_eq!(
        files("info"),
        vec![
            f("labels", "app=\"web\"\ntier=\"front\"", 0o644, false),
            f("mem", "1024", 0o644, false)
        ]
    );
    assert_eq!(
        files("kube-api-access-abcde"),
        vec![
            f("token", "tok", 0o644, true),
            f("mode", "fast", 0o644, false),
            f("namespace", "default", 0o644, false)
        ]
    );
    assert_eq!(
        w.volumes.last().unwrap().source,
        Source::EmptyDir { memory: true, size_limit_bytes: Some(64 << 20) }
    );
    // Which volumes read Secret data, and which may gain or lose files while the pod runs
    // (every key of an object, or an optional object): the kubelet adds and removes those.
    let kinds: Vec<(&str, bool, bool)> =
        w.volumes.iter().map(|v| (v.name.as_str(), v.secret, v.keys_may_change)).collect();
    assert_eq!(
        kinds,
        [
            ("cfg", false, true),
            ("pick", true, false),
            ("opt", false, true),
            ("info", false, false),
            ("kube-api-access-abcde", true, false),
            ("scratch", false, false)
        ]
    );
    let m = &w.containers[0].mounts;
    assert_eq!(
        (m[0].volume.as_str(), m[0].mount_path.as_str(), m[0].read_only),
        ("cfg", "/etc/cfg", true)
    );
    assert_eq!(m[1].sub_path.as_deref(), Some("a/b"));
}

#[test]
fn init_containers_and_sidecars_are_kept_in_order() {
    let p = pod(json!({
        "initContainers": [
            {"name": "setup", "image": "i"},
            {"name": "proxy", "image": "i", "restartPolicy": "Always"},
            {"name": "migrate", "image": "i"}
        ],
        "containers": [{"name": "app", "image": "i"}]
    }));
    let w = WorkloadSpec::from_pod(&p, &inputs()).unwrap().spec;
    let init: Vec<(&str, bool)> =
        w.init_containers.iter().map(|c| (c.name.as_str(), c.sidecar)).collect();
    assert_eq!(init, [("setup", false), ("proxy", true), ("migrate", false)]);
    let all: Vec<&str> = w.all_containers().map(|c| c.name.as_str()).collect();
    assert_eq!(all, ["setup", "proxy", "migrate", "app"]);
}

#[test]
fn defaults_apply() {
    let p = pod(json!({"containers": [{"name": "c", "image": "i"}]}));
    let w = WorkloadSpec::from_pod(&p, &inputs()).unwrap().spec;
    assert_eq!(w.restart_policy, RestartPolicy::Always);
    assert_eq!(w.termination_grace, DEFAULT_GRACE);
    assert_eq!(w.active_deadline, None);
    assert_eq!(w.containers[0].security, Security::default());
}

#[test]
fn a_pod_larger_than_the_whole_node_is_not_admitted() {
    let spec = |init_mem: &str, a: &str, b: &str| {
        json!({
            "initContainers": [{"name": "i", "image": "i", "resources": {"requests": {"memory": init_mem}}}],
            "containers": [
                {"name": "a", "image": "i", "resources": {"requests": {"memory": a, "cpu": "1"}}},
                {"name": "b", "image": "i", "resources": {"requests": {"memory": b}}}
            ]
        })
    };
    // The node offers 8 GiB and 4 cores (inputs()).
    assert!(WorkloadSpec::from_pod(&pod(spec("8Gi", "4Gi", "4Gi")), &inputs()).is_ok());
    let err = |s| match WorkloadSpec::from_pod(&pod(s), &inputs()) {
        Err(Refusal::Rejected(r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        err(spec("1Gi", "4Gi", "5Gi")),
        Rejection::new(
            "OutOfmemory",
            "Node didn't have enough resource: memory, requested: 9663676416, used: 0, capacity: 8589934592"
        ),
        "the app containers' sum"
    );
    let init = err(spec("9Gi", "1Gi", "1Gi"));
    assert!(init.message.contains("requested: 9663676416"), "the largest init container");
    let mut unknown = inputs();
    unknown.node_allocatable = NodeCapacity::default();
    assert!(
        WorkloadSpec::from_pod(&pod(spec("9Gi", "9Gi", "9Gi")), &unknown).is_ok(),
        "not judged before the node's allocatable is known"
    );
}

/// The kubelet's admission of the pod's OS: `spec.os.name` and a `kubernetes.io/os` node
/// selector must be the node's.
#[test]
fn pods_for_another_os_are_rejected_as_the_kubelet_rejects_them() {
    let c = json!([{"name": "c", "image": "i"}]);
    let reason = |spec: serde_json::Value, node_os: &str| {
        let mut i = inputs();
        i.node_os = node_os.into();
        match WorkloadSpec::from_pod(&pod(spec), &i) {
            Ok(_) => None,
            Err(Refusal::Rejected(r)) => Some(r.reason),
            Err(other) => panic!("{other:?}"),
        }
    };
    let windows = json!({"os": {"name": "windows"}, "containers": c});
    assert_eq!(reason(windows.clone(), ""), Some("PodOSNotSupported"));
    assert_eq!(reason(windows, "windows"), None);
    assert_eq!(reason(json!({"os": {"name": "linux"}, "containers": c}), "linux"), None);
    assert_eq!(
        reason(json!({"nodeSelector": {"kubernetes.io/os": "windows"}, "containers": c}), "linux"),
        Some("PodOSSelectorNodeLabelDoesNotMatch")
    );
}

/// `subPathExpr` expands `$(VAR)` from the container's environment (downward API included),
/// as the kubelet's `ExpandContainerVolumeMounts`; an unknown variable stays as written; a
/// run-time value or an escape from the volume is refused.
#[test]
fn sub_path_exprs_expand_from_the_environment() {
    let mount = |expr: &str| {
        let p = pod(json!({
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{"name": "c", "image": "i",
                "env": [
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "UP", "value": ".."}
                ],
                "volumeMounts": [{"name": "data", "mountPath": "/data", "subPathExpr": expr}]}]
        }));
        match WorkloadSpec::from_pod(&p, &inputs()) {
            Ok(t) => Ok(t.spec.containers[0].mounts[0].sub_path.clone()),
            Err(Refusal::Unsupported(u)) => Err(u.reason),
            Err(other) => panic!("{other:?}"),
        }
    };
    assert_eq!(mount("logs/$(POD)"), Ok(Some("logs/web".into())));
    assert_eq!(mount("$(NOPE)"), Ok(Some("$(NOPE)".into())));
    assert!(mount("$(IP)").unwrap_err().contains("run-time value"));
    // An expansion the kubelet cannot mount: the container waits in
    // CreateContainerConfigError (Event Failed) rather than the pod failing.
    for expr in ["$(UP)/x", "/abs/$(POD)"] {
        let p = pod(json!({
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{"name": "c", "image": "i", "env": [{"name": "UP", "value": ".."}],
                "volumeMounts": [{"name": "data", "mountPath": "/data", "subPathExpr": expr}]}]
        }));
        match WorkloadSpec::from_pod(&p, &inputs()) {
            Err(Refusal::Missing(m)) => {
                assert_eq!(m.reason, "Failed");
                assert!(m.message.starts_with("failed to prepare subPath for volumeMount \"data\" of container \"c\": path "), "{m}");
            }
            other => panic!("{expr}: {other:?}"),
        }
    }
}

/// The kubelet's sysctl admission: the safe set only (either separator), and no `net.*`
/// in the host's network namespace.
#[test]
fn sysctls_are_admitted_as_the_kubelet_admits_them() {
    let reason = |sysctl: &str, host_network: bool| {
        let p = pod(json!({"hostNetwork": host_network,
            "securityContext": {"sysctls": [{"name": sysctl, "value": "1"}]},
            "containers": [{"name": "c", "image": "i"}]}));
        match WorkloadSpec::from_pod(&p, &inputs()) {
            Ok(_) => None,
            Err(Refusal::Rejected(r)) => Some(r.to_string()),
            Err(other) => panic!("{other:?}"),
        }
    };
    assert_eq!(reason("kernel.shm_rmid_forced", false), None);
    assert_eq!(reason("net/ipv4/tcp_syncookies", false), None);
    assert_eq!(reason("kernel.shm_rmid_forced", true), None);
    assert_eq!(
        reason("kernel.msgmax", false).as_deref(),
        Some("SysctlForbidden: forbidden sysctl: \"kernel.msgmax\" not allowlisted")
    );
    assert_eq!(
        reason("net.ipv4.tcp_syncookies", true).as_deref(),
        Some(
            "SysctlForbidden: forbidden sysctl: \"net.ipv4.tcp_syncookies\" not allowed with host net enabled"
        )
    );
    assert_eq!(sysctl_name("net/ipv4/conf/eno2.100/rp_filter"), "net.ipv4.conf.eno2/100.rp_filter");
    assert_eq!(sysctl_name("kernel.shm_rmid_forced"), "kernel.shm_rmid_forced");
}

/// `runAsNonRoot` with an explicit root user: the kubelet's `verifyRunAsNonRoot` error, the
/// container waiting in CreateContainerConfigError with an Event `Failed`.
#[test]
fn an_explicit_root_user_breaks_the_non_root_policy() {
    let p = pod(json!({"securityContext": {"runAsNonRoot": true},
                       "containers": [{"name": "c", "image": "i", "securityContext": {"runAsUser": 0}}]}));
    match WorkloadSpec::from_pod(&p, &inputs()) {
        Err(Refusal::Missing(m)) => assert_eq!(
            (m.reason, m.message.as_str()),
            (
                "Failed",
                "container's runAsUser breaks non-root policy (pod: \"web_default(u-1)\", container: c)"
            )
        ),
        other => panic!("{other:?}"),
    }
}

/// The shared corpus (`tests/corpus/unsupported.json`): every case the domain refuses names
/// its field; the cases refused by a backend's adapter (`"adapter": true`: for Nomad, `vk-nomad`)
/// pass here.
#[test]
fn the_unsupported_corpus_names_each_field() {
    let corpus: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("../../../tests/corpus/unsupported.json")).unwrap();
    assert!(corpus.len() >= 30);
    for case in corpus {
        let p = corpus_pod(&case);
        let result = WorkloadSpec::from_pod(&p, &inputs());
        if case["adapter"] == json!(true) {
            assert!(result.is_ok(), "{}: {result:?}", case["case"]);
            continue;
        }
        match result {
            Err(Refusal::Unsupported(u)) => {
                assert_eq!(u.field, case["field"].as_str().unwrap(), "{}", case["case"]);
                let msg = u.to_string();
                let want = case["message"].as_str().unwrap();
                assert!(msg.contains(want), "{}: {msg:?} lacks {want:?}", case["case"]);
            }
            other => panic!("{}: {other:?}", case["case"]),
        }
    }
}

/// A corpus case as a pod: one `main` container running `sleep 3600`, merged with the case's
/// `container` (a `null` removes a field), `spec` and `annotations`.
pub(crate) fn corpus_pod(case: &serde_json::Value) -> Pod {
    let mut container = json!({"name": "main", "image": "busybox", "command": ["sleep", "3600"]});
    for (k, v) in case["container"].as_object().into_iter().flatten() {
        if v.is_null() {
            container.as_object_mut().unwrap().remove(k);
        } else {
            container[k] = v.clone();
        }
    }
    let mut spec = json!({"containers": [container]});
    for (k, v) in case["spec"].as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    let ann = case.get("annotations").cloned().unwrap_or(json!({}));
    pod_with(json!({"annotations": ann}), spec)
}
