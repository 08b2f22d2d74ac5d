//! The parts of Nomad's HTTP API JSON this adapter reads and writes.
//!
//! Field names are Nomad's Go field names (`api/jobs.go`, `api/tasks.go`, `api/allocations.go`,
//! `api/nodes.go` at v1.11.3). Durations are integer nanoseconds; `CreateTime`/`ModifyTime` and
//! `TaskEvent.Time` are Unix nanoseconds; `TaskState.StartedAt`/`FinishedAt` are RFC 3339 with
//! `0001-01-01T00:00:00Z` meaning unset.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// Nomad writes `null` for empty maps and lists; read it as empty.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `api.Job`, as registered (`PUT /v1/jobs`) and read back (`GET /v1/job/:id`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Job {
    /// Job ID, unique in its Nomad namespace.
    #[serde(rename = "ID")]
    pub id: String,
    /// Display name (the ID).
    pub name: String,
    /// `service` or `batch`.
    #[serde(rename = "Type")]
    pub type_: String,
    /// Nomad namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Nomad region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Datacenters the job may run in (`*` for all).
    #[serde(default, deserialize_with = "nullable")]
    pub datacenters: Vec<String>,
    /// Node pool, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_pool: Option<String>,
    /// Scheduling priority, 1–100 (Nomad's default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Free-form metadata; this adapter records the owning pod and node here.
    #[serde(default, deserialize_with = "nullable")]
    pub meta: BTreeMap<String, String>,
    /// Task groups (one per pod).
    #[serde(default, deserialize_with = "nullable")]
    pub task_groups: Vec<TaskGroup>,
    /// Server-set: the job was stopped (deregistered without purge).
    #[serde(default, skip_serializing)]
    pub stop: bool,
    /// Server-set: `pending`, `running` or `dead`.
    #[serde(default, skip_serializing)]
    pub status: String,
}

/// `api.TaskGroup`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskGroup {
    /// Group name.
    pub name: String,
    /// Instances (always 1: a pod is one allocation).
    pub count: i32,
    /// One task per container.
    #[serde(default, deserialize_with = "nullable")]
    pub tasks: Vec<Task>,
    /// How tasks restart in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// How failed allocations are placed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reschedule_policy: Option<ReschedulePolicy>,
    /// Group networks: the pod's network namespace and ports.
    #[serde(default, deserialize_with = "nullable")]
    pub networks: Vec<Network>,
    /// Group metadata.
    #[serde(default, deserialize_with = "nullable")]
    pub meta: BTreeMap<String, String>,
}

/// `api.RestartPolicy`; durations in ns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    /// Restarts allowed within `interval`.
    pub attempts: i32,
    /// Window for `attempts`, ns.
    pub interval: i64,
    /// Wait before a restart, ns.
    pub delay: i64,
    /// `delay` (wait out the interval) or `fail`.
    pub mode: String,
}

/// `api.ReschedulePolicy`; durations in ns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReschedulePolicy {
    /// Reschedules allowed within `interval`.
    pub attempts: i32,
    /// Window for `attempts`, ns.
    pub interval: i64,
    /// Base delay, ns.
    pub delay: i64,
    /// `constant`, `exponential` or `fibonacci`.
    pub delay_function: String,
    /// Cap on the delay, ns.
    pub max_delay: i64,
    /// Reschedule forever.
    pub unlimited: bool,
}

/// `api.NetworkResource`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Network {
    /// `host`, `bridge`, `none` or `cni/<name>`.
    #[serde(default)]
    pub mode: String,
    /// Allocated address (read back in allocations).
    #[serde(rename = "IP", default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// Fixed host ports.
    #[serde(default, deserialize_with = "nullable")]
    pub reserved_ports: Vec<Port>,
    /// Ports chosen by the scheduler.
    #[serde(default, deserialize_with = "nullable")]
    pub dynamic_ports: Vec<Port>,
}

