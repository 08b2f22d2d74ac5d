//! Where a pod's job runs, as its annotations choose: the task driver, the datacenters, the node
//! pool, the priority, the group's network mode, the Nomad namespace and region. Each value's
//! syntax is checked, then the value against the operator's policy for the pod's namespace
//! ([`crate::policy`]).

use vk_domain::error::Unsupported;
use vk_domain::workload::WorkloadSpec;

use super::JobSettings;
use super::driver::Driver;
use super::network::valid_network_mode;
use crate::policy::{Check, Own};

/// Pod annotation: comma-separated Nomad datacenters (upstream virtual-kubelet's name).
pub const ANN_DATACENTERS: &str = "nomad.hashicorp.com/datacenters";
/// Pod annotation: the task driver (`docker`, `raw_exec`, `exec`).
pub const ANN_DRIVER: &str = "nomad.hashicorp.com/driver";
/// Pod annotation: the Nomad node pool.
pub const ANN_NODE_POOL: &str = "nomad.hashicorp.com/node-pool";
/// Pod annotation: the job's priority, 1 to 100.
pub const ANN_PRIORITY: &str = "nomad.hashicorp.com/priority";
/// Pod annotation: the group's network mode: `host`, `bridge`, `none` or `cni/<name>`.
pub const ANN_NETWORK_MODE: &str = "nomad.hashicorp.com/network-mode";
/// Pod annotation: the Nomad namespace the job is registered in.
pub const ANN_NAMESPACE: &str = "nomad.hashicorp.com/namespace";
/// Pod annotation: the Nomad region the job is registered in.
pub const ANN_REGION: &str = "nomad.hashicorp.com/region";

/// Nomad's names for namespaces and regions: letters, digits and `-`, 1 to 128 of them
/// (`structs.validNamespaceName`).
pub fn valid_nomad_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Nomad's node pool names: `^[a-zA-Z0-9-_]{1,128}$` (`structs.validNodePoolName`).
pub fn valid_node_pool(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 128
        && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A Nomad datacenter name or pattern: letters, digits, `-`, `_`, `.` and the wildcard `*`.
pub fn valid_datacenter(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 128
        && d.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*'))
}

/// What the pod's annotations choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Placement {
    pub(super) namespace: Option<String>,
    pub(super) region: Option<String>,
    pub(super) driver: Driver,
    pub(super) datacenters: Vec<String>,
    pub(super) node_pool: Option<String>,
    pub(super) priority: Option<i32>,
    pub(super) network_mode: String,
}

/// Reads what the pod's annotations choose, checks each value's syntax, then checks it against
/// the operator's policy for the pod's namespace.
pub(super) fn placement(spec: &WorkloadSpec, s: &JobSettings) -> Result<Placement, Unsupported> {
    let ns = spec.key.namespace();
    let applicable = s.policy.for_namespace(ns, spec.namespace_labels.as_ref());
    let (driver_key, driver) = chosen_driver(spec, s)?;
    let check = Check {
        namespace: ns,
        applicable: &applicable,
        own: Own {
            driver: &s.default_driver,
            namespace: s.namespace.as_deref(),
            region: s.region.as_deref(),
            datacenters: &s.datacenters,
            node_pool: s.node_pool.as_deref(),
            network_mode: driver.default_network_mode(),
        },
    };
    if !driver_key.is_empty() {
        check.driver(driver_key, driver.as_str())?;
    }
    let datacenters = datacenters(spec, s, &check)?;
    let node_pool = node_pool(spec, s, &check)?;
    let priority = priority(spec, &check)?;
    let network_mode = network_mode(spec, driver, &check)?;
    let [namespace, region] = location(spec, &check)?;
    if spec.host_network && network_mode != "host" {
        return Err(Unsupported::new(
            field(ANN_NETWORK_MODE),
            format!("network mode {network_mode:?} contradicts spec.hostNetwork"),
        ));
    }
    Ok(Placement { namespace, region, driver, datacenters, node_pool, priority, network_mode })
}

/// Annotation `key` of the pod, trimmed; `None` when absent or blank.
fn annotation<'a>(spec: &'a WorkloadSpec, key: &str) -> Option<&'a str> {
    spec.annotations.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// The field of annotation `key`, as refusals name it.
fn field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// The driver the pod runs on, and the annotation that chose it (the operator's
/// [`JobSettings::driver_annotation`] first, then [`ANN_DRIVER`]; empty: the operator's default
/// driver, which no annotation chose).
///
/// # Errors
/// [`Unsupported`] naming the annotation (`metadata.annotations` for the default) when the name is
/// not one of [`Driver::ALL`].
fn chosen_driver<'a>(
    spec: &'a WorkloadSpec,
    s: &'a JobSettings,
) -> Result<(&'a str, Driver), Unsupported> {
    let (key, name) = match annotation(spec, &s.driver_annotation) {
        Some(d) => (s.driver_annotation.as_str(), d),
        None => match annotation(spec, ANN_DRIVER) {
            Some(d) => (ANN_DRIVER, d),
            None => ("", s.default_driver.as_str()),
        },
    };
    let Some(driver) = Driver::parse(name) else {
        let supported: Vec<&str> = Driver::ALL.iter().map(|d| d.as_str()).collect();
        return Err(Unsupported::new(
            if key.is_empty() { "metadata.annotations".to_owned() } else { field(key) },
            format!("Nomad task driver {name:?} is not supported ({} are)", supported.join(", ")),
        ));
    };
    Ok((key, driver))
}

