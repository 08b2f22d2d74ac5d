//! The pod status and Events a sync writes: the status computed from the pod and its workload,
//! written as one patch when it shows something new; the failure, lost-pod and deadline
//! statuses; the Events of containers and of the pod.

use super::*;

/// Event reason: the backend could not place the pod ([`vk_domain::runtime::RuntimePod::unplaced`]).
pub const FAILED_PLACEMENT: &str = "FailedPlacement";

/// The containers of `pod` (init containers first) whose image the runtime pulled or is pulling
/// (`sandbox`'s view), with their image.
fn image_pulls<'a>(
    pod: &'a Pod,
    sandbox: Option<&vk_domain::runtime::Sandbox>,
) -> Vec<(&'a str, &'a str, ImagePull)> {
    let Some((spec, sandbox)) = pod.spec.as_ref().zip(sandbox) else { return Vec::new() };
    let init = spec.init_containers.iter().flatten();
    init.chain(&spec.containers)
        .filter_map(|c| {
            let pull = sandbox.containers.get(&c.name)?.image_pull?;
            Some((c.name.as_str(), c.image.as_deref().unwrap_or_default(), pull))
        })
        .collect()
}

/// `d` as Go's `time.Duration` prints it, to the millisecond (`512ms`, `2.5s`, `1m3.25s`), as
/// the kubelet's Events show durations.
fn go_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (minutes, rest) = (ms / 60_000, ms % 60_000);
    let secs = format!("{}.{:03}", rest / 1000, rest % 1000);
    let secs = secs.trim_end_matches('0').trim_end_matches('.');
    if minutes > 0 { format!("{minutes}m{secs}s") } else { format!("{secs}s") }
}

impl<P: PodProvider + ProbeTarget + PodNetwork, K: PodApi + InputsApi> PodController<P, K> {
    /// Writes the status computed from the runtime view, unless it is what the API server has.
    pub(super) async fn sync_status(
        &self,
        key: &PodKey,
        pod: Option<&Pod>,
        runtime: Option<&RuntimePod>,
    ) -> Result<(), SyncError> {
        let Some(pod) = pod else { return Ok(()) };
        let Some(runtime) = runtime else { return Ok(()) };
        // Probes run for what runs now; their results are laid over the runtime's view.
        let sandbox = runtime.sandbox.clone().map(|s| self.prober.apply(key, pod, &runtime.id, s));
        for e in self.prober.take_events(pod::uid(pod)) {
            let path = events::field_path(pod, &e.container);
            self.record(pod, Some(&path), EventType::Warning, e.reason, &e.message).await;
        }
        let mut new = status::pod_status(pod, sandbox.as_ref(), Timestamp::now());
        if let (None, Some(why)) = (&sandbox, &runtime.unplaced) {
            // The backend could not place it: said in the waiting containers and once as an Event.
            new = status::with_unplaced(new, why);
            self.event_once(pod, None, EventType::Warning, FAILED_PLACEMENT, why).await;
        }
        // The kubelet's image Events, from the containers' waiting reasons.
        let statuses = new.init_container_statuses.iter().flatten();
        for cs in statuses.chain(new.container_statuses.iter().flatten()) {
            let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else { continue };
            let text = w.message.as_deref().unwrap_or_default();
            let (error, back_off) = match w.reason.as_deref() {
                Some("ErrImagePull") => (text, false),
                // `Back-off pulling image "<image>": ErrImagePull: <error>`: the failure may have
                // been seen only during the back-off; its Event comes first all the same.
                Some("ImagePullBackOff") => {
                    (text.split_once(": ErrImagePull: ").map_or(text, |(_, e)| e), true)
                }
                _ => continue,
            };
            let failed = format!("Failed to pull image {:?}: {error}", cs.image);
            let path = Some(events::field_path(pod, &cs.name));
            self.event_once(pod, path.as_deref(), EventType::Warning, "Failed", &failed).await;
            if back_off {
                let message = format!("Back-off pulling image {:?}", cs.image);
                self.event_once(pod, path.as_deref(), EventType::Normal, "BackOff", &message).await;
            }
        }
        // The kubelet's `Pulling` and `Pulled`, once per pull, from the runtime's view.
        for (name, image, pull) in image_pulls(pod, sandbox.as_ref()) {
            let path = Some(events::field_path(pod, name));
            let pulling = format!("Pulling image {image:?}");
            self.event_once(pod, path.as_deref(), EventType::Normal, "Pulling", &pulling).await;
            if let ImagePull::Pulled { took } = pull {
                let took = go_duration(took);
                let pulled = format!(
                    "Successfully pulled image {image:?} in {took} ({took} including waiting)"
                );
                self.event_once(pod, path.as_deref(), EventType::Normal, "Pulled", &pulled).await;
            }
        }
        let changes = events::container_events(pod, pod.status.as_ref(), &new);
        self.write_status(key, pod, new).await?;
        self.record_container_events(pod, changes).await;
        Ok(())
    }

