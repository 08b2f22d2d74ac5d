//! Unit tests of the provider against the fake Nomad ([`super::fake`]).

use super::*;

fn node(status: &str, eligibility: &str, drain: bool) -> NodeStub {
    serde_json::from_value(serde_json::json!({
        "ID": "n", "Status": status, "SchedulingEligibility": eligibility, "Drain": drain,
        "NodeResources": {"Cpu": {"CpuShares": 8000, "TotalCpuCores": 4}, "Memory": {"MemoryMB": 4096}, "Disk": {"DiskMB": 1024}},
        "ReservedResources": {"Cpu": {"CpuShares": 2000}, "Memory": {"MemoryMB": 1024}, "Disk": {"DiskMB": 24}}
    }))
    .unwrap()
}

/// Every datacenter, the default pool.
fn anywhere() -> Scope {
    Scope { datacenters: vec!["*".into()], node_pool: None }
}

#[test]
fn capacity_sums_ready_eligible_nodes_less_reservations() {
    let nodes = [
        node("ready", "eligible", false),
        node("ready", "eligible", false),
        node("down", "eligible", false),
        node("ready", "ineligible", false),
        node("ready", "eligible", true),
    ];
    let cap = capacity_of(&nodes, &anywhere(), &[], |_, _| false);
    assert_eq!(cap.cpu_millis, 2 * 3000, "4 cores less a quarter reserved, twice");
    assert_eq!(cap.memory_bytes, 2 * (3072 << 20));
    assert_eq!(cap.ephemeral_storage_bytes, 2 * (1000 << 20));
    assert_eq!(cap.pods, Some(2 * 110), "a kubelet's 110 per usable Nomad node");
    assert_eq!(cap.reserved, vk_domain::node::Reserved::default());
    assert_eq!(mhz_per_core(&nodes), Some(2000));
    assert_eq!(mhz_per_core(&[]), None);
}

/// Node `id` in datacenter `dc` and pool `pool` (empty: a Nomad before pools).
fn placed(id: &str, dc: &str, pool: &str) -> NodeStub {
    NodeStub {
        id: id.into(),
        datacenter: dc.into(),
        node_pool: pool.into(),
        ..node("ready", "eligible", false)
    }
}

/// The scope is the node's datacenters (Nomad patterns) and node pool: `default` when unset
/// (a node without a pool is in it), every pool for `all`.
#[test]
fn capacity_counts_the_nodes_of_the_scope() {
    let nodes = [
        placed("a", "dc1", "default"),
        placed("b", "dc2", "default"),
        placed("c", "dc1", "gpu"),
        placed("d", "eu-1", ""),
    ];
    let count = |datacenters: &[&str], pool: Option<&str>| {
        let scope = Scope {
            datacenters: datacenters.iter().map(|d| (*d).to_owned()).collect(),
            node_pool: pool.map(str::to_owned),
        };
        capacity_of(&nodes, &scope, &[], |_, _| false).memory_bytes / (3072 << 20)
    };
    assert_eq!(count(&["*"], None), 3, "the default pool, old nodes in it");
    assert_eq!(count(&["dc1"], None), 1);
    assert_eq!(count(&["dc*"], None), 2);
    assert_eq!(count(&["dc1", "eu-*"], None), 2);
    assert_eq!(count(&["*"], Some("gpu")), 1);
    assert_eq!(count(&["dc2"], Some("gpu")), 0);
    assert_eq!(count(&["*"], Some("all")), 4);
}

/// A task of [`held`]: name, MHz, reserved cores, MiB, lifecycle hook, sidecar.
type HeldTask<'a> = (&'a str, i64, usize, i64, Option<&'a str>, bool);

