//! End-to-end tests on Nomad's docker driver: real containers from the offline test images
//! (`scripts/images.sh`), in the pod's own network namespace (Nomad's bridge mode, CNI).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vk_tests::fixtures::pod;
use vk_tests::{BUSYBOX, wait_for};

use super::{Ctx, current_alloc, pod_ready};

/// Every container of `p` without resources requests 10m of CPU and 32 MiB: Nomad's defaults
/// (100 MHz and 300 MB a task) would fill the test node's CPU with the pods all the tests leave
/// running, and new pods would wait unplaced.
pub(crate) fn lean(mut p: Pod) -> Pod {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let spec = p.spec.get_or_insert_with(Default::default);
    let init = spec.init_containers.iter_mut().flatten();
    for c in init.chain(spec.containers.iter_mut()) {
        let r = c.resources.get_or_insert_with(Default::default);
        if r.requests.is_none() && r.limits.is_none() {
            r.requests = Some(
                [
                    ("cpu".to_owned(), Quantity("10m".into())),
                    ("memory".to_owned(), Quantity("32Mi".into())),
                ]
                .into(),
            );
        }
    }
    p
}

/// Creates `p` made [`lean`].
pub(crate) async fn create(cx: &Ctx<'_>, p: &Pod) -> anyhow::Result<Pod> {
    cx.create(&lean(p.clone())).await
}

/// Waits (90 s at most) for pod `ns/name` to be Running; on a timeout the error holds the pod's
/// status.
async fn running(cx: &Ctx<'_>, ns: &str, name: &str) -> anyhow::Result<Pod> {
    cx.wait_phase(ns, name, "Running", Duration::from_secs(90)).await.with_context(|| {
        let st = cx.stack.kubectl(&["get", "pod", "-n", ns, name, "-o", "jsonpath={.status}"]);
        format!("{name}'s status: {}", st.unwrap_or_else(|e| e.to_string()))
    })
}

/// Waits (`timeout` at most) until `kubectl logs` of `container` of pod `ns/name` holds
/// `needle` (any output when empty); returns the log.
async fn log_with(
    cx: &Ctx<'_>,
    (ns, name, container): (&str, &str, &str),
    needle: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    wait_for(
        &format!("{needle:?} in the log of {name}/{container}"),
        timeout,
        Duration::from_millis(250),
        || async {
            let o = cx.stack.kubectl(&["logs", "-n", ns, name, "-c", container]).ok();
            Ok(o.filter(|o| !o.is_empty() && o.contains(needle)))
        },
    )
    .await
}

/// Deletes pod `ns/name` and waits (30 s at most) until it is gone.
async fn delete_and_wait(cx: &Ctx<'_>, ns: &str, name: &str) -> anyhow::Result<()> {
    cx.pods(ns).delete(name, &DeleteParams::default()).await?;
    wait_for(
        &format!("{name} gone"),
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async { Ok(cx.pods(ns).get_opt(name).await?.is_none().then_some(())) },
    )
    .await
}

/// The pod's containers as Docker runs them: `(name, container ID)` of the allocation's
/// containers (Nomad labels each with `com.hashicorp.nomad.alloc_id`), the pause container
/// included (`nomad_init_<alloc>`).
fn containers_of(alloc: &str) -> anyhow::Result<Vec<(String, String)>> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}} {{.ID}}"])
        .arg("--filter")
        .arg(format!("label=com.hashicorp.nomad.alloc_id={alloc}"))
        .output()?;
    ensure!(out.status.success(), "docker ps: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, i)| (n.to_owned(), i.to_owned()))
        .collect())
}

