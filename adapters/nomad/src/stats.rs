//! Resource usage from Nomad's client stats (`client/structs` `AllocResourceUsage`,
//! `HostStats`; `client/lib/cpustats`, `drivers/shared/executor/procstats`): the JSON and its pure
//! translation into [`vk_domain::stats`] samples.
//!
//! - **Containers**: `GET /v1/client/allocation/<alloc>/stats` → `Tasks.<task>.ResourceUsage`.
//!   CPU: `CpuStats.Percent` is the percentage of **one** core over the executor's last sampling
//!   interval (100 = one core, may exceed 100; 0 on the first sample), so
//!   `nano_cores = Percent / 100 × 10⁹`; Nomad keeps no cumulative CPU time
//!   (`cumulative_nanos: None`: [`vk_domain::stats::CpuCounters`] integrates the rate).
//!   Memory (bytes): `working_set_bytes` is `Usage` when Nomad measured it (cgroup drivers such as
//!   docker and exec: the cgroup's usage, page cache included, so an over-estimate of the
//!   kubelet's usage minus inactive file), else `RSS` (raw_exec without cgroups measures only `RSS`
//!   and `Swap`), and never 0 for a running container (1 byte when Nomad reported nothing, because
//!   metrics-server drops a pod with a zero). `rss_bytes` is `RSS`, `usage_bytes` `Usage` (else
//!   `RSS`). Sample time: the task's `Timestamp` (Unix ns).
//! - **Node**: `GET /v1/client/stats?node_id=<id>` for each Nomad node behind this node (those
//!   [`super::capacity_of`] counts). CPU: `CPUTicksConsumed` is MHz in use, turned into nanocores
//!   with the cluster's MHz per core (`CPUTicksConsumed / mhz_per_core × 10⁹`); memory:
//!   `Memory.Used` (bytes) as working set, RSS and usage, `Memory.Available` as available. Sums
//!   over the nodes; the start time is the earliest boot (`Timestamp − Uptime`).

use std::collections::BTreeMap;

use serde::Deserialize;
use vk_domain::jiff::{SignedDuration, Timestamp};
use vk_domain::stats::{ContainerUsage, CpuSample, MemorySample, NodeUsage};

/// `AllocResourceUsage`: the answer of `/v1/client/allocation/<alloc>/stats`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AllocStats {
    /// The whole allocation.
    #[serde(default)]
    pub resource_usage: ResourceUsage,
    /// Each running task.
    #[serde(default, deserialize_with = "nullable")]
    pub tasks: BTreeMap<String, TaskStats>,
    /// Unix ns.
    #[serde(default)]
    pub timestamp: i64,
}

fn nullable<'de, D: serde::Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `TaskResourceUsage`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStats {
    /// The task's usage (its processes summed).
    #[serde(default)]
    pub resource_usage: ResourceUsage,
    /// When sampled, Unix ns.
    #[serde(default)]
    pub timestamp: i64,
}

/// `ResourceUsage`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceUsage {
    /// Memory.
    #[serde(default)]
    pub memory_stats: MemoryStats,
    /// CPU.
    #[serde(default)]
    pub cpu_stats: CpuStats,
}

/// `MemoryStats`, all bytes; `measured` names the fields the driver really measured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MemoryStats {
    /// Resident set.
    #[serde(rename = "RSS", default)]
    pub rss: u64,
    /// Page cache.
    #[serde(default)]
    pub cache: u64,
    /// Swap in use.
    #[serde(default)]
    pub swap: u64,
    /// Mapped files.
    #[serde(default)]
    pub mapped_file: u64,
    /// cgroup usage (0 when not measured).
    #[serde(default)]
    pub usage: u64,
    /// Peak cgroup usage.
    #[serde(default)]
    pub max_usage: u64,
    /// Kernel memory.
    #[serde(default)]
    pub kernel_usage: u64,
    /// Peak kernel memory.
    #[serde(default)]
    pub kernel_max_usage: u64,
    /// `RSS`, `Cache`, `Swap`, `Usage`, `Max Usage`, ... as measured.
    #[serde(default, deserialize_with = "nullable")]
    pub measured: Vec<String>,
}

/// `CpuStats`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CpuStats {
    /// Percent of one core in kernel mode.
    #[serde(default)]
    pub system_mode: f64,
    /// Percent of one core in user mode.
    #[serde(default)]
    pub user_mode: f64,
    /// MHz consumed.
    #[serde(default)]
    pub total_ticks: f64,
    /// cgroup throttled periods.
    #[serde(default)]
    pub throttled_periods: u64,
    /// cgroup throttled time, ns.
    #[serde(default)]
    pub throttled_time: u64,
    /// Percent of one core (100 = a whole core) over the last interval.
    #[serde(default)]
    pub percent: f64,
    /// `System Mode`, `User Mode`, `Percent`, ... as measured.
    #[serde(default, deserialize_with = "nullable")]
    pub measured: Vec<String>,
}

