//! Volumes of real containers as the kubelet keeps them: ConfigMap and Secret volumes following
//! their object, emptyDir permissions and `medium: Memory` as a tmpfs.

use std::time::Duration;

use anyhow::ensure;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::PostParams;
use vk_tests::fixtures::pod;
use vk_tests::{BUSYBOX, wait_for};

use super::{create, log_with, running};
use crate::Ctx;

/// ConfigMap and Secret volumes follow their object as the kubelet's do: a key added gets its
/// file, a key removed loses it, and an optional ConfigMap or (projected) Secret created after the
/// pod started fills its volume (the files task rewrites the volume from the Variable the virtual
/// kubelet refreshes). The Secret files are on an in-memory file system (the files task's
/// `secrets/`), with the volume's `defaultMode`.
pub(crate) async fn docker_volume_updates(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-docker-volupd", "e2e-docker-volupd");
    let flags = ["--nomad-driver", "docker", "--volume-refresh-interval", "2s"];
    let _vk = cx.node_and_namespace_with(node, ns, &flags).await?;
    let cms: Api<ConfigMap> = Api::namespaced(cx.client.clone(), ns);
    let cm = |name: &str, data: serde_json::Value| -> anyhow::Result<ConfigMap> {
        Ok(serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": data}))?)
    };
    cms.create(&PostParams::default(), &cm("present", serde_json::json!({"a": "1"}))?).await?;
    let secrets: Api<Secret> = Api::namespaced(cx.client.clone(), ns);
    let secret = |name: &str, data: serde_json::Value| -> anyhow::Result<Secret> {
        Ok(serde_json::from_value(
            serde_json::json!({"metadata": {"name": name}, "stringData": data}),
        )?)
    };
    secrets
        .create(&PostParams::default(), &secret("held", serde_json::json!({"k": "s1"}))?)
        .await?;
    let list = |dir: &str| {
        format!(
            "$(cd {dir} && for f in *; do [ -e \"$f\" ] && printf '%s:%s,' \"$f\" \"$(cat \"$f\")\"; done)"
        )
    };
    let report = format!(
        "echo \"FS=$(grep ' /s ' /proc/mounts | cut -d' ' -f3) MODE=$(stat -c %a /s/k)\"; \
         while true; do echo \"P=[{}] L=[$(cat /l/x 2>/dev/null)] S=[{}] O=[$(cat /o/y 2>/dev/null)]\"; sleep 1; done",
        list("/p"),
        list("/s")
    );
    let p = pod("watcher")
        .namespace(ns)
        .on_node(node)
        .grace(1)
        .spec(serde_json::json!({
            "containers": [{"name": "c", "image": BUSYBOX, "command": ["sh", "-c", report],
                "volumeMounts": [{"name": "p", "mountPath": "/p"}, {"name": "l", "mountPath": "/l"},
                    {"name": "s", "mountPath": "/s"}, {"name": "o", "mountPath": "/o"}]}],
            "volumes": [
                {"name": "p", "configMap": {"name": "present"}},
                {"name": "l", "configMap": {"name": "later", "optional": true}},
                {"name": "s", "secret": {"secretName": "held", "defaultMode": 0o440}},
                {"name": "o", "projected": {"sources": [
                    {"secret": {"name": "secret-later", "optional": true}}]}}
            ]
        }))
        .build();
    create(&cx, &p).await?;
    running(&cx, ns, "watcher").await?;
    log_with(&cx, (ns, "watcher", "c"), "FS=tmpfs MODE=440", Duration::from_secs(30)).await?;
    log_with(&cx, (ns, "watcher", "c"), "P=[a:1,] L=[] S=[k:s1,] O=[]", Duration::from_secs(30))
        .await?;
    cms.replace("present", &PostParams::default(), &cm("present", serde_json::json!({"b": "2"}))?)
        .await?;
    cms.create(&PostParams::default(), &cm("later", serde_json::json!({"x": "3"}))?).await?;
    secrets
        .replace("held", &PostParams::default(), &secret("held", serde_json::json!({"m": "s2"}))?)
        .await?;
    secrets
        .create(&PostParams::default(), &secret("secret-later", serde_json::json!({"y": "s3"}))?)
        .await?;
    log_with(&cx, (ns, "watcher", "c"), "P=[b:2,] L=[3] S=[m:s2,] O=[s3]", Duration::from_secs(60))
        .await?;
    Ok(())
}

/// emptyDir on docker as the kubelet makes it: a directory every user of the pod can write (the
/// `vk_volumes` prestart task makes it 0777 before any container, the first init container
/// included, starts), owned by `fsGroup` with the set-group-ID bit so new files get the group;
/// and `medium: Memory` in one container is a tmpfs of the size limit, mode 0777. The volumes
/// task is not one of the pod's containers.
pub(crate) async fn docker_empty_dirs(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-docker-emptydir", "e2e-docker-emptydir");
    let _vk = cx.node_and_namespace_with(node, ns, &["--nomad-driver", "docker"]).await?;
    let report = "stat -c 'scratch %a %g' /scratch; cat /scratch/from-init; \
                  echo x > /scratch/f && stat -c 'file %g' /scratch/f; \
                  grep ' /mem ' /proc/mounts | cut -d' ' -f1,2,4; stat -c 'mem %a' /mem; \
                  echo x > /mem/f && echo mem-writable; echo done; exec sleep 3600";
    let p = pod("scratch")
        .namespace(ns)
        .on_node(node)
        .grace(1)
        .spec(serde_json::json!({
            // Never: the Memory emptyDir of a container that is never started again can be a
            // tmpfs of its own.
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 3000},
            "initContainers": [{"name": "init", "image": BUSYBOX,
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                "command": ["sh", "-c", "echo \"init wrote as $(id -u)\" > /scratch/from-init"]}],
            "containers": [{"name": "app", "image": BUSYBOX,
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"},
                                 {"name": "mem", "mountPath": "/mem"}],
                "command": ["sh", "-c", report]}],
            "volumes": [{"name": "scratch", "emptyDir": {}},
                        {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}]
        }))
        .build();
    create(&cx, &p).await?;
    let running = running(&cx, ns, "scratch").await?;
    let out = log_with(&cx, (ns, "scratch", "app"), "done", Duration::from_secs(60)).await?;
    let lines: Vec<&str> = out.lines().collect();
    ensure!(
        lines.len() == 7
            && lines[..3] == ["scratch 2777 3000", "init wrote as 1000", "file 3000"]
            && lines[3].starts_with("tmpfs /mem rw,")
            && lines[3].contains("size=1024k")
            && lines[3].contains("mode=777")
            && lines[4..] == ["mem 777", "mem-writable", "done"],
        "app printed {out:?}"
    );
    let st = running.status.unwrap_or_default();
    let names: Vec<String> = st
        .init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten())
        .map(|c| c.name.clone())
        .collect();
    ensure!(names == ["init", "app"], "the pod's statuses name {names:?}");

    // subPathExpr into an emptyDir, from the one container of a pod that never restarts one
    // (nothing else can plant a link before Docker binds): the directory is made for it and the
    // whole volume shows it; an expansion that is absolute keeps the container waiting in
    // CreateContainerConfigError, as the kubelet does.
    let sub = |name: &str, value: &str| {
        pod(name)
            .namespace(ns)
            .on_node(node)
            .grace(1)
            .spec(serde_json::json!({
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": BUSYBOX,
                    "env": [{"name": "DIR", "value": value}],
                    "volumeMounts": [{"name": "v", "mountPath": "/sub", "subPathExpr": "$(DIR)"},
                                     {"name": "v", "mountPath": "/whole"}],
                    "command": ["sh", "-c", "echo x > /sub/f && test -f /whole/$DIR/f && echo subpath-ok; sleep 2"]}],
                "volumes": [{"name": "v", "emptyDir": {}}]
            }))
            .build()
    };
    create(&cx, &sub("subpath", "logs/one")).await?;
    log_with(&cx, (ns, "subpath", "c"), "subpath-ok", Duration::from_secs(60)).await?;
    create(&cx, &sub("absolute", "/tmp")).await?;
    wait_for(
        "the absolute subPathExpr waiting in CreateContainerConfigError",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            let p = cx.pods(ns).get("absolute").await?;
            let waiting = crate::container_state(&p, "c").and_then(|c| c.state?.waiting);
            Ok(waiting.filter(|w| w.reason.as_deref() == Some("CreateContainerConfigError")))
        },
    )
    .await?;
    Ok(())
}
