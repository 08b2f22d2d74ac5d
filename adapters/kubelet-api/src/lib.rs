//! The kubelet's own HTTPS API (port 10250), served over any [`Backend`]:
//! `/containerLogs`, `/exec`, `/attach`, `/portForward`, `/stats/summary`, `/metrics/resource`,
//! `/pods`, `/runningpods/`, `/healthz`.
//!
//! - [`server`]: TLS, the kubelet's authentication and authorization, and the plain routes.
//! - [`limits`]: what a client may hold: connections (total, per peer, unauthenticated),
//!   review turns, header, token, WebSocket and SPDY sizes.
//! - `streaming`: the upgrade of `/exec`, `/attach` and `/portForward` to SPDY or WebSocket.
//! - [`spdy`]: SPDY/3.1 framing and sessions (what kube-apiserver sends for exec, attach and
//!   port-forward), written here because no crate serves it.
//! - [`ws`]: the WebSocket channel protocols (`channel.k8s.io` and friends, v4, v5, and the
//!   port-forward channels), for clients the API server passes through.
//! - [`remotecommand`]: what both transports share for exec and attach: which streams a request
//!   asks for, and the Status that ends a session.

pub mod limits;
pub mod remotecommand;
pub mod server;
pub mod spdy;
mod streaming;
pub mod ws;

pub use streaming::OPEN_STREAMS;

/// The ports the kubelet API reads a backend through: [`vk_ports::PodStreams`] (logs, exec,
/// attach), [`vk_ports::PodNetwork`] (port-forward) and [`vk_ports::StatsProvider`] (stats and
/// resource metrics). Implemented for every type that implements the three; the pods' lifecycle
/// and probes are none of its business.
pub trait Backend: vk_ports::PodStreams + vk_ports::PodNetwork + vk_ports::StatsProvider {}

impl<T: vk_ports::PodStreams + vk_ports::PodNetwork + vk_ports::StatsProvider> Backend for T {}

/// Describes this crate's metrics (`# HELP` and units) to the process's recorder: call it once the
/// recorder is installed.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        streaming::OPEN_STREAMS,
        "Streaming sessions (exec, attach, port-forward, followed logs) open on the kubelet API, by kind."
    );
    describe_gauge!(
        limits::CONNECTIONS_OPEN,
        "Kubelet API connections open, by state (authenticated or not)."
    );
    describe_counter!(
        limits::CONNECTIONS_REFUSED,
        "Kubelet API connections refused at a limit, by reason."
    );
    describe_counter!(
        limits::CONNECTIONS_EVICTED,
        "Unauthenticated kubelet API connections closed to make room for new ones."
    );
    describe_counter!(
        limits::REVIEWS_REFUSED,
        "Token and access reviews refused at their limits, by reason."
    );
}
