//! Volumes: where they live, the templates and the internal tasks that make them.

use super::*;

/// With `fsGroup`, volume files belong to that group and it may read them (`mode | 0440`,
/// the kubelet's mask for read-only volumes).
#[test]
fn fs_group_owns_the_volume_files() {
    let spec = json!({
        "securityContext": {"fsGroup": 2000},
        "containers": [{"name": "c", "image": "i", "volumeMounts": [
            {"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "sec", "mountPath": "/etc/sec"}]}],
        "volumes": [
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "sec", "secret": {"secretName": "creds", "defaultMode": 0o400}}
        ]
    });
    let job = translate(json!({}), spec).unwrap().job;
    let files: Vec<(&str, &str, Option<i64>)> = job.task_groups[0].tasks[0]
        .templates
        .iter()
        .map(|t| (t.dest_path.as_str(), t.perms.as_str(), t.gid))
        .collect();
    assert_eq!(
        files,
        [
            ("../alloc/volumes/cfg/mode", "0644", Some(2000)),
            ("secrets/vk-volumes/sec/password", "0440", Some(2000)),
        ]
    );
}

/// A subPath into an emptyDir is refused on docker (a container could plant a symbolic link
/// there, which Docker would follow when binding: CVE-2017-1002101); into API data, which
/// only Nomad's templates write, it is bound; raw_exec binds nothing.
#[test]
fn a_sub_path_into_a_writable_volume_is_refused_on_docker() {
    let spec = |sub: &str| {
        json!({
            "containers": [{"name": "c", "image": "i", "command": ["sh"], "volumeMounts": [
                {"name": "cfg", "mountPath": "/etc/mode", "subPath": "mode"},
                {"name": "scratch", "mountPath": "/data", "subPath": sub}
            ]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "scratch", "emptyDir": {}}]
        })
    };
    let err = translate(json!({}), spec("link")).unwrap_err();
    assert_eq!(err.field, "spec.containers[0].volumeMounts[1].subPath");
    assert!(
        err.reason.starts_with("\"link\" into emptyDir \"scratch\" cannot be mounted safely")
            && err.reason.contains("CVE-2017-1002101"),
        "{}",
        err.reason
    );
    assert!(translate(json!({}), spec("a/b")).is_err(), "nested paths too");
    let raw = translate_permissive(json!({ANN_DRIVER: "raw_exec"}), spec("link")).unwrap();
    assert!(!raw.job.task_groups[0].tasks[0].config.contains_key("volumes"));
    let only_api_data = json!({
        "containers": [{"name": "c", "image": "i", "volumeMounts": [
            {"name": "cfg", "mountPath": "/etc/mode", "subPath": "mode"}]}],
        "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}]
    });
    let job = translate(json!({}), only_api_data).unwrap().job;
    assert_eq!(
        job.task_groups[0].tasks[0].config["volumes"],
        json!(["../alloc/volumes/cfg/mode:/etc/mode:ro"])
    );

    // One container of a pod that never restarts one: nothing else can write the volume
    // before Docker binds, and it binds once. The volumes task makes the subPath directory.
    let s = JobSettings { volume_setup_image: Some("busybox:1.37".into()), ..settings() };
    let never = |extra: Option<serde_json::Value>| {
        let mut v = spec("logs/web");
        v["restartPolicy"] = json!("Never");
        v["containers"][0]["volumeMounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "scratch", "mountPath": "/all"}));
        if let Some(c) = extra {
            v["containers"].as_array_mut().unwrap().push(c);
        }
        translate_with(&s, json!({}), v)
    };
    let job = never(None).unwrap().job;
    let tasks = &job.task_groups[0].tasks;
    assert_eq!(
        tasks[0].config["args"],
        json!(["0777", "-", "/alloc/volumes/scratch", "/alloc/volumes/scratch/logs/web"])
    );
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, [VOLUMES_TASK, FILES_TASK, "c"], "configMap files from a bundle");
    assert_eq!(
        tasks[2].config["volumes"],
        json!([
            "../alloc/volumes/cfg/mode:/etc/mode:ro",
            "../alloc/volumes/scratch/logs/web:/data",
            "../alloc/volumes/scratch:/all"
        ])
    );
    let other = json!({"name": "d", "image": "i", "volumeMounts": [{"name": "scratch", "mountPath": "/s"}]});
    assert!(never(Some(other)).is_err(), "a second container could plant the link");
    assert!(translate_with(&s, json!({}), spec("logs/web")).is_err(), "restarts bind again");
}

#[test]
fn volumes_are_rendered_from_the_variable_into_the_shared_directory() {
    let spec = json!({
        "containers": [
            {"name": "a", "image": "i", "volumeMounts": [
                {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true},
                {"name": "scratch", "mountPath": "/scratch"},
                {"name": "sec", "mountPath": "/run/secret", "subPath": "db"}
            ]},
            {"name": "b", "image": "i", "volumeMounts": [{"name": "scratch", "mountPath": "/data"}]}
        ],
        "volumes": [
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "sec", "secret": {"secretName": "creds", "defaultMode": 0o400, "items": [{"key": "password", "path": "db/pass"}]}}
        ]
    });
    let PodJob { job, items, .. } = translate(json!({}), spec.clone()).unwrap();
    assert!(!serde_json::to_string(&job).unwrap().contains("s3cr3t"));
    let a = &job.task_groups[0].tasks[0];
    let b = &job.task_groups[0].tasks[1];
    assert_eq!(
        a.config["volumes"],
        json!([
            "../alloc/volumes/cfg:/etc/cfg:ro",
            "../alloc/volumes/scratch:/scratch",
            "secrets/vk-volumes/sec/db:/run/secret:ro"
        ]),
        "API data volumes are read-only whatever the mount says; an emptyDir follows it"
    );
    assert_eq!(b.config["volumes"], json!(["../alloc/volumes/scratch:/data"]));
    let dests: Vec<(&str, &str)> =
        a.templates.iter().map(|t| (t.dest_path.as_str(), t.perms.as_str())).collect();
    assert_eq!(
        dests,
        [
            ("../alloc/volumes/cfg/mode", "0644"),
            ("../alloc/volumes/scratch/.nomad-emptydir", "0644"),
            ("secrets/vk-volumes/sec/db/pass", "0400"),
        ],
        "Secret files into the task's in-memory secrets/, the rest into the shared directory"
    );
    assert!(a.templates.iter().all(|t| t.gid.is_none()), "no fsGroup, no group");
    assert!(a.templates.iter().all(|t| t.change_mode == "noop"));
    assert_eq!(b.templates.len(), 1, "b mounts only the emptyDir");
    assert_eq!(items[&file_key("cfg", "mode")], "ZmFzdA==");
    assert!(a.templates[0].embedded_tmpl.contains(&file_key("cfg", "mode")));
    assert!(a.templates[0].embedded_tmpl.contains("base64Decode"));

    // With a volume setup image, the configMap volume is one bundle item, written by the
    // volumes task before any container and kept by the files task (a prestart sidecar), so
    // that files appear and go with their keys; the Secret volume stays per task, in memory.
    let s = JobSettings { volume_setup_image: Some("busybox:1.37".into()), ..settings() };
    let mut with_group = spec.clone();
    with_group["securityContext"] = json!({"fsGroup": 2000});
    let PodJob { job, items, .. } = translate_with(&s, json!({}), with_group).unwrap();
    let tasks = &job.task_groups[0].tasks;
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, [VOLUMES_TASK, FILES_TASK, "a", "b"]);
    let files = &tasks[1];
    assert_eq!(files.lifecycle, Some(Lifecycle { hook: "prestart".into(), sidecar: true }));
    assert_eq!(files.env[BUNDLES_ENV], "cfg");
    assert_eq!(files.env[FS_GROUP_ENV], "2000");
    assert!(!files.env.contains_key(SECRET_BUNDLES_ENV));
    let dests: Vec<&str> = files.templates.iter().map(|t| t.dest_path.as_str()).collect();
    assert_eq!(dests, ["local/vk-bundle/cfg"]);
    assert!(files.templates[0].embedded_tmpl.contains(&bundle_key("cfg")));
    // The volumes task writes no file: it waits for the files task's first write.
    assert!(tasks[0].templates.is_empty());
    assert_eq!(tasks[0].env[WAIT_FILES_ENV], "1");
    // mode 0644 | 0440 (fsGroup), path "mode", data "fast".
    assert_eq!(items[&bundle_key("cfg")], "0644,bW9kZQ==,ZmFzdA==");
    assert!(!items.contains_key(&file_key("cfg", "mode")));
    let a = &tasks[2];
    let dests: Vec<&str> = a.templates.iter().map(|t| t.dest_path.as_str()).collect();
    assert_eq!(dests, ["secrets/vk-volumes/sec/db/pass"], "no per-file template for cfg");
    assert_eq!(a.config["volumes"][0], "../alloc/volumes/cfg:/etc/cfg:ro");
    let mut many = bundle(
        &[
            vk_domain::volume::File {
                path: "a/b c".into(),
                data: b"x;y,z\n".to_vec(),
                mode: 0o600,
                secret: false,
            },
            vk_domain::volume::File {
                path: "e".into(),
                data: Vec::new(),
                mode: 0o644,
                secret: false,
            },
        ],
        |m| m,
    );
    assert_eq!(many, "0600,YS9iIGM=,eDt5LHoK;0644,ZQ==,");
    many.retain(|c| !c.is_ascii_alphanumeric() && !"+/=,;".contains(c));
    assert!(many.is_empty(), "only base64, ',' and ';': a line Nomad's env file parser reads");
}

/// On docker with a volume setup image, a volume with Secret data whose files may come and
/// go (a whole Secret, an optional projected one) is a bundle the files task writes into
/// its own in-memory `secrets/`, which each container binds read-only; the volumes task waits
/// for that first write. A token volume with a fixed set of files keeps its per-task
/// templates. No Secret byte is in the job.
#[test]
fn docker_secret_volumes_that_gain_files_are_kept_by_the_files_task() {
    let s = JobSettings { volume_setup_image: Some("busybox:1.37".into()), ..settings() };
    let spec = json!({
        "containers": [{"name": "c", "image": "i", "command": ["run"], "volumeMounts": [
            {"name": "whole", "mountPath": "/etc/whole"},
            {"name": "later", "mountPath": "/etc/later"},
            {"name": "one", "mountPath": "/etc/one/pass", "subPath": "password"},
            {"name": "token", "mountPath": "/var/run/secrets/tok"}
        ]}],
        "volumes": [
            {"name": "whole", "secret": {"secretName": "creds", "defaultMode": 0o400}},
            {"name": "later", "projected": {"sources": [
                {"secret": {"name": "not-yet", "optional": true}}]}},
            {"name": "one", "secret": {"secretName": "creds"}},
            {"name": "token", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token"}}]}}
        ]
    });
    let mut i = inputs();
    i.tokens.insert(
        vk_domain::inputs::TokenSpec {
            audience: String::new(),
            expiration_seconds: vk_domain::inputs::DEFAULT_TOKEN_SECONDS,
        },
        "tok3n".into(),
    );
    let p = pod_json(json!({}), spec);
    let w = WorkloadSpec::from_pod(&p, &i).unwrap().spec;
    let PodJob { job, items, .. } = to_job(&w, &s).unwrap();
    let text = serde_json::to_string(&job).unwrap();
    assert!(!text.contains("s3cr3t") && !text.contains("tok3n"), "Secret data in the job");
    let tasks = &job.task_groups[0].tasks;
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, [VOLUMES_TASK, FILES_TASK, "c"]);
    assert_eq!(tasks[0].env[WAIT_FILES_ENV], "1", "the volumes task waits for the files");
    let files = &tasks[1];
    assert_eq!(files.env[SECRET_BUNDLES_ENV], "whole later one");
    assert!(!files.env.contains_key(BUNDLES_ENV));
    let dests: Vec<&str> = files.templates.iter().map(|t| t.dest_path.as_str()).collect();
    assert_eq!(
        dests,
        ["secrets/vk-bundle/whole", "secrets/vk-bundle/later", "secrets/vk-bundle/one"],
        "bundles of Secret data in the files task's in-memory secrets/"
    );
    assert_eq!(items[&bundle_key("later")], "", "no file until the Secret exists");
    assert!(items[&bundle_key("whole")].starts_with("0400,"));
    let c = &tasks[2];
    assert_eq!(
        c.config["volumes"],
        json!([
            "../vk_files/secrets/vk-volumes/whole:/etc/whole:ro",
            "../vk_files/secrets/vk-volumes/later:/etc/later:ro",
            "../vk_files/secrets/vk-volumes/one/password:/etc/one/pass:ro",
            "secrets/vk-volumes/token:/var/run/secrets/tok:ro"
        ])
    );
    let dests: Vec<&str> = c.templates.iter().map(|t| t.dest_path.as_str()).collect();
    assert_eq!(dests, ["secrets/vk-volumes/token/token"], "the token stays per task");
    assert!(FILES_SCRIPT.contains(FILES_READY) && VOLUMES_SCRIPT.contains(FILES_READY));
    assert!(
        UNPACK_FN.contains("/secrets/vk-bundle/") && UNPACK_FN.contains("/secrets/vk-volumes/")
    );

    // On raw_exec (no files task) the same volumes keep their per-file templates.
    let raw = JobSettings { default_driver: "raw_exec".into(), ..s.clone() };
    let job = to_job(&w, &raw).unwrap().job;
    let names: Vec<&str> = job.task_groups[0].tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["c"]);
}

