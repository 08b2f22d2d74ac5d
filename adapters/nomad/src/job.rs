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

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use vk_domain::env::{EnvVar, Segment, Value as EnvValue};
use vk_domain::error::Unsupported;
use vk_domain::pod::{PodKey, RestartPolicy};
use vk_domain::security::{Profile, Security};
use vk_domain::volume::{Source, Volume};
use vk_domain::workload::{ContainerSpec, WorkloadSpec};

use super::api::{
    Job, Lifecycle, Network, Port, ReschedulePolicy, Resources, RestartPolicy as NomadRestart,
    Secret, Task, TaskGroup, Template,
};
use super::policy::{Check, NomadPolicy, Own};

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

/// Where, in its task directory, a docker task's termination message file lives: an empty file
/// made by a template before the task starts, bound at the container's
/// `terminationMessagePath`, read once the container has terminated.
pub const TERMINATION_LOG: &str = "local/vk-termination-log";

/// The task that prepares a docker pod's volumes before any container starts, as the kubelet
/// does: the emptyDir directories (`pkg/volume/emptydir`: mode 0777; with `fsGroup`, owned by
/// that group with the set-group-ID bit, so new files get the group) and the hostAliases of
/// `/etc/hosts`, and it ends only once [`FILES_TASK`] has written the bundled volumes' files
/// ([`FILES_READY`]): a `prestart` task of [`JobSettings::volume_setup_image`] running `mkdir`,
/// `chgrp` and `chmod` on paths the virtual kubelet names. Nomad starts the main tasks once it
/// has ended, and the virtual kubelet releases the first init container then. It is not a
/// container of the pod: the pod's status never shows it. The underscore keeps it apart from
/// every container name (DNS labels).
pub const VOLUMES_TASK: &str = "vk_volumes";

/// The file [`FILES_TASK`] makes in the allocation's shared directory once it has written every
/// bundled volume for the first time; [`VOLUMES_TASK`] waits for it (60 s at most, then fails
/// and is retried, its message the pod's). It holds nothing.
pub const FILES_READY: &str = "/alloc/vk-files-ready";

