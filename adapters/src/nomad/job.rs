//! Pod to Nomad job: a pure translation of a checked [`WorkloadSpec`] into the job registered.
//!
//! One job per pod (ID from namespace and name, see [`job_id`]); one task group with count 1 (the
//! allocation is the pod); one task per container. Conversions:
//! - CPU: millicores × (the Nomad nodes' MHz per core) / 1000, rounded up, at least 1 MHz; the
//!   request is used, else the limit, else Nomad's default (100 MHz).
//! - Memory: bytes to MiB (Nomad's "MB"), rounded up, at least 10; `MemoryMB` from the request
//!   (else the limit), `MemoryMaxMB` from a limit above it (honoured only with memory
//!   oversubscription on; Nomad warns otherwise).
//! - `restartPolicy`: `Always` becomes a `service` job restarting in place; `OnFailure` and
//!   `Never` become `batch` jobs, `Never` with no restart and no reschedule.
//! - `terminationGracePeriodSeconds` becomes each task's `KillTimeout` (after `KillSignal`
//!   SIGTERM).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};
use vk_domain::error::Unsupported;
use vk_domain::pod::{PodKey, RestartPolicy};
use vk_domain::workload::{ContainerSpec, WorkloadSpec};

use super::api::{
    Job, Network, Port, ReschedulePolicy, Resources, RestartPolicy as NomadRestart, Task, TaskGroup,
};

/// Meta key: the Kubernetes node (virtual kubelet) that owns the job.
pub const META_NODE: &str = "k8s_node_name";
/// Meta key: the pod's namespace.
pub const META_NAMESPACE: &str = "k8s_namespace";
/// Meta key: the pod's name.
pub const META_POD: &str = "k8s_pod_name";
/// Meta key: the pod's UID.
pub const META_UID: &str = "k8s_pod_uid";
/// Meta key: always `virtual-kubelet`.
pub const META_MANAGED_BY: &str = "managed_by";
/// The group's name in every job.
pub const GROUP: &str = "pod";

/// Where and how jobs are registered, from configuration and the Nomad cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSettings {
    /// Prefix of every job ID (`k8s-` by default).
    pub prefix: String,
    /// The Kubernetes node name recorded in Meta.
    pub node_name: String,
    /// Nomad namespace, if not the agent's default.
    pub namespace: Option<String>,
    /// Nomad region, if not the agent's default.
    pub region: Option<String>,
    /// Datacenters (`["*"]` for all).
    pub datacenters: Vec<String>,
    /// Task driver when the pod does not choose one.
    pub default_driver: String,
    /// MHz per CPU core of the Nomad nodes, to convert millicores.
    pub mhz_per_core: u64,
}

/// The job ID of a pod: `<prefix><namespace>.<name>`. Unambiguous because a namespace never
/// contains a `.`; stable across restarts, so registering again never duplicates a job.
pub fn job_id(prefix: &str, key: &PodKey) -> String {
    format!("{prefix}{}.{}", key.namespace(), key.name())
}

/// Translates `spec` into the Nomad job to register.
///
/// # Errors
/// [`Unsupported`] naming the field when the chosen driver is not one this adapter can configure
/// (`docker`, `raw_exec`, `exec`), or a container's command is empty for an exec-style driver.
pub fn to_job(spec: &WorkloadSpec, s: &JobSettings) -> Result<Job, Unsupported> {
    let driver = spec.driver.clone().unwrap_or_else(|| s.default_driver.clone());
    let mut reserved = Vec::new();
    let mut dynamic = Vec::new();
    let tasks = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            task(&format!("spec.containers[{i}]"), c, &driver, spec, s, &mut reserved, &mut dynamic)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (job_type, restart, reschedule) = policies(spec.restart_policy);
    let mut meta = BTreeMap::new();
    meta.insert(META_NODE.to_owned(), s.node_name.clone());
    meta.insert(META_NAMESPACE.to_owned(), spec.key.namespace().to_owned());
    meta.insert(META_POD.to_owned(), spec.key.name().to_owned());
    meta.insert(META_UID.to_owned(), spec.uid.clone());
    meta.insert(META_MANAGED_BY.to_owned(), "virtual-kubelet".to_owned());
    let id = job_id(&s.prefix, &spec.key);
    Ok(Job {
        id: id.clone(),
        name: id,
        type_: job_type.to_owned(),
        namespace: s.namespace.clone(),
        region: s.region.clone(),
        datacenters: s.datacenters.clone(),
        meta,
        task_groups: vec![TaskGroup {
            name: GROUP.to_owned(),
            count: 1,
            tasks,
            restart_policy: Some(restart),
            reschedule_policy: Some(reschedule),
            networks: vec![Network {
                mode: "host".into(),
                reserved_ports: reserved,
                dynamic_ports: dynamic,
                ..Network::default()
            }],
            meta: BTreeMap::new(),
        }],
        ..Job::default()
    })
}

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Job type, restart and reschedule policies giving Kubernetes' `restartPolicy` semantics. The
/// in-place restart delay approximates the kubelet's crash-loop back-off (10 s, doubling to 5 min).
fn policies(p: RestartPolicy) -> (&'static str, NomadRestart, ReschedulePolicy) {
    let min = Duration::from_secs(60);
    let no_reschedule = ReschedulePolicy {
        attempts: 0,
        interval: ns(24 * 60 * min),
        delay: ns(Duration::from_secs(5)),
        delay_function: "constant".into(),
        max_delay: 0,
        unlimited: false,
    };
    let restart_in_place = NomadRestart {
        attempts: 10,
        interval: ns(5 * min),
        delay: ns(Duration::from_secs(10)),
        mode: "delay".into(),
    };
    match p {
        RestartPolicy::Always => (
            "service",
            restart_in_place,
            ReschedulePolicy {
                attempts: 0,
                interval: 0,
                delay: ns(Duration::from_secs(30)),
                delay_function: "exponential".into(),
                max_delay: ns(60 * min),
                unlimited: true,
            },
        ),
        RestartPolicy::OnFailure => ("batch", restart_in_place, no_reschedule),
        RestartPolicy::Never => (
            "batch",
            NomadRestart {
                attempts: 0,
                interval: ns(24 * 60 * min),
                delay: ns(Duration::from_secs(15)),
                mode: "fail".into(),
            },
            no_reschedule,
        ),
    }
}