/// `HostStats`: the answer of `/v1/client/stats`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostStats {
    /// Memory, bytes.
    #[serde(default)]
    pub memory: HostMemory,
    /// CPU in use over the last interval, MHz (over all cores).
    #[serde(rename = "CPUTicksConsumed", default)]
    pub cpu_ticks_consumed: f64,
    /// Seconds since boot.
    #[serde(default)]
    pub uptime: u64,
    /// When sampled, Unix ns.
    #[serde(default)]
    pub timestamp: i64,
}

/// `HostMemoryStats`, bytes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostMemory {
    /// Installed.
    #[serde(default)]
    pub total: u64,
    /// Available to new processes.
    #[serde(default)]
    pub available: u64,
    /// In use.
    #[serde(default)]
    pub used: u64,
    /// Free.
    #[serde(default)]
    pub free: u64,
}

fn at(ns: i64, fallback: Timestamp) -> Timestamp {
    (ns > 0).then(|| Timestamp::from_nanosecond(i128::from(ns)).ok()).flatten().unwrap_or(fallback)
}

/// Percent of one core to nanocores (negative or not finite: 0).
pub fn nano_cores(percent: f64) -> u64 {
    let v = percent / 100.0 * 1e9;
    if v.is_finite() && v > 0.0 {
        // `as` saturates; a fraction of a nanocore is noise.
        v.round() as u64
    } else {
        0
    }
}

/// The usage of container `name` (started at `start_time`) from its task's stats; `now` stands in
/// for a missing sample time.
pub fn container_usage(
    name: &str,
    start_time: Option<Timestamp>,
    task: &TaskStats,
    now: Timestamp,
) -> ContainerUsage {
    let when = at(task.timestamp, now);
    let mem = &task.resource_usage.memory_stats;
    let measured_usage = mem.measured.iter().any(|m| m == "Usage") || mem.usage > 0;
    let working_set = if measured_usage && mem.usage > 0 { mem.usage } else { mem.rss }.max(1);
    ContainerUsage {
        name: name.to_owned(),
        start_time,
        cpu: Some(CpuSample {
            at: when,
            nano_cores: nano_cores(task.resource_usage.cpu_stats.percent),
            cumulative_nanos: None,
        }),
        memory: Some(MemorySample {
            at: when,
            working_set_bytes: working_set,
            rss_bytes: mem.rss,
            usage_bytes: if mem.usage > 0 { mem.usage } else { mem.rss },
            available_bytes: None,
        }),
    }
}