/// A pod of three containers on docker, seen as its containers see it:
/// - each container's own root filesystem (the image's: no `/etc/debian_version` of the host),
///   its environment from a ConfigMap and a Secret, `workingDir`, `command` with `args` (and
///   `$(VAR)` in them); ConfigMap and Secret files at their `mountPath`, one key by `subPath`,
///   and API data read-only (a write is refused); Secret files on an in-memory file system
///   (tmpfs), with `defaultMode` and the pod's `fsGroup` (`0400 | 0440`, group 2000), and no
///   Secret byte on the node's disk under the allocation; an emptyDir shared between two
///   containers;
/// - one network namespace: `app` reaches `web`'s server on `localhost:8080`;
/// - the pod's own address: `status.podIP` is the allocation's bridge address (Nomad's
///   `NetworkStatus.Address`), not the node's (`status.hostIP`), the host reaches the server at
///   `podIP:containerPort` with no port declared on the node, and the readiness probe (HTTP,
///   dialled by the virtual kubelet) makes the pod Ready; port-forward reaches a port no container
///   declared;
/// - `kubectl logs` and `kubectl exec` reach into the container;
/// - deleting the pod delivers SIGTERM inside the container and removes its containers, the
///   pause container too.
pub(crate) async fn docker_pod(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-docker", "e2e-docker");
    let _vk = cx.node_and_namespace_with(node, ns, &["--nomad-driver", "docker"]).await?;
    let cms: Api<ConfigMap> = Api::namespaced(cx.client.clone(), ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cfg"}, "data": {"mode": "fast"}
        }))?,
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(cx.client.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "sec"},
                "stringData": {"password": "s3cr3t $HOME", "data-1": "d1 \"q\" #x"}
            }))?,
        )
        .await?;
    let app = "echo \"MODE=$MODE\"; echo \"PASS=$PASS\"; echo \"PWD=$(pwd)\"; echo \"ARG=$1\"; \
        echo \"FILE=$(cat /etc/config/mode)\"; echo \"SUB=$(cat /etc/mode-file)\"; \
        echo \"SECRET=$(cat /etc/secret/password)\"; echo \"DASHED=$(tr '\\0' '\\n' < /proc/1/environ | grep '^p-data-1=')\"; \
        echo \"SECRET_STAT=$(stat -c '%a %g' /etc/secret/password)\"; \
        echo \"SECRET_FS=$(grep ' /etc/secret ' /proc/mounts | cut -d' ' -f3)\"; \
        if test -e /etc/debian_version; then echo ROOTFS=host; else echo ROOTFS=image; fi; \
        if touch /etc/config/new 2>/dev/null; then echo API_DATA=writable; else echo API_DATA=read-only; fi; \
        echo from-app > /shared/app.txt; \
        until wget -qO /tmp/got http://localhost:8080/index.html 2>/dev/null; do sleep 0.2; done; \
        echo \"LOCALHOST=$(cat /tmp/got)\"; echo started; exec sleep 3600";
    let p = pod("real")
        .namespace(ns)
        .on_node(node).grace(5)
        .spec(serde_json::json!({
            "containers": [
                {"name": "web", "image": BUSYBOX,
                 "command": ["sh", "-c", "mkdir -p /srv && echo hello-from-web > /srv/index.html && httpd -p 9090 -h /srv && exec httpd -f -p 8080 -h /srv"],
                 "ports": [{"containerPort": 8080}],
                 "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1}},
                {"name": "app", "image": BUSYBOX, "workingDir": "/work",
                 "command": ["sh", "-c", app, "app"], "args": ["--mode=$(MODE)"],
                 "env": [
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                    {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}}
                 ],
                 // Names Nomad's env file parser refuses (`p-data-1`): from the task's secret block.
                 "envFrom": [{"prefix": "p-", "secretRef": {"name": "sec"}}],
                 "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/config"},
                    {"name": "config", "mountPath": "/etc/mode-file", "subPath": "mode"},
                    {"name": "secret", "mountPath": "/etc/secret"},
                    {"name": "shared", "mountPath": "/shared"}
                 ]},
                {"name": "reader", "image": BUSYBOX,
                 "command": ["sh", "-c", "trap 'echo got-SIGTERM; sleep 3; exit 0' TERM; while [ ! -f /shared/app.txt ]; do sleep 0.2; done; echo \"READ=$(cat /shared/app.txt)\"; while true; do sleep 0.2; done"],
                 "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
            ],
            "volumes": [
                {"name": "config", "configMap": {"name": "cfg"}},
                {"name": "secret", "secret": {"secretName": "sec", "defaultMode": 0o400}},
                {"name": "shared", "emptyDir": {}}
            ],
            "securityContext": {"fsGroup": 2000}
        }))
        .build();
    let created = Instant::now();
    create(&cx, &p).await?;
    let running = running(&cx, ns, "real").await?;
    println!("docker pod Running after {:?}", created.elapsed());
    let out = log_with(&cx, (ns, "real", "app"), "started", Duration::from_secs(60)).await?;
    for want in [
        "MODE=fast",
        "PASS=s3cr3t $HOME",
        "PWD=/work",
        "ARG=--mode=fast",
        "FILE=fast",
        "SUB=fast",
        "SECRET=s3cr3t $HOME",
        "DASHED=p-data-1=d1 \"q\" #x",
        "SECRET_STAT=440 2000",
        "SECRET_FS=tmpfs",
        "ROOTFS=image",
        "API_DATA=read-only",
        "LOCALHOST=hello-from-web",
    ] {
        ensure!(out.lines().any(|l| l == want), "{want:?} not in the output of app:\n{out}");
    }
    let read = log_with(&cx, (ns, "real", "reader"), "READ=", Duration::from_secs(30)).await?;
    ensure!(read.trim() == "READ=from-app", "reader: {read}");

    // The pod's own address.
    let job_id = format!("k8s-{ns}_real");
    let alloc = current_alloc(&cx, &job_id).await?;
    let full = cx.nomad(&format!("/v1/allocation/{alloc}")).await?.context("allocation")?;
    let address = full["NetworkStatus"]["Address"].as_str().unwrap_or_default().to_owned();
    ensure!(!address.is_empty(), "no bridge address: {}", full["NetworkStatus"]);
    let st = running.status.clone().context("status")?;
    ensure!(
        st.pod_ip.as_deref() == Some(address.as_str()),
        "podIP {:?}, allocation address {address}",
        st.pod_ip
    );
    ensure!(st.host_ip.as_deref() != Some(address.as_str()), "hostIP is the pod's: {st:?}");
    let job = cx.nomad(&format!("/v1/job/{job_id}")).await?.context("job")?;
    let network = &job["TaskGroups"][0]["Networks"][0];
    ensure!(network["Mode"] == "bridge", "group network {network}");
    ensure!(
        network["DynamicPorts"].as_array().is_none_or(Vec::is_empty)
            && network["ReservedPorts"].as_array().is_none_or(Vec::is_empty),
        "a containerPort took a node port: {network}"
    );
    let page = cx
        .http
        .get(format!("http://{address}:8080/index.html"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .text()
        .await?;
    ensure!(page.trim() == "hello-from-web", "podIP:8080 answered {page:?}");
    wait_for("the pod Ready", Duration::from_secs(30), Duration::from_millis(250), || async {
        Ok(pod_ready(&cx.pods(ns).get("real").await?).then_some(()))
    })
    .await?;

    // kubectl exec runs in the container: its root filesystem, its network namespace. Nomad
    // 1.11's docker driver may end a session before the command started (it inspects the exec
    // right after attaching; hashicorp/nomad#27146), with no output and exit code 0: an empty
    // answer is asked again, at most twice; anything else is checked as it came.
    let mut exec = String::new();
    for _ in 0..3 {
        exec = cx.stack.kubectl(&[
            "exec",
            "-n",
            ns,
            "real",
            "-c",
            "reader",
            "--",
            "sh",
            "-c",
            "cat /shared/app.txt; test -e /etc/debian_version || echo no-host-rootfs; \
             wget -qO- http://localhost:8080/index.html",
        ])?;
        if !exec.is_empty() {
            break;
        }
    }
    ensure!(
        exec.lines().collect::<Vec<_>>() == ["from-app", "no-host-rootfs", "hello-from-web"],
        "kubectl exec printed {exec:?}"
    );

    // kube-rs port-forward (the kubelet API's WebSocket) reaches a port no container declared:
    // the virtual kubelet dials podIP:9090.
    let mut pf = cx.pods(ns).portforward("real", &[9090]).await?;
    let mut s = pf.take_stream(9090).context("no stream")?;
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n").await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer);
    ensure!(
        answer.starts_with("HTTP/1.1 200 OK") && answer.contains("hello-from-web"),
        "port-forward to 9090: {answer:.200}"
    );
    drop(s);
    pf.abort();

    // No Secret byte in the job, nor on the node's disk under the allocation (the task's
    // secrets/ are in-memory mounts, skipped as other file systems; the containers' own output
    // in alloc/logs printed it on purpose).
    ensure!(!job.to_string().contains("s3cr3t"), "the job holds Secret data");
    let alloc_dir = cx.stack.dir.join("nomad/data/alloc").join(&alloc);
    let on_disk = files_containing(&alloc_dir, b"s3cr3t", &[alloc_dir.join("alloc/logs")])?;
    ensure!(on_disk.is_empty(), "Secret data on the node's disk: {on_disk:?}");
    let names: Vec<String> = containers_of(&alloc)?.into_iter().map(|(n, _)| n).collect();
    // web, app, reader, the pause container and the files task (the volumes task is gone).
    ensure!(names.len() == 5, "containers of the pod: {names:?}");
    ensure!(names.iter().any(|n| n.starts_with("vk_files-")), "no files task: {names:?}");
    ensure!(names.iter().any(|n| n.starts_with("nomad_init_")), "no pause container: {names:?}");
    cx.pods(ns).delete("real", &DeleteParams::default()).await?;
    // The graceful delete reaches the process inside the container as SIGTERM (read from the
    // task's log while it takes its 3 s to exit: the job is purged once it has stopped).
    let url = format!(
        "{}/v1/client/fs/logs/{alloc}?task=reader&type=stdout&plain=true&origin=start",
        cx.stack.nomad_addr
    );
    wait_for(
        "got-SIGTERM in reader's log",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let log = cx.http.get(&url).send().await?.text().await?;
            Ok(log.lines().any(|l| l == "got-SIGTERM").then_some(()))
        },
    )
    .await?;
    wait_for(
        "the pod's containers gone",
        Duration::from_secs(30),
        Duration::from_secs(1),
        || async {
            let left = containers_of(&alloc)?;
            Ok(left.is_empty().then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// The regular files under `root` holding `needle`, on `root`'s file system only (mounts below
/// it are skipped), `skip` excluded.
fn files_containing(
    root: &std::path::Path,
    needle: &[u8],
    skip: &[std::path::PathBuf],
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    use std::os::unix::fs::MetadataExt as _;
    let dev = std::fs::metadata(root)?.dev();
    let mut found = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)? {
            let path = e?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.dev() != dev || skip.contains(&path) {
                continue;
            }
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.is_file()
                && std::fs::read(&path)?.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
    Ok(found)
}

/// `docker inspect` of container `name` of allocation `alloc`.
fn inspect(alloc: &str, name: &str) -> anyhow::Result<serde_json::Value> {
    let out = Command::new("docker").args(["inspect", &format!("{name}-{alloc}")]).output()?;
    ensure!(out.status.success(), "docker inspect: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v[0].clone())
}

/// The security context and the limits, enforced by the runtime: `docker inspect` shows what the
/// pod asked for, and processes in the containers cannot do what it forbids.
/// - `locked` (uid 65534, read-only root filesystem, no privilege escalation, every capability
///   dropped but `NET_BIND_SERVICE`; CPU limit = request, memory limit above the request): user,
///   `ReadonlyRootfs`, `SecurityOpt`, `CapDrop`/`CapAdd`, the memory hard limit and reservation
///   and a CFS quota of 0.1 core; inside, a write to `/` fails and `NoNewPrivs` is 1.
/// - `nocaps` (root, every capability dropped) cannot `chown`; `root` (Docker's default
///   capabilities) can, so the check is not vacuous.
/// - `hog` (memory limit 32 MiB) allocating 80 MiB is OOM-killed: `OOMKilled`, exit code 137.
pub(crate) async fn docker_security_and_limits(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-docker-sec", "e2e-docker-sec");
    let _vk = cx.node_and_namespace_with(node, ns, &["--nomad-driver", "docker"]).await?;
    let check = "echo \"UID=$(id -u):$(id -g)\"; \
        if touch /probe 2>/dev/null; then echo ROOT=writable; else echo ROOT=read-only; fi; \
        echo \"NNP=$(grep NoNewPrivs /proc/self/status | tr -d ' \\t' | cut -d: -f2)\"; \
        touch /tmp/f; if chown 65534 /tmp/f 2>/dev/null; then echo CHOWN=done; else echo CHOWN=refused; fi; \
        echo checked; exec sleep 3600";
    let container = |name: &str, sec: serde_json::Value, res: serde_json::Value| {
        serde_json::json!({"name": name, "image": BUSYBOX, "command": ["sh", "-c", check],
            "securityContext": sec, "resources": res})
    };
    let p = pod("sec")
        .namespace(ns)
        .on_node(node).grace(2)
        .spec(serde_json::json!({
            "containers": [
                container("locked", serde_json::json!({
                    "runAsUser": 65534, "runAsGroup": 65534, "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
                }), serde_json::json!({
                    "requests": {"cpu": "100m", "memory": "32Mi"},
                    "limits": {"cpu": "100m", "memory": "64Mi"}
                })),
                container("nocaps", serde_json::json!({"runAsUser": 0, "capabilities": {"drop": ["ALL"]}}), serde_json::json!({})),
                container("root", serde_json::json!({"runAsUser": 0}), serde_json::json!({}))
            ]
        }))
        .build();
    create(&cx, &p).await?;
    running(&cx, ns, "sec").await?;
    let mut seen = Vec::new();
    for c in ["locked", "nocaps", "root"] {
        seen.push(log_with(&cx, (ns, "sec", c), "checked", Duration::from_secs(60)).await?);
    }
    let has = |i: usize, want: &str| {
        ensure!(seen[i].lines().any(|l| l == want), "{want:?} not in:\n{}", seen[i]);
        Ok(())
    };
    has(0, "UID=65534:65534")?;
    has(0, "ROOT=read-only")?;
    has(0, "NNP=1")?;
    has(1, "UID=0:0")?;
    has(1, "CHOWN=refused")?;
    has(2, "ROOT=writable")?;
    has(2, "CHOWN=done")?;
    has(2, "NNP=0")?;

    let alloc = current_alloc(&cx, &format!("k8s-{ns}_sec")).await?;
    let locked = inspect(&alloc, "locked")?;
    let host = &locked["HostConfig"];
    ensure!(locked["Config"]["User"] == "65534:65534", "User {}", locked["Config"]["User"]);
    ensure!(host["ReadonlyRootfs"] == true, "ReadonlyRootfs {}", host["ReadonlyRootfs"]);
    let list = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str())
            .map(|s| s.trim_start_matches("CAP_").to_owned())
            .collect()
    };
    ensure!(list(&host["SecurityOpt"]).contains(&"no-new-privileges".to_owned()), "{host}");
    ensure!(list(&host["CapDrop"]) == ["ALL"], "CapDrop {}", host["CapDrop"]);
    ensure!(list(&host["CapAdd"]) == ["NET_BIND_SERVICE"], "CapAdd {}", host["CapAdd"]);
    ensure!(host["Memory"] == 64 << 20, "Memory {}", host["Memory"]);
    ensure!(
        host["MemoryReservation"] == 32 << 20,
        "MemoryReservation {}",
        host["MemoryReservation"]
    );
    let (quota, period) = (host["CpuQuota"].as_f64(), host["CpuPeriod"].as_f64());
    let cores = quota.zip(period).map(|(q, p)| q / p).unwrap_or_default();
    ensure!(
        (0.09..0.12).contains(&cores),
        "CFS quota of {cores} cores (CpuQuota {quota:?}, CpuPeriod {period:?})"
    );
    let root = inspect(&alloc, "root")?;
    ensure!(root["HostConfig"]["CpuQuota"].as_i64().unwrap_or(0) == 0, "no limit, no quota");

    // A container beyond its memory limit is OOM-killed, and says so.
    let hog = pod("hog")
        .namespace(ns)
        .on_node(node)
        .spec(serde_json::json!({
            "restartPolicy": "Never",
            "containers": [{"name": "hog", "image": BUSYBOX,
                "command": ["sh", "-c", "x=$(head -c 83886080 /dev/zero | tr '\\0' a); echo survived ${#x}"],
                "resources": {"requests": {"memory": "16Mi"}, "limits": {"memory": "32Mi"}}}]
        }))
        .build();
    create(&cx, &hog).await?;
    let failed =
        cx.wait_phase(ns, "hog", "Failed", Duration::from_secs(120)).await.with_context(|| {
            let st = cx.stack.kubectl(&["get", "pod", "-n", ns, "hog", "-o", "jsonpath={.status}"]);
            format!("hog's status: {st:?}")
        })?;
    let term = failed
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|cs| cs.into_iter().next())
        .and_then(|c| c.state)
        .and_then(|s| s.terminated)
        .context("hog not terminated")?;
    ensure!(
        term.reason.as_deref() == Some("OOMKilled") && term.exit_code == 137,
        "hog ended {:?} with {}",
        term.reason,
        term.exit_code
    );
    Ok(())
}

/// An image that cannot be pulled (a registry address where nothing listens, on 127.0.0.1):
/// the container waits in `ImagePullBackOff` with the engine's error, the pod stays Pending, and
/// the kubelet's Events say so: `Failed` (`Failed to pull image "<image>": <error>`) and
/// `BackOff` (`Back-off pulling image "<image>"`). Then the pod is deleted like any other.
pub(crate) async fn docker_image_pull_failure(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-docker-pull", "e2e-docker-pull");
    let _vk = cx.node_and_namespace_with(node, ns, &["--nomad-driver", "docker"]).await?;
    let closed = vk_tests::free_port()?;
    let image = format!("127.0.0.1:{closed}/vk-test/missing:1");
    let p = pod("nopull")
        .namespace(ns)
        .on_node(node)
        .spec(serde_json::json!({"containers": [{"name": "main", "image": image}]}))
        .build();
    create(&cx, &p).await?;
    let waiting = wait_for(
        "ImagePullBackOff",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            let p = cx.pods(ns).get("nopull").await?;
            let w = super::container_state(&p, "main")
                .and_then(|c| c.state)
                .and_then(|s| s.waiting)
                .filter(|w| w.reason.as_deref() == Some("ImagePullBackOff"));
            Ok(w.map(|w| (p, w)))
        },
    )
    .await?;
    let (pod, w) = waiting;
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    ensure!(phase.as_deref() == Some("Pending"), "phase {phase:?}");
    let message = w.message.unwrap_or_default();
    ensure!(
        message.starts_with(&format!("Back-off pulling image {image:?}: ErrImagePull: "))
            && message.contains("connection refused"),
        "ImagePullBackOff message {message:?}"
    );
    let failed = super::wait_event(&cx, ns, "nopull", "Failed").await?;
    let text = failed.message.unwrap_or_default();
    ensure!(
        text.starts_with(&format!("Failed to pull image {image:?}: "))
            && text.contains("connection refused"),
        "Failed event {text:?}"
    );
    ensure!(failed.type_.as_deref() == Some("Warning"), "{:?}", failed.type_);
    let back_off = super::wait_event(&cx, ns, "nopull", "BackOff").await?;
    ensure!(
        back_off.message.as_deref() == Some(format!("Back-off pulling image {image:?}").as_str()),
        "BackOff event {:?}",
        back_off.message
    );
    delete_and_wait(&cx, ns, "nopull").await
}

/// Exec probes in real containers report the command's exit code: a startup probe of
/// `/bin/false` never succeeds (the container is never `started`, so its liveness probe, also
/// `/bin/false`, never runs and nothing restarts it), while `/bin/true` does at once; a readiness
/// probe follows a file the test creates in the container with `kubectl exec`.
pub(crate) async fn docker_exec_probes(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-docker-probes", "e2e-docker-probes");
    let _vk = cx.node_and_namespace_with(node, ns, &["--nomad-driver", "docker"]).await?;
    // Each run of a probe's command is a Nomad exec session (a WebSocket to the agent, a Docker
    // exec, run twice on success: hashicorp/nomad#27146): on a loaded 2-core machine that takes
    // more than the default 1 s `timeoutSeconds` (the CI run of 82e1692 never saw `starts`
    // started in 30 s), so the probes allow 5 s, as pods with exec probes usually do.
    let exec = |argv: &[&str]| serde_json::json!({"exec": {"command": argv}, "periodSeconds": 1, "timeoutSeconds": 5});
    let mut never = exec(&["/bin/false"]);
    never["failureThreshold"] = serde_json::json!(1000);
    let p = pod("probed")
        .namespace(ns)
        .on_node(node)
        .grace(2)
        .spec(serde_json::json!({
            "containers": [
                {"name": "never", "image": BUSYBOX, "command": ["sleep", "3600"],
                 "startupProbe": never, "livenessProbe": exec(&["/bin/false"])},
                {"name": "starts", "image": BUSYBOX, "command": ["sleep", "3600"],
                 "startupProbe": exec(&["/bin/true"]),
                 "readinessProbe": exec(&["test", "-f", "/tmp/ready"])}
            ]
        }))
        .build();
    create(&cx, &p).await?;
    running(&cx, ns, "probed").await?;
    let status = |p: &Pod, c: &str| super::container_state(p, c).context("no container status");
    wait_for("starts started", Duration::from_secs(30), Duration::from_millis(250), || async {
        let p = cx.pods(ns).get("probed").await?;
        Ok((status(&p, "starts")?.started == Some(true)).then_some(()))
    })
    .await?;
    // Fifteen probe periods of /bin/false: never started, never ready, never restarted.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let p = cx.pods(ns).get("probed").await?;
        let never = status(&p, "never")?;
        ensure!(
            never.started != Some(true) && !never.ready && never.restart_count == 0,
            "the /bin/false startup probe passed or liveness ran: {never:?}"
        );
        ensure!(!status(&p, "starts")?.ready, "ready before /tmp/ready exists");
    }
    cx.stack.kubectl(&["exec", "-n", ns, "probed", "-c", "starts", "--", "touch", "/tmp/ready"])?;
    wait_for("starts ready", Duration::from_secs(30), Duration::from_millis(250), || async {
        let p = cx.pods(ns).get("probed").await?;
        Ok(status(&p, "starts")?.ready.then_some(()))
    })
    .await?;
    Ok(())
}

