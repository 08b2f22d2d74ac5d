//! Interactive containers (`stdin: true`: `kubectl run -i`, `-it`) on Nomad, which gives no
//! access to a running task's stdin.
//!
//! Such a container's task runs a holder (`sh`) in place of the command, with the command's
//! arguments, as Nomad interpolated them, written shell-quoted into its task directory
//! (`$NOMAD_TASK_DIR/.vk-run`). The first `kubectl attach -i` runs the command through Nomad's
//! exec with the attach's streams (and terminal, with `tty`): that session is the container's
//! process. When it ends, its exit code goes to `$NOMAD_TASK_DIR/.vk-exit` and the holder exits
//! with it, so the task ends with the command's exit code and the pod's `restartPolicy` applies as
//! to any container (a restarted holder waits for a new attach). The session is claimed by
//! `mkdir` in the task directory, so a second attach is refused rather than starting the command
//! twice. The holder ends on SIGTERM with 143.
//!
//! What differs from a kubelet (README "Honoured differently"): the command starts at the first
//! attach, not at the container's start; the image's `ENTRYPOINT` is not known here, so the
//! container's `command` and `args` are the whole command line (`sh` when both are empty); the
//! image needs `sh`; the session's output reaches the attached client, not the container's log;
//! a session whose client went away ends the container with 129 (a hang-up), `stdinOnce: false`
//! included.

use vk_domain::runtime::WorkloadId;
use vk_ports::{ExecIo, ProviderError};

use crate::job::interpolate::hcl_text;
use crate::{JobRef, NomadProvider, exec};

/// Meta key prefix: `k8s_stdin_<container>` marks an interactive container (`once` for
/// `stdinOnce`, else `open`).
pub(crate) const META_STDIN_PREFIX: &str = "k8s_stdin_";

/// The `$0` of the holder.
const HOLDER_NAME: &str = "vk-interactive";

/// The directory the holder and the sessions share (the task directory).
const DIR: &str = r#"d=$NOMAD_TASK_DIR; [ -n "$d" ] || d=/tmp"#;

/// The holder: writes its arguments shell-quoted as `exec '<arg>' ...` to `$d/.vk-run`, then
/// waits for `$d/.vk-exit` and exits with the code it holds.
const HOLDER: &str = r#"rm -rf "$d/.vk-exit" "$d/.vk-session"
q() { s=$1; r=; while :; do case $s in *\'*) r="$r${s%%\'*}'\\''"; s=${s#*\'};; *) r="$r$s"; break;; esac; done; printf " '%s'" "$r"; }
{ printf exec; for a; do q "$a"; done; echo; } > "$d/.vk-run"
trap 'exit 143' TERM INT
while [ ! -s "$d/.vk-exit" ]; do sleep 1; done
exit "$(cat "$d/.vk-exit")""#;

/// The exit code written when the attached client went away before the command ended.
const HANG_UP: i32 = 129;

/// The task's command line for an interactive container whose own is `command` and `args`
/// (Nomad templates, as the job carries them): `sh -c <holder> vk-interactive <argv>`, as
/// (entrypoint, args).
pub(crate) fn wrap(command: Vec<String>, args: Vec<String>) -> (Vec<String>, Vec<String>) {
    let mut argv: Vec<String> = command.into_iter().chain(args).collect();
    if argv.is_empty() {
        argv.push("sh".into());
    }
    let script = hcl_text(&format!("{DIR}\n{HOLDER}"));
    let mut rest = vec!["-c".to_owned(), script, HOLDER_NAME.to_owned()];
    rest.extend(argv);
    (vec!["sh".to_owned()], rest)
}

fn sh(script: String) -> Vec<String> {
    vec!["sh".into(), "-c".into(), format!("{DIR}; {script}")]
}

impl NomadProvider {
    /// Whether container `task` of job `r` is interactive (its `k8s_stdin_` Meta).
    pub(crate) async fn interactive(&self, r: &JobRef, task: &str) -> Result<bool, ProviderError> {
        let job = self.owned(r).await?;
        Ok(job.meta.contains_key(&format!("{META_STDIN_PREFIX}{task}")))
    }

    /// The attach session of interactive container `task` of workload `id`: claims it, runs the
    /// command with `io`, then ends the holder with the command's exit code (before returning, so
    /// that the container has ended, or is ending, when the client hears the session is over).
    ///
    /// # Errors
    /// `Conflict` when the container's session was claimed already (a second attach);
    /// otherwise as [`exec::stream`] before the command started.
    pub(crate) async fn interactive_session(
        &self,
        id: &WorkloadId,
        task: &str,
        io: ExecIo,
    ) -> Result<(), ProviderError> {
        let r = JobRef::parse(id);
        let alloc = self.running_alloc(&r).await?;
        let client = self.at(&r);
        let claimed =
            exec::run(&client, &alloc, task, &sh(r#"mkdir "$d/.vk-session""#.into())).await?;
        if claimed != 0 {
            return Err(ProviderError::Conflict(format!(
                "container {task:?} took its stdin from an earlier attach: Nomad gives no access to a running task's stdin, so the first attach runs the container's command (use kubectl logs or exec)"
            )));
        }
        let ended = exec::stream(&client, &alloc, task, &sh(r#". "$d/.vk-run""#.into()), io).await;
        let code = match &ended {
            Ok(code) => *code,
            Err(e) => {
                tracing::info!(error = %e, "the interactive session broke off");
                HANG_UP
            }
        };
        tracing::info!(container = task, exit_code = code, "interactive session ended");
        self.end_holder(&r, &alloc, task, code).await;
        Ok(())
    }

    /// Writes `code` for the holder of `task` in allocation `alloc`, again (2 s apart, 5 times at
    /// most) until the task no longer runs: a short exec on docker can end before its command ran
    /// (hashicorp/nomad#27146).
    async fn end_holder(&self, r: &JobRef, alloc: &str, task: &str, code: i32) {
        let client = self.at(r);
        let write = sh(format!(r#"echo {code} > "$d/.vk-exit""#));
        for _ in 0..5 {
            if let Err(e) = exec::run(&client, alloc, task, &write).await {
                tracing::debug!(error = %e, "writing the interactive container's exit code");
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            let running = match self.current_alloc(r).await {
                Ok(a) => {
                    a.id == alloc
                        && a.task_states
                            .as_ref()
                            .and_then(|s| s.get(task))
                            .is_some_and(|t| t.state == "running")
                }
                Err(_) => false,
            };
            if !running {
                return;
            }
        }
        tracing::warn!(container = task, "the interactive container's holder did not end");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_takes_the_command_line_after_its_name() {
        let (entrypoint, args) = wrap(vec![], vec!["wc".into(), "-c".into()]);
        assert_eq!(entrypoint, ["sh"]);
        assert_eq!(args[0], "-c");
        assert!(
            args[1].contains("$${s%%") && !args[1].replace("$${", "").contains("${"),
            "{}",
            args[1]
        );
        assert_eq!(&args[2..], ["vk-interactive", "wc", "-c"]);
        let (_, args) = wrap(vec![], vec![]);
        assert_eq!(&args[2..], ["vk-interactive", "sh"], "sh when there is no command");
    }
}
