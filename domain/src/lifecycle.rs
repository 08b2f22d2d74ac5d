//! Container lifecycle hooks (`lifecycle.postStart`, `lifecycle.preStop`) and the stop signal,
//! as the kubelet reads them (`pkg/kubelet/lifecycle/handlers.go`,
//! `kuberuntime_container.go`).
//!
//! A hook is an `exec` (the command runs in the container), an `httpGet` (to the pod's address
//! unless `host` names another, as a probe's) or a `sleep`. `tcpSocket` is kept in the API for
//! compatibility only and never runs on a kubelet ("lifecycle hooks will fail at runtime"): it is
//! refused here, naming the field, instead of failing later.
//!
//! The virtual kubelet runs hooks itself (`vk-app`'s prober), not the backend: postStart once per
//! container start, the container counting as `Waiting` (`ContainerCreating`) until it ends;
//! preStop of every running container before the workload is stopped, within the grace period.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe as K8sProbe};

use crate::error::Unsupported;
use crate::probe::{self, Handler};

/// What one hook does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `exec` ([`Handler::Exec`]) or `httpGet` ([`Handler::Http`]). An `httpGet` hook succeeds on
    /// any answer (the kubelet checks no status code), fails when no answer comes.
    Run(Handler),
    /// `sleep.seconds` (0 allowed: the hook returns at once).
    Sleep(Duration),
}

/// The hooks and stop signal of one container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hooks {
    /// `lifecycle.postStart`.
    pub post_start: Option<Action>,
    /// `lifecycle.preStop`.
    pub pre_stop: Option<Action>,
    /// `lifecycle.stopSignal` (`SIGTERM`, `SIGUSR1`, ...): the signal that asks the container to
    /// stop in place of the image's `STOPSIGNAL` or `SIGTERM`.
    pub stop_signal: Option<String>,
}

/// The hooks of container `c`, whose `lifecycle` is at `field` (`spec.containers[0].lifecycle`).
///
/// # Errors
/// [`Unsupported`] naming the field for a hook with no action or more than one, a `tcpSocket`
/// hook, an empty command, a port that is neither a number nor a named port of the container, a
/// negative sleep, or a stop signal that is not a signal name (`SIG` and capitals, digits or `+`).
pub fn parse(field: &str, c: &Container) -> Result<Hooks, Unsupported> {
    let Some(l) = &c.lifecycle else { return Ok(Hooks::default()) };
    let post_start =
        l.post_start.as_ref().map(|h| action(&format!("{field}.postStart"), h, c)).transpose()?;
    let pre_stop =
        l.pre_stop.as_ref().map(|h| action(&format!("{field}.preStop"), h, c)).transpose()?;
    let stop_signal = l.stop_signal.clone().filter(|s| !s.is_empty());
    if let Some(s) = &stop_signal {
        let name = s.strip_prefix("SIG").filter(|n| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'+')
        });
        if name.is_none() {
            return Err(Unsupported::new(
                format!("{field}.stopSignal"),
                format!("{s:?} is not a signal name"),
            ));
        }
    }
    Ok(Hooks { post_start, pre_stop, stop_signal })
}

/// One hook at `field`.
fn action(field: &str, h: &LifecycleHandler, c: &Container) -> Result<Action, Unsupported> {
    if h.tcp_socket.is_some() {
        return Err(Unsupported::new(
            format!("{field}.tcpSocket"),
            "is not supported as a lifecycle handler (the API keeps it for compatibility only; a kubelet fails such a hook)",
        ));
    }
    let set = [h.exec.is_some(), h.http_get.is_some(), h.sleep.is_some()];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err(Unsupported::new(
            field.to_owned(),
            "exactly one of exec, httpGet, sleep must be set",
        ));
    }
    if let Some(s) = &h.sleep {
        let secs = u64::try_from(s.seconds).map_err(|_| {
            Unsupported::new(format!("{field}.sleep.seconds"), format!("{} is below 0", s.seconds))
        })?;
        return Ok(Action::Sleep(Duration::from_secs(secs)));
    }
    let p = K8sProbe { exec: h.exec.clone(), http_get: h.http_get.clone(), ..K8sProbe::default() };
    Ok(Action::Run(probe::handler(field, &p, c)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(lifecycle: serde_json::Value) -> Container {
        serde_json::from_value(json!({
            "name": "c", "image": "busybox",
            "ports": [{"name": "web", "containerPort": 8080}],
            "lifecycle": lifecycle
        }))
        .unwrap()
    }

    #[test]
    fn reads_exec_http_and_sleep_hooks_with_named_ports() {
        let c = container(json!({
            "postStart": {"exec": {"command": ["sh", "-c", "echo hi"]}},
            "preStop": {"httpGet": {"path": "stop", "port": "web", "scheme": "HTTPS",
                                    "httpHeaders": [{"name": "X-A", "value": "b"}]}},
            "stopSignal": "SIGUSR1"
        }));
        let h = parse("spec.containers[0].lifecycle", &c).unwrap();
        assert_eq!(
            h.post_start,
            Some(Action::Run(Handler::Exec {
                command: vec!["sh".into(), "-c".into(), "echo hi".into()]
            }))
        );
        assert_eq!(
            h.pre_stop,
            Some(Action::Run(Handler::Http {
                https: true,
                host: None,
                port: 8080,
                path: "/stop".into(),
                headers: vec![("X-A".into(), "b".into())],
            }))
        );
        assert_eq!(h.stop_signal.as_deref(), Some("SIGUSR1"));
        let s = parse("f", &container(json!({"preStop": {"sleep": {"seconds": 0}}}))).unwrap();
        assert_eq!(s.pre_stop, Some(Action::Sleep(Duration::ZERO)));
        assert!(s.post_start.is_none());
        let none = parse("f", &container(json!({}))).unwrap();
        assert_eq!(none, Hooks::default());
    }

    #[test]
    fn refuses_what_a_kubelet_cannot_run_naming_the_field() {
        let refused = |l: serde_json::Value| {
            parse("spec.containers[0].lifecycle", &container(l)).unwrap_err().to_string()
        };
        let tcp = refused(json!({"preStop": {"tcpSocket": {"port": 80}}}));
        assert!(tcp.starts_with("spec.containers[0].lifecycle.preStop.tcpSocket:"), "{tcp}");
        let two =
            refused(json!({"postStart": {"sleep": {"seconds": 1}, "exec": {"command": ["x"]}}}));
        assert!(two.contains("postStart: exactly one of exec, httpGet, sleep"), "{two}");
        let empty = refused(json!({"postStart": {}}));
        assert!(empty.contains("exactly one"), "{empty}");
        let negative = refused(json!({"preStop": {"sleep": {"seconds": -1}}}));
        assert!(negative.contains("preStop.sleep.seconds: -1 is below 0"), "{negative}");
        let port = refused(json!({"preStop": {"httpGet": {"port": "nope"}}}));
        assert!(
            port.contains("preStop.httpGet.port: the container has no port named \"nope\""),
            "{port}"
        );
        let command = refused(json!({"postStart": {"exec": {"command": []}}}));
        assert!(command.contains("postStart.exec.command"), "{command}");
        let signal = refused(json!({"stopSignal": "KILL; rm"}));
        assert!(signal.contains("stopSignal: \"KILL; rm\" is not a signal name"), "{signal}");
    }
}
