//! The kubelet's admission of a pod (`lifecycle.PredicateAdmitHandler`, `sysctl.patternAllowlist`):
//! what it rejects before any container is made, failing the pod with its reason ([`Rejection`]).

use k8s_openapi::api::core::v1::PodSpec;

use super::container::ContainerSpec;
use super::resources::Resources;
use crate::error::Rejection;
use crate::node::NodeCapacity;

/// The kubelet's admission of the pod's operating system (`lifecycle.PredicateAdmitHandler`): a
/// `spec.os.name` other than the node's is `PodOSNotSupported`, a `kubernetes.io/os` node selector
/// other than the node's `PodOSSelectorNodeLabelDoesNotMatch`.
pub(super) fn admit_os(spec: &PodSpec, node_os: &str) -> Result<(), Rejection> {
    let node_os = if node_os.is_empty() { "linux" } else { node_os };
    let selected = spec.node_selector.as_ref().and_then(|s| s.get("kubernetes.io/os"));
    if selected.is_some_and(|os| os != node_os) {
        return Err(Rejection::new(
            "PodOSSelectorNodeLabelDoesNotMatch",
            "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label",
        ));
    }
    if spec.os.as_ref().is_some_and(|o| o.name != node_os) {
        return Err(Rejection::new(
            "PodOSNotSupported",
            "Failed to admit pod as the OS field doesn't match node OS",
        ));
    }
    Ok(())
}

/// The sysctls the kubelet allows without `--allowed-unsafe-sysctls`
/// (`pkg/kubelet/sysctl.SafeSysctlAllowlist`): namespaced, and harmless to other pods.
pub const SAFE_SYSCTLS: [&str; 12] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// A sysctl name as the kubelet reads it (`ConvertSysctlVariableToDotsSeparator`): when its
/// first separator is `/` (`net/ipv4/tcp_rmem`), `/` and `.` are swapped.
pub fn sysctl_name(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => name.to_owned(),
    }
}

/// The kubelet's sysctl admission (`sysctl.patternAllowlist`): a sysctl outside the safe set is
/// `SysctlForbidden`; a `net.*` sysctl of a pod in the host's network namespace too.
pub(super) fn admit_sysctls(spec: &PodSpec) -> Result<(), Rejection> {
    let sysctls =
        spec.security_context.as_ref().and_then(|s| s.sysctls.as_deref()).unwrap_or_default();
    for s in sysctls {
        let name = sysctl_name(&s.name);
        if !SAFE_SYSCTLS.contains(&name.as_str()) {
            return Err(Rejection::new(
                "SysctlForbidden",
                format!("forbidden sysctl: {:?} not allowlisted", s.name),
            ));
        }
        if spec.host_network == Some(true) && name.starts_with("net.") {
            return Err(Rejection::new(
                "SysctlForbidden",
                format!("forbidden sysctl: {:?} not allowed with host net enabled", s.name),
            ));
        }
    }
    Ok(())
}

/// The kubelet's admission of a pod's requests against the node's allocatable resources
/// (`lifecycle.PredicateAdmitHandler`, reasons `OutOfcpu` and `OutOfmemory`), for the one pod
/// alone: a pod requesting more than the whole node offers can never run, and is rejected rather
/// than left for the backend to hold pending forever. The pod's request is the kubelet's: the
/// larger of the sum over app containers (and sidecars) and the largest init container. Skipped
/// while the node's allocatable is not known yet (all zero).
pub(super) fn admit_resources(
    init: &[ContainerSpec],
    app: &[ContainerSpec],
    node: &NodeCapacity,
) -> Result<(), Rejection> {
    if node.cpu_millis == 0 && node.memory_bytes == 0 {
        return Ok(());
    }
    type Request = fn(&Resources) -> Option<u64>;
    let checks: [(&'static str, &str, Request, u64); 2] = [
        ("OutOfcpu", "cpu", |r| r.cpu_request_millis.or(r.cpu_limit_millis), node.cpu_millis),
        (
            "OutOfmemory",
            "memory",
            |r| r.memory_request_bytes.or(r.memory_limit_bytes),
            node.memory_bytes,
        ),
    ];
    for (reason, name, request, offered) in checks {
        let running = app.iter().chain(init.iter().filter(|c| c.sidecar));
        let sum = running.filter_map(|c| request(&c.resources)).fold(0u64, u64::saturating_add);
        let largest_init =
            init.iter().filter(|c| !c.sidecar).filter_map(|c| request(&c.resources)).max();
        let pod = sum.max(largest_init.unwrap_or(0));
        if pod > offered {
            // The kubelet's words (`InsufficientResourceError`), "used" being this node's
            // other pods, which the backend places around; the pod alone does not fit.
            return Err(Rejection::new(
                reason,
                format!(
                    "Node didn't have enough resource: {name}, requested: {pod}, used: 0, capacity: {offered}"
                ),
            ));
        }
    }
    Ok(())
}
