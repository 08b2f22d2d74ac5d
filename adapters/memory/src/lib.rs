//! `--provider memory`: pods that live in this process's memory, as upstream virtual-kubelet's
//! mock provider (`provider/mock/mock.go`) but without its gaps.
//!
//! A pod is Running the moment it is created: every app container and sidecar running since
//! then, every init container completed with exit code 0. Stopping it ends every container with
//! exit code 0 (`Completed`) at once; purging forgets it. Nothing runs anywhere: no task, no timer,
//! no process per pod, and every operation is one map access under one lock, so the provider can
//! stand behind benchmarks of thousands of pods and measure the virtual kubelet alone. Each
//! change is pushed through [`PodProvider::changes`](vk_ports::PodProvider::changes), so statuses
//! are written at once.
//!
//! Resource usage is synthetic but well formed (so `/stats/summary`, `/metrics/resource` and
//! `kubectl top` have something to show): each running container uses exactly its CPU request
//! (else its limit, else 1 millicore) and its memory request (else its limit, else 1 MiB), and its
//! cumulative CPU counter grows at that rate from its start. Logs are one canned line per
//! container. Pod IPs come from 198.18.0.0/15 (RFC 2544's benchmarking range) and reach nothing;
//! exec, attach and port-forward are refused as `Unsupported`, so exec and HTTP probes fail.
//!
//! The node's capacity is [`MemoryConfig::capacity`]; [`parse_upstream_mock_config`] reads it (and
//! `pods`) from upstream mock's `--provider-config` JSON, for a caller that offers that flag.

mod config;
mod lifecycle;
mod streams;
mod usage;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;
use vk_domain::jiff::Timestamp;
use vk_domain::node::NodeCapacity;
use vk_domain::pod::PodKey;
use vk_domain::runtime::RuntimePod;
use vk_ports::{Change, NodeProvider, ProviderError};

pub use crate::config::{MemoryConfig, UpstreamMockConfig, parse_upstream_mock_config};

/// Changes buffered for a slow reader before it is told to list everything again
/// ([`Change::Resync`]).
const CHANGE_BUFFER: usize = 4096;

/// 1 MiB, the memory a container without request or limit is said to use.
const MIB: u64 = 1 << 20;

/// One pod as the provider keeps it: its runtime view and what its usage is made of.
struct Entry {
    runtime: RuntimePod,
    /// Per container: (name, nanocores, working-set bytes).
    usage: Vec<(String, u64, u64)>,
}

/// The in-memory provider. See the module documentation.
pub struct MemoryProvider {
    config: MemoryConfig,
    started: Timestamp,
    pods: Mutex<State>,
    changes: broadcast::Sender<Change>,
}

#[derive(Default)]
struct State {
    /// Boxed: an `Entry` is 352 bytes inline, and a hash table keeps up to twice as many slots
    /// as entries.
    pods: HashMap<PodKey, Box<Entry>>,
    /// Pod IPs handed out so far (the next one is derived from it).
    ips: u32,
}

impl MemoryProvider {
    /// A provider with no pods.
    pub fn new(config: MemoryConfig) -> Self {
        Self {
            config,
            started: Timestamp::now(),
            pods: Mutex::new(State::default()),
            changes: broadcast::channel(CHANGE_BUFFER).0,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self, key: &PodKey) {
        // No receiver yet is fine: the first thing a reader gets is a Resync.
        let _ = self.changes.send(Change::Pod { key: key.clone(), at: Some(Timestamp::now()) });
    }

    /// Applies `f` to the pod whose workload ID is `id`, then pushes the change.
    fn with_pod<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut RuntimePod, Timestamp) -> T,
    ) -> Result<T, ProviderError> {
        let key = key_of(id)?;
        let out = {
            let mut st = self.state();
            let entry = st.pods.get_mut(&key).ok_or_else(|| not_found(id))?;
            f(&mut entry.runtime, Timestamp::now())
        };
        self.notify(&key);
        Ok(out)
    }
}

fn not_found(id: &str) -> ProviderError {
    ProviderError::NotFound(format!("no pod {id} in the memory provider"))
}

/// Workload IDs are the pod's `namespace/name`.
fn key_of(id: &str) -> Result<PodKey, ProviderError> {
    PodKey::parse(id).map_err(|_| not_found(id))
}

impl NodeProvider for MemoryProvider {
    /// The configured capacity, always (the backend is this process, so it is always reachable).
    async fn capacity(&self) -> Result<NodeCapacity, ProviderError> {
        Ok(self.config.capacity)
    }

    /// `memory://<this crate's version>`.
    async fn runtime_version(&self) -> Result<String, ProviderError> {
        Ok(format!("memory://{}", env!("CARGO_PKG_VERSION")))
    }

    fn version_name(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests;
