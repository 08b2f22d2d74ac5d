//! The node the Nomad cluster makes up: capacity of the usable Nomad nodes, their addresses, the
//! regions, and the runtime version ([`NodeProvider`]).

use super::*;

/// What the node offers: the sum over the Nomad nodes that are `ready`, `eligible` and not
/// draining, of their cores (in millicores, less the share of CPU Nomad reserves), memory and disk
/// (MiB to bytes, less what Nomad reserves), and a kubelet's 110 pods for each of them.
pub fn capacity_of(nodes: &[NodeStub]) -> NodeCapacity {
    let mut cap = NodeCapacity::default();
    let usable_nodes = nodes.iter().filter(|n| usable(n)).count();
    let per_node = u64::from(vk_domain::node::DEFAULT_MAX_PODS);
    cap.pods = u32::try_from(per_node * u64::try_from(usable_nodes).unwrap_or(0)).ok();
    for n in nodes.iter().filter(|n| usable(n)) {
        let Some(r) = &n.node_resources else { continue };
        let reserved = n.reserved_resources.clone().unwrap_or_default();
        let shares = u64::try_from(r.cpu.cpu_shares).unwrap_or(0).max(1);
        let free_shares = u64::try_from(r.cpu.cpu_shares - reserved.cpu.cpu_shares).unwrap_or(0);
        let mib = |v: i64| u64::try_from(v).unwrap_or(0) << 20;
        cap.cpu_millis += u64::from(r.cpu.total_cpu_cores) * 1000 * free_shares / shares;
        cap.memory_bytes += mib(r.memory.memory_mb - reserved.memory.memory_mb);
        cap.ephemeral_storage_bytes += mib(r.disk.disk_mb - reserved.disk.disk_mb);
    }
    cap
}

/// The Nomad nodes that make up this node: `ready`, `eligible` and not draining.
pub fn usable(n: &NodeStub) -> bool {
    n.status == "ready" && n.scheduling_eligibility == "eligible" && !n.drain
}

/// MHz per core over all nodes (total `CpuShares` / total cores), the factor that turns
/// millicores into Nomad's MHz; `None` when no node reports CPU.
pub fn mhz_per_core(nodes: &[NodeStub]) -> Option<u64> {
    let (shares, cores) =
        nodes.iter().filter_map(|n| n.node_resources.as_ref()).fold((0u64, 0u64), |(s, c), r| {
            (s + u64::try_from(r.cpu.cpu_shares).unwrap_or(0), c + u64::from(r.cpu.total_cpu_cores))
        });
    (cores > 0 && shares > 0).then(|| shares / cores)
}

impl NodeProvider for NomadProvider {
    async fn capacity(&self) -> Result<NodeCapacity, ProviderError> {
        Ok(capacity_of(&self.nodes().await?))
    }

    async fn runtime_version(&self) -> Result<String, ProviderError> {
        if let Some(v) = self.known.version() {
            return Ok(format!("nomad://{v}"));
        }
        self.nodes().await?;
        let v = self.known.version().unwrap_or_else(|| "unknown".into());
        Ok(format!("nomad://{v}"))
    }

    fn unreachable_reason(&self) -> &'static str {
        "NomadUnreachable"
    }

    fn version_name(&self) -> &'static str {
        "nomad"
    }
}

impl NomadProvider {
    pub(crate) async fn nodes(&self) -> Result<Vec<NodeStub>, ProviderError> {
        let nodes: Vec<NodeStub> =
            self.client.get(&["v1", "nodes"], &[("resources", "true")]).await?;
        self.known.nodes_seen(&nodes);
        Ok(nodes)
    }

    pub(crate) async fn host_ip(&self, node_id: &str) -> Option<String> {
        let known = self.known.node_ip(node_id);
        if known.is_some() {
            return known;
        }
        if let Err(e) = self.nodes().await {
            debug!(error = %e, "reading Nomad nodes for a host IP");
        }
        self.known.node_ip(node_id)
    }

    /// The regions to look in: all that Nomad knows (`/v1/regions`).
    pub(crate) async fn regions(&self) -> Result<Vec<String>, ProviderError> {
        self.client.get(&["v1", "regions"], &[]).await
    }
}
