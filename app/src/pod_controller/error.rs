//! Why a pod's sync failed ([`SyncError`]), and the names of the steps in metrics and logs.

use super::*;

/// Why a step of a pod's sync failed (the pod is tried again with back-off): what was being done
/// and the port's error, whose `kind()` labels `vk_pod_operations_total{result}`.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The backend failed.
    #[error("{doing}: {source}")]
    Provider {
        /// What the step was doing (`"creating the workload"`).
        doing: Cow<'static, str>,
        /// The backend's error.
        source: ProviderError,
    },
    /// The Kubernetes API failed.
    #[error("{doing}: {source}")]
    Cluster {
        /// What the step was doing (`"writing the pod status"`).
        doing: Cow<'static, str>,
        /// The API server's error.
        source: ClusterError,
    },
    /// An input the pod names is not there yet (a ConfigMap, a Secret, a key); the container
    /// waits as the kubelet's does.
    #[error("{0}")]
    Missing(String),
    /// The pod as held could not be read back (a bug; logged with the pod).
    #[error("{0}")]
    Held(String),
}

impl SyncError {
    /// A low-cardinality label: the port error's kind (`unavailable`, `not_found`, `conflict`,
    /// ...), `missing_input`, or `internal`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Provider { source, .. } => source.kind(),
            Self::Cluster { source, .. } => source.kind(),
            Self::Missing(_) => "missing_input",
            Self::Held(_) => "internal",
        }
    }

    /// For `map_err`: nothing is made unless the step failed.
    pub(super) fn provider(doing: &'static str) -> impl FnOnce(ProviderError) -> Self {
        move |source| Self::Provider { doing: Cow::Borrowed(doing), source }
    }

    /// For `map_err`: nothing is made unless the step failed.
    pub(super) fn cluster(doing: &'static str) -> impl FnOnce(ClusterError) -> Self {
        move |source| Self::Cluster { doing: Cow::Borrowed(doing), source }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    Stop,
    Kill,
    Purge,
}

impl Op {
    pub(super) fn done(self) -> &'static str {
        match self {
            Op::Stop => "workload stopping",
            Op::Kill => "workload killed",
            Op::Purge => "workload purged",
        }
    }
}

/// The `operation` label of a step that does something (`None` for waiting and keeping).
pub(super) fn operation_name(step: &Step) -> Option<&'static str> {
    Some(match step {
        Step::Create => "create",
        Step::SyncStatus => "sync_status",
        Step::Stop => "stop",
        Step::Kill => "kill",
        Step::Purge { .. } => "purge",
        Step::DeleteObject => "delete_object",
        Step::MarkLost => "mark_lost",
        Step::StartContainer(_) => "start_container",
        Step::UpdateWorkload => "update_workload",
        Step::FailDeadline => "fail_deadline",
        Step::RequeueAfter(_) | Step::KeepFinal => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed step is labelled by what failed, not as one `error`.
    #[test]
    fn sync_errors_are_labelled_by_kind() {
        let down = || ProviderError::Unavailable { message: "refused".into(), source: None };
        let e = SyncError::provider("creating the workload")(down());
        assert_eq!(e.kind(), "unavailable");
        assert_eq!(e.to_string(), "creating the workload: backend unavailable: refused");
        let e = SyncError::cluster("writing the pod status")(ClusterError::Conflict("rv".into()));
        assert_eq!(e.kind(), "conflict");
        assert_eq!(SyncError::Missing("configmap \"c\" not found".into()).kind(), "missing_input");
        assert_eq!(SyncError::Held("bad".into()).kind(), "internal");
    }
}
