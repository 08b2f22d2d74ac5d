//! Pod to Nomad job: a pure translation of a checked [`WorkloadSpec`] into the job registered and
//! the Nomad Variable that carries the pod's data.
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
//! - Init containers are `prestart` tasks, native sidecars `prestart` sidecar tasks (restarted
//!   whatever the pod's policy). Nomad starts all prestart tasks at once, so every init container
//!   after the first holds on a template reading its own gate variable
//!   ([`gate_path`]) until the virtual kubelet writes it, once the init container before it has
//!   completed (or, for a sidecar, started).
//! - Data: the pod's ConfigMap, Secret, downward API and token files, and every environment
//!   value that holds Secret data, live in one Nomad Variable ([`variable_path`], readable only by
//!   the job's own tasks through their workload identity) and reach the task through templates
//!   with `change_mode = "noop"`: files follow the Variable while the task runs, and environment
//!   is read once at start. No Secret byte is written into the job.
//! - Volumes live in the allocation's shared directory, `alloc/volumes/<volume>/`; docker binds
//!   them at each `mountPath` (`subPath` and `readOnly` honoured); raw_exec and exec tasks, which
//!   have no mount namespace of their own here, find them under `$NOMAD_ALLOC_DIR/volumes/`.
//!
//! Submodules, one concern each: `placement` (what the annotations choose, against the
//! policy), `driver` (the task drivers and what each can do), `task` (a container as a task)
//! with `docker`, `security` and `resources` (the driver's configuration), `templates`
//! (environment and volume files from the Variable, gates), `volumes` (where volumes live),
//! `internal` (the virtual kubelet's own prestart tasks), `network` (network modes, reserved
//! ports), `restart` (restart and reschedule policies), `interpolate` (driver strings as HCL
//! templates), `id` (job IDs and Variable paths).

mod docker;
mod driver;
mod id;
mod internal;
pub(crate) mod interpolate;
mod network;
mod placement;
mod resources;
mod restart;
mod security;
mod task;
mod templates;
mod volumes;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use vk_domain::error::Unsupported;
use vk_domain::pod::RestartPolicy;
use vk_domain::workload::WorkloadSpec;

pub use self::docker::{REGISTRY_PASSWORD, REGISTRY_USERNAME, TERMINATION_LOG};
pub use self::driver::Driver;
pub use self::id::{
    JobRef, MAX_JOB_ID, gate_path, job_id, legacy_job_id, valid_prefix, variable_path,
};
pub use self::internal::{FILES_READY, FILES_TASK, VOLUMES_TASK, bundle_key, is_internal_task};
pub use self::interpolate::{Piece, hcl_template, hcl_text};
pub use self::network::{own_address, valid_network_mode};
use self::placement::placement;
pub use self::placement::{
    ANN_DATACENTERS, ANN_DRIVER, ANN_NAMESPACE, ANN_NETWORK_MODE, ANN_NODE_POOL, ANN_PRIORITY,
    ANN_REGION, valid_datacenter, valid_node_pool, valid_nomad_name,
};
use self::restart::policies;
use self::templates::gate_template;
pub use self::templates::{SECRET_BLOCK, file_key};
use super::api::{Job, Lifecycle, Network, Port, Task, TaskGroup};
use super::policy::NomadPolicy;

/// Meta key: the Kubernetes node (virtual kubelet) that owns the job.
pub const META_NODE: &str = "k8s_node_name";
/// Meta key: the pod's namespace.
pub const META_NAMESPACE: &str = "k8s_namespace";
/// Meta key: the pod's name.
pub const META_POD: &str = "k8s_pod_name";
/// Meta key: the pod's UID.
pub const META_UID: &str = "k8s_pod_uid";
/// Meta key: the pod's `restartPolicy` (`Always`, `OnFailure`, `Never`).
pub const META_RESTART_POLICY: &str = "k8s_restart_policy";
/// Meta key: always `virtual-kubelet`.
pub const META_MANAGED_BY: &str = "managed_by";
/// Meta key prefix: `k8s_image_<container>` is the image the container was registered with.
pub const META_IMAGE_PREFIX: &str = "k8s_image_";
/// Meta key prefix: `k8s_restarts_<container>` is the restart count the container had in earlier
/// allocations of the pod (an image change replaces the allocation; the count carries on).
pub const META_RESTARTS_PREFIX: &str = "k8s_restarts_";
/// The group's name in every job.
pub const GROUP: &str = "pod";

