//! The kubelet's own HTTPS API (port 10250), served over any [`vk_ports::PodProvider`]:
//! `/containerLogs`, `/exec`, `/attach`, `/portForward`, `/stats/summary`, `/metrics/resource`,
//! `/pods`, `/runningpods/`, `/healthz`.
//!
//! - `spdy`: SPDY/3.1 framing and sessions (what kube-apiserver sends for exec, attach and
//!   port-forward), written here because no crate serves it.
//! - `wsstream`: the WebSocket channel protocols (`channel.k8s.io` and friends, v4, v5, and the
//!   port-forward channels), for clients the API server passes through.
//! - [`remotecommand`]: what both transports share for exec and attach: which streams a request
//!   asks for, and the Status that ends a session.

pub mod remotecommand;
pub mod spdy;