/// On docker with a volume setup image: one prestart task makes the emptyDir directories
/// (0777; with fsGroup, that group and the set-group-ID bit) before any container, the first
/// init container waits for it, no marker template is rendered; a Memory emptyDir of one
/// container that never restarts is a tmpfs of its own (size from sizeLimit, else the memory
/// limit), one shared by several or of a container that restarts lives in the allocation's
/// directory; raw_exec gets no such task.
#[test]
fn docker_empty_dirs_are_prepared_by_the_volumes_task() {
    let s = JobSettings { volume_setup_image: Some("busybox:1.37".into()), ..settings() };
    let spec = |fs_group: Option<i64>| {
        json!({
            "restartPolicy": "Never",
            "securityContext": {"fsGroup": fs_group},
            "initContainers": [{"name": "init", "image": "i",
                "volumeMounts": [{"name": "scratch", "mountPath": "/s"}]}],
            "containers": [
                {"name": "a", "image": "i", "resources": {"limits": {"memory": "64Mi"}},
                 "volumeMounts": [{"name": "scratch", "mountPath": "/s"},
                    {"name": "shm", "mountPath": "/dev/shm"},
                    {"name": "mem", "mountPath": "/m", "readOnly": true},
                    {"name": "shared-mem", "mountPath": "/sm"}]},
                {"name": "b", "image": "i", "volumeMounts": [{"name": "shared-mem", "mountPath": "/sm"}]}
            ],
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "unused", "emptyDir": {}},
                {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                {"name": "mem", "emptyDir": {"medium": "Memory"}},
                {"name": "shared-mem", "emptyDir": {"medium": "Memory"}}
            ]
        })
    };
    let PodJob { job, gated, .. } = translate_with(&s, json!({}), spec(None)).unwrap();
    let tasks = &job.task_groups[0].tasks;
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, [VOLUMES_TASK, "init", "a", "b"]);
    let v = &tasks[0];
    assert_eq!(v.lifecycle, Some(Lifecycle { hook: "prestart".into(), sidecar: false }));
    assert_eq!(v.config["image"], "busybox:1.37");
    let script = hcl_text(VOLUMES_SCRIPT);
    assert_eq!(v.config["entrypoint"], json!(["sh", "-c", script, VOLUMES_TASK]));
    assert!(!v.env.contains_key(WAIT_FILES_ENV), "no bundled volume, nothing to wait for");
    assert_eq!(
        v.config["args"],
        json!(["0777", "-", "/alloc/volumes/scratch", "/alloc/volumes/shared-mem"]),
        "the emptyDirs in the allocation's directory, mounted by some container"
    );
    assert_eq!(v.restart_policy.as_ref().map(|r| r.mode.as_str()), Some("delay"));
    assert_eq!(gated, ["init"], "the first init container waits for the volumes task");
    let a = &tasks[2];
    assert_eq!(
        a.config["volumes"],
        json!(["../alloc/volumes/scratch:/s", "../alloc/volumes/shared-mem:/sm"])
    );
    assert_eq!(
        a.config["mount"],
        json!([
            {"type": "tmpfs", "target": "/dev/shm", "readonly": false,
             "tmpfs_options": [{"mode": 0o777, "size": 1 << 20}]},
            {"type": "tmpfs", "target": "/m", "readonly": true,
             "tmpfs_options": [{"mode": 0o777, "size": 64 << 20}]}
        ])
    );
    assert!(a.templates.is_empty(), "no marker files: {:?}", a.templates);

    // A container that restarts would lose a tmpfs of its own (the kubelet's outlives
    // restarts): its Memory emptyDirs live on disk.
    let mut always = spec(None);
    always["restartPolicy"] = json!("Always");
    let job = translate_with(&s, json!({}), always).unwrap().job;
    assert_eq!(
        job.task_groups[0].tasks[0].config["args"],
        json!([
            "0777",
            "-",
            "/alloc/volumes/scratch",
            "/alloc/volumes/shm",
            "/alloc/volumes/mem",
            "/alloc/volumes/shared-mem"
        ])
    );
    assert!(!job.task_groups[0].tasks[2].config.contains_key("mount"));

    let PodJob { job, .. } = translate_with(&s, json!({}), spec(Some(2000))).unwrap();
    assert_eq!(
        job.task_groups[0].tasks[0].config["args"].as_array().unwrap()[..2],
        [json!("2777"), json!("2000")],
        "fsGroup: the group owns the directories, and new files get it"
    );

    let raw = translate_with(
        &JobSettings { default_driver: "raw_exec".into(), ..s.clone() },
        json!({}),
        json!({"containers": [{"name": "a", "image": "i", "command": ["x"],
                "volumeMounts": [{"name": "scratch", "mountPath": "/s"}]}],
                "volumes": [{"name": "scratch", "emptyDir": {}}]}),
    )
    .unwrap();
    let names: Vec<&str> = raw.job.task_groups[0].tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a"], "raw_exec: the marker template makes the directory");
    let none = translate(json!({}), spec(None)).unwrap();
    assert_eq!(none.job.task_groups[0].tasks[0].name, "init", "no image, no task");
    assert!(none.gated.is_empty());
}

