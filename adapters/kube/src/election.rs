//! Leader election among the replicas of one node: a `coordination.k8s.io/v1` Lease held by
//! one replica at a time, with kube-lease-manager (server-side apply, so two replicas can never
//! both hold it). The holder runs the node; the others stand by until the Lease expires or is
//! released.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tracing::{info, warn};
use vk_ports::ClusterError;

/// The election's Lease and timing (the kube components' `--leader-elect-*` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionSettings {
    /// Namespace of the Lease (the process's own, in a cluster).
    pub namespace: String,
    /// Name of the Lease (one per node: `virtual-kubelet-<node>`).
    pub name: String,
    /// This replica's identity, unique among the replicas (`<hostname>_<pid>` by default).
    pub identity: String,
    /// How long a holder that stopped renewing keeps the Lease (`leaseDurationSeconds`): what
    /// a standby waits at most after the holder died. Whole seconds, at least 2.
    pub duration: Duration,
    /// How long before the Lease would expire the holder renews it. Whole seconds, less than
    /// `duration`.
    pub grace: Duration,
}

/// Where the election's Leases are written: the pod's ServiceAccount when its token is mounted,
/// else the node's heartbeat client (`connect::leases_client`).
#[derive(Clone)]
pub struct Leases {
    pub(crate) client: Client,
}

/// One replica's part in the election: [`Election::leading`] resolves once it holds the Lease,
/// [`Election::lost`] once it no longer does; dropping it (or [`Election::release`]) frees the
/// Lease for a standby at once.
pub struct Election {
    state: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

impl Leases {
    /// Enters the election of `s` (the Lease is created when missing).
    ///
    /// # Errors
    /// [`ClusterError`] when the Lease cannot be read or created (RBAC, the API server down).
    pub async fn elect(&self, s: &ElectionSettings) -> Result<Election, ClusterError> {
        let manager = LeaseManagerBuilder::new(self.client.clone(), &s.name)
            .with_namespace(&s.namespace)
            .with_identity(&s.identity)
            .with_duration(s.duration.as_secs().max(2))
            .with_grace(s.grace.as_secs().clamp(1, s.duration.as_secs().max(2) - 1))
            .build()
            .await
            .map_err(|e| {
                ClusterError::Unavailable(format!(
                    "the leader Lease {}/{}: {e}",
                    s.namespace, s.name
                ))
            })?;
        let (state, task) = manager.watch().await;
        Ok(Election { state, task })
    }
}

impl Election {
    /// Resolves once this replica holds the Lease.
    pub async fn leading(&mut self) {
        if self.state.wait_for(|held| *held).await.is_err() {
            warn!("the leader election stopped before this replica led");
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once this replica no longer holds the Lease (another took it, or the election
    /// stopped on an error).
    pub async fn lost(&mut self) {
        let _ = self.state.wait_for(|held| !*held).await;
    }

    /// Frees the Lease (when held) so that a standby takes over at once, waiting at most 5 s.
    pub async fn release(self) {
        drop(self.state);
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(_))) => info!("the leader Lease was released"),
            Ok(Ok(Err(e))) => warn!(error = %e, "releasing the leader Lease failed"),
            Ok(Err(e)) => warn!(error = %e, "the leader election task failed"),
            Err(_) => warn!("releasing the leader Lease took more than 5 s"),
        }
    }
}
