//! Kubelet semantics with no I/O: what a pod asks for, what a node is, and how the state a runtime
//! reports becomes a Kubernetes status.
//!
//! This crate knows nothing of Nomad, HTTP or an async runtime (see ARCHITECTURE.md). It speaks
//! Kubernetes' own vocabulary through `k8s-openapi` data types and a CRI-like view of a running pod
//! ([`runtime`]), so any backend can be bridged to the kubelet's behaviour by filling that view.

pub mod env;
pub mod error;
pub mod events;
pub mod image;
pub mod inputs;
pub mod kubelet_auth;
pub mod lifecycle;
pub mod logs;
pub mod node;
pub mod pod;
pub mod policy;
pub mod probe;
pub mod quantity;
pub mod reconcile;
pub mod registry;
pub mod runtime;
pub mod security;
pub mod stats;
pub mod status;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod volume;
pub mod workload;

pub use k8s_openapi;
pub use k8s_openapi::jiff;
