//! Where a pod's volumes live on Nomad: the allocation's shared directory, a docker task's
//! in-memory `secrets/`, or a Docker tmpfs of the one container mounting a Memory emptyDir; and
//! which API data volumes come as a bundle kept by the files task ([`super::FILES_TASK`]).

use vk_domain::pod::RestartPolicy;
use vk_domain::volume::{Source, Volume};

use super::Builder;
use super::internal::FILES_TASK;

/// The path of a volume in the allocation's shared directory, relative to a task directory.
pub(super) fn volume_dir(volume: &str) -> String {
    format!("../alloc/volumes/{volume}")
}

/// The path of a volume holding Secret data (a Secret's files, a token) for a docker task: in the
/// task's own `secrets/` directory, which Nomad mounts as an in-memory tmpfs, so no Secret byte is
/// written to the node's disk. Each task mounting the volume renders its own copy.
pub(super) fn secret_volume_dir(volume: &str) -> String {
    format!("secrets/vk-volumes/{volume}")
}

impl Builder<'_> {
    /// Whether emptyDir `vol` is, on docker, a tmpfs of the one container mounting it:
    /// `medium: Memory` mounted by a single container that is never started again
    /// (`restartPolicy: Never`, not a sidecar). A Docker tmpfs belongs to one container and goes
    /// with it, while the kubelet's outlives container restarts: a Memory emptyDir shared by
    /// several containers, or of one that restarts, lives in the allocation's directory on disk.
    pub(super) fn tmpfs(&self, vol: &Volume) -> bool {
        self.driver.binds_volumes()
            && matches!(vol.source, Source::EmptyDir { memory: true, .. })
            && self.single_run_user(&vol.name)
    }

    /// Whether volume `name` is mounted by exactly one container, which is never started again
    /// (`restartPolicy: Never`, not a sidecar). Then `subPath` mounts into an emptyDir are safe
    /// on docker: Docker resolves a bind's source, following symbolic links, each time it creates
    /// the container, so no other container may be able to write the volume before, and this one
    /// may never be created again; [`VOLUMES_TASK`](super::VOLUMES_TASK) makes each subPath directory before that
    /// container starts.
    pub(super) fn single_run_user(&self, name: &str) -> bool {
        let mut users =
            self.spec.all_containers().filter(|c| c.mounts.iter().any(|m| m.volume == name));
        self.spec.restart_policy == RestartPolicy::Never
            && users.next().is_some_and(|c| !c.sidecar)
            && users.next().is_none()
    }

    /// How many of the pod's containers mount volume `name`.
    pub(super) fn mounted_by(&self, name: &str) -> usize {
        self.spec.all_containers().filter(|c| c.mounts.iter().any(|m| m.volume == name)).count()
    }

    /// Whether the files of volume `vol` come from its bundle ([`FILES_TASK`]): on docker with a
    /// volume setup image, an API data volume that some container mounts and that reads no
    /// Secret or token, or whose files may come and go ([`Volume::keys_may_change`]: per-file
    /// templates cannot add a file nor remove one). A volume with Secret data and a fixed set of
    /// files (a token, listed `items`) keeps its per-file templates in each task's `secrets/`.
    pub(super) fn bundled(&self, vol: &Volume) -> bool {
        self.driver.has_setup_tasks()
            && self.settings.volume_setup_image.is_some()
            && matches!(vol.source, Source::Files(_))
            && (!vol.secret || vol.keys_may_change)
            && self.mounted_by(&vol.name) > 0
    }

    /// Where volume `vol` lives for a task of this pod: for a docker task and a volume with
    /// Secret data, in-memory: [`FILES_TASK`]'s `secrets/` when the volume is bundled, else the
    /// task's own ([`secret_volume_dir`]); else the allocation's shared directory
    /// ([`volume_dir`]).
    pub(super) fn volume_path(&self, vol: &Volume) -> String {
        let secret = self.driver.binds_volumes()
            && (vol.secret
                || matches!(&vol.source, Source::Files(fs) if fs.iter().any(|f| f.secret)));
        match (secret, self.bundled(vol)) {
            (true, true) => format!("../{FILES_TASK}/{}", secret_volume_dir(&vol.name)),
            (true, false) => secret_volume_dir(&vol.name),
            (false, _) => volume_dir(&vol.name),
        }
    }
}