/// terminationMessagePath on docker: an empty file of the task's own (0666), bound there;
/// FallbackToLogsOnError recorded in Meta for the status reads; raw_exec binds nothing.
#[test]
fn termination_message_files_are_bound_on_docker() {
    let spec = json!({"containers": [{"name": "c", "image": "i", "command": ["x"],
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "FallbackToLogsOnError"}]});
    let job = translate(json!({}), spec.clone()).unwrap().job;
    let t = &job.task_groups[0].tasks[0];
    assert_eq!(t.config["volumes"], json!([format!("{TERMINATION_LOG}:/dev/termination-log")]));
    let file = t.templates.iter().find(|t| t.dest_path == TERMINATION_LOG).unwrap();
    assert_eq!((file.perms.as_str(), file.change_mode.as_str()), ("0666", "noop"));
    assert_eq!(job.meta[&format!("{META_TERMINATION_FALLBACK_PREFIX}c")], "true");
    let raw = translate_permissive(json!({ANN_DRIVER: "raw_exec"}), spec).unwrap().job;
    let t = &raw.task_groups[0].tasks[0];
    assert!(!t.config.contains_key("volumes") && t.templates.is_empty());
}

#[test]
fn file_paths_nomad_would_interpolate_and_binds_docker_would_split_are_refused() {
    let spec = json!({"containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "info", "mountPath": "/info"}]}],
                          "volumes": [{"name": "info", "downwardAPI": {"items": [{"path": "x${attr.unique.hostname}", "fieldRef": {"fieldPath": "metadata.name"}}]}}]});
    let err = translate(json!({}), spec).map(|_| ()).unwrap_err();
    assert_eq!(err.field, "spec.volumes[0]");
    for (m, field) in [
        (
            json!({"name": "s", "mountPath": "/a:/b"}),
            "spec.containers[0].volumeMounts[0].mountPath",
        ),
        (
            json!({"name": "s", "mountPath": "/a", "subPath": "x:y"}),
            "spec.containers[0].volumeMounts[0].subPath",
        ),
    ] {
        let spec = json!({"containers": [{"name": "c", "image": "i", "volumeMounts": [m]}], "volumes": [{"name": "s", "emptyDir": {}}]});
        assert_eq!(translate(json!({}), spec).map(|_| ()).unwrap_err().field, field);
    }
}