/// An allocation of `job` on node `node` holding `tasks` and `disk` MiB.
fn held(node: &str, job: &str, client: &str, tasks: &[HeldTask<'_>], disk: i64) -> Allocation {
    let mut resources = serde_json::Map::new();
    let mut lifecycles = serde_json::Map::new();
    for (name, mhz, cores, mib, hook, sidecar) in tasks {
        let cores: Vec<usize> = (0..*cores).collect();
        resources.insert(
            (*name).into(),
            serde_json::json!({"Cpu": {"CpuShares": mhz, "ReservedCores": cores}, "Memory": {"MemoryMB": mib, "MemoryMaxMB": 0}}),
        );
        lifecycles.insert(
            (*name).into(),
            hook.map_or(
                serde_json::Value::Null,
                |h| serde_json::json!({"Hook": h, "Sidecar": sidecar}),
            ),
        );
    }
    serde_json::from_value(serde_json::json!({
        "ID": "x", "JobID": job, "Namespace": "default", "NodeID": node,
        "DesiredStatus": "run", "ClientStatus": client,
        "AllocatedResources": {"Tasks": resources, "TaskLifecycles": lifecycles, "Shared": {"DiskMB": disk}}
    }))
    .unwrap()
}

/// What other jobs' live allocations on the scope's nodes hold is reserved (out of allocatable);
/// this node's pods, ended allocations and other pools' nodes are not. CPU MHz turn into
/// millicores at the node's MHz per core (8000 MHz over 4 cores: 2 MHz a millicore).
#[test]
fn other_jobs_hold_what_they_were_allocated() {
    let nodes = [placed("a", "dc1", "default"), placed("g", "dc1", "gpu")];
    let allocations = [
        held("a", "batch", "running", &[("main", 1000, 0, 1024, None, false)], 300),
        held("a", "k8s-ns_mine", "running", &[("main", 4000, 0, 2048, None, false)], 300),
        held("a", "old", "complete", &[("main", 4000, 0, 2048, None, false)], 300),
        held("g", "gpu-job", "running", &[("main", 4000, 0, 2048, None, false)], 300),
        held("a", "pinned", "pending", &[("main", 0, 1, 64, None, false)], 0),
    ];
    let cap = capacity_of(&nodes, &anywhere(), &allocations, |ns, job| {
        ns == "default" && job == "k8s-ns_mine"
    });
    let r = cap.reserved;
    assert_eq!(r.cpu_millis, 500 + 1000, "1000 MHz at 2 MHz per millicore, and one core");
    assert_eq!(r.memory_bytes, (1024 + 64) << 20);
    assert_eq!(r.ephemeral_storage_bytes, 300 << 20);
    let a = cap.allocatable();
    assert_eq!(a.memory_bytes, (3072 - 1088) << 20);
    assert_eq!(a.cpu_millis, 3000 - 1500);
}

/// Tasks combine as Nomad's scheduler combines them: prestart sidecars add to the rest; prestart
/// tasks that finish, main, poststart and poststop tasks take the largest of their groups.
#[test]
fn lifecycles_combine_as_nomad_does() {
    let nodes = [placed("a", "dc1", "default")];
    let job = held(
        "a",
        "batch",
        "running",
        &[
            ("init", 200, 0, 900, Some("prestart"), false),
            ("proxy", 100, 0, 64, Some("prestart"), true),
            ("main", 300, 0, 256, None, false),
            ("side", 100, 0, 128, None, false),
            ("after", 50, 0, 32, Some("poststop"), false),
        ],
        0,
    );
    let cap = capacity_of(&nodes, &anywhere(), &[job], |_, _| false);
    assert_eq!(cap.reserved.memory_bytes, (64 + 900) << 20, "the sidecar, and init's 900 > 384");
    assert_eq!(cap.reserved.cpu_millis, (100 + 400) / 2, "the sidecar, and main + side's 400");
}

#[test]
fn prefixes_are_escaped_for_bexpr_regexes() {
    assert_eq!(regex_escape("k8s-"), "k8s-");
    assert_eq!(regex_escape("a.b*"), "a\\.b\\*");
    assert_eq!(quote("^k8s\\-"), "\"^k8s\\\\-\"");
}

use super::fake::{self, Reply};
use futures::SinkExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn provider(addr: &str) -> NomadProvider {
    NomadProvider::new(ProviderConfig {
        client: ClientConfig { address: addr.to_owned(), ..Default::default() },
        node_name: "vk".into(),
        job_prefix: "k8s-".into(),
        datacenters: vec!["dc1".into()],
        node_pool: None,
        default_driver: "raw_exec".into(),
        driver_annotation: "vk/driver".into(),
        policy: policy::NomadPolicy::default(),
        seccomp_profile_root: "/var/lib/kubelet/seccomp".into(),
        volume_setup_image: None,
    })
    .unwrap()
}

/// An allocation list of job `k8s-ns_p` with one allocation `a2` of task `c`.
fn allocs(status: &str, task: &str, restarts: u64, extra: &str) -> String {
    format!(
        r#"[{{"ID":"a2","JobID":"k8s-ns_p","Namespace":"default","NodeID":"n1","DesiredStatus":"run",
             "ClientStatus":"{status}","CreateIndex":9,"CreateTime":1795267000000000000,
             "TaskStates":{{"c":{{"State":"{task}","Restarts":{restarts},"StartedAt":"2026-11-21T13:00:00Z",
               "Events":[{{"Type":"Started","Time":1795267001000000000}}]}}}}{extra}}}]"#
    )
}

