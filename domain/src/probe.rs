//! Container probes as the kubelet runs them (`pkg/kubelet/prober`): what to check, how often, and
//! the thresholds that turn single results into a container's readiness, or into a restart.
//!
//! Defaults are the API's: `periodSeconds` 10, `timeoutSeconds` 1, `successThreshold` 1,
//! `failureThreshold` 3, `initialDelaySeconds` 0. A readiness result starts as failure, a liveness or
//! startup result as success (`prober/worker.go`). An HTTP probe succeeds on a status from 200 to
//! 399, a TCP probe when the connection opens, an exec probe when the command exits 0; a timeout is a
//! failure.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe as K8sProbe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::error::Unsupported;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `readinessProbe`: drives the container's `ready` and the pod's `Ready` condition.
    Readiness,
    /// `livenessProbe`: the container is restarted after `failureThreshold` failures.
    Liveness,
    /// `startupProbe`: the other probes wait for its success; failures restart the container.
    Startup,
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    /// `httpGet`.
    Http {
        /// `https` when `scheme: HTTPS` (certificates are not verified, as the kubelet does).
        https: bool,
        /// `host`; the pod IP when empty.
        host: Option<String>,
        /// The container port (named ports resolved).
        port: u16,
        /// `path` (`/` when empty).
        path: String,
        /// `httpHeaders`.
        headers: Vec<(String, String)>,
    },
    /// `tcpSocket`.
    Tcp {
        /// `host`; the pod IP when empty.
        host: Option<String>,
        /// The container port (named ports resolved).
        port: u16,
    },
    /// `exec`: the command runs in the container.
    Exec {
        /// `command`.
        command: Vec<String>,
    },
    /// `grpc`: the `grpc.health.v1.Health/Check` call at the pod's address, in plain text (no
    /// TLS), as the kubelet makes it; healthy when it answers `SERVING`.
    Grpc {
        /// `port`.
        port: u16,
        /// `service` (the server's overall health when unset or empty).
        service: Option<String>,
    },
}

/// A probe with its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// What it checks.
    pub handler: Handler,
    /// `initialDelaySeconds`: from the container's start to the first probe.
    pub initial_delay: Duration,
    /// `periodSeconds`.
    pub period: Duration,
    /// `timeoutSeconds`.
    pub timeout: Duration,
    /// `successThreshold`.
    pub success_threshold: u32,
    /// `failureThreshold`.
    pub failure_threshold: u32,
}

fn secs(field: &str, v: Option<i32>, default: i32, min: i32) -> Result<Duration, Unsupported> {
    let v = v.unwrap_or(default);
    if v < min {
        return Err(Unsupported::new(field.to_owned(), format!("{v} is below {min}")));
    }
    Ok(Duration::from_secs(u64::from(v.unsigned_abs())))
}

/// Reads the probe at `field` of container `c`.
///
/// # Errors
/// [`Unsupported`] naming the field for a gRPC probe, no handler or more than one, a port that is
/// neither a number nor a named port of the container, or a threshold out of range.
pub fn parse(field: &str, p: &K8sProbe, c: &Container, kind: Kind) -> Result<Probe, Unsupported> {
    let handler = handler(field, p, c)?;
    let threshold = |f: &str, v: Option<i32>, default: u32| -> Result<u32, Unsupported> {
        match v {
            None => Ok(default),
            Some(n) if n >= 1 => Ok(n.unsigned_abs()),
            Some(n) => Err(Unsupported::new(format!("{field}.{f}"), format!("{n} is below 1"))),
        }
    };
    let success_threshold = threshold("successThreshold", p.success_threshold, 1)?;
    if kind != Kind::Readiness && success_threshold != 1 {
        return Err(Unsupported::new(
            format!("{field}.successThreshold"),
            "must be 1 for liveness and startup probes",
        ));
    }
    Ok(Probe {
        handler,
        initial_delay: secs(
            &format!("{field}.initialDelaySeconds"),
            p.initial_delay_seconds,
            0,
            0,
        )?,
        period: secs(&format!("{field}.periodSeconds"), p.period_seconds, 10, 1)?,
        timeout: secs(&format!("{field}.timeoutSeconds"), p.timeout_seconds, 1, 1)?,
        success_threshold,
        failure_threshold: threshold("failureThreshold", p.failure_threshold, 3)?,
    })
}