/// `api.Port`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Port {
    /// Label referenced by task drivers.
    pub label: String,
    /// Host port (0 for a dynamic port before placement).
    #[serde(default)]
    pub value: i32,
    /// Port inside the task's network namespace.
    #[serde(default)]
    pub to: i32,
}

/// `api.Task`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    /// Task name (the container name).
    pub name: String,
    /// Task driver (`docker`, `raw_exec`, `exec`, ...).
    pub driver: String,
    /// Driver-specific configuration.
    #[serde(default, deserialize_with = "nullable")]
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Environment variables.
    #[serde(default, deserialize_with = "nullable")]
    pub env: BTreeMap<String, String>,
    /// Resources the scheduler reserves.
    #[serde(default)]
    pub resources: Resources,
    /// Time between the kill signal and SIGKILL, ns.
    #[serde(default)]
    pub kill_timeout: i64,
    /// The signal sent to stop the task.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kill_signal: String,
    /// Task metadata.
    #[serde(default, deserialize_with = "nullable")]
    pub meta: BTreeMap<String, String>,
    /// The user the task runs as (a name, or for docker `uid[:gid]`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// When the task runs relative to the group's main tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// Files rendered by Nomad's template runner before (and while) the task runs.
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<Template>,
    /// Secrets read at start for the interpolation of `Env` as `${secret.<name>.<key>}` (Nomad
    /// 1.11's `secret` block).
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Secret>,
    /// The task's own restart policy, replacing the group's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
}

/// `api.Secret`: a task's `secret` block. With provider `nomad`, the items of the Variable at
/// `path` (in the job's namespace) are `${secret.<name>.<item>}` in the task's `Env`, read once
/// at start (Nomad renders them through a template into memory, never to disk).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Secret {
    /// `[A-Za-z0-9_]{1,128}`.
    pub name: String,
    /// `nomad` or `vault`.
    pub provider: String,
    /// The Variable's path.
    pub path: String,
}

/// `api.TaskLifecycle`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Lifecycle {
    /// `prestart`, `poststart` or `poststop`.
    pub hook: String,
    /// Keeps running beside the main tasks instead of running to completion.
    #[serde(default)]
    pub sidecar: bool,
}

/// `api.Template`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Template {
    /// The template text (consul-template syntax).
    pub embedded_tmpl: String,
    /// Where it is rendered, relative to the task directory.
    pub dest_path: String,
    /// What happens when it renders again: `restart`, `noop`, `signal` or `script`.
    pub change_mode: String,
    /// File mode, octal digits (`"0644"`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub perms: String,
    /// The rendered file is read back as `KEY=value` environment variables.
    #[serde(default)]
    pub envvars: bool,
    /// Left delimiter (`{{` when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub left_delim: String,
    /// Right delimiter (`}}` when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub right_delim: String,
    /// Group owning the rendered file (`Gid`; the Nomad agent's group when unset).
    #[serde(rename = "Gid", default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<i64>,
}

/// `api.Variable` (`PUT /v1/var/:path`, `GET /v1/var/:path`). Its items hold Secret data and
/// tokens: `Debug` shows their keys only.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Variable {
    /// Nomad namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Path, for example `nomad/jobs/<job>`.
    pub path: String,
    /// The items (string values).
    #[serde(default, deserialize_with = "nullable")]
    pub items: BTreeMap<String, String>,
    /// Server-set index for check-and-set.
    #[serde(default, skip_serializing)]
    pub modify_index: u64,
}

impl std::fmt::Debug for Variable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variable")
            .field("namespace", &self.namespace)
            .field("path", &self.path)
            .field("items", &RedactedItems(&self.items))
            .field("modify_index", &self.modify_index)
            .finish()
    }
}

/// Variable items as `Debug` shows them: each key, its value `<redacted>` (values are Secret data
/// and tokens as often as not).
pub(crate) struct RedactedItems<'a>(pub(crate) &'a BTreeMap<String, String>);

impl std::fmt::Debug for RedactedItems<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.keys().map(|k| (k, format_args!("<redacted>")))).finish()
    }
}

