//! A container as the docker driver runs it: the image and its registry login, the entrypoint,
//! the volumes bound at their mount paths (or tmpfs mounts), the termination message file, the
//! hostAliases; the security context is [`super::security::docker_security`]'s.

use serde_json::{Map, Value, json};
use vk_domain::error::Unsupported;
use vk_domain::volume::{Mount, Source, Volume};
use vk_domain::workload::ContainerSpec;

use super::Builder;
use super::interpolate::{Piece, hcl_template, hcl_text};
use super::security::docker_security;
use super::volumes::volume_dir;
use crate::api::Template;

/// Environment variable of a docker task holding the user name of its image's registry login
/// (from `imagePullSecrets`), which the driver's `auth` block reads when the task starts. It is
/// also in the container's environment: Nomad has no other way to hand a task's driver a value
/// that is not in the job.
pub const REGISTRY_USERNAME: &str = "VK_REGISTRY_USERNAME";

/// As [`REGISTRY_USERNAME`], the password.
pub const REGISTRY_PASSWORD: &str = "VK_REGISTRY_PASSWORD";

/// Where, in its task directory, a docker task's termination message file lives: an empty file
/// made by a template before the task starts, bound at the container's
/// `terminationMessagePath`, read once the container has terminated.
pub const TERMINATION_LOG: &str = "local/vk-termination-log";

/// The template making [`TERMINATION_LOG`]. Nomad refuses an empty template: a comment renders
/// the empty file. Rendered again (emptied) each time the task starts, as each container instance
/// gets a new file.
pub(super) fn termination_log_template() -> Template {
    Template {
        embedded_tmpl: "{{/* termination message */}}".into(),
        dest_path: TERMINATION_LOG.into(),
        change_mode: "noop".into(),
        perms: "0666".into(),
        ..Template::default()
    }
}

/// Refuses a mount whose `mountPath` or `subPath` (of the mount at `field`) contains `:`:
/// Docker splits a bind at ':' (source:target:mode).
fn refuse_colons(field: &str, m: &Mount) -> Result<(), Unsupported> {
    for (name, v) in [("mountPath", Some(&m.mount_path)), ("subPath", m.sub_path.as_ref())] {
        if let Some(v) = v.filter(|v| v.contains(':')) {
            return Err(Unsupported::new(
                format!("{field}.{name}"),
                format!("{v:?} contains ':', which the docker driver reads as a separator"),
            ));
        }
    }
    Ok(())
}

