//! A container as a Nomad task: its command and arguments, its driver's configuration, its
//! environment (plain text in the job, the rest through templates and the `secret` block), its
//! resources and its kill timeout.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use vk_domain::env::{Segment, Value as EnvValue};
use vk_domain::error::Unsupported;
use vk_domain::workload::ContainerSpec;

use super::Builder;
use super::docker::termination_log_template;
use super::driver::Driver;
use super::id::variable_path;
use super::interpolate::{Piece, hcl_template, hcl_text, is_interpolable};
use super::restart::ns;
use super::security::exec_security;
use super::templates::{SECRET_BLOCK, split_env};
use crate::api::{Secret, Task};

impl Builder<'_> {
    /// Container `c` (at `field`, `spec.containers[0]` and the like) as a task of the pod's
    /// group, without lifecycle or restart policy of its own (the caller's to add).
    ///
    /// # Errors
    /// [`Unsupported`] naming the field for what the chosen driver cannot be given.
    pub(super) fn task(&mut self, field: &str, c: &ContainerSpec) -> Result<Task, Unsupported> {
        self.reserve_ports(field, c)?;
        let command = self.args(field, "command", &c.command)?;
        let args = self.args(field, "args", &c.args)?;
        // An interactive container's task holds until the first attach runs its command.
        let (command, args) = match c.interactive {
            Some(_) => crate::interactive::wrap(command, args),
            None => (command, args),
        };
        let mut config = Map::new();
        let user = match self.driver {
            Driver::Docker => self.docker_config(field, c, (command, args), &mut config)?,
            Driver::RawExec | Driver::Exec => {
                let argv = command.into_iter().chain(args).collect();
                self.exec_config(field, c, argv, &mut config)?
            }
        };
        let (mut templates, secret_env) = self.templates(field, c)?;
        if self.driver.binds_volumes() && c.termination_message_path.is_some() {
            templates.push(termination_log_template());
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
        let resources = self.resources(field, c, &mut config)?;
        Ok(Task {
            name: c.name.clone(),
            driver: self.driver.as_str().to_owned(),
            config,
            env,
            resources,
            kill_timeout: ns(self.spec.termination_grace),
            // lifecycle.stopSignal, else SIGTERM (the kubelet's default through the runtime).
            kill_signal: c.hooks.stop_signal.clone().unwrap_or_else(|| "SIGTERM".into()),
            meta: BTreeMap::new(),
            user,
            lifecycle: None,
            templates,
            secrets,
            restart_policy: None,
        })
    }

    /// The configuration of container `c` (at `field`) on an exec-style driver (`raw_exec`,
    /// `exec`), which runs the command directly: the first word of `argv` (`command`, then `args`)
    /// is the command, the rest its arguments; returns the task's `user`.
    ///
    /// # Errors
    /// [`Unsupported`] naming the field for an empty command, hostAliases, or a security setting
    /// the driver cannot honour.
    fn exec_config(
        &self,
        field: &str,
        c: &ContainerSpec,
        argv: Vec<String>,
        config: &mut Map<String, Value>,
    ) -> Result<String, Unsupported> {
        let driver = self.driver;
        let mut argv = argv.into_iter();
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
        exec_security(field, driver, &c.security, config)
    }

    /// A command or argument list: text as is; a `$(VAR)` whose variable is not plain text becomes
    /// Nomad's `${VAR}`, interpolated from the task's environment at start. Each argument is
    /// written once, whole, by [`hcl_template`].
    pub(super) fn args(
        &self,
        field: &str,
        what: &str,
        list: &[EnvValue],
    ) -> Result<Vec<String>, Unsupported> {
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
}
