//! End-to-end tests on the real peers: a real kube-apiserver, scheduler and controller manager,
//! a real Nomad agent, and the `virtual-kubelet` binary. One stack is shared by all tests (each
//! test has its own node name and namespaces); it is started on first use and torn down at the
//! end. A failing test prints where the peers' and the virtual kubelet's logs are.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;
use tokio::sync::OnceCell;
use vk_tests::fixtures::pod;
use vk_tests::{METRICS_APISERVICE, Process, Stack, StackOptions, wait_for};

#[path = "e2e/acl.rs"]
mod acl;
#[path = "e2e/adversary.rs"]
mod adversary;
#[path = "e2e/bootstrap.rs"]
mod bootstrap;
#[path = "e2e/chart.rs"]
mod chart;
#[path = "e2e/cluster.rs"]
mod cluster;
#[path = "e2e/deploy.rs"]
mod deploy;
#[path = "e2e/docker.rs"]
mod docker;
#[path = "e2e/faults.rs"]
mod faults;
#[path = "e2e/ha.rs"]
mod ha;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/inputs.rs"]
mod inputs;
#[path = "e2e/kubelet.rs"]
mod kubelet;
#[path = "e2e/node.rs"]
mod node;
#[path = "e2e/pods.rs"]
mod pods;
#[path = "e2e/refusals.rs"]
mod refusals;
use acl::{nomad_acl_policy, nomad_tls_and_http_auth};
use adversary::kubelet_port_under_attack;
use bootstrap::node_identity_bootstrap;
use chart::helm_chart;
use cluster::{
    example_manifests, many_nodes, nomad_leader_killed, placement_failures, shared_capacity,
};
use deploy::in_cluster_rbac;
use docker::images::{docker_image_pull_failure, docker_registry_pulls};
use docker::pods::{
    docker_exec_probes, docker_init_and_sidecar, docker_pod, docker_readiness_gates,
    docker_termination_messages,
};
use docker::security::{docker_security_and_limits, docker_stats, docker_subpath_escape};
use docker::volumes::{docker_empty_dirs, docker_volume_updates};
use faults::{
    apiserver_restart, force_delete_orphans_and_foreign_jobs, graceful_shutdown,
    killed_during_creation, lost_allocations, nomad_outage, nomad_unreachable, restart_adopts,
};
use ha::leader_election;
use hostile::hostile_corpus;
use inputs::{missing_inputs, pod_inputs_and_volumes, token_renewal};
use node::{metrics_server_serves, node_lifecycle, process_metrics};
use pods::{
    ephemeral_containers, exit_code, grpc_probes, interactive_pods, lifecycle, lifecycle_hooks,
    nomad_namespace, pod_runs_and_deletes, probes, pushed_status, same_name_two_namespaces,
};
use refusals::{unsupported_corpus, untranslatable_pod};
#[path = "e2e/providers.rs"]
mod providers;
use kubelet::{
    kubelet_exec, kubelet_logs, kubelet_port_forward, kubelet_security, kubelet_top_and_hpa,
    kubelet_websocket_exec,
};
use providers::{example_provider, memory_provider};

type Shared = Arc<OnceCell<Result<Stack, String>>>;

struct Ctx<'a> {
    stack: &'a Stack,
    client: Client,
    http: reqwest::Client,
}