/// The script [`VOLUMES_TASK`] runs under `sh -c`: `$1` the mode, `$2` the group (`-`: none),
/// then the directories. Nothing of the pod is in the script; its arguments are the mode, the
/// `fsGroup` number and paths made of volume names (DNS labels). With `VK_WAIT_FILES` it ends
/// once [`FILES_READY`] exists.
///
/// With `VK_HOST_ALIASES` (the pod's hostAliases, a line each) it also writes the kubelet's
/// `/etc/hosts` (`managedHostsFileContent`): Nomad's file for a group network is the
/// allocation's `hosts`, written by Nomad only when missing and bound into every task, this one
/// first; the pod's own line (address and host name) is kept from Nomad's.
const VOLUMES_SCRIPT: &str = r#"set -e; mode=$1; group=$2; shift 2
if [ $# -gt 0 ]; then mkdir -p "$@"; [ "$group" = - ] || chgrp "$group" "$@"; chmod "$mode" "$@"; fi
if [ -n "$VK_HOST_ALIASES" ]; then
  self=$(sed -n '/^# this entry is the IP address/,/^[^#]/{/^[^#]/{s/ /\t/;p;};}' /etc/hosts)
  printf '# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n%s\n\n# Entries added by HostAliases.\n%s' "$self" "$VK_HOST_ALIASES" > /etc/hosts
fi
if [ -n "$VK_WAIT_FILES" ]; then
  n=0
  until [ -e /alloc/vk-files-ready ]; do
    n=$((n+1))
    [ $n -le 600 ] || { echo "the files task (vk_files) has not written the pod's volume files in 60 s" >&2; exit 1; }
    sleep 0.1
  done
fi"#;

/// The task that keeps the files of the pod's API data volumes as the kubelet keeps them on
/// docker: a prestart sidecar over [`JobSettings::volume_setup_image`] that renders each bundled
/// volume's bundle (one Variable item, [`bundle_key`]) and, when it changes, writes the files
/// that are new or changed and removes those that are gone, so files appear when their
/// ConfigMap, Secret (or key) does. Volumes without Secret data are written into the
/// allocation's shared directory; those with Secret data (a Secret read whole or optional) into
/// this task's own in-memory `secrets/` (a tmpfs Nomad mounts), which the containers bind
/// read-only, so no Secret byte reaches the node's disk. Its first write is done before any
/// container starts ([`FILES_READY`], [`VOLUMES_TASK`]). Like the volumes task, it is not a
/// container of the pod.
pub const FILES_TASK: &str = "vk_files";

/// Whether Nomad task `name` is one of the virtual kubelet's own ([`VOLUMES_TASK`],
/// [`FILES_TASK`]), never a container of the pod: container names are DNS labels, without `_`.
pub fn is_internal_task(name: &str) -> bool {
    name == VOLUMES_TASK || name == FILES_TASK
}

/// Shell function of [`FILES_TASK`]: `unpack <volume>` writes the bundle rendered at
/// `/local/vk-bundle/<volume>` (records `<mode>,<base64 path>,<base64 data>` separated by `;`)
/// into `/alloc/volumes/<volume>`, each file through a rename, group `$VK_FS_GROUP` when set,
/// and removes the files of the previous bundle (listed in `..vk-files`) that are gone.
/// `unpack <volume> secret` does the same from `/secrets/vk-bundle/<volume>` into
/// `/secrets/vk-volumes/<volume>`, all in the task's in-memory `secrets/`. Nothing is done while
/// the bundle is the one last written.
const UNPACK_FN: &str = r#"set -f
unpack() {
  if [ "$2" = secret ]; then
    b=/secrets/vk-bundle/$1; d=/secrets/vk-volumes/$1; s=/secrets/vk-state/$1
  else
    b=/local/vk-bundle/$1; d=/alloc/volumes/$1; s=/local/vk-state/$1
  fi
  [ -f "$b" ] || return 0
  if [ -f "$s" ] && cmp -s "$b" "$s"; then return 0; fi
  mkdir -p "$d" "${s%/*}"
  : > "$s.list"
  IFS=';'
  for rec in $(cat "$b"); do
    IFS=','; set -- $rec; IFS=';'
    [ -n "$2" ] || continue
    p=$(printf %s "$2" | base64 -d)
    case "$p" in */*) mkdir -p "$d/${p%/*}";; esac
    printf %s "$3" | base64 -d > "$d/..vk-tmp"
    chmod "$1" "$d/..vk-tmp"
    [ -z "$VK_FS_GROUP" ] || chgrp "$VK_FS_GROUP" "$d/..vk-tmp"
    mv -f "$d/..vk-tmp" "$d/$p"
    printf '%s\n' "$p" >> "$s.list"
  done
  IFS=' '
  if [ -f "$d/..vk-files" ]; then
    while read -r p; do grep -qxF -- "$p" "$s.list" || rm -f "$d/$p"; done < "$d/..vk-files"
  fi
  cp "$s.list" "$d/..vk-files"; cp "$b" "$s"
}"#;

/// The loop of [`FILES_TASK`]: each second, `unpack` each volume of `$VK_BUNDLES` and of
/// `$VK_SECRET_BUNDLES`, [`FILES_READY`] after the first round; a stop signal ends it at once.
const FILES_SCRIPT: &str = r#"trap 'exit 0' TERM INT
while :; do
  for v in $VK_BUNDLES; do unpack "$v"; done
  for v in $VK_SECRET_BUNDLES; do unpack "$v" secret; done
  [ -e /alloc/vk-files-ready ] || : > /alloc/vk-files-ready
  sleep 1 & wait $!
done"#;

/// Environment variable of [`FILES_TASK`]: the names of the volumes without Secret data whose
/// files come from a bundle, space-separated.
const BUNDLES_ENV: &str = "VK_BUNDLES";

/// Environment variable of [`FILES_TASK`]: as [`BUNDLES_ENV`], the volumes with Secret data.
const SECRET_BUNDLES_ENV: &str = "VK_SECRET_BUNDLES";

/// Environment variable of [`FILES_TASK`]: the pod's `fsGroup`, the group of the bundled
/// volumes' files.
const FS_GROUP_ENV: &str = "VK_FS_GROUP";

/// Environment variable of [`VOLUMES_TASK`]: set when it waits for [`FILES_READY`].
const WAIT_FILES_ENV: &str = "VK_WAIT_FILES";

/// Environment variable of [`VOLUMES_TASK`]: the pod's hostAliases as the kubelet writes them
/// into `/etc/hosts` (`<IP>\t<name>\t<name>\n` each).
const HOST_ALIASES_ENV: &str = "VK_HOST_ALIASES";

/// Environment variable of a docker task holding the user name of its image's registry login
/// (from `imagePullSecrets`), which the driver's `auth` block reads when the task starts. It is
/// also in the container's environment: Nomad has no other way to hand a task's driver a value
/// that is not in the job.
pub const REGISTRY_USERNAME: &str = "VK_REGISTRY_USERNAME";

/// As [`REGISTRY_USERNAME`], the password.
pub const REGISTRY_PASSWORD: &str = "VK_REGISTRY_PASSWORD";

/// Pod annotation: comma-separated Nomad datacenters (upstream virtual-kubelet's name).
pub const ANN_DATACENTERS: &str = "nomad.hashicorp.com/datacenters";
/// Pod annotation: the task driver (`docker`, `raw_exec`, `exec`).
pub const ANN_DRIVER: &str = "nomad.hashicorp.com/driver";
/// Pod annotation: the Nomad node pool.
pub const ANN_NODE_POOL: &str = "nomad.hashicorp.com/node-pool";
/// Pod annotation: the job's priority, 1 to 100.
pub const ANN_PRIORITY: &str = "nomad.hashicorp.com/priority";
/// Pod annotation: the group's network mode: `host`, `bridge`, `none` or `cni/<name>`.
pub const ANN_NETWORK_MODE: &str = "nomad.hashicorp.com/network-mode";
/// Pod annotation: the Nomad namespace the job is registered in.
pub const ANN_NAMESPACE: &str = "nomad.hashicorp.com/namespace";
/// Pod annotation: the Nomad region the job is registered in.
pub const ANN_REGION: &str = "nomad.hashicorp.com/region";

/// Where a job lives: its ID, and its Nomad namespace and region when not the client's own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobRef {
    /// The job ID.
    pub id: String,
    /// The Nomad namespace, when not the client's.
    pub namespace: Option<String>,
    /// The Nomad region, when not the client's.
    pub region: Option<String>,
}

impl JobRef {
    /// A job in the client's namespace and region.
    pub fn local(id: &str) -> Self {
        Self { id: id.to_owned(), namespace: None, region: None }
    }

    /// The workload ID handed to the application: `<job>`, `<job>@<namespace>` or
    /// `<job>@<namespace>@<region>` (`@` occurs in none of them).
    pub fn encode(&self) -> String {
        match (&self.namespace, &self.region) {
            (None, None) => self.id.clone(),
            (Some(n), None) => format!("{}@{n}", self.id),
            (n, Some(r)) => format!("{}@{}@{r}", self.id, n.as_deref().unwrap_or_default()),
        }
    }

    /// Reads back [`JobRef::encode`].
    pub fn parse(s: &str) -> Self {
        let mut parts = s.splitn(3, '@');
        let id = parts.next().unwrap_or_default().to_owned();
        let namespace = parts.next().filter(|n| !n.is_empty()).map(str::to_owned);
        let region = parts.next().filter(|r| !r.is_empty()).map(str::to_owned);
        Self { id, namespace, region }
    }
}

/// Nomad's names for namespaces and regions: letters, digits and `-`, 1 to 128 of them
/// (`structs.validNamespaceName`).
pub fn valid_nomad_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Template delimiters: outside ASCII, so no environment variable name can contain them.
const LEFT: &str = "⟦";
const RIGHT: &str = "⟧";

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

/// The group network mode a pod on `driver` gets when it neither chooses one by annotation nor
/// sets `spec.hostNetwork`: `bridge` for the drivers that can join the allocation's network
/// namespace (`docker`, `exec`), so the pod has an address of its own and its containers share
/// `localhost`, as a Kubernetes pod's do; `host` for `raw_exec`, whose processes run in the
/// host's network namespace whatever the group says.
pub fn default_network_mode(driver: &str) -> &'static str {
    match driver {
        "docker" | "exec" => "bridge",
        _ => "host",
    }
}

/// Whether a group in network mode `m` gives the allocation an address of its own
/// (Nomad's `NetworkStatus.Address`): `bridge` and `cni/<name>`.
pub fn own_address(m: &str) -> bool {
    m == "bridge" || m.starts_with("cni/")
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

/// The longest job ID: `nomad/jobs/<job>/pod/<task>` must fit Nomad's 128-character Variable paths
/// for init containers with names of up to 52 characters.
pub const MAX_JOB_ID: usize = 60;

/// The job ID of a pod: `<prefix><namespace>_<name>` with every `.` of the name written `~`.
///
/// Unambiguous because neither namespaces nor names contain `_` or `~`; stable across restarts, so
/// registering again never duplicates a job; made of the characters Nomad allows in Variable paths
/// (`[A-Za-z0-9_~-]`, no `.`), so that the job's tasks can read the Variable at `nomad/jobs/<job>`
/// through their workload identity. An ID longer than [`MAX_JOB_ID`] keeps its first 26
/// characters, then `-H` and the first 32 hex digits (128 bits) of the SHA-256 of the whole: the
/// upper-case `H` never occurs in a namespace or a name, so a hashed ID never equals the ID of
/// another pod, and two hashed IDs are equal only if SHA-256 collides on 128 bits, which nobody
/// can bring about. (Before, 42 characters and a 64-bit FNV-1a hash were kept: [`legacy_job_id`].
/// FNV is not collision-resistant; two pod names sharing one ID can be computed in a minute.)
pub fn job_id(prefix: &str, key: &PodKey) -> String {
    let raw = raw_job_id(prefix, key);
    if raw.len() <= MAX_JOB_ID {
        return raw;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
    let hex: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-H{hex}", &raw[..MAX_JOB_ID - 34])
}

/// The ID jobs of pods with long names were registered under before [`job_id`] hashed with
/// SHA-256 (the first 42 characters, `-H`, 16 hex digits of FNV-1a): `None` when the ID is not
/// hashed at all. Only looked up, to adopt a job registered by an older version, and then only
/// when the job's Meta names the very pod; never registered.
pub fn legacy_job_id(prefix: &str, key: &PodKey) -> Option<String> {
    let raw = raw_job_id(prefix, key);
    (raw.len() > MAX_JOB_ID).then(|| format!("{}-H{}", &raw[..MAX_JOB_ID - 18], fnv(&[&raw])))
}

fn raw_job_id(prefix: &str, key: &PodKey) -> String {
    format!("{prefix}{}_{}", key.namespace(), key.name().replace('.', "~"))
}

/// Whether `prefix` can start job IDs (the characters of Variable paths, at most 16 of them).
pub fn valid_prefix(prefix: &str) -> bool {
    prefix.len() <= 16
        && prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '~'))
}

/// The Variable holding a pod's data: `nomad/jobs/<job>`, which Nomad lets every task of the job
/// read through its workload identity, and no other job.
pub fn variable_path(job_id: &str) -> String {
    format!("nomad/jobs/{job_id}")
}

/// The gate of a held task: `nomad/jobs/<job>/pod/<task>`, readable by that task only. The task
/// starts once a Variable exists there.
pub fn gate_path(job_id: &str, task: &str) -> String {
    format!("nomad/jobs/{job_id}/{GROUP}/{task}")
}

/// What the pod's annotations choose.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placement {
    namespace: Option<String>,
    region: Option<String>,
    driver: String,
    datacenters: Vec<String>,
    node_pool: Option<String>,
    priority: Option<i32>,
    network_mode: String,
}

/// Reads what the pod's annotations choose, checks each value's syntax, then checks it against
/// the operator's policy for the pod's namespace.
fn placement(spec: &WorkloadSpec, s: &JobSettings) -> Result<Placement, Unsupported> {
    let ann = |k: &str| spec.annotations.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let field = |k: &str| format!("metadata.annotations[{k}]");
    let ns = spec.key.namespace();
    let applicable = s.policy.for_namespace(ns, spec.namespace_labels.as_ref());
    let (driver_key, driver) = match ann(&s.driver_annotation) {
        Some(d) => (s.driver_annotation.as_str(), d),
        None => match ann(ANN_DRIVER) {
            Some(d) => (ANN_DRIVER, d),
            None => ("", s.default_driver.as_str()),
        },
    };
    let check = Check {
        namespace: ns,
        applicable: &applicable,
        own: Own {
            driver: &s.default_driver,
            namespace: s.namespace.as_deref(),
            region: s.region.as_deref(),
            datacenters: &s.datacenters,
            network_mode: default_network_mode(driver),
        },
    };
    if !matches!(driver, "docker" | "raw_exec" | "exec") {
        return Err(Unsupported::new(
            if driver_key.is_empty() {
                "metadata.annotations".to_owned()
            } else {
                field(driver_key)
            },
            format!("Nomad task driver {driver:?} is not supported (docker, raw_exec, exec are)"),
        ));
    }
    if !driver_key.is_empty() {
        check.driver(driver_key, driver)?;
    }
    let datacenters = match ann(ANN_DATACENTERS) {
        None => s.datacenters.clone(),
        Some(v) => {
            let list: Vec<String> =
                v.split(',').map(str::trim).filter(|d| !d.is_empty()).map(str::to_owned).collect();
            if list.is_empty() {
                return Err(Unsupported::new(
                    field(ANN_DATACENTERS),
                    format!("{v:?} names no datacenter"),
                ));
            }
            if let Some(bad) = list.iter().find(|d| !valid_datacenter(d)) {
                return Err(Unsupported::new(
                    field(ANN_DATACENTERS),
                    format!("{bad:?} is not a valid Nomad datacenter name"),
                ));
            }
            check.datacenters(ANN_DATACENTERS, &list)?;
            list
        }
    };
    let node_pool = match ann(ANN_NODE_POOL) {
        None => None,
        Some(p) => {
            if !valid_node_pool(p) {
                return Err(Unsupported::new(
                    field(ANN_NODE_POOL),
                    format!("{p:?} is not a valid Nomad node pool name"),
                ));
            }
            check.node_pool(ANN_NODE_POOL, p)?;
            Some(p.to_owned())
        }
    };
    let priority = match ann(ANN_PRIORITY) {
        None => None,
        Some(p) => {
            let n: i32 = p.parse().map_err(|_| {
                Unsupported::new(field(ANN_PRIORITY), format!("{p:?} is not a number"))
            })?;
            if !(1..=100).contains(&n) {
                return Err(Unsupported::new(
                    field(ANN_PRIORITY),
                    format!("{n} is out of range (1 to 100)"),
                ));
            }
            check.priority(ANN_PRIORITY, n)?;
            Some(n)
        }
    };
    let network_mode = match ann(ANN_NETWORK_MODE) {
        None if spec.host_network => {
            // The host's network is the operator's to give: the default of raw_exec, else
            // granted by --allowed-network-modes (the kubelet's --host-network-sources).
            check.network_mode("spec.hostNetwork".to_owned(), "host")?;
            "host".to_owned()
        }
        None => default_network_mode(driver).to_owned(),
        Some(m) => {
            if !valid_network_mode(m) {
                return Err(Unsupported::new(
                    field(ANN_NETWORK_MODE),
                    format!("network mode {m:?} is not one of host, bridge, none, cni/<name>"),
                ));
            }
            check.network_mode(field(ANN_NETWORK_MODE), m)?;
            m.to_owned()
        }
    };
    let mut location = [None, None];
    for (i, key, what) in [(0, ANN_NAMESPACE, "namespace"), (1, ANN_REGION, "region")] {
        if let Some(v) = ann(key) {
            if !valid_nomad_name(v) {
                return Err(Unsupported::new(
                    field(key),
                    format!("{v:?} is not a valid Nomad {what} name (letters, digits and '-')"),
                ));
            }
            if i == 0 {
                check.namespace(key, v)?;
            } else {
                check.region(key, v)?;
            }
            location[i] = Some(v.to_owned());
        }
    }
    let [namespace, region] = location;
    if spec.host_network && network_mode != "host" {
        return Err(Unsupported::new(
            field(ANN_NETWORK_MODE),
            format!("network mode {network_mode:?} contradicts spec.hostNetwork"),
        ));
    }
    Ok(Placement {
        namespace,
        region,
        driver: driver.to_owned(),
        datacenters,
        node_pool,
        priority,
        network_mode,
    })
}

/// Nomad's group network modes: `host`, `bridge`, `none`, `cni/<name>` (a CNI network name:
/// letters, digits, `.`, `_`, `-`).
pub fn valid_network_mode(m: &str) -> bool {
    matches!(m, "host" | "bridge" | "none")
        || m.strip_prefix("cni/").is_some_and(|n| {
            !n.is_empty()
                && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
}

/// Nomad's node pool names: `^[a-zA-Z0-9-_]{1,128}$` (`structs.validNodePoolName`).
pub fn valid_node_pool(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 128
        && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A Nomad datacenter name or pattern: letters, digits, `-`, `_`, `.` and the wildcard `*`.
pub fn valid_datacenter(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 128
        && d.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*'))
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
        driver: place.driver.clone(),
        network_mode: place.network_mode.clone(),
        spec,
        settings: s,
        items: BTreeMap::new(),
        reserved: Vec::new(),
        prepared: false,
    };
    let mut tasks = Vec::new();
    let mut gated = Vec::new();
    // The bundled volumes' files, one item each: readable fsGroup-wide as the kubelet makes
    // them (mode | 0440) when the pod has an fsGroup.
    let fs_group = spec.all_containers().any(|c| c.security.fs_group.is_some());
    let bundles: Vec<(String, String)> = spec
        .volumes
        .iter()
        .filter(|v| b.bundled(v))
        .filter_map(|v| match &v.source {
            Source::Files(files) => {
                let mode = |m: u32| if fs_group { m | 0o440 } else { m };
                Some((bundle_key(&v.name), bundle(files, mode)))
            }
            Source::EmptyDir { .. } => None,
        })
        .collect();
    b.items.extend(bundles);
    if let Some(t) = b.volumes_task() {
        tasks.push(t);
        b.prepared = true;
    }
    tasks.extend(b.files_task());
    for (i, c) in spec.init_containers.iter().enumerate() {
        let mut t = b.task(&format!("spec.initContainers[{i}]"), c)?;
        t.lifecycle = Some(Lifecycle { hook: "prestart".into(), sidecar: c.sidecar });
        if c.sidecar {
            // A native sidecar restarts whatever the pod's restartPolicy.
            t.restart_policy = Some(policies(RestartPolicy::Always).1);
        }
        // Prestart tasks start together: the first init container waits for the volumes task
        // too, which the virtual kubelet learns has completed from the allocation.
        if i > 0 || b.prepared {
            t.templates.push(gate_template(&id, &c.name));
            gated.push(c.name.clone());
        }
        tasks.push(t);
    }
    // A sidecar with a startup probe: the app containers wait until it succeeded (Nomad starts
    // them once the prestart tasks merely run), released as the init containers are
    // (`vk_domain::reconcile::held_containers_to_start`).
    let hold_app = spec.init_containers.iter().any(|c| c.sidecar && c.startup.is_some());
    for (i, c) in spec.containers.iter().enumerate() {
        let mut t = b.task(&format!("spec.containers[{i}]"), c)?;
        if hold_app {
            t.templates.push(gate_template(&id, &c.name));
            gated.push(c.name.clone());
        }
        tasks.push(t);
    }
    let (job_type, restart, reschedule) = policies(spec.restart_policy);
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
    }
    let job = Job {
        id: id.clone(),
        name: id,
        type_: job_type.to_owned(),
        namespace: place.namespace.clone().or_else(|| s.namespace.clone()),
        region: place.region.clone().or_else(|| s.region.clone()),
        datacenters: place.datacenters,
        node_pool: place.node_pool,
        priority: place.priority,
        meta,
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
    let size: usize = b.items.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_VARIABLE_BYTES {
        return Err(Unsupported::new(
            "spec.volumes",
            format!(
                "the pod's ConfigMap, Secret, downward API and token data take {size} bytes once encoded; a Nomad Variable holds at most {MAX_VARIABLE_BYTES}"
            ),
        ));
    }
    for g in &gated {
        let path = gate_path(&job.id, g);
        if path.len() > 128 {
            return Err(Unsupported::new(
                "spec.initContainers",
                format!(
                    "init container name {g:?} is too long for its Nomad Variable path {path:?} (128 characters at most)"
                ),
            ));
        }
    }
    let at = JobRef { id: job.id.clone(), namespace: place.namespace, region: place.region };
    Ok(PodJob { at, job, items: b.items, gated })
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

/// FNV-1a, 64 bits: short, stable item keys for paths and names of any length.
fn fnv(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            // 0xff never occurs in UTF-8: parts cannot run into each other.
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The name of a task's `secret` block (Nomad 1.11) over the pod's Variable: its items are
/// `${secret.vk.<item>}` in the task's `Env`. Every item of the Variable is therefore a line
/// Nomad's env file parser reads (`go-envparse`): keys of `[A-Za-z0-9_]`, values base64 or JSON
/// strings.
pub const SECRET_BLOCK: &str = "vk";

/// `text` as a JSON string (quoted, escaped), the form of the environment items of a pod's
/// Variable: Nomad's env file parser and the templates' `parseJSON` read it back exactly.
fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// The item key of a volume's bundle ([`FILES_TASK`]).
pub fn bundle_key(volume: &str) -> String {
    format!("b_{}", fnv(&[volume]))
}

/// A volume's files as one bundle ([`UNPACK_FN`]'s records), a line Nomad's env file parser reads
/// (base64, `,` and `;` only). `mode` gives each file's permission bits.
fn bundle(files: &[vk_domain::volume::File], mode: impl Fn(u32) -> u32) -> String {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let records: Vec<String> = files
        .iter()
        .map(|f| format!("{:04o},{},{}", mode(f.mode), b64(f.path.as_bytes()), b64(&f.data)))
        .collect();
    records.join(";")
}

/// The item key of a volume file.
pub fn file_key(volume: &str, path: &str) -> String {
    format!("f_{}", fnv(&[volume, path]))
}

fn gate_template(job: &str, task: &str) -> Template {
    Template {
        embedded_tmpl: format!(
            "{LEFT} with nomadVar {} {RIGHT}{LEFT} end {RIGHT}",
            go_string(&gate_path(job, task))
        ),
        dest_path: "local/.vk-start".into(),
        change_mode: "noop".into(),
        left_delim: LEFT.into(),
        right_delim: RIGHT.into(),
        ..Template::default()
    }
}

/// A Go template string literal.
fn go_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The path of a volume in the allocation's shared directory, relative to a task directory.
fn volume_dir(volume: &str) -> String {
    format!("../alloc/volumes/{volume}")
}

/// The path of a volume holding Secret data (a Secret's files, a token) for a docker task: in the
/// task's own `secrets/` directory, which Nomad mounts as an in-memory tmpfs, so no Secret byte is
/// written to the node's disk. Each task mounting the volume renders its own copy.
fn secret_volume_dir(volume: &str) -> String {
    format!("secrets/vk-volumes/{volume}")
}

/// A piece of one string of a task's driver configuration: text to pass through as is, or a task
/// environment variable for Nomad to interpolate when the task starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Literal text.
    Text(&'a str),
    /// `${NAME}`: the task environment's `NAME` (a name [`is_interpolable`] accepts).
    Var(&'a str),
}

/// One string of a task's driver configuration, written for Nomad, which reads every such string
/// as an HCL2 template when the task starts (`hclutils.ParseHclInterface`: JSON syntax, whose
/// strings are templates). The text is joined first and escaped once, so escapes cannot be split
/// across pieces: `${` becomes `$${` and `%{` becomes `%%{` (HCL's template escapes), and a run of
/// `$` right before a variable, which HCL would read as the escape `$${`, is written as the
/// template expression `${"$$"}`. For any pieces, HCL evaluates the result to the text with each
/// variable's value in its place (property-tested against `hcl-rs`, and end to end on Nomad).
pub fn hcl_template(pieces: &[Piece<'_>]) -> String {
    fn escape(out: &mut String, text: &str) {
        out.push_str(&text.replace("${", "$${").replace("%{", "%%{"));
    }
    let mut out = String::new();
    let mut text = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => text.push_str(t),
            Piece::Var(name) => {
                let kept = text.trim_end_matches('$');
                escape(&mut out, kept);
                let dollars = text.len() - kept.len();
                if dollars > 0 {
                    out.push_str(&format!("${{\"{}\"}}", "$".repeat(dollars)));
                }
                out.push_str(&format!("${{{name}}}"));
                text.clear();
            }
        }
    }
    escape(&mut out, &text);
    out
}

/// Plain text for a string of a task's driver configuration: [`hcl_template`] of the text alone.
pub fn hcl_text(s: &str) -> String {
    hcl_template(&[Piece::Text(s)])
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

struct Builder<'a> {
    id: String,
    driver: String,
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
    /// Whether emptyDir `vol` is, on docker, a tmpfs of the one container mounting it:
    /// `medium: Memory` mounted by a single container that is never started again
    /// (`restartPolicy: Never`, not a sidecar). A Docker tmpfs belongs to one container and goes
    /// with it, while the kubelet's outlives container restarts: a Memory emptyDir shared by
    /// several containers, or of one that restarts, lives in the allocation's directory on disk.
    fn tmpfs(&self, vol: &Volume) -> bool {
        self.driver == "docker"
            && matches!(vol.source, Source::EmptyDir { memory: true, .. })
            && self.single_run_user(&vol.name)
    }

    /// Whether volume `name` is mounted by exactly one container, which is never started again
    /// (`restartPolicy: Never`, not a sidecar). Then `subPath` mounts into an emptyDir are safe
    /// on docker: Docker resolves a bind's source, following symbolic links, each time it creates
    /// the container, so no other container may be able to write the volume before, and this one
    /// may never be created again; [`VOLUMES_TASK`] makes each subPath directory before that
    /// container starts.
    fn single_run_user(&self, name: &str) -> bool {
        let mut users =
            self.spec.all_containers().filter(|c| c.mounts.iter().any(|m| m.volume == name));
        self.spec.restart_policy == RestartPolicy::Never
            && users.next().is_some_and(|c| !c.sidecar)
            && users.next().is_none()
    }

    /// How many of the pod's containers mount volume `name`.
    fn mounted_by(&self, name: &str) -> usize {
        self.spec.all_containers().filter(|c| c.mounts.iter().any(|m| m.volume == name)).count()
    }

    /// Whether the pod's containers share the `/etc/hosts` Nomad writes for a group network
    /// (docker, a network mode other than `host` and `none`), which [`VOLUMES_TASK`] (when an
    /// image is configured for it) rewrites as the kubelet writes it.
    fn shared_hosts_file(&self) -> bool {
        self.driver == "docker"
            && self.settings.volume_setup_image.is_some()
            && !matches!(self.network_mode.as_str(), "host" | "none")
    }

    /// The pod's hostAliases as the kubelet's lines of `/etc/hosts`, when [`VOLUMES_TASK`] writes
    /// them.
    fn host_alias_lines(&self) -> Option<String> {
        if !self.shared_hosts_file() || self.spec.host_aliases.is_empty() {
            return None;
        }
        let lines = self
            .spec
            .host_aliases
            .iter()
            .map(|(ip, names)| format!("{ip}\t{}\n", names.join("\t")));
        Some(lines.collect())
    }

    /// [`VOLUMES_TASK`] when the pod runs on docker, an image is configured for it and some
    /// container mounts an emptyDir that lives in the allocation's directory, or the pod has
    /// hostAliases for the group network's `/etc/hosts`.
    fn volumes_task(&self) -> Option<Task> {
        let image = self.settings.volume_setup_image.as_deref()?;
        if self.driver != "docker" {
            return None;
        }
        let mut dirs: Vec<String> = Vec::new();
        let empty_dirs = self.spec.volumes.iter().filter(|v| {
            matches!(v.source, Source::EmptyDir { .. })
                && self.mounted_by(&v.name) > 0
                && !self.tmpfs(v)
        });
        for v in empty_dirs {
            dirs.push(hcl_text(&format!("/alloc/volumes/{}", v.name)));
            // The subPath directories a container binds (only where that is safe, see
            // `single_run_user`): made here, as the kubelet makes them, so Docker never does.
            let subs = self.spec.all_containers().flat_map(|c| &c.mounts);
            for sub in subs.filter(|m| m.volume == v.name).filter_map(|m| m.sub_path.as_ref()) {
                dirs.push(hcl_text(&format!("/alloc/volumes/{}/{sub}", v.name)));
            }
        }
        let aliases = self.host_alias_lines();
        let wait_files = self.spec.volumes.iter().any(|v| self.bundled(v));
        if dirs.is_empty() && aliases.is_none() && !wait_files {
            return None;
        }
        // fsGroup is a pod-level setting, copied into every container's security context.
        let group = self.spec.all_containers().find_map(|c| c.security.fs_group);
        let mode = if group.is_some() { "2777" } else { "0777" };
        let group = group.map_or_else(|| "-".to_owned(), |g| g.to_string());
        let env = aliases
            .map(|a| (HOST_ALIASES_ENV.to_owned(), a))
            .into_iter()
            .chain(wait_files.then(|| (WAIT_FILES_ENV.to_owned(), "1".to_owned())))
            .collect();
        let script = VOLUMES_SCRIPT.to_owned();
        let mut task = self.internal_task((VOLUMES_TASK, image, script), env, Vec::new(), false);
        task.config.insert(
            "args".into(),
            json!([mode.to_owned(), group].into_iter().chain(dirs).collect::<Vec<_>>()),
        );
        Some(task)
    }

    /// Whether the files of volume `vol` come from its bundle ([`FILES_TASK`]): on docker with a
    /// volume setup image, an API data volume that some container mounts and that reads no
    /// Secret or token, or whose files may come and go ([`Volume::keys_may_change`]: per-file
    /// templates cannot add a file nor remove one). A volume with Secret data and a fixed set of
    /// files (a token, listed `items`) keeps its per-file templates in each task's `secrets/`.
    fn bundled(&self, vol: &Volume) -> bool {
        self.driver == "docker"
            && self.settings.volume_setup_image.is_some()
            && matches!(vol.source, Source::Files(_))
            && (!vol.secret || vol.keys_may_change)
            && self.mounted_by(&vol.name) > 0
    }

    /// The environment ([`BUNDLES_ENV`], [`SECRET_BUNDLES_ENV`], [`FS_GROUP_ENV`]) and the bundle
    /// templates of [`FILES_TASK`]: into its `local/` for volumes without Secret data, into its
    /// in-memory `secrets/` for those with; nothing when no volume is bundled.
    fn bundles(&self) -> (BTreeMap<String, String>, Vec<Template>) {
        let var = go_string(&variable_path(&self.id));
        let bundled: Vec<&Volume> = self.spec.volumes.iter().filter(|v| self.bundled(v)).collect();
        if bundled.is_empty() {
            return (BTreeMap::new(), Vec::new());
        }
        let templates = bundled
            .iter()
            .map(|v| Template {
                embedded_tmpl: format!(
                    "{LEFT} with nomadVar {var} {RIGHT}{LEFT} (index . {}).Value {RIGHT}{LEFT} end {RIGHT}",
                    go_string(&bundle_key(&v.name))
                ),
                dest_path: format!(
                    "{}/vk-bundle/{}",
                    if v.secret { "secrets" } else { "local" },
                    v.name
                ),
                change_mode: "noop".into(),
                perms: "0600".into(),
                left_delim: LEFT.into(),
                right_delim: RIGHT.into(),
                ..Template::default()
            })
            .collect();
        let names = |secret: bool| {
            let names = bundled.iter().filter(|v| v.secret == secret).map(|v| v.name.as_str());
            names.collect::<Vec<_>>().join(" ")
        };
        let mut env = BTreeMap::new();
        for (key, secret) in [(BUNDLES_ENV, false), (SECRET_BUNDLES_ENV, true)] {
            let names = names(secret);
            if !names.is_empty() {
                env.insert(key.to_owned(), names);
            }
        }
        if let Some(g) = self.spec.all_containers().find_map(|c| c.security.fs_group) {
            env.insert(FS_GROUP_ENV.to_owned(), g.to_string());
        }
        (env, templates)
    }

    /// One of the virtual kubelet's own prestart tasks ([`is_internal_task`]) over the volume
    /// setup image running `script`: 10 MHz and 10 MiB, on the group's network (or the host's),
    /// retried in place whatever the pod's restartPolicy, as the kubelet retries a volume it could
    /// not set up (the pod stays pending with the failure as its message).
    fn internal_task(
        &self,
        (name, image, script): (&str, &str, String),
        env: BTreeMap<String, String>,
        templates: Vec<Template>,
        sidecar: bool,
    ) -> Task {
        let mut config = Map::new();
        config.insert("image".into(), json!(hcl_text(image)));
        config.insert("entrypoint".into(), json!(["sh", "-c", hcl_text(&script), name]));
        if matches!(self.network_mode.as_str(), "host" | "none") {
            config.insert("network_mode".into(), json!(self.network_mode));
        }
        Task {
            name: name.to_owned(),
            driver: "docker".to_owned(),
            config,
            env,
            resources: Resources { cpu: Some(10), memory_mb: Some(10), memory_max_mb: None },
            kill_timeout: ns(Duration::from_secs(if sidecar { 2 } else { 5 })),
            kill_signal: "SIGTERM".into(),
            meta: BTreeMap::new(),
            user: String::new(),
            lifecycle: Some(Lifecycle { hook: "prestart".into(), sidecar }),
            templates,
            secrets: Vec::new(),
            restart_policy: Some(policies(RestartPolicy::Always).1),
        }
    }

    /// [`FILES_TASK`] when some volume is bundled.
    fn files_task(&self) -> Option<Task> {
        let image = self.settings.volume_setup_image.as_deref()?;
        let (env, templates) = self.bundles();
        if templates.is_empty() {
            return None;
        }
        let script = format!("{UNPACK_FN}\n{FILES_SCRIPT}");
        Some(self.internal_task((FILES_TASK, image, script), env, templates, true))
    }

    /// Where volume `vol` lives for a task of this pod: for a docker task and a volume with
    /// Secret data, in-memory: [`FILES_TASK`]'s `secrets/` when the volume is bundled, else the
    /// task's own ([`secret_volume_dir`]); else the allocation's shared directory
    /// ([`volume_dir`]).
    fn volume_path(&self, vol: &Volume) -> String {
        let secret = self.driver == "docker"
            && (vol.secret
                || matches!(&vol.source, Source::Files(fs) if fs.iter().any(|f| f.secret)));
        match (secret, self.bundled(vol)) {
            (true, true) => format!("../{FILES_TASK}/{}", secret_volume_dir(&vol.name)),
            (true, false) => secret_volume_dir(&vol.name),
            (false, _) => volume_dir(&vol.name),
        }
    }

    fn task(&mut self, field: &str, c: &ContainerSpec) -> Result<Task, Unsupported> {
        let driver = self.driver.clone();
        let mut config = Map::new();
        for (i, p) in c.ports.iter().enumerate() {
            let label = port_label(&c.name, p.name.as_deref(), p.container_port);
            let to = i32::from(p.container_port);
            if p.protocol == "SCTP" {
                return Err(Unsupported::new(
                    format!("{field}.ports[{i}].protocol"),
                    "SCTP ports cannot be given to Nomad",
                ));
            }
            match (self.network_mode.as_str(), p.host_port) {
                // hostPort: the node's port, mapped to the container port (Nomad's CNI
                // `portmap` in bridge mode).
                (_, Some(h)) => {
                    self.reserved.push(Port { label: label.clone(), value: i32::from(h), to })
                }
                // In the host's network the process binds the container port itself: reserve
                // it so the scheduler knows.
                ("host", None) => self.reserved.push(Port { label: label.clone(), value: to, to }),
                // The pod's own address (bridge, CNI) answers on every container port without
                // a node port; `none` has no port to give.
                _ => {}
            }
        }
        let command = self.args(field, "command", &c.command)?;
        let args = self.args(field, "args", &c.args)?;
        let user = match driver.as_str() {
            "docker" => {
                config.insert("image".into(), json!(hcl_text(&c.image)));
                if c.pull_always {
                    config.insert("force_pull".into(), json!(true));
                }
                // imagePullSecrets: the driver's registry login, read from the task's
                // environment when it starts (rendered from the pod's Variable: the credentials
                // never enter the job).
                if let Some(a) = &c.registry_auth {
                    config.insert(
                        "auth".into(),
                        json!([{
                            "username": hcl_template(&[Piece::Var(REGISTRY_USERNAME)]),
                            "password": hcl_template(&[Piece::Var(REGISTRY_PASSWORD)]),
                            "server_address": hcl_text(&a.server),
                        }]),
                    );
                }
                if !command.is_empty() {
                    config.insert("entrypoint".into(), json!(command));
                }
                if !args.is_empty() {
                    config.insert("args".into(), json!(args));
                }
                if let Some(w) = &c.working_dir {
                    config.insert("work_dir".into(), json!(hcl_text(w)));
                }
                // Bridge and CNI modes: no `network_mode`, so the container joins the
                // allocation's network namespace (Nomad's pause container) with the pod's other
                // containers. Host and none: Docker's own modes of that name (without it a
                // container would get a namespace of its own on docker0).
                if matches!(self.network_mode.as_str(), "host" | "none") {
                    config.insert("network_mode".into(), json!(self.network_mode));
                }
                let mut binds = Vec::new();
                let mut tmpfs = Vec::new();
                for (i, m) in c.mounts.iter().enumerate() {
                    // Docker splits a bind at ':' (source:target:mode).
                    for (name, v) in
                        [("mountPath", Some(&m.mount_path)), ("subPath", m.sub_path.as_ref())]
                    {
                        if let Some(v) = v.filter(|v| v.contains(':')) {
                            return Err(Unsupported::new(
                                format!("{field}.volumeMounts[{i}].{name}"),
                                format!(
                                    "{v:?} contains ':', which the docker driver reads as a separator"
                                ),
                            ));
                        }
                    }
                    let vol = self.spec.volumes.iter().find(|v| v.name == m.volume);
                    // medium: Memory in one container: a tmpfs of the size limit (else the
                    // container's memory limit, as the kubelet sizes it), mode 0777 as the
                    // kubelet leaves it.
                    let memory = vol.filter(|v| self.tmpfs(v)).and_then(|v| match v.source {
                        Source::EmptyDir { size_limit_bytes, .. } => Some((v, size_limit_bytes)),
                        Source::Files(_) => None,
                    });
                    if let Some((v, size_limit_bytes)) = memory {
                        if m.sub_path.is_some() {
                            return Err(Unsupported::new(
                                format!("{field}.volumeMounts[{i}].subPath"),
                                format!(
                                    "emptyDir {:?} is a tmpfs of its own here: a subPath into it cannot be mounted; mount the whole volume",
                                    v.name
                                ),
                            ));
                        }
                        let mut options = json!({"mode": 0o777});
                        if let Some(size) = size_limit_bytes.or(c.resources.memory_limit_bytes) {
                            options["size"] = json!(size);
                        }
                        tmpfs.push(json!({
                            "type": "tmpfs",
                            "target": hcl_text(&m.mount_path),
                            "readonly": m.read_only,
                            "tmpfs_options": [options],
                        }));
                        continue;
                    }
                    let mut host =
                        vol.map_or_else(|| volume_dir(&m.volume), |v| self.volume_path(v));
                    if let Some(sub) = &m.sub_path {
                        // Docker resolves a bind's source when it creates the container and
                        // follows symbolic links: a container of the pod (an init container, a
                        // sidecar, this one before a restart) could make `<volume>/<subPath>` a
                        // link to `/` and get the node's root filesystem mounted (the kubelet's
                        // CVE-2017-1002101). Nomad's check of the source is textual, so a
                        // subPath is only taken into volumes no container can write.
                        if vol.is_some_and(|v| {
                            matches!(v.source, Source::EmptyDir { .. })
                                && !self.single_run_user(&v.name)
                        }) {
                            return Err(Unsupported::new(
                                format!("{field}.volumeMounts[{i}].subPath"),
                                format!(
                                    "{sub:?} into emptyDir {:?} cannot be mounted safely by the docker driver: a container could replace it with a symbolic link, which Docker would follow out of the volume (CVE-2017-1002101); mount the whole volume, or use it from one container of a restartPolicy: Never pod",
                                    m.volume
                                ),
                            ));
                        }
                        host = format!("{host}/{sub}");
                    }
                    // ConfigMap, Secret, downward API and projected volumes are read-only in
                    // the container whatever the mount says, as the kubelet mounts them.
                    let api_data = vol.is_some_and(|v| matches!(v.source, Source::Files(_)));
                    let ro = if m.read_only || api_data { ":ro" } else { "" };
                    binds.push(hcl_text(&format!("{host}:{}{ro}", m.mount_path)));
                }
                // terminationMessagePath: a file of the task's own, bound there (as the kubelet
                // binds a file of its own), writable by any user.
                if let Some(path) = &c.termination_message_path {
                    if path.contains(':') {
                        return Err(Unsupported::new(
                            format!("{field}.terminationMessagePath"),
                            format!(
                                "{path:?} contains ':', which the docker driver reads as a separator"
                            ),
                        ));
                    }
                    binds.push(hcl_text(&format!("{TERMINATION_LOG}:{path}")));
                }
                if !binds.is_empty() {
                    config.insert("volumes".into(), json!(binds));
                }
                if !tmpfs.is_empty() {
                    config.insert("mount".into(), json!(tmpfs));
                }
                // hostAliases: the kubelet's entries of /etc/hosts, written by the volumes task
                // into the group network's file, else Docker's `--add-host`, one per entry with
                // its names tab-separated (Docker writes `<IP>\t<host>`, which gives the
                // kubelet's line; host names are DNS names, without ':' or tabs).
                if !self.spec.host_aliases.is_empty() && !self.shared_hosts_file() {
                    let hosts: Vec<String> = self
                        .spec
                        .host_aliases
                        .iter()
                        .map(|(ip, names)| hcl_text(&format!("{}:{ip}", names.join("\t"))))
                        .collect();
                    config.insert("extra_hosts".into(), json!(hosts));
                }
                docker_security(
                    field,
                    &c.security,
                    &self.settings.seccomp_profile_root,
                    &mut config,
                )?
            }
            "raw_exec" | "exec" => {
                let mut argv = command.into_iter().chain(args);
                let first = argv.next().ok_or_else(|| {
                    Unsupported::new(
                        format!("{field}.command"),
                        format!("the {driver} driver needs a command"),
                    )
                })?;
                config.insert("command".into(), json!(first));
                let rest: Vec<String> = argv.collect();
                if !rest.is_empty() {
                    config.insert("args".into(), json!(rest));
                }
                if let Some(w) = &c.working_dir {
                    config.insert("work_dir".into(), json!(hcl_text(w)));
                }
                if !self.spec.host_aliases.is_empty() {
                    return Err(Unsupported::new(
                        "spec.hostAliases",
                        format!(
                            "the {driver} driver runs the task with the host's /etc/hosts; hostAliases cannot be honoured (the docker driver honours them)"
                        ),
                    ));
                }
                exec_security(field, &driver, &c.security, &mut config)?
            }
            other => {
                return Err(Unsupported::new(
                    "metadata.annotations",
                    format!("Nomad task driver {other:?} is not supported"),
                ));
            }
        };
        let (mut templates, secret_env) = self.templates(field, c)?;
        if driver == "docker" && c.termination_message_path.is_some() {
            // Nomad refuses an empty template: a comment renders the empty file. Rendered again
            // (emptied) each time the task starts, as each container instance gets a new file.
            templates.push(Template {
                embedded_tmpl: "{{/* termination message */}}".into(),
                dest_path: TERMINATION_LOG.into(),
                change_mode: "noop".into(),
                perms: "0666".into(),
                ..Template::default()
            });
        }
        let (mut env, _) = split_env(&c.env);
        let secrets = if secret_env.is_empty() {
            Vec::new()
        } else {
            vec![Secret {
                name: SECRET_BLOCK.into(),
                provider: "nomad".into(),
                path: variable_path(&self.id),
            }]
        };
        env.extend(secret_env);
        let r = &c.resources;
        let (cpu_field, cpu_millis) = match (r.cpu_request_millis, r.cpu_limit_millis) {
            (Some(m), _) => ("requests", Some(m)),
            (None, m) => ("limits", m),
        };
        let mem_bytes = r.memory_request_bytes.or(r.memory_limit_bytes);
        let mib = |b: u64| i64::try_from(b.div_ceil(1 << 20).max(10)).unwrap_or(i64::MAX);
        let memory_mb = mem_bytes.map(mib);
        let mut memory_max_mb =
            r.memory_limit_bytes.map(mib).filter(|max| memory_mb.is_some_and(|m| *max > m));
        if driver == "docker" {
            // The docker driver's own hard limit: `MemoryMB` becomes the reservation
            // (memory.soft_limit_in_bytes) and the limit the cgroup's hard limit, with or without
            // Nomad's memory oversubscription (which `MemoryMaxMB` would need).
            if let Some(max) = memory_max_mb.take() {
                config.insert("memory_hard_limit".into(), json!(max));
            }
        }
        let mhz = self.settings.mhz_per_core;
        let cpu = match cpu_millis {
            None => None,
            Some(m) => Some(
                m.checked_mul(mhz)
                    .map(|v| v.div_ceil(1000).max(1))
                    .and_then(|v| i64::try_from(v).ok())
                    .ok_or_else(|| {
                        Unsupported::new(
                            format!("{field}.resources.{cpu_field}.cpu"),
                            format!(
                                "{m} millicores at {mhz} MHz per core is beyond any Nomad node"
                            ),
                        )
                    })?,
            ),
        };
        // A CPU limit no lower than the request (or without one) is the task's CPU: the docker
        // driver's `cpu_hard_limit` turns it into a CFS quota of that many cores. A limit above
        // the request is not enforced: Nomad has one CPU figure, the request's, which would cap
        // the container there.
        if driver == "docker"
            && r.cpu_limit_millis.is_some()
            && r.cpu_request_millis.is_none_or(|q| Some(q) >= r.cpu_limit_millis)
        {
            config.insert("cpu_hard_limit".into(), json!(true));
        }
        Ok(Task {
            name: c.name.clone(),
            driver,
            config,
            env,
            resources: Resources { cpu, memory_mb, memory_max_mb },
            kill_timeout: ns(self.spec.termination_grace),
            kill_signal: "SIGTERM".into(),
            meta: BTreeMap::new(),
            user,
            lifecycle: None,
            templates,
            secrets,
            restart_policy: None,
        })
    }

    /// A command or argument list: text as is; a `$(VAR)` whose variable is not plain text becomes
    /// Nomad's `${VAR}`, interpolated from the task's environment at start. Each argument is
    /// written once, whole, by [`hcl_template`].
    fn args(&self, field: &str, what: &str, list: &[EnvValue]) -> Result<Vec<String>, Unsupported> {
        list.iter()
            .enumerate()
            .map(|(i, v)| {
                let mut pieces = Vec::new();
                for seg in &v.0 {
                    match seg {
                        Segment::Text(t) => pieces.push(Piece::Text(t)),
                        Segment::EnvRef(name) if is_interpolable(name) => {
                            pieces.push(Piece::Var(name));
                        }
                        Segment::EnvRef(name) => {
                            return Err(Unsupported::new(
                                format!("{field}.{what}[{i}]"),
                                format!("$({name}) refers to a variable Nomad cannot interpolate by name"),
                            ));
                        }
                        // `expand_arg` never inlines these; refuse rather than leak.
                        Segment::Secret(_) | Segment::PodIp | Segment::HostIp => {
                            return Err(Unsupported::new(
                                format!("{field}.{what}[{i}]"),
                                "a Secret or run-time value cannot be written into the job",
                            ));
                        }
                    }
                }
                Ok(hcl_template(&pieces))
            })
            .collect()
    }

    /// The container's templates (environment, volume files), and the variables of its `Env`
    /// that Nomad interpolates from the task's `secret` block ([`SECRET_BLOCK`]).
    fn templates(
        &mut self,
        field: &str,
        c: &ContainerSpec,
    ) -> Result<(Vec<Template>, BTreeMap<String, String>), Unsupported> {
        let mut out = Vec::new();
        let mut secret_env = BTreeMap::new();
        let var = go_string(&variable_path(&self.id));
        // Environment that is not plain text: one env file, read once at start. Each value is
        // `print` of its parts (Variable items holding text and Secret data, the node's address
        // for run-time values) through `toJSON`, which Nomad's env parser reads back exactly.
        // On docker, the registry login of `imagePullSecrets` comes this way too, for the
        // driver's `auth` block to read ([`REGISTRY_USERNAME`], [`REGISTRY_PASSWORD`]).
        let mut env = c.env.clone();
        if let Some(a) = c.registry_auth.as_ref().filter(|_| self.driver == "docker") {
            for (name, v) in [(REGISTRY_USERNAME, &a.username), (REGISTRY_PASSWORD, &a.password)] {
                let value = EnvValue(vec![Segment::Secret(v.clone())]);
                env.push(EnvVar { name: name.to_owned(), value });
            }
        }
        let (_, rendered) = split_env(&env);
        let mut body = String::new();
        let mut uses_var = false;
        for v in rendered {
            // The value's parts: Variable items (text and Secret data, each a JSON string, which
            // Nomad's env parser reads back exactly), or the node's address.
            let mut parts: Vec<Option<String>> = Vec::new();
            let mut run = String::new();
            let mut n = 0;
            let mut flush = |run: &mut String,
                             parts: &mut Vec<Option<String>>,
                             items: &mut BTreeMap<String, String>| {
                if run.is_empty() {
                    return;
                }
                let key = format!("e_{}", fnv(&[&c.name, &v.name, &n.to_string()]));
                n += 1;
                items.insert(key.clone(), json_string(&std::mem::take(run)));
                parts.push(Some(key));
            };
            for seg in &v.value.0 {
                match seg {
                    Segment::Text(t) | Segment::Secret(t) => run.push_str(t),
                    Segment::PodIp | Segment::HostIp => {
                        flush(&mut run, &mut parts, &mut self.items);
                        parts.push(None);
                    }
                    Segment::EnvRef(name) => {
                        return Err(Unsupported::new(
                            format!("{field}.env"),
                            format!("unexpected reference to {name} in an environment value"),
                        ));
                    }
                }
            }
            flush(&mut run, &mut parts, &mut self.items);
            if !is_interpolable(&v.name) {
                // Nomad's env file parser refuses such a name (`data-1`): the value is the task's
                // `Env`, interpolated by Nomad from its `secret` block over the pod's Variable
                // (`${secret.vk.<item>}`) and the node's attributes, once, at start.
                let value: String = parts
                    .iter()
                    .map(|p| match p {
                        Some(key) => format!("${{secret.{SECRET_BLOCK}.{key}}}"),
                        None => "${attr.unique.network.ip-address}".into(),
                    })
                    .collect();
                secret_env.insert(v.name.clone(), value);
                continue;
            }
            uses_var |= parts.iter().any(Option::is_some);
            let mut text: Vec<String> = parts
                .iter()
                .map(|p| match p {
                    Some(key) => format!("((index . {}).Value | parseJSON)", go_string(key)),
                    None => "(env \"attr.unique.network.ip-address\")".into(),
                })
                .collect();
            if text.is_empty() {
                text.push("\"\"".into());
            }
            body.push_str(&format!(
                "{}={LEFT} print {} | toJSON {RIGHT}\n",
                v.name,
                text.join(" ")
            ));
        }
        if !body.is_empty() {
            if uses_var {
                body = format!("{LEFT} with nomadVar {var} {RIGHT}\n{body}{LEFT} end {RIGHT}\n");
            }
            out.push(Template {
                embedded_tmpl: body,
                dest_path: "secrets/vk-env".into(),
                change_mode: "noop".into(),
                perms: "0600".into(),
                envvars: true,
                left_delim: LEFT.into(),
                right_delim: RIGHT.into(),
                ..Template::default()
            });
        }
        // Volume files, rendered by every task mounting the volume into the allocation's shared
        // directory (identical content, written atomically, so concurrent renders agree), or,
        // for a docker task and a volume with Secret data, into the task's own secrets/.
        let mut seen = BTreeSet::new();
        for m in &c.mounts {
            if !seen.insert(m.volume.clone()) {
                continue;
            }
            let Some(vol) = self.spec.volumes.iter().find(|v| v.name == m.volume) else {
                return Err(Unsupported::new(
                    format!("{field}.volumeMounts"),
                    format!("no volume {:?}", m.volume),
                ));
            };
            match &vol.source {
                // Made by the volumes task, or a tmpfs of this container's own.
                Source::EmptyDir { .. } if self.prepared || self.tmpfs(vol) => {}
                // Nomad refuses an empty template: a comment renders the empty marker file that
                // creates the directory before the task starts.
                Source::EmptyDir { .. } => out.push(Template {
                    embedded_tmpl: "{{/* emptyDir */}}".into(),
                    dest_path: format!("{}/.nomad-emptydir", volume_dir(&vol.name)),
                    change_mode: "noop".into(),
                    perms: "0644".into(),
                    ..Template::default()
                }),
                // Written by the volumes task, then kept by the files task.
                Source::Files(_) if self.bundled(vol) => {}
                Source::Files(files) => {
                    let dir = self.volume_path(vol);
                    // fsGroup: the kubelet gives the volume's files to that group and lets it
                    // read them (read-only volumes: mode | 0440).
                    let fs_group = c.security.fs_group;
                    for f in files {
                        // Nomad replaces `${name}` in a template's destination with the task's
                        // environment or the node's attributes, and has no escape for it.
                        if f.path.contains("${") {
                            let i = self.spec.volumes.iter().position(|v| v.name == vol.name);
                            return Err(Unsupported::new(
                                format!("spec.volumes[{}]", i.unwrap_or_default()),
                                format!(
                                    "file path {:?} of volume {:?} contains \"${{\", which Nomad would replace in a file's destination",
                                    f.path, vol.name
                                ),
                            ));
                        }
                        let key = file_key(&vol.name, &f.path);
                        self.items.insert(
                            key.clone(),
                            base64::engine::general_purpose::STANDARD.encode(&f.data),
                        );
                        out.push(Template {
                            embedded_tmpl: format!(
                                "{LEFT} with nomadVar {var} {RIGHT}{LEFT} (index . {}).Value | base64Decode {RIGHT}{LEFT} end {RIGHT}",
                                go_string(&key)
                            ),
                            dest_path: format!("{dir}/{}", f.path),
                            change_mode: "noop".into(),
                            perms: format!(
                                "{:04o}",
                                if fs_group.is_some() { f.mode | 0o440 } else { f.mode }
                            ),
                            left_delim: LEFT.into(),
                            right_delim: RIGHT.into(),
                            gid: fs_group,
                            ..Template::default()
                        });
                    }
                }
            }
        }
        Ok((out, secret_env))
    }
}

