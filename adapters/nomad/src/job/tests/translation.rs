//! The pod as a whole: tasks, resources, restart policies, init containers, refusals.

use super::*;

#[test]
fn docker_job_carries_the_pod() {
    let PodJob { job, items, gated, .. } = translate(json!({}), web("Always")).unwrap();
    assert!(items.is_empty() && gated.is_empty());
    assert_eq!(job.id, "k8s-team-a_web");
    assert_eq!(job.type_, "service");
    assert_eq!(job.meta[META_NODE], "vk");
    assert_eq!(job.meta[META_UID], "uid-1");
    assert_eq!((job.meta[META_NAMESPACE].as_str(), job.meta[META_POD].as_str()), ("team-a", "web"));
    let g = &job.task_groups[0];
    assert_eq!(g.count, 1);
    let t = &g.tasks[0];
    assert_eq!(t.driver, "docker");
    assert_eq!(t.config["image"], json!("nginx:1"));
    assert_eq!(t.config["entrypoint"], json!(["nginx"]));
    assert_eq!(t.config["args"], json!(["-g", "daemon off;"]));
    assert_eq!(t.config["work_dir"], json!("/srv"));
    assert!(!t.config.contains_key("ports") && !t.config.contains_key("network_mode"));
    assert!(!t.config.contains_key("force_pull"), "no imagePullPolicy: IfNotPresent");
    let mut always = web("Always");
    always["containers"][0]["imagePullPolicy"] = json!("Always");
    let job = translate(json!({}), always).unwrap().job;
    assert_eq!(job.task_groups[0].tasks[0].config["force_pull"], json!(true));
    assert_eq!(t.env["A"], "2", "later env entries win");
    assert_eq!(t.resources.cpu, Some(500), "250m at 2000 MHz per core");
    assert_eq!((t.resources.memory_mb, t.resources.memory_max_mb), (Some(64), None));
    assert_eq!(t.config["memory_hard_limit"], json!(128), "the limit is docker's hard limit");
    assert!(!t.config.contains_key("cpu_hard_limit"), "a limit above the request is not a cap");
    assert_eq!(t.kill_timeout, 7_000_000_000);
    assert_eq!(t.kill_signal, "SIGTERM");
    assert!(t.templates.is_empty() && t.lifecycle.is_none() && t.user.is_empty());
    assert_eq!(g.networks[0].mode, "bridge", "a docker pod has an address of its own");
    assert!(g.networks[0].dynamic_ports.is_empty() && g.networks[0].reserved_ports.is_empty());
}

/// `lifecycle.stopSignal` is the task's `kill_signal`; the hooks themselves are the virtual
/// kubelet's, not the job's.
#[test]
fn the_stop_signal_is_the_kill_signal() {
    let mut spec = web("Always");
    spec["containers"][0]["lifecycle"] = json!({"stopSignal": "SIGUSR1",
        "preStop": {"exec": {"command": ["drain"]}}});
    let job = translate(json!({}), spec).unwrap().job;
    let t = &job.task_groups[0].tasks[0];
    assert_eq!(t.kill_signal, "SIGUSR1");
    assert!(t.lifecycle.is_none() && t.templates.is_empty(), "no task or template for a hook");
}

