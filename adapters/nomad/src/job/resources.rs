//! A container's CPU and memory as Nomad's task resources: millicores to MHz of the Nomad nodes,
//! bytes to MiB, and the docker driver's hard limits.

use serde_json::{Map, Value, json};
use vk_domain::error::Unsupported;
use vk_domain::workload::ContainerSpec;

use super::Builder;
use crate::api::Resources;

impl Builder<'_> {
    /// The task resources of container `c` (at `field`): CPU in MHz from the request (else the
    /// limit), memory in MiB (at least 10) from the request (else the limit), `MemoryMaxMB` from a
    /// higher limit; on a driver with hard limits ([`super::Driver::has_hard_limits`]) the limits
    /// go into `config` instead.
    ///
    /// # Errors
    /// [`Unsupported`] naming the field when the CPU is beyond any Nomad node.
    pub(super) fn resources(
        &self,
        field: &str,
        c: &ContainerSpec,
        config: &mut Map<String, Value>,
    ) -> Result<Resources, Unsupported> {
        let r = &c.resources;
        let (cpu_field, cpu_millis) = match (r.cpu_request_millis, r.cpu_limit_millis) {
            (Some(m), _) => ("requests", Some(m)),
            (None, m) => ("limits", m),
        };
        let mem_bytes = r.memory_request_bytes.or(r.memory_limit_bytes);
        let mib = |b: u64| i64::try_from(b.div_ceil(1 << 20).max(10)).unwrap_or(i64::MAX);
        let memory_mb = mem_bytes.map(mib);
        let mut memory_max_mb =
            r.memory_limit_bytes.map(mib).filter(|max| memory_mb.is_some_and(|m| *max > m));
        if self.driver.has_hard_limits() {
            // The docker driver's own hard limit: `MemoryMB` becomes the reservation
            // (memory.soft_limit_in_bytes) and the limit the cgroup's hard limit, with or without
            // Nomad's memory oversubscription (which `MemoryMaxMB` would need).
            if let Some(max) = memory_max_mb.take() {
                config.insert("memory_hard_limit".into(), json!(max));
            }
        }
        let mhz = self.settings.mhz_per_core;
        let cpu = match cpu_millis {
            None => None,
            Some(m) => Some(
                m.checked_mul(mhz)
                    .map(|v| v.div_ceil(1000).max(1))
                    .and_then(|v| i64::try_from(v).ok())
                    .ok_or_else(|| {
                        Unsupported::new(
                            format!("{field}.resources.{cpu_field}.cpu"),
                            format!(
                                "{m} millicores at {mhz} MHz per core is beyond any Nomad node"
                            ),
                        )
                    })?,
            ),
        };
        // A CPU limit no lower than the request (or without one) is the task's CPU: the docker
        // driver's `cpu_hard_limit` turns it into a CFS quota of that many cores. A limit above
        // the request is not enforced: Nomad has one CPU figure, the request's, which would cap
        // the container there.
        if self.driver.has_hard_limits()
            && r.cpu_limit_millis.is_some()
            && r.cpu_request_millis.is_none_or(|q| Some(q) >= r.cpu_limit_millis)
        {
            config.insert("cpu_hard_limit".into(), json!(true));
        }
        Ok(Resources { cpu, memory_mb, memory_max_mb })
    }
}
