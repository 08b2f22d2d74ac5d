//! Logs of memory pods ([`PodStreams`]): one canned line per container run; exec, attach and
//! port-forward are refused as unsupported (the trait's defaults).

use bytes::Bytes;
use vk_domain::logs::{LogOptions, LogStream};
use vk_domain::runtime::WorkloadId;
use vk_ports::{ByteStream, PodStreams, ProviderError};

use crate::lifecycle::started_at;
use crate::{MemoryProvider, key_of, not_found};

impl PodStreams for MemoryProvider {
    /// One line on stdout per container run: `<container> is running in the memory provider`,
    /// written when the run started. `previous` gives the line of the run before a restart.
    /// `follow` ends at once: nothing more is ever written.
    async fn logs(
        &self,
        id: &WorkloadId,
        container: &str,
        opts: &LogOptions,
    ) -> Result<ByteStream, ProviderError> {
        let key = key_of(id)?;
        let written = {
            let st = self.state();
            let c = st
                .pods
                .get(&key)
                .and_then(|e| e.runtime.sandbox.as_ref()?.containers.get(container))
                .ok_or_else(|| not_found(&format!("{id} container {container}")))?;
            if opts.previous {
                let last = c.last_termination.as_ref().ok_or_else(|| {
                    ProviderError::NotFound(format!(
                        "previous terminated container {container} in pod {id} not found"
                    ))
                })?;
                last.started_at
            } else {
                started_at(&c.state)
            }
        };
        let mut line = format!("{container} is running in the memory provider\n");
        if opts.timestamps {
            line = format!(
                "{}{line}",
                vk_domain::logs::timestamp_prefix(written.unwrap_or(self.started))
            );
        }
        let shown = opts.stream != LogStream::Stderr
            && opts.tail_lines != Some(0)
            && opts.since.is_none_or(|since| written.is_some_and(|w| w >= since));
        let mut bytes = if shown { line.into_bytes() } else { Vec::new() };
        if let Some(limit) = opts.limit_bytes {
            bytes.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        Ok(Box::pin(futures::stream::iter([Ok(Bytes::from(bytes))])))
    }
}