fn meta(ns: &str, pod: &str) -> String {
    format!(
        r#"{{"k8s_node_name":"vk","k8s_namespace":"{ns}","k8s_pod_name":"{pod}","k8s_pod_uid":"u-{pod}","k8s_restart_policy":"Never"}}"#
    )
}

fn spec_of(ns: &str, name: &str) -> WorkloadSpec {
    let pod = vk_domain::testing::pod(name)
        .namespace(ns)
        .uid(&format!("u-{name}"))
        .restart("Never")
        .image("busybox")
        .container("c", &["true"])
        .build();
    WorkloadSpec::from_pod(&pod, &vk_domain::inputs::Inputs::default()).unwrap().spec
}

/// The capacity read: the nodes with their resources, then every namespace's live allocations
/// with theirs, filtered on the server; a token that may not list allocations leaves the nodes'
/// capacity whole, and an unreachable Nomad is an error (the node's `BackendUnreachable`).
#[tokio::test]
async fn capacity_reads_nodes_and_live_allocations() {
    let nodes = r#"[{"ID":"a","Datacenter":"dc1","NodePool":"default","Status":"ready","SchedulingEligibility":"eligible",
        "NodeResources":{"Cpu":{"CpuShares":4000,"TotalCpuCores":2},"Memory":{"MemoryMB":2048},"Disk":{"DiskMB":1000}}}]"#;
    let allocs = r#"[{"ID":"x","JobID":"batch","Namespace":"ops","NodeID":"a","DesiredStatus":"run","ClientStatus":"running",
        "AllocatedResources":{"Tasks":{"t":{"Cpu":{"CpuShares":400},"Memory":{"MemoryMB":512}}},"Shared":{"DiskMB":300}}}]"#;
    for refused in [false, true] {
        let (addr, mut reqs) = fake::fake_nomad(move |line| {
            if line.starts_with("GET /v1/nodes") {
                Reply::Json(nodes.into())
            } else if line.starts_with("GET /v1/allocations") && refused {
                Reply::Status(403, "Permission denied".into())
            } else if line.starts_with("GET /v1/allocations") {
                Reply::Json(allocs.into())
            } else {
                Reply::Status(500, "unexpected".into())
            }
        })
        .await;
        let cap = provider(&addr).capacity().await.unwrap();
        assert_eq!((cap.cpu_millis, cap.memory_bytes), (2000, 2048 << 20));
        let sent = fake::drain(&mut reqs);
        let list = sent.iter().find(|r| r.starts_with("GET /v1/allocations")).unwrap();
        assert_eq!(fake::param(list, "namespace").as_deref(), Some("*"), "{list}");
        assert_eq!(fake::param(list, "resources").as_deref(), Some("true"), "{list}");
        assert_eq!(fake::param(list, "task_states").as_deref(), Some("false"), "{list}");
        assert_eq!(fake::param(list, "stale").as_deref(), Some("true"), "{list}");
        let nodes = sent.iter().find(|r| r.starts_with("GET /v1/nodes")).unwrap();
        assert_eq!(fake::param(nodes, "stale").as_deref(), Some("true"), "{nodes}");
        let filter = fake::param(list, "filter").unwrap_or_default();
        assert!(filter.contains(r#"DesiredStatus == "run""#), "{filter}");
        if refused {
            assert_eq!(cap.reserved, vk_domain::node::Reserved::default());
        } else {
            assert_eq!(cap.reserved.cpu_millis, 200, "400 MHz at 2 MHz per millicore");
            assert_eq!(cap.reserved.memory_bytes, 512 << 20);
            assert_eq!(cap.reserved.ephemeral_storage_bytes, 300 << 20);
        }
    }
    let gone = provider("http://127.0.0.1:1").capacity().await.unwrap_err();
    assert!(matches!(gone, ProviderError::Unavailable { .. }), "{gone:?}");
}

/// A job under the ID a pod maps to that belongs to another pod (IDs of long names are
/// hashed) is never replaced or stopped: the create is a conflict.
#[tokio::test]
async fn another_pods_job_under_the_same_id_is_never_replaced() {
    let spec = spec_of("team", "web");
    let (addr, mut reqs) = fake::fake_nomad(|line| {
        if line.starts_with("GET /v1/job/k8s-team_web") {
            Reply::Json(format!(
                r#"{{"ID":"k8s-team_web","Name":"k8s-team_web","Type":"batch","Meta":{}}}"#,
                meta("other", "db")
            ))
        } else {
            Reply::Status(500, "unexpected".into())
        }
    })
    .await;
    let p = provider(&addr);
    let err = p.create_pod(&spec).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Conflict(m) if m.contains("belongs to pod other/db")),
        "{err:?}"
    );
    let sent = fake::drain(&mut reqs);
    assert!(sent.iter().all(|r| r.starts_with("GET ")), "{sent:?}");
}

