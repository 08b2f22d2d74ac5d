//! Keeps the Node registered and alive: the Lease renewed every 10 s (a kubelet's liveness signal
//! to the node-lifecycle controller), and the status (capacity, Ready) checked against the backend
//! every `status_interval` and written when it changes or every `report_interval`.
//!
//! The Lease is renewed whatever the backend does: the process is alive. Whether the backend
//! answers is reported in the condition `BackendUnreachable` with the provider's reason
//! (`NomadUnreachable` for Nomad), never by going silent; `Ready` stays `True` through an outage
//! unless the operator chose `--backend-outage not-ready` ([`vk_domain::node::OutagePolicy`]).

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use k8s_openapi::api::core::v1::NodeStatus;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vk_domain::jiff::Timestamp;
use vk_domain::node::{Health, NodeCapacity, NodeConfig, status_differs};
use vk_ports::{ClusterError, NodeApi, NodeProvider};

/// Lease renewal period: 0.25 × the 40 s lease duration, as the kubelet.
pub const LEASE_RENEW: Duration = Duration::from_secs(10);

/// Timing of the node controller.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often the backend is asked for capacity and health.
    pub status_interval: Duration,
    /// How often the status is written even when unchanged.
    pub report_interval: Duration,
}

/// Asks the backend once: capacity and `Ready`, or `Unreachable` with why.
async fn observe<P: NodeProvider>(provider: &P) -> (Option<NodeCapacity>, Health) {
    match provider.capacity().await {
        Ok(c) => (Some(c), Health::Ready),
        Err(e) => (
            None,
            Health::Unreachable {
                reason: provider.unreachable_reason().into(),
                message: format!("cannot use the backend: {e}"),
            },
        ),
    }
}

/// Registers the node (retrying with backoff until it succeeds or `cancel` fires), then keeps it.
/// Every capacity read from the backend is also sent on `published` as what is allocatable (the
/// pod controller resolves `resourceFieldRef` limits a container does not set to it, as the
/// kubelet does to node allocatable). `check_now` asks for a check before
/// the next tick (the backend's machines changed: Nomad node events).
/// Returns when `cancel` fires. Errors are logged, never fatal.
pub async fn run<P: NodeProvider, N: NodeApi>(
    provider: Arc<P>,
    api: Arc<N>,
    config: NodeConfig,
    timing: Timing,
    published: tokio::sync::watch::Sender<NodeCapacity>,
    check_now: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) {
    let (capacity, health) = observe(provider.as_ref()).await;
    if let Some(c) = capacity {
        published.send_replace(c.allocatable());
    }
    if let Health::Unreachable { message, .. } = &health {
        warn!(%message, outage = ?config.outage, "backend unreachable at start");
    }
    let register =
        || async { api.register(&config.node(capacity, &health, Timestamp::now())).await };
    let registered = tokio::select! {
        _ = cancel.cancelled() => return,
        r = register
            .retry(ExponentialBuilder::default().with_max_delay(Duration::from_secs(30)).without_max_times())
            .notify(|e: &ClusterError, d| warn!(error = %e, retry_in = ?d, "registering the node failed")) => r,
    };
    let Ok(mut node) = registered else { return };
    info!(node = %config.name, "node registered");
    let mut uid = node.metadata.uid.clone().unwrap_or_default();
    let mut last: Option<NodeStatus> = node.status.take();
    let mut last_written: Option<Instant> = None;

    let mut lease_tick = tokio::time::interval(LEASE_RENEW);
    let mut status_tick = tokio::time::interval(timing.status_interval);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = lease_tick.tick() => {
                if let Err(e) = api.renew_lease(&config.lease(&uid, Timestamp::now())).await {
                    metrics::counter!(LEASE_RENEW_FAILURES).increment(1);
                    metrics_warn("lease renewal failed", &e);
                }
            }
            _ = async {
                tokio::select! {
                    _ = status_tick.tick() => {}
                    _ = check_now.notified() => {}
                }
            } => {
                let (capacity, health) = observe(provider.as_ref()).await;
                if let Some(c) = capacity {
                    published.send_replace(c.allocatable());
                }
                // Keep the last known capacity while the backend is unreachable.
                let capacity = capacity.or_else(|| last_capacity(last.as_ref()));
                let status = config.status(capacity, &health, last.as_ref(), Timestamp::now());
                let due = last_written.is_none_or(|t| t.elapsed() >= timing.report_interval);
                if !status_differs(last.as_ref(), &status) && !due {
                    continue;
                }
                match api.update_status(&config.name, &status).await {
                    Ok(()) => {
                        if status_differs(last.as_ref(), &status) {
                            info!(
                                backend_answers = matches!(health, Health::Ready),
                                "node status changed"
                            );
                        }
                        last = Some(status);
                        last_written = Some(Instant::now());
                    }
                    Err(ClusterError::NotFound(_)) => {
                        warn!("the Node was deleted; registering it again");
                        match api.register(&config.node(capacity, &health, Timestamp::now())).await {
                            Ok(n) => {
                                uid = n.metadata.uid.clone().unwrap_or_default();
                                last = None;
                            }
                            Err(e) => metrics_warn("registering the node again failed", &e),
                        }
                    }
                    Err(e) => metrics_warn("node status update failed", &e),
                }
            }
        }
    }
}

/// Counter: node Lease renewals that failed.
pub const LEASE_RENEW_FAILURES: &str = "vk_lease_renew_failures_total";

fn metrics_warn(what: &str, e: &ClusterError) {
    warn!(error = %e, kind = e.kind(), "{what}");
}

/// The capacity last written (what was reserved: capacity less allocatable), so an unreachable
/// backend does not zero the node.
fn last_capacity(status: Option<&NodeStatus>) -> Option<NodeCapacity> {
    use vk_domain::quantity::{bytes, cpu_millis};
    let status = status?;
    let read = |list: &std::collections::BTreeMap<
        String,
        k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    >| {
        let cpu = cpu_millis("cpu", &list.get("cpu")?.0).ok()?;
        let memory = bytes("memory", &list.get("memory")?.0).ok()?;
        let disk = list.get("ephemeral-storage").and_then(|q| bytes("e", &q.0).ok()).unwrap_or(0);
        Some((cpu, memory, disk))
    };
    let (cpu_millis, memory_bytes, ephemeral_storage_bytes) = read(status.capacity.as_ref()?)?;
    let (cpu, memory, disk) = status.allocatable.as_ref().and_then(read).unwrap_or((
        cpu_millis,
        memory_bytes,
        ephemeral_storage_bytes,
    ));
    Some(NodeCapacity {
        cpu_millis,
        memory_bytes,
        ephemeral_storage_bytes,
        pods: status.capacity.as_ref()?.get("pods").and_then(|q| q.0.parse().ok()),
        reserved: vk_domain::node::Reserved {
            cpu_millis: cpu_millis.saturating_sub(cpu),
            memory_bytes: memory_bytes.saturating_sub(memory),
            ephemeral_storage_bytes: ephemeral_storage_bytes.saturating_sub(disk),
        },
    })
}
