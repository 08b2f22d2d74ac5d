//! The Nomad task drivers a pod can run on, parsed once from the driver's name; every decision
//! that depends on the driver is a method here or a match on [`Driver`].

use std::fmt;

/// A Nomad task driver this adapter can configure. Nomad's job JSON still carries the name
/// ([`Driver::as_str`]); the enum is for the translation's own decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Driver {
    /// `docker`: a container of the pod's image, with binds, tmpfs mounts and a security context
    /// of its own.
    Docker,
    /// `raw_exec`: the command runs on the host, as the Nomad agent's user unless told otherwise.
    RawExec,
    /// `exec`: the command runs in a chroot with namespaces of its own.
    Exec,
}

impl Driver {
    /// Every driver, in the order refusals list them.
    pub const ALL: [Driver; 3] = [Driver::Docker, Driver::RawExec, Driver::Exec];

    /// The driver of Nomad's name (`docker`, `raw_exec`, `exec`); `None` for any other name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// Nomad's name of the driver, as a task's `Driver` carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Docker => "docker",
            Driver::RawExec => "raw_exec",
            Driver::Exec => "exec",
        }
    }

    /// The group network mode a pod on this driver gets when it neither chooses one by annotation
    /// nor sets `spec.hostNetwork`: `bridge` for the drivers that can join the allocation's network
    /// namespace (`docker`, `exec`), so the pod has an address of its own and its containers share
    /// `localhost`, as a Kubernetes pod's do; `host` for `raw_exec`, whose processes run in the
    /// host's network namespace whatever the group says.
    pub fn default_network_mode(self) -> &'static str {
        match self {
            Driver::Docker | Driver::Exec => "bridge",
            Driver::RawExec => "host",
        }
    }

    /// Whether the task has a filesystem of its own into which each volume is bound at its
    /// `mountPath` (docker's `volumes` and `mount`): then a Memory emptyDir can be a tmpfs, a
    /// volume with Secret data stays in memory, and the termination message file is bound at
    /// `terminationMessagePath`. The exec drivers, which have no mount namespace of their own
    /// here, find the volumes under `$NOMAD_ALLOC_DIR/volumes/`.
    pub fn binds_volumes(self) -> bool {
        matches!(self, Driver::Docker)
    }

    /// Whether a pod on this driver gets the virtual kubelet's own prestart tasks (`vk_volumes`,
    /// `vk_files`) when a volume setup image is configured: they run on the docker driver beside
    /// the pod's containers and prepare what those bind (the emptyDir directories, the bundled
    /// volumes' files, the group network's `/etc/hosts`).
    pub fn has_setup_tasks(self) -> bool {
        matches!(self, Driver::Docker)
    }

    /// Whether the driver pulls the container's image itself, so that `imagePullSecrets` give it
    /// a registry login (docker's `auth` block). The exec drivers run a command of the client's.
    pub fn pulls_images(self) -> bool {
        matches!(self, Driver::Docker)
    }

    /// Whether the driver takes hard limits beside the task's resources (docker's
    /// `memory_hard_limit` and `cpu_hard_limit`).
    pub fn has_hard_limits(self) -> bool {
        matches!(self, Driver::Docker)
    }

    /// Whether the driver takes a capability set (`cap_add`, `cap_drop`): docker and exec do,
    /// raw_exec runs with the agent's.
    pub fn takes_capabilities(self) -> bool {
        matches!(self, Driver::Docker | Driver::Exec)
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