/// `api.Resources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resources {
    /// CPU in MHz.
    #[serde(rename = "CPU", default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<i64>,
    /// Memory reserved, in MiB (Nomad says "MB").
    #[serde(rename = "MemoryMB", default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<i64>,
    /// Memory the task may burst to, in MiB (needs scheduler memory oversubscription).
    #[serde(rename = "MemoryMaxMB", default, skip_serializing_if = "Option::is_none")]
    pub memory_max_mb: Option<i64>,
}

/// Body of `PUT /v1/jobs`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterRequest<'a> {
    /// The job.
    pub job: &'a Job,
}

/// Answer of `PUT /v1/jobs`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterResponse {
    /// The evaluation created.
    #[serde(rename = "EvalID", default)]
    pub eval_id: String,
    /// Warnings about the job (ignored fields, ...).
    #[serde(default)]
    pub warnings: String,
}

/// `api.JobListStub` (`GET /v1/jobs?meta=true`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobStub {
    /// Job ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Nomad namespace (set when listing with `namespace=*`).
    #[serde(default)]
    pub namespace: String,
    /// Stopped (deregistered, not purged).
    #[serde(default)]
    pub stop: bool,
    /// Metadata (present with `meta=true`).
    #[serde(default)]
    pub meta: Option<BTreeMap<String, String>>,
}

/// `api.AllocationListStub` (`GET /v1/allocations?resources=true`), and the parts of
/// `api.Allocation` read from it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Allocation {
    /// Allocation ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Job ID.
    #[serde(rename = "JobID")]
    pub job_id: String,
    /// Nomad namespace.
    #[serde(default)]
    pub namespace: String,
    /// Node ID.
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    /// `run`, `stop` or `evict`.
    #[serde(default)]
    pub desired_status: String,
    /// `pending`, `running`, `complete`, `failed`, `lost` or `unknown`.
    #[serde(default)]
    pub client_status: String,
    /// Why the client status is what it is.
    #[serde(default)]
    pub client_description: String,
    /// Task states by task name.
    #[serde(default)]
    pub task_states: Option<BTreeMap<String, TaskState>>,
    /// Placement order.
    #[serde(default)]
    pub create_index: u64,
    /// Unix ns.
    #[serde(default)]
    pub create_time: i64,
    /// Resources allocated (with `resources=true` or on a full allocation).
    #[serde(default)]
    pub allocated_resources: Option<AllocatedResources>,
    /// The allocation this one replaced (full allocation only, `omitempty`: empty when none).
    #[serde(rename = "PreviousAllocation", default)]
    pub previous_allocation: String,
    /// The allocation's network as its client set it up (full allocation only: the list stub
    /// leaves it out).
    #[serde(default)]
    pub network_status: Option<AllocNetworkStatus>,
}

/// `api.AllocNetworkStatus`: the network namespace a client made for a `bridge` or `cni/*`
/// group.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AllocNetworkStatus {
    /// The allocation's IPv4 address in its network (`bridge`: on Nomad's `nomad` bridge,
    /// 172.26.64.0/20 by default); empty until the client has set the network up.
    #[serde(default)]
    pub address: String,
    /// The allocation's IPv6 address, when the network gives one.
    #[serde(rename = "AddressIPv6", default)]
    pub address_ipv6: String,
}

/// `api.AllocatedResources`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AllocatedResources {
    /// Group-level resources.
    #[serde(default)]
    pub shared: Option<AllocatedShared>,
    /// By task name: what each task holds (`structs.AllocatedResources.Tasks`).
    #[serde(default)]
    pub tasks: Option<BTreeMap<String, TaskUsage>>,
    /// Each task's lifecycle, by task name (`null` for a main task).
    #[serde(default)]
    pub task_lifecycles: Option<BTreeMap<String, Option<Lifecycle>>>,
}

/// `api.AllocatedSharedResources`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AllocatedShared {
    /// Group networks with their address.
    #[serde(default)]
    pub networks: Option<Vec<Network>>,
    /// The group's ephemeral disk, MiB.
    #[serde(rename = "DiskMB", default)]
    pub disk_mb: i64,
}