/// No escape through a shared volume (the kubelet's CVE-2017-1002101): a pod whose init container
/// plants `ln -s / /shared/link` in an emptyDir and whose app container mounts `subPath: link`
/// would have Docker follow the link to the node's root filesystem; it is refused before anything
/// reaches Nomad, naming the field. The same link seen through a whole-volume mount resolves
/// inside the container that follows it (its own root filesystem, the image's), never the node's.
pub(crate) async fn docker_subpath_escape(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-docker-escape", "e2e-docker-escape");
    let _vk = cx.node_and_namespace_with(node, ns, &["--nomad-driver", "docker"]).await?;
    let spec = |sub_path: Option<&str>| {
        let mut mount = serde_json::json!({"name": "shared", "mountPath": "/shared"});
        if let Some(s) = sub_path {
            mount = serde_json::json!({"name": "shared", "mountPath": "/escaped", "subPath": s});
        }
        serde_json::json!({
            "initContainers": [{"name": "plant", "image": BUSYBOX,
                "command": ["sh", "-c", "ln -s / /shared/link"],
                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}],
            "containers": [{"name": "main", "image": BUSYBOX,
                "command": ["sh", "-c", "if test -e /shared/link/etc/debian_version || test -e /escaped/etc/debian_version; then echo NODE-ROOT; else echo CONTAINER-ROOT; fi; exec sleep 3600"],
                "volumeMounts": [mount]}],
            "volumes": [{"name": "shared", "emptyDir": {}}]
        })
    };
    let refused = pod("escape").namespace(ns).on_node(node).spec(spec(Some("link")));
    create(&cx, &refused.build()).await?;
    let failed = wait_for(
        "the subPath pod refused",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            let p = cx.pods(ns).get("escape").await?;
            let st = p.status.unwrap_or_default();
            Ok((st.reason.as_deref() == Some("ProviderFailed")).then_some(st))
        },
    )
    .await?;
    let message = failed.message.unwrap_or_default();
    ensure!(
        message.starts_with("spec.containers[0].volumeMounts[0].subPath: \"link\" into emptyDir")
            && message.contains("CVE-2017-1002101"),
        "refusal {message:?}"
    );
    ensure!(
        cx.nomad(&format!("/v1/job/k8s-{ns}_escape")).await?.is_none(),
        "a job was registered for the refused pod"
    );
    let whole = pod("whole").namespace(ns).on_node(node).spec(spec(None));
    create(&cx, &whole.build()).await?;
    running(&cx, ns, "whole").await?;
    let out = log_with(&cx, (ns, "whole", "main"), "", Duration::from_secs(30)).await?;
    ensure!(out.trim() == "CONTAINER-ROOT", "the planted link led to {out:?}");
    Ok(())
}

