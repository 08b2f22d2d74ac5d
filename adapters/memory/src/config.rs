//! The memory provider's settings: the node's name, address and capacity, and upstream mock's
//! `--provider-config` JSON read into them.

use std::collections::HashMap;

use vk_domain::node::NodeCapacity;
use vk_domain::quantity;

/// Settings of the memory provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    /// This node's name, recorded as the owner of every pod created.
    pub node_name: String,
    /// `status.hostIP` of every pod (the node's InternalIP).
    pub host_ip: String,
    /// What the node offers (`capacity` and `allocatable`; `pods` is the node's `--max-pods`).
    pub capacity: NodeCapacity,
}

impl MemoryConfig {
    /// Upstream mock's default capacity (`cpu: 20`, `memory: 100Gi`), with 100 GiB of ephemeral
    /// storage.
    pub const DEFAULT_CAPACITY: NodeCapacity = NodeCapacity {
        cpu_millis: 20_000,
        memory_bytes: 100 << 30,
        ephemeral_storage_bytes: 100 << 30,
        pods: None,
        reserved: vk_domain::node::Reserved {
            cpu_millis: 0,
            memory_bytes: 0,
            ephemeral_storage_bytes: 0,
        },
    };

    /// Settings for node `node_name` reached at `host_ip`, with [`Self::DEFAULT_CAPACITY`].
    pub fn new(node_name: impl Into<String>, host_ip: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            host_ip: host_ip.into(),
            capacity: Self::DEFAULT_CAPACITY,
        }
    }
}

/// What upstream mock's `--provider-config` file gives a node (`provider/mock/mock.go`,
/// `MockConfig`): its capacity and its `pods`, which the caller applies as the node's `--max-pods`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamMockConfig {
    /// CPU, memory and ephemeral storage; values the file leaves out keep the defaults.
    pub capacity: NodeCapacity,
    /// `pods`, when the file gives it.
    pub pods: Option<u32>,
}

/// Reads upstream mock's provider configuration: a JSON object keyed by node name, each entry with
/// optional quantity strings `cpu`, `memory`, `ephemeral-storage` (upstream has no such key; kept
/// for symmetry with the node's resources) and `pods`, as
/// `{"vk": {"cpu": "20", "memory": "100Gi", "pods": "20"}}`. A node absent from the file gets
/// [`MemoryConfig::DEFAULT_CAPACITY`], as upstream; other keys (upstream's `nvidia.com/gpu`, ...)
/// are ignored.
///
/// # Errors
/// The text not being such a JSON object, or a value that is not a valid quantity (the message
/// names the node and key).
pub fn parse_upstream_mock_config(
    node_name: &str,
    json: &str,
) -> Result<UpstreamMockConfig, String> {
    let all: HashMap<String, HashMap<String, serde_json::Value>> =
        serde_json::from_str(json).map_err(|e| format!("provider config: {e}"))?;
    let mut out = UpstreamMockConfig { capacity: MemoryConfig::DEFAULT_CAPACITY, pods: None };
    let Some(entry) = all.get(node_name) else { return Ok(out) };
    for (key, value) in entry {
        let field = format!("provider config {node_name:?}.{key}");
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            other => return Err(format!("{field}: {other} is not a quantity")),
        };
        let err = |e: vk_domain::error::Unsupported| e.to_string();
        match key.as_str() {
            "cpu" => out.capacity.cpu_millis = quantity::cpu_millis(&field, &text).map_err(err)?,
            "memory" => out.capacity.memory_bytes = quantity::bytes(&field, &text).map_err(err)?,
            "ephemeral-storage" => {
                out.capacity.ephemeral_storage_bytes =
                    quantity::bytes(&field, &text).map_err(err)?;
            }
            "pods" => {
                let n = quantity::bytes(&field, &text).map_err(err)?;
                out.pods =
                    Some(u32::try_from(n).map_err(|_| format!("{field}: {text} is too many"))?);
            }
            _ => {}
        }
    }
    Ok(out)
}
