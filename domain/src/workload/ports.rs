//! A container's `ports`, checked: port numbers in range, a known protocol.

use k8s_openapi::api::core::v1::Container;

use crate::error::Unsupported;

/// A container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// `name`, if given.
    pub name: Option<String>,
    /// `containerPort`, 1–65535.
    pub container_port: u16,
    /// `hostPort`, when the pod asks for a fixed port on the host.
    pub host_port: Option<u16>,
    /// `protocol`: `TCP` (default), `UDP` or `SCTP`.
    pub protocol: String,
}

/// The ports of container `c` (at path `field`), in order: `protocol` defaults to `TCP`, an empty
/// `name` is none, a `hostPort` of 0 is none.
///
/// # Errors
/// [`Unsupported`] on `field.ports[i]` for a port number outside 1–65535 or a protocol other than
/// `TCP`, `UDP` and `SCTP`.
pub(super) fn ports(field: &str, c: &Container) -> Result<Vec<PortSpec>, Unsupported> {
    let mut ports = Vec::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let f = format!("{field}.ports[{i}]");
        let port = |v: i32, what: &str| {
            u16::try_from(v).ok().filter(|p| *p > 0).ok_or_else(|| {
                Unsupported::new(format!("{f}.{what}"), format!("{v} is not a port number"))
            })
        };
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        if !matches!(protocol.as_str(), "TCP" | "UDP" | "SCTP") {
            return Err(Unsupported::new(
                format!("{f}.protocol"),
                format!("unknown protocol {protocol:?}"),
            ));
        }
        ports.push(PortSpec {
            name: p.name.clone().filter(|n| !n.is_empty()),
            container_port: port(p.container_port, "containerPort")?,
            host_port: p.host_port.filter(|h| *h != 0).map(|h| port(h, "hostPort")).transpose()?,
            protocol,
        });
    }
    Ok(ports)
}
