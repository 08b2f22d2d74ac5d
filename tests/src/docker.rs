//! Docker for the stack's pods: the test images, the check that the engine and the images are
//! there, and the removal of the containers Nomad's docker driver leaves behind.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, ensure};

/// The image of the test containers on the docker driver (`scripts/images.sh` makes it offline
/// from Debian's busybox-static: a shell, `httpd`, `nc`, `wget`, `ip`, ...).
pub const BUSYBOX: &str = "vk-test/busybox:1.35";

/// [`BUSYBOX`] under a second tag (`scripts/images.sh`), for a pod whose image changes.
pub const BUSYBOX_NEXT: &str = "vk-test/busybox:next";

/// The infra (pause) image of bridge-mode allocations, made by `scripts/images.sh`.
pub const PAUSE: &str = "vk-test/pause:3.10";

/// Checks that a Docker engine answers and that the test images are there.
///
/// # Errors
/// Either missing, with the commands that make them.
pub fn check_docker() -> anyhow::Result<()> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", BUSYBOX, PAUSE])
        .output()
        .context("running docker (scripts/docker.sh installs it)")?;
    ensure!(
        out.status.success(),
        "the Docker engine or the test images are missing ({}): run scripts/docker.sh and scripts/images.sh",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Removes (`docker rm -f`) the containers of the allocations found under the Nomad data
/// directories `data` (`alloc/<alloc ID>/`; Nomad labels each container, pause containers too,
/// `com.hashicorp.nomad.alloc_id`). Best effort: no Docker, nothing to do.
pub(crate) fn remove_containers(data: &[PathBuf]) {
    let allocs: std::collections::HashSet<String> = data
        .iter()
        .filter_map(|d| std::fs::read_dir(d.join("alloc")).ok())
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    if allocs.is_empty() {
        return;
    }
    // Every Nomad container with its allocation: label filters of one key are ANDed by Docker,
    // so the allocations are matched here.
    let Ok(out) = Command::new("docker")
        .args(["ps", "-a", "--filter", "label=com.hashicorp.nomad.alloc_id"])
        .args(["--format", "{{.ID}} {{.Label \"com.hashicorp.nomad.alloc_id\"}}"])
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, alloc)| allocs.contains(*alloc))
        .map(|(id, _)| id.to_owned())
        .collect();
    for chunk in ids.chunks(100) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v"])
            .args(chunk)
            .stdout(std::process::Stdio::null())
            .status();
    }
}