impl Ctx<'_> {
    fn start_vk(&self, node: &str) -> anyhow::Result<Process> {
        self.stack.virtual_kubelet(node, &[])
    }

    /// Starts a virtual kubelet as `node`, makes namespace `ns`, and waits for the node to be
    /// Ready (within 30 s).
    async fn node_and_namespace(&self, node: &str, ns: &str) -> anyhow::Result<Process> {
        self.node_and_namespace_with(node, ns, &[]).await
    }

    /// [`Ctx::node_and_namespace`] for pods on Nomad's docker driver (real containers of
    /// [`vk_tests::BUSYBOX`]).
    async fn docker_node_and_namespace(&self, node: &str, ns: &str) -> anyhow::Result<Process> {
        self.node_and_namespace_with(node, ns, &["--nomad-driver", "docker"]).await
    }

    /// [`Ctx::node_and_namespace`] with `extra` flags.
    async fn node_and_namespace_with(
        &self,
        node: &str,
        ns: &str,
        extra: &[&str],
    ) -> anyhow::Result<Process> {
        let vk = self.stack.virtual_kubelet(node, extra)?;
        self.stack.namespace(ns).await?;
        self.wait_ready(node, Duration::from_secs(30)).await?;
        Ok(vk)
    }

    async fn node(&self, name: &str) -> anyhow::Result<Option<Node>> {
        Ok(Api::<Node>::all(self.client.clone()).get_opt(name).await?)
    }

    async fn ready_status(&self, name: &str) -> anyhow::Result<Option<String>> {
        let node = self.node(name).await?;
        Ok(node
            .and_then(|n| n.status)
            .and_then(|s| s.conditions)
            .and_then(|cs| cs.into_iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status))
    }

    async fn wait_ready(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        wait_for(&format!("node {name} Ready"), timeout, Duration::from_millis(500), || async {
            Ok((self.ready_status(name).await?.as_deref() == Some("True")).then_some(()))
        })
        .await
        .with_context(|| {
            // The stack's directory is gone when the run ends: say here why the node is not up.
            let log = self.stack.dir.join("logs").join(format!("virtual-kubelet-{name}.log"));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            format!(
                "the last lines of {}:\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn create(&self, p: &Pod) -> anyhow::Result<Pod> {
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        self.pods(ns).create(&PostParams::default(), p).await.context("creating a pod")
    }

    async fn wait_phase(
        &self,
        ns: &str,
        name: &str,
        phase: &str,
        timeout: Duration,
    ) -> anyhow::Result<Pod> {
        let pods = self.pods(ns);
        wait_for(
            &format!("pod {ns}/{name} {phase}"),
            timeout,
            Duration::from_millis(250),
            || async {
                let p = pods.get(name).await?;
                let now = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
                Ok((now == phase).then_some(p))
            },
        )
        .await
    }

    async fn nomad(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let r = self.http.get(format!("{}{path}", self.stack.nomad_addr)).send().await?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        ensure!(r.status().is_success(), "GET {path}: {}", r.status());
        Ok(Some(r.json().await?))
    }

    /// Jobs whose Meta names `node` as owner.
    async fn jobs_of(&self, node: &str) -> anyhow::Result<Vec<Value>> {
        let all = self.nomad("/v1/jobs?meta=true").await?.unwrap_or_default();
        Ok(all
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|j| j["Meta"]["k8s_node_name"] == node)
            .collect())
    }

    async fn allocations(&self, job: &str) -> anyhow::Result<Vec<Value>> {
        let v = self.nomad(&format!("/v1/job/{job}/allocations")).await?.unwrap_or_default();
        Ok(v.as_array().cloned().unwrap_or_default())
    }
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn container_state(p: &Pod, name: &str) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    p.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == name).cloned()
}

/// The text a task wrote to its stdout so far (Nomad's fs logs API).
async fn task_stdout(cx: &Ctx<'_>, alloc: &str, task: &str) -> anyhow::Result<String> {
    let url = format!(
        "{}/v1/client/fs/logs/{alloc}?task={task}&type=stdout&plain=true&origin=start",
        cx.stack.nomad_addr
    );
    let r = cx.http.get(url).send().await?;
    ensure!(r.status().is_success(), "logs of {task}: {}", r.status());
    Ok(r.text().await?)
}

/// A file of the allocation (Nomad's fs cat API), `None` when absent.
async fn alloc_file(cx: &Ctx<'_>, alloc: &str, path: &str) -> anyhow::Result<Option<String>> {
    let url = format!("{}/v1/client/fs/cat/{alloc}?path={path}", cx.stack.nomad_addr);
    let r = cx.http.get(url).send().await?;
    if !r.status().is_success() {
        return Ok(None);
    }
    Ok(Some(r.text().await?))
}