/// A job an older version registered under the FNV-hashed ID is adopted when its Meta names
/// the pod, and ignored when it names another pod (a forged collision).
#[tokio::test]
async fn jobs_under_the_legacy_id_are_adopted_only_for_their_own_pod() {
    let name = "forged-fnv-collision-of-two-pod-names-eiep25qr3dq4j";
    let key = PodKey::new("e2e-hostile", name).unwrap();
    let legacy = job::legacy_job_id("k8s-", &key).unwrap();
    for (owner, adopted) in
        [(name, true), ("forged-fnv-collision-of-two-pod-names-ncdlgzluhxobq", false)]
    {
        let legacy_id = legacy.clone();
        let job_meta = meta("e2e-hostile", owner);
        let (addr, _reqs) = fake::fake_nomad(move |line| {
            if line.contains("/v1/regions") {
                Reply::Json(r#"["global"]"#.into())
            } else if line.starts_with("GET /v1/jobs?") && line.contains(&legacy_id) {
                Reply::Json(format!(r#"[{{"ID":"{legacy_id}","Namespace":"default"}}]"#))
            } else if line.starts_with("GET /v1/jobs?") {
                Reply::Json("[]".into())
            } else if line.starts_with(&format!("GET /v1/job/{legacy_id}")) {
                Reply::Json(format!(
                    r#"{{"ID":"{legacy_id}","Name":"{legacy_id}","Type":"batch","Meta":{job_meta}}}"#
                ))
            } else if line.contains("/v1/allocations") {
                Reply::Json("[]".into())
            } else {
                Reply::Status(404, "no such job".into())
            }
        })
        .await;
        let got = provider(&addr).get_pod(&key).await.unwrap();
        let id = got.map(|p| JobRef::parse(&p.id).id);
        assert_eq!(id, adopted.then(|| legacy.clone()), "{owner}");
    }
}

#[tokio::test]
async fn previous_logs_come_from_the_replaced_allocation() {
    let (addr, mut reqs) = fake::fake_nomad(|line| {
        if line.contains("/v1/allocations") {
            Reply::Json(allocs("running", "running", 0, ""))
        } else if line.contains("/v1/allocation/a2") {
            Reply::Json(r#"{"ID":"a2","JobID":"k8s-ns_p","PreviousAllocation":"a1"}"#.into())
        } else if line.contains("/v1/allocation/a1") {
            Reply::Json(
                r#"{"ID":"a1","JobID":"k8s-ns_p","TaskStates":{"c":{"State":"dead"}}}"#.into(),
            )
        } else if line.contains("/fs/ls/a1") {
            Reply::Json("[]".into())
        } else if line.contains("/fs/logs/a1") {
            Reply::Json(r#"{"Data":"b2xkCg==","File":"alloc/logs/c.stdout.0","Offset":4}"#.into())
        } else {
            Reply::Status(404, "unexpected".into())
        }
    })
    .await;
    let p = provider(&addr);
    let opts = LogOptions {
        previous: true,
        follow: true,
        stream: vk_domain::logs::LogStream::Stdout,
        ..Default::default()
    };
    let mut s = p.logs(&"k8s-ns_p".into(), "c", &opts).await.unwrap();
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        out.extend_from_slice(&b.unwrap());
    }
    assert_eq!(out, b"old\n");
    let read = fake::drain(&mut reqs).into_iter().find(|r| r.contains("/fs/logs/")).unwrap();
    assert_eq!(fake::param(&read, "follow").as_deref(), Some("false"), "a terminated instance");
}

#[tokio::test]
async fn previous_logs_need_a_previous_instance() {
    let (addr, _reqs) = fake::fake_nomad(|line| {
        if line.contains("/v1/allocations") {
            Reply::Json(allocs("running", "running", 0, ""))
        } else {
            Reply::Json(r#"{"ID":"a2","JobID":"k8s-ns_p"}"#.into())
        }
    })
    .await;
    let p = provider(&addr);
    let opts = LogOptions { previous: true, ..Default::default() };
    let err = p.logs(&"k8s-ns_p".into(), "c", &opts).await.err().unwrap();
    assert!(
        matches!(&err, ProviderError::NotFound(m) if m.contains("previous terminated container \"c\"")),
        "{err}"
    );
    let err = p.logs(&"k8s-ns_p".into(), "nope", &LogOptions::default()).await.err().unwrap();
    assert!(matches!(err, ProviderError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn attach_refuses_stdin_and_stopped_tasks() {
    let (addr, _reqs) = fake::fake_nomad(|line| {
        if line.contains("/v1/job/") {
            // Not interactive: no `k8s_stdin_c` Meta.
            Reply::Json(format!(
                r#"{{"ID":"k8s-ns_p","Name":"k8s-ns_p","Type":"batch","Meta":{},"TaskGroups":[]}}"#,
                meta("ns", "p")
            ))
        } else {
            Reply::Json(allocs("running", "dead", 0, ""))
        }
    })
    .await;
    let p = provider(&addr);
    let (_tx, rx) = futures::channel::mpsc::channel(1);
    let io = ExecIo { stdin: Some(rx), stdout: None, stderr: None, tty: false, resize: None };
    let err = p.attach(&"k8s-ns_p".into(), "c", io).await.err().unwrap();
    assert!(matches!(&err, ProviderError::Unsupported(m) if m.contains("kubectl exec")), "{err}");
    let (tx, _rx) = futures::channel::mpsc::channel(1);
    let io = ExecIo { stdin: None, stdout: Some(tx), stderr: None, tty: false, resize: None };
    let err = p.attach(&"k8s-ns_p".into(), "c", io).await.err().unwrap();
    assert!(matches!(&err, ProviderError::NotFound(m) if m.contains("not running")), "{err}");
}

/// The pod IP of a raw_exec allocation is its network's IP; a mapped port goes to its host
/// port, another to itself; a closed port is `Unavailable`, no running allocation `NotFound`.
#[tokio::test]
async fn dial_reaches_the_pod_ip_from_where_the_pod_was_last_seen() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = echo.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = [0u8; 16];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let running = allocs(
        "running",
        "running",
        0,
        &format!(
            r#","AllocatedResources":{{"Shared":{{"Networks":[{{"Mode":"host","IP":"127.0.0.1",
                "DynamicPorts":[{{"Label":"c_80","Value":{echo_port},"To":80}}]}}]}}}}"#
        ),
    );
    let lists = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listed = std::sync::Arc::clone(&lists);
    let (addr, _reqs) = fake::fake_nomad(move |line| {
        if line.contains("/v1/allocations") {
            listed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if line.contains("k8s-ns_gone") {
                Reply::Json(allocs("complete", "dead", 0, ""))
            } else {
                Reply::Json(running.clone())
            }
        } else {
            Reply::Json("[]".into())
        }
    })
    .await;
    let p = provider(&addr);
    for port in [80, echo_port] {
        let mut conn = p.dial(&"k8s-ns_p".into(), port).await.unwrap();
        conn.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
    }
    // The pod's place was looked up once: the second dial used it.
    let count = || lists.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(count(), 1);
    let err = p.dial(&"k8s-ns_p".into(), closed).await.err().unwrap();
    assert!(
        matches!(&err, ProviderError::Unavailable { message, .. } if message.contains("connection refused")),
        "{err}"
    );
    // A failed dial forgets it: the allocation may have been replaced.
    let _ = p.dial(&"k8s-ns_p".into(), 80).await.unwrap();
    assert_eq!(count(), 2);
    let err = p.dial(&"k8s-ns_gone".into(), 80).await.err().unwrap();
    assert!(matches!(err, ProviderError::NotFound(_)), "{err}");
}