/// Resource usage of real containers, as the kubelet API reports it (called as the API server
/// calls it, with its client certificate): a container holding 50 MiB (a shell keeping a 50 MiB
/// string) shows a memory working set of at least that, below its 256 MiB limit, in
/// `/stats/summary` and in `/metrics/resource`; a container spinning a shell loop is held at its
/// 100m limit (70m to 130m measured: the CFS quota at work; a small reservation, since the shared
/// test node's CPU holds every test's pods). The pod is deleted at the end.
pub(crate) async fn docker_stats(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-docker-stats", "e2e-docker-stats");
    let port = vk_tests::free_port()?.to_string();
    let flags = ["--nomad-driver", "docker", "--kubelet-port", &port];
    let _vk = cx.node_and_namespace_with(node, ns, &flags).await?;
    let apiserver = cx.stack.kubelet_client()?;
    let get = |path: &str| {
        let r = apiserver.get(format!("https://127.0.0.1:{port}{path}"));
        async move {
            let r = r.send().await?;
            ensure!(r.status().is_success(), "{}", r.status());
            Ok(r.text().await?)
        }
    };
    let p = pod("usage")
        .namespace(ns)
        .on_node(node)
        .grace(1)
        .spec(serde_json::json!({"containers": [
            {"name": "holder", "image": BUSYBOX,
             "command": ["sh", "-c", "x=$(head -c 52428800 /dev/zero | tr '\\0' a); echo held; while :; do sleep 3600; done"],
             "resources": {"requests": {"cpu": "10m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}},
            {"name": "spinner", "image": BUSYBOX, "command": ["sh", "-c", "while :; do :; done"],
             "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "32Mi"}}}
        ]}))
        .build();
    create(&cx, &p).await?;
    running(&cx, ns, "usage").await?;
    let mib = 1u64 << 20;
    let summary = wait_for(
        "holder's 50 MiB and spinner's CPU in /stats/summary",
        Duration::from_secs(90),
        Duration::from_secs(2),
        || async {
            let raw = get("/stats/summary").await?;
            let v: serde_json::Value = serde_json::from_str(&raw)?;
            let pods = v["pods"].as_array().cloned().unwrap_or_default();
            let Some(pod) = pods.iter().find(|p| p["podRef"]["name"] == "usage") else {
                return Ok(None);
            };
            let container = |name: &str| {
                pod["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["name"] == name)
                    .cloned()
            };
            let (Some(holder), Some(spinner)) = (container("holder"), container("spinner")) else {
                return Ok(None);
            };
            let ws = holder["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
            let cpu = spinner["cpu"]["usageNanoCores"].as_u64().unwrap_or(0);
            ensure!(
                ws >= 50 * mib && cpu >= 70_000_000,
                "holder's working set {ws} B, spinner {cpu} nanocores"
            );
            Ok(Some((ws, cpu)))
        },
    )
    .await?;
    let (ws, cpu) = summary;
    ensure!(ws < 256 * mib, "holder's working set {ws} is beyond its limit");
    println!("docker stats: holder {} MiB, spinner {cpu} nanocores", ws / mib);
    let metrics = get("/metrics/resource").await?;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("container_memory_working_set_bytes{")
                && l.contains("container=\"holder\"")
                && l.contains("pod=\"usage\"")
        })
        .with_context(|| format!("no working set of holder in /metrics/resource:\n{metrics}"))?;
    let value: f64 = line.split_whitespace().nth(1).context("no value")?.parse()?;
    ensure!(value >= (50 * mib) as f64, "/metrics/resource: {line}");
    ensure!(cpu <= 130_000_000, "spinner used {cpu} nanocores beyond its 100m limit");
    delete_and_wait(&cx, ns, "usage").await
}

/// Init containers and a native sidecar in real containers: the init containers run in order
/// before anything else (each sees what the one before wrote in the shared emptyDir), the
/// sidecar starts before the app container, which waits for the sidecar's startup probe, and
/// keeps running beside it, and they all share the pod's network (the app reaches the sidecar's
/// server on `localhost`); hostAliases in `/etc/hosts` and the container Events as the kubelet
/// writes them.
pub(crate) async fn docker_init_and_sidecar(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-docker-init", "e2e-docker-init");
    let _vk = cx.node_and_namespace_with(node, ns, &["--nomad-driver", "docker"]).await?;
    let shared = serde_json::json!([{"name": "shared", "mountPath": "/shared"}]);
    let p = pod("ordered")
        .namespace(ns)
        .on_node(node)
        .grace(1)
        .spec(serde_json::json!({
            "initContainers": [
                {"name": "first", "image": BUSYBOX, "volumeMounts": shared,
                 "command": ["sh", "-c", "sleep 1; echo one > /shared/order"]},
                {"name": "second", "image": BUSYBOX, "volumeMounts": shared,
                 "command": ["sh", "-c", "echo \"$(cat /shared/order) two\" > /shared/order"]},
                // Started (its startup probe passes) 2 s after it runs: the app waits for that.
                {"name": "proxy", "image": BUSYBOX, "restartPolicy": "Always", "volumeMounts": shared,
                 "command": ["sh", "-c", "mkdir -p /www && echo from-sidecar > /www/index.html && echo \"$(cat /shared/order) sidecar\" > /shared/order && { (sleep 2; touch /shared/started) & exec httpd -f -p 7070 -h /www; }"],
                 "startupProbe": {"exec": {"command": ["test", "-f", "/shared/started"]},
                                  "periodSeconds": 1, "failureThreshold": 60}}
            ],
            "containers": [
                {"name": "app", "image": BUSYBOX, "volumeMounts": shared,
                 "command": ["sh", "-c", "echo \"ORDER=$(cat /shared/order)\"; if [ -f /shared/started ]; then echo HELD=yes; else echo HELD=no; fi; until wget -qO /tmp/s http://localhost:7070/index.html 2>/dev/null; do sleep 0.2; done; echo \"SIDECAR=$(cat /tmp/s)\"; exec sleep 3600"]}
            ],
            "volumes": [{"name": "shared", "emptyDir": {}}],
            "hostAliases": [{"ip": "123.45.67.89", "hostnames": ["foo", "bar"]},
                            {"ip": "10.9.8.7", "hostnames": ["baz"]}]
        }))
        .build();
    create(&cx, &p).await?;
    let running = running(&cx, ns, "ordered").await?;
    // /etc/hosts as the kubelet writes it: its header, the pod's own line, then one line per
    // hostAliases entry, the names tab-separated.
    let hosts =
        cx.stack.kubectl(&["exec", "-n", ns, "ordered", "-c", "app", "--", "cat", "/etc/hosts"])?;
    let pod_ip = running.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
    ensure!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
            && hosts.lines().any(|l| l.starts_with(&format!("{pod_ip}\t")))
            && hosts.ends_with(
                "\n\n# Entries added by HostAliases.\n123.45.67.89\tfoo\tbar\n10.9.8.7\tbaz\n"
            ),
        "/etc/hosts of app (pod IP {pod_ip}):\n{hosts}"
    );
    let out = log_with(&cx, (ns, "ordered", "app"), "SIDECAR=", Duration::from_secs(60)).await?;
    ensure!(
        out.lines().collect::<Vec<_>>()
            == ["ORDER=one two sidecar", "HELD=yes", "SIDECAR=from-sidecar"],
        "app printed {out:?}"
    );
    let inits = running.status.and_then(|s| s.init_container_statuses).unwrap_or_default();
    let state = |name: &str| inits.iter().find(|c| c.name == name).and_then(|c| c.state.clone());
    for name in ["first", "second"] {
        let t = state(name).and_then(|s| s.terminated);
        ensure!(t.is_some_and(|t| t.exit_code == 0), "{name} did not complete: {:?}", state(name));
    }
    ensure!(state("proxy").and_then(|s| s.running).is_some(), "sidecar {:?}", state("proxy"));
    // The kubelet's Events, each naming its container by field path: Created and Started for each
    // (none for the volumes task, which is not a container), then Killing at the deletion.
    let paths = |reason: &'static str| {
        let cx = &cx;
        async move {
            let events = super::events_of(cx, ns, "ordered").await?;
            let mut paths: Vec<String> = events
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .filter_map(|e| e.involved_object.field_path)
                .collect();
            paths.sort();
            anyhow::Ok(paths)
        }
    };
    let all = [
        "spec.containers{app}",
        "spec.initContainers{first}",
        "spec.initContainers{proxy}",
        "spec.initContainers{second}",
    ];
    for reason in ["Created", "Started"] {
        let got = wait_for(reason, Duration::from_secs(20), Duration::from_millis(500), || async {
            let got = paths(reason).await?;
            Ok((got.len() >= all.len()).then_some(got))
        })
        .await?;
        ensure!(got == all, "{reason} Events for {got:?}");
    }
    let started = super::events_of(&cx, ns, "ordered").await?;
    let app = started.iter().find(|e| {
        e.reason.as_deref() == Some("Started")
            && e.involved_object.field_path.as_deref() == Some("spec.containers{app}")
    });
    let message = app.and_then(|e| e.message.clone()).unwrap_or_default();
    ensure!(message == "Container started", "Started message {message:?}");
    cx.pods(ns).delete("ordered", &DeleteParams::default()).await?;
    let got = wait_for("Killing", Duration::from_secs(20), Duration::from_millis(500), || async {
        let got = paths("Killing").await?;
        Ok((got.len() >= 2).then_some(got))
    })
    .await?;
    ensure!(
        got == ["spec.containers{app}", "spec.initContainers{proxy}"],
        "Killing Events for {got:?}"
    );
    Ok(())
}

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
            let waiting = super::container_state(&p, "c").and_then(|c| c.state?.waiting);
            Ok(waiting.filter(|w| w.reason.as_deref() == Some("CreateContainerConfigError")))
        },
    )
    .await?;
    Ok(())
}

