//! The Nomad template stanzas of a container's task: its environment rendered from the pod's
//! Variable (Secret data, run-time values, text Nomad would interpolate), the files of its
//! volumes, and the gates that hold a task until the virtual kubelet releases it.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use vk_domain::env::{EnvVar, Segment, Value as EnvValue};
use vk_domain::error::Unsupported;
use vk_domain::volume::{File, Source, Volume};
use vk_domain::workload::ContainerSpec;

use super::Builder;
use super::docker::{REGISTRY_PASSWORD, REGISTRY_USERNAME};
use super::id::{fnv, gate_path, variable_path};
use super::interpolate::is_interpolable;
use super::volumes::volume_dir;
use crate::api::Template;

/// Template delimiters: outside ASCII, so no environment variable name can contain them.
pub(super) const LEFT: &str = "⟦";
pub(super) const RIGHT: &str = "⟧";

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

/// The item key of a volume file.
pub fn file_key(volume: &str, path: &str) -> String {
    format!("f_{}", fnv(&[volume, path]))
}

/// The template holding `task` of job `job` until a Variable exists at its [`gate_path`].
pub(super) fn gate_template(job: &str, task: &str) -> Template {
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
pub(super) fn go_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Splits a container's environment into the plain-text variables written into the job's `Env`,
/// and those rendered from the Variable at start (Secret data, run-time values, and text Nomad
/// would interpolate).
pub(super) fn split_env(env: &[EnvVar]) -> (BTreeMap<String, String>, Vec<&EnvVar>) {
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

/// The task `Env` value of a variable whose name Nomad's env file parser refuses (`data-1`):
/// `parts` ([`Builder::env_parts`]) as Nomad interpolates them from the task's `secret` block
/// over the pod's Variable (`${secret.vk.<item>}`) and the node's attributes, once, at start.
fn secret_block_value(parts: &[Option<String>]) -> String {
    parts
        .iter()
        .map(|p| match p {
            Some(key) => format!("${{secret.{SECRET_BLOCK}.{key}}}"),
            None => "${attr.unique.network.ip-address}".into(),
        })
        .collect()
}

/// The env file line of variable `name`: `print` of `parts` ([`Builder::env_parts`]) through
/// `toJSON`, which Nomad's env parser reads back exactly.
fn env_line(name: &str, parts: &[Option<String>]) -> String {
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
    format!("{name}={LEFT} print {} | toJSON {RIGHT}\n", text.join(" "))
}

/// The template that makes emptyDir `volume`'s directory in the allocation's shared directory.
/// Nomad refuses an empty template: a comment renders the empty marker file that creates the
/// directory before the task starts.
fn empty_dir_marker(volume: &str) -> Template {
    Template {
        embedded_tmpl: "{{/* emptyDir */}}".into(),
        dest_path: format!("{}/.nomad-emptydir", volume_dir(volume)),
        change_mode: "noop".into(),
        perms: "0644".into(),
        ..Template::default()
    }
}

impl Builder<'_> {
    /// The container's templates (environment, volume files), and the variables of its `Env`
    /// that Nomad interpolates from the task's `secret` block ([`SECRET_BLOCK`]).
    pub(super) fn templates(
        &mut self,
        field: &str,
        c: &ContainerSpec,
    ) -> Result<(Vec<Template>, BTreeMap<String, String>), Unsupported> {
        let (env_file, secret_env) = self.env_template(field, c)?;
        let mut out: Vec<Template> = env_file.into_iter().collect();
        self.volume_templates(field, c, &mut out)?;
        Ok((out, secret_env))
    }

    /// Environment that is not plain text: one env file, read once at start, and the variables
    /// Nomad's env file parser cannot take, which go to the task's `Env` over its `secret` block.
    /// Each value is `print` of its parts (Variable items holding text and Secret data, the
    /// node's address for run-time values) through `toJSON`, which Nomad's env parser reads back
    /// exactly. On docker, the registry login of `imagePullSecrets` comes this way too, for the
    /// driver's `auth` block to read ([`REGISTRY_USERNAME`], [`REGISTRY_PASSWORD`]).
    fn env_template(
        &mut self,
        field: &str,
        c: &ContainerSpec,
    ) -> Result<(Option<Template>, BTreeMap<String, String>), Unsupported> {
        let mut secret_env = BTreeMap::new();
        let var = go_string(&variable_path(&self.id));
        let mut env = c.env.clone();
        if let Some(a) = c.registry_auth.as_ref().filter(|_| self.driver.pulls_images()) {
            for (name, v) in [(REGISTRY_USERNAME, &a.username), (REGISTRY_PASSWORD, &a.password)] {
                let value = EnvValue(vec![Segment::Secret(v.clone())]);
                env.push(EnvVar { name: name.to_owned(), value });
            }
        }
        let (_, rendered) = split_env(&env);
        let mut body = String::new();
        let mut uses_var = false;
        for v in rendered {
            let parts = self.env_parts(field, &c.name, v)?;
            if !is_interpolable(&v.name) {
                // Nomad's env file parser refuses such a name (`data-1`): the value is the task's
                // `Env`, interpolated by Nomad from its `secret` block over the pod's Variable
                // (`${secret.vk.<item>}`) and the node's attributes, once, at start.
                secret_env.insert(v.name.clone(), secret_block_value(&parts));
                continue;
            }
            uses_var |= parts.iter().any(Option::is_some);
            body.push_str(&env_line(&v.name, &parts));
        }
        if body.is_empty() {
            return Ok((None, secret_env));
        }
        if uses_var {
            body = format!("{LEFT} with nomadVar {var} {RIGHT}\n{body}{LEFT} end {RIGHT}\n");
        }
        let template = Template {
            embedded_tmpl: body,
            dest_path: "secrets/vk-env".into(),
            change_mode: "noop".into(),
            perms: "0600".into(),
            envvars: true,
            left_delim: LEFT.into(),
            right_delim: RIGHT.into(),
            ..Template::default()
        };
        Ok((Some(template), secret_env))
    }

    /// The parts of the value of variable `v` of container `container`: Variable items (text and
    /// Secret data, each a JSON string, which Nomad's env parser reads back exactly; stored into
    /// the pod's Variable here), or `None` for the node's address.
    ///
    /// # Errors
    /// [`Unsupported`] for a reference to another variable left in the value.
    fn env_parts(
        &mut self,
        field: &str,
        container: &str,
        v: &EnvVar,
    ) -> Result<Vec<Option<String>>, Unsupported> {
        let mut parts: Vec<Option<String>> = Vec::new();
        let mut run = String::new();
        let mut n = 0;
        let mut flush = |run: &mut String,
                         parts: &mut Vec<Option<String>>,
                         items: &mut BTreeMap<String, String>| {
            if run.is_empty() {
                return;
            }
            let key = format!("e_{}", fnv(&[container, &v.name, &n.to_string()]));
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
        Ok(parts)
    }

    /// Volume files, rendered by every task mounting the volume into the allocation's shared
    /// directory (identical content, written atomically, so concurrent renders agree), or, for a
    /// docker task and a volume with Secret data, into the task's own secrets/; and the marker
    /// files of emptyDirs nothing else makes.
    ///
    /// # Errors
    /// [`Unsupported`] for a mount of a volume the pod does not have, or a file path Nomad would
    /// interpolate.
    fn volume_templates(
        &mut self,
        field: &str,
        c: &ContainerSpec,
        out: &mut Vec<Template>,
    ) -> Result<(), Unsupported> {
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
                Source::EmptyDir { .. } => out.push(empty_dir_marker(&vol.name)),
                // Written by the volumes task, then kept by the files task.
                Source::Files(_) if self.bundled(vol) => {}
                Source::Files(files) => self.file_templates(c, vol, files, out)?,
            }
        }
        Ok(())
    }

    /// One template per file of API data volume `vol` (its data stored into the pod's Variable
    /// under [`file_key`]), as container `c` mounts it.
    fn file_templates(
        &mut self,
        c: &ContainerSpec,
        vol: &Volume,
        files: &[File],
        out: &mut Vec<Template>,
    ) -> Result<(), Unsupported> {
        let var = go_string(&variable_path(&self.id));
        let dir = self.volume_path(vol);
        // fsGroup: the kubelet gives the volume's files to that group and lets it read them
        // (read-only volumes: mode | 0440).
        let fs_group = c.security.fs_group;
        for f in files {
            // Nomad replaces `${name}` in a template's destination with the task's environment or
            // the node's attributes, and has no escape for it.
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
            self.items
                .insert(key.clone(), base64::engine::general_purpose::STANDARD.encode(&f.data));
            out.push(Template {
                embedded_tmpl: format!(
                    "{LEFT} with nomadVar {var} {RIGHT}{LEFT} (index . {}).Value | base64Decode {RIGHT}{LEFT} end {RIGHT}",
                    go_string(&key)
                ),
                dest_path: format!("{dir}/{}", f.path),
                change_mode: "noop".into(),
                perms: format!("{:04o}", if fs_group.is_some() { f.mode | 0o440 } else { f.mode }),
                left_delim: LEFT.into(),
                right_delim: RIGHT.into(),
                gid: fs_group,
                ..Template::default()
            });
        }
        Ok(())
    }
}
