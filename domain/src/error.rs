//! Errors of the domain: input that cannot be turned into something runnable.

/// A pod (or a setting) that the virtual kubelet cannot run as written.
///
/// `field` is the JSON path of the offending field in the Kubernetes object
/// (`spec.containers[0].resources.limits.cpu`), so the pod's status message and its Warning Event
/// name exactly what is unsupported (upstream virtual-kubelet's `ProviderFailed` reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Unsupported {
    /// JSON path of the field, for example `spec.volumes[1]`.
    pub field: String,
    /// What is wrong or unsupported, in one sentence without a trailing period.
    pub reason: String,
}

impl Unsupported {
    /// Builds an error for `field` with `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

/// An identifier (namespace, name, label) that Kubernetes would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct InvalidName {
    /// What the value was meant to be (`namespace`, `pod name`).
    pub what: &'static str,
    /// The value as given.
    pub value: String,
    /// Why it is refused.
    pub reason: &'static str,
}

/// An input a pod needs (a ConfigMap, a Secret, one of their keys) that does not exist now. The
/// pod waits for it, as a kubelet keeps such a container in `CreateContainerConfigError`, and is
/// tried again; nothing is created meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Missing {
    /// The Event reason, upstream virtual-kubelet's name (`MandatoryConfigMapNotFound`,
    /// `MandatorySecretKeyNotFound`, ...), or the kubelet's `FailedMount` for a volume.
    pub reason: &'static str,
    /// What is missing, for example `configmap default/app not found`.
    pub message: String,
}

impl Missing {
    /// Builds the error.
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}

/// Something worth a Warning Event that does not stop the pod (an optional ConfigMap that is
/// absent, environment variable names that were skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The Event reason (`OptionalConfigMapNotFound`, `InvalidEnvironmentVariableNames`, ...).
    pub reason: &'static str,
    /// The Event message.
    pub message: String,
}

impl Notice {
    /// Builds a notice.
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}

/// A pod the kubelet's admission rejects (`lifecycle.PodAdmitResult`): it is never started, its
/// phase is `Failed` with `reason` and the message `Pod was rejected: <message>`, and a Warning
/// Event of that reason is recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Rejection {
    /// The kubelet's reason: `PodOSNotSupported`, `PodOSSelectorNodeLabelDoesNotMatch`,
    /// `OutOfcpu`, `OutOfmemory`.
    pub reason: &'static str,
    /// The kubelet's message, without `Pod was rejected: `.
    pub message: String,
}

impl Rejection {
    /// Builds a rejection.
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}