/// Usage: the running allocation's task stats, the node's host stats over the usable nodes.
#[tokio::test]
async fn usage_samples_running_pods_and_usable_nodes() {
    let (addr, mut reqs) = fake::fake_nomad(|line| {
        if line.contains("/v1/regions") {
            Reply::Json(r#"["global"]"#.into())
        } else if line.contains("/v1/jobs") {
            Reply::Json(
                r#"[{"ID":"k8s-ns_p","Namespace":"default","Meta":{"k8s_node_name":"vk","k8s_namespace":"ns","k8s_pod_name":"p","k8s_pod_uid":"u1"}}]"#
                    .into(),
            )
        } else if line.contains("/v1/allocations") {
            Reply::Json(allocs("running", "running", 0, ""))
        } else if line.contains("/v1/nodes") {
            Reply::Json(
                r#"[{"ID":"n1","Address":"127.0.0.1","Status":"ready","SchedulingEligibility":"eligible",
                     "NodeResources":{"Cpu":{"CpuShares":4000,"TotalCpuCores":2},"Memory":{"MemoryMB":100}}},
                    {"ID":"n2","Status":"down","SchedulingEligibility":"eligible"}]"#
                    .into(),
            )
        } else if line.contains("/v1/client/allocation/a2/stats") {
            Reply::Json(
                r#"{"Tasks":{"c":{"ResourceUsage":{"CpuStats":{"Percent":50.0},"MemoryStats":{"RSS":4096,"Measured":["RSS"]}},"Timestamp":1795267043570297226}},"Timestamp":1795267043570297226}"#
                    .into(),
            )
        } else if line.contains("/v1/client/stats") {
            Reply::Json(
                r#"{"CPUTicksConsumed":1000.0,"Memory":{"Used":1000,"Available":3000},"Uptime":10,"Timestamp":1795267043705832091}"#
                    .into(),
            )
        } else {
            Reply::Status(404, "unexpected".into())
        }
    })
    .await;
    let p = provider(&addr);
    let u = p.usage().await.unwrap();
    assert_eq!(u.pods.len(), 1);
    let pod = &u.pods[0];
    assert_eq!((pod.key.to_string().as_str(), pod.uid.as_str()), ("ns/p", "u1"));
    let c = &pod.containers[0];
    assert_eq!(c.name, "c");
    assert_eq!(c.cpu.as_ref().map(|c| c.nano_cores), Some(500_000_000));
    assert_eq!(c.memory.as_ref().map(|m| m.working_set_bytes), Some(4096));
    assert_eq!(c.start_time, Timestamp::from_nanosecond(1_795_267_001_000_000_000).ok());
    assert_eq!(u.node.cpu.map(|c| c.nano_cores), Some(500_000_000), "1000 MHz at 2000 MHz/core");
    assert_eq!(u.node.memory.map(|m| m.working_set_bytes), Some(1000));
    let host_reqs: Vec<String> =
        fake::drain(&mut reqs).into_iter().filter(|r| r.contains("/v1/client/stats")).collect();
    assert_eq!(host_reqs.len(), 1, "only the ready node");
    assert_eq!(fake::param(&host_reqs[0], "node_id").as_deref(), Some("n1"));
}

