//! The node the Nomad cluster makes up: capacity of the usable Nomad nodes, their addresses, the
//! regions, and the runtime version ([`NodeProvider`]).

use super::api::AllocatedResources;
use super::*;

/// The Nomad nodes a Kubernetes node stands for: those of its datacenters and node pool. Its
/// pods' jobs go there unless a pod chooses otherwise by annotation, and its capacity is theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Datacenters, as Nomad patterns (`*` any run of characters: `--nomad-datacenters`).
    pub datacenters: Vec<String>,
    /// The node pool (`--nomad-node-pool`); `None`: `default`, where Nomad puts a job that
    /// names none (the namespace's default pool on Nomad Enterprise may differ); `all`: every
    /// pool.
    pub node_pool: Option<String>,
}

impl Scope {
    /// Whether Nomad node `n` is in the scope: its datacenter matches a pattern and its node pool
    /// is the scope's (a node of a Nomad before pools, 1.6, is in `default`).
    pub fn contains(&self, n: &NodeStub) -> bool {
        let pool = if n.node_pool.is_empty() { "default" } else { n.node_pool.as_str() };
        let pool_ok = match self.node_pool.as_deref() {
            Some("all") => true,
            Some(p) => p == pool,
            None => pool == "default",
        };
        pool_ok && self.datacenters.iter().any(|p| policy::glob_covers(p, &n.datacenter))
    }
}

/// What the node offers: the sum over the Nomad nodes in `scope` that are `ready`, `eligible`
/// and not draining, of their cores (in millicores, less the share of CPU Nomad reserves), memory
/// and disk (MiB to bytes, less what Nomad reserves), and a kubelet's 110 pods for each of them;
/// [`NodeCapacity::reserved`] is what the live allocations (desired `run`, client `pending` or
/// `running`) on those nodes hold for jobs that are not this node's pods (`ours(namespace, job
/// ID)` false): memory and disk MiB to bytes, CPU MHz to millicores at its node's MHz per core,
/// reserved cores 1000 millicores each, tasks combined by lifecycle as Nomad's scheduler does.
pub fn capacity_of(
    nodes: &[NodeStub],
    scope: &Scope,
    allocations: &[Allocation],
    ours: impl Fn(&str, &str) -> bool,
) -> NodeCapacity {
    let mut cap = NodeCapacity::default();
    let mine: Vec<&NodeStub> = nodes.iter().filter(|n| usable(n) && scope.contains(n)).collect();
    let per_node = u64::from(vk_domain::node::DEFAULT_MAX_PODS);
    cap.pods = u32::try_from(per_node * u64::try_from(mine.len()).unwrap_or(0)).ok();
    let mib = |v: i64| u64::try_from(v).unwrap_or(0) << 20;
    // Millicores per MHz of each node, as (cores × 1000, shares).
    let mut per_mhz = HashMap::new();
    for n in &mine {
        let Some(r) = &n.node_resources else { continue };
        let reserved = n.reserved_resources.clone().unwrap_or_default();
        let shares = u64::try_from(r.cpu.cpu_shares).unwrap_or(0).max(1);
        let free_shares = u64::try_from(r.cpu.cpu_shares - reserved.cpu.cpu_shares).unwrap_or(0);
        let millis = u64::from(r.cpu.total_cpu_cores) * 1000;
        cap.cpu_millis += millis * free_shares / shares;
        cap.memory_bytes += mib(r.memory.memory_mb - reserved.memory.memory_mb);
        cap.ephemeral_storage_bytes += mib(r.disk.disk_mb - reserved.disk.disk_mb);
        per_mhz.insert(n.id.as_str(), (millis, shares));
    }
    for a in allocations {
        let live =
            a.desired_status == "run" && matches!(a.client_status.as_str(), "pending" | "running");
        let Some(&(millis, shares)) = per_mhz.get(a.node_id.as_str()) else { continue };
        if !live || ours(&a.namespace, &a.job_id) {
            continue;
        }
        let Some(held) = &a.allocated_resources else { continue };
        let (mhz, cores, memory_mb) = held_by(held);
        let r = &mut cap.reserved;
        r.cpu_millis += mhz * millis / shares + cores * 1000;
        r.memory_bytes += mib(memory_mb);
        r.ephemeral_storage_bytes += mib(held.shared.as_ref().map_or(0, |s| s.disk_mb));
    }
    cap
}

