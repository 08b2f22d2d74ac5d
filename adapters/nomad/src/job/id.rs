//! Where a pod's job lives and what it is called: the job ID, [`JobRef`] (ID, Nomad namespace
//! and region, as the workload ID), the paths of the pod's Variable and of its gates, and the
//! short hashes that key the Variable's items.

use vk_domain::pod::PodKey;

use super::GROUP;

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

pub(super) fn raw_job_id(prefix: &str, key: &PodKey) -> String {
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

/// FNV-1a, 64 bits: short, stable item keys for paths and names of any length.
pub(super) fn fnv(parts: &[&str]) -> String {
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
