//! The virtual kubelet's own prestart tasks of a docker pod, over the volume setup image:
//! [`VOLUMES_TASK`] makes the emptyDir directories and the kubelet's `/etc/hosts`, [`FILES_TASK`]
//! writes the bundled API data volumes and keeps them in step with the pod's Variable. Neither is
//! a container of the pod.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, json};
use vk_domain::pod::RestartPolicy;
use vk_domain::volume::{Source, Volume};

use super::Builder;
use super::driver::Driver;
use super::id::{fnv, variable_path};
use super::interpolate::hcl_text;
use super::restart::{ns, policies};
use super::templates::{LEFT, RIGHT, go_string};
use crate::api::{Lifecycle, Resources, Task, Template};

/// The task that prepares a docker pod's volumes before any container starts, as the kubelet
/// does: the emptyDir directories (`pkg/volume/emptydir`: mode 0777; with `fsGroup`, owned by
/// that group with the set-group-ID bit, so new files get the group) and the hostAliases of
/// `/etc/hosts`, and it ends only once [`FILES_TASK`] has written the bundled volumes' files
/// ([`FILES_READY`]): a `prestart` task of
/// [`JobSettings::volume_setup_image`](super::JobSettings::volume_setup_image) running `mkdir`,
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
pub(super) const VOLUMES_SCRIPT: &str = r#"set -e; mode=$1; group=$2; shift 2
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

/// The task that keeps the files of the pod's API data volumes as the kubelet keeps them on docker:
/// a prestart sidecar over
/// [`JobSettings::volume_setup_image`](super::JobSettings::volume_setup_image) that renders each
/// bundled volume's bundle (one Variable item, [`bundle_key`]) and, when it changes, writes the
/// files that are new or changed and removes those that are gone, so files appear when their
/// ConfigMap, Secret (or key) does. Volumes without Secret data are written into the allocation's
/// shared directory; those with Secret data (a Secret read whole or optional) into this task's own
/// in-memory `secrets/` (a tmpfs Nomad mounts), which the containers bind read-only, so no Secret
/// byte reaches the node's disk. Its first write is done before any container starts
/// ([`FILES_READY`], [`VOLUMES_TASK`]). Like the volumes task, it is not a container of the pod.
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
pub(super) const UNPACK_FN: &str = r#"set -f
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
pub(super) const FILES_SCRIPT: &str = r#"trap 'exit 0' TERM INT
while :; do
  for v in $VK_BUNDLES; do unpack "$v"; done
  for v in $VK_SECRET_BUNDLES; do unpack "$v" secret; done
  [ -e /alloc/vk-files-ready ] || : > /alloc/vk-files-ready
  sleep 1 & wait $!
done"#;

/// Environment variable of [`FILES_TASK`]: the names of the volumes without Secret data whose
/// files come from a bundle, space-separated.
pub(super) const BUNDLES_ENV: &str = "VK_BUNDLES";

/// Environment variable of [`FILES_TASK`]: as [`BUNDLES_ENV`], the volumes with Secret data.
pub(super) const SECRET_BUNDLES_ENV: &str = "VK_SECRET_BUNDLES";

/// Environment variable of [`FILES_TASK`]: the pod's `fsGroup`, the group of the bundled
/// volumes' files.
pub(super) const FS_GROUP_ENV: &str = "VK_FS_GROUP";

/// Environment variable of [`VOLUMES_TASK`]: set when it waits for [`FILES_READY`].
pub(super) const WAIT_FILES_ENV: &str = "VK_WAIT_FILES";

/// Environment variable of [`VOLUMES_TASK`]: the pod's hostAliases as the kubelet writes them
/// into `/etc/hosts` (`<IP>\t<name>\t<name>\n` each).
pub(super) const HOST_ALIASES_ENV: &str = "VK_HOST_ALIASES";

/// The item key of a volume's bundle ([`FILES_TASK`]).
pub fn bundle_key(volume: &str) -> String {
    format!("b_{}", fnv(&[volume]))
}

/// A volume's files as one bundle ([`UNPACK_FN`]'s records), a line Nomad's env file parser reads
/// (base64, `,` and `;` only). `mode` gives each file's permission bits.
pub(super) fn bundle(files: &[vk_domain::volume::File], mode: impl Fn(u32) -> u32) -> String {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let records: Vec<String> = files
        .iter()
        .map(|f| format!("{:04o},{},{}", mode(f.mode), b64(f.path.as_bytes()), b64(&f.data)))
        .collect();
    records.join(";")
}

impl Builder<'_> {
    /// The bundled volumes' files ([`Builder::bundled`]), one Variable item each
    /// ([`bundle_key`]): readable fsGroup-wide as the kubelet makes them (mode | 0440) when the
    /// pod has an fsGroup.
    pub(super) fn bundle_items(&self) -> Vec<(String, String)> {
        let fs_group = self.spec.all_containers().any(|c| c.security.fs_group.is_some());
        self.spec
            .volumes
            .iter()
            .filter(|v| self.bundled(v))
            .filter_map(|v| match &v.source {
                Source::Files(files) => {
                    let mode = |m: u32| if fs_group { m | 0o440 } else { m };
                    Some((bundle_key(&v.name), bundle(files, mode)))
                }
                Source::EmptyDir { .. } => None,
            })
            .collect()
    }

    /// Whether the pod's containers share the `/etc/hosts` Nomad writes for a group network
    /// (docker, a network mode other than `host` and `none`), which [`VOLUMES_TASK`] (when an
    /// image is configured for it) rewrites as the kubelet writes it.
    pub(super) fn shared_hosts_file(&self) -> bool {
        self.driver.has_setup_tasks()
            && self.settings.volume_setup_image.is_some()
            && !matches!(self.network_mode.as_str(), "host" | "none")
    }

    /// The pod's hostAliases as the kubelet's lines of `/etc/hosts`, when [`VOLUMES_TASK`] writes
    /// them.
    pub(super) fn host_alias_lines(&self) -> Option<String> {
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
    pub(super) fn volumes_task(&self) -> Option<Task> {
        let image = self.settings.volume_setup_image.as_deref()?;
        if !self.driver.has_setup_tasks() {
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

    /// The environment ([`BUNDLES_ENV`], [`SECRET_BUNDLES_ENV`], [`FS_GROUP_ENV`]) and the bundle
    /// templates of [`FILES_TASK`]: into its `local/` for volumes without Secret data, into its
    /// in-memory `secrets/` for those with; nothing when no volume is bundled.
    pub(super) fn bundles(&self) -> (BTreeMap<String, String>, Vec<Template>) {
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
    pub(super) fn internal_task(
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
            driver: Driver::Docker.as_str().to_owned(),
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
    pub(super) fn files_task(&self) -> Option<Task> {
        let image = self.settings.volume_setup_image.as_deref()?;
        let (env, templates) = self.bundles();
        if templates.is_empty() {
            return None;
        }
        let script = format!("{UNPACK_FN}\n{FILES_SCRIPT}");
        Some(self.internal_task((FILES_TASK, image, script), env, templates, true))
    }
}