/// The datacenters of [`ANN_DATACENTERS`], else the operator's.
fn datacenters(
    spec: &WorkloadSpec,
    s: &JobSettings,
    check: &Check<'_, '_>,
) -> Result<Vec<String>, Unsupported> {
    let Some(v) = annotation(spec, ANN_DATACENTERS) else {
        return Ok(s.datacenters.clone());
    };
    let list: Vec<String> =
        v.split(',').map(str::trim).filter(|d| !d.is_empty()).map(str::to_owned).collect();
    if list.is_empty() {
        return Err(Unsupported::new(field(ANN_DATACENTERS), format!("{v:?} names no datacenter")));
    }
    if let Some(bad) = list.iter().find(|d| !valid_datacenter(d)) {
        return Err(Unsupported::new(
            field(ANN_DATACENTERS),
            format!("{bad:?} is not a valid Nomad datacenter name"),
        ));
    }
    check.datacenters(ANN_DATACENTERS, &list)?;
    Ok(list)
}

/// The node pool of [`ANN_NODE_POOL`], else the operator's ([`JobSettings::node_pool`]), if any.
fn node_pool(
    spec: &WorkloadSpec,
    s: &JobSettings,
    check: &Check<'_, '_>,
) -> Result<Option<String>, Unsupported> {
    let Some(p) = annotation(spec, ANN_NODE_POOL) else { return Ok(s.node_pool.clone()) };
    if !valid_node_pool(p) {
        return Err(Unsupported::new(
            field(ANN_NODE_POOL),
            format!("{p:?} is not a valid Nomad node pool name"),
        ));
    }
    check.node_pool(ANN_NODE_POOL, p)?;
    Ok(Some(p.to_owned()))
}

/// The priority of [`ANN_PRIORITY`] (1 to 100), if any.
fn priority(spec: &WorkloadSpec, check: &Check<'_, '_>) -> Result<Option<i32>, Unsupported> {
    let Some(p) = annotation(spec, ANN_PRIORITY) else { return Ok(None) };
    let n: i32 = p
        .parse()
        .map_err(|_| Unsupported::new(field(ANN_PRIORITY), format!("{p:?} is not a number")))?;
    if !(1..=100).contains(&n) {
        return Err(Unsupported::new(
            field(ANN_PRIORITY),
            format!("{n} is out of range (1 to 100)"),
        ));
    }
    check.priority(ANN_PRIORITY, n)?;
    Ok(Some(n))
}

/// The group's network mode: [`ANN_NETWORK_MODE`], else `host` for `spec.hostNetwork`, else the
/// driver's default.
fn network_mode(
    spec: &WorkloadSpec,
    driver: Driver,
    check: &Check<'_, '_>,
) -> Result<String, Unsupported> {
    match annotation(spec, ANN_NETWORK_MODE) {
        None if spec.host_network => {
            // The host's network is the operator's to give: the default of raw_exec, else
            // granted by --allowed-network-modes (the kubelet's --host-network-sources).
            check.network_mode("spec.hostNetwork".to_owned(), "host")?;
            Ok("host".to_owned())
        }
        None => Ok(driver.default_network_mode().to_owned()),
        Some(m) => {
            if !valid_network_mode(m) {
                return Err(Unsupported::new(
                    field(ANN_NETWORK_MODE),
                    format!("network mode {m:?} is not one of host, bridge, none, cni/<name>"),
                ));
            }
            check.network_mode(field(ANN_NETWORK_MODE), m)?;
            Ok(m.to_owned())
        }
    }
}

/// The Nomad namespace and region of [`ANN_NAMESPACE`] and [`ANN_REGION`], each if any.
fn location(
    spec: &WorkloadSpec,
    check: &Check<'_, '_>,
) -> Result<[Option<String>; 2], Unsupported> {
    let mut location = [None, None];
    for (i, key, what) in [(0, ANN_NAMESPACE, "namespace"), (1, ANN_REGION, "region")] {
        if let Some(v) = annotation(spec, key) {
            if !valid_nomad_name(v) {
                return Err(Unsupported::new(
                    field(key),
                    format!("{v:?} is not a valid Nomad {what} name (letters, digits and '-')"),
                ));
            }
            if i == 0 {
                check.namespace(key, v)?;
            } else {
                check.region(key, v)?;
            }
            location[i] = Some(v.to_owned());
        }
    }
    Ok(location)
}