fn port_label(container: &str, name: Option<&str>, port: u16) -> String {
    let raw = match name {
        Some(n) => format!("{container}_{n}"),
        None => format!("{container}_{port}"),
    };
    raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

fn task(
    field: &str,
    c: &ContainerSpec,
    driver: &str,
    spec: &WorkloadSpec,
    s: &JobSettings,
    reserved: &mut Vec<Port>,
    dynamic: &mut Vec<Port>,
) -> Result<Task, Unsupported> {
    let mut config = Map::new();
    let mut labels = Vec::new();
    for p in &c.ports {
        let label = port_label(&c.name, p.name.as_deref(), p.container_port);
        let to = i32::from(p.container_port);
        match (driver, p.host_port) {
            (_, Some(h)) => reserved.push(Port { label: label.clone(), value: i32::from(h), to }),
            // The process of an exec-style driver binds the container port itself, in the host's
            // network: reserve it so the scheduler knows.
            ("raw_exec" | "exec", None) => {
                reserved.push(Port { label: label.clone(), value: to, to })
            }
            _ => dynamic.push(Port { label: label.clone(), value: 0, to }),
        }
        labels.push(Value::String(label));
    }
    match driver {
        "docker" => {
            config.insert("image".into(), json!(c.image));
            if !c.command.is_empty() {
                config.insert("entrypoint".into(), json!(c.command));
            }
            if !c.args.is_empty() {
                config.insert("args".into(), json!(c.args));
            }
            if let Some(w) = &c.working_dir {
                config.insert("work_dir".into(), json!(w));
            }
            if !labels.is_empty() {
                config.insert("ports".into(), Value::Array(labels));
            }
        }
        "raw_exec" | "exec" => {
            let mut argv = c.command.iter().chain(c.args.iter());
            let command = argv.next().ok_or_else(|| {
                Unsupported::new(
                    format!("{field}.command"),
                    format!("the {driver} driver needs a command"),
                )
            })?;
            config.insert("command".into(), json!(command));
            let args: Vec<&String> = argv.collect();
            if !args.is_empty() {
                config.insert("args".into(), json!(args));
            }
            if let Some(w) = &c.working_dir {
                config.insert("work_dir".into(), json!(w));
            }
        }
        other => {
            return Err(Unsupported::new(
                "metadata.annotations",
                format!(
                    "Nomad task driver {other:?} is not supported (docker, raw_exec, exec are)"
                ),
            ));
        }
    }
    let r = &c.resources;
    let cpu_millis = r.cpu_request_millis.or(r.cpu_limit_millis);
    let mem_bytes = r.memory_request_bytes.or(r.memory_limit_bytes);
    let mib = |b: u64| i64::try_from(b.div_ceil(1 << 20).max(10)).unwrap_or(i64::MAX);
    let memory_mb = mem_bytes.map(mib);
    let memory_max_mb =
        r.memory_limit_bytes.map(mib).filter(|max| memory_mb.is_some_and(|m| *max > m));
    Ok(Task {
        name: c.name.clone(),
        driver: driver.to_owned(),
        config,
        env: c.env.iter().cloned().collect(),
        resources: Resources {
            cpu: cpu_millis.map(|m| {
                i64::try_from((m * s.mhz_per_core).div_ceil(1000).max(1)).unwrap_or(i64::MAX)
            }),
            memory_mb,
            memory_max_mb,
        },
        kill_timeout: ns(spec.termination_grace),
        kill_signal: "SIGTERM".into(),
        meta: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use vk_domain::workload::{PortSpec, Resources as Res};

    use super::*;

    fn settings() -> JobSettings {
        JobSettings {
            prefix: "k8s-".into(),
            node_name: "vk".into(),
            namespace: None,
            region: None,
            datacenters: vec!["*".into()],
            default_driver: "docker".into(),
            mhz_per_core: 2000,
        }
    }

    fn spec(restart: RestartPolicy, driver: Option<&str>) -> WorkloadSpec {
        WorkloadSpec {
            key: PodKey::new("team-a", "web").unwrap(),
            uid: "uid-1".into(),
            restart_policy: restart,
            termination_grace: Duration::from_secs(7),
            driver: driver.map(str::to_owned),
            containers: vec![ContainerSpec {
                name: "main".into(),
                image: "nginx:1".into(),
                command: vec!["nginx".into()],
                args: vec!["-g".into(), "daemon off;".into()],
                working_dir: Some("/srv".into()),
                env: vec![("A".into(), "1".into()), ("A".into(), "2".into())],
                ports: vec![PortSpec {
                    name: Some("http".into()),
                    container_port: 80,
                    host_port: None,
                    protocol: "TCP".into(),
                }],
                resources: Res {
                    cpu_request_millis: Some(250),
                    cpu_limit_millis: Some(1000),
                    memory_request_bytes: Some(64 << 20),
                    memory_limit_bytes: Some(128 << 20),
                },
            }],
        }
    }

    #[test]
    fn ids_are_unique_across_namespaces() {
        let a = job_id("k8s-", &PodKey::new("a", "web").unwrap());
        let b = job_id("k8s-", &PodKey::new("b", "web").unwrap());
        assert_eq!(a, "k8s-a.web");
        assert_ne!(a, b);
        // `a.b` + `c` vs `a` + `b.c` cannot collide: namespaces have no dots.
        assert_eq!(job_id("", &PodKey::new("a", "b.c").unwrap()), "a.b.c");
    }

    #[test]
    fn docker_job_carries_the_pod() {
        let job = to_job(&spec(RestartPolicy::Always, None), &settings()).unwrap();
        assert_eq!(job.id, "k8s-team-a.web");
        assert_eq!(job.type_, "service");
        assert_eq!(job.meta[META_NODE], "vk");
        assert_eq!(job.meta[META_UID], "uid-1");
        assert_eq!(
            (job.meta[META_NAMESPACE].as_str(), job.meta[META_POD].as_str()),
            ("team-a", "web")
        );
        let g = &job.task_groups[0];
        assert_eq!(g.count, 1);
        let t = &g.tasks[0];
        assert_eq!(t.driver, "docker");
        assert_eq!(t.config["image"], json!("nginx:1"));
        assert_eq!(t.config["entrypoint"], json!(["nginx"]));
        assert_eq!(t.config["args"], json!(["-g", "daemon off;"]));
        assert_eq!(t.config["work_dir"], json!("/srv"));
        assert_eq!(t.config["ports"], json!(["main_http"]));
        assert_eq!(t.env["A"], "2", "later env entries win");
        assert_eq!(t.resources.cpu, Some(500), "250m at 2000 MHz per core");
        assert_eq!((t.resources.memory_mb, t.resources.memory_max_mb), (Some(64), Some(128)));
        assert_eq!(t.kill_timeout, 7_000_000_000);
        assert_eq!(
            g.networks[0].dynamic_ports,
            vec![Port { label: "main_http".into(), value: 0, to: 80 }]
        );
    }

    #[test]
    fn raw_exec_runs_command_and_args() {
        let job = to_job(&spec(RestartPolicy::Never, Some("raw_exec")), &settings()).unwrap();
        let t = &job.task_groups[0].tasks[0];
        assert_eq!(t.config["command"], json!("nginx"));
        assert_eq!(t.config["args"], json!(["-g", "daemon off;"]));
        assert!(!t.config.contains_key("image"));
        assert_eq!(job.task_groups[0].networks[0].reserved_ports[0].value, 80);
    }

    #[test]
    fn restart_policies_map_to_job_types() {
        let cases = [
            (RestartPolicy::Always, "service", "delay", true),
            (RestartPolicy::OnFailure, "batch", "delay", false),
            (RestartPolicy::Never, "batch", "fail", false),
        ];
        for (p, ty, mode, unlimited) in cases {
            let job = to_job(&spec(p, None), &settings()).unwrap();
            let g = &job.task_groups[0];
            assert_eq!(job.type_, ty, "{p:?}");
            assert_eq!(g.restart_policy.as_ref().unwrap().mode, mode, "{p:?}");
            assert_eq!(g.reschedule_policy.as_ref().unwrap().unlimited, unlimited, "{p:?}");
        }
        let never = to_job(&spec(RestartPolicy::Never, None), &settings()).unwrap();
        assert_eq!(never.task_groups[0].restart_policy.as_ref().unwrap().attempts, 0);
        assert_eq!(never.task_groups[0].reschedule_policy.as_ref().unwrap().attempts, 0);
    }

    #[test]
    fn unknown_drivers_and_empty_commands_are_refused() {
        let err = to_job(&spec(RestartPolicy::Always, Some("qemu")), &settings()).unwrap_err();
        assert!(err.reason.contains("\"qemu\""), "{err}");
        let mut s = spec(RestartPolicy::Always, Some("raw_exec"));
        s.containers[0].command.clear();
        s.containers[0].args.clear();
        let err = to_job(&s, &settings()).unwrap_err();
        assert_eq!(err.field, "spec.containers[0].command");
    }
}
