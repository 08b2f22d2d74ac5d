//! A container's `resources`: CPU and memory requests and limits in kubelet units, checked.

use k8s_openapi::api::core::v1::Container;

use crate::error::Unsupported;
use crate::quantity;

/// A container's resource requests and limits, in kubelet units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// `requests.cpu` in millicores (1000 = one core).
    pub cpu_request_millis: Option<u64>,
    /// `limits.cpu` in millicores.
    pub cpu_limit_millis: Option<u64>,
    /// `requests.memory` in bytes.
    pub memory_request_bytes: Option<u64>,
    /// `limits.memory` in bytes.
    pub memory_limit_bytes: Option<u64>,
}

/// The requests and limits of container `c` (at path `field`). `ephemeral-storage` is checked
/// but not kept.
///
/// # Errors
/// [`Unsupported`] on `field.resources...` for resource claims, a resource other than `cpu`,
/// `memory` and `ephemeral-storage`, or a malformed quantity.
pub(super) fn resources(field: &str, c: &Container) -> Result<Resources, Unsupported> {
    let mut resources = Resources::default();
    let Some(r) = &c.resources else { return Ok(resources) };
    if r.claims.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(Unsupported::new(
            format!("{field}.resources.claims"),
            "dynamic resource claims are not supported",
        ));
    }
    let get = |kind: &str, res: &str| {
        let m = if kind == "requests" { &r.requests } else { &r.limits };
        m.as_ref()
            .and_then(|m| m.get(res))
            .map(|q| (format!("{field}.resources.{kind}.{res}"), q.0.clone()))
    };
    for kind in ["limits", "requests"] {
        let m = if kind == "requests" { &r.requests } else { &r.limits };
        for name in m.iter().flat_map(|m| m.keys()) {
            if !matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                return Err(Unsupported::new(
                    format!("{field}.resources.{kind}.{name}"),
                    format!(
                        "resource {name:?} is not supported (cpu, memory and ephemeral-storage are)"
                    ),
                ));
            }
        }
    }
    resources.cpu_request_millis =
        get("requests", "cpu").map(|(f, q)| quantity::cpu_millis(&f, &q)).transpose()?;
    resources.cpu_limit_millis =
        get("limits", "cpu").map(|(f, q)| quantity::cpu_millis(&f, &q)).transpose()?;
    resources.memory_request_bytes =
        get("requests", "memory").map(|(f, q)| quantity::bytes(&f, &q)).transpose()?;
    resources.memory_limit_bytes =
        get("limits", "memory").map(|(f, q)| quantity::bytes(&f, &q)).transpose()?;
    for (f, q) in [get("requests", "ephemeral-storage"), get("limits", "ephemeral-storage")]
        .into_iter()
        .flatten()
    {
        quantity::bytes(&f, &q)?;
    }
    Ok(resources)
}