/// Termination messages as the kubelet reports them: the content of the container's
/// `terminationMessagePath` (the default one, and a non-default one written by a non-root user),
/// and with `FallbackToLogsOnError` the end of the log of a container that failed without one;
/// empty for one that succeeded without one.
pub(crate) async fn docker_termination_messages(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-docker-term", "e2e-docker-term");
    let _vk = cx.node_and_namespace_with(node, ns, &["--nomad-driver", "docker"]).await?;
    let cases = [
        ("file", "echo -n DONE > /dev/termination-log", None, None, "DONE"),
        (
            "custom",
            "echo -n DONE > /dev/termination-custom-log",
            Some("/dev/termination-custom-log"),
            None,
            "DONE",
        ),
        // The containers outlive their output by a moment (Nomad's docker log collector stops at
        // the exit: README, "Honoured differently").
        ("fallback", "echo DONE; sleep 1; exit 1", None, Some("FallbackToLogsOnError"), "DONE\n"),
        ("empty", "echo DONE; sleep 1; exit 0", None, Some("FallbackToLogsOnError"), ""),
    ];
    for (name, script, path, policy, _) in &cases {
        let mut c = serde_json::json!({"name": "c", "image": BUSYBOX,
            "command": ["sh", "-c", script]});
        if let Some(p) = path {
            c["terminationMessagePath"] = serde_json::json!(p);
            c["securityContext"] = serde_json::json!({"runAsUser": 1000});
        }
        if let Some(p) = policy {
            c["terminationMessagePolicy"] = serde_json::json!(p);
        }
        let p = pod(name).namespace(ns).on_node(node).grace(1).spec(serde_json::json!({
            "restartPolicy": "Never", "containers": [c]}));
        create(&cx, &p.build()).await?;
    }
    for (name, _, _, _, want) in cases {
        let message = wait_for(
            &format!("{name} terminated"),
            Duration::from_secs(60),
            Duration::from_millis(250),
            || async {
                let p = cx.pods(ns).get(name).await?;
                let t = super::container_state(&p, "c").and_then(|c| c.state?.terminated);
                Ok(t.map(|t| t.message.unwrap_or_default()))
            },
        )
        .await?;
        ensure!(message == want, "{name}: termination message {message:?}, want {want:?}");
    }
    Ok(())
}