/// Meta key prefix: `k8s_termination_fallback_<container>` is `true` when the container's
/// `terminationMessagePolicy` is `FallbackToLogsOnError`.
pub const META_TERMINATION_FALLBACK_PREFIX: &str = "k8s_termination_fallback_";

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
    /// Datacenters (`["*"]` for all) when the pod does not name them.
    pub datacenters: Vec<String>,
    /// Node pool of jobs whose pod chooses none by annotation (`--nomad-node-pool`); `None`:
    /// the job names none, and Nomad uses the namespace's default pool.
    pub node_pool: Option<String>,
    /// Task driver when the pod does not choose one.
    pub default_driver: String,
    /// A further annotation choosing the driver, read before [`ANN_DRIVER`] (configuration).
    pub driver_annotation: String,
    /// MHz per CPU core of the Nomad nodes, to convert millicores.
    pub mhz_per_core: u64,
    /// What pods may choose by annotation ([`NomadPolicy`]).
    pub policy: std::sync::Arc<NomadPolicy>,
    /// Directory on the Nomad clients holding `Localhost` seccomp profiles (the kubelet's
    /// `<root-dir>/seccomp`); a pod's `localhostProfile` is a path inside it.
    pub seccomp_profile_root: String,
    /// The image of [`VOLUMES_TASK`] and [`FILES_TASK`] (needs `sh`, `mkdir`, `chgrp`, `chmod`,
    /// `base64`, `cmp`, `grep` and `sleep`, and to run as root: busybox), for docker pods with
    /// emptyDir or API data volumes. `None`: no such tasks; Docker then creates each emptyDir
    /// directory as root, mode 0755 (only root in the pod can write it), and API data volumes
    /// keep the files they had when the pod started, each file updated in place by its
    /// template.
    pub volume_setup_image: Option<String>,
}

/// A pod as Nomad objects: the job, and the items of its Variable. `Debug` shows the items' keys,
/// never their values.
#[derive(Clone, PartialEq)]
pub struct PodJob {
    /// Where the job goes (namespace and region only when the pod's annotations choose them).
    pub at: JobRef,
    /// The job to register.
    pub job: Job,
    /// Items of the Variable at [`variable_path`] (empty: no Variable is needed). Values are the
    /// base64 of file contents (`f_*`) and escaped environment text (`e_*`).
    pub items: BTreeMap<String, String>,
    /// Tasks held until released through [`gate_path`], in start order.
    pub gated: Vec<String>,
}

/// Translates `spec` into the job to register and the items of its Variable.
///
/// # Errors
/// [`Unsupported`] naming the field when the chosen driver is not one this adapter can configure
/// (`docker`, `raw_exec`, `exec`), an annotation is malformed, a container's command is empty for
/// an exec-style driver, or a security setting cannot be given to that driver.
pub fn to_job(spec: &WorkloadSpec, s: &JobSettings) -> Result<PodJob, Unsupported> {
    let place = placement(spec, s)?;
    let id = job_id(&s.prefix, &spec.key);
    let mut b = Builder {
        id: id.clone(),
        driver: place.driver,
        network_mode: place.network_mode.clone(),
        spec,
        settings: s,
        items: BTreeMap::new(),
        reserved: Vec::new(),
        prepared: false,
    };
    let bundles = b.bundle_items();
    b.items.extend(bundles);
    let (tasks, gated) = b.tasks()?;
    let (job_type, restart, reschedule) = policies(spec.restart_policy);
    let job = Job {
        id: id.clone(),
        name: id,
        type_: job_type.to_owned(),
        namespace: place.namespace.clone().or_else(|| s.namespace.clone()),
        region: place.region.clone().or_else(|| s.region.clone()),
        datacenters: place.datacenters,
        node_pool: place.node_pool,
        priority: place.priority,
        meta: meta(spec, s),
        task_groups: vec![TaskGroup {
            name: GROUP.to_owned(),
            count: 1,
            tasks,
            restart_policy: Some(restart),
            reschedule_policy: Some(reschedule),
            networks: vec![Network {
                mode: place.network_mode,
                reserved_ports: b.reserved,
                ..Network::default()
            }],
            meta: BTreeMap::new(),
        }],
        ..Job::default()
    };
    within_nomad_limits(&job.id, &b.items, &gated)?;
    let at = JobRef { id: job.id.clone(), namespace: place.namespace, region: place.region };
    Ok(PodJob { at, job, items: b.items, gated })
}

/// The job's Meta: the node that owns it, the pod (namespace, name, UID, `restartPolicy`), and
/// each container's image and termination message policy.
fn meta(spec: &WorkloadSpec, s: &JobSettings) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::new();
    meta.insert(META_NODE.to_owned(), s.node_name.clone());
    meta.insert(META_NAMESPACE.to_owned(), spec.key.namespace().to_owned());
    meta.insert(META_POD.to_owned(), spec.key.name().to_owned());
    meta.insert(META_UID.to_owned(), spec.uid.clone());
    meta.insert(META_MANAGED_BY.to_owned(), "virtual-kubelet".to_owned());
    let policy = match spec.restart_policy {
        RestartPolicy::Always => "Always",
        RestartPolicy::OnFailure => "OnFailure",
        RestartPolicy::Never => "Never",
    };
    meta.insert(META_RESTART_POLICY.to_owned(), policy.to_owned());
    for c in spec.all_containers() {
        meta.insert(format!("{META_IMAGE_PREFIX}{}", c.name), c.image.clone());
        if c.termination_fallback_to_logs {
            meta.insert(format!("{META_TERMINATION_FALLBACK_PREFIX}{}", c.name), "true".into());
        }
        if let Some(i) = c.interactive {
            let mode = if i.stdin_once { "once" } else { "open" };
            meta.insert(
                format!("{}{}", crate::interactive::META_STDIN_PREFIX, c.name),
                mode.into(),
            );
        }
    }
    meta
}