/// The node's usage from the stats of its Nomad nodes, with `mhz_per_core` the cluster's factor
/// (MHz of one core); `None` samples when no node answered.
pub fn node_usage(hosts: &[HostStats], mhz_per_core: u64, now: Timestamp) -> NodeUsage {
    if hosts.is_empty() {
        return NodeUsage::default();
    }
    let when = hosts.iter().map(|h| at(h.timestamp, now)).max().unwrap_or(now);
    let mhz: f64 = hosts.iter().map(|h| h.cpu_ticks_consumed).sum();
    let cores = if mhz_per_core == 0 { 0.0 } else { mhz / mhz_per_core as f64 };
    let used: u64 = hosts.iter().map(|h| h.memory.used).sum();
    let available: u64 = hosts.iter().map(|h| h.memory.available).sum();
    let start_time = hosts
        .iter()
        .filter_map(|h| {
            let secs = i64::try_from(h.uptime).ok()?;
            at(h.timestamp, now).checked_sub(SignedDuration::from_secs(secs)).ok()
        })
        .min();
    NodeUsage {
        start_time,
        cpu: Some(CpuSample {
            at: when,
            nano_cores: nano_cores(cores * 100.0),
            cumulative_nanos: None,
        }),
        memory: Some(MemorySample {
            at: when,
            working_set_bytes: used,
            rss_bytes: used,
            usage_bytes: used,
            available_bytes: Some(available),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-21T13:00:00Z".parse().unwrap()
    }

    /// The shape of a raw_exec allocation's stats, as Nomad 1.11.3 answered (no cgroups: RSS and
    /// Swap measured, Usage 0).
    const RAW_EXEC: &str = r#"{"ResourceUsage":{"CpuStats":{"Measured":["System Mode","User Mode","Percent"],"Percent":0.0,"SystemMode":0.0,"ThrottledPeriods":0,"ThrottledTime":0,"TotalTicks":0.0,"UserMode":0.0},"DeviceStats":[],"MemoryStats":{"Cache":0,"KernelMaxUsage":0,"KernelUsage":0,"MappedFile":0,"MaxUsage":0,"Measured":["RSS","Swap"],"RSS":1765376,"Swap":0,"Usage":0}},"Tasks":{"c":{"Pids":{"15053":{"CpuStats":{"Measured":["System Mode","User Mode","Percent"],"Percent":0.0,"SystemMode":0.0,"ThrottledPeriods":0,"ThrottledTime":0,"TotalTicks":0.0,"UserMode":0.0},"DeviceStats":null,"MemoryStats":{"Cache":0,"KernelMaxUsage":0,"KernelUsage":0,"MappedFile":0,"MaxUsage":0,"Measured":["RSS","Swap"],"RSS":1765376,"Swap":0,"Usage":0}}},"ResourceUsage":{"CpuStats":{"Measured":["System Mode","User Mode","Percent"],"Percent":150.5,"SystemMode":0.0,"ThrottledPeriods":0,"ThrottledTime":0,"TotalTicks":0.0,"UserMode":0.0},"DeviceStats":null,"MemoryStats":{"Cache":0,"KernelMaxUsage":0,"KernelUsage":0,"MappedFile":0,"MaxUsage":0,"Measured":["RSS","Swap"],"RSS":1765376,"Swap":0,"Usage":0}},"Timestamp":1795267043570297226}},"Timestamp":1795267043570297226}"#;

    #[test]
    fn raw_exec_tasks_report_rss_and_a_percentage_of_one_core() {
        let s: AllocStats = serde_json::from_str(RAW_EXEC).unwrap();
        let c = container_usage("c", None, &s.tasks["c"], now());
        let cpu = c.cpu.unwrap();
        assert_eq!(cpu.nano_cores, 1_505_000_000, "150.5 % of one core");
        assert_eq!(cpu.at, Timestamp::from_nanosecond(1_795_267_043_570_297_226).unwrap());
        let mem = c.memory.unwrap();
        assert_eq!(
            (mem.working_set_bytes, mem.rss_bytes, mem.usage_bytes),
            (1_765_376, 1_765_376, 1_765_376)
        );
    }

    #[test]
    fn cgroup_usage_is_the_working_set_and_never_zero() {
        let task = |rss: u64, usage: u64| TaskStats {
            resource_usage: ResourceUsage {
                memory_stats: MemoryStats {
                    rss,
                    usage,
                    measured: vec!["RSS".into(), "Usage".into()],
                    ..Default::default()
                },
                cpu_stats: CpuStats { percent: -3.0, ..Default::default() },
            },
            timestamp: 0,
        };
        let c = container_usage("c", None, &task(10, 50), now());
        assert_eq!(c.memory.as_ref().map(|m| m.working_set_bytes), Some(50));
        assert_eq!(c.cpu.as_ref().map(|m| (m.nano_cores, m.at)), Some((0, now())));
        let c = container_usage("c", None, &task(0, 0), now());
        assert_eq!(c.memory.map(|m| m.working_set_bytes), Some(1));
        assert_eq!(nano_cores(f64::NAN), 0);
        assert_eq!(nano_cores(100.0), 1_000_000_000);
    }

    #[test]
    fn node_usage_sums_hosts_in_cores_of_the_cluster() {
        let h: HostStats = serde_json::from_str(
            r#"{"CPU":[{"CPU":"cpu0","Idle":50.0}],"CPUTicksConsumed":2793.0,"Memory":{"Available":200,"Free":50,"Total":400,"Used":150},"Timestamp":1795267043705832091,"Uptime":100}"#,
        )
        .unwrap();
        let n = node_usage(&[h.clone(), h], 2793, now());
        assert_eq!(
            n.cpu.map(|c| c.nano_cores),
            Some(2_000_000_000),
            "2 × 2793 MHz at 2793 MHz/core"
        );
        let mem = n.memory.unwrap();
        assert_eq!((mem.working_set_bytes, mem.available_bytes), (300, Some(400)));
        let ts = Timestamp::from_nanosecond(1_795_267_043_705_832_091).unwrap();
        assert_eq!(n.start_time, Some(ts - SignedDuration::from_secs(100)));
        assert_eq!(node_usage(&[], 1000, now()), NodeUsage::default());
    }
}