/// `readinessGates` as the kubelet honours them: Ready only while every gate's condition (written
/// by another controller through the status subresource) is True, following each change within
/// seconds; ContainersReady alone does not look at them, and a condition back to True keeps no
/// reason or message.
pub(crate) async fn docker_readiness_gates(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-docker-gates", "e2e-docker-gates");
    let _vk = cx.node_and_namespace_with(node, ns, &["--nomad-driver", "docker"]).await?;
    let p = pod("gated")
        .namespace(ns)
        .on_node(node)
        .grace(1)
        .spec(serde_json::json!({
            "readinessGates": [{"conditionType": "example.com/one"}, {"conditionType": "example.com/two"}],
            "containers": [{"name": "c", "image": BUSYBOX, "command": ["sleep", "3600"]}]
        }))
        .build();
    create(&cx, &p).await?;
    running(&cx, ns, "gated").await?;
    let condition = |pod: &Pod, t: &str| {
        pod.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| {
            cs.iter().find(|c| c.type_ == t).map(|c| (c.status.clone(), c.reason.clone()))
        })
    };
    let set = |t: &str, v: &str| {
        let patch = format!(r#"{{"status":{{"conditions":[{{"type":"{t}","status":"{v}"}}]}}}}"#);
        cx.stack.kubectl(&[
            "patch",
            "pod",
            "-n",
            ns,
            "gated",
            "--subresource=status",
            "--type=strategic",
            "-p",
            &patch,
        ])
    };
    let ready_is = |want: &'static str, what: &'static str| {
        let cx = &cx;
        wait_for(what, Duration::from_secs(20), Duration::from_millis(250), move || async move {
            let pod = cx.pods(ns).get("gated").await?;
            Ok((condition(&pod, "Ready").is_some_and(|(s, _)| s == want)).then_some(pod))
        })
    };
    let pod = ready_is("False", "Ready False while no gate is set").await?;
    ensure!(
        condition(&pod, "ContainersReady") == Some(("True".into(), None)),
        "ContainersReady: {:?}",
        condition(&pod, "ContainersReady")
    );
    set("example.com/one", "True")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ready_is("False", "Ready False with one gate of two").await?;
    set("example.com/two", "True")?;
    let pod = ready_is("True", "Ready True once both gates are True").await?;
    ensure!(
        condition(&pod, "Ready") == Some(("True".into(), None)),
        "{:?}",
        condition(&pod, "Ready")
    );
    set("example.com/one", "False")?;
    ready_is("False", "Ready False again when a gate turns False").await?;
    Ok(())
}

