//! Synthetic resource usage of memory pods ([`StatsProvider`]): each running container uses its
//! requests, and its CPU counter grows at that rate.

use vk_domain::jiff::Timestamp;
use vk_domain::runtime::ContainerState;
use vk_domain::stats::{ContainerUsage, CpuSample, MemorySample, NodeUsage, PodUsage, Usage};
use vk_ports::{ProviderError, StatsProvider};

use crate::MemoryProvider;

impl StatsProvider for MemoryProvider {
    /// Each running container's synthetic usage (see the module documentation); the node's is
    /// the sum of its pods', with what is left of the configured memory as available.
    async fn usage(&self) -> Result<Usage, ProviderError> {
        let now = Timestamp::now();
        let st = self.state();
        let mut pods = Vec::new();
        for entry in st.pods.values() {
            let Some(sandbox) = entry.runtime.sandbox.as_ref().filter(|s| !s.is_terminal()) else {
                continue;
            };
            let containers = entry
                .usage
                .iter()
                .filter_map(|(name, nano_cores, bytes)| {
                    let status = sandbox.containers.get(name)?;
                    let ContainerState::Running { started_at } = status.state else { return None };
                    let since = started_at
                        .map_or(0, |s| now.duration_since(s).as_nanos().max(0).unsigned_abs());
                    let cumulative = u128::from(*nano_cores).saturating_mul(since) / 1_000_000_000;
                    Some(ContainerUsage {
                        name: name.clone(),
                        start_time: started_at,
                        cpu: Some(CpuSample {
                            at: now,
                            nano_cores: *nano_cores,
                            cumulative_nanos: Some(u64::try_from(cumulative).unwrap_or(u64::MAX)),
                        }),
                        memory: Some(MemorySample {
                            at: now,
                            working_set_bytes: *bytes,
                            rss_bytes: *bytes,
                            usage_bytes: *bytes,
                            available_bytes: None,
                        }),
                    })
                })
                .collect();
            pods.push(PodUsage {
                key: entry.runtime.owner.key.clone(),
                uid: entry.runtime.owner.uid.clone(),
                start_time: sandbox.created_at,
                containers,
            });
        }
        drop(st);
        let containers = || pods.iter().flat_map(|p| &p.containers);
        let nano_cores = containers().filter_map(|c| c.cpu.as_ref()).map(|c| c.nano_cores).sum();
        let cumulative = containers().filter_map(|c| c.cpu.as_ref()?.cumulative_nanos).sum::<u64>();
        let bytes: u64 =
            containers().filter_map(|c| c.memory.as_ref()).map(|m| m.working_set_bytes).sum();
        let node = NodeUsage {
            start_time: Some(self.started),
            cpu: Some(CpuSample { at: now, nano_cores, cumulative_nanos: Some(cumulative) }),
            memory: Some(MemorySample {
                at: now,
                working_set_bytes: bytes,
                rss_bytes: bytes,
                usage_bytes: bytes,
                available_bytes: Some(self.config.capacity.memory_bytes.saturating_sub(bytes)),
            }),
        };
        Ok(Usage { node, pods })
    }
}