/// Waits up to 60 s (a kubelet's bound for volume updates) for file `path` of `alloc` to hold
/// `want`.
async fn wait_file(cx: &Ctx<'_>, alloc: &str, path: &str, want: &str) -> anyhow::Result<()> {
    wait_for(
        &format!("{path} to hold {want:?}"),
        Duration::from_secs(60),
        Duration::from_secs(1),
        || async {
            let f = alloc_file(cx, alloc, path).await?;
            Ok((f.as_deref() == Some(want)).then_some(()))
        },
    )
    .await
}

/// Waits for `needle` in `task`'s output and returns the output.
async fn wait_output(
    cx: &Ctx<'_>,
    alloc: &str,
    task: &str,
    needle: &str,
) -> anyhow::Result<String> {
    wait_for(
        &format!("{needle:?} in the output of {task}"),
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let out = task_stdout(cx, alloc, task).await.unwrap_or_default();
            Ok(out.contains(needle).then_some(out))
        },
    )
    .await
}

/// The current allocation of a pod's job.
async fn current_alloc(cx: &Ctx<'_>, job: &str) -> anyhow::Result<String> {
    let allocs = cx.allocations(job).await?;
    allocs
        .iter()
        .filter(|a| a["DesiredStatus"] == "run")
        .max_by_key(|a| a["CreateIndex"].as_u64())
        .and_then(|a| a["ID"].as_str())
        .map(str::to_owned)
        .context("no allocation")
}

async fn events_of(cx: &Ctx<'_>, ns: &str, pod: &str) -> anyhow::Result<Vec<Event>> {
    let events: Api<Event> = Api::namespaced(cx.client.clone(), ns);
    let list =
        events.list(&ListParams::default().fields(&format!("involvedObject.name={pod}"))).await?;
    Ok(list.items)
}

/// Condition `type_` of node `node`, if it has it.
async fn node_condition(
    cx: &Ctx<'_>,
    node: &str,
    type_: &str,
) -> anyhow::Result<Option<k8s_openapi::api::core::v1::NodeCondition>> {
    let n = cx.node(node).await?;
    Ok(n.and_then(|n| n.status?.conditions?.into_iter().find(|c| c.type_ == type_)))
}

/// Waits (polling every 500 ms, for at most `timeout`) until node `node` has condition `type_`
/// with `status`, and returns it.
async fn wait_condition(
    cx: &Ctx<'_>,
    node: &str,
    type_: &str,
    status: &str,
    timeout: Duration,
) -> anyhow::Result<k8s_openapi::api::core::v1::NodeCondition> {
    wait_for(
        &format!("node {node}: {type_}={status}"),
        timeout,
        Duration::from_millis(500),
        || async { Ok(node_condition(cx, node, type_).await?.filter(|c| c.status == status)) },
    )
    .await
}

async fn wait_event(cx: &Ctx<'_>, ns: &str, pod: &str, reason: &str) -> anyhow::Result<Event> {
    wait_for(
        &format!("Event {reason} for {ns}/{pod}"),
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let evs = events_of(cx, ns, pod).await?;
            Ok(evs.into_iter().find(|e| e.reason.as_deref() == Some(reason)))
        },
    )
    .await
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The value of the Prometheus sample `name` carrying every label of `labels` (in any order).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        let ok =
            metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        ok.then(|| value.parse().ok()).flatten()
    })
}

fn p_sa_volume(p: &Pod) -> Option<String> {
    p.spec
        .as_ref()?
        .volumes
        .as_ref()?
        .iter()
        .find(|v| v.name.starts_with("kube-api-access-"))
        .map(|v| v.name.clone())
}