/// A capability as Nomad's drivers take it: `NET_ADMIN` or `CAP_NET_ADMIN` becomes `net_admin`,
/// `ALL` becomes `all`.
fn capability(field: &str, c: &str) -> Result<String, Unsupported> {
    let name = c.strip_prefix("CAP_").unwrap_or(c);
    if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
        return Err(Unsupported::new(field.to_owned(), format!("{c:?} is not a capability name")));
    }
    Ok(name.to_ascii_lowercase())
}

/// The container's security context on the docker driver (Nomad's `drivers/docker` options):
/// `privileged`, `cap_add`/`cap_drop`, `readonly_rootfs`, `security_opt` (`no-new-privileges`,
/// `seccomp=unconfined` or `seccomp=<root>/<localhostProfile>` (a file the Nomad client reads),
/// `apparmor=unconfined` or `apparmor=<profile>`, `label=user:...` and friends for SELinux), and
/// `group_add` for `supplementalGroups` and `fsGroup`, `sysctl` for the pod's (safe) sysctls. `seccompProfile` unset or
/// `RuntimeDefault` keeps Docker's default profile (stricter than the kubelet's default,
/// `Unconfined`); `appArmorProfile` unset or `RuntimeDefault` keeps Docker's `docker-default`.
/// Returns the task's `user` (`uid[:gid]`).
///
/// Refused: `runAsNonRoot` without a non-zero `runAsUser` (the image's user is not known here, so
/// it cannot be checked), `runAsGroup` without `runAsUser`, `procMount: Unmasked`,
/// `supplementalGroupsPolicy: Strict` (Docker adds the image's groups).
fn docker_security(
    field: &str,
    sec: &Security,
    seccomp_root: &str,
    config: &mut Map<String, Value>,
) -> Result<String, Unsupported> {
    let f = |name: &str| format!("{field}.securityContext.{name}");
    common_refusals(field, sec)?;
    if sec.supplemental_groups_strict {
        return Err(Unsupported::new(
            "spec.securityContext.supplementalGroupsPolicy",
            "Strict cannot be honoured by the docker driver, which adds the groups of the image's user",
        ));
    }
    if sec.privileged {
        config.insert("privileged".into(), json!(true));
    }
    for (key, name, caps) in [
        ("cap_add", "capabilities.add", &sec.capabilities_add),
        ("cap_drop", "capabilities.drop", &sec.capabilities_drop),
    ] {
        if !caps.is_empty() {
            let list =
                caps.iter().map(|c| capability(&f(name), c)).collect::<Result<Vec<_>, _>>()?;
            config.insert(key.into(), json!(list));
        }
    }
    if sec.read_only_root_filesystem {
        config.insert("readonly_rootfs".into(), json!(true));
    }
    let mut opts = Vec::new();
    if sec.allow_privilege_escalation == Some(false) {
        opts.push("no-new-privileges".to_owned());
    }
    match &sec.seccomp {
        None | Some(Profile::RuntimeDefault) => {}
        Some(Profile::Unconfined) => opts.push("seccomp=unconfined".into()),
        Some(Profile::Localhost(p)) => {
            opts.push(format!("seccomp={}/{p}", seccomp_root.trim_end_matches('/')));
        }
    }
    match &sec.app_armor {
        None | Some(Profile::RuntimeDefault) => {}
        Some(Profile::Unconfined) => opts.push("apparmor=unconfined".into()),
        Some(Profile::Localhost(p)) => opts.push(format!("apparmor={p}")),
    }
    if let Some(l) = &sec.se_linux {
        for (part, v) in
            [("user", &l.user), ("role", &l.role), ("type", &l.type_), ("level", &l.level)]
        {
            if let Some(v) = v {
                opts.push(format!("label={part}:{v}"));
            }
        }
    }
    if !opts.is_empty() {
        config.insert(
            "security_opt".into(),
            json!(opts.iter().map(|o| hcl_text(o)).collect::<Vec<_>>()),
        );
    }
    let mut groups: Vec<String> = sec.supplemental_groups.iter().map(ToString::to_string).collect();
    if let Some(g) = sec.fs_group.map(|g| g.to_string()).filter(|g| !groups.contains(g)) {
        groups.push(g);
    }
    if !groups.is_empty() {
        config.insert("group_add".into(), json!(groups));
    }
    // Safe sysctls only reach here (the domain's admission rejects the others).
    if !sec.sysctls.is_empty() {
        let map: Map<String, Value> = sec
            .sysctls
            .iter()
            .map(|(k, v)| (vk_domain::workload::sysctl_name(k), json!(hcl_text(v))))
            .collect();
        config.insert("sysctl".into(), json!([map]));
    }
    if sec.run_as_non_root && sec.run_as_user.is_none_or(|u| u <= 0) {
        return Err(Unsupported::new(
            sec.field("runAsNonRoot", field),
            "runAsNonRoot cannot be verified against the image's user here; set runAsUser to a non-zero uid",
        ));
    }
    match (sec.run_as_user, sec.run_as_group) {
        (Some(u), Some(g)) => Ok(format!("{u}:{g}")),
        (Some(u), None) => Ok(u.to_string()),
        (None, Some(_)) => Err(Unsupported::new(
            sec.field("runAsGroup", field),
            "runAsGroup without runAsUser cannot be given to the docker driver",
        )),
        (None, None) => Ok(String::new()),
    }
}