/// An interactive container (`stdin: true`) runs the holder with its command line after it, and
/// the job says so in Meta (`stdinOnce` as `once`).
#[test]
fn an_interactive_container_runs_the_holder() {
    let mut spec = web("Never");
    spec["containers"][0]["stdin"] = json!(true);
    spec["containers"][0]["stdinOnce"] = json!(true);
    spec["containers"][0]["tty"] = json!(true);
    let job = translate(json!({}), spec).unwrap().job;
    let t = &job.task_groups[0].tasks[0];
    assert_eq!(t.config["entrypoint"], json!(["sh"]));
    let args: Vec<&str> =
        t.config["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args[0], "-c");
    assert!(
        args[1].contains(".vk-exit") && args[1].contains("trap 'exit 143' TERM"),
        "{}",
        args[1]
    );
    assert_eq!(&args[2..], ["vk-interactive", "nginx", "-g", "daemon off;"]);
    assert_eq!(job.meta["k8s_stdin_main"], "once");
    let plain = translate(json!({}), web("Never")).unwrap().job;
    assert!(!plain.meta.contains_key("k8s_stdin_main"));
}

/// Requests and limits on docker: the memory request is Nomad's `MemoryMB` (the
/// reservation), a higher limit the driver's `memory_hard_limit`; a CPU limit that is the
/// request (or stands alone) is enforced by `cpu_hard_limit`; on the exec drivers a higher
/// memory limit stays `MemoryMaxMB`.
#[test]
fn limits_reach_the_docker_driver() {
    let job = |driver: &str, res: serde_json::Value| {
        let mut c = web("Always");
        c["containers"][0]["resources"] = res;
        translate_permissive(json!({ANN_DRIVER: driver}), c).unwrap().job.task_groups[0].tasks[0]
            .clone()
    };
    let cases = [
        // (resources, cpu MHz, memory MB, hard limit, cpu_hard_limit)
        (json!({"limits": {"cpu": "500m", "memory": "64Mi"}}), 1000, 64, None, true),
        (
            json!({"requests": {"cpu": "500m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}}),
            1000,
            64,
            None,
            true,
        ),
        (
            json!({"requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"cpu": "1", "memory": "100Mi"}}),
            500,
            32,
            Some(100),
            false,
        ),
        (json!({"requests": {"cpu": "250m", "memory": "32Mi"}}), 500, 32, None, false),
    ];
    for (res, cpu, mem, hard, capped) in cases {
        let t = job("docker", res.clone());
        assert_eq!(t.resources.cpu, Some(cpu), "{res}");
        assert_eq!((t.resources.memory_mb, t.resources.memory_max_mb), (Some(mem), None), "{res}");
        assert_eq!(t.config.get("memory_hard_limit").and_then(Value::as_i64), hard, "{res}");
        assert_eq!(t.config.contains_key("cpu_hard_limit"), capped, "{res}");
    }
    let exec = job(
        "raw_exec",
        json!({"requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"cpu": "1", "memory": "100Mi"}}),
    );
    assert_eq!((exec.resources.memory_mb, exec.resources.memory_max_mb), (Some(32), Some(100)));
    assert!(
        !exec.config.contains_key("memory_hard_limit")
            && !exec.config.contains_key("cpu_hard_limit")
    );
}

#[test]
fn raw_exec_runs_command_and_args() {
    let ann = json!({"virtual-kubelet.io/nomad-driver": "raw_exec"});
    let job = translate_permissive(ann, web("Never")).unwrap().job;
    let t = &job.task_groups[0].tasks[0];
    assert_eq!(t.config["command"], json!("nginx"));
    assert_eq!(t.config["args"], json!(["-g", "daemon off;"]));
    assert!(!t.config.contains_key("image"));
    assert_eq!(job.task_groups[0].networks[0].reserved_ports[0].value, 80);
}

#[test]
fn restart_policies_map_to_job_types() {
    let cases = [
        ("Always", "service", "delay", true),
        ("OnFailure", "batch", "delay", false),
        ("Never", "batch", "fail", false),
    ];
    for (p, ty, mode, unlimited) in cases {
        let job = translate(json!({}), web(p)).unwrap().job;
        let g = &job.task_groups[0];
        assert_eq!(job.type_, ty, "{p:?}");
        assert_eq!(g.restart_policy.as_ref().unwrap().mode, mode, "{p:?}");
        assert_eq!(g.reschedule_policy.as_ref().unwrap().unlimited, unlimited, "{p:?}");
    }
    let never = translate(json!({}), web("Never")).unwrap().job;
    assert_eq!(never.task_groups[0].restart_policy.as_ref().unwrap().attempts, 0);
    assert_eq!(never.task_groups[0].reschedule_policy.as_ref().unwrap().attempts, 0);
}

#[test]
fn init_containers_are_prestart_tasks_held_in_order() {
    let spec = json!({
        "restartPolicy": "Never",
        "initContainers": [
            {"name": "setup", "image": "i"},
            {"name": "proxy", "image": "i", "restartPolicy": "Always"},
            {"name": "migrate", "image": "i"}
        ],
        "containers": [{"name": "app", "image": "i"}]
    });
    let PodJob { job, gated, .. } = translate(json!({}), spec.clone()).unwrap();
    let tasks = &job.task_groups[0].tasks;
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["setup", "proxy", "migrate", "app"]);
    let hooks: Vec<Option<(&str, bool)>> =
        tasks.iter().map(|t| t.lifecycle.as_ref().map(|l| (l.hook.as_str(), l.sidecar))).collect();
    assert_eq!(
        hooks,
        [Some(("prestart", false)), Some(("prestart", true)), Some(("prestart", false)), None]
    );
    assert_eq!(gated, ["proxy", "migrate"]);
    // A sidecar with a startup probe holds the app containers too.
    let mut probed = spec.clone();
    probed["initContainers"][1]["startupProbe"] = json!({"exec": {"command": ["true"]}});
    let PodJob { gated, .. } = translate(json!({}), probed).unwrap();
    assert_eq!(gated, ["proxy", "migrate", "app"]);
    assert!(tasks[0].templates.is_empty());
    assert!(tasks[2].templates[0].embedded_tmpl.contains("nomad/jobs/k8s-team-a_web/pod/migrate"));
    assert_eq!(tasks[1].restart_policy.as_ref().map(|r| r.mode.as_str()), Some("delay"));
    assert_eq!(tasks[2].restart_policy, None, "init containers follow the pod's policy");
}

/// The corpus cases the adapter refuses (`"adapter": true`), on the raw_exec driver as in the
/// end-to-end tests.
#[test]
fn the_unsupported_corpus_names_each_field() {
    let corpus: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("../../../../../tests/corpus/unsupported.json")).unwrap();
    let mut s = permissive();
    s.default_driver = "raw_exec".into();
    let mut n = 0;
    for case in corpus.iter().filter(|c| c["adapter"] == json!(true)) {
        let mut container =
            json!({"name": "main", "image": "busybox", "command": ["sleep", "3600"]});
        for (k, v) in case["container"].as_object().into_iter().flatten() {
            if v.is_null() {
                container.as_object_mut().unwrap().remove(k);
            } else {
                container[k] = v.clone();
            }
        }
        let p = pod_json(
            case.get("annotations").cloned().unwrap_or(json!({})),
            json!({"containers": [container]}),
        );
        let w = WorkloadSpec::from_pod(&p, &inputs()).unwrap().spec;
        let err = to_job(&w, &s).map(|_| ()).expect_err(case["case"].as_str().unwrap());
        assert_eq!(err.field, case["field"].as_str().unwrap(), "{}", case["case"]);
        let want = case["message"].as_str().unwrap();
        assert!(err.to_string().contains(want), "{}: {err} lacks {want:?}", case["case"]);
        n += 1;
    }
    assert!(n >= 10, "{n}");
}

#[test]
fn huge_quantities_are_refused_naming_the_field() {
    for (res, field) in [
        (json!({"requests": {"cpu": "1e15"}}), "spec.containers[0].resources.requests.cpu"),
        (json!({"limits": {"cpu": "1e15"}}), "spec.containers[0].resources.limits.cpu"),
    ] {
        let spec = json!({"containers": [{"name": "c", "image": "i", "resources": res}]});
        let err = translate(json!({}), spec).map(|_| ()).unwrap_err();
        assert_eq!(err.field, field);
        assert!(err.reason.contains("beyond any Nomad node"), "{err}");
    }
}

#[test]
fn oversized_data_is_refused_before_nomad_does() {
    let spec = json!({"containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "big", "mountPath": "/b"}]}],
                          "volumes": [{"name": "big", "configMap": {"name": "big"}}]});
    let mut inputs = inputs();
    inputs
        .config_maps
        .insert("big".into(), Some([("k".to_owned(), vec![b'x'; 60_000])].into_iter().collect()));
    let w = WorkloadSpec::from_pod(&pod_json(json!({}), spec), &inputs).unwrap().spec;
    let err = to_job(&w, &settings()).unwrap_err();
    assert_eq!(err.field, "spec.volumes");
    assert!(err.reason.contains("65536"), "{err}");
}