/// Runs `docker` with `args` (and the client configuration directory `config`, so no login
/// lands in the machine's own); returns its standard output.
fn docker(config: &std::path::Path, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut child = Command::new("docker")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Image pulls as a kubelet reports them, against a private registry on 127.0.0.1
/// (distribution v3 with htpasswd authentication, an image pushed to it and removed from the
/// engine so that every pod must pull):
/// - without `imagePullSecrets` the pull is refused: `ImagePullBackOff` with the registry's
///   answer;
/// - with the Secret (`kubernetes.io/dockerconfigjson`) the pod runs; the password is not in the
///   job;
/// - a tag the registry does not have: `ImagePullBackOff`, the registry's "not found";
/// - `imagePullPolicy: Always` pulls a tag pushed again with new content, where `IfNotPresent`
///   keeps the copy the engine has.
pub(crate) async fn docker_registry_pulls(cx: Ctx<'_>) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    let (node, ns) = ("vk-docker-registry", "e2e-docker-registry");
    let dir = cx.stack.dir.join("registry");
    std::fs::create_dir_all(dir.join("data"))?;
    let client_config = dir.join("docker-client");
    std::fs::create_dir_all(&client_config)?;
    let (user, password) = ("puller", "pull-s3cr3t");
    let entry = Command::new(&cx.stack.peers.htpasswd).args([user, password]).output()?;
    ensure!(entry.status.success(), "htpasswd failed");
    std::fs::write(dir.join("htpasswd"), &entry.stdout)?;
    let port = vk_tests::free_port()?;
    let registry = format!("127.0.0.1:{port}");
    std::fs::write(
        dir.join("config.yml"),
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
http:\n  addr: {registry}\nauth:\n  htpasswd:\n    realm: vk-test\n    path: {}\n",
            dir.join("data").display(),
            dir.join("htpasswd").display()
        ),
    )?;
    let mut cmd = Command::new(&cx.stack.peers.registry);
    cmd.arg("serve").arg(dir.join("config.yml")).env("OTEL_TRACES_EXPORTER", "none");
    let _registry =
        vk_tests::Process::spawn("registry", cmd, &cx.stack.dir.join("logs/registry.log"))?;
    wait_for("the registry", Duration::from_secs(30), Duration::from_millis(200), || async {
        let r = cx.http.get(format!("http://{registry}/v2/")).send().await;
        Ok(r.ok().filter(|r| r.status() == reqwest::StatusCode::UNAUTHORIZED).map(|_| ()))
    })
    .await?;

    // Two versions of one image, pushed under tags the engine then forgets.
    let (private, moving) =
        (format!("{registry}/private/bb:1"), format!("{registry}/private/bb:moving"));
    docker(&client_config, &["login", &registry, "-u", user, "--password-stdin"], Some(password))?;
    let build = |version: &str, tag: &str| -> anyhow::Result<()> {
        let ctx = dir.join(format!("build-{version}"));
        std::fs::create_dir_all(&ctx)?;
        std::fs::write(ctx.join("version"), format!("{version}\n"))?;
        std::fs::write(ctx.join("Dockerfile"), format!("FROM {BUSYBOX}\nCOPY version /version\n"))?;
        docker(&client_config, &["build", "-q", "-t", tag, &ctx.display().to_string()], None)?;
        docker(&client_config, &["push", tag], None)?;
        docker(&client_config, &["rmi", tag], None)?;
        Ok(())
    };
    build("one", &private)?;
    build("one", &moving)?;

    let _vk = cx.node_and_namespace_with(node, ns, &["--nomad-driver", "docker"]).await?;
    let secrets: Api<Secret> = Api::namespaced(cx.client.clone(), ns);
    let config =
        serde_json::json!({"auths": {registry.clone(): {"username": user, "password": password}}});
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "regcred"}, "type": "kubernetes.io/dockerconfigjson",
                "stringData": {".dockerconfigjson": config.to_string()}
            }))?,
        )
        .await?;
    let reader = |name: &str, image: &str, secret: bool, policy: &str| {
        let mut spec = serde_json::json!({"containers": [{"name": "main", "image": image,
            "imagePullPolicy": policy, "command": ["sh", "-c", "cat /version; exec sleep 3600"]}]});
        if secret {
            spec["imagePullSecrets"] = serde_json::json!([{"name": "regcred"}]);
        }
        pod(name).namespace(ns).on_node(node).grace(1).spec(spec).build()
    };
    let cx = &cx;
    let back_off = |name: &'static str| async move {
        wait_for(
            &format!("{name} in ImagePullBackOff"),
            Duration::from_secs(60),
            Duration::from_millis(250),
            || async {
                let p = cx.pods(ns).get(name).await?;
                let w = super::container_state(&p, "main")
                    .and_then(|c| c.state)
                    .and_then(|s| s.waiting);
                Ok(w.filter(|w| w.reason.as_deref() == Some("ImagePullBackOff"))
                    .and_then(|w| w.message))
            },
        )
        .await
    };
    let output = |name: &'static str| async move {
        running(cx, ns, name).await?;
        log_with(cx, (ns, name, "main"), "", Duration::from_secs(30)).await
    };

    // No secret: refused by the registry.
    create(cx, &reader("anonymous", &private, false, "IfNotPresent")).await?;
    let refused = back_off("anonymous").await?;
    ensure!(
        refused.contains("no basic auth credentials") || refused.contains("unauthorized"),
        "without the secret: {refused:?}"
    );
    cx.pods(ns).delete("anonymous", &DeleteParams::default()).await?;

    // With it: pulled and running; the password is nowhere in the job.
    create(cx, &reader("authorized", &private, true, "IfNotPresent")).await?;
    ensure!(output("authorized").await?.trim() == "one", "authorized's image");
    let job = cx.nomad(&format!("/v1/job/k8s-{ns}_authorized")).await?.context("job")?;
    ensure!(!job.to_string().contains(password), "the job holds the registry password");

    // A tag the registry does not have.
    create(cx, &reader("missing", &format!("{registry}/private/bb:nope"), true, "IfNotPresent"))
        .await?;
    let missing = back_off("missing").await?;
    ensure!(
        missing.contains("not found") || missing.contains("manifest unknown"),
        "missing tag: {missing:?}"
    );

    // Always pulls the tag pushed again; IfNotPresent keeps the engine's copy.
    create(cx, &reader("first", &moving, true, "Always")).await?;
    ensure!(output("first").await?.trim() == "one", "first pull");
    // The registry gets new content under the tag; the engine keeps the copy it pulled.
    let pulled =
        docker(&client_config, &["image", "inspect", "--format", "{{.Id}}", &moving], None)?;
    build("two", &moving)?;
    docker(&client_config, &["tag", pulled.trim(), &moving], None)?;
    create(cx, &reader("kept", &moving, true, "IfNotPresent")).await?;
    create(cx, &reader("again", &moving, true, "Always")).await?;
    ensure!(output("kept").await?.trim() == "one", "IfNotPresent pulled again");
    ensure!(output("again").await?.trim() == "two", "Always did not pull the new content");
    // The engine's state lives in a cache across runs: forget the tags of this run's registry.
    let _ = docker(&client_config, &["rmi", "-f", &private, &moving], None);
    Ok(())
}