impl Builder<'_> {
    /// The docker driver's configuration of container `c` (at `field`) into `config`, with the
    /// `command` and `args` [`Builder::args`] wrote; returns the task's `user`.
    ///
    /// # Errors
    /// [`Unsupported`] naming the field for a mount or a security setting docker cannot be given.
    pub(super) fn docker_config(
        &self,
        field: &str,
        c: &ContainerSpec,
        (command, args): (Vec<String>, Vec<String>),
        config: &mut Map<String, Value>,
    ) -> Result<String, Unsupported> {
        config.insert("image".into(), json!(hcl_text(&c.image)));
        if c.pull_always {
            config.insert("force_pull".into(), json!(true));
        }
        // imagePullSecrets: the driver's registry login, read from the task's environment when
        // it starts (rendered from the pod's Variable: the credentials never enter the job).
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
        // Bridge and CNI modes: no `network_mode`, so the container joins the allocation's
        // network namespace (Nomad's pause container) with the pod's other containers. Host and
        // none: Docker's own modes of that name (without it a container would get a namespace of
        // its own on docker0).
        if matches!(self.network_mode.as_str(), "host" | "none") {
            config.insert("network_mode".into(), json!(self.network_mode));
        }
        let (binds, tmpfs) = self.docker_mounts(field, c)?;
        if !binds.is_empty() {
            config.insert("volumes".into(), json!(binds));
        }
        if !tmpfs.is_empty() {
            config.insert("mount".into(), json!(tmpfs));
        }
        if let Some(hosts) = self.extra_hosts() {
            config.insert("extra_hosts".into(), json!(hosts));
        }
        docker_security(field, &c.security, &self.settings.seccomp_profile_root, config)
    }

    /// The binds (`volumes`) and tmpfs mounts (`mount`) of container `c` (at `field`): its volume
    /// mounts, then its termination message file.
    fn docker_mounts(
        &self,
        field: &str,
        c: &ContainerSpec,
    ) -> Result<(Vec<String>, Vec<Value>), Unsupported> {
        let mut binds = Vec::new();
        let mut tmpfs = Vec::new();
        for (i, m) in c.mounts.iter().enumerate() {
            let field = format!("{field}.volumeMounts[{i}]");
            refuse_colons(&field, m)?;
            let vol = self.spec.volumes.iter().find(|v| v.name == m.volume);
            match self.tmpfs_mount(&field, c, m, vol)? {
                Some(t) => tmpfs.push(t),
                None => binds.push(self.bind(&field, m, vol)?),
            }
        }
        // terminationMessagePath: a file of the task's own, bound there (as the kubelet binds a
        // file of its own), writable by any user.
        if let Some(path) = &c.termination_message_path {
            if path.contains(':') {
                return Err(Unsupported::new(
                    format!("{field}.terminationMessagePath"),
                    format!("{path:?} contains ':', which the docker driver reads as a separator"),
                ));
            }
            binds.push(hcl_text(&format!("{TERMINATION_LOG}:{path}")));
        }
        Ok((binds, tmpfs))
    }

    /// Mount `m` (at `field`) of volume `vol` as a tmpfs of container `c`, when the volume is one
    /// ([`Builder::tmpfs`]): medium Memory in one container, a tmpfs of the size limit (else the
    /// container's memory limit, as the kubelet sizes it), mode 0777 as the kubelet leaves it.
    ///
    /// # Errors
    /// [`Unsupported`] for a `subPath` into it, which a tmpfs of its own cannot give.
    fn tmpfs_mount(
        &self,
        field: &str,
        c: &ContainerSpec,
        m: &Mount,
        vol: Option<&Volume>,
    ) -> Result<Option<Value>, Unsupported> {
        let memory = vol.filter(|v| self.tmpfs(v)).and_then(|v| match v.source {
            Source::EmptyDir { size_limit_bytes, .. } => Some((v, size_limit_bytes)),
            Source::Files(_) => None,
        });
        let Some((v, size_limit_bytes)) = memory else { return Ok(None) };
        if m.sub_path.is_some() {
            return Err(Unsupported::new(
                format!("{field}.subPath"),
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
        Ok(Some(json!({
            "type": "tmpfs",
            "target": hcl_text(&m.mount_path),
            "readonly": m.read_only,
            "tmpfs_options": [options],
        })))
    }

    /// Mount `m` (at `field`) of volume `vol` as a bind: `<host path>:<mountPath>[:ro]`.
    ///
    /// # Errors
    /// [`Unsupported`] for a `subPath` into an emptyDir that a container could make a symbolic
    /// link.
    fn bind(&self, field: &str, m: &Mount, vol: Option<&Volume>) -> Result<String, Unsupported> {
        let mut host = vol.map_or_else(|| volume_dir(&m.volume), |v| self.volume_path(v));
        if let Some(sub) = &m.sub_path {
            // Docker resolves a bind's source when it creates the container and follows symbolic
            // links: a container of the pod (an init container, a sidecar, this one before a
            // restart) could make `<volume>/<subPath>` a link to `/` and get the node's root
            // filesystem mounted (the kubelet's CVE-2017-1002101). Nomad's check of the source is
            // textual, so a subPath is only taken into volumes no container can write.
            if vol.is_some_and(|v| {
                matches!(v.source, Source::EmptyDir { .. }) && !self.single_run_user(&v.name)
            }) {
                return Err(Unsupported::new(
                    format!("{field}.subPath"),
                    format!(
                        "{sub:?} into emptyDir {:?} cannot be mounted safely by the docker driver: a container could replace it with a symbolic link, which Docker would follow out of the volume (CVE-2017-1002101); mount the whole volume, or use it from one container of a restartPolicy: Never pod",
                        m.volume
                    ),
                ));
            }
            host = format!("{host}/{sub}");
        }
        // ConfigMap, Secret, downward API and projected volumes are read-only in the container
        // whatever the mount says, as the kubelet mounts them.
        let api_data = vol.is_some_and(|v| matches!(v.source, Source::Files(_)));
        let ro = if m.read_only || api_data { ":ro" } else { "" };
        Ok(hcl_text(&format!("{host}:{}{ro}", m.mount_path)))
    }

    /// hostAliases as Docker's `--add-host` (`extra_hosts`), one per entry with its names
    /// tab-separated (Docker writes `<IP>\t<host>`, which gives the kubelet's line; host names are
    /// DNS names, without ':' or tabs); `None` when there are none or when the volumes task
    /// writes them into the group network's `/etc/hosts` ([`Builder::shared_hosts_file`]).
    fn extra_hosts(&self) -> Option<Vec<String>> {
        if self.spec.host_aliases.is_empty() || self.shared_hosts_file() {
            return None;
        }
        let hosts = self
            .spec
            .host_aliases
            .iter()
            .map(|(ip, names)| hcl_text(&format!("{}:{ip}", names.join("\t"))));
        Some(hosts.collect())
    }
}
