//! Resource usage as the kubelet reports it: the stats/v1alpha1 `Summary` of `/stats/summary`
//! (`staging/src/k8s.io/kubelet/pkg/apis/stats/v1alpha1/types.go`) and the Prometheus text of
//! `/metrics/resource` that metrics-server ≥ 0.6 scrapes (`pkg/scraper/client/resource/decode.go`).
//!
//! A backend reports samples ([`Usage`]); CPU may come as a rate only (Nomad, for one, reports a
//! percentage per sample), so [`CpuCounters`] integrates rates into the cumulative core-seconds
//! counter both formats need.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::jiff;

use crate::pod::PodKey;

/// One CPU sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSample {
    /// When it was taken.
    pub at: Timestamp,
    /// Usage rate over the backend's last interval, in nanocores (1 core = 10^9).
    pub nano_cores: u64,
    /// Cumulative CPU time since the container started, in core-nanoseconds, when the backend
    /// keeps one; `None` for rate-only backends ([`CpuCounters`] then derives it).
    pub cumulative_nanos: Option<u64>,
}

/// One memory sample, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemorySample {
    /// When it was taken.
    pub at: Timestamp,
    /// Working set (what the OOM killer looks at; metrics-server's memory figure), bytes.
    pub working_set_bytes: u64,
    /// Resident set, bytes.
    pub rss_bytes: u64,
    /// Total usage (including page cache), bytes.
    pub usage_bytes: u64,
    /// What is left before the limit, bytes, when there is a limit.
    pub available_bytes: Option<u64>,
}

/// One container's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUsage {
    /// The container's name in the pod spec.
    pub name: String,
    /// When this instance of the container started.
    pub start_time: Option<Timestamp>,
    /// CPU, when sampled.
    pub cpu: Option<CpuSample>,
    /// Memory, when sampled.
    pub memory: Option<MemorySample>,
}

/// One pod's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUsage {
    /// The pod.
    pub key: PodKey,
    /// Its UID.
    pub uid: String,
    /// When the pod (its sandbox) started.
    pub start_time: Option<Timestamp>,
    /// Its running containers.
    pub containers: Vec<ContainerUsage>,
}

/// The node's own usage (the machines behind it, as the backend sees them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeUsage {
    /// When the node started (the oldest machine's boot, or the process start).
    pub start_time: Option<Timestamp>,
    /// CPU, when sampled.
    pub cpu: Option<CpuSample>,
    /// Memory, when sampled.
    pub memory: Option<MemorySample>,
}

/// Everything a backend samples for one scrape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Usage {
    /// The node.
    pub node: NodeUsage,
    /// The pods with a running sandbox.
    pub pods: Vec<PodUsage>,
}

/// Integrates CPU rates into cumulative counters that never go backwards, per container instance.
///
/// A rate-only sample at `t` after a previous one at `t0` adds `nano_cores × (t − t0)`; the first
/// sample of an instance counts its rate since the instance started (`start_time`), or for one
/// second when the start is unknown. Every counter is at least 1 core-nanosecond, because
/// metrics-server drops a whole pod when one of its containers reports a zero CPU counter.
#[derive(Debug, Default)]
pub struct CpuCounters {
    seen: BTreeMap<String, (Timestamp, u64)>,
}

impl CpuCounters {
    /// The cumulative counter (core-nanoseconds) of instance `id` (any string naming the container
    /// instance: pod UID, container name, start time) for `sample`.
    pub fn cumulative(&mut self, id: &str, start: Option<Timestamp>, sample: &CpuSample) -> u64 {
        let value = match (sample.cumulative_nanos, self.seen.get(id)) {
            (Some(c), prev) => c.max(prev.map_or(0, |p| p.1)),
            (None, Some(&(t0, total))) => {
                let dt = sample.at.duration_since(t0).as_nanos().max(0);
                let add =
                    u128::from(sample.nano_cores).saturating_mul(dt.unsigned_abs()) / 1_000_000_000;
                total.saturating_add(u64::try_from(add).unwrap_or(u64::MAX))
            }
            (None, None) => {
                let since = start
                    .map(|s| sample.at.duration_since(s).as_nanos().max(0).unsigned_abs())
                    .unwrap_or(1_000_000_000);
                let v = u128::from(sample.nano_cores).saturating_mul(since) / 1_000_000_000;
                u64::try_from(v).unwrap_or(u64::MAX)
            }
        }
        .max(1);
        self.seen.insert(id.to_owned(), (sample.at, value));
        value
    }

