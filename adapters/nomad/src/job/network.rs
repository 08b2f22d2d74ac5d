//! The pod's network on Nomad: the group's network modes, and the container ports reserved on the
//! node (`hostPort`, and every port in the host's network).

use vk_domain::error::Unsupported;
use vk_domain::workload::ContainerSpec;

use super::Builder;
use crate::api::Port;

/// Whether a group in network mode `m` gives the allocation an address of its own
/// (Nomad's `NetworkStatus.Address`): `bridge` and `cni/<name>`.
pub fn own_address(m: &str) -> bool {
    m == "bridge" || m.starts_with("cni/")
}

/// Nomad's group network modes: `host`, `bridge`, `none`, `cni/<name>` (a CNI network name:
/// letters, digits, `.`, `_`, `-`).
pub fn valid_network_mode(m: &str) -> bool {
    matches!(m, "host" | "bridge" | "none")
        || m.strip_prefix("cni/").is_some_and(|n| {
            !n.is_empty()
                && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
}

/// The label of a reserved port: `<container>_<port name>`, else `<container>_<port>`, with
/// every character Nomad refuses in a label written `_`.
fn port_label(container: &str, name: Option<&str>, port: u16) -> String {
    let raw = match name {
        Some(n) => format!("{container}_{n}"),
        None => format!("{container}_{port}"),
    };
    raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

impl Builder<'_> {
    /// Reserves the node ports container `c` (at `field`) needs in the group's network.
    ///
    /// # Errors
    /// [`Unsupported`] for an SCTP port, which Nomad cannot give.
    pub(super) fn reserve_ports(
        &mut self,
        field: &str,
        c: &ContainerSpec,
    ) -> Result<(), Unsupported> {
        for (i, p) in c.ports.iter().enumerate() {
            let label = port_label(&c.name, p.name.as_deref(), p.container_port);
            let to = i32::from(p.container_port);
            if p.protocol == "SCTP" {
                return Err(Unsupported::new(
                    format!("{field}.ports[{i}].protocol"),
                    "SCTP ports cannot be given to Nomad",
                ));
            }
            match (self.network_mode.as_str(), p.host_port) {
                // hostPort: the node's port, mapped to the container port (Nomad's CNI
                // `portmap` in bridge mode).
                (_, Some(h)) => {
                    self.reserved.push(Port { label: label.clone(), value: i32::from(h), to })
                }
                // In the host's network the process binds the container port itself: reserve
                // it so the scheduler knows.
                ("host", None) => self.reserved.push(Port { label: label.clone(), value: to, to }),
                // The pod's own address (bridge, CNI) answers on every container port without
                // a node port; `none` has no port to give.
                _ => {}
            }
        }
        Ok(())
    }
}