/// A probe's exec on docker that succeeds is run again, and the second run's code is the
/// answer (Nomad's docker driver can report 0 for a command that never started); on another
/// driver, or when the first run fails, one run is the answer.
#[tokio::test]
async fn a_probe_success_on_docker_is_confirmed() {
    use tokio_tungstenite::tungstenite::Message;
    for (driver, codes, want, sessions) in [
        ("docker", [0, 1], 1, 2),
        ("docker", [0, 0], 0, 2),
        ("docker", [2, 0], 2, 1),
        ("raw_exec", [0, 1], 0, 1),
    ] {
        let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = std::sync::Arc::clone(&n);
        let (addr, _reqs) = fake::fake_nomad(move |line| {
            if line.contains("/v1/allocations") {
                return Reply::Json(allocs("running", "running", 0, ""));
            }
            if line.contains("/v1/nodes") {
                return Reply::Json("[]".into());
            }
            if line.contains("/v1/job/k8s-ns_p ") || line.contains("/v1/job/k8s-ns_p?") {
                return Reply::Json(format!(
                    r#"{{"ID":"k8s-ns_p","Name":"k8s-ns_p","Type":"batch","TaskGroups":[{{"Name":"pod","Count":1,"Tasks":[{{"Name":"c","Driver":"{driver}"}}]}}]}}"#
                ));
            }
            let code = codes[seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst).min(1)];
            Reply::Ws(Box::new(move |sock, head| {
                tokio::spawn(async move {
                    let mut ws = fake::accept_ws(sock, &head).await;
                    let exited = format!(r#"{{"exited":true,"result":{{"exit_code":{code}}}}}"#);
                    ws.send(Message::text(exited)).await.unwrap();
                    while ws.next().await.is_some() {}
                });
            }))
        })
        .await;
        let p = provider(&addr);
        let got = p.exec(&"k8s-ns_p".into(), "c", &["check".to_owned()]).await.unwrap();
        assert_eq!(got, want, "{driver} {codes:?}");
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), sessions, "{driver} {codes:?}");
    }
}