/// A corpus case (`tests/corpus/*.json`) as pod `name`: one `main` container running
/// `sleep 3600` merged with the case's `container` (a `null` removes a field), `spec` and
/// `annotations`, bound to `node` directly (no scheduler: some cases are never schedulable, and
/// what is tested is the node's answer).
fn corpus_pod(case: &Value, name: &str, ns: &str, node: &str) -> anyhow::Result<Pod> {
    let mut container =
        serde_json::json!({"name": "main", "image": "busybox", "command": ["sleep", "3600"]});
    for (k, v) in case["container"].as_object().into_iter().flatten() {
        if v.is_null() {
            container.as_object_mut().context("container")?.remove(k);
        } else {
            container[k] = v.clone();
        }
    }
    let mut spec = serde_json::json!({"containers": [container], "nodeName": node});
    for (k, v) in case["spec"].as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    let mut b = pod(name).namespace(ns).spec(spec);
    for (k, v) in case["annotations"].as_object().into_iter().flatten() {
        b = b.annotation(k, v.as_str().unwrap_or_default());
    }
    Ok(b.build())
}

/// Waits (60 s) for pod `name` to be refused as the case says: by default `ProviderFailed` with a
/// message that starts with the case's `field` and holds its `message`; with a `reason`, rejected
/// as the kubelet rejects (`Failed` with that reason) or, for `CreateContainerConfigError`, its
/// container waiting so. Returns the message.
async fn provider_failed_as_the_case_says(
    cx: &Ctx<'_>,
    ns: &str,
    name: &str,
    case: &Value,
) -> anyhow::Result<String> {
    let reason = case["reason"].as_str().unwrap_or("ProviderFailed");
    let msg = wait_for(
        &format!("{reason} for {:?}", case["case"]),
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let p = cx.pods(ns).get(name).await?;
            let st = p.status.clone().unwrap_or_default();
            if reason == "CreateContainerConfigError" {
                let waiting = container_state(&p, "main").and_then(|c| c.state?.waiting);
                return Ok(waiting
                    .filter(|w| w.reason.as_deref() == Some(reason))
                    .map(|w| w.message.unwrap_or_default()));
            }
            let phase_ok = reason == "ProviderFailed" || st.phase.as_deref() == Some("Failed");
            Ok((st.reason.as_deref() == Some(reason) && phase_ok)
                .then(|| st.message.unwrap_or_default()))
        },
    )
    .await?;
    let field = case["field"].as_str().unwrap_or_default();
    let want = case["message"].as_str().unwrap_or_default();
    ensure!(
        (field.is_empty() || msg.starts_with(&format!("{field}: "))) && msg.contains(want),
        "{:?}: message {msg:?} lacks {field:?} or {want:?}",
        case["case"]
    );
    Ok(msg)
}

type TestFn = for<'a> fn(
    Ctx<'a>,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'a>,
>;

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|cx| Box::pin($name(cx))) as TestFn)),*]
    };
}

