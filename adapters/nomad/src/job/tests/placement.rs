//! Placement annotations and the operator's policy; network modes and ports.

use super::*;

/// The group network mode and ports by driver, `hostNetwork` and annotation: a pod on docker
/// or exec gets a network namespace of its own (bridge); the host's network only on raw_exec
/// or when the operator allows it.
#[test]
fn network_modes_and_ports_follow_the_driver_and_the_operator() {
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let pod = |driver: &str, host_network: bool, mode: Option<&str>, host_port: Option<u16>| {
        let mut c = web("Always");
        c["containers"][0]["ports"] = json!([{"name": "http", "containerPort": 80}]);
        if let Some(h) = host_port {
            c["containers"][0]["ports"][0]["hostPort"] = json!(h);
        }
        if host_network {
            c["hostNetwork"] = json!(true);
        }
        let mut ann = json!({ANN_DRIVER: driver});
        if let Some(m) = mode {
            ann[ANN_NETWORK_MODE] = json!(m);
        }
        pod_with_labels(ann, c, None)
    };
    let granted = |modes: &[&str]| JobSettings {
        policy: std::sync::Arc::new(NomadPolicy {
            base: NomadGrant {
                drivers: owned(&["docker", "exec", "raw_exec"]),
                network_modes: owned(modes),
                ..NomadGrant::default()
            },
            rules: Vec::new(),
        }),
        ..settings()
    };
    let strict = granted(&[]);
    let port = |v: i32| vec![Port { label: "main_http".into(), value: v, to: 80 }];
    // (driver, hostNetwork, annotation, hostPort) → (mode, reserved ports, docker network_mode)
    type Case = (&'static str, bool, Option<&'static str>, Option<u16>);
    type Want = (&'static str, Vec<Port>, Option<&'static str>);
    let cases: [(Case, Want); 7] = [
        (("docker", false, None, None), ("bridge", vec![], None)),
        (("docker", false, None, Some(8080)), ("bridge", port(8080), None)),
        (("exec", false, None, None), ("bridge", vec![], None)),
        (("raw_exec", false, None, None), ("host", port(80), None)),
        (("raw_exec", true, None, None), ("host", port(80), None)),
        (("docker", false, Some("none"), None), ("none", vec![], Some("none"))),
        (("docker", true, None, None), ("host", port(80), Some("host"))),
    ];
    let open = granted(&["host", "none"]);
    for ((driver, hn, mode, hp), (want, reserved, docker_mode)) in cases {
        let job = to_job(&pod(driver, hn, mode, hp), &open).unwrap().job;
        let g = &job.task_groups[0];
        let what = format!("{driver} hostNetwork={hn} annotation={mode:?} hostPort={hp:?}");
        assert_eq!(g.networks[0].mode, want, "{what}");
        assert_eq!(g.networks[0].reserved_ports, reserved, "{what}");
        assert!(g.networks[0].dynamic_ports.is_empty(), "{what}");
        assert_eq!(
            g.tasks[0].config.get("network_mode").and_then(Value::as_str),
            docker_mode,
            "{what}"
        );
    }
    // The host's network for a docker pod is the operator's to give, by either field.
    let err = to_job(&pod("docker", true, None, None), &strict).unwrap_err();
    assert_eq!(err.field, "spec.hostNetwork");
    assert!(
        err.reason.starts_with("network mode \"host\" is not allowed in namespace")
            && err.reason.contains("(allowed: \"bridge\"; set by --allowed-network-modes"),
        "{}",
        err.reason
    );
    let err = to_job(&pod("docker", false, Some("host"), None), &strict).unwrap_err();
    assert_eq!(err.field, format!("metadata.annotations[{ANN_NETWORK_MODE}]"));
    // raw_exec runs in the host's network whatever: its default needs no grant.
    assert!(to_job(&pod("raw_exec", true, None, None), &strict).is_ok());
}

