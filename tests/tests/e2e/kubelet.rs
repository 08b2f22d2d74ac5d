//! End-to-end tests of the kubelet API (port 10250): `kubectl logs`, `attach`, `exec`,
//! `port-forward` and `top` through the real kube-apiserver, kube-rs clients (WebSocket), and the
//! kubelet's own authentication and authorization called directly. Every pod here is a real
//! container on Nomad's docker driver (the offline busybox image), in its own network namespace.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use futures::SinkExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::AttachParams;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vk_tests::fixtures::pod;
use vk_tests::{BUSYBOX, free_port, wait_for};

use super::Ctx;
use super::docker::create;

/// The flags of a virtual kubelet whose pods are docker containers.
const DOCKER: [&str; 2] = ["--nomad-driver", "docker"];

/// A pod of busybox containers: the fixture's containers get [`BUSYBOX`].
fn busybox(p: vk_tests::fixtures::PodBuilder) -> Pod {
    let mut p = p.build();
    for c in p.spec.iter_mut().flat_map(|s| s.containers.iter_mut()) {
        c.image = Some(BUSYBOX.to_owned());
    }
    p
}

/// The numbers of the `line-N` lines of `text`, in order.
fn numbers(text: &str) -> Vec<u64> {
    text.lines().filter_map(|l| l.strip_prefix("line-")?.trim().parse().ok()).collect()
}

fn consecutive(n: &[u64]) -> bool {
    n.windows(2).all(|w| w[1] == w[0] + 1)
}

/// A pod printing `line-1` .. `line-10` at once, then one more line a second.
fn talker(ns: &str, node: &str) -> Pod {
    busybox(
        pod("talker")
            .namespace(ns)
            .on_node(node)
            .container(
                "main",
                &[
                    "sh",
                    "-c",
                    "i=1; while [ $i -le 10 ]; do echo line-$i; i=$((i+1)); done; \
                 while true; do sleep 1; echo line-$i; i=$((i+1)); done",
                ],
            )
            .grace(1),
    )
}