fn main() {
    let mut args = Arguments::from_args();
    let tests = tests![
        node_lifecycle,
        pod_runs_and_deletes,
        exit_code,
        ephemeral_containers,
        same_name_two_namespaces,
        restart_adopts,
        untranslatable_pod,
        nomad_unreachable,
        force_delete_orphans_and_foreign_jobs,
        pod_inputs_and_volumes,
        missing_inputs,
        unsupported_corpus,
        hostile_corpus,
        probes,
        grpc_probes,
        lifecycle,
        lifecycle_hooks,
        interactive_pods,
        nomad_namespace,
        token_renewal,
        pushed_status,
        graceful_shutdown,
        killed_during_creation,
        apiserver_restart,
        nomad_outage,
        placement_failures,
        shared_capacity,
        example_manifests,
        helm_chart,
        many_nodes,
        nomad_acl_policy,
        nomad_tls_and_http_auth,
        nomad_leader_killed,
        leader_election,
        lost_allocations,
        process_metrics,
        kubelet_logs,
        kubelet_exec,
        kubelet_port_forward,
        kubelet_security,
        kubelet_top_and_hpa,
        kubelet_websocket_exec,
        metrics_server_serves,
        in_cluster_rbac,
        memory_provider,
        example_provider,
        docker_pod,
        docker_security_and_limits,
        docker_image_pull_failure,
        docker_exec_probes,
        docker_subpath_escape,
        docker_stats,
        docker_init_and_sidecar,
        docker_empty_dirs,
        docker_readiness_gates,
        docker_termination_messages,
        docker_registry_pulls,
        docker_volume_updates,
        kubelet_port_under_attack,
        node_identity_bootstrap
    ];
    // The tests mostly wait on the peers: run them all at once unless told otherwise.
    args.test_threads = args.test_threads.or(Some(tests.len()));
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            eprintln!("cannot start a tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let shared: Shared = Arc::new(OnceCell::new());
    let gate = Arc::new(tokio::sync::RwLock::new(()));
    // The tests on stacks of their own that take no gate start two at a time: each starts a
    // whole control plane and Nomad, and more at once beside the shared stack's start left the
    // first tests' pods waiting for the CPU past their timeouts.
    let second_stacks = Arc::new(tokio::sync::Semaphore::new(2));
    let trials = tests
        .into_iter()
        .map(|(name, f)| {
            let (rt, shared) = (Arc::clone(&rt), Arc::clone(&shared));
            let gate = Arc::clone(&gate);
            let second_stacks = Arc::clone(&second_stacks);
            Trial::test(name, move || {
                rt.block_on(async {
                    // The heavy tests (fifty pods; a second stack; twenty nodes) run alone, so that they do not
                    // starve the others' timings on a 2-core machine; the token test only sleeps,
                    // and so do Nomad's outage (six minutes with its Nomad stopped, on a stack of
                    // its own), the placement failures and the shared capacity (stacks of their
                    // own, a few pods).
                    let _shared;
                    let _exclusive;
                    let _second;
                    match name {
                        "killed_during_creation"
                        | "apiserver_restart"
                        | "lost_allocations"
                        | "kubelet_top_and_hpa"
                        | "in_cluster_rbac"
                        | "kubelet_port_under_attack" => {
                            _exclusive = gate.write().await;
                        }
                        "token_renewal" => {}
                        "nomad_outage" | "placement_failures" | "shared_capacity"
                        | "many_nodes" | "nomad_acl_policy" | "nomad_leader_killed"
                        | "example_manifests" => {
                            _second = second_stacks.acquire().await;
                        }
                        _ => _shared = gate.read().await,
                    }
                    let stack = shared
                        .get_or_init(|| async {
                            // The suite runs with Nomad's ACLs on and every node holding a
                            // token of deploy/nomad-acl-policy.hcl alone.
                            let docker = StackOptions {
                                docker: true,
                                nomad_acl: true,
                                ..StackOptions::default()
                            };
                            Stack::start_with(docker).await.map_err(|e| format!("{e:#}"))
                        })
                        .await
                        .as_ref()
                        .map_err(|e| Failed::from(format!("the local stack did not start: {e}")))?;
                    let cx = Ctx {
                        stack,
                        client: stack.client().await.map_err(|e| Failed::from(e.to_string()))?,
                        http: stack.nomad_http(),
                    };
                    let (outcome, started) = vk_tests::STARTED
                        .scope(std::cell::RefCell::new(Vec::new()), async {
                            let outcome = f(cx).await;
                            (outcome, vk_tests::STARTED.with(|l| l.take()))
                        })
                        .await;
                    // What the test's pods still run in Nomad goes with it.
                    let nodes: Vec<String> = started.iter().map(|(n, _)| n.clone()).collect();
                    if let Err(e) = stack.stop_jobs_of(&nodes).await {
                        eprintln!("{name}: the jobs of its nodes were not stopped: {e:#}");
                    }
                    outcome.map_err(|e| {
                        Failed::from(format!(
                            "{e:#}\nlogs:\n{}\n  virtual kubelets: {}/logs/virtual-kubelet-*.log\n{}",
                            stack.logs(),
                            stack.dir.display(),
                            // Only the first few: a test may start twenty.
                            vk_tests::log_tails(started.iter().take(3).map(|(_, l)| l), 25)
                        ))
                    })
                })
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Tear the stack down before exiting (exit() skips destructors).
    drop(shared);
    drop(rt);
    conclusion.exit();
}