    /// Forgets instances not in `live` (containers that stopped).
    pub fn retain(&mut self, live: &std::collections::BTreeSet<String>) {
        self.seen.retain(|k, _| live.contains(k));
    }
}

impl CpuCounters {
    /// Sets `cumulative_nanos` on every CPU sample of `usage` (see [`CpuCounters::cumulative`])
    /// and forgets container instances that are gone. Containers are keyed by pod UID, name and
    /// start time, so a restarted container starts a new counter, as a new cgroup would.
    pub fn fill(&mut self, usage: &mut Usage) {
        let mut live = std::collections::BTreeSet::new();
        if let Some(cpu) = usage.node.cpu.as_mut() {
            live.insert("node".to_owned());
            let v = self.cumulative("node", usage.node.start_time, cpu);
            cpu.cumulative_nanos = Some(v);
        }
        for pod in &mut usage.pods {
            for c in &mut pod.containers {
                let Some(cpu) = c.cpu.as_mut() else { continue };
                let id = format!(
                    "{}/{}/{}",
                    pod.uid,
                    c.name,
                    c.start_time.map(|t| t.as_nanosecond()).unwrap_or_default()
                );
                let v = self.cumulative(&id, c.start_time.or(pod.start_time), cpu);
                cpu.cumulative_nanos = Some(v);
                live.insert(id);
            }
        }
        self.retain(&live);
    }
}

