//! A pod in real containers on Nomad's docker driver: its containers' own view (root
//! filesystem, environment, files, one network namespace, its own address), exec probes, init
//! containers and a native sidecar, termination messages and readiness gates.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vk_tests::fixtures::pod;
use vk_tests::{BUSYBOX, wait_for};

use super::{containers_of, create, log_with, running};
use crate::{Ctx, current_alloc, pod_ready};

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
///   declared; a Service selecting it gets an EndpointSlice (kube-controller-manager's) whose
///   ready address is the pod's and answers from the host at the Service's target port;
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
        .metadata(serde_json::json!({"labels": {"app": "real"}}))
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

    // A Service's EndpointSlice lists the pod's own address, ready, and that address answers.
    let services: Api<Service> = Api::namespaced(cx.client.clone(), ns);
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "real"}, "ports": [{"port": 80, "targetPort": 8080}]}
            }))?,
        )
        .await?;
    let slices: Api<EndpointSlice> = Api::namespaced(cx.client.clone(), ns);
    let by_service = ListParams::default().labels("kubernetes.io/service-name=web");
    let (endpoint, port) = wait_for(
        "the Service's EndpointSlice with the pod ready",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            let list = slices.list(&by_service).await?;
            let found = list.items.iter().find_map(|slice| {
                let port = slice.ports.as_ref()?.first()?.port?;
                let ready = slice.endpoints.iter().flatten().find(|e| {
                    e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
                        && e.target_ref.as_ref().and_then(|r| r.name.as_deref()) == Some("real")
                })?;
                Some((ready.addresses.clone(), port))
            });
            Ok(found)
        },
    )
    .await?;
    ensure!(endpoint == [address.clone()], "EndpointSlice addresses {endpoint:?}, pod {address}");
    ensure!(port == 8080, "EndpointSlice port {port}");
    let page = cx
        .http
        .get(format!("http://{}:{port}/index.html", endpoint[0]))
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .text()
        .await?;
    ensure!(page.trim() == "hello-from-web", "the EndpointSlice's address answered {page:?}");

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
    let status = |p: &Pod, c: &str| crate::container_state(p, c).context("no container status");
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
            let events = crate::events_of(cx, ns, "ordered").await?;
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
    let started = crate::events_of(&cx, ns, "ordered").await?;
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
                let t = crate::container_state(&p, "c").and_then(|c| c.state?.terminated);
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
