//! Resource usage of the pods and the Nomad nodes ([`StatsProvider`]).

use super::*;

impl StatsProvider for NomadProvider {
    /// Samples every running allocation this node owns (`/v1/client/allocation/<id>/stats`) and
    /// the Nomad nodes behind it (`/v1/client/stats?node_id=`), all at once under the client's
    /// request limit ([`stats`] says how the figures map). An allocation or node whose sample
    /// fails is left out (it may just have stopped).
    async fn usage(&self) -> Result<Usage, ProviderError> {
        let pods = self.list_pods().await?;
        let nodes = self.nodes().await?;
        let now = Timestamp::now();
        let running: Vec<&RuntimePod> = pods
            .iter()
            .filter(|p| p.sandbox.as_ref().is_some_and(|s| s.state == SandboxState::Running))
            .collect();
        let samples = futures::future::join_all(running.iter().map(|p| {
            let client = self.at(&JobRef::parse(&p.id));
            let alloc = p.sandbox.as_ref().map(|s| s.id.clone()).unwrap_or_default();
            async move {
                client
                    .get::<stats::AllocStats>(&["v1", "client", "allocation", &alloc, "stats"], &[])
                    .await
            }
        }));
        let hosts =
            futures::future::join_all(nodes.iter().filter(|n| usable(n)).map(|n| async move {
                let query = [("node_id", n.id.as_str())];
                self.client.get::<stats::HostStats>(&["v1", "client", "stats"], &query).await
            }));
        let (samples, hosts) = futures::future::join(samples, hosts).await;
        let mut usage = Usage::default();
        for (p, sample) in running.iter().zip(samples) {
            let Some(sb) = p.sandbox.as_ref() else { continue };
            let sample = match sample {
                Ok(s) => s,
                Err(e) => {
                    debug!(alloc = %sb.id, error = %e, "no stats for an allocation");
                    continue;
                }
            };
            let containers = sb
                .containers
                .iter()
                .filter_map(|(name, c)| {
                    let ContainerState::Running { started_at } = &c.state else { return None };
                    let task = sample.tasks.get(name)?;
                    Some(stats::container_usage(name, *started_at, task, now))
                })
                .collect();
            usage.pods.push(PodUsage {
                key: p.owner.key.clone(),
                uid: p.owner.uid.clone(),
                start_time: sb.created_at,
                containers,
            });
        }
        let hosts: Vec<stats::HostStats> = hosts
            .into_iter()
            .filter_map(|h| h.map_err(|e| debug!(error = %e, "no stats for a Nomad node")).ok())
            .collect();
        usage.node = stats::node_usage(&hosts, self.settings().mhz_per_core, now);
        Ok(usage)
    }
}