#[test]
fn annotations_choose_placement() {
    let c = json!({"containers": [{"name": "c", "image": "i"}]});
    let job = translate_permissive(
        json!({
            ANN_DATACENTERS: "dc1, dc2",
            ANN_NODE_POOL: "gpu",
            ANN_PRIORITY: "70",
            ANN_NETWORK_MODE: "cni/mynet",
            ANN_DRIVER: "exec"
        }),
        json!({"containers": [{"name": "c", "image": "i", "command": ["true"]}]}),
    )
    .unwrap()
    .job;
    assert_eq!(job.datacenters, ["dc1", "dc2"]);
    assert_eq!(job.node_pool.as_deref(), Some("gpu"));
    assert_eq!(job.priority, Some(70));
    assert_eq!(job.task_groups[0].networks[0].mode, "cni/mynet");
    assert_eq!(job.task_groups[0].tasks[0].driver, "exec");
    let plain = translate_permissive(json!({}), c.clone()).unwrap().job;
    assert_eq!((plain.datacenters.as_slice(), plain.priority), (&["*".to_owned()][..], None));
    // The configured annotation wins over the generic one.
    let both = translate_permissive(
        json!({ANN_DRIVER: "exec", "virtual-kubelet.io/nomad-driver": "docker"}),
        c.clone(),
    )
    .unwrap()
    .job;
    assert_eq!(both.task_groups[0].tasks[0].driver, "docker");
    let host = translate_permissive(
        json!({ANN_NETWORK_MODE: "bridge"}),
        json!({"hostNetwork": true, "containers": [{"name": "c", "image": "i"}]}),
    );
    assert_eq!(host.unwrap_err().field, format!("metadata.annotations[{ANN_NETWORK_MODE}]"));
}