/// `kubectl logs` returns the pod's output; `--tail=3` the last three lines; `--limit-bytes=5`
/// five bytes; `-f` streams lines written after it started. `kubectl attach` streams what is
/// written from then on; `kubectl attach -i` is refused with the reason.
pub(crate) async fn kubelet_logs(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-logs", "e2e-logs");
    let _vk = cx.node_and_namespace_with(node, ns, &DOCKER).await?;
    create(&cx, &talker(ns, node)).await?;
    cx.wait_phase(ns, "talker", "Running", Duration::from_secs(30)).await?;
    let whole = wait_for(
        "ten lines logged",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let out = cx.stack.kubectl(&["logs", "-n", ns, "talker"]).unwrap_or_default();
            Ok((numbers(&out).len() >= 12).then_some(out))
        },
    )
    .await?;
    let all = numbers(&whole);
    ensure!(all.first() == Some(&1) && consecutive(&all), "kubectl logs:\n{whole}");

    let tail = cx.stack.kubectl(&["logs", "-n", ns, "talker", "--tail=3"])?;
    let t = numbers(&tail);
    ensure!(
        t.len() == 3 && consecutive(&t) && t[0] >= all[all.len() - 1].saturating_sub(2),
        "--tail=3:\n{tail}"
    );
    ensure!(tail.lines().count() == 3, "--tail=3 gave more than lines:\n{tail:?}");

    let limited = cx.stack.kubectl(&["logs", "-n", ns, "talker", "--limit-bytes=5"])?;
    ensure!(limited == "line-", "--limit-bytes=5: {limited:?}");

    let with_time = cx.stack.kubectl(&["logs", "-n", ns, "talker", "--timestamps", "--tail=1"])?;
    let (stamp, rest) = with_time.split_once(' ').context("no timestamp")?;
    ensure!(
        stamp.parse::<k8s_openapi::jiff::Timestamp>().is_ok() && rest.starts_with("line-"),
        "--timestamps: {with_time:?}"
    );

    // -f: lines written after the command started arrive while it runs.
    let mut follow = Streamed::start(&cx, &["logs", "-f", "-n", ns, "talker", "--tail=1"])?;
    let start = last_line(&cx, ns)?;
    let seen = follow.numbers_up_to(start + 3, "kubectl logs -f").await?;
    ensure!(consecutive(&seen), "kubectl logs -f skipped or repeated lines: {seen:?}");

    // kubectl attach: what the container writes from then on, nothing written before.
    let before = last_line(&cx, ns)?;
    let mut attached = Streamed::start(&cx, &["attach", "-n", ns, "talker", "-c", "main"])?;
    let seen = attached.numbers_up_to(before + 3, "kubectl attach").await?;
    ensure!(
        seen.first().is_some_and(|n| *n > before) && consecutive(&seen),
        "kubectl attach after line-{before} gave {seen:?}"
    );
    // With -i: refused, saying why (Nomad has no stdin to give a running task).
    let kubectl = cx.stack.peers.kubectl.clone();
    let kubeconfig = format!("--kubeconfig={}", cx.stack.admin_kubeconfig.display());
    let args = ["attach", "-i", "-n", ns, "talker", "-c", "main"].map(str::to_owned);
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || {
            Command::new(kubectl).arg(kubeconfig).args(args).stdin(Stdio::piped()).output()
        }),
    )
    .await
    .context("kubectl attach -i did not end within 30 s")???;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("Nomad cannot attach stdin to a running task"),
        "kubectl attach -i: {} {stderr}",
        out.status
    );

    // --previous: a container restarted in place has its earlier run's output there (Nomad
    // appends a restarted task's output to the same files: the whole log, README "Logs").
    let count = "n=$(cat /d/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /d/n; echo run-$n; \
                 if [ $n -ge 2 ]; then exec sleep 3600; fi; sleep 1; exit 3";
    let crasher = pod("crasher").namespace(ns).on_node(node).grace(1).spec(serde_json::json!({
        "containers": [{"name": "main", "image": BUSYBOX, "command": ["sh", "-c", count],
            "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
        "volumes": [{"name": "d", "emptyDir": {}}]
    }));
    create(&cx, &crasher.build()).await?;
    let restarted = wait_for(
        "crasher restarted once",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let p = cx.pods(ns).get("crasher").await?;
            Ok(super::container_state(&p, "main").filter(|c| {
                c.restart_count == 1 && c.state.as_ref().is_some_and(|s| s.running.is_some())
            }))
        },
    )
    .await?;
    let last = restarted.last_state.and_then(|s| s.terminated).context("no lastState")?;
    ensure!(last.exit_code == 3, "lastState {last:?}");
    let previous = cx.stack.kubectl(&["logs", "-n", ns, "crasher", "--previous"])?;
    ensure!(previous.lines().next() == Some("run-1"), "--previous: {previous:?}");
    Ok(())
}

/// The number of the last line `talker` logged.
fn last_line(cx: &Ctx<'_>, ns: &str) -> anyhow::Result<u64> {
    let tail = cx.stack.kubectl(&["logs", "-n", ns, "talker", "--tail=1"])?;
    numbers(&tail).first().copied().context("no last line")
}