/// The handler of probe `p` at `field` of container `c` (also the `exec` and `httpGet` of a
/// lifecycle hook, [`crate::lifecycle`]).
///
/// # Errors
/// [`Unsupported`] naming the field for no handler or more than one, or a port that is neither a
/// number nor a named port of the container.
pub(crate) fn handler(field: &str, p: &K8sProbe, c: &Container) -> Result<Handler, Unsupported> {
    let port = |f: &str, port: &IntOrString| -> Result<u16, Unsupported> {
        match port {
            IntOrString::Int(n) => u16::try_from(*n).ok().filter(|n| *n > 0).ok_or_else(|| {
                Unsupported::new(format!("{field}.{f}.port"), format!("{n} is not a port number"))
            }),
            IntOrString::String(name) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| {
                    Unsupported::new(
                        format!("{field}.{f}.port"),
                        format!("the container has no port named {name:?}"),
                    )
                }),
        }
    };
    let set = [p.exec.is_some(), p.http_get.is_some(), p.tcp_socket.is_some(), p.grpc.is_some()];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err(Unsupported::new(
            field.to_owned(),
            "exactly one of exec, httpGet, tcpSocket, grpc must be set",
        ));
    }
    let handler = if let Some(e) = &p.exec {
        let command = e.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Err(Unsupported::new(format!("{field}.exec.command"), "the command is empty"));
        }
        Handler::Exec { command }
    } else if let Some(h) = &p.http_get {
        let https = match h.scheme.as_deref() {
            None | Some("HTTP") => false,
            Some("HTTPS") => true,
            Some(other) => {
                return Err(Unsupported::new(
                    format!("{field}.httpGet.scheme"),
                    format!("unknown scheme {other:?}"),
                ));
            }
        };
        let path = h.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
        Handler::Http {
            https,
            host: h.host.clone().filter(|h| !h.is_empty()),
            port: port("httpGet", &h.port)?,
            path: if path.starts_with('/') { path } else { format!("/{path}") },
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        }
    } else if let Some(t) = &p.tcp_socket {
        Handler::Tcp {
            host: t.host.clone().filter(|h| !h.is_empty()),
            port: port("tcpSocket", &t.port)?,
        }
    } else if let Some(g) = &p.grpc {
        let port = u16::try_from(g.port).ok().filter(|n| *n > 0).ok_or_else(|| {
            Unsupported::new(
                format!("{field}.grpc.port"),
                format!("{} is not a port number", g.port),
            )
        })?;
        Handler::Grpc { port, service: g.service.clone().filter(|s| !s.is_empty()) }
    } else {
        return Err(Unsupported::new(
            field.to_owned(),
            "exactly one of exec, httpGet, tcpSocket, grpc must be set",
        ));
    };
    Ok(handler)
}

/// The running result of one probe of one container instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    kind: Kind,
    result: bool,
    last: Option<bool>,
    run: u32,
}

impl State {
    /// The initial state: failure for readiness, success for liveness and startup.
    pub fn new(kind: Kind) -> Self {
        Self { kind, result: kind != Kind::Readiness, last: None, run: 0 }
    }

    /// The current result.
    pub fn result(&self) -> bool {
        self.result
    }

    /// Records one probe outcome; returns the new result when it changed. The result flips after
    /// `successThreshold` consecutive successes or `failureThreshold` consecutive failures.
    pub fn record(&mut self, ok: bool, probe: &Probe) -> Option<bool> {
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let threshold = if ok { probe.success_threshold } else { probe.failure_threshold };
        if self.run >= threshold && self.result != ok {
            self.result = ok;
            return Some(ok);
        }
        None
    }

