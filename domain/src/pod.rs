//! Pod identity: the namespace/name key, and the small questions asked of a pod object.

use std::fmt;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use crate::error::InvalidName;

/// A pod's `namespace/name`, checked against Kubernetes' naming rules.
///
/// The namespace is an RFC 1123 label (at most 63 characters of `[a-z0-9-]`, alphanumeric at both
/// ends) and so never contains a `.`; the name is an RFC 1123 subdomain (at most 253 characters of
/// `[a-z0-9.-]`). That makes `namespace.name` unambiguous, which backends use to build IDs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    namespace: String,
    name: String,
}

impl PodKey {
    /// Checks and builds a key.
    ///
    /// # Errors
    /// [`InvalidName`] when the namespace is not an RFC 1123 label or the name not an RFC 1123
    /// subdomain.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Result<Self, InvalidName> {
        let namespace = namespace.into();
        let name = name.into();
        check_dns(&namespace, "namespace", 63, false)?;
        check_dns(&name, "pod name", 253, true)?;
        Ok(Self { namespace, name })
    }

    /// The key of a pod object.
    ///
    /// # Errors
    /// [`InvalidName`] when the object has no namespace or name, or they are malformed.
    pub fn of(pod: &Pod) -> Result<Self, InvalidName> {
        Self::new(
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        )
    }

    /// Parses `namespace/name`.
    ///
    /// # Errors
    /// [`InvalidName`] when there is no `/` or either part is malformed.
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        let (ns, name) = s.split_once('/').ok_or(InvalidName {
            what: "pod key",
            value: s.to_owned(),
            reason: "expected namespace/name",
        })?;
        Self::new(ns, name)
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The pod name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

fn check_dns(v: &str, what: &'static str, max: usize, dots: bool) -> Result<(), InvalidName> {
    let err = |reason| Err(InvalidName { what, value: v.to_owned(), reason });
    if v.is_empty() {
        return err("must not be empty");
    }
    if v.len() > max {
        return err(if max == 63 {
            "longer than 63 characters"
        } else {
            "longer than 253 characters"
        });
    }
    let ok_char =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    if !v.chars().all(ok_char) {
        return err("only lowercase letters, digits and '-' (and '.' in names) are allowed");
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(v.chars().next()) || !alnum(v.chars().last()) {
        return err("must start and end with a letter or digit");
    }
    Ok(())
}

/// The pod's UID (`metadata.uid`), or `""` when the object has none (only objects not yet stored).
pub fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

/// When the API server set `metadata.deletionTimestamp`: the pod is being deleted gracefully and
/// its containers must be stopped by then (the timestamp is the end of the grace period).
pub fn deletion_deadline(pod: &Pod) -> Option<Timestamp> {
    pod.metadata.deletion_timestamp.as_ref().map(|t| t.0)
}

/// The phase in the pod's status, `""` when none was written yet.
pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

/// Whether the pod reached `Succeeded` or `Failed`, which Kubernetes never leaves.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// `spec.restartPolicy` (Kubernetes' default is `Always`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart every container that exits (`Always`).
    Always,
    /// Restart containers that exit non-zero (`OnFailure`).
    OnFailure,
    /// Never restart (`Never`).
    Never,
}

impl RestartPolicy {
    /// The policy of a pod; unknown values (rejected by the API server anyway) read as `Always`.
    pub fn of(pod: &Pod) -> Self {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("Never") => Self::Never,
            Some("OnFailure") => Self::OnFailure,
            _ => Self::Always,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_kubernetes_naming() {
        let cases: &[(&str, &str, bool)] = &[
            ("default", "web", true),
            ("default", "web.v1-2", true),
            ("kube-system", "a", true),
            ("Default", "web", false),
            ("a.b", "web", false),
            ("default", "", false),
            ("", "web", false),
            ("default", "-web", false),
            ("default", "web_1", false),
            ("default", &"x".repeat(254), false),
            (&"n".repeat(64), "web", false),
        ];
        for (ns, name, ok) in cases {
            assert_eq!(PodKey::new(*ns, *name).is_ok(), *ok, "{ns}/{name}");
        }
    }

    #[test]
    fn parse_round_trips_display() {
        let key = PodKey::new("team-a", "web.0").unwrap();
        assert_eq!(PodKey::parse(&key.to_string()).unwrap(), key);
        assert_eq!(PodKey::parse("nope").unwrap_err().what, "pod key");
    }
}
