//! Security contexts per driver.

use super::*;

#[test]
fn users_follow_the_driver() {
    let spec = |sc: serde_json::Value| json!({"containers": [{"name": "c", "image": "i", "command": ["id"], "securityContext": sc}]});
    let docker =
        translate_permissive(json!({}), spec(json!({"runAsUser": 1000, "runAsGroup": 3000})))
            .unwrap();
    assert_eq!(docker.job.task_groups[0].tasks[0].user, "1000:3000");
    let raw = json!({ANN_DRIVER: "raw_exec"});
    let r = translate_permissive(raw.clone(), spec(json!({"runAsUser": 65534}))).unwrap();
    assert_eq!(r.job.task_groups[0].tasks[0].user, "nobody");
    let err = translate_permissive(raw, spec(json!({"runAsUser": 1000}))).unwrap_err();
    assert_eq!(err.field, "spec.containers[0].securityContext.runAsUser");
}

#[test]
fn security_contexts_map_to_docker_options() {
    let spec = |pod_sc: serde_json::Value, sc: serde_json::Value| json!({"securityContext": pod_sc, "containers": [{"name": "c", "image": "i", "securityContext": sc}]});
    let t = translate(
            json!({}),
            spec(
                json!({"fsGroup": 2000, "supplementalGroups": [3000, 2000],
                       "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/audit.json"},
                       "seLinuxOptions": {"level": "s0:c123,c456", "type": "spc_t"}}),
                json!({"runAsUser": 1000, "runAsNonRoot": true, "privileged": false,
                       "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                       "capabilities": {"add": ["NET_BIND_SERVICE", "CAP_SYS_TIME"], "drop": ["ALL"]},
                       "appArmorProfile": {"type": "Localhost", "localhostProfile": "k8s-apparmor-example"}}),
            ),
        )
        .unwrap()
        .job;
    let task = &job_task(&t);
    assert_eq!(task.user, "1000");
    assert_eq!(task.config["cap_add"], json!(["net_bind_service", "sys_time"]));
    assert_eq!(task.config["cap_drop"], json!(["all"]));
    assert_eq!(task.config["readonly_rootfs"], json!(true));
    assert_eq!(
        task.config["security_opt"],
        json!([
            "no-new-privileges",
            "seccomp=/var/lib/kubelet/seccomp/profiles/audit.json",
            "apparmor=k8s-apparmor-example",
            "label=type:spc_t",
            "label=level:s0:c123,c456"
        ])
    );
    assert_eq!(task.config["group_add"], json!(["3000", "2000"]));
    assert!(!task.config.contains_key("privileged"));
    let plain = translate(json!({}), spec(json!({}), json!({}))).unwrap().job;
    let plain = job_task(&plain);
    for k in ["cap_add", "cap_drop", "readonly_rootfs", "security_opt", "group_add", "privileged"] {
        assert!(!plain.config.contains_key(k), "{k} set without being asked");
    }
    let unconfined = translate(
            json!({}),
            spec(json!({}), json!({"seccompProfile": {"type": "Unconfined"}, "appArmorProfile": {"type": "Unconfined"}, "privileged": true})),
        )
        .unwrap()
        .job;
    let u = job_task(&unconfined);
    assert_eq!(u.config["security_opt"], json!(["seccomp=unconfined", "apparmor=unconfined"]));
    assert_eq!(u.config["privileged"], json!(true));
    let runtime_default = translate(
        json!({}),
        spec(json!({"seccompProfile": {"type": "RuntimeDefault"}}), json!({})),
    )
    .unwrap()
    .job;
    assert!(
        !job_task(&runtime_default).config.contains_key("security_opt"),
        "Docker's default profile"
    );
    for (pod_sc, sc, field) in [
        (json!({"runAsNonRoot": true}), json!({}), "spec.securityContext.runAsNonRoot"),
        (
            json!({}),
            json!({"runAsNonRoot": true}),
            "spec.containers[0].securityContext.runAsNonRoot",
        ),
        (
            json!({}),
            json!({"procMount": "Unmasked"}),
            "spec.containers[0].securityContext.procMount",
        ),
        (
            json!({"supplementalGroupsPolicy": "Strict"}),
            json!({}),
            "spec.securityContext.supplementalGroupsPolicy",
        ),
        (json!({"runAsGroup": 5}), json!({}), "spec.securityContext.runAsGroup"),
        (
            json!({}),
            json!({"capabilities": {"add": ["NET ADMIN"]}}),
            "spec.containers[0].securityContext.capabilities.add",
        ),
    ] {
        let err = translate(json!({}), spec(pod_sc.clone(), sc.clone())).map(|_| ()).unwrap_err();
        assert_eq!(err.field, field, "{pod_sc} {sc}");
    }
}

