//! Resource usage as the kubelet reports it: the stats/v1alpha1 `Summary` of `/stats/summary`
//! (`staging/src/k8s.io/kubelet/pkg/apis/stats/v1alpha1/types.go`) and the Prometheus text of
//! `/metrics/resource` that metrics-server ≥ 0.6 scrapes (`pkg/scraper/client/resource/decode.go`).
//!
//! A backend reports samples ([`Usage`]); CPU may come as a rate only (Nomad reports a percentage
//! per sample), so [`CpuCounters`] integrates rates into the cumulative core-seconds counter both
//! formats need.

use std::collections::BTreeMap;

use k8s_openapi::jiff;
use jiff::Timestamp;

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
                let add = u128::from(sample.nano_cores).saturating_mul(dt.unsigned_abs())
                    / 1_000_000_000;
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