/// `api.TaskState`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskState {
    /// `pending`, `running` or `dead`.
    #[serde(default)]
    pub state: String,
    /// The task failed.
    #[serde(default)]
    pub failed: bool,
    /// Restarts so far.
    #[serde(default)]
    pub restarts: u64,
    /// First start (RFC 3339).
    #[serde(default)]
    pub started_at: Option<String>,
    /// End (RFC 3339).
    #[serde(default)]
    pub finished_at: Option<String>,
    /// Events, oldest first (Nomad keeps the last 10).
    #[serde(default)]
    pub events: Option<Vec<TaskEvent>>,
}

impl TaskState {
    /// The newest event of type `type_` (`Started`, `Terminated`, `Restarting`, ...), if any.
    pub fn last_event(&self, type_: &str) -> Option<&TaskEvent> {
        self.events.iter().flatten().rev().find(|e| e.type_ == type_)
    }
}

/// `api.TaskEvent`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskEvent {
    /// `Received`, `Started`, `Terminated`, `Restarting`, `Driver Failure`, ...
    #[serde(rename = "Type", default)]
    pub type_: String,
    /// Unix ns.
    #[serde(default)]
    pub time: i64,
    /// Human-readable summary.
    #[serde(default)]
    pub display_message: String,
    /// Structured details (`exit_code`, `signal`, `oom_killed`, ...).
    #[serde(default)]
    pub details: Option<BTreeMap<String, String>>,
    /// Exit code (Terminated).
    #[serde(default)]
    pub exit_code: i32,
    /// Signal (Terminated).
    #[serde(default)]
    pub signal: i32,
    /// The event fails the task.
    #[serde(default)]
    pub fails_task: bool,
}

/// `api.NodeListStub` (`GET /v1/nodes?resources=true`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeStub {
    /// Node ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Node name.
    #[serde(default)]
    pub name: String,
    /// The node's advertised address.
    #[serde(default)]
    pub address: String,
    /// Nomad version of the node's agent.
    #[serde(default)]
    pub version: String,
    /// `initializing`, `ready`, `down` or `disconnected`.
    #[serde(default)]
    pub status: String,
    /// `eligible` or `ineligible`.
    #[serde(default)]
    pub scheduling_eligibility: String,
    /// Being drained.
    #[serde(default)]
    pub drain: bool,
    /// The node's datacenter.
    #[serde(default)]
    pub datacenter: String,
    /// The node's node pool (empty before Nomad 1.6, where every node is in `default`).
    #[serde(default)]
    pub node_pool: String,
    /// Fingerprinted resources.
    #[serde(default)]
    pub node_resources: Option<NodeResources>,
    /// Resources held back from scheduling.
    #[serde(default)]
    pub reserved_resources: Option<NodeReserved>,
}

/// `api.NodeResources`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeResources {
    /// CPU.
    #[serde(default)]
    pub cpu: NodeCpu,
    /// Memory.
    #[serde(default)]
    pub memory: NodeMemory,
    /// Disk.
    #[serde(default)]
    pub disk: NodeDisk,
}

/// `api.NodeCpuResources`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeCpu {
    /// Total compute in MHz (cores × frequency).
    #[serde(default)]
    pub cpu_shares: i64,
    /// Cores.
    #[serde(default)]
    pub total_cpu_cores: u32,
}

/// `api.NodeMemoryResources`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeMemory {
    /// MiB.
    #[serde(rename = "MemoryMB", default)]
    pub memory_mb: i64,
}

/// `api.NodeDiskResources`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeDisk {
    /// MiB.
    #[serde(rename = "DiskMB", default)]
    pub disk_mb: i64,
}

/// `api.NodeReservedResources`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeReserved {
    /// CPU held back.
    #[serde(default)]
    pub cpu: NodeReservedCpu,
    /// Memory held back.
    #[serde(default)]
    pub memory: NodeMemory,
    /// Disk held back.
    #[serde(default)]
    pub disk: NodeDisk,
}