/// What one allocation holds, as (MHz, reserved cores, memory MiB): its tasks combined as Nomad's
/// scheduler combines them (`AllocatedResources.Comparable`): prestart sidecars run beside
/// everything, so they add; prestart tasks that finish, the main tasks, poststart and poststop
/// tasks do not all run at once, so each dimension takes the largest of those groups.
fn held_by(a: &AllocatedResources) -> (u64, u64, i64) {
    #[derive(Default, Clone, Copy)]
    struct Sum(u64, u64, i64);
    let (mut sidecars, mut groups) = (Sum::default(), [Sum::default(); 4]);
    let lifecycles = a.task_lifecycles.as_ref();
    for (name, t) in a.tasks.iter().flatten() {
        let lc = lifecycles.and_then(|l| l.get(name)).and_then(Option::as_ref);
        let sum = match lc.map(|l| (l.hook.as_str(), l.sidecar)) {
            Some(("prestart", true)) => &mut sidecars,
            Some(("prestart", false)) => &mut groups[1],
            Some(("poststart", _)) => &mut groups[2],
            Some(("poststop", _)) => &mut groups[3],
            _ => &mut groups[0],
        };
        sum.0 += u64::try_from(t.cpu.cpu_shares).unwrap_or(0);
        sum.1 += t.cpu.reserved_cores.as_ref().map_or(0, |c| c.len() as u64);
        sum.2 += t.memory.memory_mb.max(0);
    }
    let most =
        groups.iter().fold(Sum::default(), |m, g| Sum(m.0.max(g.0), m.1.max(g.1), m.2.max(g.2)));
    (sidecars.0 + most.0, sidecars.1 + most.1, sidecars.2 + most.2)
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
        let nodes = self.nodes().await?;
        let allocations = self.live_allocations().await?;
        let known = &self.known;
        Ok(capacity_of(&nodes, &self.scope, &allocations, |_, job| known.pod_of(job).is_some()))
    }

    fn describe_metrics(&self) {
        use metrics::{Unit, describe_counter, describe_histogram};
        describe_counter!(
            crate::client::REQUESTS,
            "Nomad API requests, by endpoint (a route template), method and HTTP status (error: no answer)."
        );
        describe_histogram!(
            crate::client::REQUEST_DURATION,
            Unit::Seconds,
            "Time of a Nomad API request, by endpoint and method."
        );
        describe_counter!(
            crate::events::EVENT_LINES_SKIPPED,
            "Batches of Nomad's event stream over 16 MiB, skipped."
        );
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
        // Any server answers (`stale`): the node's capacity does not wait for a Nomad leader,
        // so an election among the servers does not read as Nomad being unreachable.
        let query = [("resources", "true"), ("stale", "true")];
        let nodes: Vec<NodeStub> = self.client.get(&["v1", "nodes"], &query).await?;
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

    /// The live allocations (desired `run`, client `pending` or `running`) of every Nomad
    /// namespace the token may read, with what they hold (`GET /v1/allocations?namespace=*&
    /// resources=true&task_states=false&stale`, filtered on the server, answered by any server).
    ///
    /// # Errors
    /// `Unavailable` when Nomad cannot be reached. A refusal (a token that may not list
    /// allocations) is logged once per read and counts as no allocation: the capacity is then
    /// what the nodes have, as before the read.
    async fn live_allocations(&self) -> Result<Vec<Allocation>, ProviderError> {
        const LIVE: &str = r#"DesiredStatus == "run" and (ClientStatus == "pending" or ClientStatus == "running")"#;
        let query =
            [("resources", "true"), ("task_states", "false"), ("filter", LIVE), ("stale", "true")];
        match self.client.at(Some("*"), None).get(&["v1", "allocations"], &query).await {
            Ok(a) => Ok(a),
            Err(e @ ProviderError::Unavailable { .. }) => Err(e),
            Err(e) => {
                warn!(error = %e, "cannot list Nomad allocations: other jobs' share is not kept out of allocatable");
                Ok(Vec::new())
            }
        }
    }

    /// The regions to look in: all that Nomad knows (`/v1/regions`).
    pub(crate) async fn regions(&self) -> Result<Vec<String>, ProviderError> {
        self.client.get(&["v1", "regions"], &[]).await
    }

    /// The node's topology labels, as a kubelet on a cloud provider sets them
    /// (`topology.kubernetes.io/region` and `topology.kubernetes.io/zone`): the region is the
    /// Nomad region of its jobs (`--nomad-region`, else the one region Nomad knows, if it knows
    /// one only; none when Nomad cannot be asked), the zone its datacenter when its scope is one
    /// datacenter (`--nomad-datacenters` one name without `*`). Label values are Nomad names,
    /// which are valid label values.
    pub async fn topology_labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        let region = match self.client.region() {
            Some(r) => Some(r.to_owned()),
            None => match self.regions().await {
                Ok(regions) if regions.len() == 1 => regions.into_iter().next(),
                Ok(regions) => {
                    warn!(
                        ?regions,
                        "Nomad knows several regions and --nomad-region is unset: no topology.kubernetes.io/region label"
                    );
                    None
                }
                Err(e) => {
                    warn!(error = %e, "cannot list Nomad's regions: no topology.kubernetes.io/region label");
                    None
                }
            },
        };
        if let Some(region) = region {
            labels.insert(REGION_LABEL.to_owned(), region);
        }
        if let [dc] = self.scope.datacenters.as_slice()
            && !dc.contains('*')
        {
            labels.insert(ZONE_LABEL.to_owned(), dc.clone());
        }
        labels
    }
}

/// The well-known label of a node's region (`topology.kubernetes.io/region`).
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// The well-known label of a node's zone (`topology.kubernetes.io/zone`).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