/// Refuses what Nomad would refuse later: a Variable over [`MAX_VARIABLE_BYTES`], a gate path
/// ([`gate_path`]) over Nomad's 128 characters.
fn within_nomad_limits(
    job_id: &str,
    items: &BTreeMap<String, String>,
    gated: &[String],
) -> Result<(), Unsupported> {
    let size: usize = items.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_VARIABLE_BYTES {
        return Err(Unsupported::new(
            "spec.volumes",
            format!(
                "the pod's ConfigMap, Secret, downward API and token data take {size} bytes once encoded; a Nomad Variable holds at most {MAX_VARIABLE_BYTES}"
            ),
        ));
    }
    for g in gated {
        let path = gate_path(job_id, g);
        if path.len() > 128 {
            return Err(Unsupported::new(
                "spec.initContainers",
                format!(
                    "init container name {g:?} is too long for its Nomad Variable path {path:?} (128 characters at most)"
                ),
            ));
        }
    }
    Ok(())
}

/// Nomad's limit on one Variable: keys and values together, in bytes.
pub const MAX_VARIABLE_BYTES: usize = 65536;

/// The items of the pod's Variable alone, for refreshing a running pod's files: the same as
/// [`to_job`] computes.
///
/// # Errors
/// As [`to_job`].
pub fn variable_items(
    spec: &WorkloadSpec,
    s: &JobSettings,
) -> Result<BTreeMap<String, String>, Unsupported> {
    Ok(to_job(spec, s)?.items)
}

impl std::fmt::Debug for PodJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodJob")
            .field("at", &self.at)
            .field("job", &self.job)
            .field("items", &super::api::RedactedItems(&self.items))
            .field("gated", &self.gated)
            .finish()
    }
}

/// The translation of one pod under way: what the tasks share, and what they add to the job
/// (the Variable's items, the reserved ports).
struct Builder<'a> {
    id: String,
    driver: Driver,
    /// The group's network mode.
    network_mode: String,
    spec: &'a WorkloadSpec,
    settings: &'a JobSettings,
    items: BTreeMap<String, String>,
    reserved: Vec<Port>,
    /// The job has [`VOLUMES_TASK`]: it makes the emptyDir directories, and the first init
    /// container waits for it.
    prepared: bool,
}

impl Builder<'_> {
    /// The group's tasks in start order: the virtual kubelet's own ([`VOLUMES_TASK`],
    /// [`FILES_TASK`]), the init containers as `prestart` tasks (native sidecars as `prestart`
    /// sidecars), then the containers; and the tasks held by a gate, in start order.
    ///
    /// # Errors
    /// As [`Builder::task`].
    fn tasks(&mut self) -> Result<(Vec<Task>, Vec<String>), Unsupported> {
        let spec = self.spec;
        let mut tasks = Vec::new();
        let mut gated = Vec::new();
        if let Some(t) = self.volumes_task() {
            tasks.push(t);
            self.prepared = true;
        }
        tasks.extend(self.files_task());
        for (i, c) in spec.init_containers.iter().enumerate() {
            let mut t = self.task(&format!("spec.initContainers[{i}]"), c)?;
            t.lifecycle = Some(Lifecycle { hook: "prestart".into(), sidecar: c.sidecar });
            if c.sidecar {
                // A native sidecar restarts whatever the pod's restartPolicy.
                t.restart_policy = Some(policies(RestartPolicy::Always).1);
            }
            // Prestart tasks start together: the first init container waits for the volumes task
            // too, which the virtual kubelet learns has completed from the allocation.
            if i > 0 || self.prepared {
                t.templates.push(gate_template(&self.id, &c.name));
                gated.push(c.name.clone());
            }
            tasks.push(t);
        }
        // A sidecar with a startup probe: the app containers wait until it succeeded (Nomad starts
        // them once the prestart tasks merely run), released as the init containers are
        // (`vk_domain::reconcile::held_containers_to_start`).
        let hold_app = spec.init_containers.iter().any(|c| c.sidecar && c.startup.is_some());
        for (i, c) in spec.containers.iter().enumerate() {
            let mut t = self.task(&format!("spec.containers[{i}]"), c)?;
            if hold_app {
                t.templates.push(gate_template(&self.id, &c.name));
                gated.push(c.name.clone());
            }
            tasks.push(t);
        }
        Ok((tasks, gated))
    }
}