/// An interactive exec: terminal size, stdin and its end reach Nomad as frames; stdout and
/// stderr come back on their channels; the exit code is returned.
#[tokio::test]
async fn exec_stream_pumps_both_ways() {
    use tokio_tungstenite::tungstenite::Message;
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (addr, mut reqs) = fake::fake_nomad(move |line| {
        if line.contains("/v1/allocations") {
            return Reply::Json(allocs("running", "running", 0, ""));
        }
        if line.contains("/v1/nodes") {
            return Reply::Json("[]".into());
        }
        let seen_tx = seen_tx.clone();
        Reply::Ws(Box::new(move |sock, head| {
            tokio::spawn(async move {
                let mut ws = fake::accept_ws(sock, &head).await;
                while let Some(Ok(Message::Text(t))) = ws.next().await {
                    let t = t.as_str().to_owned();
                    let _ = seen_tx.send(t.clone());
                    if t.contains("close") {
                        break;
                    }
                }
                for f in [
                    r#"{"stdout":{"data":"b3V0"}}"#,
                    r#"{"stderr":{"data":"ZXJy"}}"#,
                    r#"{"stdout":{"close":true}}"#,
                    r#"{"exited":true,"result":{"exit_code":3}}"#,
                ] {
                    ws.send(Message::text(f)).await.unwrap();
                }
                while ws.next().await.is_some() {}
            });
        }))
    })
    .await;
    let p = provider(&addr);
    let (mut in_tx, in_rx) = futures::channel::mpsc::channel(4);
    let (mut size_tx, size_rx) = futures::channel::mpsc::channel(4);
    let (out_tx, mut out_rx) = futures::channel::mpsc::channel(4);
    let (err_tx, mut err_rx) = futures::channel::mpsc::channel(4);
    size_tx.send(vk_ports::TerminalSize { width: 80, height: 24 }).await.unwrap();
    in_tx.send(bytes::Bytes::from_static(b"hi")).await.unwrap();
    drop(in_tx);
    let io = ExecIo {
        stdin: Some(in_rx),
        stdout: Some(out_tx),
        stderr: Some(err_tx),
        tty: false,
        resize: Some(size_rx),
    };
    let cmd = vec!["sh".to_owned(), "-c".to_owned(), "cat".to_owned()];
    let code = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        p.exec_stream(&"k8s-ns_p".into(), "c", &cmd, io),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(code, 3);
    assert_eq!(out_rx.next().await.as_deref(), Some(&b"out"[..]));
    assert_eq!(err_rx.next().await.as_deref(), Some(&b"err"[..]));
    let seen: Vec<String> = std::iter::from_fn(|| seen_rx.try_recv().ok()).collect();
    assert!(seen.contains(&r#"{"tty_size":{"height":24,"width":80}}"#.to_owned()), "{seen:?}");
    assert!(seen.contains(&r#"{"stdin":{"data":"aGk="}}"#.to_owned()), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some(r#"{"stdin":{"close":true}}"#));
    let exec = fake::drain(&mut reqs).into_iter().find(|r| r.contains("/exec")).unwrap();
    assert_eq!(fake::param(&exec, "command").as_deref(), Some(r#"["sh","-c","cat"]"#));
    assert_eq!(fake::param(&exec, "tty").as_deref(), Some("false"));
    assert_eq!(fake::param(&exec, "task").as_deref(), Some("c"));
}