/// What no driver here can honour.
fn common_refusals(field: &str, sec: &Security) -> Result<(), Unsupported> {
    if sec.proc_mount_unmasked {
        return Err(Unsupported::new(
            format!("{field}.securityContext.procMount"),
            "Unmasked cannot be honoured by Nomad's drivers",
        ));
    }
    Ok(())
}

/// The container's security context on the exec-style drivers, which run the command directly
/// (`raw_exec`: on the host, as the Nomad agent's user unless `runAsUser` says otherwise; `exec`:
/// in a chroot with its own namespaces). What they cannot honour is refused, naming the field:
/// `privileged`, `runAsGroup`, a `runAsUser` other than 0 and 65534 (they take a user name),
/// `runAsNonRoot` without `runAsUser: 65534`, capabilities on `raw_exec` (on `exec`: `cap_add` and
/// `cap_drop`), `readOnlyRootFilesystem`, `allowPrivilegeEscalation: false`, a seccomp or AppArmor
/// profile other than `Unconfined`, `seLinuxOptions`, `supplementalGroups`, `fsGroup` and
/// `sysctls`.
/// Returns the task's `user`.
fn exec_security(
    field: &str,
    driver: &str,
    sec: &Security,
    config: &mut Map<String, Value>,
) -> Result<String, Unsupported> {
    let f = |name: &str| format!("{field}.securityContext.{name}");
    let refuse = |name: String, what: &str| {
        Err(Unsupported::new(
            name,
            format!(
                "{what} cannot be honoured by the {driver} driver (the docker driver honours it)"
            ),
        ))
    };
    common_refusals(field, sec)?;
    if sec.privileged {
        return refuse(f("privileged"), "a privileged container");
    }
    if sec.run_as_group.is_some() {
        return Err(Unsupported::new(
            sec.field("runAsGroup", field),
            format!(
                "the {driver} driver runs a task with its user's primary group; runAsGroup cannot be honoured"
            ),
        ));
    }
    for (key, name, caps) in [
        ("cap_add", "capabilities.add", &sec.capabilities_add),
        ("cap_drop", "capabilities.drop", &sec.capabilities_drop),
    ] {
        if caps.is_empty() {
            continue;
        }
        if driver != "exec" {
            return refuse(f(name), "a capability set");
        }
        let list = caps.iter().map(|c| capability(&f(name), c)).collect::<Result<Vec<_>, _>>()?;
        config.insert(key.into(), json!(list));
    }
    if sec.read_only_root_filesystem {
        return refuse(f("readOnlyRootFilesystem"), "a read-only root filesystem");
    }
    if sec.allow_privilege_escalation == Some(false) {
        return refuse(
            f("allowPrivilegeEscalation"),
            "no_new_privs (allowPrivilegeEscalation: false)",
        );
    }
    if sec.seccomp.as_ref().is_some_and(|p| *p != Profile::Unconfined) {
        return refuse(sec.field("seccompProfile", field), "a seccomp profile");
    }
    if sec.app_armor.as_ref().is_some_and(|p| *p != Profile::Unconfined) {
        return refuse(sec.field("appArmorProfile", field), "an AppArmor profile");
    }
    if sec.se_linux.is_some() {
        return refuse(sec.field("seLinuxOptions", field), "an SELinux label");
    }
    if !sec.supplemental_groups.is_empty() || sec.supplemental_groups_strict {
        return refuse("spec.securityContext.supplementalGroups".into(), "supplementary groups");
    }
    if sec.fs_group.is_some() {
        return refuse("spec.securityContext.fsGroup".into(), "fsGroup");
    }
    if !sec.sysctls.is_empty() {
        return refuse("spec.securityContext.sysctls".into(), "a pod sysctl");
    }
    // These drivers look the user up by name on the client (a uid is refused): only the two uids
    // with a name on every Linux system can be given.
    let user = match sec.run_as_user {
        None => String::new(),
        Some(0) => "root".into(),
        Some(65534) => "nobody".into(),
        Some(u) => {
            return Err(Unsupported::new(
                sec.field("runAsUser", field),
                format!(
                    "the {driver} driver takes a user name, and uid {u} has no name known on every Nomad client (0 and 65534 do; the docker driver takes any uid)"
                ),
            ));
        }
    };
    if sec.run_as_non_root && user != "nobody" {
        return Err(Unsupported::new(
            sec.field("runAsNonRoot", field),
            format!(
                "without runAsUser the {driver} driver runs the task as the Nomad agent's user, which may be root; set runAsUser: 65534"
            ),
        ));
    }
    Ok(user)
}

