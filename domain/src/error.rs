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