/// `api.NodeReservedCpuResources`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeReservedCpu {
    /// MHz held back.
    #[serde(default)]
    pub cpu_shares: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_debug_shows_keys_not_values() {
        let v = Variable {
            path: "nomad/jobs/k8s-ns_a".into(),
            items: [("e_PASSWORD_0".to_owned(), "hunter2".to_owned())].into(),
            ..Default::default()
        };
        let shown = format!("{v:?}");
        assert!(shown.contains("e_PASSWORD_0") && shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn nulls_read_as_empty() {
        let job: Job = serde_json::from_str(
            r#"{"ID":"j","Name":"j","Type":"batch","Datacenters":null,"Meta":null,"Stop":true,
                "TaskGroups":[{"Name":"pod","Count":1,"Tasks":[{"Name":"t","Driver":"raw_exec","Config":null,"Env":null,"Meta":null}],
                               "Networks":null,"Meta":null}]}"#,
        )
        .unwrap();
        assert!(job.meta.is_empty() && job.stop);
        assert!(job.task_groups[0].tasks[0].env.is_empty());
    }
}

/// `api.Evaluation` (`GET /v1/job/<id>/evaluations`), the fields that say why a placement failed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Evaluation {
    /// Evaluation ID.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// `pending`, `blocked`, `complete`, `failed`, `canceled`.
    #[serde(default)]
    pub status: String,
    /// Raft index of its creation: the newest evaluation has the highest.
    #[serde(default)]
    pub create_index: u64,
    /// Per task group, why its allocations could not be placed (set on the evaluation that tried;
    /// the `blocked` one it made waits for the cluster to change).
    #[serde(rename = "FailedTGAllocs", default)]
    pub failed_tg_allocs: Option<BTreeMap<String, AllocMetric>>,
}

/// `structs.AllocMetric`: what the scheduler saw of the nodes when placing a task group.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct AllocMetric {
    /// Nodes the scheduler looked at.
    #[serde(default)]
    pub nodes_evaluated: u64,
    /// Nodes in the job's node pool.
    #[serde(default)]
    pub nodes_in_pool: u64,
    /// The job's node pool.
    #[serde(default)]
    pub node_pool: String,
    /// Ready nodes per datacenter of the job.
    #[serde(default)]
    pub nodes_available: Option<BTreeMap<String, u64>>,
    /// Nodes excluded per constraint (`${node.class} = gpu`, `missing drivers`, ...).
    #[serde(default)]
    pub constraint_filtered: Option<BTreeMap<String, u64>>,
    /// Nodes excluded per node class.
    #[serde(default)]
    pub class_filtered: Option<BTreeMap<String, u64>>,
    /// Nodes that fit the constraints but lacked resources.
    #[serde(default)]
    pub nodes_exhausted: u64,
    /// Nodes exhausted per resource dimension (`memory`, `cpu`, `network: port collision`, ...).
    #[serde(default)]
    pub dimension_exhausted: Option<BTreeMap<String, u64>>,
    /// Quotas reached (Nomad Enterprise).
    #[serde(default)]
    pub quota_exhausted: Option<Vec<String>>,
}

/// `structs.AllocatedTaskResources`: CPU and memory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskUsage {
    /// CPU.
    #[serde(default)]
    pub cpu: CpuUsage,
    /// Memory.
    #[serde(default)]
    pub memory: MemoryUsage,
}

/// `structs.AllocatedCpuResources`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CpuUsage {
    /// MHz.
    #[serde(default)]
    pub cpu_shares: i64,
    /// Whole cores given to the task alone (`resources { cores = n }`).
    #[serde(default)]
    pub reserved_cores: Option<Vec<u16>>,
}

/// `structs.AllocatedMemoryResources`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MemoryUsage {
    /// MiB reserved (`memory`; `memory_max` is oversubscription, not reserved).
    #[serde(rename = "MemoryMB", default)]
    pub memory_mb: i64,
}
