//! Adapters: the ports implemented over real infrastructure.
//!
//! - [`nomad`]: pods as Nomad jobs, the Nomad cluster as a node (HTTP API).
//! - [`kube`]: the Kubernetes API (kube-rs).
//! - [`memory`]: pods kept in memory (`--provider memory`), for benchmarks and trials.

pub mod kube;
pub mod kubelet;
pub mod memory;
pub mod nomad;