fn time(t: Timestamp) -> String {
    // metav1.Time marshals as RFC 3339 with seconds.
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn cpu_json(c: &CpuSample) -> serde_json::Value {
    serde_json::json!({
        "time": time(c.at),
        "usageNanoCores": c.nano_cores,
        "usageCoreNanoSeconds": c.cumulative_nanos.unwrap_or_default(),
    })
}

fn memory_json(m: &MemorySample) -> serde_json::Value {
    let mut v = serde_json::json!({
        "time": time(m.at),
        "usageBytes": m.usage_bytes,
        "workingSetBytes": m.working_set_bytes,
        "rssBytes": m.rss_bytes,
        "pageFaults": 0,
        "majorPageFaults": 0,
    });
    if let (Some(a), Some(o)) = (m.available_bytes, v.as_object_mut()) {
        o.insert("availableBytes".into(), a.into());
    }
    v
}

fn insert_opt(
    o: &mut serde_json::Map<String, serde_json::Value>,
    k: &str,
    v: Option<serde_json::Value>,
) {
    if let Some(v) = v {
        o.insert(k.into(), v);
    }
}

/// Sums the samples of a pod's containers into the pod's own (the kubelet reports the pod
/// cgroup; the sum is what a backend without one can give). `None` when no container has one.
fn pod_cpu(p: &PodUsage) -> Option<CpuSample> {
    let samples: Vec<&CpuSample> = p.containers.iter().filter_map(|c| c.cpu.as_ref()).collect();
    let at = samples.iter().map(|s| s.at).max()?;
    Some(CpuSample {
        at,
        nano_cores: samples.iter().map(|s| s.nano_cores).sum(),
        cumulative_nanos: Some(samples.iter().filter_map(|s| s.cumulative_nanos).sum()),
    })
}

fn pod_memory(p: &PodUsage) -> Option<MemorySample> {
    let samples: Vec<&MemorySample> =
        p.containers.iter().filter_map(|c| c.memory.as_ref()).collect();
    let at = samples.iter().map(|s| s.at).max()?;
    Some(MemorySample {
        at,
        working_set_bytes: samples.iter().map(|s| s.working_set_bytes).sum(),
        rss_bytes: samples.iter().map(|s| s.rss_bytes).sum(),
        usage_bytes: samples.iter().map(|s| s.usage_bytes).sum(),
        available_bytes: None,
    })
}

/// The stats/v1alpha1 `Summary` for node `node_name` (`GET /stats/summary`), with CPU counters
/// already filled by [`CpuCounters::fill`]. Times are RFC 3339 (seconds), CPU in nanocores and
/// core-nanoseconds, memory in bytes. Pod CPU and memory are the sums of their containers'.
pub fn summary(node_name: &str, usage: &Usage) -> serde_json::Value {
    let mut node = serde_json::Map::new();
    node.insert("nodeName".into(), node_name.into());
    node.insert("systemContainers".into(), serde_json::json!([]));
    insert_opt(&mut node, "startTime", usage.node.start_time.map(|t| time(t).into()));
    insert_opt(&mut node, "cpu", usage.node.cpu.as_ref().map(cpu_json));
    insert_opt(&mut node, "memory", usage.node.memory.as_ref().map(memory_json));
    let pods: Vec<serde_json::Value> = usage
        .pods
        .iter()
        .map(|p| {
            let containers: Vec<serde_json::Value> = p
                .containers
                .iter()
                .map(|c| {
                    let mut o = serde_json::Map::new();
                    o.insert("name".into(), c.name.clone().into());
                    insert_opt(
                        &mut o,
                        "startTime",
                        c.start_time.or(p.start_time).map(|t| time(t).into()),
                    );
                    insert_opt(&mut o, "cpu", c.cpu.as_ref().map(cpu_json));
                    insert_opt(&mut o, "memory", c.memory.as_ref().map(memory_json));
                    o.into()
                })
                .collect();
            let mut o = serde_json::Map::new();
            o.insert(
                "podRef".into(),
                serde_json::json!({
                    "name": p.key.name(),
                    "namespace": p.key.namespace(),
                    "uid": p.uid,
                }),
            );
            insert_opt(&mut o, "startTime", p.start_time.map(|t| time(t).into()));
            o.insert("containers".into(), containers.into());
            insert_opt(&mut o, "cpu", pod_cpu(p).as_ref().map(cpu_json));
            insert_opt(&mut o, "memory", pod_memory(p).as_ref().map(memory_json));
            o.into()
        })
        .collect();
    serde_json::json!({ "node": node, "pods": pods })
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn seconds(nanos: u64) -> String {
    format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
}

/// The Prometheus text of the kubelet's `GET /metrics/resource`, with CPU counters already filled
/// by [`CpuCounters::fill`]: `node_cpu_usage_seconds_total`, `node_memory_working_set_bytes`,
/// `container_cpu_usage_seconds_total`, `container_memory_working_set_bytes`,
/// `container_start_time_seconds`, `pod_cpu_usage_seconds_total`, `pod_memory_working_set_bytes`
/// and `resource_scrape_error`, each sample with its timestamp in milliseconds (metrics-server
/// computes CPU rates from counter and timestamp differences).
///
/// A sample that would be zero is left out rather than written: metrics-server drops the node or
/// the whole pod when one of its CPU or memory figures is zero
/// (`pkg/scraper/client/resource/decode.go`).
pub fn resource_metrics(usage: &Usage) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let ms = |t: Timestamp| t.as_millisecond();
    let mut family = |name: &str, kind: &str, help: &str, lines: Vec<String>| {
        let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for l in lines {
            let _ = writeln!(out, "{name}{l}");
        }
    };
    let cpu_line = |labels: &str, c: &CpuSample| {
        let v = c.cumulative_nanos.unwrap_or_default();
        (v > 0).then(|| format!("{labels} {} {}", seconds(v), ms(c.at)))
    };
    let mem_line = |labels: &str, m: &MemorySample| {
        (m.working_set_bytes > 0).then(|| format!("{labels} {} {}", m.working_set_bytes, ms(m.at)))
    };
    let node_cpu = usage.node.cpu.as_ref().and_then(|c| cpu_line("", c));
    let node_mem = usage.node.memory.as_ref().and_then(|m| mem_line("", m));
    let mut c_cpu = Vec::new();
    let mut c_mem = Vec::new();
    let mut c_start = Vec::new();
    let mut p_cpu = Vec::new();
    let mut p_mem = Vec::new();
    for p in &usage.pods {
        let (ns, pod) = (label(p.key.namespace()), label(p.key.name()));
        for c in &p.containers {
            let l =
                format!("{{container=\"{}\",namespace=\"{ns}\",pod=\"{pod}\"}}", label(&c.name));
            c_cpu.extend(c.cpu.as_ref().and_then(|s| cpu_line(&l, s)));
            c_mem.extend(c.memory.as_ref().and_then(|s| mem_line(&l, s)));
            if let (Some(start), Some(at)) = (
                c.start_time.or(p.start_time),
                c.cpu.as_ref().map(|s| s.at).or(c.memory.as_ref().map(|s| s.at)),
            ) {
                c_start.push(format!(
                    "{l} {} {}",
                    seconds(
                        start.as_nanosecond().max(0).unsigned_abs().try_into().unwrap_or(u64::MAX)
                    ),
                    ms(at)
                ));
            }
        }
        let l = format!("{{namespace=\"{ns}\",pod=\"{pod}\"}}");
        p_cpu.extend(pod_cpu(p).as_ref().and_then(|s| cpu_line(&l, s)));
        p_mem.extend(pod_memory(p).as_ref().and_then(|s| mem_line(&l, s)));
    }
    family(
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
        c_cpu,
    );
    family(
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
        c_mem,
    );
    family(
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds",
        c_start,
    );
    family(
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
        node_cpu.into_iter().collect(),
    );
    family(
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
        node_mem.into_iter().collect(),
    );
    family(
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
        p_cpu,
    );
    family(
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
        p_mem,
    );
    family(
        "resource_scrape_error",
        "gauge",
        "1 if there was an error while getting container metrics, 0 otherwise",
        vec![" 0".into()],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap_or_default()
    }

    fn usage() -> Usage {
        let key = PodKey::new("ns", "web").unwrap_or_else(|_| unreachable!());
        let cpu = |n, at| CpuSample { at: t(at), nano_cores: n, cumulative_nanos: None };
        let mem = |b, at| MemorySample {
            at: t(at),
            working_set_bytes: b,
            rss_bytes: b,
            usage_bytes: b,
            available_bytes: None,
        };
        Usage {
            node: NodeUsage {
                start_time: Some(t("2026-11-21T09:00:00Z")),
                cpu: Some(cpu(1_000_000_000, "2026-11-21T10:00:00Z")),
                memory: Some(mem(1 << 30, "2026-11-21T10:00:00Z")),
            },
            pods: vec![PodUsage {
                key,
                uid: "u1".into(),
                start_time: Some(t("2026-11-21T09:59:50Z")),
                containers: vec![
                    ContainerUsage {
                        name: "app".into(),
                        start_time: Some(t("2026-11-21T09:59:50Z")),
                        cpu: Some(cpu(500_000_000, "2026-11-21T10:00:00Z")),
                        memory: Some(mem(4096, "2026-11-21T10:00:00Z")),
                    },
                    ContainerUsage {
                        name: "idle".into(),
                        start_time: Some(t("2026-11-21T09:59:59Z")),
                        cpu: Some(cpu(0, "2026-11-21T10:00:00Z")),
                        memory: Some(mem(0, "2026-11-21T10:00:00Z")),
                    },
                ],
            }],
        }
    }

    #[test]
    fn rates_integrate_into_counters_that_never_go_back() {
        let mut c = CpuCounters::default();
        let s = |n, at| CpuSample { at: t(at), nano_cores: n, cumulative_nanos: None };
        let start = Some(t("2026-11-21T09:59:50Z"));
        // Half a core for the 10 s since the start.
        assert_eq!(
            c.cumulative("a", start, &s(500_000_000, "2026-11-21T10:00:00Z")),
            5_000_000_000
        );
        // Then one core for 2 s.
        assert_eq!(
            c.cumulative("a", start, &s(1_000_000_000, "2026-11-21T10:00:02Z")),
            7_000_000_000
        );
        // Idle: the counter stays (and is never 0 for a new instance).
        assert_eq!(c.cumulative("a", start, &s(0, "2026-11-21T10:00:03Z")), 7_000_000_000);
        assert_eq!(c.cumulative("b", None, &s(0, "2026-11-21T10:00:03Z")), 1);
        // A backend counter is taken as is, but never below what was shown.
        let k = CpuSample { cumulative_nanos: Some(3), ..s(0, "2026-11-21T10:00:04Z") };
        assert_eq!(c.cumulative("a", start, &k), 7_000_000_000);
        c.retain(&std::collections::BTreeSet::from(["b".to_owned()]));
        assert_eq!(c.cumulative("a", None, &k), 3, "a forgotten instance starts again");
    }

    #[test]
    fn summary_has_the_v1alpha1_shape() {
        let mut u = usage();
        CpuCounters::default().fill(&mut u);
        let s = summary("vk", &u);
        assert_eq!(s["node"]["nodeName"], "vk");
        assert_eq!(s["node"]["cpu"]["usageNanoCores"], 1_000_000_000);
        assert_eq!(s["node"]["memory"]["workingSetBytes"], 1u64 << 30);
        let pod = &s["pods"][0];
        assert_eq!(
            pod["podRef"],
            serde_json::json!({"name": "web", "namespace": "ns", "uid": "u1"})
        );
        assert_eq!(pod["containers"][0]["name"], "app");
        assert_eq!(pod["containers"][0]["startTime"], "2026-11-21T09:59:50Z");
        assert_eq!(pod["containers"][0]["cpu"]["usageCoreNanoSeconds"], 5_000_000_000u64);
        assert_eq!(pod["containers"][0]["cpu"]["time"], "2026-11-21T10:00:00Z");
        assert_eq!(pod["cpu"]["usageNanoCores"], 500_000_000);
        assert_eq!(pod["memory"]["workingSetBytes"], 4096);
    }

    #[test]
    fn resource_metrics_as_metrics_server_parses_them() {
        let mut u = usage();
        CpuCounters::default().fill(&mut u);
        let text = resource_metrics(&u);
        let ts = t("2026-11-21T10:00:00Z").as_millisecond();
        for line in [
            format!(
                "container_cpu_usage_seconds_total{{container=\"app\",namespace=\"ns\",pod=\"web\"}} 5.000000000 {ts}"
            ),
            format!(
                "container_memory_working_set_bytes{{container=\"app\",namespace=\"ns\",pod=\"web\"}} 4096 {ts}"
            ),
            format!(
                "container_start_time_seconds{{container=\"app\",namespace=\"ns\",pod=\"web\"}} {}.000000000 {ts}",
                t("2026-11-21T09:59:50Z").as_second()
            ),
            format!("node_cpu_usage_seconds_total 3600.000000000 {ts}"),
            format!("node_memory_working_set_bytes 1073741824 {ts}"),
            "# TYPE container_cpu_usage_seconds_total counter".to_owned(),
            "resource_scrape_error 0".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // The idle container has a CPU counter of at least 1 ns, and no zero memory sample.
        assert!(text.contains("container_cpu_usage_seconds_total{container=\"idle\",namespace=\"ns\",pod=\"web\"} 0.000000001"), "{text}");
        assert!(!text.contains("container_memory_working_set_bytes{container=\"idle\""), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