    pub(super) async fn write_status(
        &self,
        key: &PodKey,
        pod: &Pod,
        mut new: k8s_openapi::api::core::v1::PodStatus,
    ) -> Result<(), SyncError> {
        status::observe_generation(pod, &mut new);
        let Some(patch) = status::patch(pod.status.as_ref(), &new) else {
            // A change that shows nothing new is not a propagation to measure.
            self.state().changed_at.remove(key);
            return Ok(());
        };
        match self.api.update_status(key, StatusWrite { status: &new, patch: &patch }).await {
            Ok(()) => {
                debug!(phase = new.phase.as_deref(), "pod status written");
                if let Some(at) = self.state().changed_at.remove(key) {
                    let delay = Timestamp::now().duration_since(at).as_secs_f64().max(0.0);
                    metrics::histogram!(STATUS_PROPAGATION).record(delay);
                }
                // Keep the local copy current so the next poll does not write the same again,
                // unless the watch already brought a newer version (another writer's change, or
                // the echo of this write): that one is the truth.
                let mut st = self.state();
                let fresh = match st.pods.get(key).filter(|p| p.uid() == pod::uid(pod)) {
                    Some(held) => match held.pod() {
                        Ok(p) if p.metadata.resource_version != pod.metadata.resource_version => {
                            None
                        }
                        Ok(p) => {
                            let mut p = Arc::unwrap_or_clone(p);
                            p.status = Some(new);
                            Some(HeldPod::new(p))
                        }
                        Err(e) => {
                            tracing::error!("{e}");
                            None
                        }
                    },
                    None => None,
                };
                if let Some(fresh) = fresh {
                    st.hold(key.clone(), fresh);
                }
                drop(st);
                self.record_phases();
                Ok(())
            }
            Err(vk_ports::ClusterError::NotFound(_)) => Ok(()),
            Err(e) => Err(SyncError::cluster("writing the pod status")(e)),
        }
    }

    /// Reports a pod this node cannot run: status `ProviderFailed` with `message`, and a Warning
    /// Event, both once per message.
    pub(super) async fn report_failure(
        &self,
        key: &PodKey,
        pod: &Pod,
        message: &str,
    ) -> Result<(), SyncError> {
        let current = pod.status.as_ref();
        let same = current.and_then(|s| s.reason.as_deref()) == Some(REASON_PROVIDER_FAILED)
            && current.and_then(|s| s.message.as_deref()) == Some(message);
        if same {
            return Ok(());
        }
        warn!("the pod cannot be run: {message}");
        self.record(pod, None, EventType::Warning, "ProviderCreateFailed", message).await;
        self.write_status(key, pod, status::provider_failed_status(pod, message, Timestamp::now()))
            .await
    }

    pub(super) async fn mark_lost(&self, key: &PodKey, pod: Option<&Pod>) -> Result<(), SyncError> {
        let Some(pod) = pod else { return Ok(()) };
        let message = "the pod's workload is gone from the backend";
        warn!("marking the pod failed: {message}");
        self.record(pod, None, EventType::Warning, "ProviderPodNotFound", message).await;
        self.write_status(key, pod, status::not_found_status(pod, message, Timestamp::now())).await
    }

    pub(super) async fn fail_deadline(
        &self,
        key: &PodKey,
        pod: Option<&Pod>,
        runtime: Option<&RuntimePod>,
    ) -> Result<(), SyncError> {
        let Some(pod) = pod else { return Ok(()) };
        let message = "Pod was active on the node longer than the specified deadline";
        self.event_once(pod, None, EventType::Normal, "DeadlineExceeded", message).await;
        let st = status::deadline_exceeded_status(
            pod,
            runtime.and_then(|r| r.sandbox.as_ref()),
            message,
            Timestamp::now(),
        );
        self.write_status(key, pod, st).await
    }

    /// Records an Event once per pod and `(reason, message)`, about the container at
    /// `field_path` when there is one.
    pub(super) async fn event_once(
        &self,
        pod: &Pod,
        field_path: Option<&str>,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        let fresh = self
            .state()
            .recorded
            .entry(pod::uid(pod).to_owned())
            .or_default()
            .insert((reason.to_owned(), message.to_owned()));
        if !fresh {
            return;
        }
        // The event's message goes into the line's text: a `message` field would collide with it.
        if type_ == EventType::Warning {
            warn!(reason, "pod event: {message}");
        }
        self.record(pod, field_path, type_, reason, message).await;
    }

    /// Records an Event about `pod`, or its container at `field_path`; a failure is logged.
    pub(super) async fn record(
        &self,
        pod: &Pod,
        field_path: Option<&str>,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        match self.api.record_event(pod, field_path, type_, reason, message).await {
            Ok(()) => debug!(reason, "event recorded"),
            Err(e) => warn!(error = %e, "recording the event failed"),
        }
    }

    /// Records the kubelet's container Events (`vk_domain::events`).
    pub(super) async fn record_container_events(&self, pod: &Pod, events: Vec<ContainerEvent>) {
        for e in events {
            let type_ = if e.warning { EventType::Warning } else { EventType::Normal };
            self.record(pod, Some(&e.field_path), type_, e.reason, &e.message).await;
        }
    }
}

#[cfg(test)]
mod image_event_tests {
    use super::go_duration;

    #[test]
    fn durations_read_as_gos() {
        let ms = std::time::Duration::from_millis;
        assert_eq!(go_duration(ms(512)), "512ms");
        assert_eq!(go_duration(ms(2500)), "2.5s");
        assert_eq!(go_duration(ms(1234)), "1.234s");
        assert_eq!(go_duration(ms(3000)), "3s");
        assert_eq!(go_duration(ms(63_250)), "1m3.25s");
    }
}