fn pod_with_labels(
    annotations: serde_json::Value,
    spec: serde_json::Value,
    labels: Option<&[(&str, &str)]>,
) -> WorkloadSpec {
    let mut w = WorkloadSpec::from_pod(&pod_json(annotations, spec), &inputs()).unwrap().spec;
    w.namespace_labels =
        labels.map(|l| l.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
    w
}

#[test]
fn a_fresh_install_lets_pods_choose_nothing() {
    let c = json!({"containers": [{"name": "c", "image": "i", "command": ["true"]}]});
    let mut s = settings();
    s.datacenters = vec!["dc1".into()];
    s.namespace = Some("k8s".into());
    s.region = Some("global".into());
    let cases = [
        (
            ANN_DRIVER,
            "raw_exec",
            "task driver \"raw_exec\" is not allowed in namespace \"team-a\" (allowed: \"docker\"; set by --allowed-drivers",
        ),
        ("virtual-kubelet.io/nomad-driver", "exec", "task driver \"exec\""),
        (
            ANN_NAMESPACE,
            "default",
            "Nomad namespace \"default\" is not allowed in namespace \"team-a\" (allowed: \"k8s\"; set by --allowed-nomad-namespaces",
        ),
        (ANN_REGION, "eu-west", "(allowed: \"global\"; set by --allowed-regions"),
        (
            ANN_NODE_POOL,
            "gpu",
            "node pool \"gpu\" is not allowed in namespace \"team-a\" (allowed: none; set by --nomad-node-pool, --allowed-node-pools",
        ),
        (
            ANN_PRIORITY,
            "51",
            "priority 51 is not allowed in namespace \"team-a\" (1 to 50; set by --max-priority",
        ),
        (ANN_PRIORITY, "100", "priority 100"),
        (
            ANN_NETWORK_MODE,
            "host",
            "network mode \"host\" is not allowed in namespace \"team-a\" (allowed: \"bridge\"; set by --allowed-network-modes",
        ),
        (
            ANN_DATACENTERS,
            "dc2",
            "datacenter \"dc2\" is not allowed in namespace \"team-a\" (allowed: \"dc1\"; set by --nomad-datacenters, --allowed-datacenters",
        ),
        (ANN_DATACENTERS, "dc1,*", "datacenter \"*\""),
    ];
    for (key, value, want) in cases {
        let err = translate_with(&s, json!({key: value}), c.clone()).map(|_| ()).unwrap_err();
        assert_eq!(err.field, format!("metadata.annotations[{key}]"), "{key}={value}");
        assert!(err.reason.contains(want), "{key}={value}: {err}");
        assert!(err.reason.contains("no policy-file rule selects namespace \"team-a\""), "{err}");
    }
    // What the pod would get anyway may be named; a lower priority is always allowed.
    for (key, value) in [
        (ANN_DRIVER, "docker"),
        (ANN_NAMESPACE, "k8s"),
        (ANN_REGION, "global"),
        (ANN_NETWORK_MODE, "bridge"),
        (ANN_DATACENTERS, "dc1"),
        (ANN_PRIORITY, "50"),
        (ANN_PRIORITY, "1"),
    ] {
        assert!(translate_with(&s, json!({key: value}), c.clone()).is_ok(), "{key}={value}");
    }
    // Without --nomad-namespace, Nomad's own "default" is the operator's.
    assert!(translate(json!({ANN_NAMESPACE: "default"}), c.clone()).is_ok());
}

/// `--nomad-node-pool` is the pool of every job whose pod names none, and a pod may name it; the
/// annotation chooses another pool only when the policy allows it.
#[test]
fn the_operators_node_pool_is_the_jobs_unless_a_pod_may_choose() {
    let c = json!({"containers": [{"name": "c", "image": "i", "command": ["true"]}]});
    let s = JobSettings { node_pool: Some("batch".into()), ..settings() };
    let job = |annotations| translate_with(&s, annotations, c.clone()).map(|p| p.job);
    assert_eq!(job(json!({})).unwrap().node_pool.as_deref(), Some("batch"));
    assert_eq!(job(json!({ANN_NODE_POOL: "batch"})).unwrap().node_pool.as_deref(), Some("batch"));
    let err = job(json!({ANN_NODE_POOL: "gpu"})).map(|_| ()).unwrap_err();
    assert!(err.reason.contains("(allowed: \"batch\"; set by --nomad-node-pool"), "{err}");
    let wider = JobSettings { node_pool: Some("batch".into()), ..permissive() };
    let gpu = translate_with(&wider, json!({ANN_NODE_POOL: "gpu"}), c.clone()).unwrap().job;
    assert_eq!(gpu.node_pool.as_deref(), Some("gpu"));
    // Unset, the job names no pool: Nomad's default for the namespace.
    assert_eq!(translate(json!({}), c).unwrap().job.node_pool, None);
}

#[test]
fn policy_file_rules_widen_the_grant_for_the_namespaces_they_select() {
    use vk_domain::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use vk_domain::policy::{NamespaceSelector, Rule};
    let c = json!({"containers": [{"name": "c", "image": "i", "command": ["true"]}]});
    let mut s = settings();
    let trusted = LabelSelector {
        match_labels: Some([("trust".to_owned(), "high".to_owned())].into()),
        ..Default::default()
    };
    s.policy = std::sync::Arc::new(NomadPolicy {
        base: NomadGrant { max_priority: Some(50), ..NomadGrant::default() },
        rules: vec![
            Rule {
                name: "team-a may exec".into(),
                namespaces: NamespaceSelector { names: ["team-a".to_owned()].into(), labels: None },
                grant: NomadGrant { drivers: vec!["exec".into()], ..NomadGrant::default() },
            },
            Rule {
                name: "trusted".into(),
                namespaces: NamespaceSelector { names: Default::default(), labels: Some(trusted) },
                grant: NomadGrant {
                    drivers: vec!["raw_exec".into()],
                    max_priority: Some(80),
                    node_pools: vec!["gpu".into()],
                    ..NomadGrant::default()
                },
            },
        ],
    });
    let high = Some(&[("trust", "high")][..]);
    let job = |ann: serde_json::Value, labels| to_job(&pod_with_labels(ann, c.clone(), labels), &s);
    assert!(job(json!({ANN_DRIVER: "exec"}), None).is_ok(), "selected by name");
    let err = job(json!({ANN_DRIVER: "raw_exec"}), None).unwrap_err();
    assert!(
        err.reason.contains("(allowed: \"docker\", \"exec\"; ")
            && err
                .reason
                .contains("policy-file rules \"team-a may exec\" select namespace \"team-a\""),
        "{err}"
    );
    assert!(job(json!({ANN_DRIVER: "raw_exec"}), high).is_ok(), "selected by label");
    assert!(job(json!({ANN_PRIORITY: "80", ANN_NODE_POOL: "gpu"}), high).is_ok());
    let err = job(json!({ANN_PRIORITY: "81"}), high).unwrap_err();
    assert!(err.reason.contains("1 to 80") && err.reason.contains("\"trusted\""), "{err}");
    assert!(job(json!({ANN_DRIVER: "raw_exec"}), Some(&[("trust", "low")][..])).is_err());
}

#[test]
fn namespace_and_region_annotations_place_the_job() {
    let c = json!({"containers": [{"name": "c", "image": "i"}]});
    let pj = translate_permissive(json!({ANN_NAMESPACE: "apps", ANN_REGION: "eu-west"}), c.clone())
        .unwrap();
    assert_eq!(pj.job.namespace.as_deref(), Some("apps"));
    assert_eq!(pj.job.region.as_deref(), Some("eu-west"));
    assert_eq!(pj.at.encode(), "k8s-team-a_web@apps@eu-west");
    let plain = translate_permissive(json!({}), c.clone()).unwrap();
    assert_eq!(plain.at, JobRef::local("k8s-team-a_web"));
    assert_eq!(plain.at.encode(), "k8s-team-a_web");
    for r in [
        JobRef::local("j"),
        JobRef { id: "j".into(), namespace: Some("n".into()), region: None },
        JobRef { id: "j".into(), namespace: None, region: Some("r".into()) },
        JobRef { id: "j".into(), namespace: Some("n".into()), region: Some("r".into()) },
    ] {
        assert_eq!(JobRef::parse(&r.encode()), r);
    }
    let err = translate_permissive(json!({ANN_REGION: "eu west"}), c).unwrap_err();
    assert_eq!(err.field, format!("metadata.annotations[{ANN_REGION}]"));
}