/// Safe sysctls and hostAliases: Docker's `sysctl` and `extra_hosts`; the exec drivers,
/// which share the host's kernel settings and /etc/hosts, refuse them.
#[test]
fn sysctls_and_host_aliases_reach_docker_and_are_refused_elsewhere() {
    let spec = json!({
        "securityContext": {"sysctls": [{"name": "net/ipv4/ip_local_port_range", "value": "1024 65000"},
                                        {"name": "kernel.shm_rmid_forced", "value": "1"}]},
        "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["db", "db.local"]}],
        "containers": [{"name": "c", "image": "i", "command": ["true"]}]
    });
    let t = job_task(&translate(json!({}), spec.clone()).unwrap().job);
    assert_eq!(
        t.config["sysctl"],
        json!([{"net.ipv4.ip_local_port_range": "1024 65000", "kernel.shm_rmid_forced": "1"}])
    );
    assert_eq!(t.config["extra_hosts"], json!(["db\tdb.local:10.1.2.3"]));
    // With the volumes task, a group network's /etc/hosts is written as the kubelet writes
    // it, one line per alias entry; the containers wait for it and get no extra_hosts.
    let s = JobSettings { volume_setup_image: Some("busybox:1.37".into()), ..settings() };
    let PodJob { job, gated, .. } = translate_with(&s, json!({}), spec.clone()).unwrap();
    let tasks = &job.task_groups[0].tasks;
    assert_eq!(tasks[0].name, VOLUMES_TASK);
    assert_eq!(tasks[0].env[HOST_ALIASES_ENV], "10.1.2.3\tdb\tdb.local\n");
    assert!(tasks[1].config.get("extra_hosts").is_none(), "{:?}", tasks[1].config);
    assert!(gated.is_empty(), "no init container to hold");
    let raw = translate_permissive(json!({ANN_DRIVER: "raw_exec"}), spec.clone());
    assert_eq!(raw.map(|_| ()).unwrap_err().field, "spec.hostAliases");
    let mut no_aliases = spec;
    no_aliases.as_object_mut().unwrap().remove("hostAliases");
    let raw = translate_permissive(json!({ANN_DRIVER: "raw_exec"}), no_aliases);
    assert_eq!(raw.map(|_| ()).unwrap_err().field, "spec.securityContext.sysctls");
}

#[test]
fn what_the_exec_drivers_cannot_honour_is_refused() {
    let spec = |pod_sc: serde_json::Value, sc: serde_json::Value| json!({"securityContext": pod_sc, "containers": [{"name": "c", "image": "i", "command": ["id"], "securityContext": sc}]});
    let cases = [
        (
            json!({}),
            json!({"capabilities": {"add": ["NET_ADMIN"]}}),
            "spec.containers[0].securityContext.capabilities.add",
        ),
        (
            json!({}),
            json!({"capabilities": {"drop": ["ALL"]}}),
            "spec.containers[0].securityContext.capabilities.drop",
        ),
        (
            json!({}),
            json!({"readOnlyRootFilesystem": true}),
            "spec.containers[0].securityContext.readOnlyRootFilesystem",
        ),
        (
            json!({}),
            json!({"allowPrivilegeEscalation": false}),
            "spec.containers[0].securityContext.allowPrivilegeEscalation",
        ),
        (
            json!({"seccompProfile": {"type": "RuntimeDefault"}}),
            json!({}),
            "spec.securityContext.seccompProfile",
        ),
        (
            json!({}),
            json!({"appArmorProfile": {"type": "RuntimeDefault"}}),
            "spec.containers[0].securityContext.appArmorProfile",
        ),
        (
            json!({"seLinuxOptions": {"level": "s0"}}),
            json!({}),
            "spec.securityContext.seLinuxOptions",
        ),
        (json!({"supplementalGroups": [5]}), json!({}), "spec.securityContext.supplementalGroups"),
        (json!({"fsGroup": 5}), json!({}), "spec.securityContext.fsGroup"),
        (json!({"runAsNonRoot": true}), json!({}), "spec.securityContext.runAsNonRoot"),
        (
            json!({}),
            json!({"runAsNonRoot": true, "runAsUser": 1000}),
            "spec.containers[0].securityContext.runAsUser",
        ),
        (json!({}), json!({"privileged": true}), "spec.containers[0].securityContext.privileged"),
    ];
    for driver in ["raw_exec", "exec"] {
        for (pod_sc, sc, field) in &cases {
            if driver == "exec" && field.contains("capabilities") {
                continue;
            }
            let r =
                translate_permissive(json!({ANN_DRIVER: driver}), spec(pod_sc.clone(), sc.clone()));
            match r {
                Err(e) => assert_eq!(e.field, *field, "{driver}: {pod_sc} {sc}"),
                Ok(_) => panic!("{driver} accepted {pod_sc} {sc}"),
            }
        }
    }
    // exec honours capabilities; both honour what they can.
    let exec = translate_permissive(
            json!({ANN_DRIVER: "exec"}),
            spec(json!({"seccompProfile": {"type": "Unconfined"}}), json!({"runAsUser": 65534, "runAsNonRoot": true, "capabilities": {"add": ["NET_RAW"], "drop": ["ALL"]}})),
        )
        .unwrap()
        .job;
    let t = job_task(&exec);
    assert_eq!(
        (t.user.as_str(), &t.config["cap_add"], &t.config["cap_drop"]),
        ("nobody", &json!(["net_raw"]), &json!(["all"]))
    );
}