/// Whether Nomad can interpolate `${name}` for this variable name.
fn is_interpolable(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits a container's environment into the plain-text variables written into the job's `Env`,
/// and those rendered from the Variable at start (Secret data, run-time values, and text Nomad
/// would interpolate).
fn split_env(env: &[EnvVar]) -> (BTreeMap<String, String>, Vec<&EnvVar>) {
    let mut plain = BTreeMap::new();
    let mut rendered = Vec::new();
    for v in env {
        match v.value.as_text() {
            Some(t) if !t.contains("${") => {
                plain.insert(v.name.clone(), t);
            }
            _ => rendered.push(v),
        }
    }
    (plain, rendered)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use vk_domain::inputs::Inputs;
    use vk_domain::k8s_openapi::api::core::v1::Pod;

    use super::*;
    use crate::policy::NomadGrant;

    fn settings() -> JobSettings {
        JobSettings {
            prefix: "k8s-".into(),
            node_name: "vk".into(),
            namespace: None,
            region: None,
            datacenters: vec!["*".into()],
            default_driver: "docker".into(),
            driver_annotation: "virtual-kubelet.io/nomad-driver".into(),
            mhz_per_core: 2000,
            policy: std::sync::Arc::new(NomadPolicy::default()),
            seccomp_profile_root: "/var/lib/kubelet/seccomp".into(),
            volume_setup_image: None,
        }
    }

    fn pod_json(annotations: serde_json::Value, spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": "team-a", "name": "web", "uid": "uid-1", "annotations": annotations},
            "spec": spec,
        }))
        .unwrap()
    }

    fn inputs() -> Inputs {
        let mut i = Inputs::default();
        let data = |pairs: &[(&str, &str)]| {
            Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect())
        };
        i.config_maps.insert("cfg".into(), data(&[("mode", "fast")]));
        i.secrets.insert("creds".into(), data(&[("password", "s3cr3t\"$x\n")]));
        i
    }

    fn translate(
        annotations: serde_json::Value,
        spec: serde_json::Value,
    ) -> Result<PodJob, Unsupported> {
        translate_with(&settings(), annotations, spec)
    }

    fn translate_with(
        s: &JobSettings,
        annotations: serde_json::Value,
        spec: serde_json::Value,
    ) -> Result<PodJob, Unsupported> {
        let p = pod_json(annotations, spec);
        let w = WorkloadSpec::from_pod(&p, &inputs()).unwrap().spec;
        to_job(&w, s)
    }

    /// Settings whose policy lets pods choose what the placement tests choose.
    fn permissive() -> JobSettings {
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        JobSettings {
            policy: std::sync::Arc::new(NomadPolicy {
                base: NomadGrant {
                    drivers: owned(&["raw_exec", "exec", "docker"]),
                    namespaces: owned(&["apps"]),
                    regions: owned(&["eu-west"]),
                    node_pools: owned(&["gpu"]),
                    network_modes: owned(&["bridge", "cni/mynet"]),
                    datacenters: owned(&["*"]),
                    max_priority: Some(100),
                },
                rules: Vec::new(),
            }),
            ..settings()
        }
    }

    fn translate_permissive(
        annotations: serde_json::Value,
        spec: serde_json::Value,
    ) -> Result<PodJob, Unsupported> {
        translate_with(&permissive(), annotations, spec)
    }

    fn web(restart: &str) -> serde_json::Value {
        json!({
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 7,
            "enableServiceLinks": false,
            "containers": [{
                "name": "main", "image": "nginx:1", "command": ["nginx"], "args": ["-g", "daemon off;"],
                "workingDir": "/srv",
                "env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
                "ports": [{"name": "http", "containerPort": 80}],
                "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}
            }]
        })
    }

    #[test]
    fn ids_are_unique_across_namespaces() {
        let a = job_id("k8s-", &PodKey::new("a", "web").unwrap());
        let b = job_id("k8s-", &PodKey::new("b", "web").unwrap());
        assert_eq!(a, "k8s-a_web");
        assert_ne!(a, b);
        // Dots (refused in Variable paths) are written `~`; `_` separates: no collisions.
        assert_eq!(job_id("", &PodKey::new("a", "b.c").unwrap()), "a_b~c");
        assert_ne!(
            job_id("", &PodKey::new("a-b", "c").unwrap()),
            job_id("", &PodKey::new("a", "b-c").unwrap())
        );
        assert_eq!(variable_path("k8s-a_web"), "nomad/jobs/k8s-a_web");
        assert_eq!(gate_path("k8s-a_web", "init"), "nomad/jobs/k8s-a_web/pod/init");
        // Long names are cut and hashed, deterministically and distinctly.
        let long = |n: &str| job_id("k8s-", &PodKey::new("team", n).unwrap());
        let (x, y) = (long(&"x".repeat(200)), long(&format!("{}y", "x".repeat(199))));
        assert_eq!((x.len(), y.len()), (MAX_JOB_ID, MAX_JOB_ID));
        assert_ne!(x, y);
        assert_eq!(x, long(&"x".repeat(200)));
        assert!(valid_prefix("k8s-") && !valid_prefix("k8s.") && !valid_prefix(&"p".repeat(17)));
        // A pod named like a hashed ID gets its own ID.
        let lookalike =
            PodKey::new("team", x.strip_prefix("k8s-team_").unwrap().to_lowercase()).unwrap();
        assert_ne!(job_id("k8s-", &lookalike), x);
    }

    #[test]
    fn docker_job_carries_the_pod() {
        let PodJob { job, items, gated, .. } = translate(json!({}), web("Always")).unwrap();
        assert!(items.is_empty() && gated.is_empty());
        assert_eq!(job.id, "k8s-team-a_web");
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
        assert!(!t.config.contains_key("ports") && !t.config.contains_key("network_mode"));
        assert!(!t.config.contains_key("force_pull"), "no imagePullPolicy: IfNotPresent");
        let mut always = web("Always");
        always["containers"][0]["imagePullPolicy"] = json!("Always");
        let job = translate(json!({}), always).unwrap().job;
        assert_eq!(job.task_groups[0].tasks[0].config["force_pull"], json!(true));
        assert_eq!(t.env["A"], "2", "later env entries win");
        assert_eq!(t.resources.cpu, Some(500), "250m at 2000 MHz per core");
        assert_eq!((t.resources.memory_mb, t.resources.memory_max_mb), (Some(64), None));
        assert_eq!(t.config["memory_hard_limit"], json!(128), "the limit is docker's hard limit");
        assert!(!t.config.contains_key("cpu_hard_limit"), "a limit above the request is not a cap");
        assert_eq!(t.kill_timeout, 7_000_000_000);
        assert!(t.templates.is_empty() && t.lifecycle.is_none() && t.user.is_empty());
        assert_eq!(g.networks[0].mode, "bridge", "a docker pod has an address of its own");
        assert!(g.networks[0].dynamic_ports.is_empty() && g.networks[0].reserved_ports.is_empty());
    }

    /// Requests and limits on docker: the memory request is Nomad's `MemoryMB` (the
    /// reservation), a higher limit the driver's `memory_hard_limit`; a CPU limit that is the
    /// request (or stands alone) is enforced by `cpu_hard_limit`; on the exec drivers a higher
    /// memory limit stays `MemoryMaxMB`.
    #[test]
    fn limits_reach_the_docker_driver() {
        let job = |driver: &str, res: serde_json::Value| {
            let mut c = web("Always");
            c["containers"][0]["resources"] = res;
            translate_permissive(json!({ANN_DRIVER: driver}), c).unwrap().job.task_groups[0].tasks
                [0]
            .clone()
        };
        let cases = [
            // (resources, cpu MHz, memory MB, hard limit, cpu_hard_limit)
            (json!({"limits": {"cpu": "500m", "memory": "64Mi"}}), 1000, 64, None, true),
            (
                json!({"requests": {"cpu": "500m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}}),
                1000,
                64,
                None,
                true,
            ),
            (
                json!({"requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"cpu": "1", "memory": "100Mi"}}),
                500,
                32,
                Some(100),
                false,
            ),
            (json!({"requests": {"cpu": "250m", "memory": "32Mi"}}), 500, 32, None, false),
        ];
        for (res, cpu, mem, hard, capped) in cases {
            let t = job("docker", res.clone());
            assert_eq!(t.resources.cpu, Some(cpu), "{res}");
            assert_eq!(
                (t.resources.memory_mb, t.resources.memory_max_mb),
                (Some(mem), None),
                "{res}"
            );
            assert_eq!(t.config.get("memory_hard_limit").and_then(Value::as_i64), hard, "{res}");
            assert_eq!(t.config.contains_key("cpu_hard_limit"), capped, "{res}");
        }
        let exec = job(
            "raw_exec",
            json!({"requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"cpu": "1", "memory": "100Mi"}}),
        );
        assert_eq!((exec.resources.memory_mb, exec.resources.memory_max_mb), (Some(32), Some(100)));
        assert!(
            !exec.config.contains_key("memory_hard_limit")
                && !exec.config.contains_key("cpu_hard_limit")
        );
    }

    /// `imagePullSecrets` on docker: the driver's `auth` block reads the login from the task's
    /// environment, rendered from the pod's Variable; the password is nowhere in the job. A
    /// container whose image no key matches gets no `auth`.
    #[test]
    fn image_pull_secrets_reach_the_docker_auth_block_through_the_variable() {
        let mut i = inputs();
        let cfg =
            r#"{"auths": {"127.0.0.1:5000": {"username": "puller", "password": "pull-s3cr3t"}}}"#;
        i.secrets.insert(
            "regcred".into(),
            Some([(".dockerconfigjson".to_owned(), cfg.as_bytes().to_vec())].into()),
        );
        let pod = pod_json(
            json!({}),
            json!({"imagePullSecrets": [{"name": "regcred"}, {"name": "absent"}],
                   "containers": [
                       {"name": "private", "image": "127.0.0.1:5000/private/bb:1"},
                       {"name": "public", "image": "busybox:1.36"}]}),
        );
        let w = WorkloadSpec::from_pod(&pod, &i).unwrap().spec;
        let PodJob { job, items, .. } = to_job(&w, &settings()).unwrap();
        assert!(!serde_json::to_string(&job).unwrap().contains("pull-s3cr3t"));
        let private = &job.task_groups[0].tasks[0];
        assert_eq!(
            private.config["auth"],
            json!([{"username": "${VK_REGISTRY_USERNAME}", "password": "${VK_REGISTRY_PASSWORD}",
                    "server_address": "127.0.0.1:5000"}])
        );
        let env = &private.templates[0];
        assert!(env.envvars && env.dest_path == "secrets/vk-env");
        assert!(
            env.embedded_tmpl.contains("VK_REGISTRY_USERNAME=")
                && env.embedded_tmpl.contains("VK_REGISTRY_PASSWORD=")
        );
        assert!(
            items.values().any(|v| v == "\"pull-s3cr3t\"")
                && items.values().any(|v| v == "\"puller\"")
        );
        let public = &job.task_groups[0].tasks[1];
        assert!(!public.config.contains_key("auth") && public.templates.is_empty());
    }

    /// With `fsGroup`, volume files belong to that group and it may read them (`mode | 0440`,
    /// the kubelet's mask for read-only volumes).
    #[test]
    fn fs_group_owns_the_volume_files() {
        let spec = json!({
            "securityContext": {"fsGroup": 2000},
            "containers": [{"name": "c", "image": "i", "volumeMounts": [
                {"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "sec", "mountPath": "/etc/sec"}]}],
            "volumes": [
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "sec", "secret": {"secretName": "creds", "defaultMode": 0o400}}
            ]
        });
        let job = translate(json!({}), spec).unwrap().job;
        let files: Vec<(&str, &str, Option<i64>)> = job.task_groups[0].tasks[0]
            .templates
            .iter()
            .map(|t| (t.dest_path.as_str(), t.perms.as_str(), t.gid))
            .collect();
        assert_eq!(
            files,
            [
                ("../alloc/volumes/cfg/mode", "0644", Some(2000)),
                ("secrets/vk-volumes/sec/password", "0440", Some(2000)),
            ]
        );
    }

    /// A subPath into an emptyDir is refused on docker (a container could plant a symbolic link
    /// there, which Docker would follow when binding: CVE-2017-1002101); into API data, which
    /// only Nomad's templates write, it is bound; raw_exec binds nothing.
    #[test]
    fn a_sub_path_into_a_writable_volume_is_refused_on_docker() {
        let spec = |sub: &str| {
            json!({
                "containers": [{"name": "c", "image": "i", "command": ["sh"], "volumeMounts": [
                    {"name": "cfg", "mountPath": "/etc/mode", "subPath": "mode"},
                    {"name": "scratch", "mountPath": "/data", "subPath": sub}
                ]}],
                "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "scratch", "emptyDir": {}}]
            })
        };
        let err = translate(json!({}), spec("link")).unwrap_err();
        assert_eq!(err.field, "spec.containers[0].volumeMounts[1].subPath");
        assert!(
            err.reason.starts_with("\"link\" into emptyDir \"scratch\" cannot be mounted safely")
                && err.reason.contains("CVE-2017-1002101"),
            "{}",
            err.reason
        );
        assert!(translate(json!({}), spec("a/b")).is_err(), "nested paths too");
        let raw = translate_permissive(json!({ANN_DRIVER: "raw_exec"}), spec("link")).unwrap();
        assert!(!raw.job.task_groups[0].tasks[0].config.contains_key("volumes"));
        let only_api_data = json!({
            "containers": [{"name": "c", "image": "i", "volumeMounts": [
                {"name": "cfg", "mountPath": "/etc/mode", "subPath": "mode"}]}],
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}]
        });
        let job = translate(json!({}), only_api_data).unwrap().job;
        assert_eq!(
            job.task_groups[0].tasks[0].config["volumes"],
            json!(["../alloc/volumes/cfg/mode:/etc/mode:ro"])
        );

        // One container of a pod that never restarts one: nothing else can write the volume
        // before Docker binds, and it binds once. The volumes task makes the subPath directory.
        let s = JobSettings { volume_setup_image: Some("busybox:1.37".into()), ..settings() };
        let never = |extra: Option<serde_json::Value>| {
            let mut v = spec("logs/web");
            v["restartPolicy"] = json!("Never");
            v["containers"][0]["volumeMounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "scratch", "mountPath": "/all"}));
            if let Some(c) = extra {
                v["containers"].as_array_mut().unwrap().push(c);
            }
            translate_with(&s, json!({}), v)
        };
        let job = never(None).unwrap().job;
        let tasks = &job.task_groups[0].tasks;
        assert_eq!(
            tasks[0].config["args"],
            json!(["0777", "-", "/alloc/volumes/scratch", "/alloc/volumes/scratch/logs/web"])
        );
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, [VOLUMES_TASK, FILES_TASK, "c"], "configMap files from a bundle");
        assert_eq!(
            tasks[2].config["volumes"],
            json!([
                "../alloc/volumes/cfg/mode:/etc/mode:ro",
                "../alloc/volumes/scratch/logs/web:/data",
                "../alloc/volumes/scratch:/all"
            ])
        );
        let other = json!({"name": "d", "image": "i", "volumeMounts": [{"name": "scratch", "mountPath": "/s"}]});
        assert!(never(Some(other)).is_err(), "a second container could plant the link");
        assert!(translate_with(&s, json!({}), spec("logs/web")).is_err(), "restarts bind again");
    }

    /// The group network mode and ports by driver, `hostNetwork` and annotation: a pod on docker
    /// or exec gets a network namespace of its own (bridge); the host's network only on raw_exec
    /// or when the operator allows it.
    #[test]
    fn network_modes_and_ports_follow_the_driver_and_the_operator() {
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let pod = |driver: &str, host_network: bool, mode: Option<&str>, host_port: Option<u16>| {
            let mut c = web("Always");
            c["containers"][0]["ports"] = json!([{"name": "http", "containerPort": 80}]);
            if let Some(h) = host_port {
                c["containers"][0]["ports"][0]["hostPort"] = json!(h);
            }
            if host_network {
                c["hostNetwork"] = json!(true);
            }
            let mut ann = json!({ANN_DRIVER: driver});
            if let Some(m) = mode {
                ann[ANN_NETWORK_MODE] = json!(m);
            }
            pod_with_labels(ann, c, None)
        };
        let granted = |modes: &[&str]| JobSettings {
            policy: std::sync::Arc::new(NomadPolicy {
                base: NomadGrant {
                    drivers: owned(&["docker", "exec", "raw_exec"]),
                    network_modes: owned(modes),
                    ..NomadGrant::default()
                },
                rules: Vec::new(),
            }),
            ..settings()
        };
        let strict = granted(&[]);
        let port = |v: i32| vec![Port { label: "main_http".into(), value: v, to: 80 }];
        // (driver, hostNetwork, annotation, hostPort) → (mode, reserved ports, docker network_mode)
        type Case = (&'static str, bool, Option<&'static str>, Option<u16>);
        type Want = (&'static str, Vec<Port>, Option<&'static str>);
        let cases: [(Case, Want); 7] = [
            (("docker", false, None, None), ("bridge", vec![], None)),
            (("docker", false, None, Some(8080)), ("bridge", port(8080), None)),
            (("exec", false, None, None), ("bridge", vec![], None)),
            (("raw_exec", false, None, None), ("host", port(80), None)),
            (("raw_exec", true, None, None), ("host", port(80), None)),
            (("docker", false, Some("none"), None), ("none", vec![], Some("none"))),
            (("docker", true, None, None), ("host", port(80), Some("host"))),
        ];
        let open = granted(&["host", "none"]);
        for ((driver, hn, mode, hp), (want, reserved, docker_mode)) in cases {
            let job = to_job(&pod(driver, hn, mode, hp), &open).unwrap().job;
            let g = &job.task_groups[0];
            let what = format!("{driver} hostNetwork={hn} annotation={mode:?} hostPort={hp:?}");
            assert_eq!(g.networks[0].mode, want, "{what}");
            assert_eq!(g.networks[0].reserved_ports, reserved, "{what}");
            assert!(g.networks[0].dynamic_ports.is_empty(), "{what}");
            assert_eq!(
                g.tasks[0].config.get("network_mode").and_then(Value::as_str),
                docker_mode,
                "{what}"
            );
        }
        // The host's network for a docker pod is the operator's to give, by either field.
        let err = to_job(&pod("docker", true, None, None), &strict).unwrap_err();
        assert_eq!(err.field, "spec.hostNetwork");
        assert!(
            err.reason.starts_with("network mode \"host\" is not allowed in namespace")
                && err.reason.contains("(allowed: \"bridge\"; set by --allowed-network-modes"),
            "{}",
            err.reason
        );
        let err = to_job(&pod("docker", false, Some("host"), None), &strict).unwrap_err();
        assert_eq!(err.field, format!("metadata.annotations[{ANN_NETWORK_MODE}]"));
        // raw_exec runs in the host's network whatever: its default needs no grant.
        assert!(to_job(&pod("raw_exec", true, None, None), &strict).is_ok());
    }

    #[test]
    fn raw_exec_runs_command_and_args() {
        let ann = json!({"virtual-kubelet.io/nomad-driver": "raw_exec"});
        let job = translate_permissive(ann, web("Never")).unwrap().job;
        let t = &job.task_groups[0].tasks[0];
        assert_eq!(t.config["command"], json!("nginx"));
        assert_eq!(t.config["args"], json!(["-g", "daemon off;"]));
        assert!(!t.config.contains_key("image"));
        assert_eq!(job.task_groups[0].networks[0].reserved_ports[0].value, 80);
    }

    #[test]
    fn restart_policies_map_to_job_types() {
        let cases = [
            ("Always", "service", "delay", true),
            ("OnFailure", "batch", "delay", false),
            ("Never", "batch", "fail", false),
        ];
        for (p, ty, mode, unlimited) in cases {
            let job = translate(json!({}), web(p)).unwrap().job;
            let g = &job.task_groups[0];
            assert_eq!(job.type_, ty, "{p:?}");
            assert_eq!(g.restart_policy.as_ref().unwrap().mode, mode, "{p:?}");
            assert_eq!(g.reschedule_policy.as_ref().unwrap().unlimited, unlimited, "{p:?}");
        }
        let never = translate(json!({}), web("Never")).unwrap().job;
        assert_eq!(never.task_groups[0].restart_policy.as_ref().unwrap().attempts, 0);
        assert_eq!(never.task_groups[0].reschedule_policy.as_ref().unwrap().attempts, 0);
    }

    #[test]
    fn secret_and_runtime_values_never_enter_the_job() {
        let spec = json!({
            "enableServiceLinks": false,
            "containers": [{
                "name": "app", "image": "i", "command": ["run", "--pass=$(PASS)", "--ip=$(IP)", "--mode=$(MODE)"],
                "env": [
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                    {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "DSN", "value": "u:$(PASS)@$(IP)"},
                    {"name": "LITERAL", "value": "cost ${5}"}
                ]
            }]
        });
        let PodJob { job, items, .. } = translate(json!({}), spec).unwrap();
        let text = serde_json::to_string(&job).unwrap();
        assert!(!text.contains("s3cr3t"), "{text}");
        let t = &job.task_groups[0].tasks[0];
        assert_eq!(t.env.get("MODE").map(String::as_str), Some("fast"));
        assert!(
            !t.env.contains_key("PASS")
                && !t.env.contains_key("IP")
                && !t.env.contains_key("LITERAL")
        );
        assert_eq!(
            t.config["entrypoint"],
            json!(["run", "--pass=${PASS}", "--ip=${IP}", "--mode=fast"])
        );
        let env = t.templates.iter().find(|t| t.envvars).unwrap();
        assert_eq!((env.change_mode.as_str(), env.dest_path.as_str()), ("noop", "secrets/vk-env"));
        let lines: Vec<&str> = env.embedded_tmpl.lines().collect();
        assert_eq!(lines.len(), 6, "{}", env.embedded_tmpl);
        assert_eq!(lines[0], "⟦ with nomadVar \"nomad/jobs/k8s-team-a_web\" ⟧");
        let k = |var: &str, n: usize| format!("e_{}", fnv(&["app", var, &n.to_string()]));
        assert_eq!(
            lines[1],
            format!("PASS=⟦ print ((index . \"{}\").Value | parseJSON) | toJSON ⟧", k("PASS", 0))
        );
        assert_eq!(lines[2], "IP=⟦ print (env \"attr.unique.network.ip-address\") | toJSON ⟧");
        assert_eq!(
            lines[3],
            format!(
                "DSN=⟦ print ((index . \"{}\").Value | parseJSON) (env \"attr.unique.network.ip-address\") | toJSON ⟧",
                k("DSN", 0)
            )
        );
        assert_eq!(lines[5], "⟦ end ⟧");
        // JSON strings: Nomad's env file parser reads each item back exactly.
        assert_eq!(items[&k("PASS", 0)], r#""s3cr3t\"$x\n""#);
        assert_eq!(items[&k("DSN", 0)], r#""u:s3cr3t\"$x\n@""#);
        assert_eq!(items[&k("LITERAL", 0)], r#""cost ${5}""#);
        assert!(t.secrets.is_empty(), "no secret block without a name the env file refuses");
    }

    /// A variable holding Secret data under a name Nomad's env file parser refuses (`data-1`, as
    /// `envFrom` makes from a Secret's keys) is the task's `Env`, interpolated by Nomad from the
    /// task's `secret` block over the pod's Variable; every item of that Variable is then a line
    /// the parser reads.
    #[test]
    fn secret_variables_with_dashed_names_come_from_the_secret_block() {
        let mut inputs = Inputs::default();
        let data = BTreeMap::from([("data-1".to_owned(), b"value-1\n".to_vec())]);
        inputs.secrets.insert("creds".into(), Some(data));
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "team-a", "uid": "u1"},
            "spec": {"nodeName": "vk", "containers": [{"name": "app", "image": "busybox",
                "envFrom": [{"secretRef": {"name": "creds"}},
                            {"prefix": "p-", "secretRef": {"name": "creds"}}],
                "env": [{"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "ip-and-secret", "value": "$(data-1)@$(MY_IP)"}],
                "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]}],
                "volumes": [{"name": "cfg", "secret": {"secretName": "creds"}}]}
        }))
        .unwrap();
        let w = WorkloadSpec::from_pod(&pod, &inputs).unwrap().spec;
        let PodJob { job, items, .. } = to_job(&w, &settings()).unwrap();
        let text = serde_json::to_string(&job).unwrap();
        assert!(!text.contains("value-1"), "{text}");
        let t = &job.task_groups[0].tasks[0];
        assert_eq!(
            t.secrets,
            [Secret {
                name: "vk".into(),
                provider: "nomad".into(),
                path: "nomad/jobs/k8s-team-a_web".into()
            }]
        );
        let k = |var: &str, n: usize| format!("e_{}", fnv(&["app", var, &n.to_string()]));
        assert_eq!(t.env["data-1"], format!("${{secret.vk.{}}}", k("data-1", 0)));
        assert_eq!(t.env["p-data-1"], format!("${{secret.vk.{}}}", k("p-data-1", 0)));
        assert_eq!(
            t.env["ip-and-secret"],
            format!("${{secret.vk.{}}}${{attr.unique.network.ip-address}}", k("ip-and-secret", 0))
        );
        assert_eq!(items[&k("data-1", 0)], r#""value-1\n""#);
        assert_eq!(items[&k("ip-and-secret", 0)], r#""value-1\n@""#);
        // MY_IP is an env file line as before.
        let env = t.templates.iter().find(|t| t.envvars).unwrap();
        assert!(env.embedded_tmpl.starts_with("MY_IP=⟦ print (env "), "{}", env.embedded_tmpl);
        // Every item is a line `go-envparse` reads: keys of [A-Za-z0-9_], values base64 or JSON.
        for (key, value) in &items {
            assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{key}");
            let json = serde_json::from_str::<String>(value).is_ok();
            let base64 = base64::engine::general_purpose::STANDARD.decode(value).is_ok();
            assert!(json || base64, "{key}={value}");
        }
    }

    #[test]
    fn volumes_are_rendered_from_the_variable_into_the_shared_directory() {
        let spec = json!({
            "containers": [
                {"name": "a", "image": "i", "volumeMounts": [
                    {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true},
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "sec", "mountPath": "/run/secret", "subPath": "db"}
                ]},
                {"name": "b", "image": "i", "volumeMounts": [{"name": "scratch", "mountPath": "/data"}]}
            ],
            "volumes": [
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "sec", "secret": {"secretName": "creds", "defaultMode": 0o400, "items": [{"key": "password", "path": "db/pass"}]}}
            ]
        });
        let PodJob { job, items, .. } = translate(json!({}), spec.clone()).unwrap();
        assert!(!serde_json::to_string(&job).unwrap().contains("s3cr3t"));
        let a = &job.task_groups[0].tasks[0];
        let b = &job.task_groups[0].tasks[1];
        assert_eq!(
            a.config["volumes"],
            json!([
                "../alloc/volumes/cfg:/etc/cfg:ro",
                "../alloc/volumes/scratch:/scratch",
                "secrets/vk-volumes/sec/db:/run/secret:ro"
            ]),
            "API data volumes are read-only whatever the mount says; an emptyDir follows it"
        );
        assert_eq!(b.config["volumes"], json!(["../alloc/volumes/scratch:/data"]));
        let dests: Vec<(&str, &str)> =
            a.templates.iter().map(|t| (t.dest_path.as_str(), t.perms.as_str())).collect();
        assert_eq!(
            dests,
            [
                ("../alloc/volumes/cfg/mode", "0644"),
                ("../alloc/volumes/scratch/.nomad-emptydir", "0644"),
                ("secrets/vk-volumes/sec/db/pass", "0400"),
            ],
            "Secret files into the task's in-memory secrets/, the rest into the shared directory"
        );
        assert!(a.templates.iter().all(|t| t.gid.is_none()), "no fsGroup, no group");
        assert!(a.templates.iter().all(|t| t.change_mode == "noop"));
        assert_eq!(b.templates.len(), 1, "b mounts only the emptyDir");
        assert_eq!(items[&file_key("cfg", "mode")], "ZmFzdA==");
        assert!(a.templates[0].embedded_tmpl.contains(&file_key("cfg", "mode")));
        assert!(a.templates[0].embedded_tmpl.contains("base64Decode"));

        // With a volume setup image, the configMap volume is one bundle item, written by the
        // volumes task before any container and kept by the files task (a prestart sidecar), so
        // that files appear and go with their keys; the Secret volume stays per task, in memory.
        let s = JobSettings { volume_setup_image: Some("busybox:1.37".into()), ..settings() };
        let mut with_group = spec.clone();
        with_group["securityContext"] = json!({"fsGroup": 2000});
        let PodJob { job, items, .. } = translate_with(&s, json!({}), with_group).unwrap();
        let tasks = &job.task_groups[0].tasks;
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, [VOLUMES_TASK, FILES_TASK, "a", "b"]);
        let files = &tasks[1];
        assert_eq!(files.lifecycle, Some(Lifecycle { hook: "prestart".into(), sidecar: true }));
        assert_eq!(files.env[BUNDLES_ENV], "cfg");
        assert_eq!(files.env[FS_GROUP_ENV], "2000");
        assert!(!files.env.contains_key(SECRET_BUNDLES_ENV));
        let dests: Vec<&str> = files.templates.iter().map(|t| t.dest_path.as_str()).collect();
        assert_eq!(dests, ["local/vk-bundle/cfg"]);
        assert!(files.templates[0].embedded_tmpl.contains(&bundle_key("cfg")));
        // The volumes task writes no file: it waits for the files task's first write.
        assert!(tasks[0].templates.is_empty());
        assert_eq!(tasks[0].env[WAIT_FILES_ENV], "1");
        // mode 0644 | 0440 (fsGroup), path "mode", data "fast".
        assert_eq!(items[&bundle_key("cfg")], "0644,bW9kZQ==,ZmFzdA==");
        assert!(!items.contains_key(&file_key("cfg", "mode")));
        let a = &tasks[2];
        let dests: Vec<&str> = a.templates.iter().map(|t| t.dest_path.as_str()).collect();
        assert_eq!(dests, ["secrets/vk-volumes/sec/db/pass"], "no per-file template for cfg");
        assert_eq!(a.config["volumes"][0], "../alloc/volumes/cfg:/etc/cfg:ro");
        let mut many = bundle(
            &[
                vk_domain::volume::File {
                    path: "a/b c".into(),
                    data: b"x;y,z\n".to_vec(),
                    mode: 0o600,
                    secret: false,
                },
                vk_domain::volume::File {
                    path: "e".into(),
                    data: Vec::new(),
                    mode: 0o644,
                    secret: false,
                },
            ],
            |m| m,
        );
        assert_eq!(many, "0600,YS9iIGM=,eDt5LHoK;0644,ZQ==,");
        many.retain(|c| !c.is_ascii_alphanumeric() && !"+/=,;".contains(c));
        assert!(many.is_empty(), "only base64, ',' and ';': a line Nomad's env file parser reads");
    }

    /// On docker with a volume setup image, a volume with Secret data whose files may come and
    /// go (a whole Secret, an optional projected one) is a bundle the files task writes into
    /// its own in-memory `secrets/`, which each container binds read-only; the volumes task waits
    /// for that first write. A token volume with a fixed set of files keeps its per-task
    /// templates. No Secret byte is in the job.
    #[test]
    fn docker_secret_volumes_that_gain_files_are_kept_by_the_files_task() {
        let s = JobSettings { volume_setup_image: Some("busybox:1.37".into()), ..settings() };
        let spec = json!({
            "containers": [{"name": "c", "image": "i", "command": ["run"], "volumeMounts": [
                {"name": "whole", "mountPath": "/etc/whole"},
                {"name": "later", "mountPath": "/etc/later"},
                {"name": "one", "mountPath": "/etc/one/pass", "subPath": "password"},
                {"name": "token", "mountPath": "/var/run/secrets/tok"}
            ]}],
            "volumes": [
                {"name": "whole", "secret": {"secretName": "creds", "defaultMode": 0o400}},
                {"name": "later", "projected": {"sources": [
                    {"secret": {"name": "not-yet", "optional": true}}]}},
                {"name": "one", "secret": {"secretName": "creds"}},
                {"name": "token", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token"}}]}}
            ]
        });
        let mut i = inputs();
        i.tokens.insert(
            vk_domain::inputs::TokenSpec {
                audience: String::new(),
                expiration_seconds: vk_domain::inputs::DEFAULT_TOKEN_SECONDS,
            },
            "tok3n".into(),
        );
        let p = pod_json(json!({}), spec);
        let w = WorkloadSpec::from_pod(&p, &i).unwrap().spec;
        let PodJob { job, items, .. } = to_job(&w, &s).unwrap();
        let text = serde_json::to_string(&job).unwrap();
        assert!(!text.contains("s3cr3t") && !text.contains("tok3n"), "Secret data in the job");
        let tasks = &job.task_groups[0].tasks;
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, [VOLUMES_TASK, FILES_TASK, "c"]);
        assert_eq!(tasks[0].env[WAIT_FILES_ENV], "1", "the volumes task waits for the files");
        let files = &tasks[1];
        assert_eq!(files.env[SECRET_BUNDLES_ENV], "whole later one");
        assert!(!files.env.contains_key(BUNDLES_ENV));
        let dests: Vec<&str> = files.templates.iter().map(|t| t.dest_path.as_str()).collect();
        assert_eq!(
            dests,
            ["secrets/vk-bundle/whole", "secrets/vk-bundle/later", "secrets/vk-bundle/one"],
            "bundles of Secret data in the files task's in-memory secrets/"
        );
        assert_eq!(items[&bundle_key("later")], "", "no file until the Secret exists");
        assert!(items[&bundle_key("whole")].starts_with("0400,"));
        let c = &tasks[2];
        assert_eq!(
            c.config["volumes"],
            json!([
                "../vk_files/secrets/vk-volumes/whole:/etc/whole:ro",
                "../vk_files/secrets/vk-volumes/later:/etc/later:ro",
                "../vk_files/secrets/vk-volumes/one/password:/etc/one/pass:ro",
                "secrets/vk-volumes/token:/var/run/secrets/tok:ro"
            ])
        );
        let dests: Vec<&str> = c.templates.iter().map(|t| t.dest_path.as_str()).collect();
        assert_eq!(dests, ["secrets/vk-volumes/token/token"], "the token stays per task");
        assert!(FILES_SCRIPT.contains(FILES_READY) && VOLUMES_SCRIPT.contains(FILES_READY));
        assert!(
            UNPACK_FN.contains("/secrets/vk-bundle/") && UNPACK_FN.contains("/secrets/vk-volumes/")
        );

        // On raw_exec (no files task) the same volumes keep their per-file templates.
        let raw = JobSettings { default_driver: "raw_exec".into(), ..s.clone() };
        let job = to_job(&w, &raw).unwrap().job;
        let names: Vec<&str> = job.task_groups[0].tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["c"]);
    }

    /// On docker with a volume setup image: one prestart task makes the emptyDir directories
    /// (0777; with fsGroup, that group and the set-group-ID bit) before any container, the first
    /// init container waits for it, no marker template is rendered; a Memory emptyDir of one
    /// container that never restarts is a tmpfs of its own (size from sizeLimit, else the memory
    /// limit), one shared by several or of a container that restarts lives in the allocation's
    /// directory; raw_exec gets no such task.
    #[test]
    fn docker_empty_dirs_are_prepared_by_the_volumes_task() {
        let s = JobSettings { volume_setup_image: Some("busybox:1.37".into()), ..settings() };
        let spec = |fs_group: Option<i64>| {
            json!({
                "restartPolicy": "Never",
                "securityContext": {"fsGroup": fs_group},
                "initContainers": [{"name": "init", "image": "i",
                    "volumeMounts": [{"name": "scratch", "mountPath": "/s"}]}],
                "containers": [
                    {"name": "a", "image": "i", "resources": {"limits": {"memory": "64Mi"}},
                     "volumeMounts": [{"name": "scratch", "mountPath": "/s"},
                        {"name": "shm", "mountPath": "/dev/shm"},
                        {"name": "mem", "mountPath": "/m", "readOnly": true},
                        {"name": "shared-mem", "mountPath": "/sm"}]},
                    {"name": "b", "image": "i", "volumeMounts": [{"name": "shared-mem", "mountPath": "/sm"}]}
                ],
                "volumes": [
                    {"name": "scratch", "emptyDir": {}},
                    {"name": "unused", "emptyDir": {}},
                    {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                    {"name": "mem", "emptyDir": {"medium": "Memory"}},
                    {"name": "shared-mem", "emptyDir": {"medium": "Memory"}}
                ]
            })
        };
        let PodJob { job, gated, .. } = translate_with(&s, json!({}), spec(None)).unwrap();
        let tasks = &job.task_groups[0].tasks;
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, [VOLUMES_TASK, "init", "a", "b"]);
        let v = &tasks[0];
        assert_eq!(v.lifecycle, Some(Lifecycle { hook: "prestart".into(), sidecar: false }));
        assert_eq!(v.config["image"], "busybox:1.37");
        let script = hcl_text(VOLUMES_SCRIPT);
        assert_eq!(v.config["entrypoint"], json!(["sh", "-c", script, VOLUMES_TASK]));
        assert!(!v.env.contains_key(WAIT_FILES_ENV), "no bundled volume, nothing to wait for");
        assert_eq!(
            v.config["args"],
            json!(["0777", "-", "/alloc/volumes/scratch", "/alloc/volumes/shared-mem"]),
            "the emptyDirs in the allocation's directory, mounted by some container"
        );
        assert_eq!(v.restart_policy.as_ref().map(|r| r.mode.as_str()), Some("delay"));
        assert_eq!(gated, ["init"], "the first init container waits for the volumes task");
        let a = &tasks[2];
        assert_eq!(
            a.config["volumes"],
            json!(["../alloc/volumes/scratch:/s", "../alloc/volumes/shared-mem:/sm"])
        );
        assert_eq!(
            a.config["mount"],
            json!([
                {"type": "tmpfs", "target": "/dev/shm", "readonly": false,
                 "tmpfs_options": [{"mode": 0o777, "size": 1 << 20}]},
                {"type": "tmpfs", "target": "/m", "readonly": true,
                 "tmpfs_options": [{"mode": 0o777, "size": 64 << 20}]}
            ])
        );
        assert!(a.templates.is_empty(), "no marker files: {:?}", a.templates);

        // A container that restarts would lose a tmpfs of its own (the kubelet's outlives
        // restarts): its Memory emptyDirs live on disk.
        let mut always = spec(None);
        always["restartPolicy"] = json!("Always");
        let job = translate_with(&s, json!({}), always).unwrap().job;
        assert_eq!(
            job.task_groups[0].tasks[0].config["args"],
            json!([
                "0777",
                "-",
                "/alloc/volumes/scratch",
                "/alloc/volumes/shm",
                "/alloc/volumes/mem",
                "/alloc/volumes/shared-mem"
            ])
        );
        assert!(!job.task_groups[0].tasks[2].config.contains_key("mount"));

        let PodJob { job, .. } = translate_with(&s, json!({}), spec(Some(2000))).unwrap();
        assert_eq!(
            job.task_groups[0].tasks[0].config["args"].as_array().unwrap()[..2],
            [json!("2777"), json!("2000")],
            "fsGroup: the group owns the directories, and new files get it"
        );

        let raw = translate_with(
            &JobSettings { default_driver: "raw_exec".into(), ..s.clone() },
            json!({}),
            json!({"containers": [{"name": "a", "image": "i", "command": ["x"],
                "volumeMounts": [{"name": "scratch", "mountPath": "/s"}]}],
                "volumes": [{"name": "scratch", "emptyDir": {}}]}),
        )
        .unwrap();
        let names: Vec<&str> =
            raw.job.task_groups[0].tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a"], "raw_exec: the marker template makes the directory");
        let none = translate(json!({}), spec(None)).unwrap();
        assert_eq!(none.job.task_groups[0].tasks[0].name, "init", "no image, no task");
        assert!(none.gated.is_empty());
    }

    /// terminationMessagePath on docker: an empty file of the task's own (0666), bound there;
    /// FallbackToLogsOnError recorded in Meta for the status reads; raw_exec binds nothing.
    #[test]
    fn termination_message_files_are_bound_on_docker() {
        let spec = json!({"containers": [{"name": "c", "image": "i", "command": ["x"],
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "FallbackToLogsOnError"}]});
        let job = translate(json!({}), spec.clone()).unwrap().job;
        let t = &job.task_groups[0].tasks[0];
        assert_eq!(t.config["volumes"], json!([format!("{TERMINATION_LOG}:/dev/termination-log")]));
        let file = t.templates.iter().find(|t| t.dest_path == TERMINATION_LOG).unwrap();
        assert_eq!((file.perms.as_str(), file.change_mode.as_str()), ("0666", "noop"));
        assert_eq!(job.meta[&format!("{META_TERMINATION_FALLBACK_PREFIX}c")], "true");
        let raw = translate_permissive(json!({ANN_DRIVER: "raw_exec"}), spec).unwrap().job;
        let t = &raw.task_groups[0].tasks[0];
        assert!(!t.config.contains_key("volumes") && t.templates.is_empty());
    }

    #[test]
    fn init_containers_are_prestart_tasks_held_in_order() {
        let spec = json!({
            "restartPolicy": "Never",
            "initContainers": [
                {"name": "setup", "image": "i"},
                {"name": "proxy", "image": "i", "restartPolicy": "Always"},
                {"name": "migrate", "image": "i"}
            ],
            "containers": [{"name": "app", "image": "i"}]
        });
        let PodJob { job, gated, .. } = translate(json!({}), spec.clone()).unwrap();
        let tasks = &job.task_groups[0].tasks;
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["setup", "proxy", "migrate", "app"]);
        let hooks: Vec<Option<(&str, bool)>> = tasks
            .iter()
            .map(|t| t.lifecycle.as_ref().map(|l| (l.hook.as_str(), l.sidecar)))
            .collect();
        assert_eq!(
            hooks,
            [Some(("prestart", false)), Some(("prestart", true)), Some(("prestart", false)), None]
        );
        assert_eq!(gated, ["proxy", "migrate"]);
        // A sidecar with a startup probe holds the app containers too.
        let mut probed = spec.clone();
        probed["initContainers"][1]["startupProbe"] = json!({"exec": {"command": ["true"]}});
        let PodJob { gated, .. } = translate(json!({}), probed).unwrap();
        assert_eq!(gated, ["proxy", "migrate", "app"]);
        assert!(tasks[0].templates.is_empty());
        assert!(
            tasks[2].templates[0].embedded_tmpl.contains("nomad/jobs/k8s-team-a_web/pod/migrate")
        );
        assert_eq!(tasks[1].restart_policy.as_ref().map(|r| r.mode.as_str()), Some("delay"));
        assert_eq!(tasks[2].restart_policy, None, "init containers follow the pod's policy");
    }

    #[test]
    fn annotations_choose_placement() {
        let c = json!({"containers": [{"name": "c", "image": "i"}]});
        let job = translate_permissive(
            json!({
                ANN_DATACENTERS: "dc1, dc2",
                ANN_NODE_POOL: "gpu",
                ANN_PRIORITY: "70",
                ANN_NETWORK_MODE: "cni/mynet",
                ANN_DRIVER: "exec"
            }),
            json!({"containers": [{"name": "c", "image": "i", "command": ["true"]}]}),
        )
        .unwrap()
        .job;
        assert_eq!(job.datacenters, ["dc1", "dc2"]);
        assert_eq!(job.node_pool.as_deref(), Some("gpu"));
        assert_eq!(job.priority, Some(70));
        assert_eq!(job.task_groups[0].networks[0].mode, "cni/mynet");
        assert_eq!(job.task_groups[0].tasks[0].driver, "exec");
        let plain = translate_permissive(json!({}), c.clone()).unwrap().job;
        assert_eq!((plain.datacenters.as_slice(), plain.priority), (&["*".to_owned()][..], None));
        // The configured annotation wins over the generic one.
        let both = translate_permissive(
            json!({ANN_DRIVER: "exec", "virtual-kubelet.io/nomad-driver": "docker"}),
            c.clone(),
        )
        .unwrap()
        .job;
        assert_eq!(both.task_groups[0].tasks[0].driver, "docker");
        let host = translate_permissive(
            json!({ANN_NETWORK_MODE: "bridge"}),
            json!({"hostNetwork": true, "containers": [{"name": "c", "image": "i"}]}),
        );
        assert_eq!(host.unwrap_err().field, format!("metadata.annotations[{ANN_NETWORK_MODE}]"));
    }

    #[test]
    fn users_follow_the_driver() {
        let spec = |sc: serde_json::Value| json!({"containers": [{"name": "c", "image": "i", "command": ["id"], "securityContext": sc}]});
        let docker =
            translate_permissive(json!({}), spec(json!({"runAsUser": 1000, "runAsGroup": 3000})))
                .unwrap();
        assert_eq!(docker.job.task_groups[0].tasks[0].user, "1000:3000");
        let raw = json!({ANN_DRIVER: "raw_exec"});
        let r = translate_permissive(raw.clone(), spec(json!({"runAsUser": 65534}))).unwrap();
        assert_eq!(r.job.task_groups[0].tasks[0].user, "nobody");
        let err = translate_permissive(raw, spec(json!({"runAsUser": 1000}))).unwrap_err();
        assert_eq!(err.field, "spec.containers[0].securityContext.runAsUser");
    }

    /// The corpus cases the adapter refuses (`"adapter": true`), on the raw_exec driver as in the
    /// end-to-end tests.
    #[test]
    fn the_unsupported_corpus_names_each_field() {
        let corpus: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("../../../tests/corpus/unsupported.json")).unwrap();
        let mut s = permissive();
        s.default_driver = "raw_exec".into();
        let mut n = 0;
        for case in corpus.iter().filter(|c| c["adapter"] == json!(true)) {
            let mut container =
                json!({"name": "main", "image": "busybox", "command": ["sleep", "3600"]});
            for (k, v) in case["container"].as_object().into_iter().flatten() {
                if v.is_null() {
                    container.as_object_mut().unwrap().remove(k);
                } else {
                    container[k] = v.clone();
                }
            }
            let p = pod_json(
                case.get("annotations").cloned().unwrap_or(json!({})),
                json!({"containers": [container]}),
            );
            let w = WorkloadSpec::from_pod(&p, &inputs()).unwrap().spec;
            let err = to_job(&w, &s).map(|_| ()).expect_err(case["case"].as_str().unwrap());
            assert_eq!(err.field, case["field"].as_str().unwrap(), "{}", case["case"]);
            let want = case["message"].as_str().unwrap();
            assert!(err.to_string().contains(want), "{}: {err} lacks {want:?}", case["case"]);
            n += 1;
        }
        assert!(n >= 10, "{n}");
    }

    /// What Nomad makes of a driver configuration string: HCL2 template evaluation (`hcl-rs`,
    /// an implementation independent of ours) with the task's environment as variables.
    fn nomad_reads(template: &str, vars: &[(&str, &str)]) -> String {
        use hcl::eval::{Context, Evaluate as _};
        let t: hcl::template::Template =
            template.parse().unwrap_or_else(|e| panic!("{template:?} does not parse: {e}"));
        let mut ctx = Context::new();
        for (k, v) in vars {
            ctx.declare_var(*k, *v);
        }
        // What a leak would look like: node attributes Nomad offers to templates.
        ctx.declare_var("attr", hcl::value!({ "unique" = { "hostname" = "NODE-HOSTNAME" } }));
        t.evaluate(&ctx).unwrap_or_else(|e| panic!("{template:?} does not evaluate: {e}"))
    }

    #[test]
    fn escapes_cannot_be_split_across_pieces() {
        // `$$$(X)` with a plain X: Kubernetes gives "$" then X's text; escaped piece by piece,
        // "$" + "{attr.unique.hostname}" was `${attr.unique.hostname}`, interpolated by Nomad.
        let spec = json!({"containers": [{"name": "c", "image": "i",
        "command": ["echo"], "args": ["$$$(X)", "${HOME}", "100%{x}", "$$$(PASS)", "a$$$$$(PASS)b"],
        "env": [
            {"name": "X", "value": "{attr.unique.hostname}"},
            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}
        ]}]});
        let job = translate(json!({}), spec).unwrap().job;
        let args = job.task_groups[0].tasks[0].config["args"].clone();
        let args: Vec<String> = serde_json::from_value(args).unwrap();
        let read: Vec<String> = args.iter().map(|a| nomad_reads(a, &[("PASS", "pw")])).collect();
        assert_eq!(read, ["${attr.unique.hostname}", "${HOME}", "100%{x}", "$pw", "a$$pwb"]);
        assert_eq!(args[3], "${\"$\"}${PASS}");
        // The image never reaches the job unless it parses as a reference (the kubelet's
        // InvalidImageName), so `${...}` cannot be in it; it is escaped all the same.
        let p = pod_json(
            json!({}),
            json!({"containers": [{"name": "c", "image": "reg.example/${attr.unique.hostname}"}]}),
        );
        let refused = WorkloadSpec::from_pod(&p, &inputs()).map(|_| ()).unwrap_err();
        assert!(refused.to_string().starts_with("spec.containers[0].image: "), "{refused}");
    }

    fn piece() -> impl proptest::strategy::Strategy<Value = (bool, String)> {
        use proptest::prelude::*;
        prop_oneof![
            // Text dense in what HCL treats specially, and text of any kind.
            "[$%{}~\"\\\\\n⟦⟧a-c ]{0,10}".prop_map(|t| (false, t)),
            any::<String>().prop_map(|t| (false, t)),
            "[A-Z_][A-Z0-9_]{0,4}".prop_map(|n| (true, n)),
        ]
    }

    proptest::proptest! {
        /// For any text and variables, Nomad's reading of [`hcl_template`]'s output is the text
        /// with each variable's value in its place.
        #[test]
        fn any_text_and_variables_reach_the_task_as_written(
            pieces in proptest::collection::vec(piece(), 0..8)
        ) {
            let value = |name: &str| format!("<{name}>");
            let ps: Vec<Piece<'_>> = pieces
                .iter()
                .map(|(var, t)| if *var { Piece::Var(t) } else { Piece::Text(t) })
                .collect();
            let expected: String = pieces
                .iter()
                .map(|(var, t)| if *var { value(t) } else { t.clone() })
                .collect();
            let values: Vec<(String, String)> =
                pieces.iter().filter(|(v, _)| *v).map(|(_, n)| (n.clone(), value(n))).collect();
            let vars: Vec<(&str, &str)> =
                values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            proptest::prop_assert_eq!(nomad_reads(&hcl_template(&ps), &vars), expected);
        }
    }

    fn pod_with_labels(
        annotations: serde_json::Value,
        spec: serde_json::Value,
        labels: Option<&[(&str, &str)]>,
    ) -> WorkloadSpec {
        let mut w = WorkloadSpec::from_pod(&pod_json(annotations, spec), &inputs()).unwrap().spec;
        w.namespace_labels =
            labels.map(|l| l.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
        w
    }

    #[test]
    fn a_fresh_install_lets_pods_choose_nothing() {
        let c = json!({"containers": [{"name": "c", "image": "i", "command": ["true"]}]});
        let mut s = settings();
        s.datacenters = vec!["dc1".into()];
        s.namespace = Some("k8s".into());
        s.region = Some("global".into());
        let cases = [
            (
                ANN_DRIVER,
                "raw_exec",
                "task driver \"raw_exec\" is not allowed in namespace \"team-a\" (allowed: \"docker\"; set by --allowed-drivers",
            ),
            ("virtual-kubelet.io/nomad-driver", "exec", "task driver \"exec\""),
            (
                ANN_NAMESPACE,
                "default",
                "Nomad namespace \"default\" is not allowed in namespace \"team-a\" (allowed: \"k8s\"; set by --allowed-nomad-namespaces",
            ),
            (ANN_REGION, "eu-west", "(allowed: \"global\"; set by --allowed-regions"),
            (
                ANN_NODE_POOL,
                "gpu",
                "node pool \"gpu\" is not allowed in namespace \"team-a\" (allowed: none; set by --allowed-node-pools",
            ),
            (
                ANN_PRIORITY,
                "51",
                "priority 51 is not allowed in namespace \"team-a\" (1 to 50; set by --max-priority",
            ),
            (ANN_PRIORITY, "100", "priority 100"),
            (
                ANN_NETWORK_MODE,
                "host",
                "network mode \"host\" is not allowed in namespace \"team-a\" (allowed: \"bridge\"; set by --allowed-network-modes",
            ),
            (
                ANN_DATACENTERS,
                "dc2",
                "datacenter \"dc2\" is not allowed in namespace \"team-a\" (allowed: \"dc1\"; set by --nomad-datacenters, --allowed-datacenters",
            ),
            (ANN_DATACENTERS, "dc1,*", "datacenter \"*\""),
        ];
        for (key, value, want) in cases {
            let err = translate_with(&s, json!({key: value}), c.clone()).map(|_| ()).unwrap_err();
            assert_eq!(err.field, format!("metadata.annotations[{key}]"), "{key}={value}");
            assert!(err.reason.contains(want), "{key}={value}: {err}");
            assert!(
                err.reason.contains("no policy-file rule selects namespace \"team-a\""),
                "{err}"
            );
        }
        // What the pod would get anyway may be named; a lower priority is always allowed.
        for (key, value) in [
            (ANN_DRIVER, "docker"),
            (ANN_NAMESPACE, "k8s"),
            (ANN_REGION, "global"),
            (ANN_NETWORK_MODE, "bridge"),
            (ANN_DATACENTERS, "dc1"),
            (ANN_PRIORITY, "50"),
            (ANN_PRIORITY, "1"),
        ] {
            assert!(translate_with(&s, json!({key: value}), c.clone()).is_ok(), "{key}={value}");
        }
        // Without --nomad-namespace, Nomad's own "default" is the operator's.
        assert!(translate(json!({ANN_NAMESPACE: "default"}), c.clone()).is_ok());
    }

    #[test]
    fn policy_file_rules_widen_the_grant_for_the_namespaces_they_select() {
        use vk_domain::k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
        use vk_domain::policy::{NamespaceSelector, Rule};
        let c = json!({"containers": [{"name": "c", "image": "i", "command": ["true"]}]});
        let mut s = settings();
        let trusted = LabelSelector {
            match_labels: Some([("trust".to_owned(), "high".to_owned())].into()),
            ..Default::default()
        };
        s.policy = std::sync::Arc::new(NomadPolicy {
            base: NomadGrant { max_priority: Some(50), ..NomadGrant::default() },
            rules: vec![
                Rule {
                    name: "team-a may exec".into(),
                    namespaces: NamespaceSelector {
                        names: ["team-a".to_owned()].into(),
                        labels: None,
                    },
                    grant: NomadGrant { drivers: vec!["exec".into()], ..NomadGrant::default() },
                },
                Rule {
                    name: "trusted".into(),
                    namespaces: NamespaceSelector {
                        names: Default::default(),
                        labels: Some(trusted),
                    },
                    grant: NomadGrant {
                        drivers: vec!["raw_exec".into()],
                        max_priority: Some(80),
                        node_pools: vec!["gpu".into()],
                        ..NomadGrant::default()
                    },
                },
            ],
        });
        let high = Some(&[("trust", "high")][..]);
        let job =
            |ann: serde_json::Value, labels| to_job(&pod_with_labels(ann, c.clone(), labels), &s);
        assert!(job(json!({ANN_DRIVER: "exec"}), None).is_ok(), "selected by name");
        let err = job(json!({ANN_DRIVER: "raw_exec"}), None).unwrap_err();
        assert!(
            err.reason.contains("(allowed: \"docker\", \"exec\"; ")
                && err
                    .reason
                    .contains("policy-file rules \"team-a may exec\" select namespace \"team-a\""),
            "{err}"
        );
        assert!(job(json!({ANN_DRIVER: "raw_exec"}), high).is_ok(), "selected by label");
        assert!(job(json!({ANN_PRIORITY: "80", ANN_NODE_POOL: "gpu"}), high).is_ok());
        let err = job(json!({ANN_PRIORITY: "81"}), high).unwrap_err();
        assert!(err.reason.contains("1 to 80") && err.reason.contains("\"trusted\""), "{err}");
        assert!(job(json!({ANN_DRIVER: "raw_exec"}), Some(&[("trust", "low")][..])).is_err());
    }

    #[test]
    fn security_contexts_map_to_docker_options() {
        let spec = |pod_sc: serde_json::Value, sc: serde_json::Value| json!({"securityContext": pod_sc, "containers": [{"name": "c", "image": "i", "securityContext": sc}]});
        let t = translate(
            json!({}),
            spec(
                json!({"fsGroup": 2000, "supplementalGroups": [3000, 2000],
                       "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/audit.json"},
                       "seLinuxOptions": {"level": "s0:c123,c456", "type": "spc_t"}}),
                json!({"runAsUser": 1000, "runAsNonRoot": true, "privileged": false,
                       "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                       "capabilities": {"add": ["NET_BIND_SERVICE", "CAP_SYS_TIME"], "drop": ["ALL"]},
                       "appArmorProfile": {"type": "Localhost", "localhostProfile": "k8s-apparmor-example"}}),
            ),
        )
        .unwrap()
        .job;
        let task = &job_task(&t);
        assert_eq!(task.user, "1000");
        assert_eq!(task.config["cap_add"], json!(["net_bind_service", "sys_time"]));
        assert_eq!(task.config["cap_drop"], json!(["all"]));
        assert_eq!(task.config["readonly_rootfs"], json!(true));
        assert_eq!(
            task.config["security_opt"],
            json!([
                "no-new-privileges",
                "seccomp=/var/lib/kubelet/seccomp/profiles/audit.json",
                "apparmor=k8s-apparmor-example",
                "label=type:spc_t",
                "label=level:s0:c123,c456"
            ])
        );
        assert_eq!(task.config["group_add"], json!(["3000", "2000"]));
        assert!(!task.config.contains_key("privileged"));
        let plain = translate(json!({}), spec(json!({}), json!({}))).unwrap().job;
        let plain = job_task(&plain);
        for k in
            ["cap_add", "cap_drop", "readonly_rootfs", "security_opt", "group_add", "privileged"]
        {
            assert!(!plain.config.contains_key(k), "{k} set without being asked");
        }
        let unconfined = translate(
            json!({}),
            spec(json!({}), json!({"seccompProfile": {"type": "Unconfined"}, "appArmorProfile": {"type": "Unconfined"}, "privileged": true})),
        )
        .unwrap()
        .job;
        let u = job_task(&unconfined);
        assert_eq!(u.config["security_opt"], json!(["seccomp=unconfined", "apparmor=unconfined"]));
        assert_eq!(u.config["privileged"], json!(true));
        let runtime_default = translate(
            json!({}),
            spec(json!({"seccompProfile": {"type": "RuntimeDefault"}}), json!({})),
        )
        .unwrap()
        .job;
        assert!(
            !job_task(&runtime_default).config.contains_key("security_opt"),
            "Docker's default profile"
        );
        for (pod_sc, sc, field) in [
            (json!({"runAsNonRoot": true}), json!({}), "spec.securityContext.runAsNonRoot"),
            (
                json!({}),
                json!({"runAsNonRoot": true}),
                "spec.containers[0].securityContext.runAsNonRoot",
            ),
            (
                json!({}),
                json!({"procMount": "Unmasked"}),
                "spec.containers[0].securityContext.procMount",
            ),
            (
                json!({"supplementalGroupsPolicy": "Strict"}),
                json!({}),
                "spec.securityContext.supplementalGroupsPolicy",
            ),
            (json!({"runAsGroup": 5}), json!({}), "spec.securityContext.runAsGroup"),
            (
                json!({}),
                json!({"capabilities": {"add": ["NET ADMIN"]}}),
                "spec.containers[0].securityContext.capabilities.add",
            ),
        ] {
            let err =
                translate(json!({}), spec(pod_sc.clone(), sc.clone())).map(|_| ()).unwrap_err();
            assert_eq!(err.field, field, "{pod_sc} {sc}");
        }
    }

    /// Safe sysctls and hostAliases: Docker's `sysctl` and `extra_hosts`; the exec drivers,
    /// which share the host's kernel settings and /etc/hosts, refuse them.
    #[test]
    fn sysctls_and_host_aliases_reach_docker_and_are_refused_elsewhere() {
        let spec = json!({
            "securityContext": {"sysctls": [{"name": "net/ipv4/ip_local_port_range", "value": "1024 65000"},
                                            {"name": "kernel.shm_rmid_forced", "value": "1"}]},
            "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["db", "db.local"]}],
            "containers": [{"name": "c", "image": "i", "command": ["true"]}]
        });
        let t = job_task(&translate(json!({}), spec.clone()).unwrap().job);
        assert_eq!(
            t.config["sysctl"],
            json!([{"net.ipv4.ip_local_port_range": "1024 65000", "kernel.shm_rmid_forced": "1"}])
        );
        assert_eq!(t.config["extra_hosts"], json!(["db\tdb.local:10.1.2.3"]));
        // With the volumes task, a group network's /etc/hosts is written as the kubelet writes
        // it, one line per alias entry; the containers wait for it and get no extra_hosts.
        let s = JobSettings { volume_setup_image: Some("busybox:1.37".into()), ..settings() };
        let PodJob { job, gated, .. } = translate_with(&s, json!({}), spec.clone()).unwrap();
        let tasks = &job.task_groups[0].tasks;
        assert_eq!(tasks[0].name, VOLUMES_TASK);
        assert_eq!(tasks[0].env[HOST_ALIASES_ENV], "10.1.2.3\tdb\tdb.local\n");
        assert!(tasks[1].config.get("extra_hosts").is_none(), "{:?}", tasks[1].config);
        assert!(gated.is_empty(), "no init container to hold");
        let raw = translate_permissive(json!({ANN_DRIVER: "raw_exec"}), spec.clone());
        assert_eq!(raw.map(|_| ()).unwrap_err().field, "spec.hostAliases");
        let mut no_aliases = spec;
        no_aliases.as_object_mut().unwrap().remove("hostAliases");
        let raw = translate_permissive(json!({ANN_DRIVER: "raw_exec"}), no_aliases);
        assert_eq!(raw.map(|_| ()).unwrap_err().field, "spec.securityContext.sysctls");
    }

    fn job_task(job: &Job) -> Task {
        job.task_groups[0].tasks[0].clone()
    }

    #[test]
    fn what_the_exec_drivers_cannot_honour_is_refused() {
        let spec = |pod_sc: serde_json::Value, sc: serde_json::Value| json!({"securityContext": pod_sc, "containers": [{"name": "c", "image": "i", "command": ["id"], "securityContext": sc}]});
        let cases = [
            (
                json!({}),
                json!({"capabilities": {"add": ["NET_ADMIN"]}}),
                "spec.containers[0].securityContext.capabilities.add",
            ),
            (
                json!({}),
                json!({"capabilities": {"drop": ["ALL"]}}),
                "spec.containers[0].securityContext.capabilities.drop",
            ),
            (
                json!({}),
                json!({"readOnlyRootFilesystem": true}),
                "spec.containers[0].securityContext.readOnlyRootFilesystem",
            ),
            (
                json!({}),
                json!({"allowPrivilegeEscalation": false}),
                "spec.containers[0].securityContext.allowPrivilegeEscalation",
            ),
            (
                json!({"seccompProfile": {"type": "RuntimeDefault"}}),
                json!({}),
                "spec.securityContext.seccompProfile",
            ),
            (
                json!({}),
                json!({"appArmorProfile": {"type": "RuntimeDefault"}}),
                "spec.containers[0].securityContext.appArmorProfile",
            ),
            (
                json!({"seLinuxOptions": {"level": "s0"}}),
                json!({}),
                "spec.securityContext.seLinuxOptions",
            ),
            (
                json!({"supplementalGroups": [5]}),
                json!({}),
                "spec.securityContext.supplementalGroups",
            ),
            (json!({"fsGroup": 5}), json!({}), "spec.securityContext.fsGroup"),
            (json!({"runAsNonRoot": true}), json!({}), "spec.securityContext.runAsNonRoot"),
            (
                json!({}),
                json!({"runAsNonRoot": true, "runAsUser": 1000}),
                "spec.containers[0].securityContext.runAsUser",
            ),
            (
                json!({}),
                json!({"privileged": true}),
                "spec.containers[0].securityContext.privileged",
            ),
        ];
        for driver in ["raw_exec", "exec"] {
            for (pod_sc, sc, field) in &cases {
                if driver == "exec" && field.contains("capabilities") {
                    continue;
                }
                let r = translate_permissive(
                    json!({ANN_DRIVER: driver}),
                    spec(pod_sc.clone(), sc.clone()),
                );
                match r {
                    Err(e) => assert_eq!(e.field, *field, "{driver}: {pod_sc} {sc}"),
                    Ok(_) => panic!("{driver} accepted {pod_sc} {sc}"),
                }
            }
        }
        // exec honours capabilities; both honour what they can.
        let exec = translate_permissive(
            json!({ANN_DRIVER: "exec"}),
            spec(json!({"seccompProfile": {"type": "Unconfined"}}), json!({"runAsUser": 65534, "runAsNonRoot": true, "capabilities": {"add": ["NET_RAW"], "drop": ["ALL"]}})),
        )
        .unwrap()
        .job;
        let t = job_task(&exec);
        assert_eq!(
            (t.user.as_str(), &t.config["cap_add"], &t.config["cap_drop"]),
            ("nobody", &json!(["net_raw"]), &json!(["all"]))
        );
    }

    /// Two pod names whose IDs collided under the FNV-1a scheme, found by a parallel collision
    /// search (2^32 hashes, a minute on two cores): the old ID let one pod take the other's job.
    #[test]
    fn a_forged_collision_of_the_old_hash_gives_two_ids_now() {
        let a = PodKey::new("e2e-hostile", "forged-fnv-collision-of-two-pod-names-eiep25qr3dq4j")
            .unwrap();
        let b = PodKey::new("e2e-hostile", "forged-fnv-collision-of-two-pod-names-ncdlgzluhxobq")
            .unwrap();
        assert_eq!(fnv(&[&raw_job_id("k8s-", &a)]), "395d6f58a8095121");
        assert_eq!(legacy_job_id("k8s-", &a), legacy_job_id("k8s-", &b), "the collision");
        let (ia, ib) = (job_id("k8s-", &a), job_id("k8s-", &b));
        assert_ne!(ia, ib);
        assert_eq!((ia.len(), ib.len()), (MAX_JOB_ID, MAX_JOB_ID));
        assert!(ia.starts_with("k8s-e2e-hostile_forged-fnv-H"), "{ia}");
        assert!(ia.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '~')));
        assert_eq!(legacy_job_id("k8s-", &PodKey::new("a", "short").unwrap()), None);
    }

    #[test]
    fn huge_quantities_are_refused_naming_the_field() {
        for (res, field) in [
            (json!({"requests": {"cpu": "1e15"}}), "spec.containers[0].resources.requests.cpu"),
            (json!({"limits": {"cpu": "1e15"}}), "spec.containers[0].resources.limits.cpu"),
        ] {
            let spec = json!({"containers": [{"name": "c", "image": "i", "resources": res}]});
            let err = translate(json!({}), spec).map(|_| ()).unwrap_err();
            assert_eq!(err.field, field);
            assert!(err.reason.contains("beyond any Nomad node"), "{err}");
        }
    }

    #[test]
    fn file_paths_nomad_would_interpolate_and_binds_docker_would_split_are_refused() {
        let spec = json!({"containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "info", "mountPath": "/info"}]}],
                          "volumes": [{"name": "info", "downwardAPI": {"items": [{"path": "x${attr.unique.hostname}", "fieldRef": {"fieldPath": "metadata.name"}}]}}]});
        let err = translate(json!({}), spec).map(|_| ()).unwrap_err();
        assert_eq!(err.field, "spec.volumes[0]");
        for (m, field) in [
            (
                json!({"name": "s", "mountPath": "/a:/b"}),
                "spec.containers[0].volumeMounts[0].mountPath",
            ),
            (
                json!({"name": "s", "mountPath": "/a", "subPath": "x:y"}),
                "spec.containers[0].volumeMounts[0].subPath",
            ),
        ] {
            let spec = json!({"containers": [{"name": "c", "image": "i", "volumeMounts": [m]}], "volumes": [{"name": "s", "emptyDir": {}}]});
            assert_eq!(translate(json!({}), spec).map(|_| ()).unwrap_err().field, field);
        }
    }

    /// The settings of the node the hostile corpus runs on end to end: raw_exec, datacenter
    /// dc1, and nothing allowed beyond.
    fn hostile_node() -> JobSettings {
        JobSettings {
            default_driver: "raw_exec".into(),
            datacenters: vec!["dc1".into()],
            ..settings()
        }
    }

    fn hostile_corpus() -> serde_json::Value {
        serde_json::from_str(include_str!("../../../tests/corpus/hostile.json")).unwrap()
    }

    /// A hostile corpus case as the app hands it on: translated (refusals of the domain), probe
    /// hosts checked against the default policy, then made a job. A refusal is (the pod's status
    /// reason, its message): `ProviderFailed` with `<field>: <reason>`, a kubelet rejection with
    /// its reason, or `CreateContainerConfigError`.
    fn hostile_translate(
        case: &serde_json::Value,
        inputs: &Inputs,
    ) -> Result<PodJob, (String, String)> {
        use vk_domain::workload::Refusal;
        let failed = |u: Unsupported| ("ProviderFailed".to_owned(), u.to_string());
        let mut container =
            json!({"name": "main", "image": "busybox", "command": ["sleep", "3600"]});
        for (k, v) in case["container"].as_object().into_iter().flatten() {
            container[k] = v.clone();
        }
        let mut spec = json!({"containers": [container]});
        for (k, v) in case["spec"].as_object().into_iter().flatten() {
            spec[k] = v.clone();
        }
        let p = pod_json(case.get("annotations").cloned().unwrap_or(json!({})), spec);
        let w = match WorkloadSpec::from_pod(&p, inputs) {
            Ok(t) => t.spec,
            Err(Refusal::Unsupported(u)) => return Err(failed(u)),
            Err(Refusal::Rejected(r)) => return Err((r.reason.to_owned(), r.message)),
            Err(Refusal::Missing(m)) => {
                return Err(("CreateContainerConfigError".into(), m.message));
            }
        };
        vk_domain::policy::check_probes(&w, &Default::default()).map_err(failed)?;
        to_job(&w, &hostile_node()).map_err(failed)
    }

    /// Every refusal of `tests/corpus/hostile.json` names its field and says why; nothing of it
    /// would reach Nomad (the error comes before any request).
    #[test]
    fn the_hostile_corpus_is_refused_naming_each_field() {
        let corpus = hostile_corpus();
        let cases = corpus["refused"].as_array().unwrap();
        assert!(cases.len() >= 40, "{}", cases.len());
        let mut inputs = inputs();
        // A node of a few machines, as the end-to-end stack's.
        inputs.node_allocatable = vk_domain::node::NodeCapacity {
            cpu_millis: 16_000,
            memory_bytes: 64 << 30,
            ephemeral_storage_bytes: 1 << 40,
        };
        for case in cases {
            let name = case["case"].as_str().unwrap();
            let (reason, text) = hostile_translate(case, &inputs).map(|_| ()).expect_err(name);
            assert_eq!(
                reason,
                case["reason"].as_str().unwrap_or("ProviderFailed"),
                "{name}: {text}"
            );
            let field = case["field"].as_str().unwrap();
            assert!(text.starts_with(&format!("{field}: ")) || field.is_empty(), "{name}: {text}");
            let want = case["message"].as_str().unwrap();
            assert!(text.contains(want), "{name}: {text} lacks {want:?}");
        }
    }

    /// Every `verbatim` case of the corpus: what Nomad makes of the job's arguments (HCL2
    /// evaluation, with the task's environment) is the text the pod wrote.
    #[test]
    fn the_hostile_corpus_reaches_the_task_as_written() {
        let corpus = hostile_corpus();
        let mut inputs = inputs();
        inputs
            .secrets
            .insert("creds".into(), Some([("password".to_owned(), b"s3cr3t".to_vec())].into()));
        for case in corpus["verbatim"].as_array().unwrap() {
            let name = case["case"].as_str().unwrap();
            let mut env = Vec::new();
            for (k, v) in case["env"].as_object().into_iter().flatten() {
                env.push(json!({"name": k, "value": v}));
            }
            for (k, key) in case["secret_env"].as_object().into_iter().flatten() {
                env.push(json!({"name": k, "valueFrom": {"secretKeyRef": {"name": "creds", "key": key}}}));
            }
            let args: Vec<serde_json::Value> = std::iter::once(json!("%s\n"))
                .chain(case["args"].as_array().unwrap().iter().cloned())
                .collect();
            let c = json!({"container": {"command": ["printf"], "args": args, "env": env}});
            let job =
                hostile_translate(&c, &inputs).unwrap_or_else(|e| panic!("{name}: {e:?}")).job;
            let t = job_task(&job);
            let mut vars: Vec<(String, String)> = t.env.clone().into_iter().collect();
            vars.push(("PASS".into(), "s3cr3t".into()));
            let vars: Vec<(&str, &str)> =
                vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let got: Vec<String> = serde_json::from_value::<Vec<String>>(t.config["args"].clone())
                .unwrap()
                .iter()
                .skip(1)
                .map(|a| nomad_reads(a, &vars))
                .collect();
            let want: Vec<&str> =
                case["output"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
            assert_eq!(got.join("\n"), want.join("\n"), "{name}");
        }
    }

    #[test]
    fn oversized_data_is_refused_before_nomad_does() {
        let spec = json!({"containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "big", "mountPath": "/b"}]}],
                          "volumes": [{"name": "big", "configMap": {"name": "big"}}]});
        let mut inputs = inputs();
        inputs.config_maps.insert(
            "big".into(),
            Some([("k".to_owned(), vec![b'x'; 60_000])].into_iter().collect()),
        );
        let w = WorkloadSpec::from_pod(&pod_json(json!({}), spec), &inputs).unwrap().spec;
        let err = to_job(&w, &settings()).unwrap_err();
        assert_eq!(err.field, "spec.volumes");
        assert!(err.reason.contains("65536"), "{err}");
    }

    #[test]
    fn namespace_and_region_annotations_place_the_job() {
        let c = json!({"containers": [{"name": "c", "image": "i"}]});
        let pj =
            translate_permissive(json!({ANN_NAMESPACE: "apps", ANN_REGION: "eu-west"}), c.clone())
                .unwrap();
        assert_eq!(pj.job.namespace.as_deref(), Some("apps"));
        assert_eq!(pj.job.region.as_deref(), Some("eu-west"));
        assert_eq!(pj.at.encode(), "k8s-team-a_web@apps@eu-west");
        let plain = translate_permissive(json!({}), c.clone()).unwrap();
        assert_eq!(plain.at, JobRef::local("k8s-team-a_web"));
        assert_eq!(plain.at.encode(), "k8s-team-a_web");
        for r in [
            JobRef::local("j"),
            JobRef { id: "j".into(), namespace: Some("n".into()), region: None },
            JobRef { id: "j".into(), namespace: None, region: Some("r".into()) },
            JobRef { id: "j".into(), namespace: Some("n".into()), region: Some("r".into()) },
        ] {
            assert_eq!(JobRef::parse(&r.encode()), r);
        }
        let err = translate_permissive(json!({ANN_REGION: "eu west"}), c).unwrap_err();
        assert_eq!(err.field, format!("metadata.annotations[{ANN_REGION}]"));
    }
}