/// A kubectl that streams lines (`logs -f`, `attach`), read as they come; killed when dropped.
struct Streamed {
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Streamed {
    fn start(cx: &Ctx<'_>, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(&cx.stack.peers.kubectl)
            .arg(format!("--kubeconfig={}", cx.stack.admin_kubeconfig.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// The `line-N` numbers printed until one reaches `last`, within 30 s.
    async fn numbers_up_to(&mut self, last: u64, what: &str) -> anyhow::Result<Vec<u64>> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while seen.last().is_none_or(|n| *n < last) {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => seen.extend(numbers(&line)),
                Ok(None) => bail!("{what} ended; saw {seen:?}"),
                Err(_) => bail!("{what}: no line-{last} within 30 s; saw {seen:?}"),
            }
        }
        Ok(seen)
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kubectl exec` runs a command and passes its exit code; `-i` passes stdin; kube-rs (translated
/// to SPDY by the API server) gets output and a terminal that resizes.
pub(crate) async fn kubelet_exec(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-exec", "e2e-exec");
    let _vk = cx.node_and_namespace_with(node, ns, &DOCKER).await?;
    let p = pod("shell").namespace(ns).on_node(node).container("main", &["sleep", "600"]).grace(1);
    create(&cx, &busybox(p)).await?;
    cx.wait_phase(ns, "shell", "Running", Duration::from_secs(30)).await?;

    let out = cx.stack.kubectl(&[
        "exec",
        "-n",
        ns,
        "shell",
        "--",
        "sh",
        "-c",
        // Each command outlives its output by a moment: Nomad's docker driver closes an exec's
        // streams as soon as it sees the process gone, before copying what is still in flight
        // (`ExecTaskStreaming`; README, "Honoured differently").
        "echo out; echo err >&2; sleep 0.5",
    ])?;
    ensure!(out == "out\n", "kubectl exec stdout: {out:?}");

    let status = Command::new(&cx.stack.peers.kubectl)
        .arg(format!("--kubeconfig={}", cx.stack.admin_kubeconfig.display()))
        .args(["exec", "-n", ns, "shell", "--", "sh", "-c", "exit 7"])
        .output()?;
    ensure!(
        status.status.code() == Some(7),
        "kubectl exec exit 7 gave {:?}: {}",
        status.status,
        String::from_utf8_lossy(&status.stderr)
    );

    let mut child = Command::new(&cx.stack.peers.kubectl)
        .arg(format!("--kubeconfig={}", cx.stack.admin_kubeconfig.display()))
        .args(["exec", "-i", "-n", ns, "shell", "--", "sh", "-c", "tr a-z A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().context("no stdin")?;
        stdin.write_all(b"hello from stdin\n")?;
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    ensure!(out.status.success(), "kubectl exec -i: {:?}", out.status);
    ensure!(
        String::from_utf8_lossy(&out.stdout) == "HELLO FROM STDIN\n",
        "kubectl exec -i: {:?}",
        out.stdout
    );

    // kube-rs: plain output, then a terminal resized to 120x40.
    let pods: Api<Pod> = cx.pods(ns);
    let mut run = pods
        .exec(
            "shell",
            ["sh", "-c", "echo kube-rs; sleep 0.5"],
            &AttachParams::default().stderr(false),
        )
        .await?;
    let mut got = String::new();
    run.stdout().context("no stdout")?.read_to_string(&mut got).await?;
    ensure!(got == "kube-rs\n", "kube-rs exec: {got:?}");
    let status = run.take_status().context("no status")?.await;
    ensure!(
        status.as_ref().and_then(|s| s.status.as_deref()) == Some("Success"),
        "kube-rs status {status:?}"
    );

    let mut tty = pods
        .exec("shell", ["sh", "-c", "sleep 2; stty size"], &AttachParams::interactive_tty())
        .await?;
    let mut resize = tty.terminal_size().context("no resize channel")?;
    resize.send(kube::api::TerminalSize { width: 120, height: 40 }).await?;
    let mut stdin = tty.stdin().context("no stdin")?;
    let mut stdout = tty.stdout().context("no stdout")?;
    let mut text = String::new();
    let read =
        tokio::time::timeout(Duration::from_secs(20), stdout.read_to_string(&mut text)).await;
    let _ = stdin.shutdown().await;
    ensure!(read.is_ok(), "the tty session did not end; got {text:?}");
    ensure!(text.trim() == "40 120", "stty size in a 120x40 terminal: {text:?}");
    Ok(())
}

/// `kubectl port-forward` (SPDY) and kube-rs port-forward (WebSocket passed through) carry an
/// HTTP request to a server in the pod.
pub(crate) async fn kubelet_port_forward(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-pf", "e2e-pf");
    let _vk = cx.node_and_namespace_with(node, ns, &DOCKER).await?;
    // A port no container declares: a client may forward to any port of the pod.
    let port = 8181;
    let serve = format!(
        "mkdir -p /www && echo served-from-the-pod > /www/index.html && exec httpd -f -p {port} -h /www"
    );
    let p =
        pod("web").namespace(ns).on_node(node).container("main", &["sh", "-c", &serve]).grace(1);
    create(&cx, &busybox(p)).await?;
    cx.wait_phase(ns, "web", "Running", Duration::from_secs(30)).await?;
    let url_ok = |local: u16| {
        let http = cx.http.clone();
        async move {
            let r = http.get(format!("http://127.0.0.1:{local}/")).send().await?;
            anyhow::Ok(
                r.status().as_u16() == 200 && r.text().await?.contains("served-from-the-pod"),
            )
        }
    };
    // The server may take a moment to listen.
    let local = free_port()?;
    let mut child = Command::new(&cx.stack.peers.kubectl)
        .arg(format!("--kubeconfig={}", cx.stack.admin_kubeconfig.display()))
        .args(["port-forward", "-n", ns, "pod/web", &format!("{local}:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = wait_for(
        "an HTTP answer through kubectl port-forward",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async { Ok(url_ok(local).await.unwrap_or(false).then_some(())) },
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result?;

    let mut pf = cx.pods(ns).portforward("web", &[port]).await?;
    let mut s = pf.take_stream(port).context("no stream")?;
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n").await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer);
    ensure!(
        answer.split_whitespace().nth(1) == Some("200") && answer.contains("served-from-the-pod"),
        "kube-rs port-forward: {answer:.200}"
    );
    drop(s);
    pf.abort();
    Ok(())
}

/// The kubelet's authentication and authorization, called directly: no credentials 401; a
/// ServiceAccount without rights 403 on exec, logs and stats; one granted `nodes/stats` 200 on
/// stats and 403 on exec; the API server's client certificate everything. Unknown pods and
/// containers 404, bad log options 400; `/stats/summary` valid stats/v1alpha1.
pub(crate) async fn kubelet_security(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-authz", "e2e-authz");
    let port = free_port()?;
    let port_flag = port.to_string();
    let _vk =
        cx.stack.virtual_kubelet(node, &[&DOCKER[..], &["--kubelet-port", &port_flag]].concat())?;
    cx.stack.namespace(ns).await?;
    cx.wait_ready(node, Duration::from_secs(30)).await?;
    create(&cx, &talker(ns, node)).await?;
    cx.wait_phase(ns, "talker", "Running", Duration::from_secs(30)).await?;

    cx.stack.kubectl(&["create", "serviceaccount", "-n", ns, "nobody"])?;
    cx.stack.kubectl(&["create", "serviceaccount", "-n", ns, "stats-reader"])?;
    cx.stack.kubectl(&[
        "create",
        "clusterrole",
        "e2e-node-stats",
        "--verb=get",
        "--resource=nodes/stats",
    ])?;
    cx.stack.kubectl(&[
        "create",
        "clusterrolebinding",
        "e2e-node-stats",
        "--clusterrole=e2e-node-stats",
        &format!("--serviceaccount={ns}:stats-reader"),
    ])?;
    let nobody = cx.stack.kubectl(&["create", "token", "-n", ns, "nobody"])?;
    let reader = cx.stack.kubectl(&["create", "token", "-n", ns, "stats-reader"])?;

    let base = format!("https://127.0.0.1:{port}");
    let anon = reqwest::Client::builder().danger_accept_invalid_certs(true).build()?;
    let apiserver = cx.stack.kubelet_client()?;
    let exec = format!("/exec/{ns}/talker/main?command=true&output=1");
    let logs = format!("/containerLogs/{ns}/talker/main?tailLines=2");
    let call =
        |client: &reqwest::Client, method: reqwest::Method, path: &str, token: Option<&str>| {
            let mut r = client.request(method, format!("{base}{path}"));
            if let Some(t) = token {
                r = r.bearer_auth(t.trim());
            }
            async move {
                let r = r.send().await?;
                anyhow::Ok((r.status().as_u16(), r.text().await?))
            }
        };
    use reqwest::Method;
    let status = |r: anyhow::Result<(u16, String)>| r.map(|(s, _)| s);

    // The server is up once the node is Ready; no credentials: 401.
    ensure!(
        status(call(&anon, Method::GET, "/stats/summary", None).await)? == 401,
        "anonymous stats"
    );
    ensure!(status(call(&anon, Method::POST, &exec, None).await)? == 401, "anonymous exec");
    ensure!(
        status(call(&anon, Method::GET, "/stats/summary", Some("not-a-token")).await)? == 401,
        "bad token"
    );
    // No rights: 403 everywhere.
    for (m, path) in [
        (Method::POST, exec.as_str()),
        (Method::GET, logs.as_str()),
        (Method::GET, "/stats/summary"),
    ] {
        let (s, body) = call(&anon, m.clone(), path, Some(&nobody)).await?;
        ensure!(
            s == 403 && body.contains("system:serviceaccount:e2e-authz:nobody"),
            "nobody {m} {path}: {s} {body}"
        );
    }
    // nodes/stats only.
    let (s, body) = call(&anon, Method::GET, "/stats/summary", Some(&reader)).await?;
    ensure!(s == 200, "stats-reader stats: {s} {body}");
    ensure!(
        status(call(&anon, Method::POST, &exec, Some(&reader)).await)? == 403,
        "stats-reader exec"
    );
    ensure!(
        status(call(&anon, Method::GET, &logs, Some(&reader)).await)? == 403,
        "stats-reader logs"
    );
    // The API server's client certificate: everything.
    let (s, body) = call(&apiserver, Method::GET, &logs, None).await?;
    ensure!(s == 200 && numbers(&body).len() == 2, "apiserver logs: {s} {body}");
    let (s, body) = call(&apiserver, Method::POST, &exec, None).await?;
    ensure!(s == 400 && body.contains("Upgrade"), "apiserver exec without an upgrade: {s} {body}");
    let (s, body) = call(&apiserver, Method::GET, "/pods", None).await?;
    let list: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    ensure!(
        s == 200
            && list["items"]
                .as_array()
                .is_some_and(|i| i.iter().any(|p| p["metadata"]["name"] == "talker")),
        "/pods: {s} {body:.300}"
    );
    ensure!(status(call(&apiserver, Method::GET, "/healthz", None).await)? == 200, "/healthz");
    // The kubelet's path, and client-go's (which drops the slash).
    for path in ["/runningpods/", "/runningpods"] {
        ensure!(status(call(&apiserver, Method::GET, path, None).await)? == 200, "{path}");
    }
    // Errors a client can act on.
    for (path, want) in [
        (format!("/containerLogs/{ns}/nope/main"), 404),
        (format!("/containerLogs/{ns}/talker/nope"), 404),
        (format!("/containerLogs/{ns}/talker/main?tailLines=-1"), 400),
        (format!("/containerLogs/{ns}/talker/main?sinceSeconds=0"), 400),
    ] {
        let (s, body) = call(&apiserver, Method::GET, &path, None).await?;
        ensure!(s == want, "{path}: {s} (want {want}) {body}");
    }
    // /stats/summary and /metrics/resource describe the running pod.
    let summary = wait_for(
        "the pod in /stats/summary",
        Duration::from_secs(30),
        Duration::from_secs(1),
        || async {
            let (s, body) = call(&apiserver, Method::GET, "/stats/summary", None).await?;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let has = v["pods"].as_array().is_some_and(|ps| {
                ps.iter().any(|p| {
                    p["podRef"]["name"] == "talker"
                        && p["containers"][0]["cpu"]["usageCoreNanoSeconds"]
                            .as_u64()
                            .is_some_and(|n| n > 0)
                })
            });
            Ok((s == 200 && has).then_some(body))
        },
    )
    .await?;
    cx.stack.peers.check_stats_summary(summary.as_bytes(), true)?;
    let (s, metrics) = call(&apiserver, Method::GET, "/metrics/resource", None).await?;
    let line = format!(
        "container_cpu_usage_seconds_total{{container=\"main\",namespace=\"{ns}\",pod=\"talker\"}}"
    );
    ensure!(s == 200 && metrics.contains(&line), "/metrics/resource: {s}\n{metrics}");
    ensure!(metrics.contains(&format!("container_memory_working_set_bytes{{container=\"main\",namespace=\"{ns}\",pod=\"talker\"}}")), "no memory sample:\n{metrics}");
    Ok(())
}

/// metrics-server scrapes `/metrics/resource`: `kubectl top pod` shows a pod of the node, and an
/// HPA on a Deployment whose pod burns CPU scales it up.
pub(crate) async fn kubelet_top_and_hpa(cx: Ctx<'_>) -> anyhow::Result<()> {
    let (node, ns) = ("vk-top", "e2e-top");
    let _vk = cx.node_and_namespace_with(node, ns, &DOCKER).await?;
    cx.stack.start_metrics_server().await?;
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "burner", "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "burner"}},
            "template": {
                "metadata": {"labels": {"app": "burner"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "burn",
                        "image": BUSYBOX,
                        // A tenth of a core at most (the limit is Docker's CFS quota): the
                        // usage is the whole request, and the machine keeps its CPU.
                        "command": ["sh", "-c", "while :; do :; done"],
                        "resources": {"requests": {"cpu": "100m", "memory": "16Mi"},
                                      "limits": {"cpu": "100m", "memory": "16Mi"}},
                    }],
                },
            },
        },
    });
    let hpa = serde_json::json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "burner", "namespace": ns},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "burner"},
            "minReplicas": 1,
            "maxReplicas": 2,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
        },
    });
    let file = cx.stack.dir.join("e2e-top.json");
    std::fs::write(&file, serde_json::to_vec(&json_list(&[deployment, hpa]))?)?;
    cx.stack.kubectl(&["apply", "-f", &file.display().to_string()])?;
    let top =
        wait_for("kubectl top pod", Duration::from_secs(120), Duration::from_secs(3), || async {
            let out =
                cx.stack.kubectl(&["top", "pod", "-n", ns, "--no-headers"]).unwrap_or_default();
            Ok(out.contains("burner-").then_some(out))
        })
        .await;
    let result = async {
        let top = top?;
        println!("kubectl top pod:\n{top}");
        let millicores: u64 = top
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.strip_suffix('m'))
            .and_then(|c| c.parse().ok())
            .context("no CPU figure")?;
        ensure!(millicores > 0, "kubectl top pod: {top}");
        wait_for(
            "the HPA scales to 2",
            Duration::from_secs(120),
            Duration::from_secs(2),
            || async {
                let r = cx.stack.kubectl(&[
                    "get",
                    "deployment",
                    "-n",
                    ns,
                    "burner",
                    "-o",
                    "jsonpath={.spec.replicas}",
                ])?;
                Ok((r.trim() == "2").then_some(()))
            },
        )
        .await
    }
    .await;
    // Stop burning whatever happened.
    let _ = cx.stack.kubectl(&["delete", "-n", ns, "hpa,deployment", "burner", "--wait=false"]);
    result
}

fn json_list(items: &[serde_json::Value]) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// What a WebSocket exec client (one the API server passes through: kube-rs before 0.99, Python,
/// JavaScript) sees from the kubelet port directly, as the API server's client certificate: per
/// channel output and the v4 Status with the exit code, for `v4.channel.k8s.io`,
/// `v5.channel.k8s.io` (stdin, then its stream-close message) and `v4.base64.channel.k8s.io`.
pub(crate) async fn kubelet_websocket_exec(cx: Ctx<'_>) -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::Message;
    let (node, ns) = ("vk-ws", "e2e-ws");
    let port = free_port()?;
    let port_flag = port.to_string();
    let _vk =
        cx.stack.virtual_kubelet(node, &[&DOCKER[..], &["--kubelet-port", &port_flag]].concat())?;
    cx.stack.namespace(ns).await?;
    cx.wait_ready(node, Duration::from_secs(30)).await?;
    let p = pod("shell").namespace(ns).on_node(node).container("main", &["sleep", "600"]).grace(1);
    create(&cx, &busybox(p)).await?;
    cx.wait_phase(ns, "shell", "Running", Duration::from_secs(30)).await?;
    let client = cx.stack.kubelet_client_with(reqwest::Client::builder().http1_only())?;

    for protocol in ["v4.channel.k8s.io", "v5.channel.k8s.io", "v4.base64.channel.k8s.io"] {
        let base64 = protocol.contains("base64");
        // Nomad reports a command's exit only once its stdin is closed (its executor waits for
        // the stdin copy), and only v5 can close stdin without closing the connection: before v5
        // the command gets no stdin.
        let v5 = protocol.starts_with("v5");
        let url = format!(
            "https://127.0.0.1:{port}/exec/{ns}/shell/main?command=sh&command=-c&command={}&input={}&output=1&error=1",
            if v5 {
                "head%20-n%201%3B%20echo%20err%20%3E%262%3B%20exit%203"
            } else {
                "echo%20through%20stdin%3B%20echo%20err%20%3E%262%3B%20exit%203"
            },
            u8::from(v5),
        );
        let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
        let resp = client
            .get(url)
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", &key)
            .header("Sec-WebSocket-Protocol", protocol)
            .send()
            .await?;
        ensure!(
            resp.status() == reqwest::StatusCode::SWITCHING_PROTOCOLS,
            "{protocol}: {}",
            resp.status()
        );
        let chosen = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        ensure!(chosen.as_deref() == Some(protocol), "{protocol}: server chose {chosen:?}");
        let io = resp.upgrade().await?;
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            io,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        let frame = |channel: u8, data: &[u8]| {
            if base64 {
                use base64::Engine as _;
                let mut t = String::from(char::from(b'0' + channel));
                t.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
                Message::text(t)
            } else {
                let mut b = vec![channel];
                b.extend_from_slice(data);
                Message::binary(b)
            }
        };
        if v5 {
            ws.send(frame(0, b"through stdin\n")).await?;
            // v5's stream-close message: stdin ends.
            ws.send(Message::binary(vec![255, 0])).await?;
        }
        let mut channels: [Vec<u8>; 4] = Default::default();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let msg =
                match tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut ws)).await {
                    Ok(Some(m)) => m?,
                    Ok(None) => break,
                    Err(_) => bail!("{protocol}: no end within 20 s; got {channels:?}"),
                };
            let bytes: Vec<u8> = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) if base64 => {
                    use base64::Engine as _;
                    let t = t.as_str();
                    let (c, rest) = t.split_at(1);
                    let mut v = vec![c.as_bytes()[0] - b'0'];
                    v.extend(base64::engine::general_purpose::STANDARD.decode(rest)?);
                    v
                }
                Message::Close(_) => break,
                _ => continue,
            };
            if let Some((&c, data)) = bytes.split_first()
                && usize::from(c) < channels.len()
            {
                channels[usize::from(c)].extend_from_slice(data);
            }
        }
        ensure!(
            channels[1] == b"through stdin\n",
            "{protocol}: stdout {:?}",
            String::from_utf8_lossy(&channels[1])
        );
        ensure!(
            channels[2] == b"err\n",
            "{protocol}: stderr {:?}",
            String::from_utf8_lossy(&channels[2])
        );
        let status: serde_json::Value = serde_json::from_slice(&channels[3])?;
        ensure!(
            status["reason"] == "NonZeroExitCode"
                && status["details"]["causes"][0]["message"] == "3",
            "{protocol}: status {status}"
        );
        let _ = ws.close(None).await;
    }
    Ok(())
}