    /// Which probe this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn container() -> Container {
        serde_json::from_value(
            json!({"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .unwrap()
    }

    fn probe(v: serde_json::Value) -> K8sProbe {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn probes_are_read_with_the_api_defaults() {
        let p = parse(
            "p",
            &probe(json!({"httpGet": {"port": "http", "path": "healthz"}})),
            &container(),
            Kind::Readiness,
        )
        .unwrap();
        assert_eq!(
            p,
            Probe {
                handler: Handler::Http {
                    https: false,
                    host: None,
                    port: 8080,
                    path: "/healthz".into(),
                    headers: vec![]
                },
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        let t = parse(
            "p",
            &probe(json!({"tcpSocket": {"port": 9000}, "periodSeconds": 2, "timeoutSeconds": 3, "failureThreshold": 1, "initialDelaySeconds": 5})),
            &container(),
            Kind::Liveness,
        )
        .unwrap();
        assert_eq!(t.handler, Handler::Tcp { host: None, port: 9000 });
        assert_eq!(
            (t.period, t.timeout, t.initial_delay, t.failure_threshold),
            (Duration::from_secs(2), Duration::from_secs(3), Duration::from_secs(5), 1)
        );
        let e = parse(
            "p",
            &probe(json!({"exec": {"command": ["cat", "/tmp/ok"]}})),
            &container(),
            Kind::Startup,
        )
        .unwrap();
        assert_eq!(e.handler, Handler::Exec { command: vec!["cat".into(), "/tmp/ok".into()] });
        let g = parse("p", &probe(json!({"grpc": {"port": 9000}})), &container(), Kind::Liveness)
            .unwrap();
        assert_eq!(g.handler, Handler::Grpc { port: 9000, service: None });
        let probe_of = probe(json!({"grpc": {"port": 9000, "service": "db"}}));
        let g = parse("p", &probe_of, &container(), Kind::Liveness).unwrap();
        assert_eq!(g.handler, Handler::Grpc { port: 9000, service: Some("db".into()) });
    }

    #[test]
    fn bad_probes_name_their_field() {
        let cases = [
            (json!({"grpc": {"port": 0}}), Kind::Readiness, "p.grpc.port"),
            (json!({"httpGet": {"port": "nope"}}), Kind::Readiness, "p.httpGet.port"),
            (json!({"tcpSocket": {"port": 0}}), Kind::Readiness, "p.tcpSocket.port"),
            (json!({"exec": {"command": []}}), Kind::Readiness, "p.exec.command"),
            (json!({}), Kind::Readiness, "p"),
            (
                json!({"exec": {"command": ["true"]}, "successThreshold": 2}),
                Kind::Liveness,
                "p.successThreshold",
            ),
            (
                json!({"exec": {"command": ["true"]}, "periodSeconds": 0}),
                Kind::Readiness,
                "p.periodSeconds",
            ),
        ];
        for (v, kind, field) in cases {
            let err = parse("p", &probe(v.clone()), &container(), kind).unwrap_err();
            assert_eq!(err.field, field, "{v}");
        }
    }

    #[test]
    fn thresholds_turn_results_into_state() {
        let p = Probe {
            handler: Handler::Tcp { host: None, port: 1 },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 2,
            failure_threshold: 3,
        };
        let mut r = State::new(Kind::Readiness);
        assert!(!r.result(), "readiness starts failed");
        assert_eq!(r.record(true, &p), None);
        assert_eq!(r.record(true, &p), Some(true));
        assert_eq!(r.record(false, &p), None);
        assert_eq!(r.record(true, &p), None, "a success resets the failure run");
        assert_eq!(r.record(false, &p), None);
        assert_eq!(r.record(false, &p), None);
        assert_eq!(r.record(false, &p), Some(false));
        let l = State::new(Kind::Liveness);
        assert!(l.result(), "liveness starts successful");
        assert_eq!(l.kind(), Kind::Liveness);
    }
}
